//! Tessera's vocabulary and protocol logic.
//!
//! Everything here is pure: no network, no SQL, no clock. Time (`UnixTime`)
//! and random values (salts, secrets) are inputs, so every RFC branch can be
//! tested at any instant without a server; the only randomness drawn here is
//! inside aws-lc, for key generation and ECDSA nonces.

pub mod branding;
pub mod crypto;
pub mod error;
pub mod form;
pub mod grant;
pub mod ids;
pub mod jwt;
pub mod model;
pub mod pkce;
pub mod redirect;
pub mod scope;
pub mod secret;
pub mod throttle;
pub mod time;

pub use error::{AuthorizeError, TokenError};
pub use ids::{ClientId, TenantName};
pub use model::*;
pub use redirect::RedirectUri;
pub use scope::{Scope, ScopeSet};
pub use time::UnixTime;
