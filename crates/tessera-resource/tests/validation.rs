//! tessera-resource against a real running Tessera.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tessera_core::jwt::SigningKey;
use tessera_core::{AppType, UnixTime};
use tessera_resource::{AccessToken, BearerLayer, RequireScopes, Validator};
use tessera_server::AppState;
use tessera_server::service::admin::{self, NewClient};
use tokio::net::TcpListener;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Issuer {
    base_url: String,
    state: AppState,
    _dir: tempfile::TempDir,
}

impl Issuer {
    fn issuer(&self, tenant: &str) -> String {
        format!("{}/t/{tenant}", self.base_url)
    }

    /// A client-credentials client with the given scopes and audiences.
    async fn client(
        &self,
        tenant: &str,
        scopes: &[&str],
        audiences: &[&str],
        opaque: bool,
    ) -> (String, String) {
        let mut request = NewClient::of_type("svc", AppType::M2m);
        request.scopes = scopes.iter().map(|s| s.to_string()).collect();
        request.audiences = audiences.iter().map(|s| s.to_string()).collect();
        if opaque {
            request.token_format = tessera_core::TokenFormat::Opaque;
        }
        let created = admin::create_client(&self.state, tenant, request, UnixTime(now()))
            .await
            .unwrap();
        (
            created.client.client_id.to_string(),
            created.secret.unwrap().expose().to_owned(),
        )
    }

