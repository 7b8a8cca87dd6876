//! The authorization endpoint and what follows it in the browser: login,
//! consent, and the authorization code (RFC 6749 §4.1.1–§4.1.2).

use tessera_core::form::FormParams;
use tessera_core::grant::{
    AuthorizationParams, Prompt, ResponseType, UntrustedRedirect, consent_covers,
    resolve_redirect_uri, validate_authorization_request,
};
use tessera_core::secret::{BearerSecret, Purpose};
use tessera_core::{
    AuthorizationCode, AuthorizeError, Client, PendingAuthorization, RedirectUri, ScopeDefinition,
    ScopeSet, Session, Tenant, UnixTime,
};

use super::credentials::{Verdict, check_password};
use super::token::{Subject, issue_access_token};
use super::{ServiceError, new_ordered_id, new_secret};
use crate::AppState;

/// How long a validated authorization request waits for login and consent.
const PENDING_LIFETIME: i64 = 600;
/// How long a login session lasts.
pub const SESSION_LIFETIME: i64 = 12 * 3600;

/// Problems that make the redirect URI untrustworthy, or that concern the
/// browser rather than the client: shown as an HTML page, never redirected
/// (RFC 6749 §4.1.2.1, RFC 9700 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageError {
    UnknownTenant,
    MalformedQuery,
    /// A form larger than the server reads.
    TooLarge,
    MissingClientId,
    UnknownClient,
    RepeatedClientOrRedirect,
    MissingRedirectUri,
    UnregisteredRedirectUri,
    RequestExpired,
    CsrfFailed,
    Unavailable,
    Internal,
}

impl From<ServiceError> for PageError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Unavailable(cause) => {
                tracing::warn!(%cause, "storage unavailable");
                PageError::Unavailable
            }
            ServiceError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                PageError::Internal
            }
        }
    }
}

impl From<tessera_store::StoreError> for PageError {
    fn from(error: tessera_store::StoreError) -> Self {
        ServiceError::from(error).into()
    }
}

/// An error to report to the client at its trusted redirect URI.
#[derive(Debug, Clone)]
pub struct ErrorRedirect {
    pub redirect_uri: RedirectUri,
    pub error: AuthorizeError,
    pub state: Option<String>,
    /// Implicit-grant errors travel in the fragment (RFC 6749 §4.2.2.1).
    pub in_fragment: bool,
}

#[derive(Debug)]
pub enum AuthorizeFailure {
    Page(PageError),
    Redirect(ErrorRedirect),
}

impl From<tessera_store::StoreError> for AuthorizeFailure {
    fn from(error: tessera_store::StoreError) -> Self {
        AuthorizeFailure::Page(error.into())
    }
}

impl From<PageError> for AuthorizeFailure {
    fn from(error: PageError) -> Self {
        AuthorizeFailure::Page(error)
    }
}

/// A validated request waiting for the resource owner.
pub struct Begun {
    /// The pending request's id, handed to the browser (only its hash is stored).
    pub request_id: BearerSecret,
}

