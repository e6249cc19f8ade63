//! A proof that travels: one quote's whole history as one JSON file (every event
//! with its metadata and chain hash, and the stream's head), signed with the
//! installation's key. [`check`] verifies such a file with no database at all and
//! names the first event that was altered, removed, moved or added. The format and
//! the rule are written out in docs/PROOF.md.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::signing::{self, InstallationKey, SignatureError};
use crate::eventstore::hash::{GENESIS, HashInput, write_canonical};
use crate::eventstore::{RecordedEvent, StreamHead};

/// The `format` of the files this build writes and reads.
pub const FORMAT: &str = "quoteline-proof/1";

/// The one signature algorithm.
pub const ALGORITHM: &str = "Ed25519";

/// A quote's history as exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    pub format: String,
    pub quote_id: Uuid,
    pub reference: String,
    pub exported_at: DateTime<Utc>,
    pub exported_by: String,
    /// The stream's head when it was exported: its version and last hash.
    pub head: Head,
    pub events: Vec<ProvenEvent>,
    /// Absent when the installation has no key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Seal>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub version: i64,
    pub hash: String,
}

/// One event as stored: what its hash covers, and the hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenEvent {
    pub version: i64,
    /// Its place in the installation's whole log (not covered by the chain).
    pub position: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    /// The payload exactly as stored, never read through an upcaster.
    pub payload: Value,
    pub actor: String,
    /// RFC 3339 in UTC to the microsecond, as the hash covers it.
    pub recorded_at: String,
    pub request_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The signature: which key made it, and over what (see [`signed_bytes`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    pub algorithm: String,
    pub public_key: String,
    pub value: String,
}

impl Proof {
    /// The proof of a stream's history as read: `events` are the stream's events
    /// in order, up to `head`.
    pub fn new(
        head: &StreamHead,
        reference: &str,
        events: &[RecordedEvent],
        exported_by: &str,
        exported_at: DateTime<Utc>,
    ) -> Self {
        Proof {
            format: FORMAT.to_owned(),
            quote_id: head.stream_id,
            reference: reference.to_owned(),
            exported_at,
            exported_by: exported_by.to_owned(),
            head: Head {
                version: head.version,
                hash: head.hash.clone(),
            },
            events: events
                .iter()
                .map(|e| ProvenEvent {
                    version: e.version,
                    position: e.position(),
                    event_id: e.event_id,
                    event_type: e.event_type.clone(),
                    schema_version: e.schema_version,
                    payload: e.payload.clone(),
                    actor: e.actor.clone(),
                    recorded_at: e.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                    request_id: e.request_id.clone(),
                    prev_hash: e.prev_hash.clone(),
                    hash: e.hash.clone(),
                })
                .collect(),
            signature: None,
        }
    }

    /// The file's text: the proof signed with `key` when there is one, indented
    /// for a person to read.
    pub fn to_file(mut self, key: Option<&InstallationKey>) -> String {
        self.signature = None;
        let mut document = serde_json::to_value(&self).expect("a proof always serialises");
        if let Some(key) = key {
            let seal = Seal {
                algorithm: ALGORITHM.to_owned(),
                public_key: key.public_hex(),
                value: key.sign(&signed_bytes(&document)),
            };
            document["signature"] = serde_json::to_value(seal).expect("a seal serialises");
        }
        serde_json::to_string_pretty(&document).expect("a proof always serialises") + "\n"
    }
}

/// What the signature covers: the whole document without its `signature` member, as
/// canonical JSON (object keys in byte order, no white space), in UTF-8.
pub fn signed_bytes(document: &Value) -> Vec<u8> {
    let mut unsigned = document.clone();
    if let Some(object) = unsigned.as_object_mut() {
        object.remove("signature");
    }
    let mut text = String::new();
    write_canonical(&unsigned, &mut text);
    text.into_bytes()
}

/// The first thing wrong with a proof's history, precisely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    #[error("event {version} ({event_type}) was altered: its content does not match its hash")]
    Altered { version: i64, event_type: String },
    #[error("event {version} is missing: the file goes from event {before} to event {after}")]
    Missing {
        version: i64,
        before: i64,
        after: i64,
    },
    #[error(
        "event {version} is missing from the end: the head says the quote had {head} events, the file ends at event {last}"
    )]
    MissingAtEnd { version: i64, head: i64, last: i64 },
    #[error("event {version} is out of order: it comes after event {after} in the file")]
    Reordered { version: i64, after: i64 },
    #[error("event {version} appears twice")]
    Repeated { version: i64 },
    #[error(
        "event {version} was appended: the head says the quote had {head} events when it was exported"
    )]
    Appended { version: i64, head: i64 },
    #[error(
        "event {version} does not follow event {previous}: its previous hash is not that event's hash (it was replaced, or its hashes were recomputed)"
    )]
    Unlinked { version: i64, previous: i64 },
    #[error("the head's hash is not the hash of event {version}, the last event")]
    Head { version: i64 },
}

