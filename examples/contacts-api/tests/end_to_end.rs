//! The contacts-api binary against a real Tessera: tokens obtained with the
//! `oauth2` crate, the API called over HTTP, locally and by introspection.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, ClientId, ClientSecret, EndpointNotSet, EndpointSet, ResourceOwnerPassword,
    ResourceOwnerUsername, Scope, TokenResponse, TokenUrl,
};
use serde_json::{Value, json};
use tessera_core::model::GrantType;
use tessera_core::{AppType, UnixTime};
use tessera_server::AppState;
use tessera_server::service::admin::{self, NewClient};

fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
}

struct Tessera {
    issuer: String,
    state: AppState,
    _dir: tempfile::TempDir,
}

/// Tessera on an ephemeral port with tenant `demo`, the two scopes, and users
/// alice and bob.
async fn spawn_tessera() -> Tessera {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = tessera_store::SqliteStore::connect(&url, &Default::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::new(Arc::new(store), &base_url).await.unwrap();
    let config = tessera_server::ServerConfig::default();
    let router = tessera_server::router(state.clone());
    tokio::spawn(async move {
        tessera_server::serve(listener, router, &config, std::future::pending()).await
    });
    admin::create_tenant(&state, "demo", now()).await.unwrap();
    admin::create_scope(&state, "demo", "contacts:read", "Read your contacts")
        .await
        .unwrap();
    admin::create_scope(&state, "demo", "contacts:write", "Add contacts")
        .await
        .unwrap();
    for user in ["alice", "bob"] {
        admin::create_user(&state, "demo", user, &format!("{user}-pw"), now())
            .await
            .unwrap();
    }
    Tessera {
        issuer: format!("{base_url}/t/demo"),
        state,
        _dir: dir,
    }
}

impl Tessera {
    /// A confidential client of `demo` for both scopes, as the `oauth2` crate sees it.
    async fn client(
        &self,
        grant_types: Vec<GrantType>,
        audiences: &[&str],
        opaque: bool,
    ) -> (Client, String) {
        let mut request = NewClient::of_type("contacts app", AppType::M2m);
        request.grant_types = grant_types;
        request.scopes = vec!["contacts:read".into(), "contacts:write".into()];
        request.audiences = audiences.iter().map(|a| a.to_string()).collect();
        if opaque {
            request.token_format = tessera_core::TokenFormat::Opaque;
        }
        let created = admin::create_client(&self.state, "demo", request, now())
            .await
            .unwrap();
        let secret = created.secret.unwrap().expose().to_owned();
        let client = BasicClient::new(ClientId::new(created.client.client_id.to_string()))
            .set_client_secret(ClientSecret::new(secret.clone()))
            .set_auth_uri(AuthUrl::new(format!("{}/authorize", self.issuer)).unwrap())
            .set_token_uri(TokenUrl::new(format!("{}/token", self.issuer)).unwrap());
        (client, secret)
    }
}

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

async fn password_token(client: &Client, user: &str, scopes: &[&str]) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (username, password) = (
        ResourceOwnerUsername::new(user.into()),
        ResourceOwnerPassword::new(format!("{user}-pw")),
    );
    let mut request = client.exchange_password(&username, &password);
    for scope in scopes {
        request = request.add_scope(Scope::new(scope.to_string()));
    }
    request
        .request_async(&http)
        .await
        .unwrap()
        .access_token()
        .secret()
        .clone()
}

async fn client_credentials_token(client: &Client, scopes: &[&str]) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = client.exchange_client_credentials();
    for scope in scopes {
        request = request.add_scope(Scope::new(scope.to_string()));
    }
    request
        .request_async(&http)
        .await
        .unwrap()
        .access_token()
        .secret()
        .clone()
}

