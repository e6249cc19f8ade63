//! How repeated failed sign-ins for one account are slowed down. Pure: the time comes
//! in as an argument, so the rule is tested without waiting.
//!
//! Every attempt is counted before its password is checked (and the count reset when
//! it was right), so concurrent guesses cannot slip past the limit together.

use chrono::{DateTime, TimeDelta, Utc};

/// Attempts allowed in a row before the account makes people wait.
pub const FREE_ATTEMPTS: u32 = 5;
const FIRST_LOCK_SECONDS: i64 = 30;
const LONGEST_LOCK_SECONDS: i64 = 15 * 60;

/// Whether an attempt may be made now, given the account's attempts since its last
/// successful sign-in; `Err` carries the time from which it may.
pub fn sign_in_allowed(
    failed_attempts: u32,
    locked_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), DateTime<Utc>> {
    match locked_until {
        Some(until) if failed_attempts >= FREE_ATTEMPTS && until > now => Err(until),
        _ => Ok(()),
    }
}

/// How long the account waits after its `failed_attempts`-th attempt in a row fails:
/// nothing before the fifth, then 30 seconds, doubling with each further failure,
/// at most 15 minutes.
pub fn lock_after(failed_attempts: u32) -> Option<TimeDelta> {
    let beyond = failed_attempts.checked_sub(FREE_ATTEMPTS)?;
    let seconds = FIRST_LOCK_SECONDS
        .saturating_mul(1_i64 << beyond.min(20))
        .min(LONGEST_LOCK_SECONDS);
    Some(TimeDelta::seconds(seconds))
}

/// A wait in whole seconds, rounded up, at least 1: for a `Retry-After` header.
pub fn whole_seconds(wait: TimeDelta) -> i64 {
    ((wait.num_milliseconds() + 999) / 1000).max(1)
}

/// A wait in words for the page, rounded up: "30 seconds", "1 minute", "15 minutes".
pub fn wait_in_words(wait: TimeDelta) -> String {
    let seconds = whole_seconds(wait);
    if seconds < 60 {
        return plural(seconds, "second");
    }
    plural((seconds + 59) / 60, "minute")
}

fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn the_first_five_attempts_are_never_held_back() {
        for failed in 0..FREE_ATTEMPTS {
            assert_eq!(sign_in_allowed(failed, None, at(0)), Ok(()));
            assert_eq!(lock_after(failed), None, "after {failed} failures");
        }
    }

    #[test]
    fn the_fifth_failure_locks_the_account_for_thirty_seconds() {
        let until = at(0) + lock_after(5).unwrap();

        assert_eq!(until, at(30));
        assert_eq!(sign_in_allowed(5, Some(until), at(0)), Err(at(30)));
        assert_eq!(sign_in_allowed(5, Some(until), at(29)), Err(at(30)));
    }

    #[test]
    fn an_attempt_is_allowed_again_once_the_lock_time_has_passed() {
        assert_eq!(sign_in_allowed(5, Some(at(30)), at(30)), Ok(()));
        assert_eq!(sign_in_allowed(5, Some(at(30)), at(31)), Ok(()));
    }

    #[test]
    fn each_further_failure_doubles_the_wait_up_to_fifteen_minutes() {
        let waits: Vec<i64> = (5..=12)
            .map(|n| lock_after(n).unwrap().num_seconds())
            .collect();

        assert_eq!(waits, [30, 60, 120, 240, 480, 900, 900, 900]);
        assert_eq!(lock_after(u32::MAX).unwrap().num_seconds(), 900);
    }

    #[test]
    fn a_lock_left_from_before_a_successful_sign_in_does_not_hold_back() {
        assert_eq!(sign_in_allowed(0, Some(at(30)), at(0)), Ok(()));
    }

    #[test]
    fn waits_read_as_words() {
        assert_eq!(wait_in_words(TimeDelta::seconds(30)), "30 seconds");
        assert_eq!(wait_in_words(TimeDelta::milliseconds(200)), "1 second");
        assert_eq!(wait_in_words(TimeDelta::milliseconds(29_001)), "30 seconds");
        assert_eq!(wait_in_words(TimeDelta::seconds(60)), "1 minute");
        assert_eq!(wait_in_words(TimeDelta::seconds(61)), "2 minutes");
        assert_eq!(wait_in_words(TimeDelta::seconds(900)), "15 minutes");
    }
}
