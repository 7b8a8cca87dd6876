//! Authorization server metadata (RFC 8414) and the JWK Set (RFC 7517).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tessera_core::TokenError;

use super::errors::token_error_response;
use crate::AppState;
use crate::service::ServiceError;

#[derive(Serialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    revocation_endpoint: String,
    introspection_endpoint: String,
    jwks_uri: String,
    scopes_supported: Vec<String>,
    response_types_supported: Vec<&'static str>,
    response_modes_supported: Vec<&'static str>,
    grant_types_supported: Vec<&'static str>,
    token_endpoint_auth_methods_supported: [&'static str; 3],
    revocation_endpoint_auth_methods_supported: [&'static str; 3],
    introspection_endpoint_auth_methods_supported: [&'static str; 2],
    introspection_signing_alg_values_supported: [&'static str; 1],
    code_challenge_methods_supported: [&'static str; 1],
    authorization_response_iss_parameter_supported: bool,
}

/// RFC 8414 §3: served at `/.well-known/oauth-authorization-server/t/{tenant}`
/// (path insertion) and under the issuer.
pub async fn metadata(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let tenant = match super::tenant(&state, path).await {
        Ok(tenant) => tenant,
        Err(lookup) => return not_found_or(lookup),
    };
    let scopes = match state.store.list_scopes(tenant.id).await {
        Ok(scopes) => scopes,
        Err(error) => return token_error_response(ServiceError::from(error).into()),
    };
    let clients = match state.store.list_clients(tenant.id).await {
        Ok(clients) => clients,
        Err(error) => return token_error_response(ServiceError::from(error).into()),
    };
    // Exactly what this tenant offers: the legacy grants only where enabled.
    let mut response_types_supported = vec!["code"];
    let mut response_modes_supported = vec!["query"];
    let mut grant_types_supported =
        vec!["authorization_code", "client_credentials", "refresh_token"];
    if tenant.settings.allow_implicit {
        response_types_supported.push("token");
        // RFC 6749 §4.2.2: only the implicit grant answers in the fragment;
        // a code comes back in the query (§4.1.2).
        response_modes_supported.push("fragment");
        grant_types_supported.push("implicit");
    }
    if clients
        .iter()
        .any(|c| c.allows_grant(tessera_core::GrantType::Password))
    {
        grant_types_supported.push("password");
    }
    let issuer = state.issuer(&tenant.name);
    let metadata = Metadata {
        authorization_endpoint: format!("{issuer}/authorize"),
        token_endpoint: format!("{issuer}/token"),
        revocation_endpoint: format!("{issuer}/revoke"),
        introspection_endpoint: format!("{issuer}/introspect"),
        jwks_uri: format!("{issuer}/jwks"),
        scopes_supported: scopes.iter().map(|s| s.name.to_string()).collect(),
        response_types_supported,
        response_modes_supported,
        grant_types_supported,
        token_endpoint_auth_methods_supported: [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        // Public clients may revoke their own tokens; only confidential ones introspect.
        revocation_endpoint_auth_methods_supported: [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        introspection_endpoint_auth_methods_supported: [
            "client_secret_basic",
            "client_secret_post",
        ],
        // RFC 9701 §7.
        introspection_signing_alg_values_supported: ["ES256"],
        code_challenge_methods_supported: ["S256"],
        // RFC 9207 §3.
        authorization_response_iss_parameter_supported: true,
        issuer,
    };
    cacheable(axum::Json(metadata).into_response())
}

/// The tenant's published signing keys.
pub async fn jwks(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let tenant = match super::tenant(&state, path).await {
        Ok(tenant) => tenant,
        Err(lookup) => return not_found_or(lookup),
    };
    let keys = match state.published_keys(tenant.id, super::now()).await {
        Ok(keys) => keys,
        Err(error) => return token_error_response(ServiceError::from(error).into()),
    };
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .filter_map(|key| serde_json::from_str(&key.public_jwk).ok())
        .collect();
    let mut response = axum::Json(serde_json::json!({ "keys": keys })).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    cacheable(response)
}

/// A short public cache: resource servers refetch the JWKS when they meet an
/// unknown kid, so a freshly rotated key is found at once anyway.
fn cacheable(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}

fn not_found_or(lookup: super::TenantLookup) -> Response {
    match lookup {
        super::TenantLookup::Unknown => super::json_error(
            StatusCode::NOT_FOUND,
            "invalid_request",
            Some("unknown tenant"),
        ),
        super::TenantLookup::Unavailable => {
            token_error_response(TokenError::TemporarilyUnavailable)
        }
    }
}
