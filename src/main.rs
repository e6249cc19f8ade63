//! The `quoteline` command: serve the app, apply migrations, check the store.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use quoteline::audit::signing::InstallationKey;
use quoteline::db::{DEFAULT_DATABASE_URL, Db};
use quoteline::demo::{self, Size};
use quoteline::eventstore::SnapshotPolicy;
use quoteline::identity::sessions::SessionSettings;
use quoteline::identity::{self, AddUserError};
use quoteline::kernel::Role;
use quoteline::server::{self, Limits};
use quoteline::state::Settings;
use quoteline::{AppState, router};

/// mimalloc instead of glibc's malloc for all but the largest blocks: each thread
/// allocates from pages of its own, without glibc's arena locks (BENCHMARKS.md: every
/// page and the rebuild gained).
#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

/// Blocks of this size or more go to the system's malloc: glibc's mmap threshold,
/// which `configure_allocator` fixes there.
const SYSTEM_FROM: usize = identity::password::MMAP_THRESHOLD as usize;

/// mimalloc, except that blocks of 8 MiB or more (argon2's 19 MiB, a rebuild's
/// pages) go to the system's malloc, which maps each on its own and unmaps it when it
/// is freed (`configure_allocator` fixes glibc's threshold there). mimalloc keeps a
/// freed block a while before giving it back, and a burst of sign-ins then held
/// several hashes' memory at once (115 MiB in the sign-in flood test, against a
/// budget of 100). Which allocator owns a block follows from its size, which every
/// call names.
struct Allocator;

impl Allocator {
    fn system(size: usize) -> bool {
        size >= SYSTEM_FROM
    }
}

