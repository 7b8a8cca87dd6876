//! contacts-api: each subject's own contact list, protected by
//! tessera-resource. `GET /contacts` needs `contacts:read`, `POST /contacts`
//! needs `contacts:write`, and `GET /me` (who the token speaks for) either.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::{Deserialize, Serialize};
use tessera_resource::{AccessToken, BearerLayer, RequireScopes, Validator};

#[derive(Debug, Parser)]
#[command(about = "A contact list API that accepts Tessera access tokens")]
struct Args {
    /// The issuer whose tokens are accepted, e.g. http://127.0.0.1:8080/t/demo.
    #[arg(long)]
    issuer: String,
    #[arg(long, default_value = "127.0.0.1:3000")]
    bind: String,
    /// The `aud` tokens must carry.
    #[arg(long, default_value = "contacts-api")]
    audience: String,
    /// Validate through the issuer's introspection endpoint instead of locally.
    #[arg(long, requires = "client_id")]
    introspect: bool,
    /// The API's own client id, for introspection.
    #[arg(long)]
    client_id: Option<String>,
    /// Read the API's client secret from standard input.
    #[arg(long, requires = "client_id")]
    client_secret_stdin: bool,
    /// With --introspect: how long an active answer is reused, in seconds.
    #[arg(long, default_value_t = 30, requires = "introspect")]
    cache_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Contact {
    name: String,
    email: String,
}

/// Contacts by subject: nobody sees another subject's list.
#[derive(Clone, Default)]
struct Contacts(Arc<Mutex<HashMap<String, Vec<Contact>>>>);

async fn list(State(contacts): State<Contacts>, token: AccessToken) -> Json<Vec<Contact>> {
    let all = contacts
        .0
        .lock()
        .map(|all| all.get(&token.subject).cloned().unwrap_or_default());
    Json(all.unwrap_or_default())
}

async fn add(
    State(contacts): State<Contacts>,
    token: AccessToken,
    Json(contact): Json<Contact>,
) -> Result<(StatusCode, Json<Contact>), StatusCode> {
    if contact.name.trim().is_empty() || !contact.email.contains('@') {
        return Err(StatusCode::UNPROCESSABLE_ENTITY);
    }
    let mut all = contacts
        .0
        .lock()
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    all.entry(token.subject).or_default().push(contact.clone());
    Ok((StatusCode::CREATED, Json(contact)))
}

/// What the API knows of the caller: for a client-credentials token the
/// subject is the client itself.
#[derive(Debug, Serialize)]
struct Me {
    subject: String,
    client_id: Option<String>,
    scopes: Vec<String>,
}

async fn me(token: AccessToken) -> Json<Me> {
    Json(Me {
        subject: token.subject,
        client_id: token.client_id,
        scopes: token.scopes.into_iter().collect(),
    })
}

fn app(validator: Validator) -> Router {
    let me = Router::new()
        .route("/me", get(me))
        .route_layer(RequireScopes::any(["contacts:read", "contacts:write"]));
    let reads = Router::new()
        .route("/contacts", get(list))
        .route_layer(RequireScopes::all(["contacts:read"]));
    let writes = Router::new()
        .route("/contacts", post(add))
        .route_layer(RequireScopes::all(["contacts:write"]));
    reads
        .merge(writes)
        .merge(me)
        .with_state(Contacts::default())
        .layer(BearerLayer::new(validator))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let mut builder = Validator::builder(&args.issuer, &args.audience);
    if args.introspect {
        if !args.client_secret_stdin {
            bail!("--introspect needs --client-secret-stdin");
        }
        let mut secret = String::new();
        std::io::stdin().read_to_string(&mut secret)?;
        let client_id = args
            .client_id
            .clone()
            .context("--introspect needs --client-id")?;
        builder = builder
            .introspection(client_id, secret.trim_end_matches(['\r', '\n']))
            .introspection_cache(Duration::from_secs(args.cache_seconds), 10_000);
    }
    let validator = builder
        .discover()
        .await
        .context("cannot reach the issuer")?;
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    tracing::info!(address = %listener.local_addr()?, issuer = %args.issuer, "contacts-api is listening");
    axum::serve(listener, app(validator)).await?;
    Ok(())
}
