//! Tessera's server: the HTTP edge (`http`) over the services that drive the
//! protocol (`service`).
//!
//! Architecture invariant: `service` never sees axum, cookies or HTML; `http`
//! never runs SQL and never decides protocol questions. The clock is read in
//! `http`, once per request, and passed down; random values all come from
//! `service::random_bytes`.

mod config_cache;
pub mod http;
pub mod service;
mod state;

pub use http::{ServerConfig, router, serve, spawn_purge};
pub use state::AppState;
