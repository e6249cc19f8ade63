//! The auditors' log: every event across quotes, filtered by quote reference, actor,
//! event type and date range, newest first, read a page at a time with a keyset
//! cursor on the global position (never OFFSET). The page and both exports use it.
//!
//! Ordering by position is the order events were appended in. On PostgreSQL an
//! event can commit after one with a higher position; a page read at that moment
//! does not show it yet, and it appears on the next read.

use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::Deserialize;
use sqlx::{Database, Encode, QueryBuilder, Type};

use super::timeline::{SELECT_ENTRY, TimelineEntry};
use crate::db::Db;
use crate::on_backend;
use crate::quoting::domain::EventKind;
use crate::web::FieldErrors;

/// What the log is narrowed to; `None` means any. Dates are whole days in UTC, both
/// ends included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub reference: Option<String>,
    pub actor: Option<String>,
    pub event_type: Option<&'static str>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

/// The filter form's fields as the query string carries them, kept as typed so the
/// page can show them back.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FilterForm {
    #[serde(default)]
    pub reference: String,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub event_type: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
}

impl FilterForm {
    /// The filter, or a message for each field that does not make sense.
    pub fn parse(&self) -> Result<LogFilter, FieldErrors> {
        let mut errors = FieldErrors::default();
        let text = |s: &str| Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_owned);
        let event_type = match self.event_type.trim() {
            "" => None,
            wanted => {
                let known = wanted.parse::<EventKind>().ok();
                if known.is_none() {
                    errors.push("event_type", "Select an event type from the list");
                }
                known.map(EventKind::as_str)
            }
        };
        let mut date = |field: &str, input: &str, label: &str| match input.trim() {
            "" => None,
            input => match NaiveDate::parse_from_str(input, "%Y-%m-%d") {
                Ok(date) => Some(date),
                Err(_) => {
                    errors.push(field, format!("{label} must be a date like 2025-03-31"));
                    None
                }
            },
        };
        let from = date("from", &self.from, "From date");
        let to = date("to", &self.to, "To date");
        if let (Some(from), Some(to)) = (from, to)
            && to < from
        {
            errors.push("to", "To date must be the same as or after the from date");
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(LogFilter {
            reference: text(&self.reference).map(|r| r.to_ascii_uppercase()),
            actor: text(&self.actor),
            event_type,
            from,
            to,
        })
    }
}

impl LogFilter {
    /// The filter as a query string (without `?`), for links that keep it: paging
    /// and the exports.
    pub fn query_string(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(reference) = &self.reference {
            query.append_pair("reference", reference);
        }
        if let Some(actor) = &self.actor {
            query.append_pair("actor", actor);
        }
        if let Some(event_type) = self.event_type {
            query.append_pair("event_type", event_type);
        }
        if let Some(from) = self.from {
            query.append_pair("from", &from.to_string());
        }
        if let Some(to) = self.to {
            query.append_pair("to", &to.to_string());
        }
        query.finish()
    }

    pub fn is_empty(&self) -> bool {
        *self == LogFilter::default()
    }
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// The newest events.
    Newest,
    /// Events older than (below) this position.
    Before(i64),
    /// Events newer than (above) this position: the page before, going back.
    After(i64),
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    date.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
}

