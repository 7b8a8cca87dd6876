//! The services behind the endpoints: they fetch and store through
//! [`tessera_store::Store`] and let `tessera_core` decide. No HTTP here.

pub mod account;
pub mod admin;
pub mod authorize;
pub mod client_auth;
pub mod credentials;
pub mod token;
pub mod token_state;
pub mod transfer;

use tessera_core::secret::BearerSecret;
use tessera_core::{AuthorizeError, TokenError};
use tessera_store::StoreError;

/// Failures of the service layer that are not protocol errors.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => ServiceError::Unavailable(cause),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

impl From<tessera_core::jwt::KeyError> for ServiceError {
    fn from(error: tessera_core::jwt::KeyError) -> Self {
        ServiceError::Internal(error.to_string())
    }
}

impl From<ServiceError> for TokenError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Unavailable(cause) => {
                tracing::warn!(%cause, "storage unavailable");
                TokenError::TemporarilyUnavailable
            }
            ServiceError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                TokenError::ServerError
            }
        }
    }
}

impl From<ServiceError> for AuthorizeError {
    fn from(error: ServiceError) -> Self {
        match TokenError::from(error) {
            TokenError::TemporarilyUnavailable => AuthorizeError::TemporarilyUnavailable,
            _ => AuthorizeError::ServerError,
        }
    }
}

/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS generator does not fail on supported platforms; should it, an
    // all-zero value must never be used, so abort the request loudly.
    #[allow(clippy::expect_used)]
    aws_lc_rs::rand::fill(&mut bytes).expect("the operating system's random generator failed");
    bytes
}

/// A new 256-bit bearer secret (RFC 6749 §10.10: at least 128 bits of entropy).
pub fn new_secret() -> BearerSecret {
    BearerSecret::from_random_bytes(random_bytes::<32>())
}

/// A new unique identifier (128 bits, base64url): client ids, jti, families.
pub fn new_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<16>())
}