    async fn token(&self, tenant: &str, client: &(String, String), scope: &str) -> String {
        let body: Value = reqwest::Client::new()
            .post(format!("{}/token", self.issuer(tenant)))
            .basic_auth(&client.0, Some(&client.1))
            .form(&[("grant_type", "client_credentials"), ("scope", scope)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// The tenant's signing key and its public JWK, for a forger who stole
    /// nothing but could choose the claims as they wish.
    async fn key(&self, tenant: &str) -> (SigningKey, Value) {
        let t = self
            .state
            .store
            .tenant_by_name(tenant)
            .await
            .unwrap()
            .unwrap();
        let keys = self
            .state
            .store
            .published_keys(t.id, UnixTime(now()))
            .await
            .unwrap();
        let signer = SigningKey::from_pkcs8(&keys[0].kid, &keys[0].private_pkcs8).unwrap();
        (signer, serde_json::from_str(&keys[0].public_jwk).unwrap())
    }

    async fn sign(&self, tenant: &str, claims: &Value) -> String {
        self.key(tenant).await.0.sign(claims).unwrap()
    }
}

async fn spawn_issuer() -> Issuer {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = tessera_store::SqliteStore::connect(&url, &Default::default())
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::new(Arc::new(store), &base_url).await.unwrap();
    let config = tessera_server::ServerConfig::default();
    let router = tessera_server::router(state.clone(), &config);
    tokio::spawn(async move {
        tessera_server::serve(listener, router, &config, std::future::pending()).await
    });
    for tenant in ["acme", "other"] {
        admin::create_tenant(&state, tenant, UnixTime(now()))
            .await
            .unwrap();
        for scope in ["contacts:read", "contacts:write"] {
            admin::create_scope(&state, tenant, scope, "")
                .await
                .unwrap();
        }
    }
    Issuer {
        base_url,
        state,
        _dir: dir,
    }
}

/// A protected API on port 0: GET needs contacts:read, POST contacts:write.
async fn spawn_api(validator: Validator) -> String {
    let app = Router::new()
        .route(
            "/contacts",
            get(|token: AccessToken| async move { token.subject }),
        )
        .route_layer(RequireScopes::all(["contacts:read"]))
        .merge(
            Router::new()
                .route("/contacts", post(|| async { "created" }))
                .route_layer(RequireScopes::any(["contacts:write"])),
        )
        .layer(BearerLayer::new(validator));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/contacts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn call(url: &str, token: Option<&str>) -> (u16, String, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, challenge, response.text().await.unwrap())
}

fn assert_invalid(answer: &(u16, String, String), token: &str, what: &str) {
    assert_eq!(answer.0, 401, "{what}: {answer:?}");
    assert!(
        answer.1.starts_with("Bearer realm=\"contacts-api\""),
        "{what}: {}",
        answer.1
    );
    assert!(
        answer.1.contains("error=\"invalid_token\""),
        "{what}: {}",
        answer.1
    );
    assert!(
        !answer.1.contains(token) && !answer.2.contains(token),
        "{what}: the token is echoed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_validation_accepts_good_tokens_and_refuses_the_rest() {
    let tessera = spawn_issuer().await;
    let issuer = tessera.issuer("acme");
    let validator = Validator::builder(&issuer, "contacts-api")
        .discover()
        .await
        .unwrap();
    let api = spawn_api(validator.clone()).await;
    let client = tessera
        .client(
            "acme",
            &["contacts:read", "contacts:write"],
            &["contacts-api"],
            false,
        )
        .await;

    // Valid.
    let token = tessera.token("acme", &client, "contacts:read").await;
    let (status, _, body) = call(&api, Some(&token)).await;
    assert_eq!((status, body.as_str()), (200, client.0.as_str()));

    // Missing: a bare challenge, no error code (RFC 6750 §3.1).
    let (status, challenge, _) = call(&api, None).await;
    assert_eq!(
        (status, challenge.as_str()),
        (401, "Bearer realm=\"contacts-api\"")
    );

    // Malformed.
    for header in ["Bearer", "Bearer a b", "Bearer ä"] {
        let response = reqwest::Client::new()
            .get(&api)
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{header}");
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_request")
        );
    }

    // Insufficient scope on POST.
    let response = reqwest::Client::new()
        .post(&api)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains("scope=\"contacts:write\""),
        "{challenge}"
    );

    let claims = |overrides: Value| {
        let mut base = json!({
            "iss": issuer, "sub": "alice", "aud": "contacts-api", "exp": now() + 300, "iat": now(),
            "jti": "j1", "client_id": client.0, "scope": "contacts:read"
        });
        for (k, v) in overrides.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    };
    // Sanity: the forging helper makes tokens that pass when nothing is wrong.
    let good = tessera.sign("acme", &claims(json!({}))).await;
    assert_eq!(call(&api, Some(&good)).await.0, 200);

    let expired = tessera
        .sign("acme", &claims(json!({"exp": now() - 120})))
        .await;
    assert_invalid(&call(&api, Some(&expired)).await, &expired, "expired");
    let wrong_issuer = tessera
        .sign("acme", &claims(json!({"iss": "https://evil.example"})))
        .await;
    assert_invalid(
        &call(&api, Some(&wrong_issuer)).await,
        &wrong_issuer,
        "wrong issuer",
    );
    let wrong_audience = tessera
        .sign("acme", &claims(json!({"aud": "another-api"})))
        .await;
    assert_invalid(
        &call(&api, Some(&wrong_audience)).await,
        &wrong_audience,
        "wrong audience",
    );
    let not_yet = tessera
        .sign("acme", &claims(json!({"nbf": now() + 600})))
        .await;
    assert_invalid(&call(&api, Some(&not_yet)).await, &not_yet, "not yet valid");

    // A real token of the same issuer without our audience.
    let elsewhere = tessera.client("acme", &["contacts:read"], &[], false).await;
    let elsewhere_token = tessera.token("acme", &elsewhere, "contacts:read").await;
    assert_invalid(
        &call(&api, Some(&elsewhere_token)).await,
        &elsewhere_token,
        "issuer audience",
    );

    // Another tenant's token, with the right audience.
    let other_client = tessera
        .client("other", &["contacts:read"], &["contacts-api"], false)
        .await;
    let other_token = tessera.token("other", &other_client, "contacts:read").await;
    assert_invalid(
        &call(&api, Some(&other_token)).await,
        &other_token,
        "another tenant",
    );

    // Tampered payload.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD
        .encode(claims(json!({"scope": "contacts:read contacts:write"})).to_string());
    let tampered = parts.join(".");
    assert_invalid(&call(&api, Some(&tampered)).await, &tampered, "tampered");

    // alg: none.
    let jwk = tessera.key("acme").await.1;
    let kid = jwk["kid"].as_str().unwrap();
    let none_header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "at+jwt", "kid": kid}).to_string());
    let unsigned = format!(
        "{none_header}.{}.",
        URL_SAFE_NO_PAD.encode(claims(json!({})).to_string())
    );
    assert_invalid(&call(&api, Some(&unsigned)).await, &unsigned, "alg none");

    // HS256 "signed" with the public key (key confusion).
    let hs_header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());
    let signing_input = format!("{hs_header}.{payload}");
    for secret in [
        jwk.to_string().into_bytes(),
        URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap(),
    ] {
        let key = aws_lc_rs_hmac(&secret, signing_input.as_bytes());
        let forged = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(key));
        assert_invalid(
            &call(&api, Some(&forged)).await,
            &forged,
            "HS256 with the public key",
        );
    }

    // A JWT that is not an access token (typ).
    let id_token_like = tessera
        .key("acme")
        .await
        .0
        .sign_typed("JWT", &claims(json!({})))
        .unwrap();
    assert_invalid(
        &call(&api, Some(&id_token_like)).await,
        &id_token_like,
        "typ JWT",
    );

    // Unknown kids: refused, and a flood of them does not hammer the issuer.
    let before = validator.jwks_fetches();
    for i in 0..50 {
        let header = URL_SAFE_NO_PAD.encode(
            json!({"alg": "ES256", "typ": "at+jwt", "kid": format!("bogus-{i}")}).to_string(),
        );
        let bogus = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
        assert_invalid(&call(&api, Some(&bogus)).await, &bogus, "unknown kid");
    }
    assert!(
        validator.jwks_fetches() - before <= 1,
        "{} fetches",
        validator.jwks_fetches() - before
    );
}

