//! tessera-resource against a real running Tessera.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tessera_core::jwt::SigningKey;
use tessera_core::{AppType, UnixTime};
use tessera_resource::{AccessToken, Algorithm, BearerLayer, RequireScopes, SetupError, Validator};
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
    let router = tessera_server::router(state.clone());
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

/// A protected API on port 0: GET /contacts needs contacts:read, POST
/// contacts:write; GET /shared either contacts:write or contacts:admin; GET
/// /whoami any valid token, and shows what the validator made of it.
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
        .merge(
            Router::new()
                .route("/shared", get(|| async { "shared" }))
                .route_layer(RequireScopes::any(["contacts:write", "contacts:admin"])),
        )
        .route(
            "/whoami",
            get(|token: AccessToken| async move {
                axum::Json(json!({
                    "subject": token.subject,
                    "client_id": token.client_id,
                    "expires_at": token.expires_at,
                    "scopes": token.scopes,
                }))
            }),
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

/// An RFC 9068 issuer other than Tessera, whose metadata, JWKS and
/// introspection answers the test controls.
struct FakeIssuer {
    issuer: String,
    /// Served as the JWKS as it is, so it may hold any JSON.
    jwks: Arc<std::sync::Mutex<Value>>,
    /// When false, the JWKS answers 503.
    up: Arc<AtomicBool>,
    /// While a test holds this lock, JWKS requests wait for it.
    jwks_gate: Arc<tokio::sync::Mutex<()>>,
    jwks_requests: Arc<AtomicUsize>,
    metadata_requests: Arc<AtomicUsize>,
    /// Answers of the introspection endpoint by token; other tokens are
    /// inactive. The endpoint authenticates the API as `api`/`api-secret`.
    introspection: Arc<std::sync::Mutex<HashMap<String, Value>>>,
    introspections: Arc<AtomicUsize>,
}

impl FakeIssuer {
    fn jwks_requests(&self) -> usize {
        self.jwks_requests.load(SeqCst)
    }

    fn introspections(&self) -> usize {
        self.introspections.load(SeqCst)
    }

    fn publish(&self, keys: Value) {
        *self.jwks.lock().unwrap() = json!({ "keys": keys });
    }

    /// Claims of a token valid for `contacts-api`, with `overrides` applied.
    fn claims(&self, overrides: Value) -> Value {
        let mut claims = json!({
            "iss": self.issuer, "sub": "bob", "aud": "contacts-api", "exp": now() + 300,
            "iat": now(), "client_id": "c", "scope": "contacts:read"
        });
        for (name, value) in overrides.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    }

    /// Local validation of this issuer's tokens, with a refetch allowed at
    /// any time.
    async fn validator(&self) -> Validator {
        Validator::builder(&self.issuer, "contacts-api")
            .min_jwks_refresh(Duration::ZERO)
            .discover()
            .await
            .unwrap()
    }
}

async fn spawn_fake_issuer() -> FakeIssuer {
    spawn_fake_issuer_with_metadata_at_rfc8414(true).await
}

/// A fake issuer; without `rfc8414`, its metadata is only at the OpenID
/// Connect location.
async fn spawn_fake_issuer_with_metadata_at_rfc8414(rfc8414: bool) -> FakeIssuer {
    use axum::http::{HeaderMap, StatusCode};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}/fake", listener.local_addr().unwrap());
    let fake = FakeIssuer {
        issuer: issuer.clone(),
        jwks: Arc::new(std::sync::Mutex::new(json!({"keys": []}))),
        up: Arc::new(AtomicBool::new(true)),
        jwks_gate: Arc::default(),
        jwks_requests: Arc::default(),
        metadata_requests: Arc::default(),
        introspection: Arc::default(),
        introspections: Arc::default(),
    };
    let metadata = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
        "introspection_endpoint": format!("{issuer}/introspect"),
    });
    let (metadata_requests, oidc_requests) = (
        fake.metadata_requests.clone(),
        fake.metadata_requests.clone(),
    );
    let oidc_metadata = metadata.clone();
    let (served, alive, gate, requests) = (
        fake.jwks.clone(),
        fake.up.clone(),
        fake.jwks_gate.clone(),
        fake.jwks_requests.clone(),
    );
    let (answers, introspections) = (fake.introspection.clone(), fake.introspections.clone());
    let app = Router::new()
        .route(
            "/.well-known/oauth-authorization-server/fake",
            get(move || async move {
                metadata_requests.fetch_add(1, SeqCst);
                if rfc8414 {
                    Ok(axum::Json(metadata))
                } else {
                    Err(StatusCode::NOT_FOUND)
                }
            }),
        )
        .route(
            "/fake/.well-known/openid-configuration",
            get(move || async move {
                oidc_requests.fetch_add(1, SeqCst);
                axum::Json(oidc_metadata)
            }),
        )
        .route(
            "/fake/jwks",
            get(move || async move {
                if !alive.load(SeqCst) {
                    return Err(StatusCode::SERVICE_UNAVAILABLE);
                }
                requests.fetch_add(1, SeqCst);
                let _open = gate.lock().await;
                let jwks = served.lock().unwrap().clone();
                Ok(axum::Json(jwks))
            }),
        )
        .route(
            "/fake/introspect",
            post(
                move |headers: HeaderMap, form: axum::Form<HashMap<String, String>>| async move {
                    introspections.fetch_add(1, SeqCst);
                    let expected = format!("Basic {}", STANDARD.encode("api:api-secret"));
                    if headers.get("authorization").map(|v| v.as_bytes())
                        != Some(expected.as_bytes())
                    {
                        return Err(StatusCode::UNAUTHORIZED);
                    }
                    let token = form.get("token").cloned().unwrap_or_default();
                    let answer = answers.lock().unwrap().get(&token).cloned();
                    Ok(axum::Json(answer.unwrap_or(json!({"active": false}))))
                },
            ),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    fake
}

