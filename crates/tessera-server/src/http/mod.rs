//! The HTTP edge: routes, request parsing, cookies, pages, and the one place
//! where protocol errors become HTTP responses.

mod account;
mod authorize;
mod body;
mod branding;
mod client_request;
mod discovery;
mod errors;
mod json;
mod pages;
mod token;
mod token_state;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tessera_core::{Tenant, UnixTime};
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;

use crate::AppState;

pub use errors::json_error;

/// Settings of the HTTP server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The longest a request may take, body included; a client that sends a
    /// `Content-Length` longer than its body gets `408` (a JSON error) after this.
    pub request_timeout: Duration,
    /// The longest a client may take to send a request's headers, so that slow
    /// or idle connections cannot pile up.
    pub header_read_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// The clock, read once per request at the edge.
pub(crate) fn now() -> UnixTime {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UnixTime(i64::try_from(seconds).unwrap_or(i64::MAX))
}

/// All of Tessera's routes. Every protocol endpoint lives under a tenant's
/// issuer, `{public_url}/t/{tenant}`. `serve` adds the request timeout.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/assets/tessera.css", get(pages::stylesheet))
        .route(
            "/.well-known/oauth-authorization-server/t/{tenant}",
            get(discovery::metadata),
        )
        .route(
            "/t/{tenant}/.well-known/oauth-authorization-server",
            get(discovery::metadata),
        )
        .route(
            "/t/{tenant}/.well-known/openid-configuration",
            get(discovery::metadata),
        )
        .route("/t/{tenant}/jwks", get(discovery::jwks))
        .route(
            "/t/{tenant}/authorize",
            get(authorize::authorize).post(authorize::authorize_posted),
        )
        .route("/t/{tenant}/login", post(authorize::login))
        .route(
            "/t/{tenant}/consent",
            get(authorize::consent_page).post(authorize::consent),
        )
        .route("/t/{tenant}/branding/logo", get(branding::logo))
        .route("/t/{tenant}/branding/style.css", get(branding::stylesheet))
        .route("/t/{tenant}/account", get(account::account))
        .route("/t/{tenant}/account/revoke", post(account::revoke))
        .route("/t/{tenant}/logout", post(account::logout))
        .route("/t/{tenant}/token", post(token::token))
        .route("/t/{tenant}/revoke", post(token_state::revocation))
        .route("/t/{tenant}/introspect", post(token_state::introspection))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            with_config_version,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The timeout layer answers an empty `408`; like every other error, it
/// says what went wrong (RFC 6749 §5.2 shape).
async fn explain_timeout(response: Response) -> Response {
    use axum::body::HttpBody;
    if response.status() == StatusCode::REQUEST_TIMEOUT
        && response.body().size_hint().exact() == Some(0)
    {
        return json_error(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request",
            Some("the request was not received in time"),
        );
    }
    response
}

/// Reads the configuration version once for the request, so that its
/// tenant, client and key lookups can use the cache (see `config_cache`).
async fn with_config_version(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    crate::config_cache::with_config_version(state.store.as_ref(), next.run(request)).await
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(error) => {
            tracing::warn!(%error, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

async fn not_found() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "invalid_request",
        Some("no such endpoint"),
    )
}

async fn method_not_allowed() -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        Some("method not allowed"),
    )
}

/// The client's IP address: the TCP peer, or, when the deployment says it
/// sits behind a proxy, the last `X-Forwarded-For` entry (the one that proxy
/// wrote; earlier entries are the client's to forge).
pub(crate) struct ClientAddress(pub Option<IpAddr>);

impl axum::extract::FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.trust_forwarded_for {
            let forwarded = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .last()
                .and_then(|last| last.trim().parse().ok());
            if forwarded.is_some() {
                return Ok(ClientAddress(forwarded));
            }
        }
        Ok(ClientAddress(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

/// Why a tenant could not be looked up.
pub(crate) enum TenantLookup {
    Unknown,
    Unavailable,
}

/// The tenant named in the path. The configuration cache is checked against
/// the database on every request, so a tenant deleted with the CLI is gone
/// for the running server at once.
pub(crate) async fn tenant(
    state: &AppState,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Tenant, TenantLookup> {
    let Ok(Path(name)) = path else {
        return Err(TenantLookup::Unknown);
    };
    match state.tenant_by_name(&name).await {
        Ok(Some(tenant)) => Ok(tenant),
        Ok(None) => Err(TenantLookup::Unknown),
        Err(error) => {
            tracing::warn!(%error, "tenant lookup failed");
            Err(TenantLookup::Unavailable)
        }
    }
}

/// Deletes expired rows every `every`, for as long as the server runs.
pub fn spawn_purge(state: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            match state.store.purge_expired(now()).await {
                Ok(0) => {}
                Ok(purged) => tracing::debug!(purged, "expired rows deleted"),
                Err(error) => tracing::warn!(%error, "purging expired rows failed"),
            }
        }
    })
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the
/// requests in flight finish (for at most ten seconds). Each request gets
/// `config.request_timeout`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(64 * 1024);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(connection) => connection,
                    Err(error) => {
                        // Out of file descriptors and the like: back off briefly.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                // Handlers see the peer address as axum's ConnectInfo. The
                // timeout wraps the router whole: `Router::layer` would box
                // every route once more, an allocation and a clone per request.
                let service = tower::ServiceBuilder::new()
                    .layer(tower_http::add_extension::AddExtensionLayer::new(ConnectInfo(peer)))
                    .layer(axum::middleware::map_response(explain_timeout))
                    .layer(TimeoutLayer::with_status_code(
                        StatusCode::REQUEST_TIMEOUT,
                        config.request_timeout,
                    ))
                    .service(router.clone());
                let service = TowerToHyperService::new(service);
                let connection = http.serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("connections still open after 10 s; closing them");
        }
    }
    Ok(())
}
