//! Refresh tokens: rotation, reuse detection, narrowing (RFC 6749 §6, RFC 9700 §4.14).

use serde_json::Value;

use crate::helpers::*;

async fn refresh(
    app: &TestApp,
    client: &TestClient,
    token: &str,
    scope: Option<&str>,
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", token),
        ("client_id", client.id.as_str()),
    ];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    app.http
        .post(app.token_url("acme"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

async fn first_tokens(app: &TestApp, client: &TestClient) -> Value {
    let (verifier, challenge) = pkce_pair();
    let code = obtain_code(app, client, &challenge, "read write").await;
    let response = redeem_public(app, client, &code, &verifier).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn rotation_and_reuse_detection() {
    let (app, web) = acme(true).await;
    let first = first_tokens(&app, &web).await;
    let r1 = first["refresh_token"].as_str().unwrap();

    let second: Value = refresh(&app, &web, r1, None).await.json().await.unwrap();
    let r2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2, "rotated on every use");
    assert_eq!(second["scope"], "read write");

    // Reusing r1 fails and revokes the family, so r2 dies too.
    let reuse = refresh(&app, &web, r1, None).await;
    assert_eq!(reuse.status(), 400);
    assert_eq!(
        reuse.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let after = refresh(&app, &web, r2, None).await;
    assert_eq!(
        after.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn scope_may_narrow_but_not_widen() {
    let (app, web) = acme(true).await;
    let first = first_tokens(&app, &web).await;
    let narrowed = refresh(
        &app,
        &web,
        first["refresh_token"].as_str().unwrap(),
        Some("read"),
    )
    .await;
    assert_eq!(narrowed.status(), 200);
    let narrowed: Value = narrowed.json().await.unwrap();
    assert_eq!(narrowed["scope"], "read");
    assert_eq!(
        jwt_claims(narrowed["access_token"].as_str().unwrap())["scope"],
        "read"
    );
    // The new refresh token keeps the original grant (RFC 6749 §6).
    let full = refresh(
        &app,
        &web,
        narrowed["refresh_token"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(full.json::<Value>().await.unwrap()["scope"], "read write");

    let first = first_tokens(&app, &web).await;
    let widened = refresh(
        &app,
        &web,
        first["refresh_token"].as_str().unwrap(),
        Some("read admin"),
    )
    .await;
    assert_eq!(
        widened.json::<Value>().await.unwrap()["error"],
        "invalid_scope"
    );
    // A refused rotation spends nothing: the token still works.
    let after = refresh(&app, &web, first["refresh_token"].as_str().unwrap(), None).await;
    assert_eq!(after.status(), 200);
}

#[tokio::test]
async fn refresh_token_is_bound_to_its_client() {
    let (app, web) = acme(true).await;
    let other = web_client(&app, "acme", true).await;
    let first = first_tokens(&app, &web).await;
    let stolen = refresh(&app, &other, first["refresh_token"].as_str().unwrap(), None).await;
    let stolen = stolen.json::<Value>().await.unwrap();
    assert_eq!(stolen["error"], "invalid_grant");
    // Another client's attempt neither spends the token nor revokes its family.
    let own = refresh(&app, &web, first["refresh_token"].as_str().unwrap(), None).await;
    assert_eq!(own.status(), 200);
    let unknown = refresh(&app, &web, "not-a-token", None).await;
    let unknown = unknown.json::<Value>().await.unwrap();
    assert_eq!(unknown["error"], "invalid_grant");
    // Another client cannot tell a live refresh token from an unknown one.
    assert_eq!(stolen, unknown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rotations_succeed_once() {
    let (app, web) = acme(true).await;
    let first = first_tokens(&app, &web).await;
    let token = first["refresh_token"].as_str().unwrap();
    let attempts = (0..20).map(|_| refresh(&app, &web, token, None));
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
async fn a_scope_removed_from_the_tenant_is_no_longer_refreshed() {
    let (app, web) = acme(true).await;
    let first = first_tokens(&app, &web).await;
    let tenant = app.stored_tenant("acme").await;
    assert!(
        app.state
            .store
            .delete_scope(tenant.id, "write")
            .await
            .unwrap()
    );
    let refreshed: Value = refresh(&app, &web, first["refresh_token"].as_str().unwrap(), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refreshed["scope"], "read");
}

/// Refresh tokens lead with their issue time, so that their stored keys sort
/// by it; tokens of the earlier format (43 random characters, keyed by their
/// hash alone) still rotate.
#[tokio::test]
async fn refresh_tokens_of_the_earlier_format_still_rotate() {
    use tessera_core::secret::{BearerSecret, Purpose};
    let (app, web) = acme(true).await;
    let first = first_tokens(&app, &web).await;
    let issued = first["refresh_token"].as_str().unwrap();
    assert_eq!(issued.len(), 44);
    let tenant = app.stored_tenant("acme").await;
    let key = app.state.hasher.ordered_key(Purpose::RefreshToken, issued);
    assert_eq!(key.0.len(), 6 + 32);
    let mut earlier = app
        .state
        .store
        .refresh_token(tenant.id, &key)
        .await
        .unwrap()
        .expect("stored under its ordered key");

    let legacy = BearerSecret::from_random_bytes([42; 32]);
    assert_eq!(legacy.expose().len(), 43);
    earlier.token_hash = app
        .state
        .hasher
        .hash(Purpose::RefreshToken, legacy.expose());
    earlier.family_id = "a-family-of-the-earlier-format".into();
    app.state.store.put_refresh_token(&earlier).await.unwrap();

    let rotated = refresh(&app, &web, legacy.expose(), None).await;
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    assert_eq!(rotated["refresh_token"].as_str().unwrap().len(), 44);
    // Single use all the same.
    let again = refresh(&app, &web, legacy.expose(), None).await;
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}

/// Values that are not refresh tokens of this server, or only look like one,
/// are refused with invalid_grant, and spend nothing.
#[tokio::test]
async fn malformed_and_unknown_refresh_tokens_are_invalid_grants() {
    let (app, web) = acme(true).await;
    let first = first_tokens(&app, &web).await;
    let issued = first["refresh_token"].as_str().unwrap();
    let unknown = tessera_core::secret::BearerSecret::time_ordered(1_700_000_000_000, [9; 27]);
    for presented in [
        "",
        "x",
        &format!("{issued}="),
        &format!("{issued}A"),
        &issued[..43],
        &format!("{}+", &issued[..43]),
        &"é".repeat(22),
        unknown.expose(),
    ] {
        let response = refresh(&app, &web, presented, None).await;
        assert_eq!(response.status(), 400, "{presented:?}");
        let body: Value = response.json().await.unwrap();
        let expected = if presented.is_empty() {
            "invalid_request"
        } else {
            "invalid_grant"
        };
        assert_eq!(body["error"], expected, "{presented:?}");
    }
    let rotated = refresh(&app, &web, issued, None).await;
    assert_eq!(rotated.status(), 200);
}
