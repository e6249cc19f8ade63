//! quoteline: quote capture, underwriting and audit over an event store in SQL.

pub mod db;
pub mod eventstore;
pub mod quoting;
