//! The resource owner password credentials grant (RFC 6749 §4.3), opt-in per
//! client, and brute-force throttling.

use std::net::IpAddr;

use serde_json::Value;
use tessera_core::{AuthMethod, GrantType, TokenFormat};
use tessera_server::service::admin::NewClient;

use crate::helpers::*;

async fn password_client(app: &TestApp) -> TestClient {
    app.create_client(
        "acme",
        NewClient {
            name: "legacy".into(),
            auth_method: AuthMethod::ClientSecretBasic,
            grant_types: vec![GrantType::Password, GrantType::RefreshToken],
            redirect_uris: vec![],
            scopes: vec!["read".into()],
            audiences: vec![],
            token_format: TokenFormat::Jwt,
            app_type: None,
            access_token_ttl: None,
            refresh_token_ttl: None,
        },
    )
    .await
}

async fn grant(
    app: &TestApp,
    http: &reqwest::Client,
    client: &TestClient,
    username: &str,
    password: &str,
) -> (u16, Value) {
    let response = http
        .post(app.token_url("acme"))
        .basic_auth(&client.id, client.secret.as_deref())
        .form(&[
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Like `grant`, through a proxy that reports the client at `address`.
async fn grant_from(
    app: &TestApp,
    client: &TestClient,
    address: &str,
    username: &str,
    password: &str,
) -> (u16, Value) {
    let response = app
        .http
        .post(app.token_url("acme"))
        .basic_auth(&client.id, client.secret.as_deref())
        .header("x-forwarded-for", format!("198.51.100.1, {address}"))
        .form(&[
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn password_grant_for_registered_clients_only() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let alice = app.create_user("acme", "alice", "wonderland").await;
    let client = password_client(&app).await;
    let (status, body) = grant(&app, &app.http, &client, "alice", "wonderland").await;
    assert_eq!(status, 200, "{body}");
    let issuer = app.issuer("acme");
    let claims = verify_jwt(
        body["access_token"].as_str().unwrap(),
        &app.jwks("acme").await,
        &issuer,
        &issuer,
    )
    .unwrap();
    assert_eq!(claims["sub"], alice.as_str());
    assert!(claims["auth_time"].is_i64());
    assert!(body["refresh_token"].is_string());

    // A client not registered for it is refused, even with the right password.
    let other = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let (status, body) = grant(&app, &app.http, &other, "alice", "wonderland").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
}

#[tokio::test]
async fn unknown_user_and_wrong_password_answer_alike() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.create_user("acme", "alice", "wonderland").await;
    let client = password_client(&app).await;
    let wrong = grant(&app, &app.http, &client, "alice", "nope").await;
    let unknown = grant(&app, &app.http, &client, "mallory", "nope").await;
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.0, 400);
    assert_eq!(wrong.1["error"], "invalid_grant");
}

#[tokio::test]
async fn guessing_is_throttled_per_address_without_locking_the_owner_out() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.create_user("acme", "alice", "wonderland").await;
    let client = password_client(&app).await;
    for _ in 0..5 {
        let (_, body) = grant(&app, &app.http, &client, "alice", "guess").await;
        assert_eq!(
            body["error_description"],
            "the username or password is incorrect"
        );
    }
    // Locked out at this address: even the right password is refused, and
    // attempts while locked do not extend the lockout.
    let (status, body) = grant(&app, &app.http, &client, "alice", "wonderland").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        body["error_description"],
        "too many failed attempts; try again later"
    );
    // Unknown users are throttled just the same, so throttling tells nothing.
    for _ in 0..5 {
        grant(&app, &app.http, &client, "mallory", "guess").await;
    }
    let (_, body) = grant(&app, &app.http, &client, "mallory", "guess").await;
    assert_eq!(
        body["error_description"],
        "too many failed attempts; try again later"
    );

    // The owner, at another address, is not locked out by the attacker.
    let elsewhere = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let (status, _) = grant(&app, &elsewhere, &client, "alice", "wonderland").await;
    assert_eq!(status, 200);

    // The lockout ends by itself.
    let tenant = app.stored_tenant("acme").await;
    let later = tessera_core::UnixTime(now().0 + 31);
    assert!(
        app.state
            .store
            .locked_until(tenant.id, "user:alice@127.0.0.1", later)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn the_login_form_is_throttled_too() {
    let (app, web) = acme(true).await;
    let (_, challenge) = pkce_pair();
    let url = authorize_url(&app, "acme", &web, &challenge, &[]);
    let mut last = 0;
    for password in ["a", "b", "c", "d", "e", "wonderland"] {
        let html = app
            .browser
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let response = submit_login(&app.browser, &html, "alice", password).await;
        last = response.status().as_u16();
        if password == "wonderland" {
            assert!(
                response
                    .text()
                    .await
                    .unwrap()
                    .contains("Too many failed attempts")
            );
        }
    }
    assert_eq!(last, 429);
}

#[tokio::test]
async fn an_ipv6_client_is_throttled_by_its_64_prefix() {
    let app = spawn_app_behind_proxy().await;
    app.create_tenant("acme").await;
    app.create_user("acme", "alice", "wonderland").await;
    let client = password_client(&app).await;
    const THROTTLED: &str = "too many failed attempts; try again later";

    // Five guesses, each from another address of the same /64.
    for host in 1..=5 {
        let address = format!("2001:db8:1:2::{host}");
        let (_, body) = grant_from(&app, &client, &address, "alice", "guess").await;
        assert_eq!(
            body["error_description"], "the username or password is incorrect",
            "{address}"
        );
    }
    // Yet another address of that /64 is locked out with the rest of it.
    let (status, body) =
        grant_from(&app, &client, "2001:db8:1:2:ffff::6", "alice", "wonderland").await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (400, Some(THROTTLED))
    );
    // The next /64 is someone else.
    let (status, body) = grant_from(&app, &client, "2001:db8:1:3::1", "alice", "wonderland").await;
    assert_eq!(status, 200, "{body}");

    // An IPv4-mapped IPv6 address is that IPv4 address.
    for _ in 0..5 {
        grant_from(&app, &client, "::ffff:203.0.113.9", "alice", "guess").await;
    }
    let (_, body) = grant_from(&app, &client, "203.0.113.9", "alice", "wonderland").await;
    assert_eq!(body["error_description"], THROTTLED);
    // IPv4 addresses still count one by one.
    let (status, body) = grant_from(&app, &client, "203.0.113.10", "alice", "wonderland").await;
    assert_eq!(status, 200, "{body}");
}
