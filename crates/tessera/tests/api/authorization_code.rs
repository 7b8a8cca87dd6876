//! The authorization code grant with PKCE, through the login and consent pages.

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge, RedirectUrl,
    Scope, TokenResponse, TokenUrl,
};

use crate::helpers::*;

#[tokio::test]
async fn oauth2_crate_completes_the_flow_with_a_partial_grant_and_refreshes() {
    let (app, web) = acme(false).await;
    let issuer = app.issuer("acme");
    let client = BasicClient::new(ClientId::new(web.id.clone()))
        .set_client_secret(ClientSecret::new(web.secret.clone().unwrap()))
        .set_auth_uri(AuthUrl::new(format!("{issuer}/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(format!("{issuer}/token")).unwrap())
        .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("read".into()))
        .add_scope(Scope::new("write".into()))
        .set_pkce_challenge(challenge)
        .url();

    // The user unticks `write`: a partial grant.
    let redirect = log_in_and_consent(
        &app,
        url.as_str(),
        "alice",
        "wonderland",
        "allow",
        Some(&["read"]),
    )
    .await;
    assert_eq!(redirect.status(), 303);
    let (location, params) = location_params(&redirect);
    assert!(location.starts_with(REDIRECT));
    assert_eq!(param(&params, "state"), Some(csrf.secret().as_str()));
    assert_eq!(param(&params, "iss"), Some(issuer.as_str()), "RFC 9207 iss");
    let code = param(&params, "code").unwrap();
    assert!(code.len() >= 43, "a code carries at least 256 bits");

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();
    let scopes: Vec<String> = token
        .scopes()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        scopes,
        vec!["read"],
        "the response reports the narrowed scope"
    );
    let claims = verify_jwt(
        token.access_token().secret(),
        &app.jwks("acme").await,
        &issuer,
        &issuer,
    )
    .unwrap();
    let alice = app.stored_tenant("acme").await;
    let alice = app
        .state
        .store
        .user_by_username(alice.id, "alice")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claims["sub"], alice.id.as_str());
    assert_eq!(claims["client_id"], web.id.as_str());
    assert_eq!(claims["scope"], "read");
    assert!(claims["auth_time"].is_i64());
    assert!(claims["jti"].is_string());

    let refreshed = client
        .exchange_refresh_token(token.refresh_token().unwrap())
        .request_async(&http)
        .await
        .unwrap();
    assert_ne!(
        refreshed.refresh_token().unwrap().secret(),
        token.refresh_token().unwrap().secret()
    );
    let claims = verify_jwt(
        refreshed.access_token().secret(),
        &app.jwks("acme").await,
        &issuer,
        &issuer,
    )
    .unwrap();
    assert_eq!(claims["sub"], alice.id.as_str());
    assert_eq!(claims["scope"], "read", "a refresh never widens the grant");
}

#[tokio::test]
async fn public_client_with_pkce_gets_tokens() {
    let (app, web) = acme(true).await;
    let (verifier, challenge) = pkce_pair();
    let code = obtain_code(&app, &web, &challenge, "read write").await;
    let response = redeem_public(&app, &web, &code, &verifier).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "read write");
    assert!(body["refresh_token"].is_string());
}

#[tokio::test]
async fn deny_redirects_with_access_denied() {
    let (app, web) = acme(true).await;
    let (_, challenge) = pkce_pair();
    let url = authorize_url(&app, "acme", &web, &challenge, &[]);
    let redirect = log_in_and_consent(&app, &url, "alice", "wonderland", "deny", None).await;
    let (location, params) = location_params(&redirect);
    assert!(location.starts_with(REDIRECT));
    assert_eq!(param(&params, "error"), Some("access_denied"));
    assert_eq!(param(&params, "state"), Some("xyz"));
    assert_eq!(param(&params, "iss"), Some(app.issuer("acme").as_str()));
    assert_eq!(param(&params, "code"), None);
}

#[tokio::test]
async fn unticking_every_scope_is_a_denial() {
    let (app, web) = acme(true).await;
    let (_, challenge) = pkce_pair();
    let url = authorize_url(&app, "acme", &web, &challenge, &[("scope", "read")]);
    let redirect = log_in_and_consent(&app, &url, "alice", "wonderland", "allow", Some(&[])).await;
    let (_, params) = location_params(&redirect);
    assert_eq!(param(&params, "error"), Some("access_denied"));
}

