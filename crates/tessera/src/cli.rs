//! The command line: argument definitions and what each command does.

use std::io::Read;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use tessera_core::throttle::ThrottlePolicy;
use tessera_core::{AppType, AuthMethod, GrantType, TokenFormat, UnixTime};
use tessera_server::service::admin::{self, NewClient};
use tessera_server::service::transfer;
use tessera_server::{AppState, ServerConfig};
use tessera_store::PoolSettings;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "A multi-tenant OAuth 2.0 authorization server"
)]
pub struct Args {
    /// Database to use: sqlite://relative/path, sqlite:///absolute/path, or
    /// postgres://user@host:port/database.
    #[arg(
        long,
        global = true,
        env = "TESSERA_DATABASE_URL",
        default_value = "sqlite://tessera.db"
    )]
    database_url: String,

    /// The most database connections this process opens.
    #[arg(
        long,
        global = true,
        env = "TESSERA_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    db_max_connections: u32,

    /// Seconds a request waits for a database connection before it fails
    /// with 503.
    #[arg(
        long,
        global = true,
        env = "TESSERA_DB_ACQUIRE_TIMEOUT",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=300)
    )]
    db_acquire_timeout: u64,

    /// Public base URL of the server; issuers are `{public_url}/t/{tenant}`.
    /// Default: http://{bind}.
    #[arg(long, global = true, env = "TESSERA_PUBLIC_URL")]
    public_url: Option<String>,

    #[command(subcommand)]
    command: Option<Command>,
}