/// The statement for up to `limit` entries from `cursor` on, after `prefix` (an
/// EXPLAIN, or nothing), with its parameters bound in order, for backend `DB`. Only
/// the filters given become conditions, so each combination gets a plan that can
/// use its index.
///
/// A quote's reference is looked up in `audit_quote_state` (a row a quote) and its
/// entries read through the timeline's `(stream_id, version)` index, newest version
/// first: a stream's versions are in the order of their positions, so no page
/// sorts, and the timeline keeps no index by reference (one page fewer for every
/// append to write).
fn statement<'a, DB>(
    prefix: &str,
    filter: &'a LogFilter,
    cursor: Cursor,
    limit: i64,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
    DateTime<Utc>: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new(prefix);
    query.push(SELECT_ENTRY);
    // The first condition follows WHERE, the others AND.
    let mut conditions = 0;
    let mut condition = |query: &mut QueryBuilder<'a, DB>, sql: &str| {
        let keyword = if conditions == 0 { " WHERE " } else { " AND " };
        query.push(keyword).push(sql);
        conditions += 1;
    };
    if let Some(reference) = &filter.reference {
        condition(
            &mut query,
            "stream_id = (SELECT quote_id FROM audit_quote_state WHERE reference = ",
        );
        query.push_bind(reference.as_str()).push(")");
    }
    // With a reference, the quote's own entries are the ones to read: the actor and
    // the type are then compared as expressions (`|| ''`), which no index serves,
    // so that the planner does not read every entry of an actor or a type older
    // than the cursor and sort them (SQLite, without statistics, did).
    let unindexed = if filter.reference.is_some() {
        " || ''"
    } else {
        ""
    };
    if let Some(actor) = &filter.actor {
        condition(&mut query, &format!("actor{unindexed} = "));
        query.push_bind(actor.as_str());
    }
    if let Some(event_type) = filter.event_type {
        condition(&mut query, &format!("event_type{unindexed} = "));
        query.push_bind(event_type);
    }
    if let Some(from) = filter.from {
        condition(&mut query, "recorded_at >= ");
        query.push_bind(midnight(from));
    }
    if let Some(to) = filter.to.and_then(|to| to.checked_add_days(Days::new(1))) {
        condition(&mut query, "recorded_at < ");
        query.push_bind(midnight(to));
    }
    let order = match cursor {
        Cursor::Newest => "DESC",
        Cursor::Before(position) => {
            condition(&mut query, "position < ");
            query.push_bind(position);
            "DESC"
        }
        Cursor::After(position) => {
            condition(&mut query, "position > ");
            query.push_bind(position);
            "ASC"
        }
    };
    let key = if filter.reference.is_some() {
        "version"
    } else {
        "position"
    };
    query.push(format_args!(" ORDER BY {key} {order} LIMIT "));
    query.push_bind(limit);
    query
}

/// The plan the database would use for a page of the log (for the tests that hold
/// every filter to an index).
#[doc(hidden)]
pub async fn explain(
    db: &Db,
    filter: &LogFilter,
    cursor: Cursor,
    limit: i64,
) -> Result<String, sqlx::Error> {
    crate::db::explain(
        db,
        |prefix| statement(prefix, filter, cursor, limit),
        |prefix| statement(prefix, filter, cursor, limit),
    )
    .await
}

/// Up to `limit` entries matching `filter` from `cursor` on, newest first.
pub async fn fetch(
    db: &Db,
    filter: &LogFilter,
    cursor: Cursor,
    limit: i64,
) -> Result<Vec<TimelineEntry>, sqlx::Error> {
    let mut rows: Vec<TimelineEntry> = on_backend!(db, pool => {
        statement("", filter, cursor, limit)
            .build_query_as()
            .fetch_all(pool)
            .await?
    });
    if matches!(cursor, Cursor::After(_)) {
        rows.reverse();
    }
    Ok(rows)
}

/// One page of the log, and whether there are pages on either side of it.
#[derive(Debug)]
pub struct LogPage {
    pub entries: Vec<TimelineEntry>,
    /// The cursor for older entries, if there are any.
    pub older: Option<i64>,
    /// The cursor for newer entries, if there are any.
    pub newer: Option<i64>,
}

pub async fn page(
    db: &Db,
    filter: &LogFilter,
    cursor: Cursor,
    size: i64,
) -> Result<LogPage, sqlx::Error> {
    // One row more than the page tells whether there is another page that way; the
    // row the cursor names shows there is one the other way.
    let mut entries = fetch(db, filter, cursor, size + 1).await?;
    let more = entries.len() as i64 > size;
    if more {
        match cursor {
            Cursor::After(_) => entries.remove(0),
            _ => entries.pop().expect("more than one"),
        };
    }
    let (has_older, has_newer) = match cursor {
        Cursor::Newest => (more, false),
        Cursor::Before(_) => (more, true),
        Cursor::After(_) => (true, more),
    };
    Ok(LogPage {
        older: has_older
            .then(|| entries.last().map(|e| e.position))
            .flatten(),
        newer: has_newer
            .then(|| entries.first().map(|e| e.position))
            .flatten(),
        entries,
    })
}

#[cfg(test)]
mod tests {
    use axum::extract::Query;
    use sqlx::{Arguments, Execute, Postgres, Sqlite};

