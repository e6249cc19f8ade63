//! The Quote aggregate: its state, the commands people give it, and the rules that
//! decide which events a command produces.
//!
//! `decide` holds every business rule and never changes anything; `evolve` applies an
//! event that has already happened and never refuses one. Loading a quote is a fold of
//! `evolve` over its stored events, so the two must agree on what each event means.

use serde::{Deserialize, Serialize};

use super::events::QuoteEvent;
use super::sections::{ContactDetails, FamilyDetails, GeographicDetails, NonEmptyText, PersonName};
use super::status::Status;
use crate::kernel::{Actor, Role};

/// A quote as its events left it. `Quote::default()` is the quote before its first
/// event: not started, `status` is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub reference: String,
    pub applicant_name: Option<PersonName>,
    /// Username of the agent who started the quote; only they may change it.
    pub agent: String,
    pub status: Option<Status>,
    pub geographic: Option<GeographicDetails>,
    pub contact: Option<ContactDetails>,
    pub family: Option<FamilyDetails>,
    pub referral_count: u32,
    pub last_referral_note: Option<NonEmptyText>,
    pub rejection_reason: Option<NonEmptyText>,
    /// How many events have been folded in: the stream version to append after.
    pub version: u64,
}

impl Quote {
    /// Version of this struct's serialised shape. Bump it whenever a field changes so
    /// that snapshots of the old shape are ignored rather than misread.
    pub const SCHEMA_VERSION: i32 = 2;

    pub fn is_started(&self) -> bool {
        self.status.is_some()
    }

    pub fn sections_complete(&self) -> bool {
        self.missing_sections().is_empty()
    }

    /// The sections still to be provided, in the words used on pages.
    pub fn missing_sections(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.geographic.is_none() {
            missing.push("geographic details");
        }
        if self.contact.is_none() {
            missing.push("contact details");
        }
        if self.family.is_none() {
            missing.push("family details");
        }
        missing
    }

    fn is_agent(&self, actor: &Actor) -> bool {
        actor.username == self.agent
    }
}

/// What someone asks to happen to a quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `reference` is the short human reference, chosen by the caller so that it can
    /// be made unique against the store.
    Start {
        reference: String,
        applicant_name: PersonName,
    },
    CorrectApplicantName(PersonName),
    ProvideGeographic(GeographicDetails),
    ProvideContact(ContactDetails),
    ProvideFamily(FamilyDetails),
    Finalize,
    Approve,
    Reject {
        reason: NonEmptyText,
    },
    ReferBack {
        note: NonEmptyText,
    },
    Withdraw,
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Start { .. } => ActionKind::Start,
            Action::CorrectApplicantName(_) => ActionKind::CorrectApplicantName,
            Action::ProvideGeographic(_) => ActionKind::ProvideGeographic,
            Action::ProvideContact(_) => ActionKind::ProvideContact,
            Action::ProvideFamily(_) => ActionKind::ProvideFamily,
            Action::Finalize => ActionKind::Finalize,
            Action::Approve => ActionKind::Approve,
            Action::Reject { .. } => ActionKind::Reject,
            Action::ReferBack { .. } => ActionKind::ReferBack,
            Action::Withdraw => ActionKind::Withdraw,
        }
    }

    /// The action in the domain's words, for messages and logs.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// An [`Action`] without its data, so that errors can say which action was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Start,
    CorrectApplicantName,
    ProvideGeographic,
    ProvideContact,
    ProvideFamily,
    Finalize,
    Approve,
    Reject,
    ReferBack,
    Withdraw,
}

