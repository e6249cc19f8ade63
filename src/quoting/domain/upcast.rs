//! Events that evolve. A stored event keeps the schema version it was written at,
//! and its hash covers the stored bytes, so a payload is never rewritten in place:
//! every reader takes its own copy through a chain of pure functions, one a
//! version, up to the version this build writes. `QuoteEvent::from_stored` is the
//! one caller, so loads, projections, rebuild, replay, the archive and every page
//! read old events alike.
//!
//! To change a payload's shape: add a step below, and the new shape to the event.

use serde_json::Value;

/// One step: a payload of `event_type` at version n, as version n + 1 has it.
type Step = fn(event_type: &str, payload: Value) -> Value;

/// `STEPS[i]` takes a payload from version i + 1 to version i + 2.
const STEPS: [Step; 1] = [preferred_contact_is_email];

/// The version this build writes: one past the last step.
pub const CURRENT: i32 = STEPS.len() as i32 + 1;

/// A stored version this build cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{event_type} event has schema version {version}, but this build reads versions 1 to {CURRENT}"
)]
pub struct UnknownVersion {
    pub event_type: String,
    pub version: i32,
}

/// `payload`, stored at `version`, as the current version has it.
pub fn upcast(event_type: &str, version: i32, payload: Value) -> Result<Value, UnknownVersion> {
    let from = version
        .checked_sub(1)
        .and_then(|index| usize::try_from(index).ok())
        .filter(|&index| index <= STEPS.len())
        .ok_or_else(|| UnknownVersion {
            event_type: event_type.to_owned(),
            version,
        })?;
    Ok(STEPS[from..]
        .iter()
        .fold(payload, |payload, step| step(event_type, payload)))
}

/// Version 2: contact details say how the applicant prefers to be contacted. Every
/// quote before could be reached by email only, so that is what they say.
fn preferred_contact_is_email(event_type: &str, mut payload: Value) -> Value {
    if event_type == "ContactDetailsProvided"
        && let Some(fields) = payload.as_object_mut()
    {
        fields
            .entry("preferred_contact")
            .or_insert_with(|| Value::from("email"));
    }
    payload
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn version_one_contact_details_read_as_preferring_email_and_nothing_else_changes() {
        let stored = json!({"email": "a@example.com", "phone": "+14155550100"});
        assert_eq!(
            upcast("ContactDetailsProvided", 1, stored.clone()),
            Ok(
                json!({"email": "a@example.com", "phone": "+14155550100", "preferred_contact": "email"})
            )
        );
        let saved = json!({"from": "Initiated", "to": "Saved"});
        assert_eq!(upcast("QuoteSaved", 1, saved.clone()), Ok(saved));
    }

    #[test]
    fn the_current_version_is_read_as_it_is() {
        let stored = json!({"email": "a@example.com", "phone": "+1", "preferred_contact": "phone"});
        assert_eq!(
            upcast("ContactDetailsProvided", CURRENT, stored.clone()),
            Ok(stored)
        );
    }

    #[test]
    fn versions_outside_the_chain_are_refused() {
        for version in [0, -1, i32::MIN, CURRENT + 1] {
            assert_eq!(
                upcast("QuoteSaved", version, json!({})),
                Err(UnknownVersion {
                    event_type: "QuoteSaved".into(),
                    version
                })
            );
        }
        assert_eq!(
            UnknownVersion {
                event_type: "QuoteSaved".into(),
                version: 3
            }
            .to_string(),
            "QuoteSaved event has schema version 3, but this build reads versions 1 to 2"
        );
    }
}