/// A P-256 key a fake issuer may publish.
struct FakeKey(tessera_core::jwt::GeneratedKey);

impl FakeKey {
    fn new() -> Self {
        FakeKey(tessera_core::jwt::generate_key().unwrap())
    }

    fn kid(&self) -> &str {
        &self.0.kid
    }

    /// Its public JWK: kid, `use: sig` and `alg: ES256`.
    fn jwk(&self) -> Value {
        serde_json::from_str(&self.0.public_jwk).unwrap()
    }

    /// Its public JWK with `changes` applied; a null value removes a member.
    fn jwk_with(&self, changes: Value) -> Value {
        let mut jwk = self.jwk();
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                jwk.as_object_mut().unwrap().remove(name);
            } else {
                jwk[name] = value.clone();
            }
        }
        jwk
    }

    /// An access token (`typ: at+jwt`, this key's kid).
    fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            json!({"alg": "ES256", "typ": "at+jwt", "kid": self.kid()}),
            claims,
        )
    }

    /// A token with exactly this JOSE header, signed with ES256.
    fn sign_with_header(&self, header: Value, claims: &Value) -> String {
        let header: jsonwebtoken::Header = serde_json::from_value(header).unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.0.private_pkcs8);
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

/// Calls `url` until the answer's status is `status`, at most 100 times;
/// for what a background task changes. Returns the last answer.
async fn call_until(url: &str, token: &str, status: u16) -> (u16, String, String) {
    let mut answer = call(url, Some(token)).await;
    for _ in 0..100 {
        if answer.0 == status {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        answer = call(url, Some(token)).await;
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_keys_are_refused_and_an_unreachable_issuer_gives_503() {
    let fake = spawn_fake_issuer().await;
    let (first, second) = (FakeKey::new(), FakeKey::new());
    fake.publish(json!([first.jwk()]));
    let validator = Validator::builder(&fake.issuer, "contacts-api")
        .min_jwks_refresh(Duration::ZERO)
        .max_jwks_age(Duration::ZERO)
        .discover()
        .await
        .unwrap();
    let api = spawn_api(validator).await;
    let (old, new) = (
        first.sign(&fake.claims(json!({}))),
        second.sign(&fake.claims(json!({}))),
    );
    assert_eq!(
        call(&api, Some(&old)).await.0,
        200,
        "a token of another RFC 9068 issuer"
    );

    // The issuer rotates and withdraws the first key. The keys are past
    // their maximum age, so the next request starts a refresh (served from
    // the cache meanwhile), after which the old key is refused.
    fake.publish(json!([second.jwk()]));
    let answer = call_until(&api, &old, 401).await;
    assert_invalid(&answer, &old, "withdrawn key");
    assert_eq!(call(&api, Some(&new)).await.0, 200);

    // Issuer down: a cached key still works, an unknown one cannot be checked.
    fake.up.store(false, SeqCst);
    assert_eq!(
        call(&api, Some(&new)).await.0,
        200,
        "cached key while the issuer is down"
    );
    let unknown = FakeKey::new().sign(&fake.claims(json!({})));
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

/// Another path of the API that `spawn_api` started.
fn at(api: &str, path: &str) -> String {
    api.replace("/contacts", path)
}

#[tokio::test]
async fn one_unsupported_key_does_not_hide_the_others() {
    let fake = spawn_fake_issuer().await;
    let key = FakeKey::new();
    let b64 = |len: usize| URL_SAFE_NO_PAD.encode(vec![7u8; len]);
    fake.publish(json!([
        {"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": b64(32)},
        {"kty": "OKP", "crv": "Ed448", "kid": "ed448", "x": b64(57)},
        {"kty": "EC", "crv": "secp256k1", "kid": "k1", "x": b64(32), "y": b64(32)},
        {"kty": "EC", "crv": "P-521", "kid": "p521", "x": b64(66), "y": b64(66)},
        {"kty": "oct", "kid": "shared", "k": b64(32)},
        {"kty": "ML-DSA", "kid": "future", "pub": b64(64)},
        {"kid": "no-kty"},
        "not even an object",
        key.jwk(),
    ]));
    let api = spawn_api(fake.validator().await).await;
    let token = key.sign(&fake.claims(json!({})));
    assert_eq!(call(&api, Some(&token)).await.0, 200);
}

#[tokio::test]
async fn an_unreachable_issuer_gives_503_also_within_the_refresh_interval() {
    let fake = spawn_fake_issuer().await;
    fake.up.store(false, SeqCst);
    // The default interval (5 s) is far longer than this test.
    let validator = Validator::builder(&fake.issuer, "contacts-api")
        .discover()
        .await
        .unwrap();
    let api = spawn_api(validator.clone()).await;
    let token = FakeKey::new().sign(&fake.claims(json!({})));
    for attempt in 0..3 {
        let response = reqwest::Client::new()
            .get(&api)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503, "attempt {attempt}");
        assert!(response.headers().contains_key("retry-after"));
    }
    assert_eq!(validator.jwks_fetches(), 1, "one attempt per interval");
}

#[tokio::test]
async fn introspection_without_sub_or_exp_uses_the_client_id_and_the_ttl() {
    let fake = spawn_fake_issuer().await;
    let exp = now() + 300;
    fake.introspection.lock().unwrap().extend([
        (
            "opaque-client".to_owned(),
            json!({"active": true, "client_id": "svc", "aud": "contacts-api", "scope": "contacts:read"}),
        ),
        (
            "opaque-nobody".to_owned(),
            json!({"active": true, "aud": "contacts-api", "scope": "contacts:read"}),
        ),
        (
            "opaque-user".to_owned(),
            json!({"active": true, "sub": "alice", "client_id": "svc", "exp": exp, "aud": ["contacts-api"]}),
        ),
    ]);
    let validator = Validator::builder(&fake.issuer, "contacts-api")
        .introspection("api", "api-secret")
        .introspection_cache(Duration::ZERO, 100)
        .discover()
        .await
        .unwrap();
    let whoami = at(&spawn_api(validator).await, "/whoami");

    let (status, _, body) = call(&whoami, Some("opaque-client")).await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&seen["subject"], &seen["expires_at"]),
        (&json!("svc"), &Value::Null)
    );
    // Without exp the answer is reused for the TTL only, here not at all.
    assert_eq!(call(&whoami, Some("opaque-client")).await.0, 200);
    assert_eq!(fake.introspections(), 2);

    assert_invalid(
        &call(&whoami, Some("opaque-nobody")).await,
        "opaque-nobody",
        "neither sub nor client_id",
    );
    let (status, _, body) = call(&whoami, Some("opaque-user")).await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&seen["subject"], &seen["expires_at"]),
        (&json!("alice"), &json!(exp))
    );
}

