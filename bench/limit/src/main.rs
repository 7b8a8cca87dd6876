//! The limit program of `bench/run.sh`: the least work a `client_credentials`
//! token endpoint can do. It parses the same form, checks the Basic header
//! against an in-memory map in constant time and signs the same ES256 JWT
//! with aws-lc-rs, its key parsed once. No storage, no tenants, no logs:
//! what no real server can beat on this machine.
//!
//! Usage: `bench-limit ADDR CLIENT_ID CLIENT_SECRET`.

#![allow(clippy::expect_used)] // A set-up failure of a benchmark tool should abort it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

struct Limit {
    clients: HashMap<String, Vec<u8>>,
    key: EcdsaKeyPair,
    header: String,
    random: SystemRandom,
    issuer: String,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, id, secret] = args.as_slice() else {
        eprintln!("usage: bench-limit ADDR CLIENT_ID CLIENT_SECRET");
        std::process::exit(2);
    };
    let random = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random)
        .expect("key generation");
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .expect("key parsing");
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"at+jwt","kid":"limit"}"#);
    let limit = Arc::new(Limit {
        clients: HashMap::from([(id.clone(), secret.clone().into_bytes())]),
        key,
        header,
        random,
        issuer: format!("http://{addr}/t/bench"),
    });
    let app = Router::new()
        .route("/t/bench/token", post(token))
        .with_state(limit);
    // Returning from main on SIGTERM, rather than dying of it, lets a build
    // instrumented for profile-guided optimisation write its profile
    // (bench/pgo.sh). Handled before the port opens: bench/run.sh may stop
    // the program as soon as it accepts.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            terminate.recv().await;
        })
        .await
        .expect("serve");
}

async fn token(State(limit): State<Arc<Limit>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut grant_type = None;
    let mut scope = None;
    for (name, value) in url::form_urlencoded::parse(&body) {
        match &*name {
            "grant_type" => grant_type = Some(value),
            "scope" => scope = Some(value),
            _ => {}
        }
    }
    if grant_type.as_deref() != Some("client_credentials") {
        return error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    let Some(client_id) = authenticate(&limit, &headers) else {
        return error(StatusCode::UNAUTHORIZED, "invalid_client");
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut jti = [0u8; 16];
    let _ = limit.random.fill(&mut jti);
    let scope = scope.unwrap_or_default();
    let claims = serde_json::json!({
        "iss": limit.issuer, "sub": client_id, "aud": limit.issuer, "exp": now + 900,
        "iat": now, "jti": URL_SAFE_NO_PAD.encode(jti), "client_id": client_id, "scope": scope,
    });
    let mut jwt = limit.header.clone();
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut jwt);
    let Ok(signature) = limit.key.sign(&limit.random, jwt.as_bytes()) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error");
    };
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut jwt);
    let body = serde_json::json!({
        "access_token": jwt, "token_type": "Bearer", "expires_in": 900, "scope": scope,
    });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// The client id, if the Basic header names a known client and its secret.
fn authenticate(limit: &Limit, headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let expected = limit.clients.get(id)?;
    aws_lc_rs::constant_time::verify_slices_are_equal(expected, secret.as_bytes()).ok()?;
    Some(id.to_owned())
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"error":"{code}"}}"#),
    )
        .into_response()
}
