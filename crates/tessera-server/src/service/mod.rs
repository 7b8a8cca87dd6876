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
/// Seeds aws-lc's random generator on a thread of its own, so that its
/// one-time cost (tens of milliseconds collecting CPU jitter entropy, its
/// second entropy source beside the OS) runs while the database opens
/// instead of after it. Whoever draws first meanwhile waits for it.
pub fn seed_random_generator_in_background() {
    let _ = std::thread::Builder::new()
        .name("tessera-seed-random".into())
        .spawn(|| {
            let _ = aws_lc_rs::rand::fill(&mut [0u8; 1]);
        });
}

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

/// A new unique identifier (128 bits, base64url): client ids and user ids.
/// Token ids and grant families use [`new_ordered_id`].
pub fn new_id() -> String {
    use base64::Engine;
    loop {
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<16>());
        // Ids are given to the CLI as arguments, where a leading '-' would
        // read as an option (one id in 64 without this).
        if !id.starts_with('-') {
            return id;
        }
    }
}

/// A new unique identifier that sorts by creation time: 48 bits of Unix
/// milliseconds then 80 random bits, as 32 lowercase hex digits (which,
/// unlike base64url, compare in the order of their bytes). For `jti`s and
/// grant families: their index entries are then appended where the last ones
/// went, instead of dirtying a random B-tree page per token (the layout of
/// UUIDv7, RFC 9562 §5.7). The creation time it reveals is the token's
/// `iat` anyway.
pub fn new_ordered_id() -> String {
    use std::fmt::Write;
    let random = u128::from_be_bytes(random_bytes::<16>()) >> 48;
    let id = u128::from(unix_millis() & 0xffff_ffff_ffff) << 80 | random;
    // Sized at once: `format!` would grow it with `realloc`s (see
    // `tessera_core::jwt::claims_json`).
    let mut text = String::with_capacity(32);
    let _ = write!(text, "{id:032x}");
    text
}

/// A new refresh token: it leads with the millisecond it is issued, so that
/// its stored key ([`SecretHasher::ordered_key`]) is appended to the index
/// like a [`new_ordered_id`].
///
/// [`SecretHasher::ordered_key`]: tessera_core::secret::SecretHasher::ordered_key
pub fn new_refresh_secret() -> BearerSecret {
    BearerSecret::time_ordered(unix_millis(), random_bytes::<27>())
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the check, 10,000 ids would hold a leading '-' but for a
    /// chance of about e^-156.
    #[test]
    fn ids_never_start_with_a_dash() {
        for _ in 0..10_000 {
            let id = new_id();
            assert!(!id.starts_with('-'), "{id}");
            assert_eq!(id.len(), 22);
        }
    }

    #[test]
    fn ordered_ids_sort_by_creation_time_and_differ_within_a_millisecond() {
        let first = new_ordered_id();
        let same_millisecond = new_ordered_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = new_ordered_id();
        assert_eq!(first.len(), 32);
        assert!(
            first
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(first, same_millisecond);
        assert!(first < later && same_millisecond < later, "{first} {later}");
        // The first 12 digits are the milliseconds since the epoch.
        let millis = i64::from_str_radix(&later[..12], 16).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!((now - millis).abs() < 1_000);
    }
}
