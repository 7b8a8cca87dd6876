//! The integration suite again, on PostgreSQL: `helpers::on_postgres()` is
//! true in this binary, so every `spawn_app()` gets a PostgreSQL schema of
//! its own. The tests that only make sense with a shared database (several
//! nodes, database restarts) are here too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

#[path = "../api/main.rs"]
mod api;

// The suite's modules refer to `crate::helpers` and `crate::branding`.
pub(crate) use api::{branding, helpers};

mod migration;
mod nodes;
