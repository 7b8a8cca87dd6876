//! Revocation (RFC 7009) and introspection (RFC 7662, RFC 9701).

use serde_json::Value;
use tessera_core::{AuthMethod, GrantType, TokenFormat};
use tessera_server::service::admin::NewClient;

use crate::helpers::*;

async fn post_as(
    app: &TestApp,
    tenant: &str,
    endpoint: &str,
    client: &TestClient,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let url = format!("{}/{endpoint}", app.issuer(tenant));
    let request = app.http.post(url);
    let request = match &client.secret {
        Some(secret) => request.basic_auth(&client.id, Some(secret)),
        None => request,
    };
    let mut form = form.to_vec();
    if client.secret.is_none() {
        form.push(("client_id", &client.id));
    }
    request.form(&form).send().await.unwrap()
}

async fn introspect(app: &TestApp, tenant: &str, caller: &TestClient, token: &str) -> Value {
    let response = post_as(app, tenant, "introspect", caller, &[("token", token)]).await;
    assert_eq!(response.status(), 200);
    // RFC 7662 §2.2: a JSON object, and not to be cached.
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

async fn revoke(
    app: &TestApp,
    tenant: &str,
    client: &TestClient,
    token: &str,
    hint: Option<&str>,
) -> reqwest::Response {
    let mut form = vec![("token", token)];
    if let Some(hint) = hint {
        form.push(("token_type_hint", hint));
    }
    post_as(app, tenant, "revoke", client, &form).await
}

async fn opaque_client(app: &TestApp, tenant: &str) -> TestClient {
    app.create_client(
        tenant,
        NewClient {
            name: "opaque".into(),
            auth_method: AuthMethod::ClientSecretBasic,
            grant_types: vec![GrantType::ClientCredentials],
            redirect_uris: vec![],
            scopes: vec!["read".into()],
            audiences: vec!["https://api.example".into()],
            token_format: TokenFormat::Opaque,
            app_type: None,
            access_token_ttl: None,
            refresh_token_ttl: None,
        },
    )
    .await
}

async fn access_token(app: &TestApp, tenant: &str, client: &TestClient) -> String {
    let body: Value = app
        .token_basic(tenant, client, &[("grant_type", "client_credentials")])
        .await
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn both_token_formats_introspect_and_revoke() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let resource = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let jwt_client = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let opaque = opaque_client(&app, "acme").await;
    let issuer = app.issuer("acme");

    for (client, is_jwt) in [(&jwt_client, true), (&opaque, false)] {
        let token = access_token(&app, "acme", client).await;
        assert_eq!(token.matches('.').count() == 2, is_jwt);
        if !is_jwt {
            assert!(token.len() >= 43, "≥ 256 bits");
        }
        let answer = introspect(&app, "acme", &resource, &token).await;
        assert_eq!(answer["active"], true, "{answer}");
        assert_eq!(answer["client_id"], client.id.as_str());
        assert_eq!(answer["sub"], client.id.as_str());
        assert_eq!(answer["token_type"], "Bearer");
        assert_eq!(answer["iss"], issuer.as_str());
        assert_eq!(answer["aud"], "https://api.example");
        assert!(answer["exp"].as_i64().unwrap() > answer["iat"].as_i64().unwrap());
        assert!(answer["jti"].is_string());
        assert!(answer["scope"].is_string());

        // Another client may not revoke it.
        let refused = revoke(&app, "acme", &resource, &token, None).await;
        assert_eq!(refused.status(), 400);
        assert_eq!(
            refused.json::<Value>().await.unwrap()["error"],
            "unauthorized_client"
        );
        assert_eq!(
            introspect(&app, "acme", &resource, &token).await["active"],
            true
        );

        let revoked = revoke(&app, "acme", client, &token, Some("access_token")).await;
        assert_eq!(revoked.status(), 200);
        assert_eq!(
            introspect(&app, "acme", &resource, &token).await,
            serde_json::json!({"active": false})
        );
        // Revoking again, or an unknown token, is still 200 (RFC 7009 §2.2).
        assert_eq!(
            revoke(&app, "acme", client, &token, None).await.status(),
            200
        );
        assert_eq!(
            revoke(&app, "acme", client, "no-such-token", None)
                .await
                .status(),
            200
        );
    }
}

#[tokio::test]
async fn inactive_for_unknown_malformed_expired_and_foreign_tokens() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.create_tenant("other").await;
    let resource = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let foreign_client = app
        .service_client("other", AuthMethod::ClientSecretBasic)
        .await;
    let foreign = access_token(&app, "other", &foreign_client).await;
    let inactive = serde_json::json!({"active": false});
    for token in ["unknown", "a.b.c", "", &foreign, &"x".repeat(10_000)] {
        let response = post_as(&app, "acme", "introspect", &resource, &[("token", token)]).await;
        if token.is_empty() {
            assert_eq!(
                response.json::<Value>().await.unwrap()["error"],
                "invalid_request"
            );
        } else {
            assert_eq!(
                response.json::<Value>().await.unwrap(),
                inactive,
                "{}",
                &token[..token.len().min(20)]
            );
        }
    }
    // The other tenant's own introspection still finds it active.
    let foreign_resource = app
        .service_client("other", AuthMethod::ClientSecretBasic)
        .await;
    assert_eq!(
        introspect(&app, "other", &foreign_resource, &foreign).await["active"],
        true
    );
    // Its verification, now remembered for "other", does not carry over.
    assert_eq!(
        introspect(&app, "acme", &resource, &foreign).await,
        inactive
    );

    // An expired opaque token.
    let opaque = opaque_client(&app, "acme").await;
    let token = access_token(&app, "acme", &opaque).await;
    let tenant = app.stored_tenant("acme").await;
    let hash = app
        .state
        .hasher
        .hash(tessera_core::secret::Purpose::AccessToken, &token);
    let mut record = app
        .state
        .store
        .access_token_by_hash(tenant.id, &hash)
        .await
        .unwrap()
        .unwrap();
    record.jti = "expired-copy".into();
    record.expires_at = tessera_core::UnixTime(now().0 - 1);
    let expired_secret = "an-expired-opaque-token-of-at-least-forty-three-characters";
    record.token_hash = Some(
        app.state
            .hasher
            .hash(tessera_core::secret::Purpose::AccessToken, expired_secret),
    );
    app.state.store.put_access_token(&record).await.unwrap();
    assert_eq!(
        introspect(&app, "acme", &resource, expired_secret).await,
        inactive
    );
    assert_eq!(
        introspect(&app, "acme", &resource, &token).await["active"],
        true
    );
}

