//! Application types and native apps (RFC 8252).

use serde_json::Value;
use tessera_core::{AppType, AuthMethod};
use tessera_server::service::admin::{self, NewClient};

use crate::helpers::*;

#[tokio::test]
async fn native_loopback_redirects_match_any_port() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.create_scope("acme", "read", "Read").await;
    app.create_user("acme", "alice", "wonderland").await;
    let mut native = NewClient::of_type("Desktop", AppType::Native);
    native.redirect_uris = vec![
        "http://127.0.0.1/callback".into(),
        "com.example.app:/cb".into(),
    ];
    native.scopes = vec!["read".into()];
    let native = app.create_client("acme", native).await;
    assert!(native.secret.is_none(), "native apps are public clients");

    let (verifier, challenge) = pkce_pair();
    let redirect = "http://127.0.0.1:53123/callback";
    let url = format!(
        "{}/authorize?response_type=code&client_id={}&redirect_uri={redirect}&code_challenge={challenge}&code_challenge_method=S256",
        app.issuer("acme"),
        native.id
    );
    let answer = log_in_and_consent(&app, &url, "alice", "wonderland", "allow", None).await;
    let (location, params) = location_params(&answer);
    assert!(
        location.starts_with(redirect),
        "back to the port the app listens on: {location}"
    );
    let code = param(&params, "code").unwrap();
    let tokens = app
        .http
        .post(app.token_url("acme"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("client_id", native.id.as_str()),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(tokens.status(), 200);

    // The path must still match, and localhost is not a loopback IP.
    for wrong in [
        "http://127.0.0.1:53123/other",
        "http://localhost:53123/callback",
    ] {
        let url = format!(
            "{}/authorize?response_type=code&client_id={}&redirect_uri={wrong}&code_challenge={challenge}&code_challenge_method=S256",
            app.issuer("acme"),
            native.id
        );
        assert_eq!(
            app.http.get(&url).send().await.unwrap().status(),
            400,
            "{wrong}"
        );
    }
}

#[tokio::test]
async fn only_native_apps_get_port_leeway_and_private_schemes() {
    let (app, web) = acme(true).await;
    let (_, challenge) = pkce_pair();
    let url = format!(
        "{}/authorize?response_type=code&client_id={}&redirect_uri=http://127.0.0.1:1234/callback&code_challenge={challenge}&code_challenge_method=S256",
        app.issuer("acme"),
        web.id
    );
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), 400);

    let mut spa = NewClient::of_type("SPA", AppType::Spa);
    spa.redirect_uris = vec!["com.example.app:/cb".into()];
    assert!(
        admin::create_client(&app.state, "acme", spa, now())
            .await
            .is_err()
    );
    let mut native = NewClient::of_type("App", AppType::Native);
    native.redirect_uris = vec!["myapp:/cb".into()];
    assert!(
        admin::create_client(&app.state, "acme", native, now())
            .await
            .is_err(),
        "a private-use scheme must be a reverse domain name"
    );
}

#[tokio::test]
async fn per_client_lifetimes_override_the_tenant() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let mut m2m = NewClient::of_type("svc", AppType::M2m);
    m2m.access_token_ttl = Some(120);
    let client = app.create_client("acme", m2m).await;
    let body: Value = app
        .token_basic("acme", &client, &[("grant_type", "client_credentials")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["expires_in"], 120);
    let other = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let body: Value = app
        .token_basic("acme", &other, &[("grant_type", "client_credentials")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["expires_in"], 900);
}