/// The contacts-api binary, killed when dropped.
struct Api {
    child: Child,
    url: String,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts contacts-api on an ephemeral port and reads the address it logs.
fn start_api(issuer: &str, extra: &[&str], stdin: Option<&str>) -> Api {
    let mut child = Command::new(env!("CARGO_BIN_EXE_contacts-api"))
        .args(["--issuer", issuer, "--bind", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("contacts-api exited before listening")
            .unwrap();
        if let Some((_, rest)) = line.split_once("address=") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining its log so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Api {
        child,
        url: format!("http://{address}/contacts"),
    }
}

async fn list(api: &Api, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(&api.url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn add(api: &Api, token: &str, contact: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(&api.url)
        .bearer_auth(token)
        .json(&contact)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_sees_only_their_contacts_and_scopes_are_enforced() {
    let tessera = spawn_tessera().await;
    let api = start_api(&tessera.issuer, &[], None);
    let (app, _) = tessera
        .client(vec![GrantType::Password], &["contacts-api"], false)
        .await;
    let alice = password_token(&app, "alice", &["contacts:read", "contacts:write"]).await;
    let bob = password_token(&app, "bob", &["contacts:read", "contacts:write"]).await;

    assert_eq!(list(&api, &alice).await, (200, json!([])));
    let created = add(
        &api,
        &alice,
        json!({"name": "Carol", "email": "carol@example.com"}),
    )
    .await;
    assert_eq!(created.status(), 201);
    assert_eq!(
        add(
            &api,
            &bob,
            json!({"name": "Dave", "email": "dave@example.com"})
        )
        .await
        .status(),
        201
    );
    assert_eq!(
        list(&api, &alice).await,
        (
            200,
            json!([{"name": "Carol", "email": "carol@example.com"}])
        )
    );
    assert_eq!(
        list(&api, &bob).await,
        (200, json!([{"name": "Dave", "email": "dave@example.com"}]))
    );

    // A read-only token reads but cannot write: 403 naming the scope.
    let reader = password_token(&app, "alice", &["contacts:read"]).await;
    assert_eq!(list(&api, &reader).await.0, 200);
    let refused = add(
        &api,
        &reader,
        json!({"name": "Eve", "email": "eve@example.com"}),
    )
    .await;
    assert_eq!(refused.status(), 403);
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains(r#"error="insufficient_scope""#)
            && challenge.contains(r#"scope="contacts:write""#),
        "{challenge}"
    );
    // A write-only token cannot read.
    let writer = password_token(&app, "alice", &["contacts:write"]).await;
    assert_eq!(list(&api, &writer).await.0, 403);
    assert_eq!(
        list(&api, &alice).await.1.as_array().unwrap().len(),
        1,
        "the refused write stored nothing"
    );

    // No token, and a token for another audience.
    let response = reqwest::Client::new().get(&api.url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="contacts-api""#
    );
    let (elsewhere, _) = tessera
        .client(vec![GrantType::Password], &["another-api"], false)
        .await;
    let foreign = password_token(&elsewhere, "alice", &["contacts:read"]).await;
    assert_eq!(list(&api, &foreign).await.0, 401);

    // Bad contact data is refused without a 500.
    assert_eq!(
        add(&api, &alice, json!({"name": "", "email": "x"}))
            .await
            .status(),
        422
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_mode_accepts_opaque_tokens_and_sees_revocation() {
    let tessera = spawn_tessera().await;
    let mut resource = NewClient::of_type("contacts-api", AppType::M2m);
    resource.grant_types = vec![GrantType::ClientCredentials];
    let resource = admin::create_client(&tessera.state, "demo", resource, now())
        .await
        .unwrap();
    let secret = format!("{}\n", resource.secret.unwrap().expose());
    let api = start_api(
        &tessera.issuer,
        &[
            "--introspect",
            "--client-id",
            resource.client.client_id.as_str(),
            "--client-secret-stdin",
            "--cache-seconds",
            "0",
        ],
        Some(&secret),
    );
    let (app, app_secret) = tessera
        .client(vec![GrantType::Password], &["contacts-api"], true)
        .await;
    let token = password_token(&app, "alice", &["contacts:read", "contacts:write"]).await;
    assert_eq!(token.split('.').count(), 1, "an opaque token");
    assert_eq!(
        add(
            &api,
            &token,
            json!({"name": "Carol", "email": "carol@example.com"})
        )
        .await
        .status(),
        201
    );
    assert_eq!(list(&api, &token).await.0, 200);

    // RFC 7009 revocation by the client (the oauth2 crate insists on https
    // for it, so plain reqwest here).
    let revoked = reqwest::Client::new()
        .post(format!("{}/revoke", tessera.issuer))
        .basic_auth(app.client_id().as_str(), Some(&app_secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    // Started with --cache-seconds 0, the API asks Tessera on every call.
    assert_eq!(list(&api, &token).await.0, 401, "revoked");

    let bob = password_token(&app, "bob", &["contacts:read"]).await;
    assert_eq!(
        list(&api, &bob).await,
        (200, json!([])),
        "bob sees none of alice's contacts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_the_rfc_6750_challenge() {
    let tessera = spawn_tessera().await;
    let api = start_api(&tessera.issuer, &[], None);
    let challenge = |response: &reqwest::Response| {
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned()
    };

    // Not a b64token (RFC 6750 §2.1): the request is malformed.
    let response = reqwest::Client::new()
        .get(&api.url)
        .header("authorization", "Bearer not a token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        challenge(&response),
        r#"Bearer realm="contacts-api", error="invalid_request", error_description="the bearer token is not a b64token""#
    );

    // A genuine token of the same issuer, for another API.
    let (elsewhere, _) = tessera
        .client(vec![GrantType::ClientCredentials], &["another-api"], false)
        .await;
    let foreign = client_credentials_token(&elsewhere, &["contacts:read"]).await;
    let response = reqwest::Client::new()
        .get(&api.url)
        .bearer_auth(&foreign)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        challenge(&response),
        r#"Bearer realm="contacts-api", error="invalid_token", error_description="wrong audience""#
    );
    assert!(!response.text().await.unwrap().contains(&foreign));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_credentials_token_speaks_for_the_client() {
    let tessera = spawn_tessera().await;
    let api = start_api(&tessera.issuer, &[], None);
    let (service, _) = tessera
        .client(vec![GrantType::ClientCredentials], &["contacts-api"], false)
        .await;
    let token = client_credentials_token(&service, &["contacts:read"]).await;
    let response = reqwest::Client::new()
        .get(api.url.replace("/contacts", "/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let client_id = service.client_id().as_str();
    // RFC 9068 §2.2: without a resource owner, sub is the client.
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"subject": client_id, "client_id": client_id, "scopes": ["contacts:read"]})
    );
    assert_eq!(list(&api, &token).await, (200, json!([])));
}

#[test]
fn bad_arguments_fail_clearly() {
    let output = Command::new(env!("CARGO_BIN_EXE_contacts-api"))
        .args([
            "--issuer",
            "http://127.0.0.1:1/t/none",
            "--bind",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach the issuer"));
    let output = Command::new(env!("CARGO_BIN_EXE_contacts-api"))
        .args(["--issuer", "http://127.0.0.1:1/t/none", "--introspect"])
        .output()
        .unwrap();
    assert!(!output.status.success());
}
