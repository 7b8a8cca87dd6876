//! Several `tessera serve` processes on one PostgreSQL database: any node
//! answers any request, single use holds across nodes, and a node rides out
//! lost database connections.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_core::{AppType, GrantType, TokenFormat};
use tessera_server::AppState;
use tessera_server::service::admin::{self, NewClient};

use crate::helpers::{
    REDIRECT, ServeProcess, TestDatabase, between, free_port, hidden_field, location_params, now,
    param, pkce_pair, postgres_url, wait_healthy,
};

/// Two nodes behind one public URL (node A's origin), on a fresh schema,
/// with tenant `acme`, scopes read and write, and user alice.
struct Cluster {
    nodes: [ServeProcess; 2],
    /// The nodes' `application_name` in `pg_stat_activity`.
    application_name: String,
    /// For setting things up as the CLI would.
    admin: AppState,
    _database: TestDatabase,
}

async fn cluster() -> Cluster {
    let database = TestDatabase::new().await;
    let ports = [free_port(), free_port()];
    let public_url = format!("http://127.0.0.1:{}", ports[0]);
    let application_name = format!("tessera-test-{}", ports[0]);
    let node_url = format!("{}&application_name={application_name}", database.url);
    // Both start at once on an empty schema: the migrations race.
    let nodes = ports.map(|port| ServeProcess {
        child: Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .args(["--public-url", &public_url])
            .env("TESSERA_DATABASE_URL", &node_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        base_url: format!("http://127.0.0.1:{port}"),
    });
    for node in &nodes {
        wait_healthy(&format!("{}/healthz", node.base_url)).await;
    }
    let store = tessera_store::connect(&database.url, &Default::default())
        .await
        .unwrap();
    let admin = AppState::new(store, &public_url).await.unwrap();
    admin::create_tenant(&admin, "acme", now()).await.unwrap();
    for scope in ["read", "write"] {
        admin::create_scope(&admin, "acme", scope, "")
            .await
            .unwrap();
    }
    admin::create_user(&admin, "acme", "alice", "wonderland", now())
        .await
        .unwrap();
    Cluster {
        nodes,
        application_name,
        admin,
        _database: database,
    }
}

impl Cluster {
    /// The tenant's endpoint `path` on node `n`.
    fn url(&self, n: usize, path: &str) -> String {
        format!("{}/t/acme/{path}", self.nodes[n].base_url)
    }

    /// The same URL, moved from whichever node it names to node `n`.
    fn on(&self, n: usize, url: &str) -> String {
        let mut moved = url.to_owned();
        for node in &self.nodes {
            moved = moved.replace(&node.base_url, &self.nodes[n].base_url);
        }
        moved
    }

    async fn client(&self, grant_types: Vec<GrantType>, format: TokenFormat) -> (String, String) {
        let mut request = NewClient::of_type("app", AppType::Web);
        request.grant_types = grant_types;
        request.redirect_uris = vec![REDIRECT.into()];
        request.scopes = vec!["read".into(), "write".into()];
        request.token_format = format;
        let created = admin::create_client(&self.admin, "acme", request, now())
            .await
            .unwrap();
        (
            created.client.client_id.to_string(),
            created.secret.unwrap().expose().to_owned(),
        )
    }

    async fn post(
        &self,
        n: usize,
        path: &str,
        client: &(String, String),
        form: &[(&str, &str)],
    ) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(self.url(n, path))
            .basic_auth(&client.0, Some(&client.1))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The authorization code flow, each browser step on the other node
    /// than the one before: begun on A, logged in on B, consent shown by A
    /// and answered on B. Returns the code and its PKCE verifier.
    async fn code_across_nodes(&self, client: &(String, String)) -> (String, String) {
        let browser = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let (verifier, challenge) = pkce_pair();
        let mut authorize = url::Url::parse(&self.url(0, "authorize")).unwrap();
        authorize
            .query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &client.0)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("scope", "read")
            .append_pair("state", "s1")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let login_page = browser.get(authorize.as_str()).send().await.unwrap();
        assert_eq!(login_page.status(), 200);
        let html = login_page.text().await.unwrap();
        let action = between(&html, "<form method=\"post\" action=\"", "\"");
        let logged_in = browser
            .post(self.on(1, &action))
            .form(&[
                ("csrf", hidden_field(&html, "csrf")),
                ("request", hidden_field(&html, "request")),
                ("username", "alice".into()),
                ("password", "wonderland".into()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(logged_in.status(), 303, "login on node B");
        let consent_url = logged_in.headers()["location"].to_str().unwrap();
        let consent_page = browser.get(self.on(0, consent_url)).send().await.unwrap();
        assert_eq!(consent_page.status(), 200, "consent shown by node A");
        let html = consent_page.text().await.unwrap();
        let action = between(&html, "<form method=\"post\" action=\"", "\"");
        let answered = browser
            .post(self.on(1, &action))
            .form(&[
                ("request", hidden_field(&html, "request")),
                ("csrf", hidden_field(&html, "csrf")),
                ("decision", "allow".into()),
                ("scope", "read".into()),
            ])
            .send()
            .await
            .unwrap();
        let (target, params) = location_params(&answered);
        assert!(
            target.starts_with(REDIRECT),
            "consent answered on node B: {target}"
        );
        (param(&params, "code").unwrap().to_owned(), verifier)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_continues_what_another_began() {
    let cluster = cluster().await;
    let client = cluster
        .client(
            vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            TokenFormat::Jwt,
        )
        .await;
    let (code, verifier) = cluster.code_across_nodes(&client).await;
    let (status, tokens) = cluster
        .post(
            0,
            "token",
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();

    // Introspected on B.
    let (_, answer) = cluster
        .post(1, "introspect", &client, &[("token", access)])
        .await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["username"], "alice");

    // Refreshed on B; the old refresh token replayed on A is refused.
    let (status, rotated) = cluster
        .post(
            1,
            "token",
            &client,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let (status, replay) = cluster
        .post(
            0,
            "token",
            &client,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
    assert_eq!(
        (status, replay["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // Revoked on A: on B, neither the new access token nor the new refresh
    // token works any more (the replay above revoked the family already;
    // revoking again is harmless).
    let new_access = rotated["access_token"].as_str().unwrap();
    let new_refresh = rotated["refresh_token"].as_str().unwrap();
    let (status, _) = cluster
        .post(0, "revoke", &client, &[("token", new_refresh)])
        .await;
    assert_eq!(status, 200);
    let (_, answer) = cluster
        .post(1, "introspect", &client, &[("token", new_access)])
        .await;
    assert_eq!(answer, serde_json::json!({"active": false}));

    // The code itself cannot be used again on B either.
    let (status, again) = cluster
        .post(
            1,
            "token",
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
            ],
        )
        .await;
    assert_eq!(
        (status, again["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

/// Sends `count` copies of one token request at once, alternating nodes,
/// and returns the answers.
async fn race(
    cluster: &Cluster,
    client: &(String, String),
    form: &[(&str, &str)],
    count: usize,
) -> Vec<(u16, Value)> {
    let requests = (0..count).map(|i| cluster.post(i % 2, "token", client, form));
    futures::future::join_all(requests).await
}

fn winners(answers: &[(u16, Value)]) -> Vec<&Value> {
    for (status, body) in answers {
        assert!(
            *status == 200 || (*status == 400 && body["error"] == "invalid_grant"),
            "{status} {body}"
        );
    }
    answers
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redemptions_across_nodes_have_exactly_one_winner() {
    let cluster = cluster().await;
    let client = cluster
        .client(
            vec![
                GrantType::AuthorizationCode,
                GrantType::RefreshToken,
                GrantType::Password,
            ],
            TokenFormat::Jwt,
        )
        .await;

    // 200 concurrent rotations of one refresh token.
    let (status, first) = cluster
        .post(
            0,
            "token",
            &client,
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "wonderland"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let refresh = first["refresh_token"].as_str().unwrap();
    let answers = race(
        &cluster,
        &client,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        200,
    )
    .await;
    let won = winners(&answers);
    assert_eq!(won.len(), 1, "exactly one rotation succeeds");
    // The losers were reuse: the family, the winner's tokens included, is revoked.
    let winner_refresh = won[0]["refresh_token"].as_str().unwrap();
    let (status, _) = cluster
        .post(
            1,
            "token",
            &client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", winner_refresh),
            ],
        )
        .await;
    assert_eq!(status, 400, "the family is revoked");
    let (_, answer) = cluster
        .post(
            0,
            "introspect",
            &client,
            &[("token", won[0]["access_token"].as_str().unwrap())],
        )
        .await;
    assert_eq!(answer["active"], false);

    // 20 concurrent redemptions of one authorization code.
    let (code, verifier) = cluster.code_across_nodes(&client).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    let answers = race(&cluster, &client, &form, 20).await;
    let won = winners(&answers);
    assert_eq!(won.len(), 1, "exactly one redemption succeeds");
    let (_, answer) = cluster
        .post(
            1,
            "introspect",
            &client,
            &[("token", won[0]["access_token"].as_str().unwrap())],
        )
        .await;
    assert_eq!(
        answer["active"], false,
        "a replayed code revokes what it issued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_database_connections_give_503_and_the_nodes_recover() {
    let cluster = Arc::new(cluster().await);
    let client = cluster
        .client(vec![GrantType::ClientCredentials], TokenFormat::Opaque)
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let kills_done = Arc::new(AtomicBool::new(false));
    // Each worker issues opaque tokens (a database write each) without pause.
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let (cluster, client, stop, kills_done) = (
                cluster.clone(),
                client.clone(),
                stop.clone(),
                kills_done.clone(),
            );
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut answers = Vec::new();
                let mut successes_after_kills = 0;
                while !stop.load(Ordering::SeqCst) {
                    let response = http
                        .post(cluster.url(w % 2, "token"))
                        .basic_auth(&client.0, Some(&client.1))
                        .form(&[("grant_type", "client_credentials"), ("scope", "read")])
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let retry_after = response.headers().contains_key("retry-after");
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    assert!(
                        status == 200 || (status == 503 && retry_after),
                        "only successes and clean 503s: {status} {body}"
                    );
                    if status == 200 && kills_done.load(Ordering::SeqCst) {
                        successes_after_kills += 1;
                        if successes_after_kills >= 5 {
                            break;
                        }
                    }
                    answers.push((w % 2, status, body));
                }
                answers
            })
        })
        .collect();

    // Kill every connection of both nodes, three times, while they work.
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_url())
        .await
        .unwrap();
    let mut killed = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1) AS t",
        )
        .bind(&cluster.application_name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        killed += count;
    }
    assert!(killed > 0, "the nodes had connections to kill");
    kills_done.store(true, Ordering::SeqCst);

    // Every worker must succeed again, without any restart, soon.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answers = Vec::new();
    for worker in workers {
        let left = deadline.saturating_duration_since(Instant::now());
        let done = tokio::time::timeout(left, worker).await;
        stop.store(true, Ordering::SeqCst);
        answers.extend(
            done.expect("a node did not recover from lost connections")
                .unwrap(),
        );
    }

    // Nothing acknowledged was lost: every token answered with 200 is
    // active when introspected on the other node.
    let issued: Vec<_> = answers.iter().filter(|(_, s, _)| *s == 200).collect();
    eprintln!(
        "{} requests, {} answered 503, {killed} connections killed",
        answers.len(),
        answers.len() - issued.len()
    );
    assert!(!issued.is_empty());
    for (node, _, body) in issued {
        let token = body["access_token"].as_str().unwrap();
        let (_, answer) = cluster
            .post(1 - node, "introspect", &client, &[("token", token)])
            .await;
        assert_eq!(
            answer["active"], true,
            "a token issued before or during the kills was lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_client_stops_working_on_every_node_at_once() {
    let cluster = cluster().await;
    let client = cluster
        .client(vec![GrantType::ClientCredentials], TokenFormat::Jwt)
        .await;
    let form = [("grant_type", "client_credentials")];
    for node in 0..2 {
        assert_eq!(cluster.post(node, "token", &client, &form).await.0, 200);
    }
    let tenant = admin::tenant(&cluster.admin, "acme").await.unwrap();
    assert!(
        cluster
            .admin
            .store
            .delete_client(tenant.id, &client.0)
            .await
            .unwrap()
    );
    for node in 0..2 {
        let (status, body) = cluster.post(node, "token", &client, &form).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client"))
        );
    }
}
