//! The underwriter's queue page: its address parameters parsed into a filter and
//! back into links, and the table of waiting quotes.
//!
//! A page drawn for a session is kept and sent again while nothing has moved
//! ([`DrawnPages`]).

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::drawn::{DrawnKey, DrawnPages};
use super::query::{Cursor, QueueFilter, QueueRow, QueueSort, count, page};
use crate::identity::{CurrentUser, Underwriter};
use crate::quoting::domain::{COUNTRIES, countries::country_name};
use crate::state::AppState;
use crate::web::{AppError, Layout, compression};

pub fn router() -> Router<AppState> {
    Router::new().route("/underwriting/queue", get(queue_page))
}

pub const PAGE_SIZE: i64 = 50;
const MAX_AGENT_CHARS: usize = 100;

/// The page's address parameters, as typed; parsed into a filter by [`Params::parse`].
#[derive(Debug, Default, Deserialize)]
struct Params {
    #[serde(default)]
    country: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    next: String,
}

struct Parsed {
    filter: QueueFilter,
    sort: QueueSort,
    after: Option<Cursor>,
}

impl Params {
    fn parse(&self) -> Result<Parsed, AppError> {
        let country = match self.country.trim() {
            "" => None,
            code => {
                let code = code.to_ascii_uppercase();
                if country_name(&code).is_none() {
                    return Err(AppError::bad_request(
                        "There is no such country to filter by. Choose one from the list.",
                    ));
                }
                Some(code)
            }
        };
        let agent = match self.agent.trim() {
            "" => None,
            name if name.chars().count() > MAX_AGENT_CHARS => {
                return Err(AppError::bad_request(format!(
                    "An agent's username is at most {MAX_AGENT_CHARS} characters."
                )));
            }
            name => Some(name.to_owned()),
        };
        let from = parse_date(&self.from, "from")?;
        let to = parse_date(&self.to, "to")?;
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(AppError::bad_request(
                "The \"Submitted from\" date is after the \"Submitted to\" date. Swap them and try again.",
            ));
        }
        let sort = QueueSort::parse(&self.sort)
            .ok_or_else(|| AppError::bad_request("There is no such order to sort the queue by."))?;
        let after = match self.next.trim() {
            "" => None,
            next => Some(Cursor::parse(next).ok_or_else(|| {
                AppError::bad_request(
                    "The link to the next page is damaged. Go back to the first page of the queue.",
                )
            })?),
        };
        Ok(Parsed {
            filter: QueueFilter {
                country,
                agent,
                from,
                to,
            },
            sort,
            after,
        })
    }
}

fn parse_date(input: &str, which: &str) -> Result<Option<NaiveDate>, AppError> {
    let input = input.trim();
    if input.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(input, "%Y-%m-%d")
        .ok()
        // The day after must exist too: it bounds the range.
        .filter(|day| day.succ_opt().is_some())
        .map(Some)
        .ok_or_else(|| {
            AppError::bad_request(format!(
                "The \"Submitted {which}\" date is not a real date. Use the form year-month-day, for example 2025-03-31."
            ))
        })
}

/// The filters as they go back into the form and the paging links.
struct FormValues {
    country: String,
    agent: String,
    from: String,
    to: String,
    sort: QueueSort,
}

impl FormValues {
    fn of(filter: &QueueFilter, sort: QueueSort) -> Self {
        let date = |d: Option<NaiveDate>| d.map(|d| d.format("%Y-%m-%d").to_string());
        FormValues {
            country: filter.country.clone().unwrap_or_default(),
            agent: filter.agent.clone().unwrap_or_default(),
            from: date(filter.from).unwrap_or_default(),
            to: date(filter.to).unwrap_or_default(),
            sort,
        }
    }

    /// The queue's address with these filters, and `next` when given.
    fn href(&self, next: Option<&Cursor>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("country", &self.country),
            ("agent", &self.agent),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if !value.is_empty() {
                query.append_pair(name, value);
            }
        }
        if self.sort != QueueSort::default() {
            query.append_pair("sort", self.sort.as_str());
        }
        if let Some(next) = next {
            query.append_pair("next", &next.encode());
        }
        let query = query.finish();
        if query.is_empty() {
            "/underwriting/queue".to_owned()
        } else {
            format!("/underwriting/queue?{query}")
        }
    }

    fn is_filtered(&self) -> bool {
        !(self.country.is_empty()
            && self.agent.is_empty()
            && self.from.is_empty()
            && self.to.is_empty())
    }
}

struct CountryOption {
    code: &'static str,
    name: &'static str,
    selected: bool,
}

