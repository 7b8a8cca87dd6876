//! Reading form-encoded request bodies: content type checked, size capped,
//! parsed strictly.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use tessera_core::form::{FormError, FormParams};

/// Request bodies are small forms; anything larger is refused.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    NotAForm,
    TooLarge,
    Unreadable,
    Malformed(FormError),
}

/// A page's form that cannot be read: too large, or anything else wrong.
impl From<BodyError> for crate::service::authorize::PageError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::TooLarge => Self::TooLarge,
            _ => Self::MalformedQuery,
        }
    }
}

impl BodyError {
    pub fn description(&self) -> &'static str {
        match self {
            BodyError::NotAForm => "the body must be application/x-www-form-urlencoded",
            BodyError::TooLarge => "the request body is too large",
            BodyError::Unreadable => "the request body could not be read",
            BodyError::Malformed(FormError::NotUtf8) => "the form is not valid UTF-8",
            BodyError::Malformed(FormError::Repeated(_)) => "a parameter is repeated",
        }
    }
}

/// Reads the body as `application/x-www-form-urlencoded` (RFC 6749 §4.1.3, §3.2).
pub async fn read_form(headers: &HeaderMap, body: Body) -> Result<FormParams, BodyError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(BodyError::NotAForm);
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|error| {
            let too_large = error.into_inner().is::<http_body_util::LengthLimitError>();
            if too_large {
                BodyError::TooLarge
            } else {
                BodyError::Unreadable
            }
        })?;
    FormParams::parse(&bytes).map_err(BodyError::Malformed)
}
