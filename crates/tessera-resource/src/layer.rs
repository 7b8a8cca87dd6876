//! axum/tower integration: [`BearerLayer`] validates the token of every
//! request, [`AccessToken`] extracts it in handlers, and [`RequireScopes`]
//! guards routes by scope.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use tower::{Layer, Service};

use crate::{AccessToken, TokenError, Validator};

/// Reads the bearer token of a request (RFC 6750 §2): the `Authorization`
/// header, or, where allowed, the `access_token` query parameter; both at
/// once is malformed (§2: clients MUST NOT use more than one method).
pub fn bearer_token(parts: &Parts, allow_query: bool) -> Result<String, TokenError> {
    let header = match parts
        .headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => None,
        [one] => {
            let value = one
                .to_str()
                .map_err(|_| TokenError::Malformed("the Authorization header is not text"))?;
            match value.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    let token = token.trim();
                    if !is_b64token(token) {
                        return Err(TokenError::Malformed("the bearer token is not a b64token"));
                    }
                    Some(token.to_owned())
                }
                _ if value.eq_ignore_ascii_case("bearer") => {
                    return Err(TokenError::Malformed("the Bearer header has no token"));
                }
                // Another scheme is no bearer authentication at all.
                _ => None,
            }
        }
        _ => return Err(TokenError::Malformed("more than one Authorization header")),
    };
    let query = if allow_query {
        let mut values = query_tokens(&parts.uri);
        match (values.next(), values.next()) {
            (None, _) => None,
            (Some(_), Some(_)) => {
                return Err(TokenError::Malformed(
                    "more than one access_token parameter",
                ));
            }
            // RFC 6750 §2.3: the parameter carries the same b64token as the
            // header (§2.1), so an empty or ill-formed one is malformed too.
            (Some(token), None) if token.is_empty() => {
                return Err(TokenError::Malformed("the access_token parameter is empty"));
            }
            (Some(token), None) if !is_b64token(&token) => {
                return Err(TokenError::Malformed(
                    "the access_token parameter is not a b64token",
                ));
            }
            (Some(token), None) => Some(token),
        }
    } else {
        None
    };
    match (header, query) {
        (Some(_), Some(_)) => Err(TokenError::Malformed("the token is sent more than one way")),
        (Some(token), None) | (None, Some(token)) => Ok(token),
        (None, None) => Err(TokenError::Missing),
    }
}

/// RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// The values of the `access_token` query parameter, decoded.
fn query_tokens(uri: &http::Uri) -> impl Iterator<Item = String> + '_ {
    uri.query()
        .into_iter()
        .flat_map(|q| url::form_urlencoded::parse(q.as_bytes()))
        .filter(|(name, _)| name == "access_token")
        .map(|(_, value)| value.into_owned())
}

/// RFC 6750 §2.3: the response to a request with the token in its URI
/// should be `Cache-Control: private`, so that no shared cache keeps it. A
/// response that is already private or `no-store` is left as it is.
fn mark_private(response: &mut Response) {
    let private = response
        .headers()
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|directive| {
            let name = directive.split('=').next().unwrap_or("").trim();
            name.eq_ignore_ascii_case("private") || name.eq_ignore_ascii_case("no-store")
        });
    if !private {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
}

/// A tower layer that validates the bearer token of every request and makes
/// the [`AccessToken`] available to handlers; invalid requests are answered
/// per RFC 6750 §3 and never reach the inner service.
#[derive(Clone)]
pub struct BearerLayer {
    validator: Validator,
}

impl BearerLayer {
    pub fn new(validator: Validator) -> Self {
        BearerLayer { validator }
    }
}

impl<S> Layer<S> for BearerLayer {
    type Service = BearerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerService {
            inner,
            validator: self.validator.clone(),
        }
    }
}

#[derive(Clone)]
pub struct BearerService<S> {
    inner: S,
    validator: Validator,
}

/// The realm of the challenges that later guards answer with.
#[derive(Clone)]
struct Realm(String);

impl<S> Service<Request> for BearerService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let validator = self.validator.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let realm = validator.realm().to_owned();
            let allow_query = validator.allow_query_token();
            let token_in_uri = allow_query && query_tokens(&parts.uri).next().is_some();
            let outcome = match bearer_token(&parts, allow_query) {
                Ok(token) => validator.validate(&token).await,
                Err(error) => Err(error),
            };
            let mut response = match outcome {
                Ok(token) => {
                    parts.extensions.insert(token);
                    parts.extensions.insert(Realm(realm));
                    inner.call(Request::from_parts(parts, body)).await?
                }
                Err(error) => error.response(&realm),
            };
            if token_in_uri {
                mark_private(&mut response);
            }
            Ok(response)
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AccessToken {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AccessToken>()
            .cloned()
            .ok_or_else(|| {
                // A route reached without BearerLayer: a wiring mistake, not the client's.
                tracing::error!("AccessToken extracted on a route without BearerLayer");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            })
    }
}

/// A route guard: the token must carry all (or any) of these scopes, else
/// `403 insufficient_scope` naming them (RFC 6750 §3.1). Apply it with
/// `route_layer`, inside a [`BearerLayer`].
#[derive(Clone, Debug)]
pub struct RequireScopes {
    scopes: Vec<String>,
    all: bool,
}

impl RequireScopes {
    pub fn all<I: IntoIterator<Item = S>, S: Into<String>>(scopes: I) -> Self {
        RequireScopes {
            scopes: scopes.into_iter().map(Into::into).collect(),
            all: true,
        }
    }

    pub fn any<I: IntoIterator<Item = S>, S: Into<String>>(scopes: I) -> Self {
        RequireScopes {
            scopes: scopes.into_iter().map(Into::into).collect(),
            all: false,
        }
    }

    /// Checks a token against this guard.
    pub fn check(&self, token: &AccessToken) -> Result<(), TokenError> {
        let satisfied = if self.all {
            token.has_all(&self.scopes)
        } else {
            token.has_any(&self.scopes)
        };
        if satisfied {
            Ok(())
        } else {
            Err(TokenError::InsufficientScope(self.scopes.join(" ")))
        }
    }
}

impl<S> Layer<S> for RequireScopes {
    type Service = ScopeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ScopeService {
            inner,
            guard: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ScopeService<S> {
    inner: S,
    guard: RequireScopes,
}

impl<S> Service<Request> for ScopeService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let realm = request
            .extensions()
            .get::<Realm>()
            .map_or_else(String::new, |r| r.0.clone());
        let verdict = match request.extensions().get::<AccessToken>() {
            Some(token) => self.guard.check(token),
            None => Err(TokenError::Missing),
        };
        match verdict {
            Ok(()) => {
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move { inner.call(request).await })
            }
            Err(error) => Box::pin(async move { Ok(error.response(&realm)) }),
        }
    }
}