/// Problems with client_id or redirect_uri: an HTML page, never a redirect
/// (RFC 6749 §4.1.2.1, RFC 9700 §4.1).
#[tokio::test]
async fn untrusted_client_or_redirect_shows_a_page() {
    let (app, web) = acme(true).await;
    let base = format!("{}/authorize", app.issuer("acme"));
    let id = web.id.as_str();
    let cases = [
        format!("{base}?response_type=code&redirect_uri={REDIRECT}"),
        format!("{base}?response_type=code&client_id=nope&redirect_uri={REDIRECT}"),
        format!("{base}?response_type=code&client_id={id}&redirect_uri=https://evil.example/cb"),
        format!("{base}?response_type=code&client_id={id}&redirect_uri={REDIRECT}/extra"),
        format!("{base}?response_type=code&client_id={id}&client_id={id}&redirect_uri={REDIRECT}"),
        format!(
            "{base}?response_type=code&client_id={id}&redirect_uri={REDIRECT}&redirect_uri={REDIRECT}"
        ),
        format!("{base}?response_type=code&client_id=%FF"),
    ];
    for url in cases {
        let response = app.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 400, "{url}");
        assert!(response.headers().get("location").is_none(), "{url}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(
            response.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'")
        );
    }
}

#[tokio::test]
async fn request_errors_are_redirected_with_state_and_iss() {
    let (app, web) = acme(true).await;
    let (_, challenge) = pkce_pair();
    let issuer = app.issuer("acme");
    let base = format!(
        "{issuer}/authorize?client_id={}&redirect_uri={REDIRECT}&state=s1",
        web.id
    );
    let pkce = format!("code_challenge={challenge}&code_challenge_method=S256");
    let cases = [
        (format!("{base}&response_type=code"), "invalid_request"), // public client without PKCE
        (
            format!(
                "{base}&response_type=code&code_challenge={challenge}&code_challenge_method=plain"
            ),
            "invalid_request",
        ),
        (
            format!("{base}&response_type=code&code_challenge={challenge}"),
            "invalid_request",
        ), // method defaults to plain
        (
            format!("{base}&response_type=code&code_challenge=short&code_challenge_method=S256"),
            "invalid_request",
        ),
        (
            format!("{base}&response_type=id_token&{pkce}"),
            "unsupported_response_type",
        ),
        (format!("{base}&{pkce}"), "invalid_request"),
        (
            format!("{base}&response_type=code&{pkce}&scope=admin"),
            "invalid_scope",
        ),
        (
            format!("{base}&response_type=code&{pkce}&scope=read&scope=write"),
            "invalid_request",
        ),
    ];
    for (url, expected) in cases {
        let response = app.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 302, "{url}");
        let (location, params) = location_params(&response);
        assert!(location.starts_with(REDIRECT), "{url}");
        assert_eq!(param(&params, "error"), Some(expected), "{url}");
        assert_eq!(param(&params, "state"), Some("s1"), "{url}");
        assert_eq!(param(&params, "iss"), Some(issuer.as_str()), "{url}");
    }
}

