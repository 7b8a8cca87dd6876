//! The `tessera` binary: its command-line contract, and the server as a real
//! process (shared database, crash safety, graceful shutdown).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::helpers::{ServeProcess, free_port, wait_healthy};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

fn tessera(dir: &Path, args: &[&str]) -> Output {
    tessera_with_stdin(dir, args, "")
}

fn tessera_with_stdin(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("TESSERA_DATABASE_URL")
        .env_remove("TESSERA_PUBLIC_URL")
        .env_remove("TESSERA_BIND")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&output.stdout)))
}

#[test]
fn command_line_contract() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The default database is ./tessera.db, created on first use.
    let tenant = json_of(&tessera(d, &["tenant", "create", "acme", "--json"]));
    assert_eq!(
        tenant,
        serde_json::json!({"tenant": "acme", "issuer": "http://127.0.0.1:8080/t/acme"})
    );
    assert!(d.join("tessera.db").exists());

    // --database-url before or after the subcommand; absolute and relative paths.
    let absolute = format!("sqlite://{}", d.join("other.db").display());
    assert!(absolute.starts_with("sqlite:///"));
    json_of(&tessera(
        d,
        &[
            "--database-url",
            &absolute,
            "tenant",
            "create",
            "one",
            "--json",
        ],
    ));
    json_of(&tessera(
        d,
        &[
            "tenant",
            "create",
            "two",
            "--json",
            "--database-url",
            "sqlite://other.db",
        ],
    ));
    let listed = json_of(&tessera(
        d,
        &["tenant", "list", "--json", "--database-url", &absolute],
    ));
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // --public-url shapes issuers.
    let out = json_of(&tessera(
        d,
        &[
            "--public-url",
            "https://id.example.com",
            "tenant",
            "create",
            "pub",
            "--json",
        ],
    ));
    assert_eq!(out["issuer"], "https://id.example.com/t/pub");

    // Scopes and clients.
    assert!(
        tessera(
            d,
            &[
                "scope",
                "create",
                "--tenant",
                "acme",
                "read",
                "--description",
                "Read things"
            ]
        )
        .status
        .success()
    );
    let confidential = json_of(&tessera(
        d,
        &[
            "client",
            "create",
            "--tenant",
            "acme",
            "--name",
            "svc",
            "--grant-type",
            "client_credentials",
            "--scope",
            "read",
            "--scope",
            "newscope",
            "--audience",
            "https://api",
            "--json",
        ],
    ));
    assert!(confidential["client_id"].is_string());
    assert!(
        confidential["client_secret"].as_str().unwrap().len() >= 43,
        "≥ 256 bits"
    );
    let public = json_of(&tessera(
        d,
        &[
            "client",
            "create",
            "--tenant",
            "acme",
            "--name",
            "spa",
            "--public",
            "--grant-type",
            "authorization_code",
            "--redirect-uri",
            "https://app.example/cb",
            "--json",
        ],
    ));
    assert_eq!(public["client_secret"], Value::Null);
    let scopes = json_of(&tessera(
        d,
        &["scope", "list", "--tenant", "acme", "--json"],
    ));
    assert_eq!(
        scopes,
        serde_json::json!([{"scope": "newscope", "description": ""}, {"scope": "read", "description": "Read things"}])
    );
    let clients = json_of(&tessera(
        d,
        &["client", "list", "--tenant", "acme", "--json"],
    ));
    assert_eq!(clients.as_array().unwrap().len(), 2);
    let table = tessera(d, &["client", "list", "--tenant", "acme"]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.starts_with("CLIENT_ID"));
    assert!(
        !table.contains(confidential["client_secret"].as_str().unwrap()),
        "the secret is shown once"
    );

    // Users: the password comes from stdin, one trailing newline stripped.
    let user = json_of(&tessera_with_stdin(
        d,
        &[
            "user",
            "create",
            "--tenant",
            "acme",
            "--username",
            "alice",
            "--password-stdin",
            "--json",
        ],
        "s3cret pass\n",
    ));
    assert_eq!(user["tenant"], "acme");
    assert_eq!(user["username"], "alice");
    assert!(user["id"].is_string());
    let duplicate = tessera_with_stdin(
        d,
        &[
            "user",
            "create",
            "--tenant",
            "acme",
            "--username",
            "alice",
            "--password-stdin",
        ],
        "x\n",
    );
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("already exists"));

    // Bad arguments: a clear message and a non-zero exit.
    for args in [
        vec!["tenant", "create", "Bad_Name"],
        vec![
            "client",
            "create",
            "--tenant",
            "acme",
            "--name",
            "x",
            "--grant-type",
            "magic",
        ],
        vec![
            "client",
            "create",
            "--tenant",
            "acme",
            "--name",
            "x",
            "--redirect-uri",
            "https://a/cb#frag",
        ],
        vec![
            "client",
            "create",
            "--tenant",
            "acme",
            "--name",
            "x",
            "--redirect-uri",
            "http://example.com/cb",
        ],
        vec![
            "client",
            "create",
            "--tenant",
            "nope",
            "--name",
            "x",
            "--grant-type",
            "client_credentials",
        ],
        vec![
            "client",
            "create",
            "--tenant",
            "acme",
            "--name",
            "x",
            "--public",
            "--grant-type",
            "client_credentials",
        ],
        vec!["user", "create", "--tenant", "acme", "--username", "bob"],
        vec!["scope", "create", "--tenant", "acme", "bad\"scope"],
        vec!["tenant", "delete", "nope"],
        vec!["frobnicate"],
        vec![
            "--public-url",
            "https://id.example.com/auth",
            "tenant",
            "list",
        ],
    ] {
        let output = tessera(d, &args);
        assert!(!output.status.success(), "{args:?} should fail");
        assert!(!output.stderr.is_empty(), "{args:?} should say why");
    }

    // Application types choose defaults; explicit flags override them.
    let m2m = json_of(&tessera(
        d,
        &[
            "client", "create", "--tenant", "acme", "--name", "svc2", "--type", "m2m", "--json",
        ],
    ));
    assert!(m2m["client_secret"].is_string());
    let spa = json_of(&tessera(
        d,
        &[
            "client",
            "create",
            "--tenant",
            "acme",
            "--name",
            "spa2",
            "--type",
            "spa",
            "--redirect-uri",
            "https://spa.example/cb",
            "--json",
        ],
    ));
    assert_eq!(spa["client_secret"], Value::Null);
    let web = json_of(&tessera(
        d,
        &[
            "client",
            "create",
            "--tenant",
            "acme",
            "--name",
            "web2",
            "--type",
            "web",
            "--grant-type",
            "authorization_code",
            "--redirect-uri",
            "https://web.example/cb",
            "--json",
        ],
    ));
    let clients = json_of(&tessera(
        d,
        &["client", "list", "--tenant", "acme", "--json"],
    ));
    let find = |id: &Value| {
        clients
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["client_id"] == *id)
            .unwrap()
            .clone()
    };
    let m2m = find(&m2m["client_id"]);
    assert_eq!(
        (m2m["type"].as_str(), m2m["auth_method"].as_str()),
        (Some("m2m"), Some("client_secret_basic"))
    );
    assert_eq!(
        m2m["grant_types"],
        serde_json::json!(["client_credentials"])
    );
    let spa_listed = find(&spa["client_id"]);
    assert_eq!(spa_listed["auth_method"], "none");
    assert_eq!(
        spa_listed["grant_types"],
        serde_json::json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(
        find(&web["client_id"])["grant_types"],
        serde_json::json!(["authorization_code"])
    );
    let table =
        String::from_utf8(tessera(d, &["client", "list", "--tenant", "acme"]).stdout).unwrap();
    assert!(table.contains("TYPE") && table.contains("m2m"));
    let native = tessera(
        d,
        &[
            "client",
            "create",
            "--tenant",
            "acme",
            "--name",
            "n",
            "--type",
            "native",
            "--redirect-uri",
            "com.example.app:/cb",
        ],
    );
    assert!(native.status.success());
    let not_native = tessera(
        d,
        &[
            "client",
            "create",
            "--tenant",
            "acme",
            "--name",
            "n",
            "--type",
            "web",
            "--redirect-uri",
            "com.example.app:/cb",
        ],
    );
    assert!(!not_native.status.success());

    // client set changes settings, keeping what is not named.
    let id = spa["client_id"].as_str().unwrap();
    let set = json_of(&tessera(
        d,
        &[
            "client",
            "set",
            "--tenant",
            "acme",
            id,
            "--name",
            "renamed",
            "--access-token-ttl",
            "300",
            "--token-format",
            "opaque",
            "--json",
        ],
    ));
    assert_eq!(set["name"], "renamed");
    assert_eq!(set["access_token_ttl"], 300);
    assert_eq!(set["token_format"], "opaque");
    assert_eq!(
        set["redirect_uris"],
        serde_json::json!(["https://spa.example/cb"])
    );
    assert!(
        !tessera(
            d,
            &[
                "client",
                "set",
                "--tenant",
                "acme",
                id,
                "--access-token-ttl",
                "5"
            ]
        )
        .status
        .success()
    );
    assert!(
        !tessera(
            d,
            &["client", "set", "--tenant", "acme", "nope", "--name", "x"]
        )
        .status
        .success()
    );

    // Settings and keys.
    let set = json_of(&tessera(
        d,
        &[
            "tenant",
            "set",
            "acme",
            "--access-token-ttl",
            "300",
            "--json",
        ],
    ));
    assert_eq!(set["access_token_ttl"], 300);
    assert_eq!(set["code_ttl"], 60);
    assert!(
        !tessera(d, &["tenant", "set", "acme", "--code-ttl", "3600"])
            .status
            .success()
    );
    std::fs::write(d.join("logo.png"), crate::branding::tiny_png()).unwrap();
    std::fs::write(d.join("style.css"), "h1 { color: #123 }").unwrap();
    let branded = json_of(&tessera(
        d,
        &[
            "tenant",
            "set",
            "acme",
            "--display-name",
            "Acme Corp",
            "--accent-color",
            "#0a7",
            "--logo-file",
            "logo.png",
            "--css-file",
            "style.css",
            "--json",
        ],
    ));
    assert_eq!(branded["display_name"], "Acme Corp");
    assert!(
        !tessera(d, &["tenant", "set", "acme", "--accent-color", "red"])
            .status
            .success()
    );
    assert!(
        !tessera(d, &["tenant", "set", "acme", "--logo-file", "style.css"])
            .status
            .success()
    );
    let rotated = tessera(d, &["keys", "rotate", "--tenant", "acme"]);
    assert!(rotated.status.success());

    // Deleting a tenant removes everything in it.
    assert!(
        tessera(d, &["user", "delete", "--tenant", "acme", "alice"])
            .status
            .success()
    );
    assert!(tessera(d, &["tenant", "delete", "acme"]).status.success());
    assert!(
        !tessera(d, &["client", "list", "--tenant", "acme"])
            .status
            .success()
    );
    let listed = json_of(&tessera(d, &["tenant", "list", "--json"]));
    assert_eq!(
        listed,
        serde_json::json!([{"tenant": "pub", "issuer": "http://127.0.0.1:8080/t/pub"}])
    );
}