impl ActionKind {
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Start => "start",
            ActionKind::CorrectApplicantName => "correct the applicant's name",
            ActionKind::ProvideGeographic => "provide geographic details",
            ActionKind::ProvideContact => "provide contact details",
            ActionKind::ProvideFamily => "provide family details",
            ActionKind::Finalize => "submit",
            ActionKind::Approve => "approve",
            ActionKind::Reject => "reject",
            ActionKind::ReferBack => "refer back",
            ActionKind::Withdraw => "withdraw",
        }
    }

    /// "This quote … can no longer be …" — what the action would do to the quote.
    fn participle(self) -> &'static str {
        match self {
            ActionKind::Start => "started",
            ActionKind::CorrectApplicantName
            | ActionKind::ProvideGeographic
            | ActionKind::ProvideContact
            | ActionKind::ProvideFamily => "changed",
            ActionKind::Finalize => "submitted",
            ActionKind::Approve => "approved",
            ActionKind::Reject => "rejected",
            ActionKind::ReferBack => "referred back",
            ActionKind::Withdraw => "withdrawn",
        }
    }

    /// "Only an underwriter can …".
    fn phrase(self) -> &'static str {
        match self {
            ActionKind::Start => "start a quote",
            ActionKind::CorrectApplicantName
            | ActionKind::ProvideGeographic
            | ActionKind::ProvideContact
            | ActionKind::ProvideFamily => "change a quote",
            ActionKind::Finalize => "submit a quote",
            ActionKind::Approve => "approve a quote",
            ActionKind::Reject => "reject a quote",
            ActionKind::ReferBack => "refer a quote back",
            ActionKind::Withdraw => "withdraw a quote",
        }
    }

    fn is_section(self) -> bool {
        matches!(
            self,
            ActionKind::ProvideGeographic | ActionKind::ProvideContact | ActionKind::ProvideFamily
        )
    }

    fn is_decision(self) -> bool {
        matches!(
            self,
            ActionKind::Approve | ActionKind::Reject | ActionKind::ReferBack
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub actor: Actor,
    pub action: Action,
}

impl Command {
    pub fn new(actor: Actor, action: Action) -> Self {
        Self { actor, action }
    }
}

/// Why a command was refused. Each displays as a sentence for the page; nothing has
/// been written when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("This quote has already been started")]
    AlreadyStarted,
    #[error("This quote does not exist")]
    QuoteNotFound,
    #[error("{}", not_permitted_message(*.action, *.status))]
    NotPermitted { action: ActionKind, status: Status },
    #[error("Complete the {} before submitting", join_with_and(.missing))]
    SectionsIncomplete { missing: Vec<&'static str> },
    #[error("Only the agent who started this quote can change it")]
    NotTheQuotesAgent,
    #[error("Only {} can {}", role_with_article(*.role), .action.phrase())]
    RoleRequired { role: Role, action: ActionKind },
    #[error("You cannot approve, reject or refer back a quote you created")]
    OwnQuote,
}

fn not_permitted_message(action: ActionKind, status: Status) -> String {
    let done = status.participle();
    let verb = action.participle();
    match status {
        Status::Initiated | Status::Saved if action.is_decision() => {
            format!("This quote has not been submitted yet, so it cannot be {verb}")
        }
        Status::Initiated if action == ActionKind::Finalize => {
            "This quote has no answers yet, so it cannot be submitted".to_owned()
        }
        _ if done == verb => format!("This quote has already been {done}"),
        _ if action.is_section() => {
            format!("This quote has been {done}, so its sections can no longer be changed")
        }
        _ => format!("This quote has been {done}, so it can no longer be {verb}"),
    }
}

fn join_with_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn role_with_article(role: Role) -> String {
    // Every role name starts with a vowel sound.
    format!("an {}", role.as_str())
}

impl Quote {
    /// Whether `actor` may `action` this quote now, or the rule that says no. The
    /// one statement of who may do what when: `decide` asks it before producing any
    /// event, and pages ask it to choose which actions to offer.
    ///
    /// Checks run in the order a person would ask: does the quote exist, may *you*
    /// do this, and may it be done *now*.
    pub fn permits(&self, actor: &Actor, action: ActionKind) -> Result<(), DomainError> {
        let Some(status) = self.status else {
            return match action {
                ActionKind::Start => require_role(actor, Role::Agent, action),
                _ => Err(DomainError::QuoteNotFound),
            };
        };
        let not_now = || DomainError::NotPermitted { action, status };
        match action {
            ActionKind::Start => {
                require_role(actor, Role::Agent, action)?;
                Err(DomainError::AlreadyStarted)
            }
            // The name and the sections can be changed until the quote is submitted.
            ActionKind::CorrectApplicantName
            | ActionKind::ProvideGeographic
            | ActionKind::ProvideContact
            | ActionKind::ProvideFamily => {
                require_agent(self, actor)?;
                match status {
                    Status::Initiated | Status::Saved => Ok(()),
                    _ => Err(not_now()),
                }
            }
            ActionKind::Finalize => {
                require_agent(self, actor)?;
                if !matches!(status, Status::Initiated | Status::Saved) {
                    return Err(not_now());
                }
                let missing = self.missing_sections();
                if !missing.is_empty() {
                    return Err(DomainError::SectionsIncomplete { missing });
                }
                match status {
                    Status::Saved => Ok(()),
                    _ => Err(not_now()),
                }
            }
            // Holding both roles does not let an underwriter decide a quote they
            // started: that is the point of underwriting.
            ActionKind::Approve | ActionKind::Reject | ActionKind::ReferBack => {
                require_role(actor, Role::Underwriter, action)?;
                if self.is_agent(actor) {
                    return Err(DomainError::OwnQuote);
                }
                match status {
                    Status::Finalized => Ok(()),
                    _ => Err(not_now()),
                }
            }
            ActionKind::Withdraw => {
                require_agent(self, actor)?;
                match status.is_final() {
                    true => Err(not_now()),
                    false => Ok(()),
                }
            }
        }
    }
}

/// Decides which events `command` produces against `state`, or why it is refused.
pub fn decide(state: &Quote, command: &Command) -> Result<Vec<QuoteEvent>, DomainError> {
    state.permits(&command.actor, command.action.kind())?;
    let status = state.status;
    let events = match &command.action {
        Action::Start {
            reference,
            applicant_name,
        } => vec![QuoteEvent::QuoteStarted {
            reference: reference.clone(),
            applicant_name: applicant_name.clone(),
            agent: command.actor.username.clone(),
        }],
        Action::CorrectApplicantName(name) => vec![QuoteEvent::ApplicantNameCorrected {
            applicant_name: name.clone(),
        }],
        Action::ProvideGeographic(details) => with_first_save(
            status,
            QuoteEvent::GeographicDetailsProvided(details.clone()),
        ),
        Action::ProvideContact(details) => {
            with_first_save(status, QuoteEvent::ContactDetailsProvided(details.clone()))
        }
        Action::ProvideFamily(details) => {
            with_first_save(status, QuoteEvent::FamilyDetailsProvided(details.clone()))
        }
        Action::Finalize => vec![QuoteEvent::QuoteFinalized {
            from: Status::Saved,
            to: Status::Finalized,
        }],
        Action::Approve => vec![QuoteEvent::QuoteApproved {
            from: Status::Finalized,
            to: Status::Approved,
        }],
        Action::Reject { reason } => vec![QuoteEvent::QuoteRejected {
            reason: reason.clone(),
            from: Status::Finalized,
            to: Status::Rejected,
        }],
        Action::ReferBack { note } => vec![QuoteEvent::QuoteReferredBack {
            note: note.clone(),
            from: Status::Finalized,
            to: Status::Saved,
        }],
        Action::Withdraw => vec![QuoteEvent::QuoteWithdrawn {
            from: status.expect("permits refuses a quote that was never started"),
            to: Status::Withdrawn,
        }],
    };
    Ok(events)
}

/// A section's event; the first section also saves the quote.
fn with_first_save(status: Option<Status>, event: QuoteEvent) -> Vec<QuoteEvent> {
    match status {
        Some(Status::Initiated) => vec![
            event,
            QuoteEvent::QuoteSaved {
                from: Status::Initiated,
                to: Status::Saved,
            },
        ],
        _ => vec![event],
    }
}

fn require_role(actor: &Actor, role: Role, action: ActionKind) -> Result<(), DomainError> {
    if actor.has_role(role) {
        Ok(())
    } else {
        Err(DomainError::RoleRequired { role, action })
    }
}

fn require_agent(state: &Quote, actor: &Actor) -> Result<(), DomainError> {
    if state.is_agent(actor) {
        Ok(())
    } else {
        Err(DomainError::NotTheQuotesAgent)
    }
}

/// Applies one event. Events are facts, so this never refuses one, even if it would
/// not be decided today.
pub fn evolve(mut state: Quote, event: &QuoteEvent) -> Quote {
    match event {
        QuoteEvent::QuoteStarted {
            reference,
            applicant_name,
            agent,
        } => {
            state.reference.clone_from(reference);
            state.applicant_name = Some(applicant_name.clone());
            state.agent.clone_from(agent);
            state.status = Some(Status::Initiated);
        }
        QuoteEvent::ApplicantNameCorrected { applicant_name } => {
            state.applicant_name = Some(applicant_name.clone());
        }
        QuoteEvent::GeographicDetailsProvided(details) => state.geographic = Some(details.clone()),
        QuoteEvent::ContactDetailsProvided(details) => state.contact = Some(details.clone()),
        QuoteEvent::FamilyDetailsProvided(details) => state.family = Some(details.clone()),
        QuoteEvent::QuoteSaved { to, .. }
        | QuoteEvent::QuoteFinalized { to, .. }
        | QuoteEvent::QuoteApproved { to, .. }
        | QuoteEvent::QuoteWithdrawn { to, .. } => state.status = Some(*to),
        QuoteEvent::QuoteRejected { reason, to, .. } => {
            state.status = Some(*to);
            state.rejection_reason = Some(reason.clone());
        }
        QuoteEvent::QuoteReferredBack { note, to, .. } => {
            state.status = Some(*to);
            state.referral_count += 1;
            state.last_referral_note = Some(note.clone());
        }
    }
    state.version += 1;
    state
}

/// Replays events from the beginning of a stream.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a QuoteEvent>) -> Quote {
    events.into_iter().fold(Quote::default(), evolve)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `decide` answers: the events to append, or why nothing is.
    type Outcome = Result<Vec<QuoteEvent>, DomainError>;

    // People. `alice` starts every quote in these tests.
    fn alice() -> Actor {
        Actor::new("alice", [Role::Agent])
    }
    fn bob() -> Actor {
        Actor::new("bob", [Role::Agent])
    }
    fn uma() -> Actor {
        Actor::new("uma", [Role::Underwriter])
    }
    fn alice_as_underwriter_too() -> Actor {
        Actor::new("alice", [Role::Agent, Role::Underwriter])
    }
    fn audrey() -> Actor {
        Actor::new("audrey", [Role::Auditor])
    }

    fn geographic() -> GeographicDetails {
        GeographicDetails::parse("IN", "Maharashtra", "Mumbai", "400001").unwrap()
    }
    fn contact() -> ContactDetails {
        ContactDetails::parse("asha@example.com", "+91 98765 43210").unwrap()
    }
    fn family() -> FamilyDetails {
        FamilyDetails::parse("1", "", &["Meera".to_owned()]).unwrap()
    }
    fn applicant() -> PersonName {
        PersonName::parse("Asha Rao").unwrap()
    }
    fn corrected() -> PersonName {
        PersonName::parse("Asha Rao-Iyer").unwrap()
    }
    fn corrected_event() -> QuoteEvent {
        QuoteEvent::ApplicantNameCorrected {
            applicant_name: corrected(),
        }
    }
    fn reason() -> NonEmptyText {
        NonEmptyText::parse("Income not verified").unwrap()
    }
    fn note() -> NonEmptyText {
        NonEmptyText::parse("Please check the postal code").unwrap()
    }

    fn start() -> Action {
        Action::Start {
            reference: "Q-7K3M9P".into(),
            applicant_name: applicant(),
        }
    }

    // Histories, each a stream as `decide` would have produced it.
    fn started() -> Vec<QuoteEvent> {
        vec![QuoteEvent::QuoteStarted {
            reference: "Q-7K3M9P".into(),
            applicant_name: applicant(),
            agent: "alice".into(),
        }]
    }
    fn saved_with_geographic_only() -> Vec<QuoteEvent> {
        let mut events = started();
        events.push(QuoteEvent::GeographicDetailsProvided(geographic()));
        events.push(QuoteEvent::QuoteSaved {
            from: Status::Initiated,
            to: Status::Saved,
        });
        events
    }
    fn saved_and_complete() -> Vec<QuoteEvent> {
        let mut events = saved_with_geographic_only();
        events.push(QuoteEvent::ContactDetailsProvided(contact()));
        events.push(QuoteEvent::FamilyDetailsProvided(family()));
        events
    }
    fn finalized() -> Vec<QuoteEvent> {
        let mut events = saved_and_complete();
        events.push(QuoteEvent::QuoteFinalized {
            from: Status::Saved,
            to: Status::Finalized,
        });
        events
    }
    fn then(mut events: Vec<QuoteEvent>, event: QuoteEvent) -> Vec<QuoteEvent> {
        events.push(event);
        events
    }
    fn approved() -> Vec<QuoteEvent> {
        then(finalized(), approved_event())
    }
    fn rejected() -> Vec<QuoteEvent> {
        then(finalized(), rejected_event())
    }
    fn withdrawn() -> Vec<QuoteEvent> {
        then(finalized(), withdrawn_from(Status::Finalized))
    }

    fn approved_event() -> QuoteEvent {
        QuoteEvent::QuoteApproved {
            from: Status::Finalized,
            to: Status::Approved,
        }
    }
    fn rejected_event() -> QuoteEvent {
        QuoteEvent::QuoteRejected {
            reason: reason(),
            from: Status::Finalized,
            to: Status::Rejected,
        }
    }
    fn referred_back_event() -> QuoteEvent {
        QuoteEvent::QuoteReferredBack {
            note: note(),
            from: Status::Finalized,
            to: Status::Saved,
        }
    }
    fn withdrawn_from(from: Status) -> QuoteEvent {
        QuoteEvent::QuoteWithdrawn {
            from,
            to: Status::Withdrawn,
        }
    }
    fn saved_event() -> QuoteEvent {
        QuoteEvent::QuoteSaved {
            from: Status::Initiated,
            to: Status::Saved,
        }
    }

    fn given_when(history: &[QuoteEvent], actor: Actor, action: Action) -> Outcome {
        decide(&fold(history), &Command::new(actor, action))
    }

    fn refused(action: ActionKind, status: Status) -> Outcome {
        Err(DomainError::NotPermitted { action, status })
    }

    /// Every action, each given by the person who would normally give it.
    fn every_action() -> [(Actor, Action); 10] {
        [
            (alice(), start()),
            (alice(), Action::CorrectApplicantName(corrected())),
            (alice(), Action::ProvideGeographic(geographic())),
            (alice(), Action::ProvideContact(contact())),
            (alice(), Action::ProvideFamily(family())),
            (alice(), Action::Finalize),
            (uma(), Action::Approve),
            (uma(), Action::Reject { reason: reason() }),
            (uma(), Action::ReferBack { note: note() }),
            (alice(), Action::Withdraw),
        ]
    }

    /// The whole lifecycle table: every status against every action, each cell the
    /// exact events or the exact refusal.
    #[test]
    fn every_status_answers_every_action_as_the_lifecycle_table_says() {
        use ActionKind as A;
        use Status as S;
        type Row = (&'static str, Vec<QuoteEvent>, [Outcome; 10]);
        let not_found = || Err(DomainError::QuoteNotFound);
        let rows: Vec<Row> = vec![
            (
                "not started",
                vec![],
                [
                    Ok(started()),
                    not_found(),
                    not_found(),
                    not_found(),
                    not_found(),
                    not_found(),
                    not_found(),
                    not_found(),
                    not_found(),
                    not_found(),
                ],
            ),
            (
                "Initiated",
                started(),
                [
                    Err(DomainError::AlreadyStarted),
                    Ok(vec![corrected_event()]),
                    Ok(vec![
                        QuoteEvent::GeographicDetailsProvided(geographic()),
                        saved_event(),
                    ]),
                    Ok(vec![
                        QuoteEvent::ContactDetailsProvided(contact()),
                        saved_event(),
                    ]),
                    Ok(vec![
                        QuoteEvent::FamilyDetailsProvided(family()),
                        saved_event(),
                    ]),
                    Err(DomainError::SectionsIncomplete {
                        missing: vec!["geographic details", "contact details", "family details"],
                    }),
                    refused(A::Approve, S::Initiated),
                    refused(A::Reject, S::Initiated),
                    refused(A::ReferBack, S::Initiated),
                    Ok(vec![withdrawn_from(S::Initiated)]),
                ],
            ),
            (
                "Saved, sections incomplete",
                saved_with_geographic_only(),
                [
                    Err(DomainError::AlreadyStarted),
                    Ok(vec![corrected_event()]),
                    Ok(vec![QuoteEvent::GeographicDetailsProvided(geographic())]),
                    Ok(vec![QuoteEvent::ContactDetailsProvided(contact())]),
                    Ok(vec![QuoteEvent::FamilyDetailsProvided(family())]),
                    Err(DomainError::SectionsIncomplete {
                        missing: vec!["contact details", "family details"],
                    }),
                    refused(A::Approve, S::Saved),
                    refused(A::Reject, S::Saved),
                    refused(A::ReferBack, S::Saved),
                    Ok(vec![withdrawn_from(S::Saved)]),
                ],
            ),
            (
                "Saved, sections complete",
                saved_and_complete(),
                [
                    Err(DomainError::AlreadyStarted),
                    Ok(vec![corrected_event()]),
                    Ok(vec![QuoteEvent::GeographicDetailsProvided(geographic())]),
                    Ok(vec![QuoteEvent::ContactDetailsProvided(contact())]),
                    Ok(vec![QuoteEvent::FamilyDetailsProvided(family())]),
                    Ok(vec![QuoteEvent::QuoteFinalized {
                        from: S::Saved,
                        to: S::Finalized,
                    }]),
                    refused(A::Approve, S::Saved),
                    refused(A::Reject, S::Saved),
                    refused(A::ReferBack, S::Saved),
                    Ok(vec![withdrawn_from(S::Saved)]),
                ],
            ),
            (
                "Finalized",
                finalized(),
                [
                    Err(DomainError::AlreadyStarted),
                    refused(A::CorrectApplicantName, S::Finalized),
                    refused(A::ProvideGeographic, S::Finalized),
                    refused(A::ProvideContact, S::Finalized),
                    refused(A::ProvideFamily, S::Finalized),
                    refused(A::Finalize, S::Finalized),
                    Ok(vec![approved_event()]),
                    Ok(vec![rejected_event()]),
                    Ok(vec![referred_back_event()]),
                    Ok(vec![withdrawn_from(S::Finalized)]),
                ],
            ),
        ];
        let final_rows = [
            ("Approved", approved(), S::Approved),
            ("Rejected", rejected(), S::Rejected),
            ("Withdrawn", withdrawn(), S::Withdrawn),
        ]
        .into_iter()
        .map(|(name, history, status)| -> Row {
            (
                name,
                history,
                [
                    Err(DomainError::AlreadyStarted),
                    refused(A::CorrectApplicantName, status),
                    refused(A::ProvideGeographic, status),
                    refused(A::ProvideContact, status),
                    refused(A::ProvideFamily, status),
                    refused(A::Finalize, status),
                    refused(A::Approve, status),
                    refused(A::Reject, status),
                    refused(A::ReferBack, status),
                    refused(A::Withdraw, status),
                ],
            )
        });

        let mut cells = 0;
        for (name, history, expected) in rows.into_iter().chain(final_rows) {
            for ((actor, action), expected) in every_action().into_iter().zip(expected) {
                let action_name = action.name();
                assert_eq!(
                    given_when(&history, actor, action),
                    expected,
                    "a {name} quote, when asked to {action_name}"
                );
                cells += 1;
            }
        }
        assert_eq!(cells, 8 * 10, "every status and action is covered");
    }

    /// Each action given by people who may not give it, on a quote where the right
    /// person would succeed.
    #[test]
    fn only_the_right_people_can_give_each_command() {
        let only_agent = || Err(DomainError::NotTheQuotesAgent);
        let needs = |role, action| Err(DomainError::RoleRequired { role, action });
        let cases: Vec<(Vec<QuoteEvent>, Actor, Action, Outcome)> = vec![
            (
                vec![],
                uma(),
                start(),
                needs(Role::Agent, ActionKind::Start),
            ),
            (
                vec![],
                audrey(),
                start(),
                needs(Role::Agent, ActionKind::Start),
            ),
            (
                started(),
                bob(),
                Action::ProvideGeographic(geographic()),
                only_agent(),
            ),
            (
                started(),
                uma(),
                Action::ProvideContact(contact()),
                only_agent(),
            ),
            (
                saved_with_geographic_only(),
                bob(),
                Action::ProvideFamily(family()),
                only_agent(),
            ),
            (
                saved_and_complete(),
                bob(),
                Action::CorrectApplicantName(corrected()),
                only_agent(),
            ),
            (saved_and_complete(), bob(), Action::Finalize, only_agent()),
            (saved_and_complete(), uma(), Action::Finalize, only_agent()),
            (
                finalized(),
                alice(),
                Action::Approve,
                needs(Role::Underwriter, ActionKind::Approve),
            ),
            (
                finalized(),
                bob(),
                Action::Approve,
                needs(Role::Underwriter, ActionKind::Approve),
            ),
            (
                finalized(),
                audrey(),
                Action::Reject { reason: reason() },
                needs(Role::Underwriter, ActionKind::Reject),
            ),
            (
                finalized(),
                bob(),
                Action::ReferBack { note: note() },
                needs(Role::Underwriter, ActionKind::ReferBack),
            ),
            (
                finalized(),
                alice_as_underwriter_too(),
                Action::Approve,
                Err(DomainError::OwnQuote),
            ),
            (
                finalized(),
                alice_as_underwriter_too(),
                Action::Reject { reason: reason() },
                Err(DomainError::OwnQuote),
            ),
            (
                finalized(),
                alice_as_underwriter_too(),
                Action::ReferBack { note: note() },
                Err(DomainError::OwnQuote),
            ),
            (saved_and_complete(), bob(), Action::Withdraw, only_agent()),
            (finalized(), uma(), Action::Withdraw, only_agent()),
        ];
        for (history, actor, action, expected) in cases {
            let who = actor.username.clone();
            let action_name = action.name();
            assert_eq!(
                given_when(&history, actor, action),
                expected,
                "{who} asking to {action_name}"
            );
        }
    }

    #[test]
    fn starting_a_quote_records_its_agent_and_initiates_it() {
        let events = given_when(&[], alice(), start()).unwrap();

        let quote = fold(&events);
        assert_eq!(quote.status, Some(Status::Initiated));
        assert_eq!(quote.agent, "alice");
        assert_eq!(quote.reference, "Q-7K3M9P");
        assert_eq!(quote.applicant_name, Some(applicant()));
        assert_eq!(quote.version, 1);
    }

    #[test]
    fn commands_on_a_quote_that_was_never_started_are_refused_as_not_found() {
        let result = given_when(&[], alice(), Action::ProvideContact(contact()));

        assert_eq!(result, Err(DomainError::QuoteNotFound));
        assert_eq!(
            DomainError::QuoteNotFound.to_string(),
            "This quote does not exist"
        );
    }

    #[test]
    fn first_section_moves_an_initiated_quote_to_saved() {
        let history = started();

        let events = given_when(&history, alice(), Action::ProvideContact(contact())).unwrap();

        assert_eq!(
            events,
            [QuoteEvent::ContactDetailsProvided(contact()), saved_event()]
        );
        let quote = fold(history.iter().chain(&events));
        assert_eq!(quote.status, Some(Status::Saved));
        assert_eq!(quote.contact, Some(contact()));
    }

    #[test]
    fn later_sections_replace_earlier_answers_without_saving_again() {
        let history = saved_with_geographic_only();
        let moved = GeographicDetails::parse("GB", "England", "London", "sw1a1aa").unwrap();

        let events =
            given_when(&history, alice(), Action::ProvideGeographic(moved.clone())).unwrap();

        assert_eq!(
            events,
            [QuoteEvent::GeographicDetailsProvided(moved.clone())]
        );
        assert_eq!(fold(history.iter().chain(&events)).geographic, Some(moved));
    }

    #[test]
    fn a_quote_with_all_three_sections_can_be_submitted() {
        let history = saved_and_complete();
        assert!(fold(&history).sections_complete());

        let events = given_when(&history, alice(), Action::Finalize).unwrap();

        assert_eq!(
            events,
            [QuoteEvent::QuoteFinalized {
                from: Status::Saved,
                to: Status::Finalized
            }]
        );
    }

    #[test]
    fn submitting_names_the_sections_still_missing() {
        let error =
            given_when(&saved_with_geographic_only(), alice(), Action::Finalize).unwrap_err();

        assert_eq!(
            error.to_string(),
            "Complete the contact details and family details before submitting"
        );
        let error = given_when(&started(), alice(), Action::Finalize).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Complete the geographic details, contact details and family details before submitting"
        );
    }

    #[test]
    fn a_finalized_quote_cannot_be_edited() {
        let error = given_when(&finalized(), alice(), Action::ProvideFamily(family())).unwrap_err();

        assert_eq!(
            error,
            DomainError::NotPermitted {
                action: ActionKind::ProvideFamily,
                status: Status::Finalized
            }
        );
        assert_eq!(
            error.to_string(),
            "This quote has been submitted, so its sections can no longer be changed"
        );
    }

    #[test]
    fn an_underwriter_approves_a_finalized_quote() {
        let events = given_when(&finalized(), uma(), Action::Approve).unwrap();

        assert_eq!(events, [approved_event()]);
        let quote = fold(finalized().iter().chain(&events));
        assert_eq!(quote.status, Some(Status::Approved));
        assert!(Status::Approved.is_final());
    }

    #[test]
    fn approving_your_own_quote_is_refused_even_for_an_underwriter() {
        let error =
            given_when(&finalized(), alice_as_underwriter_too(), Action::Approve).unwrap_err();

        assert_eq!(error, DomainError::OwnQuote);
        assert_eq!(
            error.to_string(),
            "You cannot approve, reject or refer back a quote you created"
        );
    }

    #[test]
    fn approving_needs_the_underwriter_role() {
        let error = given_when(&finalized(), bob(), Action::Approve).unwrap_err();

        assert_eq!(error.to_string(), "Only an underwriter can approve a quote");
    }

    #[test]
    fn rejecting_records_the_reason() {
        let events = given_when(&finalized(), uma(), Action::Reject { reason: reason() }).unwrap();

        assert_eq!(events, [rejected_event()]);
        let quote = fold(finalized().iter().chain(&events));
        assert_eq!(quote.status, Some(Status::Rejected));
        assert_eq!(quote.rejection_reason, Some(reason()));
    }

    #[test]
    fn referring_back_returns_the_quote_to_saved_and_counts_the_referral() {
        let events = given_when(&finalized(), uma(), Action::ReferBack { note: note() }).unwrap();
        assert_eq!(events, [referred_back_event()]);
        let history: Vec<QuoteEvent> = finalized().into_iter().chain(events).collect();

        let quote = fold(&history);
        assert_eq!(quote.status, Some(Status::Saved));
        assert_eq!(quote.referral_count, 1);
        assert_eq!(quote.last_referral_note, Some(note()));

        // The agent can now change a section and submit again.
        let edit = given_when(&history, alice(), Action::ProvideContact(contact())).unwrap();
        assert_eq!(edit, [QuoteEvent::ContactDetailsProvided(contact())]);
        assert!(given_when(&history, alice(), Action::Finalize).is_ok());
    }

    #[test]
    fn a_second_referral_is_counted_and_its_note_kept() {
        let second = NonEmptyText::parse("Phone number is missing a digit").unwrap();
        let mut history = then(finalized(), referred_back_event());
        history.push(QuoteEvent::QuoteFinalized {
            from: Status::Saved,
            to: Status::Finalized,
        });
        history.push(QuoteEvent::QuoteReferredBack {
            note: second.clone(),
            from: Status::Finalized,
            to: Status::Saved,
        });

        let quote = fold(&history);

        assert_eq!(quote.referral_count, 2);
        assert_eq!(quote.last_referral_note, Some(second));
    }

    #[test]
    fn the_agent_can_withdraw_until_an_underwriter_decides() {
        for (history, status) in [
            (started(), Status::Initiated),
            (saved_with_geographic_only(), Status::Saved),
            (finalized(), Status::Finalized),
        ] {
            assert_eq!(
                given_when(&history, alice(), Action::Withdraw),
                Ok(vec![withdrawn_from(status)])
            );
        }
        let error = given_when(&approved(), alice(), Action::Withdraw).unwrap_err();
        assert_eq!(
            error.to_string(),
            "This quote has been approved, so it can no longer be withdrawn"
        );
    }

    #[test]
    fn refusals_read_as_sentences() {
        use ActionKind as A;
        use Status as S;
        let message = |action, status| DomainError::NotPermitted { action, status }.to_string();
        assert_eq!(
            message(A::Approve, S::Saved),
            "This quote has not been submitted yet, so it cannot be approved"
        );
        assert_eq!(
            message(A::ReferBack, S::Initiated),
            "This quote has not been submitted yet, so it cannot be referred back"
        );
        assert_eq!(
            message(A::Approve, S::Approved),
            "This quote has already been approved"
        );
        assert_eq!(
            message(A::Finalize, S::Finalized),
            "This quote has already been submitted"
        );
        assert_eq!(
            message(A::Withdraw, S::Withdrawn),
            "This quote has already been withdrawn"
        );
        assert_eq!(
            message(A::Reject, S::Approved),
            "This quote has been approved, so it can no longer be rejected"
        );
        assert_eq!(
            message(A::Finalize, S::Rejected),
            "This quote has been rejected, so it can no longer be submitted"
        );
        assert_eq!(
            message(A::Finalize, S::Initiated),
            "This quote has no answers yet, so it cannot be submitted"
        );
        assert_eq!(
            message(A::ProvideGeographic, S::Withdrawn),
            "This quote has been withdrawn, so its sections can no longer be changed"
        );
        assert_eq!(
            DomainError::AlreadyStarted.to_string(),
            "This quote has already been started"
        );
        assert_eq!(
            DomainError::NotTheQuotesAgent.to_string(),
            "Only the agent who started this quote can change it"
        );
        assert_eq!(
            DomainError::RoleRequired {
                role: Role::Agent,
                action: A::Start
            }
            .to_string(),
            "Only an agent can start a quote"
        );
        assert_eq!(
            DomainError::RoleRequired {
                role: Role::Underwriter,
                action: A::ReferBack
            }
            .to_string(),
            "Only an underwriter can refer a quote back"
        );
    }

    #[test]
    fn every_event_folded_adds_one_to_the_version() {
        let history = approved();

        let quote = fold(&history);

        assert_eq!(quote.version, history.len() as u64);
        assert_eq!(fold([]).version, 0);
        assert!(!fold([]).is_started());
    }

    #[test]
    fn roles_read_and_write_lower_case_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_string(&role).unwrap(),
                format!("\"{}\"", role.as_str())
            );
        }
        assert_eq!("Underwriter".parse::<Role>(), Ok(Role::Underwriter));
        assert_eq!(
            "boss".parse::<Role>().unwrap_err().to_string(),
            "\"boss\" is not a role; use agent, underwriter, auditor or admin"
        );
        assert!(alice_as_underwriter_too().has_role(Role::Underwriter));
        assert!(!alice().has_role(Role::Underwriter));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn any_actor() -> impl Strategy<Value = Actor> {
            prop_oneof![
                4 => Just(alice()),
                1 => Just(bob()),
                3 => Just(uma()),
                1 => Just(alice_as_underwriter_too()),
                1 => Just(audrey()),
            ]
        }

        fn any_action() -> impl Strategy<Value = Action> {
            let other_family = FamilyDetails::parse("3", "Vikram Rao", &[]).unwrap();
            // Weighted so that many sequences get past submission to a decision,
            // instead of most ending early in a withdrawal.
            prop_oneof![
                2 => Just(start()),
                3 => Just(Action::ProvideGeographic(geographic())),
                3 => Just(Action::ProvideContact(contact())),
                2 => Just(Action::ProvideFamily(family())),
                1 => Just(Action::ProvideFamily(other_family)),
                3 => Just(Action::Finalize),
                2 => Just(Action::Approve),
                1 => Just(Action::Reject { reason: reason() }),
                2 => Just(Action::ReferBack { note: note() }),
                1 => Just(Action::Withdraw),
            ]
        }

        fn any_commands() -> impl Strategy<Value = Vec<Command>> {
            prop::collection::vec(
                (any_actor(), any_action()).prop_map(|(a, c)| Command::new(a, c)),
                0..60,
            )
        }

        proptest! {
            #[test]
            fn evolving_one_event_at_a_time_equals_replaying_them_all(
                commands in any_commands(),
                split in any::<prop::sample::Index>(),
            ) {
                let mut state = Quote::default();
                let mut history = Vec::new();
                for command in &commands {
                    let before = state.clone();
                    match decide(&state, command) {
                        Ok(events) => {
                            prop_assert!(!events.is_empty());
                            for event in events {
                                state = evolve(state, &event);
                                history.push(event);
                            }
                        }
                        Err(_) => prop_assert_eq!(&state, &before),
                    }
                    if before.status.is_some_and(Status::is_final) {
                        prop_assert_eq!(&state, &before, "a final quote never changes");
                    }
                }

                prop_assert_eq!(&fold(&history), &state);
                prop_assert_eq!(state.version, history.len() as u64);

                // A snapshot stored as JSON part-way through, then the rest replayed,
                // gives the same quote as replaying from the start.
                let at = split.index(history.len() + 1);
                let snapshot = serde_json::to_string(&fold(&history[..at])).unwrap();
                let from_snapshot = history[at..]
                    .iter()
                    .fold(serde_json::from_str::<Quote>(&snapshot).unwrap(), evolve);
                prop_assert_eq!(&from_snapshot, &state);

                for event in &history {
                    let stored = QuoteEvent::from_stored(event.event_type(), QuoteEvent::SCHEMA_VERSION, event.to_payload());
                    prop_assert_eq!(&stored.unwrap(), event);
                }
            }
        }
    }
}
