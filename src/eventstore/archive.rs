//! Archived history: events moved out of the `events` table into compressed
//! segments in an object store, and read back wherever the log is read.
//!
//! - A **segment** is one object: the events of some streams, one JSON object a line
//!   in commit order, compressed with zstd, named `segments/<id>.jsonl.zst` under the
//!   archive's location (a local folder, `memory:///…`, `s3://bucket/prefix`, …).
//! - Its **manifest** is a row of `archive_segments` (where it is, how many streams
//!   and events, the first and last position in commit order, the SHA-256 of the
//!   object) and a row of `archived_streams` for each stream in it (the versions it
//!   holds and the stream's last hash there).
//! - **Moving** ([`move_streams`]): the segment is written, read back and checked;
//!   only then, in one transaction, the manifest is recorded and exactly those
//!   events are deleted from `events`. A crash before that transaction leaves an
//!   object no manifest names (an orphan, removed by [`remove_orphans`]) and every
//!   event still in `events`; nothing is deleted that is not in a verified segment.
//! - **Reading** is transparent: a stream's archived events come before its hot
//!   ones ([`stream_after`]); the read of the whole log merges the segments whose
//!   range reaches past the cursor with the hot page ([`merge_after`]). Segments are
//!   fetched once, checked against their checksum, and kept decoded in a bounded
//!   cache.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex};

use chrono::Utc;
use futures_util::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::model::{GlobalPosition, RecordedEvent};
use super::sql;
use super::verify::{Mismatch, Problem, VerifyReport};
use crate::db::{Backend, Conn, Db, in_list};
use crate::on_backend;

/// The folder of segments inside an archive location.
const SEGMENTS: &str = "segments";
const SUFFIX: &str = ".jsonl.zst";
/// zstd's default level: most of the ratio at a small part of the higher levels' cost.
const LEVEL: i32 = 3;

/// Why archived history could not be read or written. Every variant names the
/// segment or location, for the page and the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArchiveError {
    #[error("the archive location {location:?} cannot be used: {reason}")]
    Location { location: String, reason: String },
    #[error("archive segment {segment} is missing from {location}")]
    Missing { segment: Uuid, location: String },
    #[error("archive segment {segment} in {location} is not what was archived: {reason}")]
    Altered {
        segment: Uuid,
        location: String,
        reason: String,
    },
    #[error("the archive at {location} could not be reached: {reason}")]
    Unreachable { location: String, reason: String },
}

impl ArchiveError {
    /// What went wrong without where the archive is: for a page anyone may see.
    pub fn summary(&self) -> String {
        match self {
            ArchiveError::Location { .. } => "the archive's location cannot be used".into(),
            ArchiveError::Missing { segment, .. } => {
                format!("archive segment {segment} is missing")
            }
            ArchiveError::Altered { segment, .. } => {
                format!("archive segment {segment} is not what was archived")
            }
            ArchiveError::Unreachable { .. } => "the archive cannot be reached".into(),
        }
    }
}

/// Where segments are kept: an object store and the folder in it, known by URL.
#[derive(Clone)]
pub struct ArchiveLocation {
    url: String,
    store: Arc<dyn ObjectStore>,
    root: ObjectPath,
}

/// Each location opened once a process: the in-memory store keeps its objects, and
/// a cloud store its client.
static LOCATIONS: LazyLock<Mutex<HashMap<String, ArchiveLocation>>> =
    LazyLock::new(Default::default);

impl ArchiveLocation {
    /// Opens `location`: an object-store URL (`s3://bucket/prefix`, `memory:///name`,
    /// `file:///path`) or a local folder, created when missing. Cloud credentials come
    /// from the environment (`AWS_ACCESS_KEY_ID`, `AWS_REGION`, …).
    pub fn open(location: &str) -> Result<ArchiveLocation, ArchiveError> {
        let refused = |reason: String| ArchiveError::Location {
            location: location.to_owned(),
            reason,
        };
        let url = if location.contains("://") {
            url::Url::parse(location).map_err(|e| refused(e.to_string()))?
        } else {
            std::fs::create_dir_all(location).map_err(|e| refused(e.to_string()))?;
            let folder = std::fs::canonicalize(location).map_err(|e| refused(e.to_string()))?;
            url::Url::from_directory_path(&folder)
                .map_err(|()| refused("not an absolute folder".into()))?
        };
        let key = url.as_str().trim_end_matches('/').to_owned();
        let mut opened = LOCATIONS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = opened.get(&key) {
            return Ok(found.clone());
        }
        let options = std::env::vars()
            .filter(|(name, _)| name.starts_with("AWS_"))
            .map(|(name, value)| (name.to_ascii_lowercase(), value));
        let (store, root) =
            object_store::parse_url_opts(&url, options).map_err(|e| refused(e.to_string()))?;
        let found = ArchiveLocation {
            url: key.clone(),
            store: Arc::from(store),
            root,
        };
        opened.insert(key, found.clone());
        Ok(found)
    }

