//! The one place where protocol errors become HTTP responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tessera_core::TokenError;

use super::TenantLookup;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_description: Option<&'a str>,
}

/// A JSON error body (RFC 6749 §5.2) that must not be cached.
pub fn json_error(status: StatusCode, error: &str, description: Option<&str>) -> Response {
    let mut response = (
        status,
        axum::Json(ErrorBody {
            error,
            error_description: description,
        }),
    )
        .into_response();
    no_store(&mut response);
    response
}

/// RFC 6749 §5.1: token responses carry `Cache-Control: no-store` and `Pragma: no-cache`.
pub fn no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

impl From<TenantLookup> for TokenError {
    fn from(lookup: TenantLookup) -> Self {
        match lookup {
            TenantLookup::Unknown => TokenError::InvalidRequest("unknown tenant"),
            TenantLookup::Unavailable => TokenError::TemporarilyUnavailable,
        }
    }
}

/// RFC 6749 §5.2 status codes: `invalid_client` is 401 (with
/// `WWW-Authenticate` when the client tried HTTP authentication), the rest 400.
pub fn token_error_response(error: TokenError) -> Response {
    let code = error.to_string();
    let status = match &error {
        TokenError::InvalidClient { .. } => StatusCode::UNAUTHORIZED,
        TokenError::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        TokenError::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = json_error(status, &code, error.description());
    let headers = response.headers_mut();
    match error {
        TokenError::InvalidClient {
            basic_attempted: true,
            ..
        } => {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tessera\", charset=\"UTF-8\""),
            );
        }
        TokenError::TemporarilyUnavailable => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    response
}
