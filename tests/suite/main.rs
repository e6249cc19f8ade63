//! quoteline's integration tests: one binary, every storage test run against SQLite
//! and PostgreSQL.

#[macro_use]
mod support;

mod eventstore;
