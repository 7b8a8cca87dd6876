//! What a handler learns of a validated access token.

use std::collections::BTreeSet;

/// A validated access token (RFC 9068 §2.2 claims, or an RFC 7662 answer).
#[derive(Debug, Clone, PartialEq)]
pub struct AccessToken {
    /// `sub`: the resource owner, or the client itself for client credentials.
    pub subject: String,
    /// `client_id`: the client the token was issued to.
    pub client_id: Option<String>,
    /// `scope`, split on spaces.
    pub scopes: BTreeSet<String>,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: i64,
    /// Every claim, for anything else a handler needs.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl AccessToken {
    pub(crate) fn from_claims(claims: serde_json::Map<String, serde_json::Value>) -> Option<Self> {
        let subject = claims.get("sub")?.as_str()?.to_owned();
        let expires_at = claims.get("exp")?.as_i64()?;
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
        Some(AccessToken {
            subject,
            client_id,
            scopes,
            expires_at,
            claims,
        })
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
