//! The quote service: load a quote (fold its events), decide, and append with the
//! expected version. The only way quoting's commands reach the event store.

use rand::Rng;
use uuid::Uuid;

use super::domain::{Action, Command, DomainError, PersonName, Quote, QuoteEvent, decide, evolve};
use crate::db::Unique;
use crate::eventstore::{
    AppendError, AppendRequest, Appended, EventStore, ExpectedVersion, Metadata,
};
use crate::kernel::{Actor, Envelope};

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
    /// The store failed (or refused for a reason no rule of the quote explains).
    #[error(transparent)]
    Store(#[from] AppendError),
}

impl From<sqlx::Error> for CommandError {
    fn from(error: sqlx::Error) -> Self {
        CommandError::Store(error.into())
    }
}

/// The event metadata of a command sent by `actor` in `envelope`.
fn metadata(envelope: &Envelope, actor: &str) -> Metadata {
    let mut metadata = Metadata::new(actor, envelope.at);
    metadata.request_id = envelope.request_id.clone();
    metadata.idempotency_key = envelope.idempotency_key.clone();
    metadata
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
            quote = evolve(quote, &QuoteEvent::decode(recorded)?);
        }
        Ok(quote.is_started().then_some(quote))
    }

    /// Starts a quote under a fresh reference (tried again on the rare clash with a
    /// reference already taken).
    #[tracing::instrument(skip_all, fields(quote_id = %quote_id))]
    pub async fn start(
        &self,
        quote_id: Uuid,
        command_actor: Actor,
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
                Err(CommandError::Store(AppendError::UniqueViolation(Unique::QuoteReference))) => {
                    continue;
                }
                outcome => return outcome,
            }
        }
        Err(CommandError::Store(AppendError::UniqueViolation(
            Unique::QuoteReference,
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
            events: events.iter().map(QuoteEvent::encode).collect(),
            metadata: metadata(envelope, &command.actor.username),
        };
        let appended = match self.store.append(request).await {
            Ok(appended) => appended,
            Err(AppendError::Conflict { actual, .. }) => {
                return Err(CommandError::Stale {
                    expected: expected_version,
                    actual,
                });
            }
            Err(error) => return Err(CommandError::Store(error)),
        };
        // What was stored, not what was decided now: a repeated key returns the
        // first outcome, whose events may differ.
        let mut after = seen;
        for recorded in appended.events() {
            after = evolve(after, &QuoteEvent::decode(recorded)?);
        }
        Ok((appended, after))
    }
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