/// Who vouches for a proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// Signed by the expected key (its public half), and the signature holds.
    Key(String),
    /// The signature holds for the key the file itself names; with no key expected,
    /// that proves nothing (anyone can sign a forged file with a key of their own).
    Unchecked(String),
    /// The file carries no signature.
    Unsigned,
    /// The signature does not hold.
    Invalid(SignatureError),
    /// It holds, but for another key than the one the recipient expects.
    OtherKey { found: String, expected: String },
}

/// What a check of a proof found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub reference: String,
    pub quote_id: Uuid,
    pub events: usize,
    pub head: i64,
    pub chain: Result<(), Break>,
    pub signer: Signer,
}

impl Checked {
    /// The chain is intact and the expected key vouches for it.
    pub fn is_proven(&self) -> bool {
        self.chain.is_ok() && matches!(self.signer, Signer::Key(_))
    }
}

/// Why a file could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("this is not JSON: {0}")]
    Json(serde_json::Error),
    #[error("this is not a quoteline proof: {0}")]
    Shape(serde_json::Error),
    #[error("this is a proof of format {found:?}; this build reads {FORMAT:?}")]
    Format { found: String },
    #[error("the signature's algorithm is {found:?}; proofs are signed with {ALGORITHM}")]
    Algorithm { found: String },
}

/// Checks a proof file's text: its chain against its head, and its signature (by
/// the key `expected`, a public half in hex, when given). Needs nothing else.
pub fn check(text: &str, expected: Option<&str>) -> Result<Checked, Unreadable> {
    let document: Value = serde_json::from_str(text).map_err(Unreadable::Json)?;
    let proof: Proof = serde_json::from_value(document.clone()).map_err(Unreadable::Shape)?;
    if proof.format != FORMAT {
        return Err(Unreadable::Format {
            found: proof.format,
        });
    }
    let signer = match &proof.signature {
        None => Signer::Unsigned,
        Some(seal) if seal.algorithm != ALGORITHM => {
            return Err(Unreadable::Algorithm {
                found: seal.algorithm.clone(),
            });
        }
        Some(seal) => {
            match signing::verify(&seal.public_key, &signed_bytes(&document), &seal.value) {
                Err(e) => Signer::Invalid(e),
                Ok(()) => match expected {
                    None => Signer::Unchecked(seal.public_key.clone()),
                    Some(key) if key.eq_ignore_ascii_case(&seal.public_key) => {
                        Signer::Key(seal.public_key.clone())
                    }
                    Some(key) => Signer::OtherKey {
                        found: seal.public_key.clone(),
                        expected: key.to_owned(),
                    },
                },
            }
        }
    };
    Ok(Checked {
        reference: proof.reference.clone(),
        quote_id: proof.quote_id,
        events: proof.events.len(),
        head: proof.head.version,
        chain: walk(&proof),
        signer,
    })
}

/// Walks the events in the file's order: versions 1, 2, … up to the head's, each
/// one's content matching its hash and its previous hash the one before's, and the
/// head's hash the last one's.
fn walk(proof: &Proof) -> Result<(), Break> {
    let mut expected = 1;
    let mut previous_hash = GENESIS;
    for (index, event) in proof.events.iter().enumerate() {
        let version = event.version;
        if version > proof.head.version {
            return Err(Break::Appended {
                version,
                head: proof.head.version,
            });
        }
        if version < expected {
            let out_of_place = proof.events[..index].iter().any(|e| e.version == version);
            return Err(if out_of_place {
                Break::Repeated { version }
            } else {
                Break::Reordered {
                    version,
                    after: expected - 1,
                }
            });
        }
        if version > expected {
            let later = proof.events[index + 1..]
                .iter()
                .any(|e| e.version == expected);
            return Err(if later {
                Break::Reordered {
                    version: expected,
                    after: version,
                }
            } else {
                Break::Missing {
                    version: expected,
                    before: expected - 1,
                    after: version,
                }
            });
        }
        if content_hash(proof.quote_id, event).as_deref() != Some(event.hash.as_str()) {
            return Err(Break::Altered {
                version,
                event_type: event.event_type.clone(),
            });
        }
        if event.prev_hash != previous_hash {
            return Err(Break::Unlinked {
                version,
                previous: version - 1,
            });
        }
        previous_hash = &event.hash;
        expected += 1;
    }
    let last = expected - 1;
    if last < proof.head.version {
        return Err(Break::MissingAtEnd {
            version: expected,
            head: proof.head.version,
            last,
        });
    }
    if proof.head.hash != previous_hash {
        return Err(Break::Head { version: last });
    }
    Ok(())
}

