//! What a handler learns of a validated access token.

use std::collections::BTreeSet;

/// A validated access token (RFC 9068 §2.2 claims, or an RFC 7662 answer).
#[derive(Debug, Clone, PartialEq)]
pub struct AccessToken {
    /// `sub`: the resource owner, or the client itself for client
    /// credentials. An introspection answer without `sub` (optional, RFC 7662
    /// §2.2) gives its `client_id` here instead; one with neither is refused.
    pub subject: String,
    /// `client_id`: the client the token was issued to.
    pub client_id: Option<String>,
    /// `scope`, split on spaces.
    pub scopes: BTreeSet<String>,
    /// `exp`, seconds since the Unix epoch. Always present for a JWT (RFC
    /// 9068 §2.2 requires it). `None` when an introspection answer omits it
    /// (optional, RFC 7662 §2.2): the token then has no known expiry, it is
    /// valid while the issuer says it is active, and that answer is reused
    /// for at most the introspection cache's TTL.
    pub expires_at: Option<i64>,
    /// Every claim, for anything else a handler needs.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl AccessToken {
    /// From the claims of a JWT, which must carry `sub` and `exp`.
    pub(crate) fn from_claims(claims: serde_json::Map<String, serde_json::Value>) -> Option<Self> {
        let subject = claims.get("sub")?.as_str()?.to_owned();
        let expires_at = claims.get("exp")?.as_i64()?;
        Some(Self::with(subject, Some(expires_at), claims))
    }

    /// From an active introspection answer, where `sub` and `exp` are optional
    /// (RFC 7662 §2.2); present but malformed, they are refused.
    pub(crate) fn from_introspection(
        answer: serde_json::Map<String, serde_json::Value>,
    ) -> Option<Self> {
        let subject = match answer.get("sub") {
            Some(sub) => sub.as_str()?,
            None => answer.get("client_id")?.as_str()?,
        }
        .to_owned();
        let expires_at = match answer.get("exp") {
            Some(exp) => Some(exp.as_i64()?),
            None => None,
        };
        Some(Self::with(subject, expires_at, answer))
    }

    fn with(
        subject: String,
        expires_at: Option<i64>,
        claims: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        let client_id = claims
            .get("client_id")
            .and_then(|c| c.as_str())
            .map(str::to_owned);
        let scopes = claims
            .get("scope")
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        AccessToken {
            subject,
            client_id,
            scopes,
            expires_at,
            claims,
        }
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }

    pub fn has_all<S: AsRef<str>>(&self, scopes: &[S]) -> bool {
        scopes.iter().all(|s| self.has_scope(s.as_ref()))
    }

    pub fn has_any<S: AsRef<str>>(&self, scopes: &[S]) -> bool {
        scopes.iter().any(|s| self.has_scope(s.as_ref()))
    }
}
