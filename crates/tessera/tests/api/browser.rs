//! End to end in a real headless Chromium: log in and consent as a person
//! would, and arrive at the client's redirect URI with a code.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use tessera_core::{AuthMethod, GrantType, TokenFormat};
use tessera_server::service::admin::NewClient;
use tokio::net::TcpListener;

use crate::helpers::*;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_chromedriver() -> (Driver, String) {
    let port = crate::helpers::free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is required for the browser test: apt-get install chromium chromium-driver (see .ci/run)");
    let driver = Driver(child);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (driver, format!("http://127.0.0.1:{port}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start");
}

/// A stand-in for the client application: answers its redirect URI.
async fn start_callback_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/callback",
        listener.local_addr().unwrap().port()
    );
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(|| async {
            axum::response::Html("<h1 id=\"back-at-app\">Back at the app</h1>")
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_logs_in_and_consents_in_chromium() {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.create_scope("acme", "read", "Read your photos").await;
    app.create_scope("acme", "write", "Change your photos")
        .await;
    app.create_user("acme", "alice", "wonderland").await;
    crate::branding::brand_acme(&app).await;
    let callback = start_callback_server().await;
    let client = app
        .create_client(
            "acme",
            NewClient {
                name: "Photo Printer".into(),
                auth_method: AuthMethod::None,
                grant_types: vec![GrantType::AuthorizationCode],
                redirect_uris: vec![callback.clone()],
                scopes: vec!["read".into(), "write".into()],
                audiences: vec![],
                token_format: TokenFormat::Jwt,
                app_type: None,
                access_token_ttl: None,
                refresh_token_ttl: None,
            },
        )
        .await;
    let (verifier, challenge) = pkce_pair();
    let mut authorize = url::Url::parse(&format!("{}/authorize", app.issuer("acme"))).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client.id)
        .append_pair("redirect_uri", &callback)
        .append_pair("scope", "read write")
        .append_pair("state", "st4te")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");

    // reqwest and fantoccini each bring a rustls backend; pick one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (_driver, webdriver_url) = start_chromedriver().await;
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=900,900"]
        }),
    );
    let browser = ClientBuilder::rustls()
        .unwrap()
        .capabilities(capabilities)
        .connect(&webdriver_url)
        .await
        .expect("connect to chromedriver");

    let outcome = async {
        browser.goto(authorize.as_str()).await?;
        browser
            .find(Locator::Id("username"))
            .await?
            .send_keys("alice")
            .await?;
        browser
            .find(Locator::Id("password"))
            .await?
            .send_keys("wonderland")
            .await?;
        save_screenshot(&browser, "login").await;
        browser
            .find(Locator::Css("button[type=submit]"))
            .await?
            .click()
            .await?;

        browser
            .wait()
            .for_element(Locator::Css("button[value=allow]"))
            .await?;
        let page = browser.source().await?;
        assert!(page.contains("Photo Printer"));
        assert!(page.contains("Change your photos"));
        // Grant only `read`: untick `write`.
        browser
            .find(Locator::Css("input[value=write]"))
            .await?
            .click()
            .await?;
        save_screenshot(&browser, "consent").await;
        browser
            .find(Locator::Css("button[value=allow]"))
            .await?
            .click()
            .await?;

        browser
            .wait()
            .for_element(Locator::Id("back-at-app"))
            .await?;
        let arrived = browser.current_url().await?;
        // Redeem the code now, as the app would: Revoke, below, voids a code
        // not yet redeemed.
        let code = arrived
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("a code at the redirect URI");
        let redeemed = app
            .http
            .post(app.token_url("acme"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", callback.as_str()),
                ("client_id", client.id.as_str()),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
            .await
            .unwrap();
        let redeemed = (
            redeemed.status().as_u16(),
            redeemed.json::<serde_json::Value>().await.unwrap(),
        );

        // The consent is remembered: asking for what was allowed comes straight back.
        let mut read_only = authorize.clone();
        let query: Vec<(String, String)> = authorize
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "scope" {
                    "read".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        read_only.query_pairs_mut().clear().extend_pairs(query);
        browser.goto(read_only.as_str()).await?;
        browser
            .wait()
            .for_element(Locator::Id("back-at-app"))
            .await?;

        // The account page lists the app; Revoke withdraws it.
        browser
            .goto(&format!("{}/account", app.issuer("acme")))
            .await?;
        browser
            .wait()
            .for_element(Locator::Css("form[action$='/account/revoke'] button"))
            .await?;
        assert!(browser.source().await?.contains("Photo Printer"));
        save_screenshot(&browser, "account").await;
        browser
            .find(Locator::Css("form[action$='/account/revoke'] button"))
            .await?
            .click()
            .await?;
        browser
            .wait()
            .for_element(Locator::XPath(
                "//*[contains(text(), 'You have not allowed')]",
            ))
            .await?;

        // And the next authorization asks again.
        browser.goto(authorize.as_str()).await?;
        browser
            .wait()
            .for_element(Locator::Css("button[value=allow]"))
            .await?;
        Ok::<_, fantoccini::error::CmdError>((arrived, redeemed))
    }
    .await;
    let _ = browser.close().await;
    let (arrived, (status, body)) = outcome.unwrap();

    let params: Vec<(String, String)> = arrived.query_pairs().into_owned().collect();
    assert_eq!(param(&params, "state"), Some("st4te"));
    assert_eq!(param(&params, "iss"), Some(app.issuer("acme").as_str()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "read", "the unticked scope was not granted");
}

/// Keeps a screenshot under target/ for a person to look at.
async fn save_screenshot(browser: &fantoccini::Client, name: &str) {
    if let Ok(png) = browser.screenshot().await {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{name}.png")), png);
    }
}
