//! How repeated failed sign-ins are slowed down. Pure: the time comes in as an
//! argument, so the rules are tested without waiting.
//!
//! Two rules, neither of which looks at whether the name exists:
//!
//! - per name and address: five attempts in a row, then a wait that doubles with
//!   each further failure. Every attempt is counted before its password is checked
//!   (and the count forgotten when it was right), so concurrent guesses cannot slip
//!   past the limit together. Someone guessing from one address holds back only that
//!   name *from that address*: the owner elsewhere still signs in.
//! - per address: a burst of failed attempts, then one per interval, whatever the
//!   names, so one address cannot spread its guesses over many names (or fill the
//!   server with hashing) instead.

use std::time::{Duration, Instant};

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

/// How many failed sign-ins one address may make: `burst` at once, then one each
/// `every`. A successful sign-in gives its attempt back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressLimit {
    pub burst: u32,
    pub every: Duration,
}

impl Default for AddressLimit {
    /// 30 at once, then one every 10 seconds: more than an office behind one address
    /// mistypes, far fewer than a guesser needs.
    fn default() -> Self {
        AddressLimit {
            burst: 30,
            every: Duration::from_secs(10),
        }
    }
}

impl AddressLimit {
    /// Takes one attempt from an address whose allowance is whole again at `full_at`
    /// (the generic cell rate algorithm's theoretical arrival time; `None` for an
    /// address not seen lately). `Ok` carries the new `full_at`, `Err` how long to
    /// wait for the next attempt.
    pub fn take(&self, full_at: Option<Instant>, now: Instant) -> Result<Instant, Duration> {
        let full_at = full_at.map_or(now, |at| at.max(now));
        let tolerance = self.every * self.burst.saturating_sub(1);
        let owed = full_at - now;
        if owed > tolerance {
            Err(owed - tolerance)
        } else {
            Ok(full_at + self.every)
        }
    }

    /// Gives back an attempt taken by [`AddressLimit::take`] (it succeeded).
    pub fn give_back(&self, full_at: Instant, now: Instant) -> Instant {
        full_at
            .checked_sub(self.every)
            .map_or(now, |at| at.max(now))
    }

    /// How long an address's record matters after its last attempt: by then its
    /// allowance is whole again.
    pub fn memory(&self) -> Duration {
        self.every * self.burst.max(1)
    }
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
    fn an_address_has_its_burst_then_one_attempt_per_interval() {
        let limit = AddressLimit {
            burst: 3,
            every: Duration::from_secs(10),
        };
        let start = Instant::now();
        let mut full_at = None;
        for n in 0..3 {
            full_at = Some(limit.take(full_at, start).unwrap_or_else(|wait| {
                panic!("attempt {n} waits {wait:?}");
            }));
        }

        assert_eq!(limit.take(full_at, start), Err(Duration::from_secs(10)));
        let later = start + Duration::from_secs(4);
        assert_eq!(limit.take(full_at, later), Err(Duration::from_secs(6)));
        let next = start + Duration::from_secs(10);
        let full_at = limit.take(full_at, next).unwrap();
        assert_eq!(
            limit.take(Some(full_at), next),
            Err(Duration::from_secs(10))
        );
    }

    #[test]
    fn a_successful_attempt_is_given_back_and_an_idle_address_starts_afresh() {
        let limit = AddressLimit {
            burst: 2,
            every: Duration::from_secs(10),
        };
        let now = Instant::now();
        let full_at = limit.take(limit.take(None, now).ok(), now).unwrap();
        assert!(limit.take(Some(full_at), now).is_err());

        let given_back = limit.give_back(full_at, now);
        assert!(limit.take(Some(given_back), now).is_ok());
        assert_eq!(
            limit.give_back(now, now + limit.memory()),
            now + limit.memory()
        );
        assert!(limit.take(Some(full_at), now + limit.memory()).is_ok());
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
