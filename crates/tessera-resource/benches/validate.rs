//! Validation cost per request once the JWKS is cached: what a resource
//! server pays on every call. Run with `cargo bench -p tessera-resource`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark fails loudly.

use axum::Router;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use tessera_core::jwt::{SigningKey, generate_key};
use tessera_resource::{RequireScopes, Validator};

fn validation(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key = generate_key().unwrap();
    let signer = SigningKey::from_pkcs8(&key.kid, &key.private_pkcs8).unwrap();
    let (issuer, validator) = runtime.block_on(async {
        // A minimal issuer on 127.0.0.1: metadata and JWKS, nothing else.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}/bench", listener.local_addr().unwrap());
        let metadata = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
        let jwks: serde_json::Value =
            json!({"keys": [serde_json::from_str::<serde_json::Value>(&key.public_jwk).unwrap()]});
        let app = Router::new()
            .route(
                "/.well-known/oauth-authorization-server/bench",
                get(move || async move { axum::Json(metadata) }),
            )
            .route("/bench/jwks", get(move || async move { axum::Json(jwks) }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let validator = Validator::builder(&issuer, "bench-api")
            .discover()
            .await
            .unwrap();
        (issuer, validator)
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = signer
        .sign(&json!({
            "iss": issuer, "sub": "alice", "aud": "bench-api", "exp": now + 3600, "iat": now,
            "jti": "bench", "client_id": "bench-client", "scope": "contacts:read contacts:write",
        }))
        .unwrap();
    // Warm the key cache, and make sure the token is actually valid.
    runtime.block_on(validator.validate(&token)).unwrap();
    let fetches = validator.jwks_fetches();

    c.bench_function("validate ES256 access token (warm JWKS cache)", |b| {
        b.to_async(&runtime)
            .iter(|| async { validator.validate(&token).await.unwrap() });
    });
    let guard = RequireScopes::all(["contacts:read"]);
    c.bench_function("validate + scope check", |b| {
        b.to_async(&runtime).iter(|| async {
            let valid = validator.validate(&token).await.unwrap();
            guard.check(&valid).unwrap();
        });
    });
    assert_eq!(validator.jwks_fetches(), fetches, "the cache stayed warm");
}

criterion_group!(benches, validation);
criterion_main!(benches);
