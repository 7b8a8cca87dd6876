//! The implicit grant (RFC 6749 §4.2): off unless the tenant and the client
//! both opt in; the token comes back in the fragment, never with a refresh token.

use serde_json::Value;
use tessera_core::{AuthMethod, GrantType, TokenFormat};
use tessera_server::service::admin::{self, NewClient};

use crate::helpers::*;

async fn implicit_client(app: &TestApp) -> TestClient {
    app.create_client(
        "acme",
        NewClient {
            name: "legacy spa".into(),
            auth_method: AuthMethod::None,
            grant_types: vec![GrantType::Implicit],
            redirect_uris: vec![REDIRECT.into()],
            scopes: vec!["read".into(), "write".into()],
            audiences: vec![],
            token_format: TokenFormat::Jwt,
            app_type: None,
            access_token_ttl: None,
            refresh_token_ttl: None,
        },
    )
    .await
}

fn implicit_url(app: &TestApp, client: &TestClient) -> String {
    format!(
        "{}/authorize?response_type=token&client_id={}&redirect_uri={REDIRECT}&state=s1&scope=read+write",
        app.issuer("acme"),
        client.id
    )
}

fn fragment_params(response: &reqwest::Response) -> Vec<(String, String)> {
    let location = response.headers()["location"].to_str().unwrap();
    let url = url::Url::parse(location).unwrap();
    assert!(url.query().is_none(), "nothing in the query: {location}");
    url::form_urlencoded::parse(url.fragment().unwrap().as_bytes())
        .into_owned()
        .collect()
}

async fn metadata(app: &TestApp) -> Value {
    app.http
        .get(format!(
            "{}/.well-known/openid-configuration",
            app.issuer("acme")
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn refused_unless_tenant_and_client_opt_in() {
    let (app, web) = acme(true).await;
    let implicit = implicit_client(&app).await;
    assert_eq!(
        metadata(&app).await["response_types_supported"],
        serde_json::json!(["code"])
    );
    // Tenant setting off: even a registered client is refused, in the fragment.
    let response = app
        .http
        .get(implicit_url(&app, &implicit))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let params = fragment_params(&response);
    assert_eq!(param(&params, "error"), Some("unsupported_response_type"));
    assert_eq!(param(&params, "state"), Some("s1"));

    admin::set_allow_implicit(&app.state, "acme", true)
        .await
        .unwrap();
    let metadata = metadata(&app).await;
    assert_eq!(
        metadata["response_types_supported"],
        serde_json::json!(["code", "token"])
    );
    assert!(
        metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&"implicit".into())
    );
    // Tenant on, client not registered for it.
    let response = app.http.get(implicit_url(&app, &web)).send().await.unwrap();
    assert_eq!(
        param(&fragment_params(&response), "error"),
        Some("unsupported_response_type")
    );
}

#[tokio::test]
async fn token_in_the_fragment_with_state_and_iss() {
    let (app, _) = acme(true).await;
    admin::set_allow_implicit(&app.state, "acme", true)
        .await
        .unwrap();
    let client = implicit_client(&app).await;
    let redirect = log_in_and_consent(
        &app,
        &implicit_url(&app, &client),
        "alice",
        "wonderland",
        "allow",
        Some(&["read"]),
    )
    .await;
    assert_eq!(redirect.status(), 303);
    let params = fragment_params(&redirect);
    let issuer = app.issuer("acme");
    assert_eq!(param(&params, "token_type"), Some("Bearer"));
    assert_eq!(param(&params, "expires_in"), Some("900"));
    assert_eq!(
        param(&params, "scope"),
        Some("read"),
        "narrowed, so reported"
    );
    assert_eq!(param(&params, "state"), Some("s1"));
    assert_eq!(param(&params, "iss"), Some(issuer.as_str()));
    assert_eq!(param(&params, "refresh_token"), None, "RFC 6749 §4.2.2");
    assert_eq!(param(&params, "code"), None);
    let claims = verify_jwt(
        param(&params, "access_token").unwrap(),
        &app.jwks("acme").await,
        &issuer,
        &issuer,
    )
    .unwrap();
    assert_eq!(claims["client_id"], client.id.as_str());

    // Deny also answers in the fragment.
    let redirect = log_in_and_consent(
        &app,
        &implicit_url(&app, &client),
        "alice",
        "wonderland",
        "deny",
        None,
    )
    .await;
    assert_eq!(
        param(&fragment_params(&redirect), "error"),
        Some("access_denied")
    );
}