struct SortOption {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

/// A row as the table shows it.
struct RowView {
    quote_id: Uuid,
    reference: String,
    applicant_name: String,
    agent: String,
    country: String,
    region: String,
    dependents: String,
    submitted_iso: String,
    submitted: String,
    waiting: String,
    referrals: String,
}

impl RowView {
    fn of(row: QueueRow, now: DateTime<Utc>) -> Self {
        let country = row
            .country
            .as_deref()
            .map(|code| country_name(code).unwrap_or(code).to_owned())
            .unwrap_or_default();
        RowView {
            quote_id: row.quote_id,
            reference: row.reference,
            applicant_name: row.applicant_name,
            agent: row.agent,
            country,
            region: row.region.unwrap_or_default(),
            dependents: row.dependents.map(|d| d.to_string()).unwrap_or_default(),
            submitted_iso: row.submitted_at.to_rfc3339(),
            submitted: row.submitted_at.format("%-d %b %Y %H:%M UTC").to_string(),
            waiting: duration_in_words(now - row.first_submitted_at),
            referrals: times_in_words(row.referral_count),
        }
    }
}

/// "3 days", "1 hour", "less than a minute": the largest whole unit.
pub fn duration_in_words(elapsed: TimeDelta) -> String {
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    match elapsed {
        e if e.num_days() >= 1 => plural(e.num_days(), "day"),
        e if e.num_hours() >= 1 => plural(e.num_hours(), "hour"),
        e if e.num_minutes() >= 1 => plural(e.num_minutes(), "minute"),
        _ => "less than a minute".to_owned(),
    }
}

fn times_in_words(count: i32) -> String {
    match count {
        0 => "Never".to_owned(),
        1 => "Once".to_owned(),
        2 => "Twice".to_owned(),
        n => format!("{n} times"),
    }
}

#[derive(Template)]
#[template(path = "underwriting/queue.html")]
struct QueuePage {
    layout: Layout,
    rows: Vec<RowView>,
    total: i64,
    filtered: bool,
    form: FormValues,
    countries: Vec<CountryOption>,
    sorts: Vec<SortOption>,
    caption: &'static str,
    next_href: Option<String>,
    first_href: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn queue_page(
    State(state): State<AppState>,
    Underwriter(user): Underwriter,
    Query(params): Query<Params>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let feed = state.quotes.heads();
    let key = DrawnKey {
        session: user.csrf_token().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        zstd: compression::prefers_zstd(&headers),
    };
    if let Some(again) = state.queue_pages.again(feed, &key).await {
        return Ok(again);
    }
    let epoch = DrawnPages::epoch(feed);
    let page = draw(&state, &user, params).await?;
    let html = page.render().map_err(|error| {
        tracing::error!(%error, "the queue page did not render");
        AppError::for_status(StatusCode::INTERNAL_SERVER_ERROR)
    })?;
    Ok(state.queue_pages.keep(feed, epoch, key, html).await)
}

async fn draw(state: &AppState, user: &CurrentUser, params: Params) -> Result<QueuePage, AppError> {
    let Parsed {
        filter,
        sort,
        after,
    } = params.parse()?;
    let mut rows = page(&state.db, &filter, sort, after.as_ref(), PAGE_SIZE + 1).await?;
    let total = count(&state.db, &filter).await?;
    let more = rows.len() as i64 > PAGE_SIZE;
    rows.truncate(PAGE_SIZE as usize);
    let form = FormValues::of(&filter, sort);
    let next_href = more.then(|| rows.last()).flatten().map(|last| {
        form.href(Some(&Cursor {
            at: sort.key_of(last),
            quote_id: last.quote_id,
        }))
    });
    let first_href = after.is_some().then(|| form.href(None));
    let now = Utc::now();
    Ok(QueuePage {
        layout: user.layout(),
        rows: rows.into_iter().map(|row| RowView::of(row, now)).collect(),
        total,
        filtered: form.is_filtered(),
        countries: COUNTRIES
            .iter()
            .map(|&(code, name)| CountryOption {
                code,
                name,
                selected: code == form.country,
            })
            .collect(),
        sorts: QueueSort::ALL
            .into_iter()
            .map(|s| SortOption {
                value: s.as_str(),
                label: s.label(),
                selected: s == sort,
            })
            .collect(),
        caption: match sort {
            QueueSort::Oldest => "Quotes waiting for a decision, oldest submission first",
            QueueSort::Newest => "Quotes waiting for a decision, newest submission first",
            QueueSort::LongestWaiting => "Quotes waiting for a decision, longest waiting first",
        },
        form,
        next_href,
        first_href,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_times_read_as_words() {
        assert_eq!(
            duration_in_words(TimeDelta::seconds(30)),
            "less than a minute"
        );
        assert_eq!(duration_in_words(TimeDelta::minutes(1)), "1 minute");
        assert_eq!(duration_in_words(TimeDelta::minutes(59)), "59 minutes");
        assert_eq!(duration_in_words(TimeDelta::hours(1)), "1 hour");
        assert_eq!(duration_in_words(TimeDelta::hours(47)), "1 day");
        assert_eq!(duration_in_words(TimeDelta::days(3)), "3 days");
    }

    #[test]
    fn links_keep_the_filters_and_encode_them() {
        let form = FormValues {
            country: "IN".into(),
            agent: "a&b c".into(),
            from: String::new(),
            to: "2025-03-02".into(),
            sort: QueueSort::Newest,
        };
        assert_eq!(
            form.href(None),
            "/underwriting/queue?country=IN&agent=a%26b+c&to=2025-03-02&sort=newest"
        );
        let plain = FormValues::of(&QueueFilter::default(), QueueSort::Oldest);
        assert_eq!(plain.href(None), "/underwriting/queue");
    }

    #[test]
    fn a_link_reads_back_as_the_same_filter_sort_and_cursor() {
        let filter = QueueFilter {
            country: Some("IN".into()),
            agent: Some("a&b c+d=%e/~*é".into()),
            from: NaiveDate::from_ymd_opt(2025, 3, 1),
            to: NaiveDate::from_ymd_opt(2025, 3, 2),
        };
        let cursor = Cursor {
            at: DateTime::from_timestamp_micros(1_740_000_000_123_456).unwrap(),
            quote_id: Uuid::now_v7(),
        };
        let href = FormValues::of(&filter, QueueSort::LongestWaiting).href(Some(&cursor));
        let Query(params) = Query::<Params>::try_from_uri(&href.parse().unwrap()).unwrap();
        let parsed = params.parse().unwrap();
        assert_eq!(parsed.filter, filter);
        assert_eq!(parsed.sort, QueueSort::LongestWaiting);
        assert_eq!(parsed.after, Some(cursor));
    }
}
