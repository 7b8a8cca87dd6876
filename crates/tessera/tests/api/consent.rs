//! Remembered consent, `prompt`, and the account page with "Revoke" and logout.

use serde_json::Value;
use tessera_core::AuthMethod;

use crate::helpers::*;

/// GETs an authorize URL in the browser and says what came back.
async fn first_answer(app: &TestApp, url: &str) -> (u16, String) {
    let response = app.browser.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    let body = response.text().await.unwrap();
    (status, location.unwrap_or(body))
}

#[tokio::test]
async fn consent_is_remembered_until_more_is_asked() {
    let (app, web) = acme(true).await;
    let (_, challenge) = pkce_pair();
    let read = authorize_url(&app, "acme", &web, &challenge, &[("scope", "read")]);
    let redirect = log_in_and_consent(&app, &read, "alice", "wonderland", "allow", None).await;
    assert!(param(&location_params(&redirect).1, "code").is_some());

    // The same scope again: straight back to the client with a code.
    let (status, location) = first_answer(&app, &read).await;
    assert_eq!(status, 302);
    assert!(
        location.starts_with(REDIRECT) && location.contains("code="),
        "{location}"
    );

    // A new scope asks again.
    let both = authorize_url(&app, "acme", &web, &challenge, &[("scope", "read write")]);
    let (status, page) = first_answer(&app, &both).await;
    assert_eq!(status, 200);
    assert!(page.contains("Allow access?"));

    // prompt=consent asks even for what was allowed.
    let forced = authorize_url(
        &app,
        "acme",
        &web,
        &challenge,
        &[("scope", "read"), ("prompt", "consent")],
    );
    let (status, page) = first_answer(&app, &forced).await;
    assert_eq!(status, 200);
    assert!(page.contains("Allow access?"));

    // prompt=login asks for the password again.
    let relogin = authorize_url(
        &app,
        "acme",
        &web,
        &challenge,
        &[("scope", "read"), ("prompt", "login")],
    );
    let (status, page) = first_answer(&app, &relogin).await;
    assert_eq!(status, 200);
    assert!(page.contains("autocomplete=\"current-password\""));
}

#[tokio::test]
async fn prompt_none_never_shows_a_page() {
    let (app, web) = acme(true).await;
    let (_, challenge) = pkce_pair();
    let silent = authorize_url(
        &app,
        "acme",
        &web,
        &challenge,
        &[("scope", "read"), ("prompt", "none")],
    );
    let expect_error = |status: u16, location: &str, error: &str| {
        assert_eq!(status, 302, "{location}");
        let url = url::Url::parse(location).unwrap();
        let params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(param(&params, "error"), Some(error));
        assert_eq!(param(&params, "state"), Some("xyz"));
    };
    let (status, location) = first_answer(&app, &silent).await;
    expect_error(status, &location, "login_required");

    // Logged in (consenting to `write` only), but not to `read`.
    let write = authorize_url(&app, "acme", &web, &challenge, &[("scope", "write")]);
    log_in_and_consent(&app, &write, "alice", "wonderland", "allow", None).await;
    let (status, location) = first_answer(&app, &silent).await;
    expect_error(status, &location, "consent_required");

    let silent_write = authorize_url(
        &app,
        "acme",
        &web,
        &challenge,
        &[("scope", "write"), ("prompt", "none")],
    );
    let (status, location) = first_answer(&app, &silent_write).await;
    assert_eq!(status, 302);
    assert!(location.contains("code="), "{location}");

    let bad = authorize_url(&app, "acme", &web, &challenge, &[("prompt", "none login")]);
    let (status, location) = first_answer(&app, &bad).await;
    expect_error(status, &location, "invalid_request");
}

async fn introspect(app: &TestApp, resource: &TestClient, token: &str) -> Value {
    app.http
        .post(format!("{}/introspect", app.issuer("acme")))
        .basic_auth(&resource.id, resource.secret.as_deref())
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn account_page_lists_and_revokes_applications_and_logs_out() {
    let (app, web) = acme(true).await;
    let resource = app
        .service_client("acme", AuthMethod::ClientSecretBasic)
        .await;
    let account = format!("{}/account", app.issuer("acme"));

    // Not signed in: the login form, which leads back to the account page.
    let html = app
        .browser
        .get(&account)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("autocomplete=\"current-password\""));
    assert!(!html.contains("name=\"request\""));
    let login = app
        .browser
        .post(format!("{}/login", app.issuer("acme")))
        .form(&[
            ("csrf", hidden_field(&html, "csrf").as_str()),
            ("username", "alice"),
            ("password", "wonderland"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    assert_eq!(login.headers()["location"], account.as_str());

    // Authorize the app and get tokens.
    let (verifier, challenge) = pkce_pair();
    let code = obtain_code(&app, &web, &challenge, "read write").await;
    let tokens: Value = redeem_public(&app, &web, &code, &verifier)
        .await
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(introspect(&app, &resource, access).await["active"], true);

    let html = app
        .browser
        .get(&account)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("Signed in as <strong>alice</strong>"),
        "{html}"
    );
    assert!(html.contains("Photo &#60;Printer&#62;") || html.contains("Photo &lt;Printer&gt;"));
    assert!(html.contains("read write"));
    let csrf = hidden_field(&html, "csrf");

    // A forged revoke is refused; the real one ends the app's access.
    let forged = app
        .browser
        .post(format!("{account}/revoke"))
        .form(&[("csrf", "forged"), ("client_id", web.id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    assert_eq!(introspect(&app, &resource, access).await["active"], true);
    let revoked = app
        .browser
        .post(format!("{account}/revoke"))
        .form(&[("csrf", csrf.as_str()), ("client_id", web.id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 303);
    assert_eq!(introspect(&app, &resource, access).await["active"], false);
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
    let html = app
        .browser
        .get(&account)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("You have not allowed any application"));
    // The consent is gone: the next authorization asks again.
    let url = authorize_url(&app, "acme", &web, &challenge, &[("scope", "read")]);
    assert!(
        app.browser
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("Allow access?")
    );

    // Logout: CSRF-protected, then the session is over.
    let forged = app
        .browser
        .post(format!("{}/logout", app.issuer("acme")))
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    let out = app
        .browser
        .post(format!("{}/logout", app.issuer("acme")))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let html = app
        .browser
        .get(&account)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("autocomplete=\"current-password\""),
        "signed out"
    );
}

#[tokio::test]
async fn revoking_on_the_account_page_voids_a_code_not_yet_redeemed() {
    let (app, web) = acme(true).await;
    let account = format!("{}/account", app.issuer("acme"));
    // The browser flow leaves a session, so the account page is signed in.
    let (verifier, challenge) = pkce_pair();
    let code = obtain_code(&app, &web, &challenge, "read").await;
    let html = app
        .browser
        .get(&account)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let revoked = app
        .browser
        .post(format!("{account}/revoke"))
        .form(&[
            ("csrf", hidden_field(&html, "csrf").as_str()),
            ("client_id", web.id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 303);

    let redeemed = redeem_public(&app, &web, &code, &verifier).await;
    assert_eq!(redeemed.status(), 400);
    assert_eq!(
        redeemed.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}
