//! # tessera-resource
//!
//! The resource server's half of OAuth 2.0: accept a bearer token, validate
//! it, and enforce scopes. It works against Tessera or any issuer of RFC 9068
//! JWT access tokens, and depends on nothing of the Tessera server.
//!
//! - **Local validation** (the default): the issuer's `jwks_uri` is found in its
//!   metadata (RFC 8414), signature keys are cached and refreshed in the
//!   background once old, an unknown `kid` (or, for a token without one, no
//!   key that verifies it) triggers a refetch (rate-limited), and each
//!   token's signature (asymmetric algorithms only), `typ` (`at+jwt`), `iss`,
//!   `aud`, `exp` and `nbf` are checked.
//! - **Introspection** (RFC 7662), for opaque tokens or immediate revocation,
//!   with a short, bounded cache of positive answers.
//! - **axum/tower**: [`BearerLayer`] validates, the [`AccessToken`] extractor
//!   hands the token to handlers, [`RequireScopes`] guards routes; refusals
//!   follow RFC 6750 §3 (`WWW-Authenticate`, 400/401/403). Tokens never appear
//!   in errors or logs.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use tessera_resource::{AccessToken, BearerLayer, RequireScopes, Validator};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let validator = Validator::builder("http://127.0.0.1:8080/t/demo", "contacts-api")
//!     .discover()
//!     .await?;
//! let app = Router::new()
//!     .route("/me", get(|token: AccessToken| async move { token.subject }))
//!     .route_layer(RequireScopes::all(["contacts:read"]))
//!     .layer(BearerLayer::new(validator));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```

mod error;
mod layer;
mod token;
mod validator;

pub use error::{SetupError, TokenError};
pub use jsonwebtoken::Algorithm;
pub use layer::{BearerLayer, BearerService, RequireScopes, ScopeService, bearer_token};
pub use token::AccessToken;
pub use validator::{DEFAULT_ALGORITHMS, Validator, ValidatorBuilder};
