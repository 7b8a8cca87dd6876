//! `{issuer}/account`: the signed-in user's connected applications, with
//! "Revoke" for each, and `{issuer}/logout`. Every form is CSRF-protected by a
//! token bound to the session.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::authorize::{PageContext, SESSION_COOKIE, redirect, tenant_or_page};
use super::body::read_form;
use super::pages::{AccountPage, AppLine, render};
use crate::AppState;
use crate::service::account;
use crate::service::authorize::PageError;

/// What the account page's CSRF token is bound to besides the session.
const ACCOUNT_FORMS: &str = "account-forms";

/// `GET {issuer}/account`: the login form first, when nobody is signed in.
pub async fn account(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let now = super::now();
    let tenant = match tenant_or_page(&state, path).await {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    let page = PageContext::load(&state, &tenant).await;
    let (session_id, session) = match page.session(&headers, now).await {
        Ok(Some(found)) => found,
        Ok(None) => return page.login_page(&headers, None, "", None),
        Err(error) => return page.error(error),
    };
    let overview = match account::overview(&state, &tenant, &session).await {
        Ok(overview) => overview,
        Err(error) => return page.error(error.into()),
    };
    let csrf = state
        .hasher
        .csrf_token(&format!("session:{session_id}"), ACCOUNT_FORMS);
    let revoke_action = format!("{}/account/revoke", page.issuer);
    let logout_action = format!("{}/logout", page.issuer);
    let account_page = AccountPage {
        brand: &page.brand,
        username: &overview.username,
        apps: overview
            .consents
            .iter()
            .map(|consent| AppLine {
                client_id: consent.client_id.to_string(),
                name: consent.client_name.clone(),
                scopes: consent.scope.to_string(),
                since: super::pages::utc_date(consent.granted_at),
            })
            .collect(),
        csrf: &csrf,
        revoke_action: &revoke_action,
        logout_action: &logout_action,
    };
    render(StatusCode::OK, &account_page, None)
}

/// Reads a POSTed account form and checks its CSRF token against the session.
async fn checked_form(
    page: &PageContext<'_>,
    headers: &HeaderMap,
    body: Body,
) -> Result<
    (
        tessera_core::form::FormParams,
        String,
        tessera_core::Session,
    ),
    PageError,
> {
    let now = super::now();
    let form = read_form(headers, body).await.map_err(PageError::from)?;
    let Some((session_id, session)) = page.session(headers, now).await? else {
        return Err(PageError::CsrfFailed);
    };
    let csrf = form.single("csrf").ok().flatten().unwrap_or("");
    let binding = format!("session:{session_id}");
    if !page
        .state
        .hasher
        .csrf_token_is_valid(&binding, ACCOUNT_FORMS, csrf)
    {
        return Err(PageError::CsrfFailed);
    }
    Ok((form, session_id.to_owned(), session))
}

/// `POST {issuer}/account/revoke`: withdraw an application's access.
pub async fn revoke(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let tenant = match tenant_or_page(&state, path).await {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    let page = PageContext::load(&state, &tenant).await;
    let (form, _, session) = match checked_form(&page, &headers, body).await {
        Ok(checked) => checked,
        Err(error) => return page.error(error),
    };
    let Ok(Some(client_id)) = form.single("client_id") else {
        return page.error(PageError::MalformedQuery);
    };
    match account::revoke(&state, &tenant, &session, client_id, super::now()).await {
        Ok(_) => redirect(StatusCode::SEE_OTHER, &format!("{}/account", page.issuer)),
        Err(error) => page.error(error.into()),
    }
}

/// `POST {issuer}/logout`: end the session and forget the cookie.
pub async fn logout(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let tenant = match tenant_or_page(&state, path).await {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    let page = PageContext::load(&state, &tenant).await;
    let (_, session_id, _) = match checked_form(&page, &headers, body).await {
        Ok(checked) => checked,
        Err(error) => return page.error(error),
    };
    if let Err(error) = account::logout(&state, &tenant, &session_id).await {
        return page.error(error.into());
    }
    let mut response = redirect(StatusCode::SEE_OTHER, &format!("{}/account", page.issuer));
    if let Some(expired) = page.cookie(SESSION_COOKIE, "", 0) {
        response.headers_mut().append(header::SET_COOKIE, expired);
    }
    response
}