    /// The location as the manifest records it.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn segments(&self) -> ObjectPath {
        self.root.child(SEGMENTS)
    }

    fn object(&self, path: &str) -> ObjectPath {
        ObjectPath::from_iter(self.root.parts().chain(ObjectPath::from(path).parts()))
    }

    fn unreachable(&self, error: object_store::Error) -> ArchiveError {
        ArchiveError::Unreachable {
            location: self.url.clone(),
            reason: error.to_string(),
        }
    }
}

/// A segment's manifest row, as much of it as reading needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SegmentRow {
    pub segment_id: Uuid,
    pub location: String,
    pub path: String,
    pub events: i64,
    pub sha256: String,
}

/// A fetched segment as the readers keep it: its text (the decompressed lines) with
/// an index of where each event is, in commit order, and each stream's lines in
/// version order. An event is decoded when it is taken, so a cached segment costs
/// about its text, not the several times more its decoded events would.
pub struct Segment {
    segment_id: Uuid,
    location: String,
    text: Vec<u8>,
    lines: Vec<Line>,
    streams: HashMap<Uuid, Vec<u32>>,
}

/// Where one event's line is, and what orders it.
#[derive(Debug, Clone, Copy)]
struct Line {
    start: usize,
    end: usize,
    global: GlobalPosition,
    version: i64,
}

/// The fields of a line the index needs; serde skips the rest.
#[derive(serde::Deserialize)]
struct Key {
    global: GlobalPosition,
    stream_id: Uuid,
    version: i64,
}

impl Segment {
    /// Indexes the segment's text; it must hold as many events as its manifest says.
    fn index(row: &SegmentRow, text: Vec<u8>) -> Result<Segment, ArchiveError> {
        let mut lines = Vec::with_capacity(usize::try_from(row.events).unwrap_or(0));
        let mut streams: HashMap<Uuid, Vec<u32>> = HashMap::new();
        let mut start = 0;
        let mut keys = Vec::new();
        for line in text.split_inclusive(|&b| b == b'\n') {
            let end = start + line.len();
            if line.len() > 1 {
                let key: Key = serde_json::from_slice(line)
                    .map_err(|e| altered(row, format!("a line does not read ({e})")))?;
                lines.push(Line {
                    start,
                    end,
                    global: key.global,
                    version: key.version,
                });
                keys.push(key.stream_id);
            }
            start = end;
        }
        if lines.len() as i64 != row.events {
            return Err(altered(
                row,
                format!(
                    "it holds {} events, the manifest records {}",
                    lines.len(),
                    row.events
                ),
            ));
        }
        let mut order: Vec<usize> = (0..lines.len()).collect();
        order.sort_by_key(|&i| lines[i].global);
        let lines: Vec<Line> = order.iter().map(|&i| lines[i]).collect();
        for (at, &i) in order.iter().enumerate() {
            streams.entry(keys[i]).or_default().push(at as u32);
        }
        for indexes in streams.values_mut() {
            indexes.sort_by_key(|&i| lines[i as usize].version);
        }
        Ok(Segment {
            segment_id: row.segment_id,
            location: row.location.clone(),
            text,
            lines,
            streams,
        })
    }

    fn event(&self, line: &Line) -> Result<RecordedEvent, ArchiveError> {
        serde_json::from_slice(&self.text[line.start..line.end]).map_err(|e| {
            ArchiveError::Altered {
                segment: self.segment_id,
                location: self.location.clone(),
                reason: format!("a line does not read ({e})"),
            }
        })
    }

    /// All its events, in commit order.
    pub fn events(&self) -> Result<Vec<RecordedEvent>, ArchiveError> {
        self.lines.iter().map(|line| self.event(line)).collect()
    }