#[tokio::test]
async fn introspection_answers_are_reused_within_the_ttl_and_the_cache_is_bounded() {
    let fake = spawn_fake_issuer().await;
    for token in ["opaque-a", "opaque-b", "opaque-c"] {
        fake.introspection.lock().unwrap().insert(
            token.to_owned(),
            json!({"active": true, "sub": token, "aud": "contacts-api", "exp": now() + 300, "scope": "contacts:read"}),
        );
    }
    let validator = Validator::builder(&fake.issuer, "contacts-api")
        .introspection("api", "api-secret")
        .introspection_cache(Duration::from_secs(60), 2)
        .discover()
        .await
        .unwrap();
    let api = spawn_api(validator).await;
    for _ in 0..3 {
        let (status, _, body) = call(&api, Some("opaque-a")).await;
        assert_eq!((status, body.as_str()), (200, "opaque-a"));
    }
    assert_eq!(fake.introspections(), 1, "reused within the TTL");
    assert_eq!(call(&api, Some("opaque-b")).await.0, 200);
    assert_eq!(call(&api, Some("opaque-b")).await.0, 200);
    assert_eq!(fake.introspections(), 2);
    // A third token does not fit in two entries, so one of the first two
    // is asked about again.
    assert_eq!(call(&api, Some("opaque-c")).await.0, 200);
    assert_eq!(fake.introspections(), 3);
    for token in ["opaque-a", "opaque-b"] {
        assert_eq!(call(&api, Some(token)).await.0, 200);
    }
    assert!(fake.introspections() > 3, "the cache holds more than 2");
}

