//! Proof Key for Code Exchange (RFC 7636), `S256` only.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A `code_challenge` made with `S256`: the base64url (no padding) SHA-256 of
/// the verifier, so always 43 characters (RFC 7636 §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeChallenge(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PkceError {
    /// RFC 7636 §4.3 lets a client omit the method and mean `plain`; Tessera
    /// refuses `plain` (RFC 9700 §2.1.1), so any method other than S256 fails.
    #[error("code_challenge_method must be S256")]
    UnsupportedMethod,
    #[error("code_challenge must be the 43-character base64url SHA-256 of the verifier")]
    MalformedChallenge,
}

impl CodeChallenge {
    /// Parses the challenge and its method from an authorization request.
    pub fn parse_s256(challenge: &str, method: Option<&str>) -> Result<Self, PkceError> {
        // RFC 7636 §4.3: a missing method defaults to "plain", which we refuse.
        if method != Some("S256") {
            return Err(PkceError::UnsupportedMethod);
        }
        let well_formed = challenge.len() == 43
            && URL_SAFE_NO_PAD
                .decode(challenge)
                .is_ok_and(|digest| digest.len() == 32);
        if !well_formed {
            return Err(PkceError::MalformedChallenge);
        }
        Ok(CodeChallenge(challenge.to_owned()))
    }

    /// Restores a challenge that was validated before it was stored.
    pub fn from_stored(challenge: String) -> Self {
        CodeChallenge(challenge)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// RFC 7636 §4.6: BASE64URL(SHA256(ASCII(code_verifier))) == code_challenge,
    /// where the verifier is 43 to 128 unreserved characters (§4.1).
    pub fn is_satisfied_by(&self, verifier: &str) -> bool {
        let well_formed = (43..=128).contains(&verifier.len())
            && verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if !well_formed {
            return false;
        }
        let digest = crate::crypto::sha256(verifier.as_bytes());
        let computed = URL_SAFE_NO_PAD.encode(digest);
        crate::secret::constant_time_eq(computed.as_bytes(), self.0.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_appendix_b() {
        let challenge = CodeChallenge::parse_s256(CHALLENGE, Some("S256")).unwrap();
        assert!(challenge.is_satisfied_by(VERIFIER));
        assert!(!challenge.is_satisfied_by(&VERIFIER.replace('d', "e")));
        assert!(!challenge.is_satisfied_by("short"));
    }

    #[test]
    fn plain_and_missing_method_refused() {
        assert_eq!(
            CodeChallenge::parse_s256(CHALLENGE, Some("plain")),
            Err(PkceError::UnsupportedMethod)
        );
        assert_eq!(
            CodeChallenge::parse_s256(CHALLENGE, None),
            Err(PkceError::UnsupportedMethod)
        );
        assert_eq!(
            CodeChallenge::parse_s256("abc", Some("S256")),
            Err(PkceError::MalformedChallenge)
        );
    }
}