    /// The stream's events in it with a version above `after_version`, in order.
    pub fn stream(
        &self,
        stream_id: Uuid,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, ArchiveError> {
        let Some(indexes) = self.streams.get(&stream_id) else {
            return Ok(Vec::new());
        };
        indexes
            .iter()
            .map(|&i| &self.lines[i as usize])
            .filter(|line| line.version > after_version)
            .map(|line| self.event(line))
            .collect()
    }

    /// Its lines after `after`, in commit order.
    fn after(&self, after: GlobalPosition) -> &[Line] {
        let from = self.lines.partition_point(|line| line.global <= after);
        &self.lines[from..]
    }

    /// What it costs in memory, about: its text and its index.
    fn weight(&self) -> u32 {
        let bytes = self.text.len() + self.lines.len() * (std::mem::size_of::<Line>() + 24);
        u32::try_from(bytes / 1024).unwrap_or(u32::MAX)
    }
}

fn altered(row: &SegmentRow, reason: String) -> ArchiveError {
    ArchiveError::Altered {
        segment: row.segment_id,
        location: row.location.clone(),
        reason,
    }
}

/// The segment's bytes: one event a line, compressed.
pub fn encode(events: &[RecordedEvent]) -> std::io::Result<Vec<u8>> {
    let mut encoder = zstd::Encoder::new(Vec::new(), LEVEL)?;
    for event in events {
        serde_json::to_writer(&mut encoder, event)?;
        encoder.write_all(b"\n")?;
    }
    encoder.finish()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Fetches the segment and checks it against its manifest row: present, the same
/// SHA-256, and (once indexed) as many events as were archived.
async fn fetch_text(row: &SegmentRow) -> Result<Vec<u8>, ArchiveError> {
    let location = ArchiveLocation::open(&row.location)?;
    let bytes = match location.store.get(&location.object(&row.path)).await {
        Ok(found) => found.bytes().await.map_err(|e| location.unreachable(e))?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(ArchiveError::Missing {
                segment: row.segment_id,
                location: location.url.clone(),
            });
        }
        Err(error) => return Err(location.unreachable(error)),
    };
    let sha256 = sha256_hex(&bytes);
    if sha256 != row.sha256 {
        return Err(altered(
            row,
            format!(
                "its SHA-256 is {sha256}, the manifest records {}",
                row.sha256
            ),
        ));
    }
    zstd::decode_all(&bytes[..]).map_err(|e| altered(row, format!("it does not decompress ({e})")))
}

/// The segment fetched now (never from the cache) and checked: what `verify` and
/// the archive run's read-back look at.
pub async fn fetch_checked(row: &SegmentRow) -> Result<Vec<RecordedEvent>, ArchiveError> {
    Segment::index(row, fetch_text(row).await?)?.events()
}

/// The readers' cache of segments, weighed in KiB of text and index.
static CACHE: LazyLock<moka::future::Cache<Uuid, Arc<Segment>>> = LazyLock::new(|| {
    let kib = CACHE_KIB.get().copied().unwrap_or(DEFAULT_CACHE_KIB);
    moka::future::Cache::builder()
        .max_capacity(kib)
        .weigher(|_, segment: &Arc<Segment>| segment.weight())
        .build()
});
static CACHE_KIB: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
/// What a serving process keeps: a few segments, for the archived quotes people open.
const DEFAULT_CACHE_KIB: u64 = 64 * 1024;

/// Sets the segment cache's size, before the first segment is read: a process that
/// reads the whole log (rebuild, replay) wants every segment its cursor is inside
/// kept, or it fetches them again for each page. Later calls change nothing.
pub fn set_cache_size(bytes: u64) {
    let _ = CACHE_KIB.set(bytes / 1024);
}

/// The segment, from the cache or fetched, checked and indexed.
pub async fn segment(row: &SegmentRow) -> Result<Arc<Segment>, ArchiveError> {
    CACHE
        .try_get_with(row.segment_id, async {
            Ok(Arc::new(Segment::index(row, fetch_text(row).await?)?))
        })
        .await
        .map_err(|error: Arc<ArchiveError>| (*error).clone())
}

/// Why a read of the log failed: the database, or the archive behind it.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

const SEGMENT_COLUMNS: &str = "s.segment_id, s.location, s.path, s.events, s.sha256";

/// The stream's archived events with a version above `after_version`, in order
/// (none for a stream never archived).
pub async fn stream_after(
    conn: Conn<'_>,
    stream_id: Uuid,
    after_version: i64,
) -> Result<Vec<RecordedEvent>, ReadError> {
    let query = format!(
        "SELECT {SEGMENT_COLUMNS} FROM archived_streams a \
         JOIN archive_segments s ON s.segment_id = a.segment_id \
         WHERE a.stream_id = $1 AND a.last_version > $2 ORDER BY a.first_version"
    );
    let rows: Vec<SegmentRow> = on_backend!(conn, c => {
        sqlx::query_as(&query).bind(stream_id).bind(after_version).fetch_all(&mut *c).await?
    });
    let mut events = Vec::new();
    for row in rows {
        events.extend(segment(&row).await?.stream(stream_id, after_version)?);
    }
    Ok(events)
}

/// On PostgreSQL, the oldest transaction still running, read before the hot page: an
/// archived event is merged into a page only below it, where no event can still
/// commit. `None` where there is no such bound (SQLite; a read with appends shut out).
pub async fn horizon(conn: Conn<'_>, quiesced: bool) -> Result<Option<i64>, sqlx::Error> {
    match conn {
        Backend::Postgres(c) if !quiesced => Ok(Some(
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                .fetch_one(&mut *c)
                .await?,
        )),
        _ => Ok(None),
    }
}

/// The hot page (read after `horizon` and before this) with the archived events
/// after `after`, merged in commit order, at most `limit`. The manifest is read after
/// the hot rows, so an event archived between the two reads is found in its segment
/// (and, read twice, kept once); below the horizon, every event that will ever be in
/// the log is already in one of the two.
pub async fn merge_after(
    conn: Conn<'_>,
    hot: Vec<RecordedEvent>,
    after: GlobalPosition,
    horizon: Option<i64>,
    limit: i64,
) -> Result<Vec<RecordedEvent>, ReadError> {
    let query = format!(
        "SELECT {SEGMENT_COLUMNS} FROM archive_segments s \
         WHERE s.last_commit > $1 OR (s.last_commit = $1 AND s.last_position > $2) \
         ORDER BY s.first_commit, s.first_position"
    );
    let rows: Vec<SegmentRow> = on_backend!(conn, c => {
        sqlx::query_as(&query).bind(after.commit).bind(after.position).fetch_all(&mut *c).await?
    });
    if rows.is_empty() {
        return Ok(hot);
    }
    let limit = usize::try_from(limit).unwrap_or(0);
    let below = |at: GlobalPosition| horizon.is_none_or(|h| at.commit < h);
    let mut segments = Vec::with_capacity(rows.len());
    for row in &rows {
        segments.push(segment(row).await?);
    }
    // Each source is in commit order: merge them, taking the least head each time.
    // Stopping at `limit` keeps a full hot page's promise: an archived event after
    // its last would come after `limit` events already taken.
    let mut lines: Vec<&[Line]> = segments.iter().map(|s| s.after(after)).collect();
    let mut hot = hot.into_iter().filter(|e| below(e.global)).peekable();
    let mut merged = Vec::with_capacity(limit.min(4_096));
    while merged.len() < limit {
        let archived = (0..lines.len())
            .filter(|&i| lines[i].first().is_some_and(|line| below(line.global)))
            .min_by_key(|&i| lines[i][0].global);
        let hot_next = hot.peek().map(|e| e.global);
        let take_hot = match (hot_next, archived) {
            (None, None) => break,
            (Some(at), Some(i)) => at <= lines[i][0].global,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        match archived {
            Some(i) if !take_hot => {
                merged.push(segments[i].event(&lines[i][0])?);
                lines[i] = &lines[i][1..];
            }
            _ => {
                // Read in both (moved between the two reads): kept once.
                if let Some(i) = archived.filter(|&i| Some(lines[i][0].global) == hot_next) {
                    lines[i] = &lines[i][1..];
                }
                merged.extend(hot.next());
            }
        }
    }
    Ok(merged)
}

/// The last position any archived event holds, in commit order.
pub async fn last_position(conn: Conn<'_>) -> Result<Option<GlobalPosition>, sqlx::Error> {
    let row: Option<(i64, i64)> = on_backend!(conn, c => {
        sqlx::query_as(
            "SELECT last_commit, last_position FROM archive_segments \
             ORDER BY last_commit DESC, last_position DESC LIMIT 1",
        )
        .fetch_optional(&mut *c)
        .await?
    });
    Ok(row.map(|(commit, position)| GlobalPosition { commit, position }))
}

/// Every segment's manifest row, oldest first.
pub async fn segments(db: &Db) -> Result<Vec<SegmentRow>, sqlx::Error> {
    Ok(on_backend!(db, pool => {
        sqlx::query_as(&format!(
            "SELECT {SEGMENT_COLUMNS} FROM archive_segments s ORDER BY s.archived_at, s.segment_id"
        ))
        .fetch_all(pool)
        .await?
    }))
}

/// Each archived stream's segments and the last hash it has there.
pub async fn archived_streams(db: &Db) -> Result<HashMap<Uuid, Vec<(Uuid, String)>>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid, String)> = on_backend!(db, pool => {
        sqlx::query_as(
            "SELECT stream_id, segment_id, last_hash FROM archived_streams \
             ORDER BY stream_id, first_version",
        )
        .fetch_all(pool)
        .await?
    });
    let mut streams: HashMap<Uuid, Vec<(Uuid, String)>> = HashMap::new();
    for (stream_id, segment_id, last_hash) in rows {
        streams
            .entry(stream_id)
            .or_default()
            .push((segment_id, last_hash));
    }
    Ok(streams)
}

