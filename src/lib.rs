//! quoteline: quote capture, underwriting and audit over an event store in SQL.
//!
//! The layers, lowest first (docs/ARCHITECTURE.md draws them): `kernel` and `db`
//! depend on nothing of ours; `eventstore` on `db`; the quoting domain on `kernel`
//! and the store's event types; `web` (shared page parts) on those; the contexts
//! (`identity`, `quoting`, `underwriting`, `audit`) on everything below them and on
//! each other's public read APIs, never on each other's pages; `state` and `app`
//! assemble it all.

pub mod app;
pub mod archive;
pub mod audit;
pub mod db;
pub mod demo;
pub mod eventstore;
pub mod identity;
pub mod kernel;
pub mod lock;
pub mod publisher;
pub mod quoting;
pub mod rebuild;
pub mod replay;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod underwriting;
pub mod web;

pub use app::router;
pub use state::AppState;