#[tokio::test]
async fn tokens_without_kid_are_checked_with_every_key_that_fits() {
    let fake = spawn_fake_issuer().await;
    let (named, unnamed, later) = (FakeKey::new(), FakeKey::new(), FakeKey::new());
    // RFC 7517 §4.5: a JWK's kid is optional too.
    fake.publish(json!([named.jwk(), unnamed.jwk_with(json!({"kid": null}))]));
    let api = spawn_api(fake.validator().await).await;
    let no_kid = json!({"alg": "ES256", "typ": "at+jwt"});
    for key in [&named, &unnamed] {
        let token = key.sign_with_header(no_kid.clone(), &fake.claims(json!({})));
        assert_eq!(call(&api, Some(&token)).await.0, 200, "{}", key.kid());
    }
    // A token naming a kid the JWKS does not name is not matched by luck.
    let named_kid = unnamed.sign(&fake.claims(json!({})));
    assert_invalid(
        &call(&api, Some(&named_kid)).await,
        &named_kid,
        "kid absent from the JWKS",
    );
    // Once a key verifies the signature, the claims are checked as usual.
    let expired =
        unnamed.sign_with_header(no_kid.clone(), &fake.claims(json!({"exp": now() - 600})));
    let answer = call(&api, Some(&expired)).await;
    assert_invalid(&answer, &expired, "expired, no kid");
    assert!(answer.1.contains("expired"), "{}", answer.1);

    // A key published since the last fetch is found by one refetch.
    let token = later.sign_with_header(no_kid.clone(), &fake.claims(json!({})));
    assert_invalid(&call(&api, Some(&token)).await, &token, "unpublished key");
    fake.publish(json!([named.jwk(), later.jwk_with(json!({"kid": null}))]));
    assert_eq!(call(&api, Some(&token)).await.0, 200, "published since");

    // Kid-less forgeries are refused, and do not hammer the issuer either.
    let validator = Validator::builder(&fake.issuer, "contacts-api")
        .discover()
        .await
        .unwrap();
    let api = spawn_api(validator.clone()).await;
    assert_eq!(call(&api, Some(&token)).await.0, 200);
    let fetches = validator.jwks_fetches();
    let header = URL_SAFE_NO_PAD.encode(no_kid.to_string());
    let payload = URL_SAFE_NO_PAD.encode(fake.claims(json!({})).to_string());
    for i in 0..20u8 {
        let forged = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode([i; 64]));
        assert_invalid(&call(&api, Some(&forged)).await, &forged, "forged, no kid");
    }
    assert!(
        validator.jwks_fetches() - fetches <= 1,
        "{} fetches",
        validator.jwks_fetches() - fetches
    );
}

