//! A tenant's logo and stylesheet, served from the database under the
//! tenant's own issuer path, so one tenant's look never reaches another's pages.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::json_error;
use crate::AppState;

fn not_found() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "invalid_request",
        Some("no such file"),
    )
}

/// Files are served with `nosniff` and a policy that lets them run nothing.
fn file(content_type: &'static str, body: Vec<u8>) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'"),
    );
    // The pages link them with a version in the URL, so they may be cached.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    response
}

pub async fn logo(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(tenant) = super::tenant(&state, path).await else {
        return not_found();
    };
    match state.store.branding(tenant.id).await {
        Ok(branding) => match branding.logo {
            Some(logo) => file(logo.content_type, logo.bytes),
            None => not_found(),
        },
        Err(error) => {
            tracing::warn!(%error, "branding unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
            )
                .into_response()
        }
    }
}

pub async fn stylesheet(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(tenant) = super::tenant(&state, path).await else {
        return not_found();
    };
    match state.store.branding(tenant.id).await {
        Ok(branding) if branding.accent_color.is_some() || branding.css.is_some() => {
            let mut css = String::new();
            // The colour was validated as #rgb or #rrggbb, so it cannot break
            // out of the declaration.
            if let Some(color) = &branding.accent_color {
                css.push_str(&format!(":root {{ --accent: {color}; }}\n"));
            }
            if let Some(custom) = &branding.css {
                css.push_str(custom);
            }
            file("text/css; charset=utf-8", css.into_bytes())
        }
        Ok(_) => not_found(),
        Err(error) => {
            tracing::warn!(%error, "branding unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
            )
                .into_response()
        }
    }
}