/// The archive as `verify` sees it: every segment fetched and checked against its
/// manifest, and where each archived stream's events are.
pub struct Checked {
    rows: HashMap<Uuid, SegmentRow>,
    streams: HashMap<Uuid, Vec<(Uuid, String)>>,
    faulty: HashMap<Uuid, ArchiveError>,
}

impl Checked {
    /// Fetches every segment (not from the cache: the stored bytes are what is
    /// checked) and reports in `report` each stream of a segment that cannot be read
    /// or whose last hash differs from the manifest's.
    pub async fn check(db: &Db, report: &mut VerifyReport) -> Result<Checked, sqlx::Error> {
        let streams = archived_streams(db).await?;
        let mut checked = Checked {
            rows: HashMap::new(),
            streams,
            faulty: HashMap::new(),
        };
        let mut last_hashes: HashMap<(Uuid, Uuid), String> = HashMap::new();
        for row in segments(db).await? {
            report.segments_checked += 1;
            match fetch_checked(&row).await {
                Ok(events) => {
                    let mut last: HashMap<Uuid, &RecordedEvent> = HashMap::new();
                    for event in &events {
                        let newest = last.entry(event.stream_id).or_insert(event);
                        if event.version > newest.version {
                            *newest = event;
                        }
                    }
                    for (stream_id, event) in last {
                        last_hashes.insert((stream_id, row.segment_id), event.hash.clone());
                    }
                }
                Err(error) => {
                    checked.faulty.insert(row.segment_id, error);
                }
            }
            checked.rows.insert(row.segment_id, row);
        }
        for (&stream_id, segments) in &checked.streams {
            for (segment, manifest_hash) in segments {
                let problem = if let Some(error) = checked.faulty.get(segment) {
                    Problem::ArchiveUnreadable {
                        reason: error.to_string(),
                    }
                } else if last_hashes.get(&(stream_id, *segment)) != Some(manifest_hash) {
                    Problem::ArchiveManifest { segment: *segment }
                } else {
                    continue;
                };
                report.mismatches.push(Mismatch {
                    stream_id,
                    version: 0,
                    problem,
                });
            }
        }
        Ok(checked)
    }

