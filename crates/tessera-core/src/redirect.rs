//! Redirection endpoints (RFC 6749 §3.1.2).

use std::fmt;

use url::Url;

/// A registered redirect URI: absolute, without a fragment (RFC 6749 §3.1.2).
///
/// Matching is by exact string comparison (RFC 9700 §4.1.3), so the URI keeps
/// the exact text it was registered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUri(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidRedirectUri {
    #[error("a redirect URI must be an absolute URI")]
    NotAbsolute,
    #[error("a redirect URI must not contain a fragment (RFC 6749 §3.1.2)")]
    HasFragment,
    #[error("a redirect URI must use https, or http on a loopback or localhost address")]
    InsecureScheme,
}

impl RedirectUri {
    /// Validates a URI for registration.
    pub fn parse(text: &str) -> Result<Self, InvalidRedirectUri> {
        let url = Url::parse(text).map_err(|_| InvalidRedirectUri::NotAbsolute)?;
        if url.fragment().is_some() || text.contains('#') {
            return Err(InvalidRedirectUri::HasFragment);
        }
        // RFC 9700 §2.6 / RFC 6749 §3.1.2.1: plain http only where the traffic
        // never leaves the machine.
        if url.scheme() == "http" {
            let loopback = matches!(
                url.host_str(),
                Some("127.0.0.1") | Some("[::1]") | Some("localhost")
            );
            if !loopback {
                return Err(InvalidRedirectUri::InsecureScheme);
            }
        }
        if url.scheme() == "javascript" || url.scheme() == "data" {
            return Err(InvalidRedirectUri::InsecureScheme);
        }
        Ok(RedirectUri(text.to_owned()))
    }

    /// Restores a URI validated before it was stored.
    pub fn from_stored(text: String) -> Self {
        RedirectUri(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Builds the redirect carrying `params` in the query component, keeping
    /// any query the registered URI already has (RFC 6749 §3.1.2).
    pub fn with_query(&self, params: &[(&str, &str)]) -> String {
        match Url::parse(&self.0) {
            Ok(mut url) => {
                {
                    let mut query = url.query_pairs_mut();
                    for (name, value) in params {
                        query.append_pair(name, value);
                    }
                }
                url.into()
            }
            // Unreachable for a URI that passed `parse`; answer with the bare URI.
            Err(_) => self.0.clone(),
        }
    }

    /// Builds the redirect carrying `params` in the fragment, as the implicit
    /// grant returns its token (RFC 6749 §4.2.2).
    pub fn with_fragment(&self, params: &[(&str, &str)]) -> String {
        let fragment = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        format!("{}#{fragment}", self.0)
    }

    /// The origin or scheme a Content-Security-Policy `form-action` must allow
    /// so that a form may end in a redirect here.
    pub fn csp_source(&self) -> String {
        match Url::parse(&self.0) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {
                url.origin().ascii_serialization()
            }
            // A private-use scheme has an opaque origin; CSP names it by scheme.
            Ok(url) => format!("{}:", url.scheme()),
            Err(_) => "'none'".to_owned(),
        }
    }
}

/// A loopback IP redirect URI (`http://127.0.0.1...` or `http://[::1]...`)
/// with its port removed, for the port-agnostic match of RFC 8252 §7.3.
/// `localhost` is not a loopback IP (RFC 8252 §8.3) and gets no such leeway.
pub fn loopback_without_port(uri: &str) -> Option<String> {
    let mut url = Url::parse(uri).ok()?;
    if url.scheme() != "http" || !matches!(url.host_str(), Some("127.0.0.1") | Some("[::1]")) {
        return None;
    }
    url.set_port(None).ok()?;
    Some(url.into())
}

/// Whether `uri` uses a private-use scheme (RFC 8252 §7.1), which only native
/// apps may register.
pub fn is_private_use_scheme(uri: &str) -> bool {
    Url::parse(uri).is_ok_and(|url| !matches!(url.scheme(), "http" | "https"))
}

impl fmt::Display for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_rules() {
        assert!(RedirectUri::parse("https://app.example/cb").is_ok());
        assert!(RedirectUri::parse("http://127.0.0.1:9000/cb").is_ok());
        assert!(RedirectUri::parse("com.example.app:/cb").is_ok());
        assert_eq!(
            RedirectUri::parse("/relative"),
            Err(InvalidRedirectUri::NotAbsolute)
        );
        assert_eq!(
            RedirectUri::parse("https://app.example/cb#x"),
            Err(InvalidRedirectUri::HasFragment)
        );
        assert_eq!(
            RedirectUri::parse("http://app.example/cb"),
            Err(InvalidRedirectUri::InsecureScheme)
        );
        assert_eq!(
            RedirectUri::parse("javascript:alert(1)"),
            Err(InvalidRedirectUri::InsecureScheme)
        );
    }

    #[test]
    fn loopback_ports() {
        assert_eq!(
            loopback_without_port("http://127.0.0.1:53123/cb").as_deref(),
            Some("http://127.0.0.1/cb")
        );
        assert_eq!(
            loopback_without_port("http://[::1]:8/cb").as_deref(),
            Some("http://[::1]/cb")
        );
        assert_eq!(loopback_without_port("http://localhost:8/cb"), None);
        assert_eq!(loopback_without_port("https://127.0.0.1:8/cb"), None);
        assert!(is_private_use_scheme("com.example.app:/cb"));
        assert!(!is_private_use_scheme("https://a.example/cb"));
    }

    #[test]
    fn keeps_existing_query() {
        let uri = RedirectUri::parse("https://app.example/cb?x=1").unwrap();
        assert_eq!(
            uri.with_query(&[("code", "a b"), ("state", "s&t")]),
            "https://app.example/cb?x=1&code=a+b&state=s%26t"
        );
        assert_eq!(uri.csp_source(), "https://app.example");
        let native = RedirectUri::parse("com.example.app:/cb").unwrap();
        assert_eq!(native.csp_source(), "com.example.app:");
        let with_host = RedirectUri::parse("myapp://callback").unwrap();
        assert_eq!(with_host.csp_source(), "myapp:");
    }
}
