//! The client credentials grant and client authentication (RFC 6749 §2.3, §4.4).

use serde_json::Value;
use tessera_core::AuthMethod;

use crate::helpers::*;

#[tokio::test]
async fn basic_authentication_gets_a_verifiable_jwt() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let client = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let response = app
        .token_basic(
            "acme",
            &client,
            &[("grant_type", "client_credentials"), ("scope", "read")],
        )
        .await;
    assert_eq!(response.status(), 200);
    // RFC 6749 §5.1: application/json, and not to be cached.
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "read");
    assert!(body.get("refresh_token").is_none(), "RFC 6749 §4.4.3");
    let token = body["access_token"].as_str().unwrap();
    let issuer = app.issuer("acme");
    let claims = verify_jwt(
        token,
        &app.jwks("acme").await,
        &issuer,
        "https://api.example",
    )
    .unwrap();
    assert_eq!(claims["sub"], client.id.as_str());
    assert_eq!(claims["client_id"], client.id.as_str());
    assert_eq!(claims["iss"], issuer.as_str());
    assert!(claims.get("auth_time").is_none());
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 900);
    // Tampering with the payload breaks the signature.
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        claims.to_string().replace("read", "admin"),
    );
    parts[1] = &forged;
    assert!(
        verify_jwt(
            &parts.join("."),
            &app.jwks("acme").await,
            &issuer,
            "https://api.example"
        )
        .is_err()
    );
}

#[tokio::test]
async fn post_authentication_and_default_scope() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let client = app
        .service_client("acme", AuthMethod::ClientSecretPost)
        .await;
    let response = app
        .http
        .post(app.token_url("acme"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &client.id),
            ("client_secret", client.secret.as_deref().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["scope"], "read write",
        "no scope asked: all registered scopes"
    );
}

#[tokio::test]
async fn basic_credentials_are_form_urldecoded() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let client = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
    let encode = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    let credentials = format!(
        "{}:{}",
        encode(&client.id),
        encode(client.secret.as_deref().unwrap())
    );
    let header = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, credentials)
    );
    let response = app
        .http
        .post(app.token_url("acme"))
        .header("authorization", header)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn error_of(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let www = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, www, response.json().await.unwrap())
}

#[tokio::test]
async fn authentication_failures_are_invalid_client() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let basic = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let post = app
        .service_client("acme", AuthMethod::ClientSecretPost)
        .await;
    let token_url = app.token_url("acme");
    let form = [("grant_type", "client_credentials")];

    // Wrong secret with Basic: 401 and a Basic challenge.
    let wrong = TestClient {
        id: basic.id.clone(),
        secret: Some("wrong".into()),
    };
    let (status, www, body) = error_of(app.token_basic("acme", &wrong, &form).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(www.unwrap().starts_with("Basic"));

    // Unknown client.
    let unknown = TestClient {
        id: "nobody".into(),
        secret: Some("x".into()),
    };
    let (status, _, body) = error_of(app.token_basic("acme", &unknown, &form).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    // A client uses only the method it was registered with.
    let (status, _, body) = error_of(app.token_basic("acme", &post, &form).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let as_post = app
        .http
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", basic.id.as_str()),
            ("client_secret", basic.secret.as_deref().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    let (status, www, body) = error_of(as_post).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(www.is_none(), "no Basic challenge when Basic was not tried");

    // No credentials at all.
    let none = app.http.post(&token_url).form(&form).send().await.unwrap();
    assert_eq!(error_of(none).await.2["error"], "invalid_client");

    // Malformed Basic header.
    for header in ["Basic !!!notbase64", "Basic ", "Basic Zm9v"] {
        let response = app
            .http
            .post(&token_url)
            .header("authorization", header)
            .form(&form)
            .send()
            .await
            .unwrap();
        let (status, www, body) = error_of(response).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{header}"
        );
        assert!(www.is_some());
    }

    // Two methods at once.
    let both = app
        .http
        .post(&token_url)
        .basic_auth(&basic.id, basic.secret.as_deref())
        .form(&[("grant_type", "client_credentials"), ("client_secret", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(both).await.2["error"], "invalid_request");
}

#[tokio::test]
async fn scope_and_grant_rules() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let client = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let (_, _, body) = error_of(
        app.token_basic(
            "acme",
            &client,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "read admin"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(body["error"], "invalid_scope");
    let (_, _, body) = error_of(
        app.token_basic(
            "acme",
            &client,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "bad\"scope"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(body["error"], "invalid_scope");
    let (_, _, body) = error_of(
        app.token_basic("acme", &client, &[("grant_type", "implicit")])
            .await,
    )
    .await;
    assert_eq!(body["error"], "unsupported_grant_type");
    let (_, _, body) = error_of(
        app.token_basic("acme", &client, &[("grant_type", "urn:example:nope")])
            .await,
    )
    .await;
    assert_eq!(body["error"], "unsupported_grant_type");
    let (_, _, body) = error_of(app.token_basic("acme", &client, &[("scope", "read")]).await).await;
    assert_eq!(body["error"], "invalid_request", "grant_type missing");
    let (status, _, body) = error_of(
        app.token_basic(
            "acme",
            &client,
            &[("grant_type", "authorization_code"), ("code", "x")],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
}