#[tokio::test]
async fn keys_not_meant_for_verifying_signatures_are_skipped() {
    let fake = spawn_fake_issuer().await;
    let key = FakeKey::new();
    let token = key.sign(&fake.claims(json!({})));
    for (changes, accepted) in [
        (json!({}), true),
        (json!({"use": null}), true),
        (json!({"use": "enc"}), false),
        (
            json!({"use": null, "key_ops": ["encrypt", "wrapKey"]}),
            false,
        ),
        (json!({"use": null, "key_ops": ["sign"]}), false),
        (json!({"use": null, "key_ops": ["sign", "verify"]}), true),
    ] {
        fake.publish(json!([key.jwk_with(changes.clone())]));
        let api = spawn_api(fake.validator().await).await;
        let answer = call(&api, Some(&token)).await;
        if accepted {
            assert_eq!(answer.0, 200, "{changes}: {answer:?}");
        } else {
            assert_invalid(&answer, &token, &changes.to_string());
        }
    }
}

#[tokio::test]
async fn query_tokens_must_be_b64tokens_and_their_responses_are_private() {
    let fake = spawn_fake_issuer().await;
    let key = FakeKey::new();
    fake.publish(json!([key.jwk()]));
    let api = spawn_api(
        Validator::builder(&fake.issuer, "contacts-api")
            .allow_query_token(true)
            .discover()
            .await
            .unwrap(),
    )
    .await;
    let token = key.sign(&fake.claims(json!({})));
    let get = |query: String| {
        let url = format!("{api}?{query}");
        async move { reqwest::get(url).await.unwrap() }
    };

    // RFC 6750 §2.3: answers to a token in the URI are not for shared caches.
    let response = get(format!("access_token={token}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "private");
    let response = get(format!("access_token={token}x")).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["cache-control"], "private");

    for query in [
        "access_token=".to_owned(),
        "access_token=a%20b".to_owned(),
        "access_token=%C3%A4".to_owned(),
        "access_token=abc%22".to_owned(),
        format!("access_token={token}&access_token={token}"),
    ] {
        let response = get(query.clone()).await;
        assert_eq!(response.status(), 400, "{query}");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.contains("error=\"invalid_request\""),
            "{query}: {challenge}"
        );
    }

    // Sent in the header, the answer is left alone.
    let response = reqwest::Client::new()
        .get(&api)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("cache-control"));
}

#[tokio::test]
async fn a_realm_that_cannot_be_quoted_is_refused_at_setup() {
    let fake = spawn_fake_issuer().await;
    for realm in [
        "say \"hi\"",
        "back\\slash",
        "line\r\nbreak",
        "tab\there",
        "del\u{7f}",
    ] {
        let error = Validator::builder(&fake.issuer, "contacts-api")
            .realm(realm)
            .discover()
            .await
            .err()
            .unwrap_or_else(|| panic!("{realm:?} accepted"));
        assert!(
            matches!(error, SetupError::InvalidRealm(_)),
            "{realm:?}: {error}"
        );
    }
    // The default realm is the audience, checked alike.
    let error = Validator::builder(&fake.issuer, "contacts\"api")
        .discover()
        .await
        .err()
        .unwrap();
    assert!(matches!(error, SetupError::InvalidRealm(_)), "{error}");

    // A realm beyond ASCII can be quoted, and is in every challenge.
    let api = spawn_api(
        Validator::builder(&fake.issuer, "contacts-api")
            .realm("Kontakte für alle")
            .discover()
            .await
            .unwrap(),
    )
    .await;
    let response = reqwest::get(&api).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"].as_bytes(),
        "Bearer realm=\"Kontakte für alle\"".as_bytes()
    );
}

