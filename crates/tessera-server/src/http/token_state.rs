//! `POST {issuer}/revoke` (RFC 7009) and `POST {issuer}/introspect` (RFC 7662,
//! RFC 9701).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tessera_core::TokenError;

use super::client_request::ClientRequest;
use super::errors::{no_store, token_error_response};
use super::json::json_response;
use crate::AppState;
use crate::service::token_state::{TypeHint, introspect, introspection_jwt, revoke};

const INTROSPECTION_JWT: &str = "application/token-introspection+jwt";

pub async fn revocation(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    let now = super::now();
    let outcome = async {
        let request = ClientRequest::read(&state, path, request).await?;
        let repeated = |_| TokenError::InvalidRequest("a request parameter is repeated");
        let token = request
            .form
            .single("token")
            .map_err(repeated)?
            .ok_or(TokenError::InvalidRequest("token is required"))?;
        let hint = TypeHint::parse(request.form.single("token_type_hint").map_err(repeated)?);
        revoke(&state, &request.tenant, &request.client, token, hint, now).await
    }
    .await;
    match outcome {
        // RFC 7009 §2.2: 200, also for tokens that were unknown or invalid.
        Ok(()) => {
            let mut response = StatusCode::OK.into_response();
            no_store(&mut response);
            response
        }
        Err(error) => token_error_response(error),
    }
}

pub async fn introspection(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    let now = super::now();
    let wants_jwt = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .any(|media| media.trim().starts_with(INTROSPECTION_JWT))
        });
    let outcome = async {
        let request = ClientRequest::read(&state, path, request).await?;
        // RFC 7662 §2.1: the caller is a protected resource, a confidential client.
        if request.client.is_public() {
            return Err(TokenError::InvalidClient {
                description: "introspection requires a confidential client",
                basic_attempted: false,
            });
        }
        let repeated = |_| TokenError::InvalidRequest("a request parameter is repeated");
        let token = request
            .form
            .single("token")
            .map_err(repeated)?
            .ok_or(TokenError::InvalidRequest("token is required"))?;
        let hint = TypeHint::parse(request.form.single("token_type_hint").map_err(repeated)?);
        let answer = introspect(&state, &request.tenant, &request.client, token, hint, now).await?;
        if wants_jwt {
            let jwt =
                introspection_jwt(&state, &request.tenant, &request.client, &answer, now).await?;
            let mut response = jwt.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(INTROSPECTION_JWT),
            );
            Ok(response)
        } else {
            // An answer about an active token is a few hundred bytes.
            json_response(&answer, 1024)
        }
    }
    .await;
    match outcome {
        Ok(mut response) => {
            no_store(&mut response);
            response
        }
        Err(error) => token_error_response(error),
    }
}