fn aws_lc_rs_hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    use sha2::Sha256;
    // HMAC-SHA256 by hand from sha2, to forge without any JOSE library.
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&<Sha256 as sha2::Digest>::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = sha2::Sha256::default();
    let mut outer = sha2::Sha256::default();
    use sha2::Digest;
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(data);
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_is_picked_up_without_restart() {
    let tessera = spawn_issuer().await;
    let validator = Validator::builder(tessera.issuer("acme"), "contacts-api")
        .min_jwks_refresh(Duration::ZERO)
        .discover()
        .await
        .unwrap();
    let api = spawn_api(validator).await;
    let client = tessera
        .client("acme", &["contacts:read"], &["contacts-api"], false)
        .await;
    let before = tessera.token("acme", &client, "contacts:read").await;
    assert_eq!(call(&api, Some(&before)).await.0, 200);
    admin::rotate_key(&tessera.state, "acme", UnixTime(now()))
        .await
        .unwrap();
    let after = tessera.token("acme", &client, "contacts:read").await;
    assert_ne!(
        jsonwebtoken::decode_header(&after).unwrap().kid,
        jsonwebtoken::decode_header(&before).unwrap().kid
    );
    assert_eq!(
        call(&api, Some(&after)).await.0,
        200,
        "new key fetched on first sight"
    );
    assert_eq!(
        call(&api, Some(&before)).await.0,
        200,
        "old key still published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_mode_sees_revocation() {
    let tessera = spawn_issuer().await;
    let resource = tessera.client("acme", &[], &[], false).await;
    let validator = Validator::builder(tessera.issuer("acme"), "contacts-api")
        .introspection(&resource.0, &resource.1)
        .introspection_cache(Duration::ZERO, 100)
        .discover()
        .await
        .unwrap();
    let api = spawn_api(validator).await;
    for opaque in [true, false] {
        let client = tessera
            .client("acme", &["contacts:read"], &["contacts-api"], opaque)
            .await;
        let token = tessera.token("acme", &client, "contacts:read").await;
        let (status, _, body) = call(&api, Some(&token)).await;
        assert_eq!(
            (status, body.as_str()),
            (200, client.0.as_str()),
            "opaque: {opaque}"
        );
        let revoked = reqwest::Client::new()
            .post(format!("{}/revoke", tessera.issuer("acme")))
            .basic_auth(&client.0, Some(&client.1))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 200);
        assert_invalid(&call(&api, Some(&token)).await, &token, "revoked");
    }
    // Wrong audience through introspection too.
    let elsewhere = tessera
        .client("acme", &["contacts:read"], &["another-api"], true)
        .await;
    let token = tessera.token("acme", &elsewhere, "contacts:read").await;
    assert_invalid(
        &call(&api, Some(&token)).await,
        &token,
        "introspected audience",
    );
}

