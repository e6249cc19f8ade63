//! The log's filtered view as a download: CSV or JSON Lines, streamed. The body is a
//! stream that reads one keyset page of [`PAGE_ROWS`] entries, writes it, and reads
//! the next only when the client has taken the last: the server holds at most one
//! page of an export however many rows it has.

use std::borrow::Cow;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use futures_util::stream::{self, Stream};
use serde::Serialize;
use uuid::Uuid;

use super::changes::FieldChange;
use super::log::{self, Cursor, LogFilter};
use super::timeline::TimelineEntry;
use crate::db::Db;

/// Entries read (and written) at a time.
pub const PAGE_ROWS: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::JsonLines => "application/jsonl; charset=utf-8",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::JsonLines => "jsonl",
        }
    }
}

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 14] = [
    "position",
    "recorded_at",
    "reference",
    "quote_id",
    "version",
    "event_id",
    "event_type",
    "title",
    "actor",
    "actor_role",
    "status_before",
    "status_after",
    "detail",
    "changes",
];

/// One line of the JSON Lines export.
#[derive(Serialize)]
struct JsonLine<'a> {
    position: i64,
    recorded_at: String,
    reference: &'a str,
    quote_id: Uuid,
    version: i64,
    event_id: Uuid,
    event_type: &'a str,
    title: &'a str,
    actor: &'a str,
    actor_role: &'a str,
    status_before: Option<&'a str>,
    status_after: Option<&'a str>,
    detail: Option<&'a str>,
    changes: &'a [FieldChange],
}

fn time(entry: &TimelineEntry) -> String {
    entry
        .recorded_at
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// First characters that make a spreadsheet read a cell as a formula (OWASP's list
/// for CSV injection).
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A cell as a spreadsheet will show it: text it would run as a formula starts with
/// a single quote, which makes it text. Only the CSV export needs this.
fn neutralised(cell: &str) -> Cow<'_, [u8]> {
    if cell.starts_with(FORMULA_STARTS) {
        Cow::Owned([b"'", cell.as_bytes()].concat())
    } else {
        Cow::Borrowed(cell.as_bytes())
    }
}

fn write_csv(entries: &[TimelineEntry], header: bool) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(entries.len() * 256));
    if header {
        writer.write_record(CSV_HEADER)?;
    }
    for e in entries {
        writer.write_record(
            [
                e.position.to_string().as_str(),
                &time(e),
                &e.reference,
                &e.stream_id.to_string(),
                &e.version.to_string(),
                &e.event_id.to_string(),
                &e.event_type,
                &e.title,
                &e.actor,
                &e.actor_role,
                e.status_before.as_deref().unwrap_or(""),
                e.status_after.as_deref().unwrap_or(""),
                e.detail.as_deref().unwrap_or(""),
                // One change a line; the writer quotes the field.
                &e.change_lines().join("\n"),
            ]
            .map(neutralised),
        )?;
    }
    writer
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))
}

fn write_json_lines(entries: &[TimelineEntry]) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(entries.len() * 384);
    for e in entries {
        serde_json::to_writer(
            &mut out,
            &JsonLine {
                position: e.position,
                recorded_at: time(e),
                reference: &e.reference,
                quote_id: e.stream_id,
                version: e.version,
                event_id: e.event_id,
                event_type: &e.event_type,
                title: &e.title,
                actor: &e.actor,
                actor_role: &e.actor_role,
                status_before: e.status_before.as_deref(),
                status_after: e.status_after.as_deref(),
                detail: e.detail.as_deref(),
                changes: &e.changes.0,
            },
        )?;
        out.push(b'\n');
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the log failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("writing CSV failed: {0}")]
    Csv(#[from] csv::Error),
    #[error("writing JSON failed: {0}")]
    Json(#[from] serde_json::Error),
}

enum Next {
    First,
    Before(i64),
    Done,
}

/// The export as a stream of chunks, one per page, each read only when the one
/// before it has been taken. Nothing is read before the first chunk is asked for.
pub fn chunks(
    db: Db,
    filter: LogFilter,
    format: Format,
) -> impl Stream<Item = Result<Bytes, ExportError>> + Send + 'static {
    stream::try_unfold(Next::First, move |next| {
        let (db, filter) = (db.clone(), filter.clone());
        async move {
            let cursor = match next {
                Next::First => Cursor::Newest,
                Next::Before(position) => Cursor::Before(position),
                Next::Done => return Ok(None),
            };
            let entries = log::fetch(&db, &filter, cursor, PAGE_ROWS).await?;
            let first = matches!(next, Next::First);
            let bytes = match format {
                Format::Csv => write_csv(&entries, first)?,
                Format::JsonLines => write_json_lines(&entries)?,
            };
            let after = match entries.last() {
                Some(last) if entries.len() as i64 == PAGE_ROWS => Next::Before(last.position),
                _ => Next::Done,
            };
            if bytes.is_empty() {
                return Ok(None);
            }
            Ok(Some((Bytes::from(bytes), after)))
        }
    })
}

