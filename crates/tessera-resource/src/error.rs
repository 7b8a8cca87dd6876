//! Why a request was refused, and its RFC 6750 §3 answer.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// A refusal. `Display` never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No bearer token at all: 401 with a bare challenge (RFC 6750 §3.1: no
    /// error code when the request lacks authentication information).
    #[error("no bearer token")]
    Missing,
    /// The request is malformed: two ways of sending the token, or a header
    /// that is not `Bearer <b64token>` (RFC 6750 §3.1 `invalid_request`, 400).
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// Expired, revoked, malformed, of another issuer or audience, or signed
    /// with an unknown key (`invalid_token`, 401).
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// Valid, but without the scopes this resource needs
    /// (`insufficient_scope`, 403, with the scopes it needs).
    #[error("insufficient scope: needs {0}")]
    InsufficientScope(String),
    /// The issuer (JWKS or introspection) could not be reached: 503.
    #[error("the authorization server is unavailable")]
    Unavailable,
}

impl TokenError {
    /// The response for this refusal; `realm` names the protected resource.
    /// Characters a quoted-string cannot carry as they are (control
    /// characters, quotes, backslashes) are left out of the challenge, so it
    /// is always sent; [`ValidatorBuilder::discover`] refuses such a realm.
    ///
    /// [`ValidatorBuilder::discover`]: crate::ValidatorBuilder::discover
    pub fn response(&self, realm: &str) -> Response {
        let quoted = |value: &str| {
            value
                .chars()
                .filter(|c| !c.is_control() && !matches!(c, '\\' | '"'))
                .collect::<String>()
        };
        let realm = quoted(realm);
        let (status, challenge) = match self {
            TokenError::Missing => (
                StatusCode::UNAUTHORIZED,
                format!("Bearer realm=\"{realm}\""),
            ),
            TokenError::Malformed(description) => (
                StatusCode::BAD_REQUEST,
                format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_request\", error_description=\"{description}\""
                ),
            ),
            TokenError::Invalid(description) => (
                StatusCode::UNAUTHORIZED,
                format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{description}\""
                ),
            ),
            TokenError::InsufficientScope(scope) => (
                StatusCode::FORBIDDEN,
                format!(
                    "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{}\"",
                    quoted(scope)
                ),
            ),
            TokenError::Unavailable => {
                let mut response = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "authorization server unavailable",
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return response;
            }
        };
        let mut response = status.into_response();
        // RFC 9110 §15.5.2: a 401 must carry a challenge. After the filtering
        // above the fallback is never needed, but a bare one beats none.
        let value = HeaderValue::from_str(&challenge)
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
        response
    }
}

/// Failures of setting a validator up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("invalid issuer URL: {0}")]
    InvalidIssuer(String),
    #[error("cannot fetch the issuer's metadata: {0}")]
    Metadata(String),
    #[error("the issuer's metadata lacks {0}")]
    MissingEndpoint(&'static str),
    /// The realm cannot be sent in a `WWW-Authenticate` quoted-string.
    #[error("invalid realm: {0}")]
    InvalidRealm(&'static str),
}