#[tokio::test]
async fn query_tokens_are_off_by_default_and_never_two_at_once() {
    let tessera = spawn_issuer().await;
    let client = tessera
        .client("acme", &["contacts:read"], &["contacts-api"], false)
        .await;
    let token = tessera.token("acme", &client, "contacts:read").await;
    let strict = spawn_api(
        Validator::builder(tessera.issuer("acme"), "contacts-api")
            .discover()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        call(&format!("{strict}?access_token={token}"), None)
            .await
            .0,
        401
    );
    let lenient = spawn_api(
        Validator::builder(tessera.issuer("acme"), "contacts-api")
            .allow_query_token(true)
            .discover()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        call(&format!("{lenient}?access_token={token}"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&format!("{lenient}?access_token={token}"), Some(&token))
            .await
            .0,
        400
    );
}

/// An RFC 9068 issuer other than Tessera, whose JWKS the test controls.
struct FakeIssuer {
    issuer: String,
    jwks: Arc<std::sync::Mutex<Value>>,
    up: Arc<std::sync::atomic::AtomicBool>,
}

async fn spawn_fake_issuer() -> FakeIssuer {
    use axum::http::StatusCode;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}/fake", listener.local_addr().unwrap());
    let jwks = Arc::new(std::sync::Mutex::new(json!({"keys": []})));
    let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let metadata = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
    let (served, alive) = (jwks.clone(), up.clone());
    let app = Router::new()
        .route(
            "/.well-known/oauth-authorization-server/fake",
            get(move || async move { axum::Json(metadata) }),
        )
        .route(
            "/fake/jwks",
            get(move || async move {
                if alive.load(std::sync::atomic::Ordering::SeqCst) {
                    Ok(axum::Json(served.lock().unwrap().clone()))
                } else {
                    Err(StatusCode::SERVICE_UNAVAILABLE)
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakeIssuer { issuer, jwks, up }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_keys_are_refused_and_an_unreachable_issuer_gives_503() {
    let fake = spawn_fake_issuer().await;
    let first = tessera_core::jwt::generate_key().unwrap();
    let second = tessera_core::jwt::generate_key().unwrap();
    let jwk = |key: &tessera_core::jwt::GeneratedKey| {
        serde_json::from_str::<Value>(&key.public_jwk).unwrap()
    };
    *fake.jwks.lock().unwrap() = json!({"keys": [jwk(&first)]});
    let sign = |key: &tessera_core::jwt::GeneratedKey| {
        SigningKey::from_pkcs8(&key.kid, &key.private_pkcs8)
            .unwrap()
            .sign(&json!({
                "iss": fake.issuer, "sub": "bob", "aud": "contacts-api", "exp": now() + 300,
                "iat": now(), "client_id": "c", "scope": "contacts:read"
            }))
            .unwrap()
    };
    let validator = Validator::builder(&fake.issuer, "contacts-api")
        .min_jwks_refresh(Duration::ZERO)
        .max_jwks_age(Duration::ZERO)
        .discover()
        .await
        .unwrap();
    let api = spawn_api(validator).await;
    let (old, new) = (sign(&first), sign(&second));
    assert_eq!(
        call(&api, Some(&old)).await.0,
        200,
        "a token of another RFC 9068 issuer"
    );

    // The issuer rotates and withdraws the first key.
    *fake.jwks.lock().unwrap() = json!({"keys": [jwk(&second)]});
    assert_eq!(call(&api, Some(&new)).await.0, 200);
    assert_invalid(&call(&api, Some(&old)).await, &old, "withdrawn key");

    // Issuer down: a cached key still works, an unknown one cannot be checked.
    fake.up.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        call(&api, Some(&new)).await.0,
        200,
        "cached key while the issuer is down"
    );
    let third = tessera_core::jwt::generate_key().unwrap();
    let unknown = sign(&third);
    let response = reqwest::Client::new()
        .get(&api)
        .bearer_auth(&unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn discovery_refuses_metadata_for_another_issuer() {
    let fake = spawn_fake_issuer().await;
    // Same server, but the metadata there names a different issuer.
    let claimed = fake.issuer.replace("/fake", "/fake/");
    let error = Validator::builder(&claimed, "contacts-api")
        .discover()
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("names issuer"), "{error}");
}
