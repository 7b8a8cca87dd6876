//! `spawn_app()` and what the tests share.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use tessera_core::{AuthMethod, GrantType, TokenFormat, UnixTime};
use tessera_server::service::admin::{self, NewClient};
use tessera_server::{AppState, ServerConfig};
use tessera_store::PoolSettings;
use tokio::net::TcpListener;

pub struct TestApp {
    /// e.g. `http://127.0.0.1:41234`
    pub base_url: String,
    pub state: AppState,
    /// A browser-like client: cookie jar, no redirects followed.
    pub browser: reqwest::Client,
    /// A plain API client without cookies, no redirects followed.
    pub http: reqwest::Client,
    _database: TestDatabase,
}

/// True in the `api_postgres` test binary, which runs this same suite on
/// PostgreSQL; false in `api`, on SQLite.
pub fn on_postgres() -> bool {
    env!("CARGO_CRATE_NAME") == "api_postgres"
}

/// The PostgreSQL server the tests use: `TESSERA_TEST_POSTGRES_URL`, by
/// default the local one every development and CI machine runs.
pub fn postgres_url() -> String {
    std::env::var("TESSERA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh, empty database for one test: an SQLite file in a temporary
/// directory, or a PostgreSQL schema of its own, dropped afterwards.
pub struct TestDatabase {
    pub url: String,
    schema: Option<String>,
    _dir: tempfile::TempDir,
}

impl TestDatabase {
    pub async fn new() -> TestDatabase {
        let dir = tempfile::tempdir().unwrap();
        if !on_postgres() {
            let url = format!("sqlite://{}", dir.path().join("tessera.db").display());
            return TestDatabase {
                url,
                schema: None,
                _dir: dir,
            };
        }
        let suffix: [u8; 8] = tessera_server::service::random_bytes();
        let schema = format!("test_{}", u64::from_le_bytes(suffix));
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_url())
            .await
            .expect("PostgreSQL must run on 127.0.0.1:5432 (see README)");
        sqlx::Executor::execute(&mut admin, format!("CREATE SCHEMA {schema}").as_str())
            .await
            .unwrap();
        let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
        TestDatabase {
            url,
            schema: Some(schema),
            _dir: dir,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        // Drop runs outside any runtime the test may still hold: use a
        // thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut admin) =
                    <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_url()).await
                {
                    let _ = sqlx::Executor::execute(
                        &mut admin,
                        format!("DROP SCHEMA {schema} CASCADE").as_str(),
                    )
                    .await;
                }
            });
        })
        .join();
    }
}

pub struct TestClient {
    pub id: String,
    pub secret: Option<String>,
}

pub fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
}

/// Starts the real server on `127.0.0.1:0` with a fresh database (see
/// [`TestDatabase`]).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(ServerConfig::default()).await
}

/// Like `spawn_app`, but the server believes it is reachable at `public_url`.
pub async fn spawn_app_with_public_url(public_url: &str) -> TestApp {
    spawn(ServerConfig::default(), Some(public_url), |_| {}).await
}

pub async fn spawn_app_with(config: ServerConfig) -> TestApp {
    spawn(config, None, |_| {}).await
}

/// Like `spawn_app`, but as `serve --trust-forwarded-for` runs behind a
/// proxy: the client address is the last `X-Forwarded-For` entry.
pub async fn spawn_app_behind_proxy() -> TestApp {
    spawn(ServerConfig::default(), None, |state| {
        state.trust_forwarded_for = true;
    })
    .await
}

async fn spawn(
    config: ServerConfig,
    public_url: Option<&str>,
    configure: impl FnOnce(&mut AppState),
) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .try_init();
    }
    let database = TestDatabase::new().await;
    let pool = PoolSettings {
        max_connections: 8,
        ..PoolSettings::default()
    };
    let store = tessera_store::connect(&database.url, &pool).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let mut state = AppState::new(store, public_url.unwrap_or(&base_url))
        .await
        .unwrap();
    configure(&mut state);
    let router = tessera_server::router(state.clone());
    tokio::spawn(async move {
        tessera_server::serve(listener, router, &config, std::future::pending()).await
    });
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    TestApp {
        base_url,
        state,
        browser,
        http,
        _database: database,
    }
}

impl TestApp {
    /// The tenant `name` as stored.
    pub async fn stored_tenant(&self, name: &str) -> tessera_core::Tenant {
        self.state
            .store
            .tenant_by_name(name)
            .await
            .unwrap()
            .expect("the tenant exists")
    }