    /// The stream's archived events followed by its hot ones, for its chain to be
    /// walked. `Err(None)` when one of its segments failed the check (reported
    /// already); `Err(Some(problem))` when one passed it but cannot be read now (its
    /// store gone meanwhile, say), which the caller reports.
    pub async fn with_archived(
        &self,
        stream_id: Uuid,
        hot: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, Option<Problem>> {
        let Some(segments) = self.streams.get(&stream_id) else {
            return Ok(hot);
        };
        let mut events = Vec::new();
        for (segment_id, _) in segments {
            if self.faulty.contains_key(segment_id) {
                return Err(None);
            }
            let unreadable = |reason: String| Some(Problem::ArchiveUnreadable { reason });
            let row = self.rows.get(segment_id).ok_or_else(|| {
                unreadable(format!(
                    "segment {segment_id} left the manifest during the check"
                ))
            })?;
            let archived = match segment(row).await {
                Ok(segment) => segment.stream(stream_id, 0),
                Err(error) => Err(error),
            };
            events.extend(archived.map_err(|e| unreadable(e.to_string()))?);
        }
        let archived_to = events.last().map_or(0, |e| e.version);
        events.extend(hot.into_iter().filter(|e| e.version > archived_to));
        Ok(events)
    }
}

/// What [`move_streams`] moved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Moved {
    pub segment_id: Option<Uuid>,
    pub streams: u64,
    pub events: u64,
    pub bytes: u64,
}

