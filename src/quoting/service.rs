//! The quote service: load a quote (fold its events), decide, and append with the
//! expected version. The only way quoting's commands reach the event store.

use chrono::{DateTime, Utc};
use rand::Rng;
use uuid::Uuid;

use super::domain::{Action, Command, DomainError, PersonName, Quote, QuoteEvent, decide, evolve};
use crate::eventstore::{
    AppendError, AppendRequest, Appended, EventStore, ExpectedVersion, Metadata, NewEvent,
    RecordedEvent,
};

/// Why a command did not lead to events.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A rule of the quote said no; the message is for the person.
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// The quote moved on since the page was rendered at `expected`.
    #[error("the quote is at version {actual}, the form was for version {expected}")]
    Stale { expected: i64, actual: i64 },
    #[error("the quote's events could not be read: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error(transparent)]
    Store(anyhow::Error),
}

impl From<sqlx::Error> for CommandError {
    fn from(error: sqlx::Error) -> Self {
        CommandError::Store(error.into())
    }
}

/// Who sent a command, when, and with which form.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
}

impl Envelope {
    fn metadata(&self, actor: &str) -> Metadata {
        let mut metadata = Metadata::new(actor, self.at);
        metadata.request_id = self.request_id.clone();
        metadata.idempotency_key = self.idempotency_key.clone();
        metadata
    }
}

/// How many fresh references a start tries before giving up.
const REFERENCE_ATTEMPTS: usize = 8;

#[derive(Clone)]
pub struct QuoteService {
    store: EventStore,
}

impl QuoteService {
    pub fn new(store: EventStore) -> Self {
        QuoteService { store }
    }

    /// The quote as its events fold, or `None` if it was never started. With
    /// `up_to`, the quote as it stood after that version.
    #[tracing::instrument(skip(self))]
    pub async fn load(
        &self,
        quote_id: Uuid,
        up_to: Option<i64>,
    ) -> Result<Option<Quote>, CommandError> {
        let events = self.store.read_stream(quote_id, 0).await?;
        let mut quote = Quote::default();
        for recorded in events
            .iter()
            .take_while(|e| up_to.is_none_or(|v| e.version <= v))
        {
            quote = evolve(quote, &decode(recorded)?);
        }
        Ok(quote.is_started().then_some(quote))
    }

    /// Starts a quote under a fresh reference (tried again on the rare clash with a
    /// reference already taken).
    #[tracing::instrument(skip_all, fields(quote_id = %quote_id))]
    pub async fn start(
        &self,
        quote_id: Uuid,
        command_actor: super::domain::Actor,
        applicant_name: PersonName,
        envelope: &Envelope,
    ) -> Result<Appended, CommandError> {
        for _ in 0..REFERENCE_ATTEMPTS {
            let command = Command::new(
                command_actor.clone(),
                Action::Start {
                    reference: new_reference(),
                    applicant_name: applicant_name.clone(),
                },
            );
            match self.execute(quote_id, 0, command, envelope).await {
                Err(CommandError::Store(error)) if is_reference_clash(&error) => continue,
                outcome => return outcome,
            }
        }
        Err(CommandError::Store(anyhow::anyhow!(
            "no free quote reference after {REFERENCE_ATTEMPTS} attempts"
        )))
    }

    /// Decides `command` on the quote as it stood at `expected_version` (the state the
    /// person saw) and appends on condition that it is still the latest. Deciding on
    /// the seen state lets a resubmitted form find its first outcome by its
    /// idempotency key instead of being judged against the state it produced.
    #[tracing::instrument(skip_all, fields(quote_id = %quote_id, expected_version))]
    pub async fn execute(
        &self,
        quote_id: Uuid,
        expected_version: i64,
        command: Command,
        envelope: &Envelope,
    ) -> Result<Appended, CommandError> {
        let seen = self
            .load(quote_id, Some(expected_version))
            .await?
            .unwrap_or_default();
        self.decide_and_append(quote_id, seen, expected_version, command, envelope)
            .await
            .map(|(appended, _)| appended)
    }

    /// `execute` for a caller that has just loaded the quote (`latest`): when the
    /// form was rendered from that very version, nothing is read again. Also returns
    /// the quote as the appended events leave it.
    #[tracing::instrument(skip_all, fields(quote_id = %quote_id, expected_version))]
    pub async fn execute_on(
        &self,
        quote_id: Uuid,
        latest: &Quote,
        expected_version: i64,
        command: Command,
        envelope: &Envelope,
    ) -> Result<(Appended, Quote), CommandError> {
        let seen = if latest.version as i64 == expected_version {
            latest.clone()
        } else {
            self.load(quote_id, Some(expected_version))
                .await?
                .unwrap_or_default()
        };
        self.decide_and_append(quote_id, seen, expected_version, command, envelope)
            .await
    }

    async fn decide_and_append(
        &self,
        quote_id: Uuid,
        seen: Quote,
        expected_version: i64,
        command: Command,
        envelope: &Envelope,
    ) -> Result<(Appended, Quote), CommandError> {
        if seen.version as i64 != expected_version {
            // The form claims a version the quote never had.
            return Err(CommandError::Stale {
                expected: expected_version,
                actual: seen.version as i64,
            });
        }
        let events = decide(&seen, &command)?;
        let request = AppendRequest {
            stream_id: quote_id,
            expected: ExpectedVersion::from(expected_version),
            events: events.iter().map(encode).collect(),
            metadata: envelope.metadata(&command.actor.username),
        };
        let appended = match self.store.append(request).await {
            Ok(appended) => appended,
            Err(AppendError::Conflict { actual, .. }) => {
                return Err(CommandError::Stale {
                    expected: expected_version,
                    actual,
                });
            }
            Err(error) => return Err(CommandError::Store(error.into())),
        };
        // What was stored, not what was decided now: a repeated key returns the
        // first outcome, whose events may differ.
        let mut after = seen;
        for recorded in appended.events() {
            after = evolve(after, &decode(recorded)?);
        }
        Ok((appended, after))
    }
}

pub fn encode(event: &QuoteEvent) -> NewEvent {
    NewEvent {
        event_type: event.event_type().to_owned(),
        schema_version: QuoteEvent::SCHEMA_VERSION,
        payload: event.to_payload(),
    }
}

pub fn decode(recorded: &RecordedEvent) -> Result<QuoteEvent, serde_json::Error> {
    QuoteEvent::from_stored(
        &recorded.event_type,
        recorded.schema_version,
        recorded.payload.clone(),
    )
}

fn is_reference_clash(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<AppendError>(),
        Some(AppendError::UniqueViolation(constraint)) if constraint.contains("reference")
    )
}

/// `Q-` and six characters of Crockford's base 32 (no I, L, O, U): short enough to
/// read over the phone, unambiguous when typed.
pub fn new_reference() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut rng = rand::rng();
    let code: String = (0..6)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("Q-{code}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_q_and_six_unambiguous_characters() {
        for _ in 0..1000 {
            let reference = new_reference();
            assert_eq!(reference.len(), 8);
            assert!(reference.starts_with("Q-"));
            assert!(
                reference[2..]
                    .chars()
                    .all(|c| c.is_ascii_digit() || (c.is_ascii_uppercase() && !"ILOU".contains(c)))
            );
        }
    }
}