#[tokio::test]
async fn tenant_set_checks_every_option_before_changing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    json_of(&tessera(d, &["tenant", "create", "acme", "--json"]));
    let before = json_of(&tessera(d, &["tenant", "set", "acme", "--json"]));
    // The documented shape, display_name included even when none was given.
    assert_eq!(
        before,
        serde_json::json!({
            "tenant": "acme",
            "access_token_ttl": 900,
            "refresh_token_ttl": 2592000,
            "code_ttl": 60,
            "allow_implicit": false,
            "display_name": null,
        })
    );

    // A valid display name and implicit switch with a bad lifetime, and a
    // valid lifetime with a bad colour: each is refused as a whole.
    for args in [
        vec![
            "tenant",
            "set",
            "acme",
            "--display-name",
            "Acme Corp",
            "--allow-implicit",
            "true",
            "--access-token-ttl",
            "5",
        ],
        vec![
            "tenant",
            "set",
            "acme",
            "--access-token-ttl",
            "300",
            "--accent-color",
            "red",
        ],
    ] {
        let output = tessera(d, &args);
        assert!(!output.status.success(), "{args:?} should fail");
        assert!(!output.stderr.is_empty(), "{args:?} should say why");
        assert_eq!(
            json_of(&tessera(d, &["tenant", "set", "acme", "--json"])),
            before,
            "{args:?} changed something"
        );
    }
    // Nor was the look stored behind the JSON's back.
    let store = tessera_store::connect(
        &format!("sqlite://{}", d.join("tessera.db").display()),
        &tessera_store::PoolSettings::default(),
    )
    .await
    .unwrap();
    let tenant = store.tenant_by_name("acme").await.unwrap().unwrap();
    assert_eq!(store.branding_summary(tenant.id).await.unwrap(), None);
    drop(store);

    // A good change is applied, and the display name is still reported
    // by a later call that does not change it.
    let changed = json_of(&tessera(
        d,
        &[
            "tenant",
            "set",
            "acme",
            "--display-name",
            "Acme Corp",
            "--access-token-ttl",
            "300",
            "--json",
        ],
    ));
    assert_eq!(changed["display_name"], "Acme Corp");
    assert_eq!(changed["access_token_ttl"], 300);
    let later = json_of(&tessera(
        d,
        &["tenant", "set", "acme", "--code-ttl", "30", "--json"],
    ));
    assert_eq!(later["display_name"], "Acme Corp");
    assert_eq!(later["access_token_ttl"], 300);
    assert_eq!(later["code_ttl"], 30);
}