/// A segment written and checked, its manifest not yet recorded.
#[derive(Debug, Clone)]
pub struct Written {
    pub segment_id: Uuid,
    path: String,
    location: String,
    sha256: String,
    bytes: u64,
    events: Vec<RecordedEvent>,
}

/// Why a move did not happen. Nothing was deleted.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the segment could not be encoded: {0}")]
    Encode(#[from] std::io::Error),
    /// The hot rows changed between the read and the delete (an append to a stream
    /// being archived): the transaction was rolled back, the segment left an orphan.
    #[error("the events of the streams being archived changed while they were archived")]
    Changed,
}

/// The hot events of `streams`, stream by stream in version order.
pub async fn hot_events(db: &Db, streams: &[Uuid]) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    let mut events = Vec::new();
    for chunk in streams.chunks(1_000) {
        let query = sql::SELECT_STREAMS.on(db);
        let rows: Vec<sql::EventRow> = on_backend!(db, pool => {
            let mut select = in_list(query, chunk);
            select.push(" ORDER BY stream_id, version");
            select.build_query_as().fetch_all(pool).await?
        });
        events.extend(rows.into_iter().map(RecordedEvent::from));
    }
    Ok(events)
}

/// Writes `events` as a new segment at `location` and reads it back: the bytes and
/// every event must come back as written. Records nothing.
pub async fn write_segment(
    location: &ArchiveLocation,
    mut events: Vec<RecordedEvent>,
) -> Result<Written, MoveError> {
    events.sort_by_key(|e| e.global);
    let segment_id = Uuid::now_v7();
    let path = format!("{SEGMENTS}/{segment_id}{SUFFIX}");
    let bytes = encode(&events)?;
    let sha256 = sha256_hex(&bytes);
    let size = bytes.len() as u64;
    let object = location.object(&path);
    location
        .store
        .put(&object, PutPayload::from(bytes))
        .await
        .map_err(|e| location.unreachable(e))?;
    let written = Written {
        segment_id,
        path,
        location: location.url.clone(),
        sha256,
        bytes: size,
        events,
    };
    let back = fetch_checked(&written.row()).await?;
    if back != written.events {
        return Err(ArchiveError::Altered {
            segment: segment_id,
            location: location.url.clone(),
            reason: "it did not read back as written".into(),
        }
        .into());
    }
    Ok(written)
}

impl Written {
    fn row(&self) -> SegmentRow {
        SegmentRow {
            segment_id: self.segment_id,
            location: self.location.clone(),
            path: self.path.clone(),
            events: self.events.len() as i64,
            sha256: self.sha256.clone(),
        }
    }
}