/// Validates an authorization request. The client and redirect URI are
/// checked first; until they are trusted, nothing is redirected.
pub async fn begin(
    state: &AppState,
    tenant: &Tenant,
    query: &FormParams,
    now: UnixTime,
) -> Result<Begun, AuthorizeFailure> {
    let single = |name| {
        query
            .single(name)
            .map_err(|_| PageError::RepeatedClientOrRedirect)
    };
    let client_id = single("client_id")?.ok_or(PageError::MissingClientId)?;
    let requested_redirect = single("redirect_uri")?;
    let client = state
        .client(tenant.id, client_id)
        .await?
        .ok_or(PageError::UnknownClient)?;
    let (redirect_uri, redirect_uri_in_request) = resolve_redirect_uri(&client, requested_redirect)
        .map_err(|problem| match problem {
            UntrustedRedirect::Missing => PageError::MissingRedirectUri,
            UntrustedRedirect::NotRegistered => PageError::UnregisteredRedirectUri,
        })?;

    // From here on errors go back to the client (RFC 6749 §4.1.2.1).
    let client_state = query.single("state").ok().flatten().map(str::to_owned);
    let implicit_requested = query.single("response_type").ok().flatten() == Some("token");
    let redirect_error = |error| {
        AuthorizeFailure::Redirect(ErrorRedirect {
            redirect_uri: redirect_uri.clone(),
            error,
            state: client_state.clone(),
            in_fragment: implicit_requested,
        })
    };
    // RFC 6749 §3.1: request parameters MUST NOT be included more than once.
    if query.first_repeated().is_some() {
        return Err(redirect_error(AuthorizeError::InvalidRequest(
            "a request parameter is repeated",
        )));
    }
    let params = AuthorizationParams {
        response_type: single("response_type")?,
        redirect_uri: requested_redirect,
        scope: single("scope")?,
        state: client_state.as_deref(),
        code_challenge: single("code_challenge")?,
        code_challenge_method: single("code_challenge_method")?,
    };
    let request = validate_authorization_request(&client, &params, tenant.settings.allow_implicit)
        .map_err(redirect_error)?;
    let prompt = Prompt::parse(single("prompt")?).map_err(redirect_error)?;

    let request_id = new_secret();
    let pending = PendingAuthorization {
        id_hash: state
            .hasher
            .hash(Purpose::PendingAuthorization, request_id.expose()),
        tenant_id: tenant.id,
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        redirect_uri_in_request,
        scope: request.scope,
        state: client_state.clone(),
        code_challenge: request.code_challenge,
        response_type: request.response_type,
        prompt,
        created_at: now,
        expires_at: now.plus_seconds(PENDING_LIFETIME),
    };
    state
        .store
        .put_pending_authorization(&pending)
        .await
        .map_err(|e| redirect_error(ServiceError::from(e).into()))?;
    Ok(Begun { request_id })
}

/// A pending request and what the consent page shows of it.
#[derive(Debug)]
pub struct PendingView {
    pub pending: PendingAuthorization,
    pub client: std::sync::Arc<Client>,
    pub scopes: Vec<ScopeDefinition>,
}

/// Loads a pending request by the id the browser holds.
pub async fn pending(
    state: &AppState,
    tenant: &Tenant,
    request_id: &str,
    now: UnixTime,
) -> Result<PendingView, PageError> {
    let id_hash = state.hasher.hash(Purpose::PendingAuthorization, request_id);
    let pending = state
        .store
        .pending_authorization(tenant.id, &id_hash, now)
        .await?
        .ok_or(PageError::RequestExpired)?;
    let client = state
        .client(tenant.id, pending.client_id.as_str())
        .await?
        .ok_or(PageError::RequestExpired)?;
    let definitions = state.store.list_scopes(tenant.id).await?;
    let scopes = pending
        .scope
        .iter()
        .map(|scope| ScopeDefinition {
            name: scope.clone(),
            description: definitions
                .iter()
                .find(|d| &d.name == scope)
                .map(|d| d.description.clone())
                .unwrap_or_default(),
        })
        .collect();
    Ok(PendingView {
        pending,
        client,
        scopes,
    })
}

/// A new login session; `id` goes into the cookie, only its hash is stored.
#[derive(Debug)]
pub struct NewSession {
    pub id: BearerSecret,
    pub session: Session,
}

/// The outcome of the login form.
#[derive(Debug)]
pub enum LoginOutcome {
    LoggedIn(NewSession),
    Rejected,
    Throttled,
}

/// Checks a username and password and opens a new session.
pub async fn login(
    state: &AppState,
    tenant: &Tenant,
    username: &str,
    password_text: &str,
    address: Option<std::net::IpAddr>,
    now: UnixTime,
) -> Result<LoginOutcome, ServiceError> {
    let user = match check_password(state, tenant, username, password_text, address, now).await? {
        Verdict::Verified(user) => user,
        Verdict::Rejected => return Ok(LoginOutcome::Rejected),
        Verdict::Throttled => return Ok(LoginOutcome::Throttled),
    };
    // A fresh session id on every login, so a planted id is worthless.
    let id = new_secret();
    let session = Session {
        id_hash: state.hasher.hash(Purpose::Session, id.expose()),
        tenant_id: tenant.id,
        user_id: user.id,
        auth_time: now,
        expires_at: now.plus_seconds(SESSION_LIFETIME),
    };
    state.store.create_session(&session).await?;
    Ok(LoginOutcome::LoggedIn(NewSession { id, session }))
}