#[test]
fn client_set_clears_lists_and_lifetime_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    json_of(&tessera(d, &["tenant", "create", "acme", "--json"]));
    let created = json_of(&tessera(
        d,
        &[
            "client",
            "create",
            "--tenant",
            "acme",
            "--name",
            "svc",
            "--grant-type",
            "client_credentials",
            "--redirect-uri",
            "https://svc.example/cb",
            "--scope",
            "read",
            "--audience",
            "https://api.example",
            "--access-token-ttl",
            "300",
            "--refresh-token-ttl",
            "3600",
            "--json",
        ],
    ));
    let id = created["client_id"].as_str().unwrap();
    let set = |args: &[&str]| {
        let mut all = vec!["client", "set", "--tenant", "acme", id];
        all.extend_from_slice(args);
        tessera(d, &all)
    };

    // One at a time, the others stay.
    let cleared = json_of(&set(&["--clear-audiences", "--json"]));
    assert_eq!(cleared["audiences"], serde_json::json!([]));
    assert_eq!(cleared["scopes"], serde_json::json!(["read"]));
    assert_eq!(cleared["access_token_ttl"], 300);
    let cleared = json_of(&set(&["--clear-access-token-ttl", "--json"]));
    assert_eq!(cleared["access_token_ttl"], Value::Null);
    assert_eq!(cleared["refresh_token_ttl"], 3600);
    assert_eq!(
        cleared["redirect_uris"],
        serde_json::json!(["https://svc.example/cb"])
    );

    let cleared = json_of(&set(&[
        "--clear-redirect-uris",
        "--clear-scopes",
        "--clear-refresh-token-ttl",
        "--json",
    ]));
    assert_eq!(cleared["redirect_uris"], serde_json::json!([]));
    assert_eq!(cleared["scopes"], serde_json::json!([]));
    assert_eq!(cleared["refresh_token_ttl"], Value::Null);
    assert_eq!(
        cleared["grant_types"],
        serde_json::json!(["client_credentials"])
    );
    let listed = json_of(&tessera(
        d,
        &["client", "list", "--tenant", "acme", "--json"],
    ));
    assert_eq!(listed[0], cleared, "stored as printed");

    // Clearing and setting the same thing at once is a usage error.
    for args in [
        ["--clear-scopes", "--scope", "read"],
        ["--clear-access-token-ttl", "--access-token-ttl", "300"],
    ] {
        let output = set(&args);
        assert!(!output.status.success(), "{args:?} should fail");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("cannot be used with"),
            "{args:?}"
        );
    }
    // A generated id may begin with `-`: it is still taken as the id.
    let output = tessera(
        d,
        &[
            "client",
            "set",
            "--tenant",
            "acme",
            "-aB3_x",
            "--clear-scopes",
        ],
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("client '-aB3_x' not found"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The client's rules still hold: a redirecting client keeps a redirect URI.
    let web = json_of(&tessera(
        d,
        &[
            "client",
            "create",
            "--tenant",
            "acme",
            "--name",
            "web",
            "--type",
            "web",
            "--redirect-uri",
            "https://web.example/cb",
            "--json",
        ],
    ));
    let output = tessera(
        d,
        &[
            "client",
            "set",
            "--tenant",
            "acme",
            web["client_id"].as_str().unwrap(),
            "--clear-redirect-uris",
        ],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--redirect-uri"));
}

async fn start_server(dir: &Path, port: u16) -> ServeProcess {
    let child = Command::new(BIN)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .env_remove("TESSERA_DATABASE_URL")
        .env_remove("TESSERA_PUBLIC_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base_url = format!("http://127.0.0.1:{port}");
    wait_healthy(&format!("{base_url}/healthz")).await;
    ServeProcess { child, base_url }
}

async fn client_credentials(server: &ServeProcess, id: &str, secret: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/t/acme/token", server.base_url))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_running_server_sees_cli_changes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = start_server(d, free_port()).await;
    json_of(&tessera(d, &["tenant", "create", "acme", "--json"]));
    let client = json_of(&tessera(
        d,
        &[
            "client",
            "create",
            "--tenant",
            "acme",
            "--name",
            "svc",
            "--grant-type",
            "client_credentials",
            "--json",
        ],
    ));
    let (id, secret) = (
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap(),
    );
    let response = client_credentials(&server, id, secret).await;
    assert_eq!(response.status(), 200);
    let token: Value = response.json().await.unwrap();
    assert_eq!(
        crate::helpers::jwt_claims(token["access_token"].as_str().unwrap())["iss"],
        format!("{}/t/acme", server.base_url),
        "the public URL defaults to http://{{bind}}"
    );
    let other = json_of(&tessera(
        d,
        &[
            "client", "create", "--tenant", "acme", "--name", "other", "--type", "m2m", "--json",
        ],
    ));
    assert!(
        tessera(d, &["client", "delete", "--tenant", "acme", id])
            .status
            .success()
    );
    assert_eq!(client_credentials(&server, id, secret).await.status(), 401);

    // Once more on a restarted server, which starts from an empty WAL.
    stop(server);
    let server = start_server(d, free_port()).await;
    let (id, secret) = (
        other["client_id"].as_str().unwrap(),
        other["client_secret"].as_str().unwrap(),
    );
    for _ in 0..3 {
        assert_eq!(client_credentials(&server, id, secret).await.status(), 200);
    }
    assert!(
        tessera(d, &["client", "delete", "--tenant", "acme", id])
            .status
            .success()
    );
    assert_eq!(client_credentials(&server, id, secret).await.status(), 401);
}

/// Sends SIGTERM and waits for the exit.
fn terminate(server: &mut ServeProcess) -> std::process::ExitStatus {
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    server.child.wait().unwrap()
}

fn stop(mut server: ServeProcess) {
    let status = terminate(&mut server);
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}

/// Stops `server` with SIGTERM and returns what it wrote to stderr.
fn stop_and_read_stderr(mut server: ServeProcess) -> String {
    let status = terminate(&mut server);
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(server.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    stderr
}

/// The first start, on a database with no tenant, tells what to do next;
/// once there is a tenant, it does not. A stopped server leaves an empty
/// WAL behind.
#[tokio::test]
async fn first_start_prints_next_steps_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), free_port()).await;
    let stderr = stop_and_read_stderr(server);
    assert!(stderr.contains("tessera tenant create"), "{stderr}");

    assert!(
        tessera(dir.path(), &["tenant", "create", "acme"])
            .status
            .success()
    );
    let server = start_server(dir.path(), free_port()).await;
    let stderr = stop_and_read_stderr(server);
    assert!(!stderr.contains("tessera tenant create"), "{stderr}");
    let wal = std::fs::metadata(dir.path().join("tessera.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the WAL left behind");
}

#[tokio::test]
async fn what_was_answered_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    json_of(&tessera(d, &["tenant", "create", "acme", "--json"]));
    let client = json_of(&tessera(
        d,
        &[
            "client",
            "create",
            "--tenant",
            "acme",
            "--name",
            "svc",
            "--grant-type",
            "client_credentials",
            "--token-format",
            "opaque",
            "--json",
        ],
    ));
    let (id, secret) = (
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap(),
    );
    let port = free_port();
    let mut server = start_server(d, port).await;
    // Issue opaque tokens (each a database write), then kill the process hard.
    let mut issued = Vec::new();
    for _ in 0..20 {
        let body: Value = client_credentials(&server, id, secret)
            .await
            .json()
            .await
            .unwrap();
        issued.push(body["access_token"].as_str().unwrap().to_owned());
    }
    assert!(
        Command::new("kill")
            .args(["-KILL", &server.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let _ = server.child.wait();
    drop(server);

    // Every acknowledged token is in the database after restart.
    let _server = start_server(d, port).await;
    let url = format!("sqlite://{}", d.join("tessera.db").display());
    let store = tessera_store::SqliteStore::connect(&url, &Default::default())
        .await
        .unwrap();
    let key = tessera_store::Store::server_secret(&store, "secret-hash-key", &Vec::new)
        .await
        .unwrap();
    let hasher = tessera_core::secret::SecretHasher::new(&key);
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    for token in &issued {
        let hash = hasher.hash(tessera_core::secret::Purpose::AccessToken, token);
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM access_tokens WHERE token_hash = ?")
                .bind(hash.0)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(stored, 1, "an acknowledged token was lost to kill -9");
    }
}
