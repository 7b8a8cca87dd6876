//! Moving from SQLite to PostgreSQL with `tessera export` and `tessera
//! import`: secrets, keys, users and consents keep working.

use std::process::{Command, Output};

use serde_json::Value;
use tessera_core::{AppType, GrantType, ScopeSet};
use tessera_server::AppState;
use tessera_server::service::admin::{self, BrandingChanges, NewClient};
use tokio::net::TcpListener;

use crate::helpers::{ServeProcess, TestDatabase, free_port, now, on_postgres, wait_healthy};

fn tessera(database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["--database-url", database_url])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

async fn token(base: &str, id: &str, secret: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/t/acme/token"))
        .basic_auth(id, Some(secret))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_from_sqlite_and_import_into_postgres() {
    assert!(on_postgres());
    // The old deployment: SQLite, served in process.
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", dir.path().join("old.db").display());
    let store = tessera_store::connect(&sqlite_url, &Default::default())
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_url = format!("http://{}", listener.local_addr().unwrap());
    let old = AppState::new(store, &public_url).await.unwrap();
    let config = tessera_server::ServerConfig::default();
    let router = tessera_server::router(old.clone());
    tokio::spawn(async move {
        tessera_server::serve(listener, router, &config, std::future::pending()).await
    });
    admin::create_tenant(&old, "acme", now()).await.unwrap();
    admin::create_scope(&old, "acme", "read", "Read your photos")
        .await
        .unwrap();
    let alice = admin::create_user(&old, "acme", "alice", "wonderland", now())
        .await
        .unwrap();
    let mut request = NewClient::of_type("legacy", AppType::M2m);
    request.grant_types = vec![GrantType::ClientCredentials, GrantType::Password];
    request.scopes = vec!["read".into()];
    let created = admin::create_client(&old, "acme", request, now())
        .await
        .unwrap();
    let (id, secret) = (
        created.client.client_id.to_string(),
        created.secret.unwrap().expose().to_owned(),
    );
    admin::set_branding(
        &old,
        "acme",
        BrandingChanges {
            display_name: Some("Acme Photos".into()),
            accent_color: Some("#0a7".into()),
            logo: None,
            css: None,
        },
        now(),
    )
    .await
    .unwrap();
    let tenant = admin::tenant(&old, "acme").await.unwrap();
    old.store
        .put_consent(
            tenant.id,
            &alice.id,
            &id,
            &ScopeSet::parse("read").unwrap(),
            now(),
        )
        .await
        .unwrap();
    // A token signed with the first key, then a rotation: two keys to move.
    let (status, before) = token(
        &public_url,
        &id,
        &secret,
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, 200);
    admin::rotate_key(&old, "acme", now()).await.unwrap();

    let export_file = dir.path().join("export.json");
    let exported = tessera(
        &sqlite_url,
        &["export", "--output", export_file.to_str().unwrap()],
    );
    assert!(exported.status.success(), "{exported:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&export_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the export holds private keys");
    }

    // The new deployment: PostgreSQL.
    let database = TestDatabase::new().await;
    let imported = tessera(&database.url, &["import", export_file.to_str().unwrap()]);
    assert!(imported.status.success(), "{imported:?}");
    assert!(String::from_utf8_lossy(&imported.stdout).contains("imported 1 tenant(s): acme"));
    let again = tessera(&database.url, &["import", export_file.to_str().unwrap()]);
    assert!(!again.status.success(), "a second import must not merge");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .args(["--public-url", &public_url])
        .env("TESSERA_DATABASE_URL", &database.url)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let node = ServeProcess {
        child,
        base_url: format!("http://127.0.0.1:{port}"),
    };
    let base = node.base_url.clone();
    wait_healthy(&format!("{base}/healthz")).await;

    // The client secret and the password still check.
    let (status, body) = token(&base, &id, &secret, &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = token(
        &base,
        &id,
        &secret,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "wonderland"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Both keys are published, and the token issued before the move is
    // still active.
    let jwks: Value = reqwest::get(format!("{base}/t/acme/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
    let introspected: Value = reqwest::Client::new()
        .post(format!("{base}/t/acme/introspect"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", before["access_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["active"], true, "{introspected}");
    // The look and the consent came along.
    let login_page = reqwest::get(format!("{base}/t/acme/account"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(login_page.contains("Acme Photos"), "{login_page}");
    let store = tessera_store::connect(&database.url, &Default::default())
        .await
        .unwrap();
    let moved = store.tenant_by_name("acme").await.unwrap().unwrap();
    let consent = store.consent(moved.id, &alice.id, &id).await.unwrap();
    assert_eq!(consent.unwrap().scope.to_string(), "read");
}