/// Records that the browser just logged in for the pending request, which
/// satisfies its `prompt=login`.
pub async fn logged_in_for(
    state: &AppState,
    tenant: &Tenant,
    request_id: &str,
    now: UnixTime,
) -> Result<(), ServiceError> {
    let id_hash = state.hasher.hash(Purpose::PendingAuthorization, request_id);
    if let Some(pending) = state
        .store
        .pending_authorization(tenant.id, &id_hash, now)
        .await?
        && pending.prompt.login
    {
        let prompt = Prompt {
            login: false,
            ..pending.prompt
        };
        state
            .store
            .set_pending_prompt(tenant.id, &id_hash, prompt)
            .await?;
    }
    Ok(())
}

/// The session a cookie names, if it is alive and belongs to this tenant.
pub async fn session(
    state: &AppState,
    tenant: &Tenant,
    session_id: &str,
    now: UnixTime,
) -> Result<Option<Session>, ServiceError> {
    let id_hash = state.hasher.hash(Purpose::Session, session_id);
    Ok(state.store.session(tenant.id, &id_hash, now).await?)
}

/// The resource owner's answer on the consent page.
#[derive(Debug)]
pub enum Decision<'a> {
    /// Allow, with the scopes left ticked (a partial grant when some were unticked).
    Allow(Vec<&'a str>),
    Deny,
}

/// Ends a pending request with the owner's decision on the consent page and
/// returns where to send the browser: the client's redirect URI with a code,
/// a token, or an error.
pub async fn decide(
    state: &AppState,
    tenant: &Tenant,
    session: &Session,
    request_id: &str,
    decision: Decision<'_>,
    now: UnixTime,
) -> Result<String, PageError> {
    let view = pending(state, tenant, request_id, now).await?;
    let outcome = match decision {
        Decision::Deny => Err(AuthorizeError::AccessDenied),
        Decision::Allow(ticked) => {
            let ticked = ScopeSet::from_scopes(
                ticked
                    .into_iter()
                    .filter_map(|s| tessera_core::Scope::parse(s).ok()),
            );
            let granted = view.pending.scope.intersection(&ticked);
            // Nothing left to grant of a non-empty request means no.
            if view.pending.scope.is_empty() || !granted.is_empty() {
                // Remembered, so that the same or fewer scopes skip this page.
                let earlier = state
                    .store
                    .consent(tenant.id, &session.user_id, view.client.client_id.as_str())
                    .await?;
                let remembered =
                    earlier.map_or_else(|| granted.clone(), |c| c.scope.union(&granted));
                state
                    .store
                    .put_consent(
                        tenant.id,
                        &session.user_id,
                        view.client.client_id.as_str(),
                        &remembered,
                        now,
                    )
                    .await?;
                Ok(granted)
            } else {
                Err(AuthorizeError::AccessDenied)
            }
        }
    };
    finish(state, tenant, Some(session), view, outcome, now).await
}

/// What the browser should see next for a pending request.
#[derive(Debug)]
pub enum Next {
    Login(PendingView),
    Consent(PendingView),
    /// The request is answered: go back to the client.
    Redirect(String),
}

/// Decides the next step of a pending request for a browser with `session`:
/// log in, consent, or — with a standing consent, or `prompt=none` — answer
/// at once.
pub async fn resume(
    state: &AppState,
    tenant: &Tenant,
    session: Option<&Session>,
    request_id: &str,
    now: UnixTime,
) -> Result<Next, PageError> {
    let view = pending(state, tenant, request_id, now).await?;
    let prompt = view.pending.prompt;
    // prompt=login ignores the session until the login form was passed for
    // this very request (`logged_in_for` then clears it).
    let session = session.filter(|_| !prompt.login);
    let consented = match session {
        Some(session) => state
            .store
            .consent(tenant.id, &session.user_id, view.client.client_id.as_str())
            .await?
            .map(|c| c.scope),
        None => None,
    };
    let covered = consent_covers(consented.as_ref(), &view.pending.scope, prompt);
    let outcome = match (session, covered) {
        (Some(_), true) => Ok(view.pending.scope.clone()),
        (None, _) if prompt.none => Err(AuthorizeError::LoginRequired),
        (Some(_), false) if prompt.none => Err(AuthorizeError::ConsentRequired),
        (None, _) => return Ok(Next::Login(view)),
        (Some(_), false) => return Ok(Next::Consent(view)),
    };
    finish(state, tenant, session, view, outcome, now)
        .await
        .map(Next::Redirect)
}

