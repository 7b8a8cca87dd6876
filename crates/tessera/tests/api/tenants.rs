//! Tenant isolation, key rotation, and administrative changes seen at once.

use serde_json::Value;
use tessera_core::AuthMethod;
use tessera_server::service::admin;

use crate::helpers::*;

#[tokio::test]
async fn tenants_are_isolated() {
    let app = spawn_app().await;
    app.create_tenant("alpha").await;
    app.create_tenant("beta").await;
    let client = app
        .service_client("alpha", AuthMethod::ClientSecretBasic)
        .await;

    // A client of alpha does not exist at beta.
    let response = app
        .token_basic("beta", &client, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );

    // alpha's token fails beta's checks: beta's keys and beta's issuer.
    let body: Value = app
        .token_basic("alpha", &client, &[("grant_type", "client_credentials")])
        .await
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap();
    let alpha_jwks = app.jwks("alpha").await;
    let beta_jwks = app.jwks("beta").await;
    assert_ne!(alpha_jwks["keys"][0]["kid"], beta_jwks["keys"][0]["kid"]);
    assert!(
        verify_jwt(
            token,
            &alpha_jwks,
            &app.issuer("alpha"),
            "https://api.example"
        )
        .is_ok()
    );
    assert!(
        verify_jwt(
            token,
            &beta_jwks,
            &app.issuer("beta"),
            "https://api.example"
        )
        .is_err()
    );
    let mut beta_with_alpha_keys = beta_jwks.clone();
    beta_with_alpha_keys["keys"] = alpha_jwks["keys"].clone();
    assert!(
        verify_jwt(
            token,
            &beta_with_alpha_keys,
            &app.issuer("beta"),
            "https://api.example"
        )
        .is_err(),
        "the issuer differs too"
    );
}

#[tokio::test]
async fn key_rotation_keeps_the_old_key_published() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let client = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let form = [("grant_type", "client_credentials")];
    let old: Value = app
        .token_basic("acme", &client, &form)
        .await
        .json()
        .await
        .unwrap();
    let old_token = old["access_token"].as_str().unwrap().to_owned();

    let new_kid = admin::rotate_key(&app.state, "acme", now()).await.unwrap();
    let jwks = app.jwks("acme").await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    let new: Value = app
        .token_basic("acme", &client, &form)
        .await
        .json()
        .await
        .unwrap();
    let new_token = new["access_token"].as_str().unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(new_token).unwrap().kid.unwrap(),
        new_kid
    );
    let issuer = app.issuer("acme");
    assert!(verify_jwt(&old_token, &jwks, &issuer, "https://api.example").is_ok());
    assert!(verify_jwt(new_token, &jwks, &issuer, "https://api.example").is_ok());

    // Once the old key's tokens have all expired, it is no longer published.
    let later = tessera_core::UnixTime(now().0 + 901);
    let tenant = app.stored_tenant("acme").await;
    let published = app
        .state
        .store
        .published_keys(tenant.id, later)
        .await
        .unwrap();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].kid, new_kid);
}

#[tokio::test]
async fn deleted_clients_and_tenants_stop_working_at_once() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let client = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let form = [("grant_type", "client_credentials")];
    assert_eq!(app.token_basic("acme", &client, &form).await.status(), 200);
    let tenant = app.stored_tenant("acme").await;
    assert!(
        app.state
            .store
            .delete_client(tenant.id, &client.id)
            .await
            .unwrap()
    );
    assert_eq!(app.token_basic("acme", &client, &form).await.status(), 401);

    let client = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    assert!(app.state.store.delete_tenant("acme").await.unwrap());
    let response = app.token_basic("acme", &client, &form).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_request"
    );
}

#[tokio::test]
async fn lifetimes_are_set_per_tenant() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    admin::set_lifetimes(&app.state, "acme", Some(120), None, None)
        .await
        .unwrap();
    let client = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let body: Value = app
        .token_basic("acme", &client, &[("grant_type", "client_credentials")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["expires_in"], 120);
    let claims = jwt_claims(body["access_token"].as_str().unwrap());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );
    assert!(
        admin::set_lifetimes(&app.state, "acme", Some(5), None, None)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn codes_and_refresh_tokens_do_not_cross_tenants() {
    let (app, web) = acme(true).await;
    app.create_tenant("other").await;
    let (verifier, challenge) = pkce_pair();
    let code = obtain_code(&app, &web, &challenge, "read").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
        ("client_id", web.id.as_str()),
    ];
    let response = app
        .http
        .post(app.token_url("other"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "the client does not exist at the other tenant"
    );
    // The code is still good at its own tenant.
    let tokens: Value = redeem_public(&app, &web, &code, &verifier)
        .await
        .json()
        .await
        .unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let response = app
        .http
        .post(app.token_url("other"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", web.id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}
