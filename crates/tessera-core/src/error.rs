//! OAuth protocol errors. `Display` is the RFC wire code; the HTTP edge turns
//! each into a response in exactly one place.

/// Errors of the token endpoint (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// A required parameter is missing, repeated or malformed, or the request
    /// uses more than one client authentication method.
    #[error("invalid_request")]
    InvalidRequest(&'static str),
    /// Client authentication failed (unknown client, wrong secret, wrong
    /// method). Answered with 401; `basic_attempted` adds `WWW-Authenticate: Basic`.
    #[error("invalid_client")]
    InvalidClient {
        description: &'static str,
        basic_attempted: bool,
    },
    /// The grant (code, refresh token) is invalid, expired, revoked, used,
    /// bound to another client or redirect URI, or PKCE verification failed.
    #[error("invalid_grant")]
    InvalidGrant(&'static str),
    /// The client is not registered for this grant type.
    #[error("unauthorized_client")]
    UnauthorizedClient(&'static str),
    /// The grant type is not one this server supports.
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    /// The scope is malformed, unknown, or exceeds what the client or the
    /// original grant allows.
    #[error("invalid_scope")]
    InvalidScope(&'static str),
    /// An internal failure; the cause is logged, never sent.
    #[error("server_error")]
    ServerError,
    /// The storage is unreachable for now; the client may retry.
    #[error("temporarily_unavailable")]
    TemporarilyUnavailable,
}

impl TokenError {
    pub fn description(&self) -> Option<&'static str> {
        match self {
            TokenError::InvalidRequest(d)
            | TokenError::InvalidGrant(d)
            | TokenError::UnauthorizedClient(d)
            | TokenError::InvalidScope(d) => Some(d),
            TokenError::InvalidClient { description, .. } => Some(description),
            TokenError::UnsupportedGrantType => Some("grant_type is not supported"),
            TokenError::ServerError | TokenError::TemporarilyUnavailable => None,
        }
    }
}

/// Errors of the authorization endpoint that are reported to the client by
/// redirecting to its (already validated) redirect URI (RFC 6749 §4.1.2.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    /// Missing, repeated or malformed parameter (including PKCE parameters).
    #[error("invalid_request")]
    InvalidRequest(&'static str),
    /// The client may not use this flow.
    #[error("unauthorized_client")]
    UnauthorizedClient(&'static str),
    /// The resource owner denied the request.
    #[error("access_denied")]
    AccessDenied,
    /// The `response_type` is not supported for this client.
    #[error("unsupported_response_type")]
    UnsupportedResponseType,
    /// The requested scope is invalid, unknown or not allowed to the client.
    #[error("invalid_scope")]
    InvalidScope(&'static str),
    /// `prompt=none`, but the resource owner is not logged in (OpenID
    /// Connect Core §3.1.2.6, the registry of RFC 6749 §11.4).
    #[error("login_required")]
    LoginRequired,
    /// `prompt=none`, but the client has no standing consent for this scope.
    #[error("consent_required")]
    ConsentRequired,
    /// An internal failure.
    #[error("server_error")]
    ServerError,
    #[error("temporarily_unavailable")]
    TemporarilyUnavailable,
}

impl AuthorizeError {
    pub fn description(&self) -> Option<&'static str> {
        match self {
            AuthorizeError::InvalidRequest(d)
            | AuthorizeError::UnauthorizedClient(d)
            | AuthorizeError::InvalidScope(d) => Some(d),
            AuthorizeError::AccessDenied => Some("the resource owner denied the request"),
            AuthorizeError::UnsupportedResponseType => {
                Some("response_type is not supported for this client")
            }
            AuthorizeError::LoginRequired => Some("the resource owner is not logged in"),
            AuthorizeError::ConsentRequired => {
                Some("the resource owner has not consented to this scope")
            }
            AuthorizeError::ServerError | AuthorizeError::TemporarilyUnavailable => None,
        }
    }
}
