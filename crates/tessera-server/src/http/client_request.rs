//! What the token, revocation and introspection endpoints share: a
//! form-encoded POST from an authenticated client (RFC 6749 §2.3, §3.2).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tessera_core::form::{FormParams, decode_component};
use tessera_core::secret::BearerSecret;
use tessera_core::{Client, Tenant, TokenError};

use super::body::{BodyError, read_form};
use crate::AppState;
use crate::service::client_auth::{PresentedCredentials, authenticate};

/// A form POSTed by a client that has been authenticated.
pub struct ClientRequest {
    pub tenant: Tenant,
    pub form: FormParams,
    pub client: std::sync::Arc<Client>,
}

impl ClientRequest {
    /// Takes the request whole: axum's `HeaderMap` extractor would copy
    /// every header of every token request.
    pub async fn read(
        state: &AppState,
        path: Result<Path<String>, PathRejection>,
        request: Request,
    ) -> Result<Self, TokenError> {
        let tenant = super::tenant(state, path).await?;
        let (parts, body) = request.into_parts();
        let headers = &parts.headers;
        let form = read_form(headers, body)
            .await
            .map_err(|error| match error {
                BodyError::TooLarge => TokenError::InvalidRequest("the request body is too large"),
                other => TokenError::InvalidRequest(other.description()),
            })?;
        // RFC 6749 §3.2: parameters MUST NOT be included more than once.
        if form.first_repeated().is_some() {
            return Err(TokenError::InvalidRequest(
                "a request parameter is repeated",
            ));
        }
        let presented = presented_credentials(headers, &form)?;
        let client = authenticate(state, &tenant, presented).await?;
        Ok(ClientRequest {
            tenant,
            form,
            client,
        })
    }
}

/// Collects the client's credentials from the `Authorization` header and the
/// body. RFC 6749 §2.3: a client MUST NOT use more than one method at once.
fn presented_credentials(
    headers: &HeaderMap,
    form: &FormParams,
) -> Result<PresentedCredentials, TokenError> {
    let repeated = |_| TokenError::InvalidRequest("a request parameter is repeated");
    let body_id = form.single("client_id").map_err(repeated)?;
    let body_secret = form.single("client_secret").map_err(repeated)?;
    let Some(authorization) = headers.get(header::AUTHORIZATION) else {
        return Ok(match (body_id, body_secret) {
            (Some(id), Some(secret)) => PresentedCredentials::Post {
                client_id: id.to_owned(),
                secret: BearerSecret::received(secret),
            },
            (Some(id), None) => PresentedCredentials::IdOnly {
                client_id: id.to_owned(),
            },
            (None, _) => PresentedCredentials::Nothing,
        });
    };
    let malformed = TokenError::InvalidClient {
        description: "the Authorization header is malformed",
        basic_attempted: true,
    };
    let (client_id, secret) = parse_basic(authorization.as_bytes()).ok_or(malformed)?;
    if body_secret.is_some() {
        return Err(TokenError::InvalidRequest(
            "use one client authentication method, not both Basic and client_secret",
        ));
    }
    if body_id.is_some_and(|id| id != client_id) {
        return Err(TokenError::InvalidRequest(
            "client_id in the body differs from the one in the Authorization header",
        ));
    }
    Ok(PresentedCredentials::Basic {
        client_id,
        secret: BearerSecret::received(secret),
    })
}

/// Parses `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1,
/// RFC 7617).
fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let id = decode_component(&decoded[..colon]).ok()?;
    let secret = decode_component(&decoded[colon + 1..]).ok()?;
    if id.is_empty() {
        return None;
    }
    Some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_is_form_urldecoded() {
        let header = format!("Basic {}", STANDARD.encode("my%3Aclient:s%2Bcr+t"));
        assert_eq!(
            parse_basic(header.as_bytes()),
            Some(("my:client".to_owned(), "s+cr t".to_owned()))
        );
        assert_eq!(parse_basic(b"Basic !!!"), None);
        assert_eq!(parse_basic(b"Bearer abc"), None);
        let no_colon = format!("Basic {}", STANDARD.encode("abc"));
        assert_eq!(parse_basic(no_colon.as_bytes()), None);
    }
}
