//! `POST {issuer}/token` (RFC 6749 §3.2).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use tessera_core::TokenError;

use super::client_request::ClientRequest;
use super::errors::{no_store, token_error_response};
use super::json::json_response;
use crate::AppState;
use crate::service::token::{TokenParams, TokenResponse, exchange};

pub async fn token(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    super::ClientAddress(address): super::ClientAddress,
    request: Request,
) -> Response {
    let now = super::now();
    match handle(&state, path, request, address, now)
        .await
        .and_then(|response| token_response(&response))
    {
        Ok(mut response) => {
            no_store(&mut response);
            response
        }
        Err(error) => token_error_response(error),
    }
}

async fn handle(
    state: &AppState,
    path: Result<Path<String>, PathRejection>,
    request: Request,
    address: Option<std::net::IpAddr>,
    now: tessera_core::UnixTime,
) -> Result<crate::service::token::TokenResponse, TokenError> {
    let ClientRequest {
        tenant,
        form,
        client,
    } = ClientRequest::read(state, path, request).await?;
    let single = |name| {
        form.single(name)
            .map_err(|_| TokenError::InvalidRequest("a request parameter is repeated"))
    };
    let params = TokenParams {
        grant_type: single("grant_type")?,
        code: single("code")?,
        redirect_uri: single("redirect_uri")?,
        code_verifier: single("code_verifier")?,
        refresh_token: single("refresh_token")?,
        scope: single("scope")?,
        username: single("username")?,
        password: single("password")?,
        client_address: address,
    };
    exchange(state, &tenant, &client, &params, now).await
}

/// The JSON of a successful response (RFC 6749 §5.1), in a buffer sized
/// for its tokens.
fn token_response(response: &TokenResponse) -> Result<Response, TokenError> {
    let tokens = response.access_token.len()
        + response.refresh_token.as_ref().map_or(0, String::len)
        + response.scope.len();
    json_response(response, tokens + 128)
}