/// Records the written segment's manifest and deletes exactly its events from the
/// hot table, in one transaction; rolls back (leaving an orphan) if any of them is
/// no longer there.
pub async fn record_segment(db: &Db, written: &Written) -> Result<Moved, MoveError> {
    let events = &written.events;
    let (Some(first), Some(last)) = (
        events.iter().map(|e| e.global).min(),
        events.iter().map(|e| e.global).max(),
    ) else {
        return Ok(Moved::default());
    };
    // Each stream's versions in the segment and its last hash there.
    let mut streams: Vec<(Uuid, i64, i64, &str)> = Vec::new();
    let mut by_stream: Vec<&RecordedEvent> = events.iter().collect();
    by_stream.sort_by_key(|e| (e.stream_id, e.version));
    for event in by_stream {
        match streams.last_mut() {
            Some(s) if s.0 == event.stream_id => {
                s.2 = event.version;
                s.3 = &event.hash;
            }
            _ => streams.push((event.stream_id, event.version, event.version, &event.hash)),
        }
    }
    let mut pooled = db.acquire().await?;
    let mut tx = pooled.as_conn().begin_write().await?;
    on_backend!(tx.as_conn(), c => {
        sqlx::query(
            "INSERT INTO archive_segments (segment_id, location, path, streams, events, bytes, \
                 first_commit, first_position, last_commit, last_position, sha256, archived_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(written.segment_id)
        .bind(&written.location)
        .bind(&written.path)
        .bind(streams.len() as i64)
        .bind(events.len() as i64)
        .bind(written.bytes as i64)
        .bind(first.commit)
        .bind(first.position)
        .bind(last.commit)
        .bind(last.position)
        .bind(&written.sha256)
        .bind(Utc::now())
        .execute(&mut *c)
        .await?;
        for chunk in streams.chunks(1_000) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO archived_streams \
                 (stream_id, segment_id, first_version, last_version, last_hash) ",
            );
            insert.push_values(chunk, |mut row, (stream_id, first, last, hash)| {
                row.push_bind(*stream_id)
                    .push_bind(written.segment_id)
                    .push_bind(*first)
                    .push_bind(*last)
                    .push_bind(*hash);
            });
            insert.build().execute(&mut *c).await?;
        }
    });
    let mut deleted = 0;
    for chunk in events.chunks(5_000) {
        deleted += on_backend!(tx.as_conn(), c => {
            let mut delete = sqlx::QueryBuilder::new("DELETE FROM events WHERE event_id IN (");
            let mut ids = delete.separated(", ");
            for event in chunk {
                ids.push_bind(event.event_id);
            }
            delete.push(")");
            delete.build().execute(&mut *c).await?.rows_affected()
        });
    }
    if deleted != events.len() as u64 {
        tx.rollback().await?;
        return Err(MoveError::Changed);
    }
    tx.commit().await?;
    Ok(Moved {
        segment_id: Some(written.segment_id),
        streams: streams.len() as u64,
        events: deleted,
        bytes: written.bytes,
    })
}

/// Moves the hot events of `streams` into one new segment at `location`.
pub async fn move_streams(
    db: &Db,
    location: &ArchiveLocation,
    streams: &[Uuid],
) -> Result<Moved, MoveError> {
    let events = hot_events(db, streams).await?;
    if events.is_empty() {
        return Ok(Moved::default());
    }
    let written = write_segment(location, events).await?;
    record_segment(db, &written).await
}