// SAFETY: each call goes to one of two allocators by the block's size; a block is
// always freed or resized by the allocator that made it, since its layout's size
// decides both, and a resize across the threshold moves the block from one to the
// other.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::system(layout.size()) {
            unsafe { System.alloc(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::system(layout.size()) {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if Self::system(layout.size()) {
            unsafe { System.dealloc(ptr, layout) }
        } else {
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (Self::system(layout.size()), Self::system(new_size)) {
            (false, false) => unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) },
            (true, true) => unsafe { System.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: the caller guarantees `new_size`, at `layout`'s alignment, is
                // a valid layout.
                let moved = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                let new = unsafe { self.alloc(moved) };
                if !new.is_null() {
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

/// mimalloc's `mi_option_purge_delay` (the 16th of `mi_option_e` in its v3 header; the
/// crate names no constant for it): milliseconds before freed pages go back to the OS.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the OS after 10 ms instead of mimalloc's default second:
/// with a heap per thread (the runtime's and every SQLite connection's) the default
/// kept the server's peak near 100 MB; 10 ms keeps it near glibc's.
const PURGE_DELAY_MS: std::ffi::c_long = 10;

fn configure_allocator() {
    // SAFETY: called once at the start of `main`, before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    // From the start, not only once a password is hashed: a rebuild's large pages
    // are given back too.
    identity::password::map_large_blocks_afresh();
}

#[derive(Parser)]
#[command(
    name = "quoteline",
    version,
    about = "Insurance quotes, underwriting and audit over an event store"
)]
struct Cli {
    /// sqlite://path (created when missing) or postgres://user@host/database
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    database_url: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the web application
    Serve {
        #[command(flatten)]
        serving: Serving,
    },
    /// Create or open the database, add demo people of every role and (on a database
    /// without quotes) a dozen demo quotes or N generated ones, print the sign-ins, and
    /// serve
    Demo {
        #[command(flatten)]
        serving: Serving,
        /// Generate this many quotes, in a realistic mix of statuses and histories,
        /// instead of the dozen demo quotes
        #[arg(long, value_name = "N", conflicts_with = "events")]
        quotes: Option<usize>,
        /// Generate quotes until the store holds at least N events
        #[arg(long, value_name = "N")]
        events: Option<u64>,
        /// The generator's seed: the same seed gives the same quotes
        #[arg(long, value_name = "N", default_value = "1")]
        seed: u64,
        /// Stop once the data is written, without serving
        #[arg(long)]
        no_serve: bool,
        /// No progress bar (there is none either when standard output is not a terminal)
        #[arg(long, short)]
        quiet: bool,
    },
    /// Apply the database migrations and exit
    Migrate,
    /// Copy the history into another, empty database (SQLite file or PostgreSQL) and
    /// build its projections there: the quotes as they stood at a moment, apart from
    /// the live database, which is only read. Or, with --to, republish it to NATS
    /// under subjects of its own
    #[command(group(clap::ArgGroup::new("target").required(true).args(["into", "to"])))]
    Replay {
        /// The database to copy into: sqlite://path or postgres://…; created and
        /// migrated when missing, and it must hold no events
        #[arg(long, value_name = "DATABASE_URL")]
        into: Option<String>,
        /// Republish to NATS JetStream (at NATS_URL) under SUBJECT_PREFIX.<quote id>,
        /// on a stream of its own; never onto the live subjects
        #[arg(long, value_name = "SUBJECT_PREFIX", num_args = 0..=1,
              default_missing_value = quoteline::publisher::REPLAY_PREFIX)]
        to: Option<String>,
        /// Only events up to this global position (a whole number, as the audit log
        /// shows it) or time (RFC 3339, e.g. 2026-11-29T12:00:00Z); each quote keeps
        /// its events before its first one past the cut (with --into)
        #[arg(long, value_name = "POSITION|TIME", requires = "into")]
        until: Option<quoteline::replay::Until>,
        /// Only events from this global position on (with --to)
        #[arg(
            long,
            value_name = "POSITION",
            requires = "to",
            conflicts_with = "since"
        )]
        from: Option<i64>,
        /// Only events recorded at or after this time, RFC 3339 (with --to)
        #[arg(long, value_name = "TIME", requires = "to")]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only this quote (its id)
        #[arg(long, value_name = "ID")]
        quote: Option<uuid::Uuid>,
        #[command(flatten)]
        nats: Nats,
        /// No progress bar (there is none either when standard output is not a terminal)
        #[arg(long, short)]
        quiet: bool,
    },
    /// Replay the whole history into fresh copies of the projections' tables while the
    /// app keeps serving, then swap them in; one rebuild at a time
    Rebuild {
        /// Only this projection: quote_summary, approval_queue or audit_timeline
        #[arg(long, value_name = "NAME")]
        projection: Option<String>,
        /// No progress bar (there is none either when standard output is not a terminal)
        #[arg(long, short)]
        quiet: bool,
    },
    /// Move the events of finished quotes (approved, rejected, withdrawn) whose last
    /// change is older than DAYS days into compressed segments in the archive; they
    /// stay readable everywhere. One archive run or rebuild at a time
    Archive {
        /// Only quotes whose last change is at least this many days old (0: every
        /// finished quote)
        #[arg(long, value_name = "DAYS")]
        older_than: u32,
        /// Where segments go: a folder, or an object-store URL such as
        /// s3://bucket/prefix (credentials from AWS_* variables) or memory:///name
        #[arg(long, env = "QUOTELINE_ARCHIVE", value_name = "URL|FOLDER",
              default_value = quoteline::archive::DEFAULT_LOCATION)]
        to: String,
        /// Events a segment holds, about (a quote is never split between two)
        #[arg(long, value_name = "N", default_value_t = quoteline::archive::SEGMENT_EVENTS)]
        segment_events: u64,
        /// No progress bar (there is none either when standard output is not a terminal)
        #[arg(long, short)]
        quiet: bool,
    },
    /// Walk every stream's hash chain, archived ones included, and check every archive
    /// segment against its manifest; or, with --file, check one quote's exported proof
    /// with no database at all. Exits non-zero on any mismatch
    Verify {
        /// A proof downloaded from a quote's timeline: its chain, its head and its
        /// signature are checked, and the first event altered, missing, out of order
        /// or appended is named
        #[arg(long, value_name = "PATH")]
        file: Option<std::path::PathBuf>,
        /// With --file: the installation key (its public half, as /audit/verify
        /// shows it) that must have signed the proof
        #[arg(long, value_name = "PUBLIC_KEY", requires = "file")]
        key: Option<String>,
    },
    /// The installation's key, which signs the proofs auditors export
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage the people who can sign in
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create the installation's Ed25519 key (never replacing one) and print its
    /// public half
    Init {
        #[command(flatten)]
        file: KeyFile,
    },
    /// Print the public half of the installation's key
    Show {
        #[command(flatten)]
        file: KeyFile,
    },
}