    /// The issuer as seen from the test: under the local address.
    pub fn issuer(&self, tenant: &str) -> String {
        format!("{}/t/{}", self.base_url, tenant)
    }

    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/token", self.issuer(tenant))
    }

    pub async fn create_tenant(&self, name: &str) {
        admin::create_tenant(&self.state, name, now())
            .await
            .unwrap();
    }

    pub async fn create_scope(&self, tenant: &str, name: &str, description: &str) {
        admin::create_scope(&self.state, tenant, name, description)
            .await
            .unwrap();
    }

    pub async fn create_client(&self, tenant: &str, client: NewClient) -> TestClient {
        let created = admin::create_client(&self.state, tenant, client, now())
            .await
            .unwrap();
        TestClient {
            id: created.client.client_id.to_string(),
            secret: created.secret.map(|s| s.expose().to_owned()),
        }
    }

    pub async fn create_user(&self, tenant: &str, username: &str, password: &str) -> String {
        admin::create_user(&self.state, tenant, username, password, now())
            .await
            .unwrap()
            .id
    }

    /// A confidential client_credentials client with scopes `read write`.
    pub async fn service_client(&self, tenant: &str, auth_method: AuthMethod) -> TestClient {
        self.create_client(
            tenant,
            NewClient {
                name: "service".into(),
                auth_method,
                grant_types: vec![GrantType::ClientCredentials],
                redirect_uris: vec![],
                scopes: vec!["read".into(), "write".into()],
                audiences: vec!["https://api.example".into()],
                token_format: TokenFormat::Jwt,
                app_type: None,
                access_token_ttl: None,
                refresh_token_ttl: None,
            },
        )
        .await
    }

    /// POSTs a form to the token endpoint with HTTP Basic credentials.
    pub async fn token_basic(
        &self,
        tenant: &str,
        client: &TestClient,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        self.http
            .post(self.token_url(tenant))
            .basic_auth(&client.id, client.secret.as_deref())
            .form(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn jwks(&self, tenant: &str) -> Value {
        self.http
            .get(format!("{}/jwks", self.issuer(tenant)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Verifies an ES256 JWT against a JWK Set with the independent `jsonwebtoken`
/// crate, checking issuer and audience. Returns the claims.
pub fn verify_jwt(
    token: &str,
    jwks: &Value,
    issuer: &str,
    audience: &str,
) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    if header.typ.as_deref() != Some("at+jwt") {
        return Err(format!("typ is {:?}", header.typ));
    }
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or("kid not in JWKS")?;
    let key = jsonwebtoken::DecodingKey::from_ec_components(
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap(),
    )
    .map_err(|e| e.to_string())?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

/// The JSON claims of a JWT, unverified (for tests that look inside).
pub fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The value of `<input ... name="NAME" value="VALUE">` in a page.
pub fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in page:\n{html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

/// The query parameters of a redirect's `Location`.
pub fn location_params(response: &reqwest::Response) -> (String, Vec<(String, String)>) {
    let location = response
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location; status {}", response.status()))
        .to_str()
        .unwrap()
        .to_owned();
    let url = url::Url::parse(&location).unwrap();
    let params = url.query_pairs().into_owned().collect();
    (location, params)
}

pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A PKCE verifier and its S256 challenge.
pub fn pkce_pair() -> (String, String) {
    use sha2::Digest;
    let verifier = URL_SAFE_NO_PAD.encode(rand_bytes());
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn rand_bytes() -> [u8; 32] {
    tessera_server::service::random_bytes::<32>()
}

/// Waits until `url` answers 200.
pub async fn wait_healthy(url: &str) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(response) = client.get(url).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never became healthy");
}

/// Drives the login and consent pages as a browser would: GET the authorize
/// URL, submit the login form, then answer the consent form with `decision`,
/// leaving ticked only `keep_scopes` (or every scope when `None`). Returns the
/// final redirect to the client.
pub async fn log_in_and_consent(
    app: &TestApp,
    authorize_url: &str,
    username: &str,
    password: &str,
    decision: &str,
    keep_scopes: Option<&[&str]>,
) -> reqwest::Response {
    let first_page = app.browser.get(authorize_url).send().await.unwrap();
    // A remembered consent answers at once, without a page.
    if first_page.status() == 302 {
        return first_page;
    }
    assert_eq!(first_page.status(), 200, "authorize should show a page");
    let mut html = first_page.text().await.unwrap();
    // A browser with a live session goes straight to consent.
    if !html.contains("Allow access?") {
        assert!(html.contains("autocomplete=\"username\""));
        assert!(html.contains("autocomplete=\"current-password\""));
        let after_login = submit_login(&app.browser, &html, username, password).await;
        assert_eq!(
            after_login.status(),
            303,
            "login should redirect to consent"
        );
        let consent_url = after_login.headers()["location"]
            .to_str()
            .unwrap()
            .to_owned();
        let consent_page = app.browser.get(&consent_url).send().await.unwrap();
        assert_eq!(consent_page.status(), 200);
        html = consent_page.text().await.unwrap();
    }
    let action = between(&html, "<form method=\"post\" action=\"", "\"");
    let offered: Vec<String> = html
        .match_indices("name=\"scope\" value=\"")
        .map(|(i, m)| {
            let start = i + m.len();
            html[start..start + html[start..].find('"').unwrap()].to_owned()
        })
        .collect();
    let mut form: Vec<(String, String)> = vec![
        ("request".into(), hidden_field(&html, "request")),
        ("csrf".into(), hidden_field(&html, "csrf")),
        ("decision".into(), decision.into()),
    ];
    for scope in offered {
        if keep_scopes.is_none_or(|keep| keep.contains(&scope.as_str())) {
            form.push(("scope".into(), scope));
        }
    }
    app.browser.post(&action).form(&form).send().await.unwrap()
}

/// Submits the login form found in `html` (with its request and CSRF fields)
/// through `via`, a client with or without the browser's cookies.
pub async fn submit_login(
    via: &reqwest::Client,
    html: &str,
    username: &str,
    password: &str,
) -> reqwest::Response {
    let mut form = vec![
        ("csrf", hidden_field(html, "csrf")),
        ("username", username.to_owned()),
        ("password", password.to_owned()),
    ];
    if html.contains("name=\"request\"") {
        form.push(("request", hidden_field(html, "request")));
    }
    let action = between(html, "<form method=\"post\" action=\"", "\"");
    via.post(action).form(&form).send().await.unwrap()
}

pub fn between(text: &str, start: &str, end: &str) -> String {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in {text}"))
        + start.len();
    let to = text[from..].find(end).unwrap() + from;
    text[from..to].to_owned()
}

/// A web app client (authorization code + refresh) in `tenant`.
pub async fn web_client(app: &TestApp, tenant: &str, public: bool) -> TestClient {
    app.create_client(
        tenant,
        NewClient {
            name: "Photo <Printer>".into(),
            auth_method: if public {
                AuthMethod::None
            } else {
                AuthMethod::ClientSecretBasic
            },
            grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            redirect_uris: vec!["http://127.0.0.1:9999/callback".into()],
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

pub const REDIRECT: &str = "http://127.0.0.1:9999/callback";

/// A tenant `acme` with scopes, user alice/wonderland, and a web client.
pub async fn acme(public: bool) -> (TestApp, TestClient) {
    let app = spawn_app().await;
    app.create_tenant("acme").await;
    app.create_scope("acme", "read", "Read your photos").await;
    app.create_scope("acme", "write", "Change your photos")
        .await;
    app.create_user("acme", "alice", "wonderland").await;
    let client = web_client(&app, "acme", public).await;
    (app, client)
}

/// An authorize URL for `client` with a PKCE challenge.
pub fn authorize_url(
    app: &TestApp,
    tenant: &str,
    client: &TestClient,
    challenge: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut url = url::Url::parse(&format!("{}/authorize", app.issuer(tenant))).unwrap();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &client.id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("state", "xyz")
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    url.to_string()
}

/// Runs the browser part of the flow and returns the code.
pub async fn obtain_code(
    app: &TestApp,
    client: &TestClient,
    challenge: &str,
    scope: &str,
) -> String {
    let url = authorize_url(app, "acme", client, challenge, &[("scope", scope)]);
    let redirect = log_in_and_consent(app, &url, "alice", "wonderland", "allow", None).await;
    let (_, params) = location_params(&redirect);
    param(&params, "code").expect("a code").to_owned()
}

/// Redeems a code as a public client.
pub async fn redeem_public(
    app: &TestApp,
    client: &TestClient,
    code: &str,
    verifier: &str,
) -> reqwest::Response {
    app.http
        .post(app.token_url("acme"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", &client.id),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
}

/// A port on 127.0.0.1 that was free a moment ago, for a child process.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `tessera serve` (or other) child process, killed when dropped, so that
/// a failing test leaves nothing running.
pub struct ServeProcess {
    pub child: std::process::Child,
    /// e.g. `http://127.0.0.1:41234`
    pub base_url: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