#[tokio::test]
async fn public_clients_cannot_introspect() {
    let (app, web) = acme(true).await;
    let response = post_as(&app, "acme", "introspect", &web, &[("token", "x")]).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_grant() {
    let (app, web) = acme(true).await;
    let resource = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let (verifier, challenge) = pkce_pair();
    let code = obtain_code(&app, &web, &challenge, "read").await;
    let tokens: Value = redeem_public(&app, &web, &code, &verifier)
        .await
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();

    let answer = introspect(&app, "acme", &resource, access).await;
    assert_eq!(answer["active"], true);
    assert_eq!(answer["username"], "alice", "user tokens name their user");
    // A refresh token is introspectable by its own client only.
    assert_eq!(
        introspect(&app, "acme", &resource, refresh).await["active"],
        false
    );
    assert_eq!(
        post_as(&app, "acme", "introspect", &resource, &[("token", refresh)])
            .await
            .status(),
        200
    );

    assert_eq!(
        revoke(&app, "acme", &web, refresh, Some("refresh_token"))
            .await
            .status(),
        200
    );
    assert_eq!(
        introspect(&app, "acme", &resource, access).await["active"],
        false,
        "the family's access token"
    );
    let refreshed = app
        .http
        .post(app.token_url("acme"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &web.id),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        refreshed.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn code_replay_deactivates_the_access_token_it_issued() {
    let (app, web) = acme(true).await;
    let resource = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let (verifier, challenge) = pkce_pair();
    let code = obtain_code(&app, &web, &challenge, "read").await;
    let tokens: Value = redeem_public(&app, &web, &code, &verifier)
        .await
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        introspect(&app, "acme", &resource, access).await["active"],
        true
    );
    assert_eq!(
        redeem_public(&app, &web, &code, &verifier).await.status(),
        400
    );
    assert_eq!(
        introspect(&app, "acme", &resource, access).await["active"],
        false
    );
}

#[tokio::test]
async fn rfc9701_jwt_introspection_response() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let resource = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let client = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let token = access_token(&app, "acme", &client).await;
    let response = app
        .http
        .post(format!("{}/introspect", app.issuer("acme")))
        .basic_auth(&resource.id, resource.secret.as_deref())
        .header("accept", "application/token-introspection+jwt")
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/token-introspection+jwt"
    );
    let jwt = response.text().await.unwrap();
    let header = jsonwebtoken::decode_header(&jwt).unwrap();
    assert_eq!(header.typ.as_deref(), Some("token-introspection+jwt"));
    let jwks = app.jwks("acme").await;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header.kid.clone().unwrap().as_str())
        .unwrap();
    let key = jsonwebtoken::DecodingKey::from_ec_components(
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[app.issuer("acme")]);
    validation.set_audience(&[resource.id.as_str()]);
    validation.set_required_spec_claims(&["iss", "aud"]);
    let claims = jsonwebtoken::decode::<Value>(&jwt, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["token_introspection"]["active"], true);
    assert_eq!(
        claims["token_introspection"]["client_id"],
        client.id.as_str()
    );
}

#[tokio::test]
async fn metadata_advertises_revocation_and_introspection() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let metadata: Value = app
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server/t/acme",
            app.base_url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let issuer = app.issuer("acme");
    assert_eq!(metadata["revocation_endpoint"], format!("{issuer}/revoke"));
    assert_eq!(
        metadata["introspection_endpoint"],
        format!("{issuer}/introspect")
    );
    assert_eq!(
        metadata["introspection_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post"])
    );
    assert!(metadata["revocation_endpoint_auth_methods_supported"].is_array());
}

#[tokio::test]
async fn expired_rows_are_purged() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let opaque = opaque_client(&app, "acme").await;
    let resource = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let token = access_token(&app, "acme", &opaque).await;
    // Nothing is expired yet.
    app.state.store.purge_expired(now()).await.unwrap();
    assert_eq!(
        introspect(&app, "acme", &resource, &token).await["active"],
        true
    );
    // An hour later the access token is gone from the database.
    let purged = app
        .state
        .store
        .purge_expired(tessera_core::UnixTime(now().0 + 3600))
        .await
        .unwrap();
    assert!(purged >= 1);
    let tenant = app.stored_tenant("acme").await;
    let hash = app
        .state
        .hasher
        .hash(tessera_core::secret::Purpose::AccessToken, &token);
    assert!(
        app.state
            .store
            .access_token_by_hash(tenant.id, &hash)
            .await
            .unwrap()
            .is_none()
    );
}
