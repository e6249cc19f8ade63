//! The `quoteline` command: serve the app, apply migrations, check the store.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use quoteline::db::{DEFAULT_DATABASE_URL, Db};
use quoteline::{AppState, router};

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
        /// Address to listen on
        #[arg(long, env = "BIND", default_value = "127.0.0.1:3000")]
        bind: String,
    },
    /// Apply the database migrations and exit
    Migrate,
    /// Walk every stream's hash chain; exits non-zero on any mismatch
    Verify,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=info".into()),
        )
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
    let db = Db::connect(&cli.database_url)
        .await
        .with_context(|| format!("cannot open the database at {}", cli.database_url))?;
    match cli.command {
        Command::Migrate => {
            db.migrate().await.context("migrations failed")?;
            println!("Migrations applied to {}.", db.backend_name());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { bind } => {
            let state = AppState::open(db).await?;
            serve(state, &bind).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify => {
            let state = AppState::open(db).await?;
            let report = state.store.verify().await?;
            println!(
                "Checked {} streams and {} events.",
                report.streams_checked, report.events_checked
            );
            for m in &report.mismatches {
                println!(
                    "MISMATCH stream {} version {}: {}",
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

async fn serve(state: AppState, bind: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    tracing::info!(address = %listener.local_addr()?, backend = state.db.backend_name(), "quoteline is serving");
    println!("quoteline is serving on http://{}", listener.local_addr()?);
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