/// Where the installation's key is kept.
#[derive(Args)]
struct KeyFile {
    /// The file holding the installation's signing key; every serving process of
    /// the installation reads the same one
    #[arg(long = "key-file", env = "QUOTELINE_KEY_FILE", value_name = "PATH",
          default_value = quoteline::audit::signing::DEFAULT_KEY_FILE)]
    path: std::path::PathBuf,
}

impl KeyFile {
    fn load(&self) -> anyhow::Result<Option<InstallationKey>> {
        Ok(InstallationKey::load(&self.path)?)
    }
}

/// The NATS server and the live subjects (the publisher's, which a replay must not
/// touch).
#[derive(Args)]
struct Nats {
    /// NATS JetStream at this server (nats://host:4222): serve publishes every event
    /// there (off when not set; one process publishes at a time), replay --to sends
    /// history there
    #[arg(long, env = "NATS_URL", value_name = "URL")]
    nats_url: Option<String>,
    /// The live subjects: events go to SUBJECT.<quote id>
    #[arg(
        long,
        env = "QUOTELINE_NATS_SUBJECT",
        value_name = "SUBJECT",
        default_value = "quoteline.events"
    )]
    nats_subject: String,
}

impl Nats {
    /// The publisher's settings, when a server is set.
    fn settings(&self) -> Option<quoteline::publisher::PublisherSettings> {
        let url = self.nats_url.as_deref().filter(|url| !url.is_empty())?;
        let mut settings = quoteline::publisher::PublisherSettings::new(url);
        settings.prefix = self.nats_subject.clone();
        Some(settings)
    }
}

/// Where and how the web application is served.
#[derive(Args)]
struct Serving {
    /// Address to listen on
    #[arg(long, env = "BIND", default_value = "127.0.0.1:3000")]
    bind: String,
    /// Close a connection that has not sent a whole request head this long after it
    /// opened or after its last response (e.g. 10s, 1m)
    #[arg(
        long,
        env = "QUOTELINE_HEADER_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = duration
    )]
    header_timeout: std::time::Duration,
    /// Serve at most this many connections at once; further ones wait until one closes
    #[arg(
        long,
        env = "QUOTELINE_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = Limits::default().max_connections,
        value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize)
    )]
    max_connections: usize,
    /// End a signed-in session this long after sign-in, however busy (e.g. 12h, 90m)
    #[arg(
        long,
        env = "QUOTELINE_SESSION_LIFETIME",
        value_name = "DURATION",
        default_value = "12h",
        value_parser = duration
    )]
    session_lifetime: std::time::Duration,
    /// The app is reached over HTTPS (itself or behind a proxy): the session cookie is
    /// Secure and named __Host-quoteline_session, and responses carry
    /// Strict-Transport-Security. Default: true unless BIND is a loopback address
    #[arg(
        long,
        env = "QUOTELINE_SECURE_COOKIES",
        value_name = "BOOL",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    secure_cookies: Option<bool>,
    /// Snapshot a quote once this many events were appended since its newest snapshot
    /// (0: never by count)
    #[arg(
        long,
        env = "QUOTELINE_SNAPSHOT_EVERY",
        value_name = "N",
        default_value_t = SnapshotPolicy::default().every.map_or(0, |n| n.get())
    )]
    snapshot_every: u64,
    /// Also snapshot a quote once its newest snapshot (or its start) is older than this
    /// and it has changed since (e.g. 1h); with --snapshot-every, whichever comes first
    #[arg(
        long,
        env = "QUOTELINE_SNAPSHOT_OLDER_THAN",
        value_name = "DURATION",
        value_parser = duration
    )]
    snapshot_older_than: Option<std::time::Duration>,
    #[command(flatten)]
    nats: Nats,
    /// The JetStream stream the events go to (created, or updated to these settings)
    #[arg(
        long,
        env = "QUOTELINE_NATS_STREAM",
        value_name = "NAME",
        default_value = "QUOTELINE"
    )]
    nats_stream: String,
    /// The stream keeps messages this long (e.g. 30d as 720h; not set: for ever)
    #[arg(long, env = "QUOTELINE_NATS_MAX_AGE", value_name = "DURATION", value_parser = duration)]
    nats_max_age: Option<std::time::Duration>,
    /// The stream keeps at most this many bytes (not set: no limit)
    #[arg(long, env = "QUOTELINE_NATS_MAX_BYTES", value_name = "BYTES")]
    nats_max_bytes: Option<i64>,
    /// How long JetStream remembers a message id to drop a repeat; longer than a
    /// publisher takes to restart
    #[arg(
        long,
        env = "QUOTELINE_NATS_DEDUPE_WINDOW",
        value_name = "DURATION",
        default_value = "10m",
        value_parser = duration
    )]
    nats_dedupe_window: std::time::Duration,
    /// A bearer token that reads /metrics from elsewhere than this machine (loopback
    /// always may); not set: this machine only
    #[arg(
        long,
        env = "QUOTELINE_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    metrics_token: Option<String>,
    #[command(flatten)]
    key: KeyFile,
}

