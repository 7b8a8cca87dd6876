//! Tessera's integration tests: the real server on an ephemeral port, a fresh
//! database per test, spoken to over HTTP with reqwest and the `oauth2` crate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

pub(crate) mod helpers;

mod app_types;
mod authorization_code;
mod bad_input;
pub(crate) mod branding;
mod browser;
mod cli;
mod client_credentials;
mod consent;
mod discovery;
mod implicit;
mod password;
mod refresh;
mod tenants;
mod token_state;
