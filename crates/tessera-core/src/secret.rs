//! Secrets: redacted in `Debug`, compared in constant time, stored only as hashes.

use std::fmt;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Constant-time equality of two byte strings (the length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A high-entropy bearer value handed out once: a client secret, an
/// authorization code, a refresh or opaque access token, a session id.
/// Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerSecret(String);

impl BearerSecret {
    /// Encodes 32 random bytes (256 bits) as base64url without padding.
    pub fn from_random_bytes(bytes: [u8; 32]) -> Self {
        BearerSecret(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A secret that leads with the time it is issued: the low 48 bits of
    /// `issued_millis` (big-endian), then 27 random bytes (216 bits), in 44
    /// base64url characters, the first 8 of which encode the time. See
    /// [`SecretHasher::ordered_key`].
    pub fn time_ordered(issued_millis: u64, random: [u8; 27]) -> Self {
        let mut bytes = [0u8; 33];
        bytes[..6].copy_from_slice(&issued_millis.to_be_bytes()[2..]);
        bytes[6..].copy_from_slice(&random);
        BearerSecret(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Whether `value` has the shape of a secret this server hands out: 43
    /// ([`Self::from_random_bytes`]) or 44 ([`Self::time_ordered`]) base64url
    /// characters. Anything else cannot be one, and is refused without a
    /// database lookup.
    pub fn has_issued_shape(value: &str) -> bool {
        matches!(value.len(), 43 | TIME_ORDERED_LEN)
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    /// Wraps a value received from a request.
    pub fn received(value: impl Into<String>) -> Self {
        BearerSecret(value.into())
    }

    /// The value, for the one response that hands it out.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerSecret([redacted])")
    }
}

/// The length of a [`BearerSecret::time_ordered`] secret.
const TIME_ORDERED_LEN: usize = 44;

/// A keyed hash (HMAC-SHA-256) of a secret, as stored in the database.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash(pub Vec<u8>);

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

impl SecretHash {
    /// Constant-time comparison with another hash.
    pub fn matches(&self, other: &SecretHash) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

/// Hashes server-generated secrets with a deployment-wide key.
///
/// The secrets hashed here carry 216 to 256 bits of entropy, so a fast keyed hash is
/// as safe as a slow one and costs microseconds instead of the tens of
/// milliseconds a password hash would add to every token request.
#[derive(Clone)]
pub struct SecretHasher {
    key: hmac::Key,
}

impl fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHasher([redacted])")
    }
}

impl SecretHasher {
    pub fn new(key: &[u8]) -> Self {
        SecretHasher {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// The hash of `secret` under `purpose`, so that a value of one kind (say a
    /// session id) can never be presented as another (say a refresh token).
    pub fn hash(&self, purpose: Purpose, secret: &str) -> SecretHash {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(purpose.label());
        context.update(b"\0");
        context.update(secret.as_bytes());
        SecretHash(context.sign().as_ref().to_vec())
    }

    /// The stored lookup key of a secret that may be
    /// [`BearerSecret::time_ordered`]: the 6 bytes of its time, then its hash.
    /// Keys of secrets issued close together sort together, so that storing
    /// one appends to the index instead of dirtying a random page of it (the
    /// time it shows is the record's issue time anyway). Any other secret,
    /// such as one issued before that format, is keyed by its hash alone and
    /// still found; the two kinds of key differ in length, so they never meet.
    pub fn ordered_key(&self, purpose: Purpose, secret: &str) -> SecretHash {
        let hash = self.hash(purpose, secret);
        if secret.len() != TIME_ORDERED_LEN {
            return hash;
        }
        // Eight base64url characters are six bytes. The key is allocated at
        // its full length: growing it would cost a `realloc` per token.
        let mut time = [0u8; 6];
        match URL_SAFE_NO_PAD.decode_slice(&secret.as_bytes()[..8], &mut time) {
            Ok(written) => {
                let mut key = Vec::with_capacity(written + hash.0.len());
                key.extend_from_slice(&time[..written]);
                key.extend_from_slice(&hash.0);
                SecretHash(key)
            }
            Err(_) => hash,
        }
    }

    /// A CSRF token bound to a browser (or session) and to one pending request.
    pub fn csrf_token(&self, binding: &str, request_id: &str) -> String {
        let tag = self.hash(Purpose::Csrf, &format!("{binding}\0{request_id}"));
        URL_SAFE_NO_PAD.encode(tag.0)
    }

    pub fn csrf_token_is_valid(&self, binding: &str, request_id: &str, presented: &str) -> bool {
        constant_time_eq(
            self.csrf_token(binding, request_id).as_bytes(),
            presented.as_bytes(),
        )
    }
}

/// What a hashed secret is for; part of the hash input.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    ClientSecret,
    AuthorizationCode,
    RefreshToken,
    AccessToken,
    Session,
    PendingAuthorization,
    Csrf,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::ClientSecret => b"client-secret",
            Purpose::AuthorizationCode => b"authorization-code",
            Purpose::RefreshToken => b"refresh-token",
            Purpose::AccessToken => b"access-token",
            Purpose::Session => b"session",
            Purpose::PendingAuthorization => b"pending-authorization",
            Purpose::Csrf => b"csrf",
        }
    }
}

/// Argon2id password hashing (PHC string format) for resource owners.
pub mod password {
    use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
    use argon2::{Algorithm, Argon2, Params, Version};

    fn argon2() -> Argon2<'static> {
        // The OWASP-recommended Argon2id floor: 19 MiB, 2 passes, 1 lane.
        let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    #[derive(Debug, thiserror::Error)]
    #[error("password hashing failed")]
    pub struct HashingFailed;

    /// Hashes `password` with a 16-byte salt supplied by the caller.
    pub fn hash(password: &str, salt: [u8; 16]) -> Result<String, HashingFailed> {
        let salt = SaltString::encode_b64(&salt).map_err(|_| HashingFailed)?;
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|_| HashingFailed)
    }

    /// Verifies `password` against a stored PHC string. A malformed stored hash
    /// verifies nothing.
    pub fn verify(password: &str, stored: &str) -> bool {
        PasswordHash::new(stored).is_ok_and(|parsed| {
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    }

    /// A valid hash of no one's password, verified against when a username is
    /// unknown so that unknown users and wrong passwords take the same time.
    pub fn decoy_hash() -> &'static str {
        "$argon2id$v=19$m=19456,t=2,p=1$dGVzc2VyYWRlY295c2FsdA$3XG/NXCVmfAHgbyCGmDUGgzYRAn9y7PQSSSxNx3H7vo"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let secret = BearerSecret::received("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn hashes_differ_by_purpose_and_key() {
        let a = SecretHasher::new(b"key-a");
        let b = SecretHasher::new(b"key-b");
        let s = "value";
        assert!(
            a.hash(Purpose::Session, s)
                .matches(&a.hash(Purpose::Session, s))
        );
        assert!(
            !a.hash(Purpose::Session, s)
                .matches(&a.hash(Purpose::RefreshToken, s))
        );
        assert!(
            !a.hash(Purpose::Session, s)
                .matches(&b.hash(Purpose::Session, s))
        );
    }

    #[test]
    fn ordered_keys_sort_by_issue_time_and_older_secrets_keep_their_hash() {
        let h = SecretHasher::new(b"k");
        let earlier = BearerSecret::time_ordered(1_700_000_000_000, [0xff; 27]);
        let later = BearerSecret::time_ordered(1_700_000_000_001, [0; 27]);
        assert_eq!(earlier.expose().len(), 44);
        let key = |s: &BearerSecret| h.ordered_key(Purpose::RefreshToken, s.expose());
        assert!(key(&earlier).0 < key(&later).0);
        assert_eq!(
            key(&earlier).0[..6],
            1_700_000_000_000u64.to_be_bytes()[2..]
        );
        assert_eq!(
            key(&earlier).0[6..],
            h.hash(Purpose::RefreshToken, earlier.expose()).0
        );
        // Same time, other purpose: other key.
        assert_ne!(
            key(&earlier),
            h.ordered_key(Purpose::AccessToken, earlier.expose())
        );
        // A 43-character secret of the earlier format, and anything that is
        // not base64url where the time would be: the hash alone.
        let random = BearerSecret::from_random_bytes([7; 32]);
        for other in [random.expose(), "é".repeat(22).as_str(), &"*".repeat(44)] {
            assert_eq!(
                h.ordered_key(Purpose::RefreshToken, other),
                h.hash(Purpose::RefreshToken, other)
            );
        }
    }

    #[test]
    fn issued_shape() {
        let random = BearerSecret::from_random_bytes([0xfb; 32]);
        let ordered = BearerSecret::time_ordered(1_700_000_000_000, [0xfe; 27]);
        assert!(BearerSecret::has_issued_shape(random.expose()));
        assert!(BearerSecret::has_issued_shape(ordered.expose()));
        let too_long = format!("{}A", ordered.expose());
        let padded = format!("{}=", random.expose());
        let not_base64url = format!("{}+", &ordered.expose()[..43]);
        for other in [
            "",
            "abc",
            &too_long,
            &padded,
            &not_base64url,
            &"é".repeat(22),
        ] {
            assert!(!BearerSecret::has_issued_shape(other), "{other:?}");
        }
    }

    #[test]
    fn csrf_tokens_are_bound() {
        let h = SecretHasher::new(b"k");
        let token = h.csrf_token("browser", "req");
        assert!(h.csrf_token_is_valid("browser", "req", &token));
        assert!(!h.csrf_token_is_valid("other", "req", &token));
        assert!(!h.csrf_token_is_valid("browser", "req2", &token));
    }

    #[test]
    fn passwords() {
        let stored = password::hash("correct horse", [7; 16]).unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(password::verify("correct horse", &stored));
        assert!(!password::verify("wrong", &stored));
        assert!(!password::verify("x", "not a hash"));
        // The decoy must be a well-formed hash so that verifying against it costs
        // as much as a real verification.
        assert!(argon2::password_hash::PasswordHash::new(password::decoy_hash()).is_ok());
    }
}
