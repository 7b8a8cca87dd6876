//! Each tenant its own look, and only on its own pages.

use base64::Engine;
use tessera_server::service::admin::{self, BrandingChanges};

use crate::helpers::*;

/// A 1×1 PNG.
pub fn tiny_png() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
        .unwrap()
}

pub async fn brand_acme(app: &TestApp) {
    admin::set_branding(
        &app.state,
        "acme",
        BrandingChanges {
            display_name: Some("Acme <Photos>".into()),
            accent_color: Some("#a03".into()),
            logo: Some(tiny_png()),
            css: Some(b"h1 { letter-spacing: .02em; }".to_vec()),
        },
        now(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_tenants_look_shows_on_its_pages_only() {
    let (app, web) = acme(true).await;
    app.create_tenant("other").await;
    brand_acme(&app).await;
    let (_, challenge) = pkce_pair();
    let response = app
        .browser
        .get(authorize_url(&app, "acme", &web, &challenge, &[]))
        .send()
        .await
        .unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("style-src 'self'")
            && csp.contains("img-src 'self'")
    );
    let html = response.text().await.unwrap();
    assert!(
        html.contains("Acme &#60;Photos&#62;") || html.contains("Acme &lt;Photos&gt;"),
        "escaped: {html}"
    );
    let issuer = app.issuer("acme");
    let css_url =
        between(&html, "<link rel=\"stylesheet\" href=\"", "\">\n<link").replace("&#x2f;", "/");
    assert!(css_url.ends_with("/assets/tessera.css"));
    assert!(html.contains(&format!("{issuer}/branding/style.css?v=")));
    assert!(html.contains(&format!("{issuer}/branding/logo?v=")));

    let logo = app
        .http
        .get(format!("{issuer}/branding/logo"))
        .send()
        .await
        .unwrap();
    assert_eq!(logo.headers()["content-type"], "image/png");
    assert_eq!(logo.headers()["x-content-type-options"], "nosniff");
    assert_eq!(logo.bytes().await.unwrap().to_vec(), tiny_png());
    let css = app
        .http
        .get(format!("{issuer}/branding/style.css"))
        .send()
        .await
        .unwrap();
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    let css = css.text().await.unwrap();
    assert!(css.contains("--accent: #a03;") && css.contains("letter-spacing"));

    // Another tenant's pages show none of it.
    let other_account = app
        .http
        .get(format!("{}/account", app.issuer("other")))
        .send()
        .await
        .unwrap();
    let html = other_account.text().await.unwrap();
    assert!(!html.contains("Acme"));
    assert!(!html.contains("/branding/"));
    assert_eq!(
        app.http
            .get(format!("{}/branding/logo", app.issuer("other")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn branding_values_are_validated() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    let attempts = [
        BrandingChanges {
            accent_color: Some("red; } body { display: none".into()),
            ..Default::default()
        },
        BrandingChanges {
            logo: Some(b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>".to_vec()),
            ..Default::default()
        },
        BrandingChanges {
            logo: Some(vec![0x89; 300 * 1024]),
            ..Default::default()
        },
        BrandingChanges {
            css: Some(vec![0xFF, 0xFE, 0x00]),
            ..Default::default()
        },
        BrandingChanges {
            display_name: Some("\u{0007}".into()),
            ..Default::default()
        },
    ];
    for changes in attempts {
        assert!(
            admin::set_branding(&app.state, "acme", changes, now())
                .await
                .is_err()
        );
    }
    let tenant = app.stored_tenant("acme").await;
    assert!(
        app.state
            .store
            .branding_summary(tenant.id)
            .await
            .unwrap()
            .is_none(),
        "nothing stored"
    );
}