/// The download: the streamed body, its type, and a file name with the time.
pub fn response(db: Db, filter: LogFilter, format: Format) -> Response {
    let filename = format!(
        "quoteline-audit-{}.{}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        format.extension()
    );
    let body = Body::from_stream(chunks(db, filter, format));
    (
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use sqlx::types::Json;

    fn entry(detail: &str, change: FieldChange) -> TimelineEntry {
        TimelineEntry {
            position: 7,
            stream_id: Uuid::nil(),
            version: 3,
            event_id: Uuid::max(),
            event_type: "QuoteRejected".into(),
            reference: "Q-7K3M9P".into(),
            actor: "uma".into(),
            actor_role: "underwriter".into(),
            recorded_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            title: "Quote rejected".into(),
            status_before: Some("Finalized".into()),
            status_after: Some("Rejected".into()),
            detail: Some(detail.into()),
            changes: Json(vec![change]),
        }
    }

    #[test]
    fn csv_fields_with_commas_quotes_and_line_breaks_are_quoted() {
        let change = FieldChange {
            field: "Applicant name".into(),
            before: None,
            after: Some(r#"O'Brien, "Jim""#.into()),
        };
        let bytes = write_csv(&[entry("Too risky,\nsorry", change)], true).unwrap();
        let text = String::from_utf8(bytes).unwrap();

        assert!(
            text.starts_with("position,recorded_at,reference,"),
            "{text}"
        );
        assert!(text.contains("\"Too risky,\nsorry\""), "{text}");
        assert!(
            text.contains(r#""Applicant name: O'Brien, ""Jim""""#),
            "{text}"
        );
    }

    /// A change whose new value looks like a formula.
    fn formula_change() -> FieldChange {
        FieldChange {
            field: "City".into(),
            before: None,
            after: Some("=1+1".into()),
        }
    }

    /// OWASP's rule for CSV injection: a cell a spreadsheet would read as a formula
    /// starts with a single quote, which shows the text as typed.
    #[test]
    fn csv_text_cells_that_a_spreadsheet_would_run_start_with_a_quote() {
        for payload in [
            "=cmd|' /C calc'!A0",
            "+1+1",
            "-2+3",
            "@SUM(A1:A2)",
            "\tx=1",
            "\rx=1",
        ] {
            let mut hostile = entry(payload, formula_change());
            hostile.actor = payload.into();
            hostile.title = payload.into();
            let bytes = write_csv(&[hostile], true).unwrap();
            let mut reader = csv::Reader::from_reader(bytes.as_slice());
            let row = reader.records().next().unwrap().unwrap();
            let cell = |name: &str| {
                let index = CSV_HEADER.iter().position(|h| *h == name).unwrap();
                row[index].to_owned()
            };

            let neutralised = format!("'{payload}");
            assert_eq!(cell("detail"), neutralised, "{payload:?}");
            assert_eq!(cell("actor"), neutralised, "{payload:?}");
            assert_eq!(cell("title"), neutralised, "{payload:?}");
            assert_eq!(cell("changes"), "City: =1+1", "only a cell's start counts");
            assert_eq!(cell("position"), "7");
        }
        let bytes = write_csv(&[entry("Too risky = no", formula_change())], false).unwrap();
        assert!(
            String::from_utf8(bytes)
                .unwrap()
                .contains(",Too risky = no,")
        );
    }

    #[test]
    fn json_lines_keep_text_that_looks_like_a_formula_as_it_is() {
        let bytes = write_json_lines(&[entry("=cmd|' /C calc'!A0", formula_change())]).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(line["detail"], "=cmd|' /C calc'!A0");
        assert_eq!(line["changes"][0]["after"], "=1+1");
    }

    #[test]
    fn each_json_line_is_one_object() {
        let change = FieldChange {
            field: "City".into(),
            before: Some("Pune".into()),
            after: Some("Mumbai".into()),
        };
        let bytes = write_json_lines(&[entry("a\nb", change.clone()), entry("c", change)]).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["detail"], "a\nb");
        assert_eq!(lines[0]["changes"][0]["before"], "Pune");
        assert_eq!(lines[0]["recorded_at"], "2023-11-14T22:13:20.000000Z");
    }
}