impl Serving {
    /// The NATS publisher's settings, when it is on.
    fn publisher(&self) -> Option<quoteline::publisher::PublisherSettings> {
        let mut settings = self.nats.settings()?;
        settings.stream = self.nats_stream.clone();
        settings.max_age = self.nats_max_age.unwrap_or_default();
        settings.max_bytes = self.nats_max_bytes.unwrap_or(-1);
        settings.duplicate_window = self.nats_dedupe_window;
        Some(settings)
    }

    /// How the served process keeps state from the log.
    fn settings(&self) -> Settings {
        Settings {
            snapshots: SnapshotPolicy {
                every: std::num::NonZeroU64::new(self.snapshot_every),
                older_than: self.snapshot_older_than,
            },
            follow_heads: true,
            ..Settings::default()
        }
    }
}

/// A whole number of seconds, minutes or hours: `10s`, `30m`, `12h`.
fn duration(text: &str) -> Result<std::time::Duration, String> {
    let unit = text.len() - text.chars().last().map_or(0, char::len_utf8);
    let (number, seconds) = match &text[unit..] {
        "s" => (&text[..unit], 1),
        "m" => (&text[..unit], 60),
        "h" => (&text[..unit], 60 * 60),
        _ => return Err("a whole number with s, m or h after it, such as 10s or 12h".into()),
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 => Ok(std::time::Duration::from_secs(n.saturating_mul(seconds))),
        _ => Err(format!("{number:?} is not a whole number above 0")),
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a person; their password is read from standard input (one line, at least
    /// 8 characters)
    Add {
        /// The name they sign in with
        name: String,
        /// A role they hold: agent, underwriter, auditor or admin; repeat for several
        #[arg(long = "role", value_name = "ROLE", required = true)]
        roles: Vec<Role>,
    },
}

fn main() -> ExitCode {
    configure_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: not in a log file or a journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("quoteline: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // The commands that need no database.
    match &cli.command {
        Command::Verify {
            file: Some(path),
            key,
        } => return verify_file(path, key.as_deref()),
        Command::Keys { command } => return keys(command),
        _ => {}
    }
    let db = Db::connect(&cli.database_url)
        .await
        .with_context(|| format!("cannot open the database at {}", cli.database_url))?;
    match cli.command {
        Command::Migrate => {
            db.migrate().await.context("migrations failed")?;
            println!("Migrations applied to {}.", db.backend_name());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { serving } => {
            let state = AppState::open_configured(db, serving.settings()).await?;
            serve(state, &serving).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            serving,
            quotes,
            events,
            seed,
            no_serve,
            quiet,
        } => {
            let state = AppState::open_configured(db, serving.settings()).await?;
            let size = match (quotes, events) {
                (Some(quotes), _) => Some(Size::Quotes(quotes)),
                (None, Some(events)) => Some(Size::Events(events)),
                (None, None) => None,
            };
            let sign_ins = match size {
                None => demo::seed(&state).await?,
                Some(size) => {
                    let sign_ins = demo::add_people(&state).await?;
                    generate(&state, size, seed, quiet).await?;
                    sign_ins
                }
            };
            print_sign_ins(&sign_ins, &serving.bind);
            if no_serve {
                // Checkpoints SQLite's write-ahead log into the database file.
                state.db.close().await;
            } else {
                if serving.key.load()?.is_none() {
                    // The demo's proofs are signed, as an installation's would be.
                    InstallationKey::create(&serving.key.path)?;
                    println!(
                        "Created an installation key at {}.",
                        serving.key.path.display()
                    );
                }
                serve(state, &serving).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            into,
            to,
            until,
            from,
            since,
            quote,
            nats,
            quiet,
        } => {
            quoteline::eventstore::archive::set_cache_size(WHOLE_LOG_SEGMENT_CACHE);
            let Some(into) = into else {
                let Some(live) = nats.settings() else {
                    eprintln!(
                        "quoteline: replay --to needs the NATS server: set NATS_URL or --nats-url"
                    );
                    return Ok(ExitCode::FAILURE);
                };
                let prefix = to.unwrap_or_else(|| quoteline::publisher::REPLAY_PREFIX.into());
                let selection = quoteline::publisher::ReplaySelection { from, since, quote };
                return replay_to(&db, &live, &prefix, &selection, quiet).await;
            };
            let target = Db::connect(&into)
                .await
                .with_context(|| format!("cannot open the database to replay into at {into}"))?;
            replay(
                &db,
                &target,
                quoteline::replay::Selection { until, quote },
                quiet,
            )
            .await
        }
        Command::Rebuild { projection, quiet } => {
            db.migrate().await.context("migrations failed")?;
            quoteline::eventstore::archive::set_cache_size(WHOLE_LOG_SEGMENT_CACHE);
            rebuild(&db, projection.as_deref(), quiet).await
        }
        Command::Archive {
            older_than,
            to,
            segment_events,
            quiet,
        } => {
            db.migrate().await.context("migrations failed")?;
            let location = quoteline::eventstore::ArchiveLocation::open(&to)?;
            let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(older_than));
            archive(&db, &location, cutoff, segment_events, quiet).await
        }
        Command::User {
            command: UserCommand::Add { name, roles },
        } => {
            let state = AppState::open(db).await?;
            add_user(&state.store, &name, &roles).await
        }
        Command::Keys { .. } => unreachable!("answered before the database is opened"),
        Command::Verify { .. } => {
            let state = AppState::open(db).await?;
            eprintln!("Verifying every hash chain…");
            // Recorded like a check from the page, so /audit/verify shows this run too.
            let (report, run) =
                quoteline::audit::verification::run(&state.store, "quoteline verify").await?;
            println!(
                "Checked {} streams, {} events and {} archive segments.",
                report.streams_checked, report.events_checked, report.segments_checked
            );
            let references: std::collections::HashMap<_, _> = run
                .mismatches
                .iter()
                .filter_map(|m| Some((m.stream_id, m.reference.clone()?)))
                .collect();
            for m in &report.mismatches {
                let quote = references
                    .get(&m.stream_id)
                    .map(|r| format!(" (quote {r})"))
                    .unwrap_or_default();
                println!(
                    "MISMATCH stream {} version {}: {}{quote}",
                    m.stream_id, m.version, m.problem
                );
            }
            if report.is_intact() {
                println!("Every hash chain is intact.");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("{} mismatches found.", report.mismatches.len());
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

async fn add_user(
    store: &quoteline::eventstore::EventStore,
    name: &str,
    roles: &[Role],
) -> anyhow::Result<ExitCode> {
    let password = read_password().context("cannot read the password from standard input")?;
    match identity::add_user(store, name, &password, roles).await {
        Ok(user) => {
            let roles: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
            println!("Added {} ({}).", user.username, roles.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        Err(AddUserError::Other(error)) => Err(error),
        Err(refused) => {
            eprintln!("quoteline: {refused}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// One line from standard input, without its line ending. A prompt goes to standard
/// error when a person is typing (the input is not hidden).
fn read_password() -> std::io::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password (at least 8 characters): ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    Ok(password.strip_suffix('\r').unwrap_or(password).to_owned())
}

/// The archive segments a command that reads the whole log keeps in memory: every
/// segment its cursor is inside, or it fetches them again page after page.
const WHOLE_LOG_SEGMENT_CACHE: u64 = 1 << 30;

/// `rebuild [--projection NAME]`, with a progress bar on a terminal.
async fn rebuild(db: &Db, only: Option<&str>, quiet: bool) -> anyhow::Result<ExitCode> {
    let progress = progress_bar(quiet, 0, "events")?;
    let outcome = quoteline::rebuild::rebuild(db, only, |done, total| {
        progress.set_length(total.max(done));
        progress.set_position(done);
    })
    .await;
    progress.finish_and_clear();
    match outcome {
        Ok(rebuilt) => {
            println!(
                "Rebuilt {} from {} events in {:.1} s ({:.0} events/s).",
                rebuilt.projections.join(", "),
                rebuilt.events,
                rebuilt.took.as_secs_f64(),
                rebuilt.events_per_second()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(
            refused @ (quoteline::rebuild::RebuildError::Busy { .. }
            | quoteline::rebuild::RebuildError::Unknown { .. }),
        ) => {
            eprintln!("quoteline: {refused}");
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(error.into()),
    }
}

/// `archive --older-than DAYS`, with a progress bar on a terminal.
async fn archive(
    db: &Db,
    location: &quoteline::eventstore::ArchiveLocation,
    cutoff: chrono::DateTime<chrono::Utc>,
    segment_events: u64,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let progress = progress_bar(quiet, 0, "events")?;
    let outcome =
        quoteline::archive::archive(db, location, cutoff, segment_events, |done, total| {
            progress.set_length(total.max(done));
            progress.set_position(done);
        })
        .await;
    progress.finish_and_clear();
    match outcome {
        Ok(archived) => {
            if archived.orphans_removed > 0 {
                println!(
                    "Removed {} segments an earlier run wrote but did not record.",
                    archived.orphans_removed
                );
            }
            let size = |s: quoteline::archive::HotSize| match s.bytes {
                Some(bytes) => format!("{} rows, {:.1} MB", s.rows, bytes as f64 / 1e6),
                None => format!("{} rows", s.rows),
            };
            println!(
                "Archived {} events of {} quotes into {} segments ({:.1} MB) at {} in {:.1} s \
                 ({:.0} events/s). The events table: {} before, {} after.",
                archived.events,
                archived.quotes,
                archived.segments,
                archived.bytes as f64 / 1e6,
                location.url(),
                archived.took.as_secs_f64(),
                archived.events_per_second(),
                size(archived.before),
                size(archived.after),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(refused @ quoteline::archive::ArchiveRunError::Busy(_)) => {
            eprintln!("quoteline: {refused}");
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(error.into()),
    }
}

/// `replay --to SUBJECT_PREFIX`, with a progress bar on a terminal.
async fn replay_to(
    db: &Db,
    live: &quoteline::publisher::PublisherSettings,
    prefix: &str,
    selection: &quoteline::publisher::ReplaySelection,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let progress = progress_bar(quiet, 0, "events")?;
    let outcome = quoteline::publisher::replay_to(db, live, prefix, selection, |done, total| {
        progress.set_length(total.max(done));
        progress.set_position(done);
    })
    .await;
    progress.finish_and_clear();
    match outcome {
        Ok(sent) => {
            println!(
                "Republished {} events to {prefix}.<quote id> (stream {}) in {:.1} s.",
                sent.events,
                sent.stream,
                sent.took.as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(refused @ quoteline::publisher::PublishError::OntoLive { .. }) => {
            eprintln!("quoteline: {refused}");
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(error.into()),
    }
}

/// `replay --into URL`, with a progress bar on a terminal.
async fn replay(
    source: &Db,
    target: &Db,
    selection: quoteline::replay::Selection,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let progress = progress_bar(quiet, 0, "events")?;
    let outcome = quoteline::replay::replay(source, target, selection, |done, total| {
        progress.set_length(total.max(done));
        progress.set_position(done);
    })
    .await;
    progress.finish_and_clear();
    target.close().await;
    match outcome {
        Ok(replayed) => {
            println!(
                "Replayed {} events of {} quotes in {:.1} s; their projections are built.",
                replayed.events,
                replayed.streams,
                replayed.took.as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(refused @ quoteline::replay::ReplayError::NotEmpty(_)) => {
            eprintln!("quoteline: {refused}");
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(error.into()),
    }
}

/// A progress bar of `length` `unit`s on standard output, hidden when `quiet` or
/// when standard output is not a terminal.
fn progress_bar(quiet: bool, length: u64, unit: &str) -> anyhow::Result<ProgressBar> {
    if quiet || !std::io::stdout().is_terminal() {
        return Ok(ProgressBar::hidden());
    }
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stdout());
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{wide_bar}}] {{human_pos}}/{{human_len}} {unit} \
             ({{per_sec}}, {{eta}} left)"
        ))?
        .progress_chars("=> "),
    );
    Ok(bar)
}

/// `demo --quotes N` / `--events N`: the generated quotes, with a progress bar on a
/// terminal, into a database that has no quotes yet.
async fn generate(state: &AppState, size: Size, seed: u64, quiet: bool) -> anyhow::Result<()> {
    let existing = demo::quote_count(state).await?;
    if existing > 0 {
        println!(
            "The database holds {existing} quotes already, so none were generated \
             (generate into a new database)."
        );
        return Ok(());
    }
    let (length, unit) = match size {
        Size::Quotes(quotes) => (quotes as u64, "quotes"),
        Size::Events(events) => (events, "events"),
    };
    let progress = progress_bar(quiet, length, unit)?;
    let options = demo::Generate {
        size,
        seed,
        now: chrono::Utc::now(),
    };
    let generated = demo::generate_in_bulk(&state.db, options, &progress).await?;
    progress.finish_and_clear();
    println!(
        "Generated {} quotes with seed {seed}: {} events in {} appends in {:.1} s \
         ({:.0} events/s).",
        generated.quotes,
        generated.events,
        generated.appends,
        generated.took.as_secs_f64(),
        generated.events_per_second()
    );
    println!(
        "Statuses: {}; {} referred back at least once.",
        generated.mix(),
        generated.referred
    );
    Ok(())
}

fn print_sign_ins(sign_ins: &[quoteline::demo::DemoSignIn], bind: &str) {
    println!();
    println!("Demo sign-ins for http://{bind}/login (passwords are new on every `demo` run):");
    println!();
    println!("  {:<10} {:<14} role", "username", "password");
    for sign_in in sign_ins {
        let roles: Vec<&str> = sign_in.roles.iter().map(|r| r.as_str()).collect();
        println!(
            "  {:<10} {:<14} {}",
            sign_in.username,
            sign_in.password,
            roles.join(", ")
        );
    }
    println!();
}

async fn serve(state: AppState, serving: &Serving) -> anyhow::Result<()> {
    let bind = &serving.bind;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let address = listener.local_addr()?;
    let mut sessions = SessionSettings::for_address(address);
    sessions.lifetime = serving.session_lifetime;
    sessions.secure = serving.secure_cookies.unwrap_or(sessions.secure);
    let limits = Limits {
        header_read_timeout: serving.header_timeout,
        max_connections: serving.max_connections,
    };
    tracing::info!(
        %address,
        backend = state.db.backend_name(),
        secure_cookies = sessions.secure,
        header_timeout = ?limits.header_read_timeout,
        max_connections = limits.max_connections,
        session_lifetime = ?sessions.lifetime,
        "quoteline is serving"
    );
    let key = serving.key.load()?;
    match &key {
        Some(key) => println!(
            "Proofs are signed with the installation key {}.",
            key.public_hex()
        ),
        None => println!(
            "Proofs are exported unsigned: there is no installation key at {} (create one \
             with `quoteline keys init`).",
            serving.key.path.display()
        ),
    }
    if sessions.secure {
        println!(
            "The session cookie is Secure: browsers keep it over HTTPS only (set \
             QUOTELINE_SECURE_COOKIES=false to serve over plain HTTP)."
        );
    }
    let publisher = serving.publisher();
    if let Some(publisher) = &publisher {
        println!(
            "Events are published to NATS at {} (stream {}, subjects {}.<quote id>).",
            publisher.url, publisher.stream, publisher.prefix
        );
    }
    // The last line printed: a supervisor may stop reading here, and a print to a
    // closed pipe would stop the server.
    println!("quoteline is serving on http://{address}");
    // The metrics recorder before anything counts: the publisher starts first.
    quoteline::telemetry::handle();
    if let Some(publisher) = publisher {
        tokio::spawn(quoteline::publisher::run(state.db.clone(), publisher));
    }
    let state = state
        .with_session_settings(sessions)
        .with_metrics_token(serving.metrics_token.clone())
        .with_signing_key(key);
    server::serve(listener, router(state), limits, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}

fn keys(command: &KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Init { file } => {
            let key = InstallationKey::create(&file.path)?;
            println!(
                "Created the installation key at {} (keep it secret, and back it up).",
                file.path.display()
            );
            println!("Its public half, which recipients of its proofs compare:");
            println!("{}", key.public_hex());
        }
        KeysCommand::Show { file } => {
            let Some(key) = file.load()? else {
                eprintln!(
                    "quoteline: there is no installation key at {} (create one with `quoteline keys init`)",
                    file.path.display()
                );
                return Ok(ExitCode::FAILURE);
            };
            println!("{}", key.public_hex());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks one exported proof, with no database.
fn verify_file(path: &std::path::Path, expected: Option<&str>) -> anyhow::Result<ExitCode> {
    use quoteline::audit::proof::{self, Signer};
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Some(key) = expected
        && hex::decode(key).map_or(true, |bytes| bytes.len() != 32)
    {
        anyhow::bail!(
            "--key must be a public key: 64 hexadecimal digits, as /audit/verify shows it"
        );
    }
    let checked = match proof::check(&text, expected) {
        Ok(checked) => checked,
        Err(unreadable) => {
            println!("NOT VERIFIED: {}: {unreadable}.", path.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    println!(
        "Checked the proof of quote {} ({}): {} events, the head at event {}.",
        checked.reference, checked.quote_id, checked.events, checked.head
    );
    match &checked.chain {
        Ok(()) => println!("The hash chain is intact and ends at the head."),
        Err(broken) => println!("BROKEN: {broken}."),
    }
    match &checked.signer {
        Signer::Key(key) => println!("Signed by the installation key {key}."),
        Signer::Unchecked(key) => println!(
            "NOT CHECKED: the signature holds for the key the file names, {key}; anyone can \
             sign a file with a key of their own. Give the installation's public key (shown on \
             /audit/verify) with --key."
        ),
        Signer::Unsigned => println!("NOT SIGNED: nothing shows which installation exported it."),
        Signer::Invalid(e) => println!("SIGNATURE INVALID: {e}."),
        Signer::OtherKey { found, expected } => {
            println!("SIGNED BY ANOTHER KEY: {found}, not the expected {expected}.")
        }
    }
    if checked.is_proven() {
        println!("Verified.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("NOT VERIFIED.");
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::CommandFactory;
    use quoteline::identity::sessions::DEFAULT_LIFETIME;

    use super::*;

    #[test]
    fn a_block_keeps_its_bytes_when_it_grows_or_shrinks_across_the_threshold() {
        let written: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        let mut block = written.clone();
        block.reserve_exact(SYSTEM_FROM); // from mimalloc to the system's malloc
        assert!(block.capacity() >= SYSTEM_FROM);
        assert_eq!(block, written);
        block.resize(SYSTEM_FROM + 4096, 1);
        block.truncate(written.len());
        block.shrink_to_fit(); // and back
        assert!(block.capacity() < SYSTEM_FROM);
        assert_eq!(block, written);
        let zeroed = vec![0u64; SYSTEM_FROM / 8 + 1];
        assert!(zeroed.iter().all(|&word| word == 0));
    }

    #[test]
    fn the_purge_delay_constant_names_mimallocs_purge_delay() {
        // Of mimalloc's options only the purge delay defaults to 1000 (ms): a
        // renumbered enum would make this index name another option.
        // SAFETY: reads an option; no test sets it.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000);
    }

    #[test]
    fn a_duration_is_a_whole_number_of_seconds_minutes_or_hours() {
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("30m"), Ok(Duration::from_secs(30 * 60)));
        assert_eq!(duration("12h"), Ok(DEFAULT_LIFETIME));
        for refused in ["", "h", "0s", "-1s", "1.5h", "10", "10 s", "10d", "éh"] {
            assert!(duration(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn the_serving_defaults_are_the_librarys() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["quoteline", "serve"]).unwrap();
        let Command::Serve { serving } = cli.command else {
            panic!("serve")
        };
        let defaults = Limits::default();
        assert_eq!(serving.header_timeout, defaults.header_read_timeout);
        assert_eq!(serving.max_connections, defaults.max_connections);
        assert_eq!(serving.session_lifetime, DEFAULT_LIFETIME);
        assert_eq!(serving.settings().snapshots, SnapshotPolicy::default());
    }

    #[test]
    fn snapshots_can_be_taken_by_count_by_age_both_or_never() {
        let policy = |args: &[&str]| {
            let cli = Cli::try_parse_from(["quoteline", "serve"].iter().chain(args)).unwrap();
            let Command::Serve { serving } = cli.command else {
                panic!("serve")
            };
            serving.settings().snapshots
        };
        let hybrid = policy(&["--snapshot-every", "50", "--snapshot-older-than", "1h"]);
        assert_eq!(hybrid.every.map(|n| n.get()), Some(50));
        assert_eq!(hybrid.older_than, Some(Duration::from_secs(3600)));
        let by_age = policy(&["--snapshot-every", "0", "--snapshot-older-than", "30m"]);
        assert_eq!(by_age.every, None);
        assert_eq!(by_age.older_than, Some(Duration::from_secs(1800)));
        assert!(policy(&["--snapshot-every", "0"]).is_never());
    }
}