/// The hash of an event's content as the store computes it; none for a time that
/// is not RFC 3339 (no stored event has one).
fn content_hash(stream_id: Uuid, event: &ProvenEvent) -> Option<String> {
    let recorded_at = DateTime::parse_from_rfc3339(&event.recorded_at).ok()?;
    Some(
        HashInput {
            stream_id,
            version: event.version,
            event_id: event.event_id,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            payload: &event.payload,
            actor: &event.actor,
            recorded_at: recorded_at.with_timezone(&Utc),
            request_id: event.request_id.as_deref(),
            prev_hash: &event.prev_hash,
        }
        .hash(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::eventstore::GlobalPosition;

    /// A chained history of `n` events, as the store would record them.
    fn history(n: i64) -> (StreamHead, Vec<RecordedEvent>) {
        let stream_id = Uuid::now_v7();
        let mut events: Vec<RecordedEvent> = Vec::new();
        let mut prev_hash = GENESIS.to_owned();
        for version in 1..=n {
            let payload = json!({"city": format!("City {version}"), "n": version});
            let recorded_at =
                DateTime::from_timestamp(1_764_000_000 + version, 123_456_000).unwrap();
            let event_id = Uuid::now_v7();
            let hash = HashInput {
                stream_id,
                version,
                event_id,
                event_type: "GeographicDetailsProvided",
                schema_version: 1,
                payload: &payload,
                actor: "asha",
                recorded_at,
                request_id: Some("req-1"),
                prev_hash: &prev_hash,
            }
            .hash();
            events.push(RecordedEvent {
                global: GlobalPosition::START,
                stream_id,
                version,
                event_id,
                event_type: "GeographicDetailsProvided".into(),
                schema_version: 1,
                payload,
                actor: "asha".into(),
                recorded_at,
                request_id: Some("req-1".into()),
                prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
                hash,
            });
        }
        let head = StreamHead {
            stream_id,
            version: n,
            hash: prev_hash,
        };
        (head, events)
    }

    fn key() -> InstallationKey {
        InstallationKey::from_seed([42; 32])
    }

    fn exported(n: i64) -> Proof {
        let (head, events) = history(n);
        Proof::new(&head, "Q-7K3M9P", &events, "ada", Utc::now())
    }

    /// The file after `change` was made to its document.
    fn tampered(proof: Proof, change: impl FnOnce(&mut Value)) -> String {
        let mut document: Value = serde_json::from_str(&proof.to_file(Some(&key()))).unwrap();
        change(&mut document);
        serde_json::to_string_pretty(&document).unwrap()
    }

    fn events(document: &mut Value) -> &mut Vec<Value> {
        document["events"].as_array_mut().unwrap()
    }

    /// Recomputes the chain from event `from` on, as a forger who knows the rule.
    fn rechain(document: &mut Value, from: usize) {
        let quote_id: Uuid = document["quote_id"].as_str().unwrap().parse().unwrap();
        let list = events(document);
        for i in from..list.len() {
            let prev = if i == 0 {
                GENESIS.to_owned()
            } else {
                list[i - 1]["hash"].as_str().unwrap().to_owned()
            };
            list[i]["prev_hash"] = json!(prev);
            let event: ProvenEvent = serde_json::from_value(list[i].clone()).unwrap();
            list[i]["hash"] = json!(content_hash(quote_id, &event).unwrap());
        }
        let last = list.last().unwrap().clone();
        document["head"] = json!({"version": last["version"], "hash": last["hash"]});
    }

    #[test]
    fn an_exported_history_checks_as_intact_and_signed_by_its_key() {
        let file = exported(5).to_file(Some(&key()));
        let checked = check(&file, Some(&key().public_hex())).unwrap();
        assert_eq!(checked.chain, Ok(()));
        assert_eq!(checked.signer, Signer::Key(key().public_hex()));
        assert!(checked.is_proven());
        assert_eq!((checked.events, checked.head), (5, 5));
        let expected = check(&file, Some(&key().public_hex().to_uppercase())).unwrap();
        assert!(expected.is_proven());
        // Without the installation's key to hold it to, a signature shows nothing.
        let unchecked = check(&file, None).unwrap();
        assert_eq!(unchecked.signer, Signer::Unchecked(key().public_hex()));
        assert!(!unchecked.is_proven());

        let unsigned = check(&exported(5).to_file(None), None).unwrap();
        assert_eq!(unsigned.chain, Ok(()));
        assert_eq!(unsigned.signer, Signer::Unsigned);
        assert!(!unsigned.is_proven());
    }

    #[test]
    fn an_altered_event_is_named_and_the_signature_fails() {
        let file = tampered(exported(5), |d| {
            events(d)[2]["payload"]["city"] = json!("Elsewhere")
        });
        let checked = check(&file, None).unwrap();
        assert_eq!(
            checked.chain,
            Err(Break::Altered {
                version: 3,
                event_type: "GeographicDetailsProvided".into()
            })
        );
        assert_eq!(checked.signer, Signer::Invalid(SignatureError::Mismatch));

        // Each covered part of an event, and its time written another way.
        for (field, value) in [
            ("actor", json!("mallory")),
            ("recorded_at", json!("2025-11-24T16:00:03.123457Z")),
            ("request_id", json!(null)),
            ("schema_version", json!(2)),
            ("event_type", json!("ContactDetailsProvided")),
        ] {
            let file = tampered(exported(5), |d| events(d)[1][field] = value.clone());
            let chain = check(&file, None).unwrap().chain;
            assert!(
                matches!(chain, Err(Break::Altered { version: 2, .. })),
                "{field}: {chain:?}"
            );
        }
    }

    #[test]
    fn a_removed_event_is_named_in_the_middle_and_at_the_end() {
        let file = tampered(exported(5), |d| {
            events(d).remove(3);
        });
        assert_eq!(
            check(&file, None).unwrap().chain,
            Err(Break::Missing {
                version: 4,
                before: 3,
                after: 5
            })
        );
        let file = tampered(exported(5), |d| {
            events(d).pop();
        });
        assert_eq!(
            check(&file, None).unwrap().chain,
            Err(Break::MissingAtEnd {
                version: 5,
                head: 5,
                last: 4
            })
        );
        // The first event removed too.
        let file = tampered(exported(5), |d| {
            events(d).remove(0);
        });
        assert_eq!(
            check(&file, None).unwrap().chain,
            Err(Break::Missing {
                version: 1,
                before: 0,
                after: 2
            })
        );
    }

    #[test]
    fn reordered_and_repeated_events_are_named() {
        let file = tampered(exported(5), |d| events(d).swap(1, 3));
        assert_eq!(
            check(&file, None).unwrap().chain,
            Err(Break::Reordered {
                version: 2,
                after: 4
            })
        );
        let file = tampered(exported(5), |d| {
            let copy = events(d)[2].clone();
            events(d).insert(3, copy);
        });
        assert_eq!(
            check(&file, None).unwrap().chain,
            Err(Break::Repeated { version: 3 })
        );
    }

    #[test]
    fn an_appended_event_is_named_even_when_its_chain_and_the_head_were_forged() {
        let (head, mut events_of) = history(6);
        let sixth = events_of.pop().unwrap();
        let five = Proof::new(
            &StreamHead {
                version: 5,
                hash: events_of[4].hash.clone(),
                ..head
            },
            "Q-7K3M9P",
            &events_of,
            "ada",
            Utc::now(),
        );
        let appended = tampered(five.clone(), |d| {
            let event = serde_json::to_value(
                &Proof::new(
                    &StreamHead {
                        stream_id: sixth.stream_id,
                        version: 6,
                        hash: sixth.hash.clone(),
                    },
                    "",
                    std::slice::from_ref(&sixth),
                    "",
                    Utc::now(),
                )
                .events[0],
            )
            .unwrap();
            events(d).push(event);
        });
        let checked = check(&appended, None).unwrap();
        assert_eq!(
            checked.chain,
            Err(Break::Appended {
                version: 6,
                head: 5
            })
        );
        assert_eq!(checked.signer, Signer::Invalid(SignatureError::Mismatch));

        // A forger who also moves the head gets a chain that holds: the signature
        // is what tells.
        let forged = tampered(five, |d| {
            let mut sixth = events(d)[4].clone();
            sixth["version"] = json!(6);
            events(d).push(sixth);
            rechain(d, 5);
        });
        let checked = check(&forged, None).unwrap();
        assert_eq!(checked.chain, Ok(()));
        assert_eq!(checked.signer, Signer::Invalid(SignatureError::Mismatch));
        assert!(!checked.is_proven());
    }

    #[test]
    fn a_rechained_alteration_breaks_the_signature_and_a_replaced_one_the_link() {
        // Altered and every hash after it recomputed: only the signature tells.
        let file = tampered(exported(5), |d| {
            events(d)[1]["actor"] = json!("mallory");
            rechain(d, 1);
        });
        let checked = check(&file, None).unwrap();
        assert_eq!(checked.chain, Ok(()));
        assert_eq!(checked.signer, Signer::Invalid(SignatureError::Mismatch));

        // Altered with its own hash recomputed, the rest left: the next link breaks.
        let file = tampered(exported(5), |d| {
            events(d)[1]["actor"] = json!("mallory");
            let quote_id: Uuid = d["quote_id"].as_str().unwrap().parse().unwrap();
            let event: ProvenEvent = serde_json::from_value(events(d)[1].clone()).unwrap();
            events(d)[1]["hash"] = json!(content_hash(quote_id, &event).unwrap());
        });
        assert_eq!(
            check(&file, None).unwrap().chain,
            Err(Break::Unlinked {
                version: 3,
                previous: 2
            })
        );
    }

    #[test]
    fn a_forgery_signed_with_the_forgers_own_key_is_caught_by_the_expected_key() {
        let forger = InstallationKey::from_seed([13; 32]);
        let mut document: Value = serde_json::from_str(&exported(4).to_file(Some(&key()))).unwrap();
        events(&mut document)[1]["actor"] = json!("mallory");
        rechain(&mut document, 1);
        let proof: Proof = serde_json::from_value(document).unwrap();
        let forged = proof.to_file(Some(&forger));

        let unchecked = check(&forged, None).unwrap();
        assert_eq!(unchecked.chain, Ok(()));
        assert_eq!(unchecked.signer, Signer::Unchecked(forger.public_hex()));
        assert!(!unchecked.is_proven());
        let held_to_ours = check(&forged, Some(&key().public_hex())).unwrap();
        assert!(matches!(held_to_ours.signer, Signer::OtherKey { .. }));
        assert!(!held_to_ours.is_proven());
    }

    #[test]
    fn an_event_whose_time_is_not_rfc_3339_is_altered_even_with_empty_hashes() {
        let file = tampered(exported(2), |d| {
            for event in events(d).iter_mut() {
                event["recorded_at"] = json!("yesterday");
                event["hash"] = json!("");
            }
            events(d)[1]["prev_hash"] = json!("");
            d["head"]["hash"] = json!("");
        });
        assert!(matches!(
            check(&file, None).unwrap().chain,
            Err(Break::Altered { version: 1, .. })
        ));
    }

    #[test]
    fn a_file_resigned_by_another_key_or_with_a_field_added_is_not_proven() {
        let other = InstallationKey::from_seed([9; 32]);
        let file = exported(3).to_file(Some(&other));
        let checked = check(&file, Some(&key().public_hex())).unwrap();
        assert_eq!(
            checked.signer,
            Signer::OtherKey {
                found: other.public_hex(),
                expected: key().public_hex()
            }
        );
        assert!(!checked.is_proven());

        let file = tampered(exported(3), |d| d["exported_by"] = json!("someone else"));
        assert_eq!(
            check(&file, None).unwrap().signer,
            Signer::Invalid(SignatureError::Mismatch)
        );
        let file = tampered(exported(3), |d| d["note"] = json!("trust me"));
        assert!(matches!(check(&file, None), Err(Unreadable::Shape(_))));
        assert!(matches!(check("{", None), Err(Unreadable::Json(_))));
        let file = tampered(exported(3), |d| d["format"] = json!("quoteline-proof/9"));
        assert!(matches!(check(&file, None), Err(Unreadable::Format { .. })));
    }
}
