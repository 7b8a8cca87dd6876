//! Metadata (RFC 8414), JWKS and health.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn metadata_lists_exactly_what_the_tenant_supports() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.create_scope("acme", "read", "Read").await;
    let issuer = app.issuer("acme");
    let path_insertion = format!(
        "{}/.well-known/oauth-authorization-server/t/acme",
        app.base_url
    );
    let under_issuer = format!("{issuer}/.well-known/openid-configuration");
    for url in [path_insertion, under_issuer] {
        let metadata: Value = app
            .http
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(metadata["issuer"], issuer.as_str(), "{url}");
        assert_eq!(
            metadata["authorization_endpoint"],
            format!("{issuer}/authorize")
        );
        assert_eq!(metadata["token_endpoint"], format!("{issuer}/token"));
        assert_eq!(metadata["jwks_uri"], format!("{issuer}/jwks"));
        assert_eq!(metadata["scopes_supported"], serde_json::json!(["read"]));
        assert_eq!(
            metadata["response_types_supported"],
            serde_json::json!(["code"])
        );
        assert_eq!(
            metadata["grant_types_supported"],
            serde_json::json!(["authorization_code", "client_credentials", "refresh_token"])
        );
        assert_eq!(
            metadata["token_endpoint_auth_methods_supported"],
            serde_json::json!(["client_secret_basic", "client_secret_post", "none"])
        );
        assert_eq!(
            metadata["code_challenge_methods_supported"],
            serde_json::json!(["S256"])
        );
        assert_eq!(
            metadata["authorization_response_iss_parameter_supported"],
            true
        );
    }
}

#[tokio::test]
async fn response_modes_list_the_fragment_only_with_the_implicit_grant() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let url = format!(
        "{}/.well-known/oauth-authorization-server",
        app.issuer("acme")
    );
    let modes = || async {
        let metadata: Value = app
            .http
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        metadata["response_modes_supported"].clone()
    };
    // Codes come back in the query; nothing comes back in the fragment.
    assert_eq!(modes().await, serde_json::json!(["query"]));
    tessera_server::service::admin::set_allow_implicit(&app.state, "acme", true)
        .await
        .unwrap();
    assert_eq!(modes().await, serde_json::json!(["query", "fragment"]));
    tessera_server::service::admin::set_allow_implicit(&app.state, "acme", false)
        .await
        .unwrap();
    assert_eq!(modes().await, serde_json::json!(["query"]));
}

#[tokio::test]
async fn jwks_publishes_one_es256_key_without_private_parts() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let jwks = app.jwks("acme").await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert!(key["kid"].is_string());
    assert!(
        key.get("d").is_none(),
        "the private key never leaves the server"
    );
}

#[tokio::test]
async fn unknown_tenant_is_404_and_health_is_200() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server/t/nope",
            app.base_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let health = app
        .http
        .get(format!("{}/healthz", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
