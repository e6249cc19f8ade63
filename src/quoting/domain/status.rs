//! Where a quote is in its life: the statuses of the lifecycle table, as stored and
//! as shown.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a quote is in its life. Serialised as the variant name, which is also what
/// the event store and projections hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    Initiated,
    Saved,
    Finalized,
    Approved,
    Rejected,
    Withdrawn,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Initiated,
        Status::Saved,
        Status::Finalized,
        Status::Approved,
        Status::Rejected,
        Status::Withdrawn,
    ];

    /// The stable name used in storage, URLs and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Initiated => "Initiated",
            Status::Saved => "Saved",
            Status::Finalized => "Finalized",
            Status::Approved => "Approved",
            Status::Rejected => "Rejected",
            Status::Withdrawn => "Withdrawn",
        }
    }

    /// The word shown on pages. Agents "submit" a quote, so that is what they see,
    /// whatever the model calls it.
    pub fn label(self) -> &'static str {
        match self {
            Status::Finalized => "Submitted",
            other => other.as_str(),
        }
    }

    /// Approved, Rejected and Withdrawn quotes accept no further commands.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Approved | Status::Rejected | Status::Withdrawn
        )
    }

    /// How a sentence describes a quote in this status: "This quote has been …".
    pub(super) fn participle(self) -> &'static str {
        match self {
            Status::Initiated => "started",
            Status::Saved => "saved",
            Status::Finalized => "submitted",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Withdrawn => "withdrawn",
        }
    }
}

/// Shows the page label, since `Display` is what templates reach for.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a quote status")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;

    /// Reads the stable name written by [`Status::as_str`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_have_stable_names_and_page_labels() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert_eq!(Status::Finalized.label(), "Submitted");
        assert_eq!(Status::Saved.label(), "Saved");
        assert_eq!(Status::Finalized.to_string(), "Submitted");
        assert_eq!(
            "Submitted".parse::<Status>(),
            Err(UnknownStatus("Submitted".into()))
        );
        let finals: Vec<Status> = Status::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(
            finals,
            [Status::Approved, Status::Rejected, Status::Withdrawn]
        );
    }
}