#[tokio::test]
async fn discovery_refuses_issuers_with_a_query_a_fragment_or_another_scheme() {
    let fake = spawn_fake_issuer().await;
    for issuer in [
        format!("{}?tenant=acme", fake.issuer),
        format!("{}?", fake.issuer),
        format!("{}#top", fake.issuer),
        fake.issuer.replace("http://", "ftp://"),
        fake.issuer.replace("http://", "file://"),
    ] {
        let error = Validator::builder(&issuer, "contacts-api")
            .discover()
            .await
            .err()
            .unwrap_or_else(|| panic!("{issuer} accepted"));
        assert!(
            matches!(error, SetupError::InvalidIssuer(_)),
            "{issuer}: {error}"
        );
    }
    // RFC 8414 §2: refused from the URL alone, before asking anything.
    assert_eq!(fake.metadata_requests.load(SeqCst), 0);
    fake.validator().await;
    assert_eq!(fake.metadata_requests.load(SeqCst), 1, "the plain issuer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_keys_are_refreshed_in_the_background_while_the_cache_serves() {
    let fake = spawn_fake_issuer().await;
    let (first, second) = (FakeKey::new(), FakeKey::new());
    fake.publish(json!([first.jwk()]));
    let validator = Validator::builder(&fake.issuer, "contacts-api")
        .min_jwks_refresh(Duration::ZERO)
        .max_jwks_age(Duration::ZERO)
        .discover()
        .await
        .unwrap();
    let api = spawn_api(validator).await;
    let (old, new) = (
        first.sign(&fake.claims(json!({}))),
        second.sign(&fake.claims(json!({}))),
    );
    assert_eq!(call(&api, Some(&old)).await.0, 200);
    assert_eq!(fake.jwks_requests(), 1);

    // The issuer withdraws the first key and is slow to answer: requests are
    // answered from the cache, and only one refresh is under way.
    let gate = fake.jwks_gate.lock().await;
    fake.publish(json!([second.jwk()]));
    assert_eq!(call(&api, Some(&old)).await.0, 200, "answered meanwhile");
    for _ in 0..100 {
        if fake.jwks_requests() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.jwks_requests(), 2, "the refresh reached the issuer");
    for _ in 0..5 {
        assert_eq!(call(&api, Some(&old)).await.0, 200, "answered meanwhile");
    }
    assert_eq!(fake.jwks_requests(), 2, "one refresh at a time");

    // Any later fetch fails, so what follows is that refresh's doing. The
    // new key's request waits for the refresh in flight, not for a fetch of
    // its own.
    fake.up.store(false, SeqCst);
    drop(gate);
    assert_eq!(call(&api, Some(&new)).await.0, 200, "the refresh's keys");
    // The old key is gone from the cache; with the issuer down, a key it
    // does not know cannot be checked.
    assert_eq!(call(&api, Some(&old)).await.0, 503, "withdrawn key");
}

#[tokio::test]
async fn leeway_tolerates_clock_skew_and_can_be_changed() {
    let fake = spawn_fake_issuer().await;
    let key = FakeKey::new();
    fake.publish(json!([key.jwk()]));
    // The default leeway is 30 s.
    let expired_recently = key.sign(&fake.claims(json!({"exp": now() - 20})));
    let expired_long_ago = key.sign(&fake.claims(json!({"exp": now() - 60})));
    let valid_soon = key.sign(&fake.claims(json!({"nbf": now() + 20})));
    let with_leeway = |leeway: Option<u64>| {
        let mut builder = Validator::builder(&fake.issuer, "contacts-api");
        if let Some(seconds) = leeway {
            builder = builder.leeway(Duration::from_secs(seconds));
        }
        async move { spawn_api(builder.discover().await.unwrap()).await }
    };

    let default = with_leeway(None).await;
    assert_eq!(call(&default, Some(&expired_recently)).await.0, 200);
    assert_eq!(call(&default, Some(&valid_soon)).await.0, 200);
    let answer = call(&default, Some(&expired_long_ago)).await;
    assert_invalid(&answer, &expired_long_ago, "beyond the leeway");
    assert!(answer.1.contains("expired"), "{}", answer.1);

    let lenient = with_leeway(Some(120)).await;
    assert_eq!(call(&lenient, Some(&expired_long_ago)).await.0, 200);

    let strict = with_leeway(Some(0)).await;
    assert_invalid(
        &call(&strict, Some(&expired_recently)).await,
        &expired_recently,
        "no leeway, expired",
    );
    assert_invalid(
        &call(&strict, Some(&valid_soon)).await,
        &valid_soon,
        "no leeway, not yet valid",
    );
}

#[tokio::test]
async fn algorithms_narrow_what_is_accepted() {
    let fake = spawn_fake_issuer().await;
    let key = FakeKey::new();
    fake.publish(json!([key.jwk()]));
    let token = key.sign(&fake.claims(json!({})));
    let with = |algorithms: &'static [Algorithm]| {
        let builder = Validator::builder(&fake.issuer, "contacts-api").algorithms(algorithms);
        async move { spawn_api(builder.discover().await.unwrap()).await }
    };
    let rsa_only = with(&[Algorithm::RS256, Algorithm::PS256]).await;
    let answer = call(&rsa_only, Some(&token)).await;
    assert_invalid(&answer, &token, "ES256 not allowed");
    assert!(answer.1.contains("algorithm not allowed"), "{}", answer.1);
    let es256 = with(&[Algorithm::ES256]).await;
    assert_eq!(call(&es256, Some(&token)).await.0, 200);

    // HMAC is dropped from the list, whatever it says.
    let jwk = key.jwk();
    let hs_header = URL_SAFE_NO_PAD
        .encode(json!({"alg": "HS256", "typ": "at+jwt", "kid": key.kid()}).to_string());
    let signing_input = format!(
        "{hs_header}.{}",
        URL_SAFE_NO_PAD.encode(fake.claims(json!({})).to_string())
    );
    let mac = aws_lc_rs_hmac(jwk.to_string().as_bytes(), signing_input.as_bytes());
    let forged = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac));
    let with_hmac = with(&[Algorithm::ES256, Algorithm::HS256]).await;
    let answer = call(&with_hmac, Some(&forged)).await;
    assert_invalid(&answer, &forged, "HS256");
    assert!(answer.1.contains("algorithm not allowed"), "{}", answer.1);
}