    use super::*;

    fn form(fields: &[(&str, &str)]) -> FilterForm {
        let mut form = FilterForm::default();
        for (name, value) in fields {
            let value = value.to_string();
            match *name {
                "reference" => form.reference = value,
                "actor" => form.actor = value,
                "event_type" => form.event_type = value,
                "from" => form.from = value,
                "to" => form.to = value,
                _ => unreachable!(),
            }
        }
        form
    }

    #[test]
    fn blank_fields_filter_nothing_and_references_are_upper_cased() {
        assert!(form(&[("actor", "  ")]).parse().unwrap().is_empty());
        let filter = form(&[("reference", " q-7k3m9p ")]).parse().unwrap();
        assert_eq!(filter.reference.as_deref(), Some("Q-7K3M9P"));
    }

    #[test]
    fn unknown_types_and_bad_dates_are_named() {
        let errors = form(&[("event_type", "Teleported"), ("from", "31/03/2025")])
            .parse()
            .unwrap_err();
        assert_eq!(
            errors.message_for("event_type"),
            Some("Select an event type from the list")
        );
        assert_eq!(
            errors.message_for("from"),
            Some("From date must be a date like 2025-03-31")
        );
        let errors = form(&[("from", "2025-03-31"), ("to", "2025-03-30")])
            .parse()
            .unwrap_err();
        assert!(errors.message_for("to").is_some());
    }

    #[test]
    fn only_given_filters_become_conditions_numbered_in_order() {
        let filter = LogFilter {
            actor: Some("uma".into()),
            to: NaiveDate::from_ymd_opt(2025, 3, 31),
            ..LogFilter::default()
        };
        let mut query = statement::<Postgres>("", &filter, Cursor::Before(42), 10);
        assert!(
            query.sql().ends_with(
                "WHERE actor = $1 AND recorded_at < $2 AND position < $3 ORDER BY position DESC LIMIT $4"
            ),
            "{}",
            query.sql()
        );
        let binds = query.build().take_arguments().unwrap();
        assert_eq!(binds.map_or(0, |binds| binds.len()), 4);
        let everything = LogFilter::default();
        let query = statement::<Postgres>("", &everything, Cursor::After(7), 10);
        assert!(
            query
                .sql()
                .ends_with("WHERE position > $1 ORDER BY position ASC LIMIT $2"),
            "{}",
            query.sql()
        );
        let by_reference = LogFilter {
            reference: Some("Q-7K3M9P".into()),
            ..LogFilter::default()
        };
        let query = statement::<Postgres>("", &by_reference, Cursor::Before(42), 10);
        assert!(
            query.sql().ends_with(
                "WHERE stream_id = (SELECT quote_id FROM audit_quote_state WHERE reference = $1) \
                 AND position < $2 ORDER BY version DESC LIMIT $3"
            ),
            "{}",
            query.sql()
        );
        let query = statement::<Sqlite>("", &everything, Cursor::Newest, 10);
        assert!(
            query
                .sql()
                .ends_with("FROM audit_timeline  ORDER BY position DESC LIMIT ?"),
            "{}",
            query.sql()
        );
    }

    #[test]
    fn the_query_string_keeps_every_filter_encoded() {
        let filter = LogFilter {
            reference: Some("Q-1".into()),
            actor: Some("a b&c".into()),
            event_type: Some("QuoteApproved"),
            from: NaiveDate::from_ymd_opt(2025, 1, 2),
            to: None,
        };
        assert_eq!(
            filter.query_string(),
            "reference=Q-1&actor=a+b%26c&event_type=QuoteApproved&from=2025-01-02"
        );
    }

    #[test]
    fn the_query_string_reads_back_as_the_same_filter() {
        let filter = LogFilter {
            reference: Some("Q-1".into()),
            actor: Some("a b&c+d=%e/~*é".into()),
            event_type: Some("QuoteReferredBack"),
            from: NaiveDate::from_ymd_opt(2025, 1, 2),
            to: NaiveDate::from_ymd_opt(2025, 1, 3),
        };
        let uri = format!("/audit?{}", filter.query_string()).parse().unwrap();
        let Query(form) = Query::<FilterForm>::try_from_uri(&uri).unwrap();
        assert_eq!(form.parse().unwrap(), filter);
    }
}
