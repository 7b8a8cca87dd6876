//! The browser side: `GET {issuer}/authorize`, the login form, and the
//! consent form (RFC 6749 §4.1.1–§4.1.2).

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tessera_core::form::FormParams;
use tessera_core::{Session, Tenant, UnixTime};

use super::TenantLookup;
use super::body::read_form;
use super::pages::{Brand, ConsentPage, LoginPage, ScopeLine, error_page, render};
use crate::AppState;
use crate::service::authorize::{
    self as service, AuthorizeFailure, Decision, LoginOutcome, Next, PageError, PendingView,
    SESSION_LIFETIME,
};
use crate::service::new_secret;

pub(super) const SESSION_COOKIE: &str = "tessera_session";
/// Binds the login form's CSRF token to one browser before anyone logs in.
const BROWSER_COOKIE: &str = "tessera_browser";

/// What every page of one tenant needs to know.
pub(super) struct PageContext<'a> {
    pub(super) state: &'a AppState,
    pub(super) tenant: &'a Tenant,
    pub(super) issuer: String,
    pub(super) brand: Brand,
}

impl<'a> PageContext<'a> {
    /// Loads what the tenant's pages show of its branding. Should that fail,
    /// the page is still shown, in the default look.
    pub(super) async fn load(state: &'a AppState, tenant: &'a Tenant) -> Self {
        let issuer = state.issuer(&tenant.name);
        let summary = match state.store.branding_summary(tenant.id).await {
            Ok(summary) => summary,
            Err(error) => {
                tracing::warn!(%error, "branding unavailable");
                None
            }
        };
        let brand = Brand::of_tenant(tenant, &issuer, &state.public_url, summary);
        PageContext {
            state,
            tenant,
            issuer,
            brand,
        }
    }

    pub(super) fn error(&self, error: PageError) -> Response {
        error_page(&self.brand, error)
    }

    /// `Set-Cookie` for a cookie scoped to this tenant's issuer path:
    /// `HttpOnly`, `SameSite=Lax`, and `Secure` when served over https.
    pub(super) fn cookie(&self, name: &str, value: &str, max_age: i64) -> Option<HeaderValue> {
        let path = url::Url::parse(&self.issuer)
            .map(|u| format!("{}/", u.path().trim_end_matches('/')))
            .unwrap_or_else(|_| "/".to_owned());
        let secure = if self.state.public_url.starts_with("https://") {
            "; Secure"
        } else {
            ""
        };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
        ))
        .ok()
    }

    /// The login form; `failed` carries the username typed and what went wrong.
    /// `request_id` is empty when the login is for the account page itself.
    pub(super) fn login_page(
        &self,
        headers: &HeaderMap,
        client_name: Option<&str>,
        request_id: &str,
        failed: Option<(&str, LoginProblem)>,
    ) -> Response {
        let (browser, new_cookie) = match cookie(headers, BROWSER_COOKIE) {
            Some(existing) => (existing.to_owned(), None),
            None => {
                let fresh = new_secret().expose().to_owned();
                let set = self.cookie(BROWSER_COOKIE, &fresh, SESSION_LIFETIME);
                (fresh, set)
            }
        };
        let csrf = self
            .state
            .hasher
            .csrf_token(&format!("browser:{browser}"), csrf_binding(request_id));
        let action = format!("{}/login", self.issuer);
        let page = LoginPage {
            brand: &self.brand,
            action: &action,
            client_name: client_name.unwrap_or(""),
            request_id,
            csrf: &csrf,
            username: failed.map_or("", |(username, _)| username),
            failed: failed.is_some_and(|(_, problem)| problem == LoginProblem::Rejected),
            throttled: failed.is_some_and(|(_, problem)| problem == LoginProblem::Throttled),
        };
        let status = match failed {
            None => StatusCode::OK,
            Some((_, LoginProblem::Rejected)) => StatusCode::UNAUTHORIZED,
            Some((_, LoginProblem::Throttled)) => StatusCode::TOO_MANY_REQUESTS,
        };
        let mut response = render(status, &page, None);
        if let Some(set) = new_cookie {
            response.headers_mut().append(header::SET_COOKIE, set);
        }
        response
    }

    fn consent_page(&self, session_id: &str, view: &PendingView, request_id: &str) -> Response {
        let csrf = self
            .state
            .hasher
            .csrf_token(&format!("session:{session_id}"), request_id);
        let action = format!("{}/consent", self.issuer);
        let page = ConsentPage {
            brand: &self.brand,
            action: &action,
            client_name: &view.client.name,
            request_id,
            csrf: &csrf,
            scopes: view
                .scopes
                .iter()
                .map(|s| ScopeLine {
                    name: s.name.to_string(),
                    description: s.description.clone(),
                })
                .collect(),
        };
        // The consent form ends in a redirect to the client: allow that target.
        render(
            StatusCode::OK,
            &page,
            Some(&view.pending.redirect_uri.csp_source()),
        )
    }

    /// The browser's live session in this tenant, with the cookie value.
    pub(super) async fn session<'h>(
        &self,
        headers: &'h HeaderMap,
        now: UnixTime,
    ) -> Result<Option<(&'h str, Session)>, PageError> {
        let Some(session_id) = cookie(headers, SESSION_COOKIE) else {
            return Ok(None);
        };
        Ok(service::session(self.state, self.tenant, session_id, now)
            .await?
            .map(|session| (session_id, session)))
    }

    /// The next step of a pending request: login page, consent page, or the
    /// answer to the client when nothing needs asking.
    async fn continue_with(
        &self,
        headers: &HeaderMap,
        request_id: &str,
        now: UnixTime,
    ) -> Response {
        let session = match self.session(headers, now).await {
            Ok(session) => session,
            Err(error) => return self.error(error),
        };
        let next = service::resume(
            self.state,
            self.tenant,
            session.as_ref().map(|(_, s)| s),
            request_id,
            now,
        )
        .await;
        match next {
            Ok(Next::Login(view)) => {
                self.login_page(headers, Some(&view.client.name), request_id, None)
            }
            Ok(Next::Consent(view)) => match &session {
                Some((session_id, _)) => self.consent_page(session_id, &view, request_id),
                None => self.error(PageError::Internal),
            },
            Ok(Next::Redirect(location)) => redirect(StatusCode::FOUND, &location),
            Err(error) => self.error(error),
        }
    }
}

