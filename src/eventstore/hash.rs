//! The per-stream SHA-256 hash chain: each event's hash covers its own content and
//! the hash of the event before it, so changing, removing or reordering any stored
//! event breaks every hash after it.
//!
//! The encoding is canonical so that it survives a round trip through either
//! backend: object keys sorted, no insignificant white space (PostgreSQL's jsonb
//! reorders keys), times in UTC to the microsecond.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The `prev_hash` of a stream's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields of an event that its hash covers.
pub struct HashInput<'a> {
    pub stream_id: Uuid,
    pub version: i64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub payload: &'a Value,
    pub actor: &'a str,
    pub recorded_at: DateTime<Utc>,
    pub request_id: Option<&'a str>,
    pub prev_hash: &'a str,
}

impl HashInput<'_> {
    pub fn hash(&self) -> String {
        let mut encoded = String::with_capacity(256);
        let recorded_at = self
            .recorded_at
            .to_rfc3339_opts(SecondsFormat::Micros, true);
        let fields = [
            Value::from(self.stream_id.to_string()),
            Value::from(self.version),
            Value::from(self.event_id.to_string()),
            Value::from(self.event_type),
            Value::from(self.schema_version),
            self.payload.clone(),
            Value::from(self.actor),
            Value::from(recorded_at),
            self.request_id.map_or(Value::Null, Value::from),
            Value::from(self.prev_hash),
        ];
        write_canonical(&Value::Array(fields.into()), &mut encoded);
        hex::encode(Sha256::digest(encoded.as_bytes()))
    }
}

/// Writes `value` as JSON with object keys in byte order and no white space.
pub fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_encoding_ignores_key_order_and_white_space() {
        let a: Value = serde_json::from_str(r#"{ "b": 1, "a": {"y": [1, 2], "x": "é"} }"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"é","y":[1,2]},"b":1}"#).unwrap();
        let (mut ea, mut eb) = (String::new(), String::new());
        write_canonical(&a, &mut ea);
        write_canonical(&b, &mut eb);
        assert_eq!(ea, eb);
        assert_eq!(ea, r#"{"a":{"x":"é","y":[1,2]},"b":1}"#);
    }

    #[test]
    fn every_covered_field_changes_the_hash() {
        let payload = json!({"city": "Pune"});
        let other_payload = json!({"city": "Mumbai"});
        let base = HashInput {
            stream_id: Uuid::nil(),
            version: 1,
            event_id: Uuid::nil(),
            event_type: "CityChanged",
            schema_version: 1,
            payload: &payload,
            actor: "asha",
            recorded_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            request_id: None,
            prev_hash: GENESIS,
        };
        let original = base.hash();
        let variants = [
            HashInput { version: 2, ..base },
            HashInput {
                payload: &other_payload,
                ..base
            },
            HashInput {
                actor: "ravi",
                ..base
            },
            HashInput {
                event_type: "Other",
                ..base
            },
            HashInput {
                schema_version: 2,
                ..base
            },
            HashInput {
                request_id: Some("r1"),
                ..base
            },
            HashInput {
                prev_hash: "ab",
                ..base
            },
            HashInput {
                stream_id: Uuid::max(),
                ..base
            },
            HashInput {
                event_id: Uuid::max(),
                ..base
            },
            HashInput {
                recorded_at: DateTime::from_timestamp(1_700_000_001, 0).unwrap(),
                ..base
            },
        ];
        for variant in variants {
            assert_ne!(variant.hash(), original);
        }
        assert_eq!(base.hash(), original, "hashing is deterministic");
    }
}
