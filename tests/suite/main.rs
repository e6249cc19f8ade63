//! quoteline's integration tests: one binary, every storage test run against SQLite
//! and PostgreSQL.

// Helpers for every test file; not each file uses all of them.
#[macro_use]
#[allow(dead_code)]
mod support;

mod access;
mod account;
mod agent_pages;
mod approval_queue;
mod archive;
mod audit;
mod catch_up;
mod compare;
mod crash;
mod decisions;
mod demo;
mod eventstore;
mod identity;
mod metrics;
mod people;
mod projections;
mod proof;
mod publisher;
mod quote_service;
mod random_forms;
mod rebuild;
mod replay;
mod server;
mod sessions;
mod sign_in_abuse;
mod snapshots;
mod upcasting;
mod web;
