//! Quoting: the Quote aggregate, its sections, and the agent's pages.

pub mod domain;