/// Deletes the objects at `location` that look like segments but that no manifest
/// names: those of a run that stopped between writing a segment and recording it.
/// Call only while no other archive run can be writing (under the maintenance lock).
pub async fn remove_orphans(db: &Db, location: &ArchiveLocation) -> Result<u64, MoveError> {
    let known: Vec<String> = on_backend!(db, pool => {
        sqlx::query_scalar("SELECT path FROM archive_segments WHERE location = $1")
            .bind(location.url())
            .fetch_all(pool)
            .await?
    });
    let known: std::collections::HashSet<String> = known.into_iter().collect();
    let listed: Vec<object_store::ObjectMeta> = location
        .store
        .list(Some(&location.segments()))
        .try_collect()
        .await
        .map_err(|e| location.unreachable(e))?;
    let mut removed = 0;
    for object in listed {
        let relative: Vec<String> = object
            .location
            .parts()
            .skip(location.root.parts().count())
            .map(|part| part.as_ref().to_owned())
            .collect();
        let relative = relative.join("/");
        if relative.ends_with(SUFFIX) && !known.contains(&relative) {
            location
                .store
                .delete(&object.location)
                .await
                .map_err(|e| location.unreachable(e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The last version archived of each archived stream.
pub async fn archived_versions(db: &Db) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
    let rows: Vec<(Uuid, i64)> = on_backend!(db, pool => {
        sqlx::query_as("SELECT stream_id, MAX(last_version) FROM archived_streams GROUP BY stream_id")
            .fetch_all(pool)
            .await?
    });
    Ok(rows.into_iter().collect())
}

/// Archived events and segments, for progress bars and reports.
pub async fn archived_event_count(db: &Db) -> Result<i64, sqlx::Error> {
    Ok(on_backend!(db, pool => {
        sqlx::query_scalar("SELECT CAST(COALESCE(SUM(events), 0) AS BIGINT) FROM archive_segments")
            .fetch_one(pool)
            .await?
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(stream_id: Uuid, version: i64, position: i64) -> RecordedEvent {
        RecordedEvent {
            global: GlobalPosition {
                commit: position,
                position,
            },
            stream_id,
            version,
            event_id: Uuid::now_v7(),
            event_type: "ContactDetailsProvided".into(),
            schema_version: 1,
            payload: json!({"email": "a@example.com", "n": version, "nested": {"b": 1, "a": [1, 2]}}),
            actor: "asha".into(),
            recorded_at: Utc::now(),
            request_id: (version % 2 == 0).then(|| format!("req-{version}")),
            prev_hash: format!("prev-{version}"),
            hash: format!("hash-{version}"),
        }
    }

    #[test]
    fn a_segment_decodes_to_the_events_it_was_encoded_from() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let events = vec![
            event(a, 1, 3),
            event(b, 1, 4),
            event(a, 2, 7),
            event(b, 2, 9),
        ];
        let bytes = encode(&events).unwrap();
        let row = SegmentRow {
            segment_id: Uuid::now_v7(),
            location: "memory:///unit".into(),
            path: "segments/unit.jsonl.zst".into(),
            events: 4,
            sha256: sha256_hex(&bytes),
        };
        assert!(
            zstd::decode_all(&bytes[..bytes.len() / 2]).is_err(),
            "a cut segment"
        );
        let text = zstd::decode_all(&bytes[..]).unwrap();
        let short = SegmentRow {
            events: 5,
            ..row.clone()
        };
        assert!(matches!(
            Segment::index(&short, text.clone()),
            Err(ArchiveError::Altered { .. })
        ));

        let segment = Segment::index(&row, text).unwrap();
        assert_eq!(segment.events().unwrap(), events);
        assert_eq!(
            segment.stream(a, 0).unwrap(),
            vec![events[0].clone(), events[2].clone()]
        );
        assert_eq!(segment.stream(a, 1).unwrap(), vec![events[2].clone()]);
        assert!(segment.stream(Uuid::now_v7(), 0).unwrap().is_empty());
        let after = GlobalPosition {
            commit: 4,
            position: 4,
        };
        let later: Vec<RecordedEvent> = segment
            .after(after)
            .iter()
            .map(|line| segment.event(line).unwrap())
            .collect();
        assert_eq!(later, &events[2..]);
    }

    #[test]
    fn locations_are_known_by_url() {
        // S3 (credentials are looked up on first use, so this reaches no network).
        let s3 = ArchiveLocation::open("s3://insurer-archive/quoteline").unwrap();
        assert_eq!(s3.url(), "s3://insurer-archive/quoteline");
        assert_eq!(
            s3.object("segments/x.jsonl.zst").as_ref(),
            "quoteline/segments/x.jsonl.zst"
        );
        // A folder becomes a file URL, created when missing.
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("archive");
        let local = ArchiveLocation::open(folder.to_str().unwrap()).unwrap();
        assert!(folder.is_dir());
        let canonical = std::fs::canonicalize(&folder).unwrap();
        assert_eq!(local.url(), format!("file://{}", canonical.display()));
        // The same in-memory store each time it is opened.
        let memory = ArchiveLocation::open("memory:///unit").unwrap();
        let again = ArchiveLocation::open("memory:///unit/").unwrap();
        assert!(Arc::ptr_eq(&memory.store, &again.store));
        assert!(matches!(
            ArchiveLocation::open("nosuch://x"),
            Err(ArchiveError::Location { .. })
        ));
    }
    #[tokio::test]
    async fn a_segment_that_passed_the_check_but_cannot_be_read_now_is_reported() {
        let (stream, segment_id) = (Uuid::now_v7(), Uuid::now_v7());
        let row = SegmentRow {
            segment_id,
            location: "memory:///gone-since-the-check".into(),
            path: format!("segments/{segment_id}.jsonl.zst"),
            events: 1,
            sha256: "0".repeat(64),
        };
        let checked = Checked {
            rows: [(segment_id, row)].into(),
            streams: [(stream, vec![(segment_id, "hash".to_owned())])].into(),
            faulty: HashMap::new(),
        };
        let outcome = checked.with_archived(stream, Vec::new()).await;
        assert!(
            matches!(outcome, Err(Some(Problem::ArchiveUnreadable { .. }))),
            "{outcome:?}"
        );
        let never_archived = checked.with_archived(Uuid::now_v7(), Vec::new()).await;
        assert_eq!(never_archived, Ok(Vec::new()));
    }
}