#[tokio::test]
async fn a_token_whose_algorithm_its_key_does_not_allow_is_refused() {
    let fake = spawn_fake_issuer().await;
    let key = FakeKey::new();
    fake.publish(json!([key.jwk()]));
    let api = spawn_api(fake.validator().await).await;
    // The key is published for ES256; the token claims ES384 (allowed).
    let header = URL_SAFE_NO_PAD
        .encode(json!({"alg": "ES384", "typ": "at+jwt", "kid": key.kid()}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(fake.claims(json!({})).to_string());
    let token = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode([1u8; 96]));
    let answer = call(&api, Some(&token)).await;
    assert_invalid(&answer, &token, "ES384 with an ES256 key");
    assert!(
        answer.1.contains("algorithm does not match the key"),
        "{}",
        answer.1
    );

    // A P-256 key that the JWKS binds to ES384 is no use for either.
    fake.publish(json!([key.jwk_with(json!({"alg": "ES384"}))]));
    let api = spawn_api(fake.validator().await).await;
    let token = key.sign(&fake.claims(json!({})));
    assert_invalid(
        &call(&api, Some(&token)).await,
        &token,
        "key bound to ES384",
    );
}

#[tokio::test]
async fn the_access_token_type_is_required_in_either_spelling() {
    let fake = spawn_fake_issuer().await;
    let key = FakeKey::new();
    fake.publish(json!([key.jwk()]));
    let api = spawn_api(fake.validator().await).await;
    let claims = fake.claims(json!({}));
    // RFC 9068 §2.1: "at+jwt", or the full media type; media types are
    // case-insensitive.
    for typ in ["application/at+jwt", "AT+JWT"] {
        let token = key.sign_with_header(
            json!({"alg": "ES256", "typ": typ, "kid": key.kid()}),
            &claims,
        );
        assert_eq!(call(&api, Some(&token)).await.0, 200, "{typ}");
    }
    let untyped = key.sign_with_header(json!({"alg": "ES256", "kid": key.kid()}), &claims);
    let answer = call(&api, Some(&untyped)).await;
    assert_invalid(&answer, &untyped, "no typ");
    assert!(answer.1.contains("typ"), "{}", answer.1);
}

#[tokio::test]
async fn authorization_headers_of_every_shape() {
    let fake = spawn_fake_issuer().await;
    let key = FakeKey::new();
    fake.publish(json!([key.jwk()]));
    let api = spawn_api(fake.validator().await).await;
    let token = key.sign(&fake.claims(json!({})));
    let send = |values: Vec<String>| {
        let mut request = reqwest::Client::new().get(&api);
        for value in values {
            request = request.header("authorization", value);
        }
        async move { request.send().await.unwrap() }
    };

    // RFC 6750 §2: one way, once.
    let response = send(vec![format!("Bearer {token}"), format!("Bearer {token}")]).await;
    assert_eq!(response.status(), 400);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_request\"")
    );
    // Another scheme is no bearer token: a bare challenge (RFC 6750 §3.1).
    let response = send(vec!["Basic dXNlcjpwYXNz".to_owned()]).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"contacts-api\""
    );
    // RFC 9110 §11.1: the scheme is case-insensitive.
    for scheme in ["bearer", "BEARER"] {
        let response = send(vec![format!("{scheme} {token}")]).await;
        assert_eq!(response.status(), 200, "{scheme}");
    }
}