/// Why the login form is shown again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LoginProblem {
    Rejected,
    Throttled,
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v)
}

pub(super) fn redirect(status: StatusCode, location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(location) => {
            let mut response = status.into_response();
            response.headers_mut().insert(header::LOCATION, location);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response(),
    }
}

pub(super) async fn tenant_or_page(
    state: &AppState,
    path: Result<Path<String>, PathRejection>,
) -> Result<Tenant, Response> {
    let brand = Brand::plain("Tessera", &state.public_url);
    super::tenant(state, path)
        .await
        .map_err(|lookup| match lookup {
            TenantLookup::Unknown => error_page(&brand, PageError::UnknownTenant),
            TenantLookup::Unavailable => error_page(&brand, PageError::Unavailable),
        })
}

/// `GET {issuer}/authorize`.
pub async fn authorize(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let now = super::now();
    let tenant = match tenant_or_page(&state, path).await {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    let page = PageContext::load(&state, &tenant).await;
    let Ok(query) = FormParams::parse(uri.query().unwrap_or("").as_bytes()) else {
        return page.error(PageError::MalformedQuery);
    };
    match service::begin(&state, &tenant, &query, now).await {
        Ok(begun) => {
            page.continue_with(&headers, begun.request_id.expose(), now)
                .await
        }
        Err(AuthorizeFailure::Page(error)) => page.error(error),
        Err(AuthorizeFailure::Redirect(error)) => redirect(
            StatusCode::FOUND,
            &service::error_location(&error, &page.issuer),
        ),
    }
}

/// `POST {issuer}/authorize`: RFC 6749 §3.1 allows it, and clients written
/// for OpenID Connect (Core §3.1.2.1) expect it. The parameters move into
/// the query of a `303` (RFC 9700 §4.12: not 307) to `GET
/// {issuer}/authorize`, which checks them all: the browser's `SameSite=Lax`
/// session cookie is not sent with a cross-site POST, but it is with the
/// top-level GET that follows, so a signed-in user is not asked to sign in
/// again. The parameters do end up in a URL, as with GET.
pub async fn authorize_posted(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let tenant = match tenant_or_page(&state, path).await {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    let page = PageContext::load(&state, &tenant).await;
    // Parameters in the POST's own query would be lost on the way, a PKCE
    // challenge or a state among them: the request is refused instead.
    if uri.query().is_some_and(|query| !query.is_empty()) {
        return page.error(PageError::MalformedQuery);
    }
    let form = match read_form(&headers, body).await {
        Ok(form) => form,
        Err(error) => return page.error(error.into()),
    };
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.pairs())
        .finish();
    redirect(
        StatusCode::SEE_OTHER,
        &format!("{}/authorize?{query}", page.issuer),
    )
}

/// `POST {issuer}/login`.
pub async fn login(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    super::ClientAddress(address): super::ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let now = super::now();
    let tenant = match tenant_or_page(&state, path).await {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    let page = PageContext::load(&state, &tenant).await;
    let form = match read_form(&headers, body).await {
        Ok(form) => form,
        Err(error) => return page.error(error.into()),
    };
    let (Ok(request_id), Ok(Some(csrf)), Ok(username), Ok(password)) = (
        form.single("request"),
        form.single("csrf"),
        form.single("username"),
        form.single("password"),
    ) else {
        return page.error(PageError::CsrfFailed);
    };
    // Without a pending request, the login is for the account page.
    let request_id = request_id.unwrap_or("");
    let csrf_ok = cookie(&headers, BROWSER_COOKIE).is_some_and(|browser| {
        state.hasher.csrf_token_is_valid(
            &format!("browser:{browser}"),
            csrf_binding(request_id),
            csrf,
        )
    });
    if !csrf_ok {
        return page.error(PageError::CsrfFailed);
    }
    let (client_name, next) = if request_id.is_empty() {
        (None, format!("{}/account", page.issuer))
    } else {
        match service::pending(&state, &tenant, request_id, now).await {
            Ok(view) => (
                Some(view.client.name.clone()),
                format!(
                    "{}/consent?request={}",
                    page.issuer,
                    percent_encoding::utf8_percent_encode(
                        request_id,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                ),
            ),
            Err(error) => return page.error(error),
        }
    };
    let client_name = client_name.as_deref();
    let (Some(username), Some(password)) = (username, password) else {
        let problem = Some((username.unwrap_or(""), LoginProblem::Rejected));
        return page.login_page(&headers, client_name, request_id, problem);
    };
    match service::login(&state, &tenant, username, password, address, now).await {
        Ok(LoginOutcome::LoggedIn(new_session)) => {
            if !request_id.is_empty()
                && let Err(error) = service::logged_in_for(&state, &tenant, request_id, now).await
            {
                return page.error(error.into());
            }
            let mut response = redirect(StatusCode::SEE_OTHER, &next);
            if let Some(set) =
                page.cookie(SESSION_COOKIE, new_session.id.expose(), SESSION_LIFETIME)
            {
                response.headers_mut().append(header::SET_COOKIE, set);
            }
            response
        }
        Ok(LoginOutcome::Rejected) => page.login_page(
            &headers,
            client_name,
            request_id,
            Some((username, LoginProblem::Rejected)),
        ),
        Ok(LoginOutcome::Throttled) => page.login_page(
            &headers,
            client_name,
            request_id,
            Some((username, LoginProblem::Throttled)),
        ),
        Err(error) => page.error(error.into()),
    }
}

/// What the login form's CSRF token is bound to besides the browser: the
/// pending request, or the account page.
fn csrf_binding(request_id: &str) -> &str {
    if request_id.is_empty() {
        "account"
    } else {
        request_id
    }
}

/// `GET {issuer}/consent?request=...`: where the login form leads.
pub async fn consent_page(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let now = super::now();
    let tenant = match tenant_or_page(&state, path).await {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    let page = PageContext::load(&state, &tenant).await;
    let query = FormParams::parse(uri.query().unwrap_or("").as_bytes());
    let Ok(Some(request_id)) = query
        .as_ref()
        .map(|q| q.single("request"))
        .unwrap_or(Ok(None))
    else {
        return page.error(PageError::RequestExpired);
    };
    page.continue_with(&headers, request_id, now).await
}

/// `POST {issuer}/consent`: Allow (with the scopes left ticked) or Deny.
pub async fn consent(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let now = super::now();
    let tenant = match tenant_or_page(&state, path).await {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    let page = PageContext::load(&state, &tenant).await;
    let form = match read_form(&headers, body).await {
        Ok(form) => form,
        Err(error) => return page.error(error.into()),
    };
    let (Ok(Some(request_id)), Ok(Some(csrf)), Ok(decision)) = (
        form.single("request"),
        form.single("csrf"),
        form.single("decision"),
    ) else {
        return page.error(PageError::CsrfFailed);
    };
    let Some(session_id) = cookie(&headers, SESSION_COOKIE) else {
        return page.error(PageError::CsrfFailed);
    };
    if !state
        .hasher
        .csrf_token_is_valid(&format!("session:{session_id}"), request_id, csrf)
    {
        return page.error(PageError::CsrfFailed);
    }
    let session = match service::session(&state, &tenant, session_id, now).await {
        Ok(Some(session)) => session,
        Ok(None) => return page.error(PageError::CsrfFailed),
        Err(error) => return page.error(error.into()),
    };
    let decision = match decision {
        Some("allow") => Decision::Allow(form.all("scope").collect()),
        _ => Decision::Deny,
    };
    match service::decide(&state, &tenant, &session, request_id, decision, now).await {
        Ok(location) => redirect(StatusCode::SEE_OTHER, &location),
        Err(error) => page.error(error),
    }
}