impl Args {
    /// Whether this invocation runs the server.
    pub fn serves(&self) -> bool {
        matches!(self.command, None | Some(Command::Serve { .. }))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve {
        /// Address to listen on.
        #[arg(long, env = "TESSERA_BIND", default_value = "127.0.0.1:8080")]
        bind: String,
        #[command(flatten)]
        throttle: ThrottleArgs,
        /// Take the client address from the last X-Forwarded-For entry (only
        /// behind a reverse proxy that sets it).
        #[arg(long, env = "TESSERA_TRUST_FORWARDED_FOR")]
        trust_forwarded_for: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage tenants: each is an independent issuer.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage a tenant's scopes.
    #[command(subcommand)]
    Scope(ScopeCommand),
    /// Manage a tenant's client applications.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage a tenant's users (resource owners).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage a tenant's signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Write every tenant, with its keys, scopes, clients, users and consents,
    /// as JSON (to move to another database). The output holds private keys.
    Export {
        /// File to write (created with mode 0600); standard output if absent.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
    /// Read what `export` wrote into this database.
    Import {
        /// The export file, or `-` for standard input.
        file: String,
    },
}

/// Brute-force throttling of the login form and the password grant.
#[derive(Debug, Clone, clap::Args)]
struct ThrottleArgs {
    /// Failed passwords for one user from one address before a lockout.
    #[arg(long, env = "TESSERA_LOGIN_MAX_FAILURES", default_value_t = 5)]
    login_max_failures: i64,
    /// Failed passwords from one address (any user) before a lockout.
    #[arg(long, env = "TESSERA_LOGIN_ADDRESS_MAX_FAILURES", default_value_t = 50)]
    login_address_max_failures: i64,
    /// Seconds after which failures are forgotten.
    #[arg(long, env = "TESSERA_LOGIN_WINDOW", default_value_t = 900)]
    login_window: i64,
    /// First lockout in seconds; it doubles with each further failure.
    #[arg(long, env = "TESSERA_LOGIN_LOCKOUT", default_value_t = 30)]
    login_lockout: i64,
    /// Longest lockout in seconds.
    #[arg(long, env = "TESSERA_LOGIN_MAX_LOCKOUT", default_value_t = 900)]
    login_max_lockout: i64,
}

impl ThrottleArgs {
    fn policy(&self) -> Result<ThrottlePolicy> {
        let values = [
            self.login_max_failures,
            self.login_address_max_failures,
            self.login_window,
            self.login_lockout,
            self.login_max_lockout,
        ];
        if values.iter().any(|&v| v < 1) || self.login_lockout > self.login_max_lockout {
            bail!(
                "throttling settings must be positive, and --login-lockout at most --login-max-lockout"
            );
        }
        Ok(ThrottlePolicy {
            user_failures: self.login_max_failures,
            address_failures: self.login_address_max_failures,
            window: self.login_window,
            base_lockout: self.login_lockout,
            max_lockout: self.login_max_lockout,
        })
    }
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant with a fresh ES256 signing key.
    Create {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a tenant's settings.
    Set {
        name: String,
        /// Access token lifetime in seconds (default 900).
        #[arg(long)]
        access_token_ttl: Option<i64>,
        /// Refresh token lifetime in seconds (default 2592000, 30 days).
        #[arg(long)]
        refresh_token_ttl: Option<i64>,
        /// Authorization code lifetime in seconds (default 60).
        #[arg(long)]
        code_ttl: Option<i64>,
        /// Allow the implicit grant for clients registered for it (default
        /// false; discouraged by RFC 9700 §2.1.2).
        #[arg(long)]
        allow_implicit: Option<bool>,
        /// The name the tenant's pages show.
        #[arg(long)]
        display_name: Option<String>,
        /// A PNG, JPEG, GIF or WebP logo of at most 256 KiB.
        #[arg(long)]
        logo_file: Option<std::path::PathBuf>,
        /// The accent colour of buttons and focus rings: #rgb or #rrggbb.
        #[arg(long)]
        accent_color: Option<String>,
        /// A stylesheet (at most 64 KiB) added to the tenant's pages.
        #[arg(long)]
        css_file: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a tenant and everything in it.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
enum ScopeCommand {
    /// Define a scope (or change its description).
    Create {
        #[arg(long)]
        tenant: String,
        name: String,
        /// What the consent page shows for this scope.
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    Delete {
        #[arg(long)]
        tenant: String,
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AuthMethodArg {
    ClientSecretBasic,
    ClientSecretPost,
    None,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TokenFormatArg {
    Jwt,
    Opaque,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AppTypeArg {
    /// A server-side web app: confidential, authorization code + refresh.
    Web,
    /// A browser app: public, authorization code with PKCE + rotating refresh.
    Spa,
    /// A mobile or desktop app (RFC 8252): as spa, plus loopback redirects on
    /// any port and private-use URI schemes.
    Native,
    /// A service: confidential, client credentials only.
    M2m,
}

impl From<AppTypeArg> for AppType {
    fn from(arg: AppTypeArg) -> Self {
        match arg {
            AppTypeArg::Web => AppType::Web,
            AppTypeArg::Spa => AppType::Spa,
            AppTypeArg::Native => AppType::Native,
            AppTypeArg::M2m => AppType::M2m,
        }
    }
}

/// Settings shared by `client create` and `client set`; given lists replace.
#[derive(Debug, Clone, clap::Args)]
struct ClientSettingsArgs {
    /// authorization_code, client_credentials, refresh_token, password, implicit.
    #[arg(long = "grant-type", value_parser = parse_grant_type)]
    grant_types: Vec<GrantType>,
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
    #[arg(long = "scope")]
    scopes: Vec<String>,
    #[arg(long = "audience")]
    audiences: Vec<String>,
    #[arg(long, value_enum)]
    token_format: Option<TokenFormatArg>,
    /// Access token lifetime for this client, in seconds (default: the tenant's).
    #[arg(long)]
    access_token_ttl: Option<i64>,
    /// Refresh token lifetime for this client, in seconds (default: the tenant's).
    #[arg(long)]
    refresh_token_ttl: Option<i64>,
}

impl ClientSettingsArgs {
    fn apply(self, client: &mut NewClient) {
        if !self.grant_types.is_empty() {
            client.grant_types = self.grant_types;
        }
        if !self.redirect_uris.is_empty() {
            client.redirect_uris = self.redirect_uris;
        }
        if !self.scopes.is_empty() {
            client.scopes = self.scopes;
        }
        if !self.audiences.is_empty() {
            client.audiences = self.audiences;
        }
        if let Some(format) = self.token_format {
            client.token_format = match format {
                TokenFormatArg::Jwt => TokenFormat::Jwt,
                TokenFormatArg::Opaque => TokenFormat::Opaque,
            };
        }
        if self.access_token_ttl.is_some() {
            client.access_token_ttl = self.access_token_ttl;
        }
        if self.refresh_token_ttl.is_some() {
            client.refresh_token_ttl = self.refresh_token_ttl;
        }
    }
}

/// What `client set` can take away: lists emptied, lifetimes back to the
/// tenant's. Each conflicts with the option that would set the same thing.
#[derive(Debug, Clone, clap::Args)]
struct ClientClearArgs {
    /// Remove every redirect URI.
    #[arg(long, conflicts_with = "redirect_uris")]
    clear_redirect_uris: bool,
    /// Remove every scope.
    #[arg(long, conflicts_with = "scopes")]
    clear_scopes: bool,
    /// Remove every audience: access tokens are then for the tenant's issuer.
    #[arg(long, conflicts_with = "audiences")]
    clear_audiences: bool,
    /// Drop this client's access token lifetime: the tenant's applies.
    #[arg(long, conflicts_with = "access_token_ttl")]
    clear_access_token_ttl: bool,
    /// Drop this client's refresh token lifetime: the tenant's applies.
    #[arg(long, conflicts_with = "refresh_token_ttl")]
    clear_refresh_token_ttl: bool,
}

impl ClientClearArgs {
    fn apply(self, client: &mut NewClient) {
        if self.clear_redirect_uris {
            client.redirect_uris.clear();
        }
        if self.clear_scopes {
            client.scopes.clear();
        }
        if self.clear_audiences {
            client.audiences.clear();
        }
        if self.clear_access_token_ttl {
            client.access_token_ttl = None;
        }
        if self.clear_refresh_token_ttl {
            client.refresh_token_ttl = None;
        }
    }
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Register a client; its secret is printed once and never again.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// The kind of application: chooses secure defaults that the other
        /// flags may override.
        #[arg(long = "type", value_enum)]
        app_type: Option<AppTypeArg>,
        /// A public client (no secret; --auth-method none).
        #[arg(long)]
        public: bool,
        #[arg(long, value_enum)]
        auth_method: Option<AuthMethodArg>,
        #[command(flatten)]
        settings: ClientSettingsArgs,
        #[arg(long)]
        json: bool,
    },
    /// Change a client's settings (its secret and public/confidential nature stay).
    Set {
        #[arg(long)]
        tenant: String,
        /// The client's id (it may begin with `-`).
        #[arg(allow_hyphen_values = true)]
        client_id: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        settings: ClientSettingsArgs,
        #[command(flatten)]
        clear: ClientClearArgs,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    Delete {
        #[arg(long)]
        tenant: String,
        /// The client's id (it may begin with `-`).
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        username: String,
        /// Read the password from standard input (one trailing newline is removed).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    Delete {
        #[arg(long)]
        tenant: String,
        username: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Add a new signing key; the previous one stays published until the
    /// tokens it signed have expired.
    Rotate {
        #[arg(long)]
        tenant: String,
    },
}

fn parse_grant_type(text: &str) -> Result<GrantType, String> {
    text.parse().map_err(|_| {
        let known: Vec<&str> = GrantType::ALL.iter().map(|g| g.as_str()).collect();
        format!("unknown grant type '{text}' (known: {})", known.join(", "))
    })
}

fn now() -> UnixTime {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UnixTime(i64::try_from(seconds).unwrap_or(i64::MAX))
}

pub async fn run(args: Args) -> Result<()> {
    let default_bind =
        std::env::var("TESSERA_BIND").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let command = match args.command {
        Some(command) => command,
        // `tessera` alone serves, with every serve option at its default.
        None => Args::parse_from(["tessera", "serve"])
            .command
            .context("the serve command")?,
    };
    // Admin commands print issuers: they derive the same default public URL
    // as the server would.
    let bind_for_url = match &command {
        Command::Serve { bind, .. } => bind.clone(),
        _ => default_bind,
    };
    let public_url = args
        .public_url
        .unwrap_or_else(|| format!("http://{bind_for_url}"));
    let parsed = url::Url::parse(&public_url)
        .with_context(|| format!("invalid --public-url '{public_url}'"))?;
    // Routes are served at the root; a path would make issuers that the
    // RFC 8414 well-known URLs cannot reach.
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.path() != "/"
        || parsed.query().is_some()
    {
        bail!(
            "--public-url must be an http(s) origin without a path, such as https://id.example.com"
        );
    }
    let pool = PoolSettings {
        max_connections: args.db_max_connections,
        acquire_timeout: std::time::Duration::from_secs(args.db_acquire_timeout),
    };
    let store = tessera_store::connect(&args.database_url, &pool)
        .await
        .with_context(|| format!("cannot open database '{}'", redacted(&args.database_url)))?;
    let mut state = AppState::new(store, &public_url).await?;
    let outcome = match command {
        Command::Serve {
            bind,
            throttle,
            trust_forwarded_for,
        } => {
            state.throttle = throttle.policy()?;
            state.trust_forwarded_for = trust_forwarded_for;
            serve(state.clone(), &bind).await
        }
        Command::Migrate => {
            println!("migrations applied");
            Ok(())
        }
        Command::Tenant(command) => tenant(&state, command).await,
        Command::Scope(command) => scope(&state, command).await,
        Command::Client(command) => client(&state, command).await,
        Command::User(command) => user(&state, command).await,
        Command::Keys(KeysCommand::Rotate { tenant }) => {
            let kid = admin::rotate_key(&state, &tenant, now()).await?;
            println!("new signing key {kid}");
            Ok(())
        }
        Command::Export { output } => export(&state, output).await,
        Command::Import { file } => import(&state, &file).await,
    };
    state.store.close().await;
    outcome
}

async fn export(state: &AppState, output: Option<std::path::PathBuf>) -> Result<()> {
    let document = transfer::export(state, now()).await?;
    let text = serde_json::to_string_pretty(&document)?;
    match output {
        Some(path) => {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(&path)
                .with_context(|| format!("cannot create {} (it must not exist)", path.display()))?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            eprintln!(
                "exported {} tenant(s) to {}; it holds private keys: keep it safe",
                document.tenants.len(),
                path.display()
            );
        }
        None => println!("{text}"),
    }
    Ok(())
}

async fn import(state: &AppState, file: &str) -> Result<()> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    let document: transfer::Export =
        serde_json::from_str(&text).context("the file is not a Tessera export")?;
    let imported = transfer::import(state, document).await?;
    println!(
        "imported {} tenant(s): {}",
        imported.len(),
        imported.join(", ")
    );
    Ok(())
}

async fn serve(state: AppState, bind: &str) -> Result<()> {
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let config = ServerConfig::default();
    let router = tessera_server::router(state.clone());
    tracing::info!(address = %listener.local_addr()?, public_url = %state.public_url, "Tessera is listening");
    // Not `list_tenants`: with many tenants that would read them all, and
    // the memory would stay with the process.
    if !state.store.has_tenants().await? {
        print_first_steps();
    }
    let purge = tessera_server::spawn_purge(state.clone(), std::time::Duration::from_secs(600));
    tessera_server::serve(listener, router, &config, shutdown_signal()).await?;
    purge.abort();
    tracing::info!("stopped");
    Ok(())
}

fn print_first_steps() {
    eprintln!(
        "\nThe database has no tenant yet. In another terminal:\n\n\
         \x20 tessera tenant create demo\n\
         \x20 tessera scope create --tenant demo read --description \"Read your data\"\n\
         \x20 tessera client create --tenant demo --name demo-service --grant-type client_credentials --scope read\n\
         \x20 echo 'a long password' | tessera user create --tenant demo --username alice --password-stdin\n\n\
         (with cargo: cargo run --release -- tenant create demo, and so on.) See README.md.\n"
    );
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

/// Prints rows as an aligned table.
fn print_table(headings: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headings.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headings.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

async fn tenant(state: &AppState, command: TenantCommand) -> Result<()> {
    match command {
        TenantCommand::Create { name, json } => {
            let tenant = admin::create_tenant(state, &name, now()).await?;
            let issuer = state.issuer(&tenant.name);
            if json {
                print_json(&json!({"tenant": tenant.name.as_str(), "issuer": issuer}));
            } else {
                println!("created tenant {}\nissuer: {issuer}", tenant.name);
            }
        }
        TenantCommand::Set {
            name,
            access_token_ttl,
            refresh_token_ttl,
            code_ttl,
            allow_implicit,
            display_name,
            logo_file,
            accent_color,
            css_file,
            json,
        } => {
            let read =
                |path: Option<std::path::PathBuf>, limit: usize| -> Result<Option<Vec<u8>>> {
                    let Some(path) = path else { return Ok(None) };
                    let size = std::fs::metadata(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?
                        .len();
                    if size > limit as u64 {
                        bail!("{} is larger than {} KiB", path.display(), limit / 1024);
                    }
                    Ok(Some(std::fs::read(&path).with_context(|| {
                        format!("cannot read {}", path.display())
                    })?))
                };
            // Every option is checked before anything is stored, so a bad
            // value changes nothing.
            let changes = admin::TenantChanges {
                access_token_ttl,
                refresh_token_ttl,
                code_ttl,
                allow_implicit,
                branding: admin::BrandingChanges {
                    display_name,
                    accent_color,
                    logo: read(logo_file, tessera_core::branding::MAX_LOGO_BYTES)?,
                    css: read(css_file, tessera_core::branding::MAX_CSS_BYTES)?,
                },
            };
            let admin::TenantSetup {
                lifetimes,
                settings,
                branding,
            } = admin::set_tenant(state, &name, changes, now()).await?;
            let implicit = settings.allow_implicit;
            if json {
                print_json(&json!({
                    "tenant": name,
                    "access_token_ttl": lifetimes.access_token,
                    "refresh_token_ttl": lifetimes.refresh_token,
                    "code_ttl": lifetimes.authorization_code,
                    "allow_implicit": implicit,
                    "display_name": branding.display_name,
                }));
            } else {
                println!(
                    "tenant {name}: access tokens {} s, refresh tokens {} s, codes {} s, implicit grant {}",
                    lifetimes.access_token,
                    lifetimes.refresh_token,
                    lifetimes.authorization_code,
                    if implicit { "allowed" } else { "refused" }
                );
            }
        }
        TenantCommand::List { json } => {
            let tenants = state.store.list_tenants().await?;
            if json {
                let list: Vec<_> = tenants
                    .iter()
                    .map(|t| json!({"tenant": t.name.as_str(), "issuer": state.issuer(&t.name)}))
                    .collect();
                print_json(&json!(list));
            } else {
                let rows: Vec<Vec<String>> = tenants
                    .iter()
                    .map(|t| vec![t.name.to_string(), state.issuer(&t.name)])
                    .collect();
                print_table(&["TENANT", "ISSUER"], &rows);
            }
        }
        TenantCommand::Delete { name } => {
            if !state.store.delete_tenant(&name).await? {
                bail!("tenant '{name}' not found");
            }
            println!("deleted tenant {name}");
        }
    }
    Ok(())
}

async fn scope(state: &AppState, command: ScopeCommand) -> Result<()> {
    match command {
        ScopeCommand::Create {
            tenant,
            name,
            description,
            json,
        } => {
            let scope = admin::create_scope(state, &tenant, &name, &description).await?;
            if json {
                print_json(
                    &json!({"tenant": tenant, "scope": scope.name.as_str(), "description": scope.description}),
                );
            } else {
                println!("scope {} defined in tenant {tenant}", scope.name);
            }
        }
        ScopeCommand::List { tenant, json } => {
            let t = admin::tenant(state, &tenant).await?;
            let scopes = state.store.list_scopes(t.id).await?;
            if json {
                let list: Vec<_> = scopes
                    .iter()
                    .map(|s| json!({"scope": s.name.as_str(), "description": s.description}))
                    .collect();
                print_json(&json!(list));
            } else {
                let rows: Vec<Vec<String>> = scopes
                    .iter()
                    .map(|s| vec![s.name.to_string(), s.description.clone()])
                    .collect();
                print_table(&["SCOPE", "DESCRIPTION"], &rows);
            }
        }
        ScopeCommand::Delete { tenant, name } => {
            let t = admin::tenant(state, &tenant).await?;
            if !state.store.delete_scope(t.id, &name).await? {
                bail!("scope '{name}' not found in tenant '{tenant}'");
            }
            println!("deleted scope {name}");
        }
    }
    Ok(())
}

async fn client(state: &AppState, command: ClientCommand) -> Result<()> {
    match command {
        ClientCommand::Create {
            tenant,
            name,
            app_type,
            public,
            auth_method,
            settings,
            json,
        } => {
            let mut request = match app_type {
                Some(app_type) => NewClient::of_type(&name, app_type.into()),
                None => NewClient {
                    grant_types: vec![GrantType::AuthorizationCode],
                    app_type: None,
                    ..NewClient::of_type(&name, AppType::Web)
                },
            };
            request.auth_method = match (public, auth_method) {
                (true, None | Some(AuthMethodArg::None)) => AuthMethod::None,
                (true, Some(_)) => bail!("--public means --auth-method none"),
                (false, None) => request.auth_method,
                (false, Some(AuthMethodArg::ClientSecretBasic)) => AuthMethod::ClientSecretBasic,
                (false, Some(AuthMethodArg::ClientSecretPost)) => AuthMethod::ClientSecretPost,
                (false, Some(AuthMethodArg::None)) => AuthMethod::None,
            };
            settings.apply(&mut request);
            let created = admin::create_client(state, &tenant, request, now()).await?;
            let secret = created.secret.as_ref().map(|s| s.expose().to_owned());
            if json {
                print_json(
                    &json!({"client_id": created.client.client_id.as_str(), "client_secret": secret}),
                );
            } else {
                println!("client_id:     {}", created.client.client_id);
                match secret {
                    Some(secret) => println!("client_secret: {secret}\n(shown once: store it now)"),
                    None => println!("public client: no secret"),
                }
            }
        }
        ClientCommand::Set {
            tenant,
            client_id,
            name,
            settings,
            clear,
            json,
        } => {
            let existing = admin::client(state, &tenant, &client_id).await?;
            let mut request = NewClient::from_client(&existing);
            if let Some(name) = name {
                request.name = name;
            }
            settings.apply(&mut request);
            clear.apply(&mut request);
            let updated = admin::update_client(state, &tenant, &client_id, request).await?;
            if json {
                print_json(&client_json(&updated));
            } else {
                println!("updated client {client_id}");
            }
        }
        ClientCommand::List { tenant, json } => {
            let t = admin::tenant(state, &tenant).await?;
            let clients = state.store.list_clients(t.id).await?;
            if json {
                print_json(&json!(clients.iter().map(client_json).collect::<Vec<_>>()));
            } else {
                let rows: Vec<Vec<String>> = clients
                    .iter()
                    .map(|c| {
                        vec![
                            c.client_id.to_string(),
                            c.name.clone(),
                            c.app_type.map_or("-", |t| t.as_str()).to_owned(),
                            c.auth_method.to_string(),
                            grant_names(c).join(","),
                            c.scopes.to_string(),
                        ]
                    })
                    .collect();
                print_table(
                    &["CLIENT_ID", "NAME", "TYPE", "AUTH", "GRANTS", "SCOPES"],
                    &rows,
                );
            }
        }
        ClientCommand::Delete { tenant, client_id } => {
            let t = admin::tenant(state, &tenant).await?;
            if !state.store.delete_client(t.id, &client_id).await? {
                bail!("client '{client_id}' not found in tenant '{tenant}'");
            }
            println!("deleted client {client_id}");
        }
    }
    Ok(())
}

fn grant_names(client: &tessera_core::Client) -> Vec<&'static str> {
    client.grant_types.iter().map(|g| g.as_str()).collect()
}

/// A client as `client list --json` and `client set --json` print it.
fn client_json(c: &tessera_core::Client) -> serde_json::Value {
    json!({
        "client_id": c.client_id.as_str(),
        "name": c.name,
        "type": c.app_type.map(|t| t.as_str()),
        "auth_method": c.auth_method.as_str(),
        "grant_types": grant_names(c),
        "redirect_uris": c.redirect_uris.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        "scopes": c.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "audiences": c.audiences,
        "token_format": c.token_format.as_str(),
        "access_token_ttl": c.access_token_ttl,
        "refresh_token_ttl": c.refresh_token_ttl,
    })
}

async fn user(state: &AppState, command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Create {
            tenant,
            username,
            password_stdin: _,
            json,
        } => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("cannot read the password from standard input")?;
            // One trailing newline (as `echo` adds) is not part of the password.
            let password = password
                .strip_suffix("\r\n")
                .or_else(|| password.strip_suffix('\n'))
                .unwrap_or(&password);
            let user = admin::create_user(state, &tenant, &username, password, now()).await?;
            if json {
                print_json(&json!({"tenant": tenant, "username": user.username, "id": user.id}));
            } else {
                println!(
                    "created user {} ({}) in tenant {tenant}",
                    user.username, user.id
                );
            }
        }
        UserCommand::List { tenant, json } => {
            let t = admin::tenant(state, &tenant).await?;
            let users = state.store.list_users(t.id).await?;
            if json {
                let list: Vec<_> = users
                    .iter()
                    .map(|u| json!({"username": u.username, "id": u.id}))
                    .collect();
                print_json(&json!(list));
            } else {
                let rows: Vec<Vec<String>> = users
                    .iter()
                    .map(|u| vec![u.username.clone(), u.id.clone()])
                    .collect();
                print_table(&["USERNAME", "ID"], &rows);
            }
        }
        UserCommand::Delete { tenant, username } => {
            let t = admin::tenant(state, &tenant).await?;
            if !state.store.delete_user(t.id, &username).await? {
                bail!("user '{username}' not found in tenant '{tenant}'");
            }
            println!("deleted user {username}");
        }
    }
    Ok(())
}

/// The database URL without its password, for messages.
fn redacted(database_url: &str) -> String {
    match url::Url::parse(database_url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => database_url.to_owned(),
    }
}