#[tokio::test]
async fn require_scopes_any_accepts_either_scope() {
    let fake = spawn_fake_issuer().await;
    let key = FakeKey::new();
    fake.publish(json!([key.jwk()]));
    let shared = at(&spawn_api(fake.validator().await).await, "/shared");
    for scope in [
        "contacts:write",
        "contacts:admin",
        "contacts:read contacts:admin",
    ] {
        let token = key.sign(&fake.claims(json!({"scope": scope})));
        assert_eq!(call(&shared, Some(&token)).await.0, 200, "{scope}");
    }
    let token = key.sign(&fake.claims(json!({"scope": "contacts:read"})));
    let (status, challenge, _) = call(&shared, Some(&token)).await;
    assert_eq!(status, 403);
    assert!(
        challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains("scope=\"contacts:write contacts:admin\""),
        "{challenge}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_with_the_wrong_credentials_of_the_api_gives_503() {
    let tessera = spawn_issuer().await;
    let resource = tessera.client("acme", &[], &[], false).await;
    let client = tessera
        .client("acme", &["contacts:read"], &["contacts-api"], true)
        .await;
    let token = tessera.token("acme", &client, "contacts:read").await;
    let api = |secret: &str| {
        let builder = Validator::builder(tessera.issuer("acme"), "contacts-api")
            .introspection(&resource.0, secret);
        async move { spawn_api(builder.discover().await.unwrap()).await }
    };
    let right = api(&resource.1).await;
    assert_eq!(call(&right, Some(&token)).await.0, 200);
    // Not the token's fault: 503, not 401.
    let wrong = api("not-the-secret").await;
    let response = reqwest::Client::new()
        .get(&wrong)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn openid_connect_metadata_is_the_fallback() {
    let fake = spawn_fake_issuer_with_metadata_at_rfc8414(false).await;
    let key = FakeKey::new();
    fake.publish(json!([key.jwk()]));
    let api = spawn_api(fake.validator().await).await;
    assert_eq!(
        fake.metadata_requests.load(SeqCst),
        2,
        "RFC 8414 first, then OpenID Connect"
    );
    let token = key.sign(&fake.claims(json!({})));
    assert_eq!(call(&api, Some(&token)).await.0, 200);
}