#[tokio::test]
async fn code_is_single_use_and_replay_revokes_its_tokens() {
    let (app, web) = acme(true).await;
    let (verifier, challenge) = pkce_pair();
    let code = obtain_code(&app, &web, &challenge, "read").await;
    let first: serde_json::Value = redeem_public(&app, &web, &code, &verifier)
        .await
        .json()
        .await
        .unwrap();
    let refresh_token = first["refresh_token"].as_str().unwrap();

    let replay = redeem_public(&app, &web, &code, &verifier).await;
    assert_eq!(replay.status(), 400);
    assert_eq!(
        replay.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    // RFC 6749 §4.1.2: the tokens issued from the code are revoked.
    let refresh = app
        .http
        .post(app.token_url("acme"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", &web.id),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), 400);
    assert_eq!(
        refresh.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn pkce_and_binding_failures_are_invalid_grant() {
    let (app, web) = acme(true).await;
    let other = web_client(&app, "acme", true).await;
    let (verifier, challenge) = pkce_pair();
    let (wrong_verifier, _) = pkce_pair();
    let unknown = tessera_core::secret::BearerSecret::from_random_bytes([3; 32]);
    let unknown_code = redeem_public(&app, &web, unknown.expose(), &verifier).await;
    let unknown_code: serde_json::Value = unknown_code.json().await.unwrap();

    for attempt in [
        "wrong verifier",
        "missing verifier",
        "other client",
        "other redirect",
    ] {
        let code = obtain_code(&app, &web, &challenge, "read").await;
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.clone()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("client_id", web.id.clone()),
            ("code_verifier", verifier.clone()),
        ];
        match attempt {
            "wrong verifier" => form[4].1 = wrong_verifier.clone(),
            "missing verifier" => {
                form.pop();
            }
            "other client" => form[3].1 = other.id.clone(),
            _ => form[2].1 = format!("{REDIRECT}/other"),
        }
        let response = app
            .http
            .post(app.token_url("acme"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{attempt}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant", "{attempt}");
        if attempt == "other client" {
            // Another client cannot tell a live code from an unknown one.
            assert_eq!(body, unknown_code);
        }
        // A refused attempt spends nothing: the code is still there for its
        // client, so that whoever injects a stolen code cannot burn it.
        let rightful = redeem_public(&app, &web, &code, &verifier).await;
        assert_eq!(rightful.status(), 200, "{attempt}");
    }
}

/// Values that cannot be codes of this server, and unknown ones, are
/// invalid_grant; none of them touches a real code.
#[tokio::test]
async fn malformed_and_unknown_codes_are_invalid_grant() {
    let (app, web) = acme(true).await;
    let (verifier, challenge) = pkce_pair();
    let code = obtain_code(&app, &web, &challenge, "read").await;
    let unknown = tessera_core::secret::BearerSecret::from_random_bytes([3; 32]);
    for presented in [
        "x",
        &format!("{code}="),
        &code[..42],
        &format!("{}+", &code[..42]),
        unknown.expose(),
    ] {
        let response = redeem_public(&app, &web, presented, &verifier).await;
        assert_eq!(response.status(), 400, "{presented:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant", "{presented:?}");
    }
    assert_eq!(
        redeem_public(&app, &web, &code, &verifier).await.status(),
        200
    );
}

#[tokio::test]
async fn concurrent_redemptions_of_one_code_succeed_once() {
    let (app, web) = acme(true).await;
    let (verifier, challenge) = pkce_pair();
    let code = obtain_code(&app, &web, &challenge, "read").await;
    let attempts = (0..20).map(|_| redeem_public(&app, &web, &code, &verifier));
    let statuses: Vec<u16> = futures::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 400).count(),
        19,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let (app, web) = acme(true).await;
    let (_, challenge) = pkce_pair();
    let url = authorize_url(&app, "acme", &web, &challenge, &[]);
    let mut bodies = Vec::new();
    for (username, password) in [("alice", "wrong"), ("mallory", "wonderland")] {
        let html = app
            .browser
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let response = submit_login(&app.browser, &html, username, password).await;
        assert_eq!(response.status(), 401);
        assert!(
            response
                .headers()
                .get("set-cookie")
                .is_none_or(|c| !c.to_str().unwrap().contains("tessera_session"))
        );
        let body = response.text().await.unwrap();
        bodies.push(
            body.replace(username, "USER")
                .split("name=\"request\"")
                .next()
                .unwrap()
                .to_owned(),
        );
        assert!(bodies.last().unwrap().contains("not correct"));
    }
    assert_eq!(bodies[0], bodies[1]);
}

#[tokio::test]
async fn forms_without_a_valid_csrf_token_are_refused() {
    let (app, web) = acme(true).await;
    let (_, challenge) = pkce_pair();
    let url = authorize_url(&app, "acme", &web, &challenge, &[]);
    let html = app
        .browser
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Right request, forged token.
    let response = app
        .browser
        .post(format!("{}/login", app.issuer("acme")))
        .form(&[
            ("request", hidden_field(&html, "request").as_str()),
            ("csrf", "forged"),
            ("username", "alice"),
            ("password", "wonderland"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // Right token, but from another browser (no cookie).
    let response = submit_login(&app.http, &html, "alice", "wonderland").await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn session_cookie_is_protected_renewed_and_reused() {
    let (app, web) = acme(true).await;
    let (_, challenge) = pkce_pair();
    let url = authorize_url(&app, "acme", &web, &challenge, &[]);
    let html = app
        .browser
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let login = submit_login(&app.browser, &html, "alice", "wonderland").await;
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("tessera_session="));
    assert!(cookie.contains("HttpOnly"));
    assert!(cookie.contains("SameSite=Lax"));
    assert!(cookie.contains("Path=/t/acme/"));
    assert!(!cookie.contains("Secure"), "plain http public URL");

    // Logged in: the next authorization goes straight to consent.
    let again = app.browser.get(&url).send().await.unwrap();
    let html = again.text().await.unwrap();
    assert!(html.contains("Allow access?"), "{html}");
    assert!(
        html.contains("Photo &#60;Printer&#62;") || html.contains("Photo &lt;Printer&gt;"),
        "client name escaped"
    );
    assert!(html.contains("Read your photos"));
}

#[tokio::test]
async fn cookies_are_secure_when_the_public_url_is_https() {
    let app = spawn_app_with_public_url("https://id.example.com").await;
    app.create_tenant("acme").await;
    app.create_user("acme", "alice", "wonderland").await;
    let web = web_client(&app, "acme", true).await;
    let (_, challenge) = pkce_pair();
    // Requests go to the local address; every URL the server builds uses the public one.
    let url = authorize_url(&app, "acme", &web, &challenge, &[]);
    let page = app.browser.get(&url).send().await.unwrap();
    let cookie = page.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("tessera_browser=") && cookie.ends_with("; Secure"),
        "{cookie}"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("action=\"https://id.example.com/t/acme/login\""));
}

#[tokio::test]
async fn consent_form_needs_its_csrf_token_and_the_session() {
    let (app, web) = acme(true).await;
    let (_, challenge) = pkce_pair();
    let url = authorize_url(&app, "acme", &web, &challenge, &[]);
    let html = app
        .browser
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let login = submit_login(&app.browser, &html, "alice", "wonderland").await;
    let consent_url = login.headers()["location"].to_str().unwrap().to_owned();
    let html = app
        .browser
        .get(&consent_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let request = hidden_field(&html, "request");
    let csrf = hidden_field(&html, "csrf");
    let consent = format!("{}/consent", app.issuer("acme"));
    let forged = app
        .browser
        .post(&consent)
        .form(&[
            ("request", request.as_str()),
            ("csrf", "forged"),
            ("decision", "allow"),
            ("scope", "read"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    assert!(forged.headers().get("location").is_none());
    let no_session = app
        .http
        .post(&consent)
        .form(&[
            ("request", request.as_str()),
            ("csrf", csrf.as_str()),
            ("decision", "allow"),
            ("scope", "read"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(no_session.status(), 400);
    // The genuine form still works once, and only once.
    let form = [
        ("request", request.as_str()),
        ("csrf", csrf.as_str()),
        ("decision", "allow"),
        ("scope", "read"),
    ];
    let genuine = app.browser.post(&consent).form(&form).send().await.unwrap();
    assert_eq!(genuine.status(), 303);
    let twice = app.browser.post(&consent).form(&form).send().await.unwrap();
    assert_eq!(twice.status(), 400, "one decision per request");
}

#[tokio::test]
async fn every_login_gets_a_new_session_id() {
    let (app, web) = acme(true).await;
    let mut session_ids = Vec::new();
    for _ in 0..2 {
        let (_, challenge) = pkce_pair();
        let url = authorize_url(&app, "acme", &web, &challenge, &[]);
        // A fresh browser each time, carrying the previous session cookie along.
        let html = app.http.get(&url).send().await.unwrap();
        let browser_cookie = html.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let html = html.text().await.unwrap();
        let mut cookies = browser_cookie.clone();
        if let Some(previous) = session_ids.last() {
            cookies = format!("{cookies}; tessera_session={previous}");
        }
        let login = app
            .http
            .post(format!("{}/login", app.issuer("acme")))
            .header("cookie", cookies)
            .form(&[
                ("request", hidden_field(&html, "request").as_str()),
                ("csrf", hidden_field(&html, "csrf").as_str()),
                ("username", "alice"),
                ("password", "wonderland"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 303);
        let set = login.headers()["set-cookie"].to_str().unwrap();
        let id = between(set, "tessera_session=", ";");
        session_ids.push(id);
    }
    assert_ne!(session_ids[0], session_ids[1]);
}

#[tokio::test]
async fn confidential_clients_that_send_pkce_must_complete_it() {
    let (app, web) = acme(false).await;
    let (verifier, challenge) = pkce_pair();
    let (wrong, _) = pkce_pair();
    for (presented, expected) in [
        (Some(wrong.as_str()), 400),
        (None, 400),
        (Some(verifier.as_str()), 200),
    ] {
        let code = obtain_code(&app, &web, &challenge, "read").await;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
        ];
        if let Some(presented) = presented {
            form.push(("code_verifier", presented));
        }
        let response = app
            .http
            .post(app.token_url("acme"))
            .basic_auth(&web.id, web.secret.as_deref())
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{presented:?}");
    }
}

#[tokio::test]
async fn an_expired_code_is_invalid_grant() {
    let (app, web) = acme(true).await;
    let (verifier, challenge) = pkce_pair();
    let tenant = app.stored_tenant("acme").await;
    let alice = app
        .state
        .store
        .user_by_username(tenant.id, "alice")
        .await
        .unwrap()
        .unwrap();
    // A code minted a minute and a half ago, as the consent step would have.
    let code = "an-old-code-of-forty-three-characters-long0";
    assert_eq!(code.len(), 43);
    app.state
        .store
        .put_authorization_code(&tessera_core::AuthorizationCode {
            code_hash: app
                .state
                .hasher
                .hash(tessera_core::secret::Purpose::AuthorizationCode, code),
            tenant_id: tenant.id,
            client_id: tessera_core::ClientId::new(web.id.clone()),
            user_id: alice.id,
            redirect_uri: tessera_core::RedirectUri::parse(REDIRECT).unwrap(),
            redirect_uri_in_request: true,
            scope: tessera_core::ScopeSet::parse("read").unwrap(),
            code_challenge: Some(
                tessera_core::pkce::CodeChallenge::parse_s256(&challenge, Some("S256")).unwrap(),
            ),
            auth_time: tessera_core::UnixTime(now().0 - 90),
            expires_at: tessera_core::UnixTime(now().0 - 30),
            family_id: "expired-family".into(),
        })
        .await
        .unwrap();
    let response = redeem_public(&app, &web, code, &verifier).await;
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_description"], "the code has expired");
}

/// POST to the authorization endpoint (OpenID Connect Core §3.1.2.1): the
/// same parameters come back as a GET of the endpoint, and the flow goes on
/// from there. A browser already signed in goes straight to its answer.
#[tokio::test]
async fn a_posted_authorization_request_continues_as_a_get() {
    let (app, client) = acme(true).await;
    let (verifier, challenge) = pkce_pair();
    let url = authorize_url(
        &app,
        "acme",
        &client,
        &challenge,
        &[("scope", "read write"), ("nonce", "n-0 ü&=")],
    );
    let (endpoint, query) = url.split_once('?').unwrap();
    let post = |body: &str, content_type: &str| {
        app.browser
            .post(endpoint)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
    };
    let posted = post(query, "application/x-www-form-urlencoded")
        .await
        .unwrap();
    assert_eq!(posted.status(), 303);
    assert_eq!(posted.headers()["cache-control"], "no-store");
    let location = posted.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&format!("{}/authorize?", app.issuer("acme"))));
    let pairs = |url: &str| -> Vec<(String, String)> {
        url::Url::parse(url)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect()
    };
    assert_eq!(pairs(&location), pairs(&url));

    let redirect = log_in_and_consent(&app, &location, "alice", "wonderland", "allow", None).await;
    let (to, params) = location_params(&redirect);
    assert!(to.starts_with(REDIRECT));
    let code = param(&params, "code").expect("a code");
    let tokens = redeem_public(&app, &client, code, &verifier).await;
    assert_eq!(tokens.status(), 200);

    // Signed in, with consent remembered: the posted request ends at the
    // client with a new code, no page shown.
    let again = post(query, "application/x-www-form-urlencoded")
        .await
        .unwrap();
    let location = again.headers()["location"].to_str().unwrap().to_owned();
    let answer = app.browser.get(&location).send().await.unwrap();
    let (to, params) = location_params(&answer);
    assert!(to.starts_with(REDIRECT), "{to}");
    assert!(param(&params, "code").is_some());

    // A body that is not a form, or not UTF-8, gets the error page; so does
    // an unknown client once the GET checks it: never a redirect to a URI
    // nobody registered.
    for (body, content_type) in [
        ("{}", "application/json"),
        ("client_id=%FF", "application/x-www-form-urlencoded"),
    ] {
        let refused = post(body, content_type).await.unwrap();
        assert_eq!(refused.status(), 400, "{body}");
        assert!(refused.headers().get("location").is_none());
        assert!(
            refused.text().await.unwrap().contains("<html"),
            "an HTML page"
        );
    }
    let unknown = post(
        "response_type=code&client_id=nobody&redirect_uri=https%3A%2F%2Fevil.example%2F",
        "application/x-www-form-urlencoded",
    )
    .await
    .unwrap();
    let location = unknown.headers()["location"].to_str().unwrap().to_owned();
    let page = app.browser.get(&location).send().await.unwrap();
    assert_eq!(page.status(), 400);
    assert!(page.headers().get("location").is_none());

    // Parameters in the POST's own query would be lost on the way: refused.
    let (body, in_query) = query.split_once("&code_challenge=").unwrap();
    let split = app
        .browser
        .post(format!("{endpoint}?code_challenge={in_query}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(split.status(), 400);
    assert!(split.headers().get("location").is_none());
}