/// Answers a pending request: once, with a code, a token or an error.
async fn finish(
    state: &AppState,
    tenant: &Tenant,
    session: Option<&Session>,
    view: PendingView,
    outcome: Result<ScopeSet, AuthorizeError>,
    now: UnixTime,
) -> Result<String, PageError> {
    let pending = view.pending;
    // One answer per request, even when the form is submitted twice.
    if !state
        .store
        .take_pending_authorization(tenant.id, &pending.id_hash)
        .await?
    {
        return Err(PageError::RequestExpired);
    }
    let issuer = state.issuer(&tenant.name);
    let (granted, session) = match (outcome, session) {
        (Ok(granted), Some(session)) => (granted, session),
        (outcome, _) => {
            let error = outcome.err().unwrap_or(AuthorizeError::LoginRequired);
            return Ok(error_location(
                &ErrorRedirect {
                    redirect_uri: pending.redirect_uri,
                    error,
                    state: pending.state,
                    in_fragment: pending.response_type == ResponseType::Token,
                },
                &issuer,
            ));
        }
    };
    if pending.response_type == ResponseType::Token {
        return implicit_response(
            state,
            tenant,
            &view.client,
            session,
            &pending,
            &granted,
            now,
        )
        .await;
    }
    let code = new_secret();
    state
        .store
        .put_authorization_code(&AuthorizationCode {
            code_hash: state.hasher.hash(Purpose::AuthorizationCode, code.expose()),
            tenant_id: tenant.id,
            client_id: pending.client_id.clone(),
            user_id: session.user_id.clone(),
            redirect_uri: pending.redirect_uri.clone(),
            redirect_uri_in_request: pending.redirect_uri_in_request,
            scope: granted,
            code_challenge: pending.code_challenge.clone(),
            auth_time: session.auth_time,
            expires_at: now.plus_seconds(tenant.lifetimes.authorization_code),
            family_id: new_ordered_id(),
        })
        .await?;
    // RFC 6749 §4.1.2 with the issuer of RFC 9207 §2.
    let mut params = vec![("code", code.expose())];
    if let Some(client_state) = pending.state.as_deref() {
        params.push(("state", client_state));
    }
    params.push(("iss", &issuer));
    Ok(pending.redirect_uri.with_query(&params))
}

/// The redirect that reports `error` to the client (RFC 6749 §4.1.2.1, RFC 9207).
pub fn error_location(redirect: &ErrorRedirect, issuer: &str) -> String {
    let code = redirect.error.to_string();
    let mut params = vec![("error", code.as_str())];
    if let Some(description) = redirect.error.description() {
        params.push(("error_description", description));
    }
    if let Some(client_state) = redirect.state.as_deref() {
        params.push(("state", client_state));
    }
    params.push(("iss", issuer));
    if redirect.in_fragment {
        redirect.redirect_uri.with_fragment(&params)
    } else {
        redirect.redirect_uri.with_query(&params)
    }
}

/// RFC 6749 §4.2.2: the implicit grant's access token, in the fragment, and
/// never a refresh token.
async fn implicit_response(
    state: &AppState,
    tenant: &Tenant,
    client: &Client,
    session: &Session,
    pending: &PendingAuthorization,
    granted: &ScopeSet,
    now: UnixTime,
) -> Result<String, PageError> {
    let subject = Subject::User {
        id: session.user_id.clone(),
        auth_time: session.auth_time,
    };
    let family_id = new_ordered_id();
    let token = issue_access_token(
        state,
        tenant,
        client,
        &subject,
        granted,
        Some(&family_id),
        now,
    )
    .await
    .map_err(|_| PageError::Internal)?;
    let issuer = state.issuer(&tenant.name);
    let expires_in = client.lifetimes(tenant.lifetimes).access_token.to_string();
    let scope = granted.to_string();
    let mut params = vec![
        ("access_token", token.as_str()),
        ("token_type", "Bearer"),
        ("expires_in", expires_in.as_str()),
    ];
    // §4.2.2: scope is required when it differs from the request.
    if granted != &pending.scope {
        params.push(("scope", scope.as_str()));
    }
    if let Some(client_state) = pending.state.as_deref() {
        params.push(("state", client_state));
    }
    params.push(("iss", &issuer));
    Ok(pending.redirect_uri.with_fragment(&params))
}
