//! HTML pages: one typed askama template per page, escaped by default, served
//! with a Content-Security-Policy that allows nothing from elsewhere.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use tessera_core::branding::BrandingSummary;

use crate::service::authorize::PageError;

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub brand: &'a Brand,
    pub action: &'a str,
    pub client_name: &'a str,
    pub request_id: &'a str,
    pub csrf: &'a str,
    pub username: &'a str,
    pub failed: bool,
    pub throttled: bool,
}

pub struct ScopeLine {
    pub name: String,
    pub description: String,
}

#[derive(Template)]
#[template(path = "consent.html")]
pub struct ConsentPage<'a> {
    pub brand: &'a Brand,
    pub action: &'a str,
    pub client_name: &'a str,
    pub request_id: &'a str,
    pub csrf: &'a str,
    pub scopes: Vec<ScopeLine>,
}

pub struct AppLine {
    pub client_id: String,
    pub name: String,
    pub scopes: String,
    pub since: String,
}

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage<'a> {
    pub brand: &'a Brand,
    pub username: &'a str,
    pub apps: Vec<AppLine>,
    pub csrf: &'a str,
    pub revoke_action: &'a str,
    pub logout_action: &'a str,
}

/// `YYYY-MM-DD` (UTC) of an instant, for people to read.
pub fn utc_date(at: tessera_core::UnixTime) -> String {
    // Days to civil date: Howard Hinnant's algorithm, proleptic Gregorian.
    let z = at.0.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub brand: &'a Brand,
    pub heading: &'a str,
    pub message: &'a str,
}

/// How a page looks: the tenant's name or display name, and its logo and
/// stylesheet when it has them. Every URL here is the tenant's own.
#[derive(Debug, Clone)]
pub struct Brand {
    pub label: String,
    pub assets_url: String,
    pub logo_url: Option<String>,
    pub css_url: Option<String>,
}

impl Brand {
    /// The default look, for pages outside any tenant.
    pub fn plain(label: &str, public_url: &str) -> Self {
        Brand {
            label: label.to_owned(),
            assets_url: format!("{public_url}/assets"),
            logo_url: None,
            css_url: None,
        }
    }

    pub fn of_tenant(
        tenant: &tessera_core::Tenant,
        issuer: &str,
        public_url: &str,
        summary: Option<BrandingSummary>,
    ) -> Self {
        let mut brand = Brand::plain(tenant.name.as_str(), public_url);
        if let Some(summary) = summary {
            if let Some(name) = summary.display_name {
                brand.label = name;
            }
            let version = summary.version;
            brand.logo_url = summary
                .has_logo
                .then(|| format!("{issuer}/branding/logo?v={version}"));
            brand.css_url = summary
                .has_stylesheet
                .then(|| format!("{issuer}/branding/style.css?v={version}"));
        }
        brand
    }
}

/// Renders a page with the security headers every page carries.
/// `form_target` is the one origin (or scheme) besides our own that a form on
/// the page may end up at: the client's redirect URI after consent.
pub fn render(status: StatusCode, page: &impl Template, form_target: Option<&str>) -> Response {
    let body = match page.render() {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "template rendering failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    let form_action = match form_target {
        Some(target) => format!("'self' {target}"),
        None => "'self'".to_owned(),
    };
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    let mut response = (status, Html(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The page shown when Tessera must not (or cannot) redirect back to the client.
pub fn error_page(brand: &Brand, error: PageError) -> Response {
    let (status, heading, message) = match error {
        PageError::UnknownTenant => (
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such sign-in service here.",
        ),
        PageError::MalformedQuery => (
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The request is malformed.",
        ),
        PageError::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request too large",
            "The form sent is larger than this service accepts.",
        ),
        PageError::MissingClientId => (
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The request does not name an application (client_id is missing).",
        ),
        PageError::UnknownClient => (
            StatusCode::BAD_REQUEST,
            "Unknown application",
            "The application that sent you here is not registered.",
        ),
        PageError::RepeatedClientOrRedirect => (
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The request repeats client_id or redirect_uri.",
        ),
        PageError::MissingRedirectUri => (
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The request does not say where to return (redirect_uri is missing).",
        ),
        PageError::UnregisteredRedirectUri => (
            StatusCode::BAD_REQUEST,
            "Invalid redirect",
            "The address to return to is not registered for this application, so you were not sent there.",
        ),
        PageError::RequestExpired => (
            StatusCode::BAD_REQUEST,
            "Request expired",
            "This sign-in request has expired or was already completed. Return to the application and start again.",
        ),
        PageError::CsrfFailed => (
            StatusCode::BAD_REQUEST,
            "Form expired",
            "The form could not be verified (it expired, or cookies are blocked). Return to the application and start again.",
        ),
        PageError::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "The service is temporarily unavailable. Try again in a moment.",
        ),
        PageError::Internal => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "An internal error occurred.",
        ),
    };
    let page = ErrorPage {
        brand,
        heading,
        message,
    };
    let mut response = render(status, &page, None);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../assets/tessera.css"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        use tessera_core::UnixTime;
        assert_eq!(super::utc_date(UnixTime(0)), "1970-01-01");
        assert_eq!(super::utc_date(UnixTime(951_782_400)), "2000-02-29");
        assert_eq!(super::utc_date(UnixTime(1_795_431_398)), "2026-11-23");
    }
}
