//! Token validation: locally against the issuer's JWKS (RFC 9068), or
//! remotely through introspection (RFC 7662).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{AccessToken, SetupError, TokenError};

/// The asymmetric algorithms accepted by default. HMAC is never accepted:
/// a resource server holds no shared secret, and an HMAC "signed" with a
/// public key is the classic key-confusion forgery.
pub const DEFAULT_ALGORITHMS: &[Algorithm] = &[
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

/// Validates access tokens for one resource (one audience) of one issuer.
/// Cheap to clone; clones share their caches.
#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    audience: String,
    realm: String,
    allow_query_token: bool,
    http: reqwest::Client,
    mode: Mode,
}

enum Mode {
    Local(LocalConfig),
    Introspection(IntrospectionConfig),
}

struct LocalConfig {
    jwks_uri: String,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    /// The JWKS is refetched at most this often, however many unknown kids
    /// arrive: a flood of bogus kids cannot hammer the issuer.
    min_refresh_interval: Duration,
    /// Keys are refetched once they are this old, so a key the issuer has
    /// withdrawn stops being accepted.
    max_age: Duration,
    keys: RwLock<KeyCache>,
    refetch: tokio::sync::Mutex<()>,
    fetches: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, (DecodingKey, Option<Algorithm>)>,
    /// The last successful fetch.
    fetched_at: Option<Instant>,
    /// The last attempt, successful or not.
    attempted_at: Option<Instant>,
}

impl KeyCache {
    fn attempted_within(&self, interval: Duration) -> bool {
        self.attempted_at.is_some_and(|at| at.elapsed() < interval)
    }

    fn older_than(&self, age: Duration) -> bool {
        self.fetched_at.is_none_or(|at| at.elapsed() >= age)
    }
}

struct IntrospectionConfig {
    endpoint: String,
    client_id: String,
    client_secret: String,
    /// How long a positive answer is reused (never past the token's expiry).
    ttl: Duration,
    max_entries: usize,
    cache: Mutex<HashMap<[u8; 32], (AccessToken, Instant)>>,
}

#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    jwks_uri: Option<String>,
    introspection_endpoint: Option<String>,
}

/// Settings of a [`Validator`], with sensible defaults.
#[derive(Debug, Clone)]
pub struct ValidatorBuilder {
    issuer: String,
    audience: String,
    realm: Option<String>,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    min_refresh_interval: Duration,
    max_key_age: Duration,
    allow_query_token: bool,
    introspection: Option<(String, String)>,
    introspection_ttl: Duration,
    introspection_max_entries: usize,
}

impl Validator {
    /// Starts configuring a validator for tokens that `issuer` issues for
    /// `audience` (the `aud` this resource server expects).
    pub fn builder(issuer: impl Into<String>, audience: impl Into<String>) -> ValidatorBuilder {
        ValidatorBuilder {
            issuer: issuer.into(),
            audience: audience.into(),
            realm: None,
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
            leeway: Duration::from_secs(30),
            min_refresh_interval: Duration::from_secs(5),
            max_key_age: Duration::from_secs(600),
            allow_query_token: false,
            introspection: None,
            introspection_ttl: Duration::from_secs(30),
            introspection_max_entries: 10_000,
        }
    }

    /// The realm of `WWW-Authenticate` challenges.
    pub fn realm(&self) -> &str {
        &self.inner.realm
    }

    pub(crate) fn allow_query_token(&self) -> bool {
        self.inner.allow_query_token
    }

    /// How many times the JWKS has been fetched (for monitoring).
    pub fn jwks_fetches(&self) -> u64 {
        match &self.inner.mode {
            Mode::Local(local) => local.fetches.load(std::sync::atomic::Ordering::Relaxed),
            Mode::Introspection(_) => 0,
        }
    }

    /// Validates a bearer token.
    pub async fn validate(&self, token: &str) -> Result<AccessToken, TokenError> {
        match &self.inner.mode {
            Mode::Local(local) => self.validate_locally(local, token).await,
            Mode::Introspection(remote) => self.introspect(remote, token).await,
        }
    }

    async fn validate_locally(
        &self,
        local: &LocalConfig,
        token: &str,
    ) -> Result<AccessToken, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Invalid("malformed token"))?;
        // RFC 9068 §4: the type must say "access token", so an ID token or any
        // other JWT of the same issuer is not taken for one.
        let typ = header.typ.as_deref().unwrap_or("").to_ascii_lowercase();
        if typ != "at+jwt" && typ != "application/at+jwt" {
            return Err(TokenError::Invalid("not an access token (typ)"));
        }
        if !local.algorithms.contains(&header.alg) {
            return Err(TokenError::Invalid("algorithm not allowed"));
        }
        let kid = header.kid.ok_or(TokenError::Invalid("no key id"))?;
        let (key, key_alg) = self.key(local, &kid).await?;
        // The key's own algorithm, when the JWKS names one, must be the token's.
        if key_alg.is_some_and(|alg| alg != header.alg) {
            return Err(TokenError::Invalid("algorithm does not match the key"));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = local.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.inner.issuer]);
        validation.set_audience(&[&self.inner.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .map_err(|error| {
            use jsonwebtoken::errors::ErrorKind;
            TokenError::Invalid(match error.kind() {
                ErrorKind::ExpiredSignature => "expired",
                ErrorKind::ImmatureSignature => "not yet valid",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidSignature => "bad signature",
                _ => "invalid token",
            })
        })?;
        AccessToken::from_claims(data.claims).ok_or(TokenError::Invalid("missing claims"))
    }

    /// The key `kid`. An unknown kid triggers a refetch, at most once per
    /// `min_refresh_interval`; keys older than `max_age` are refetched too,
    /// and kept if the issuer cannot be reached.
    async fn key(
        &self,
        local: &LocalConfig,
        kid: &str,
    ) -> Result<(DecodingKey, Option<Algorithm>), TokenError> {
        let (found, stale) = {
            let keys = local.keys.read().map_err(|_| TokenError::Unavailable)?;
            let stale = keys.older_than(local.max_age)
                && !keys.attempted_within(local.min_refresh_interval);
            (keys.keys.get(kid).cloned(), stale)
        };
        if let Some(found) = found {
            if !stale {
                return Ok(found);
            }
            // One request refreshes; the others meanwhile use the cached key.
            let Ok(_refetching) = local.refetch.try_lock() else {
                return Ok(found);
            };
            if self.fetch_jwks(local).await.is_err() {
                return Ok(found);
            }
            let keys = local.keys.read().map_err(|_| TokenError::Unavailable)?;
            return keys
                .keys
                .get(kid)
                .cloned()
                .ok_or(TokenError::Invalid("unknown key"));
        }
        let _refetching = local.refetch.lock().await;
        // Someone else may have fetched while we waited.
        {
            let keys = local.keys.read().map_err(|_| TokenError::Unavailable)?;
            if let Some(found) = keys.keys.get(kid) {
                return Ok(found.clone());
            }
            if keys.attempted_within(local.min_refresh_interval) {
                return Err(TokenError::Invalid("unknown key"));
            }
        }
        self.fetch_jwks(local).await?;
        let keys = local.keys.read().map_err(|_| TokenError::Unavailable)?;
        keys.keys
            .get(kid)
            .cloned()
            .ok_or(TokenError::Invalid("unknown key"))
    }

    async fn fetch_jwks(&self, local: &LocalConfig) -> Result<(), TokenError> {
        local
            .fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fetched = async {
            let response = self.inner.http.get(&local.jwks_uri).send().await.ok()?;
            response
                .error_for_status()
                .ok()?
                .json::<JwkSet>()
                .await
                .ok()
        }
        .await;
        let mut cache = local.keys.write().map_err(|_| TokenError::Unavailable)?;
        cache.attempted_at = Some(Instant::now());
        let Some(set) = fetched else {
            tracing::warn!(jwks_uri = %local.jwks_uri, "fetching the JWKS failed");
            return Err(TokenError::Unavailable);
        };
        cache.fetched_at = cache.attempted_at;
        cache.keys = set
            .keys
            .iter()
            .filter(|jwk| !matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)))
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                // A key for something other than signing (RSA1_5, ...) is skipped.
                let alg = match jwk.common.key_algorithm {
                    Some(alg) => Some(alg.to_string().parse::<Algorithm>().ok()?),
                    None => None,
                };
                Some((kid, (key, alg)))
            })
            .collect();
        Ok(())
    }

    async fn introspect(
        &self,
        remote: &IntrospectionConfig,
        token: &str,
    ) -> Result<AccessToken, TokenError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Ok(cache) = remote.cache.lock()
            && let Some((found, until)) = cache.get(&key)
            && Instant::now() < *until
        {
            return Ok(found.clone());
        }
        let response = self
            .inner
            .http
            .post(&remote.endpoint)
            .basic_auth(
                form_encode(&remote.client_id),
                Some(form_encode(&remote.client_secret)),
            )
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|_| TokenError::Unavailable)?;
        if !response.status().is_success() {
            tracing::warn!(status = %response.status(), "introspection failed");
            return Err(TokenError::Unavailable);
        }
        let answer: serde_json::Map<String, serde_json::Value> =
            response.json().await.map_err(|_| TokenError::Unavailable)?;
        if answer.get("active") != Some(&serde_json::Value::Bool(true)) {
            return Err(TokenError::Invalid("inactive token"));
        }
        // Only bearer access tokens: a refresh token (or a sender-constrained
        // token) presented as a bearer token is refused.
        if let Some(kind) = answer.get("token_type")
            && !kind
                .as_str()
                .is_some_and(|k| k.eq_ignore_ascii_case("bearer") || k == "access_token")
        {
            return Err(TokenError::Invalid("not a bearer access token"));
        }
        if answer
            .get("iss")
            .and_then(|i| i.as_str())
            .is_some_and(|iss| iss != self.inner.issuer)
        {
            return Err(TokenError::Invalid("wrong issuer"));
        }
        let audience_ok = match answer.get("aud") {
            Some(serde_json::Value::String(aud)) => *aud == self.inner.audience,
            Some(serde_json::Value::Array(auds)) => auds
                .iter()
                .any(|a| a.as_str() == Some(&self.inner.audience)),
            _ => false,
        };
        if !audience_ok {
            return Err(TokenError::Invalid("wrong audience"));
        }
        let token =
            AccessToken::from_claims(answer).ok_or(TokenError::Invalid("missing claims"))?;
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let lifetime = Duration::from_secs(u64::try_from(token.expires_at - now_unix).unwrap_or(0));
        if let Ok(mut cache) = remote.cache.lock() {
            if cache.len() >= remote.max_entries {
                let now = Instant::now();
                cache.retain(|_, (_, until)| *until > now);
                if cache.len() >= remote.max_entries {
                    cache.clear();
                }
            }
            cache.insert(
                key,
                (token.clone(), Instant::now() + remote.ttl.min(lifetime)),
            );
        }
        Ok(token)
    }
}

/// RFC 6749 §2.3.1: client credentials are form-urlencoded before Basic.
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

impl ValidatorBuilder {
    /// The realm of `WWW-Authenticate` challenges (default: the audience).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// The signature algorithms accepted (default [`DEFAULT_ALGORITHMS`]);
    /// HMAC algorithms are ignored.
    pub fn algorithms(mut self, algorithms: &[Algorithm]) -> Self {
        self.algorithms = algorithms
            .iter()
            .copied()
            .filter(|alg| !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
            .collect();
        self
    }

    /// Clock skew tolerated on `exp` and `nbf` (default 30 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The shortest time between two JWKS fetches (default 5 s). A token
    /// signed with a key the issuer has just added is refused until the
    /// next fetch, so keep this short.
    pub fn min_jwks_refresh(mut self, interval: Duration) -> Self {
        self.min_refresh_interval = interval;
        self
    }

    /// How long fetched keys are trusted before the JWKS is fetched again
    /// (default 10 minutes): a key the issuer withdraws is refused after at
    /// most this long. If the issuer is unreachable then, the keys are kept.
    pub fn max_jwks_age(mut self, age: Duration) -> Self {
        self.max_key_age = age;
        self
    }

    /// Also accept `?access_token=` (RFC 6750 §2.3); off by default, as
    /// tokens in URLs end up in logs and histories.
    pub fn allow_query_token(mut self, allow: bool) -> Self {
        self.allow_query_token = allow;
        self
    }

    /// Validate through the issuer's introspection endpoint, authenticating
    /// as this confidential client, instead of locally.
    pub fn introspection(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        self.introspection = Some((client_id.into(), client_secret.into()));
        self
    }

    /// How long a positive introspection answer is reused (default 30 s,
    /// never past the token's expiry), and how many are kept.
    pub fn introspection_cache(mut self, ttl: Duration, max_entries: usize) -> Self {
        self.introspection_ttl = ttl;
        self.introspection_max_entries = max_entries.max(1);
        self
    }

    /// Discovers the issuer's endpoints from its metadata (RFC 8414 §3, with
    /// the OpenID Connect location as a fallback) and builds the validator.
    pub async fn discover(self) -> Result<Validator, SetupError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| SetupError::Metadata(e.to_string()))?;
        let issuer_url =
            url::Url::parse(&self.issuer).map_err(|e| SetupError::InvalidIssuer(e.to_string()))?;
        let path = issuer_url.path().trim_end_matches('/');
        let mut well_known = issuer_url.clone();
        well_known.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
        let fallback = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let mut metadata = None;
        let mut last_error = String::new();
        for url in [well_known.to_string(), fallback] {
            match http
                .get(&url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
            {
                Ok(response) => match response.json::<Metadata>().await {
                    Ok(found) => {
                        metadata = Some(found);
                        break;
                    }
                    Err(error) => last_error = error.to_string(),
                },
                Err(error) => last_error = error.to_string(),
            }
        }
        let metadata = metadata.ok_or(SetupError::Metadata(last_error))?;
        // RFC 8414 §3.3: the metadata must name the issuer it was fetched for.
        if metadata.issuer != self.issuer {
            return Err(SetupError::InvalidIssuer(format!(
                "the metadata names issuer {}",
                metadata.issuer
            )));
        }
        let mode = match self.introspection {
            Some((client_id, client_secret)) => Mode::Introspection(IntrospectionConfig {
                endpoint: metadata
                    .introspection_endpoint
                    .ok_or(SetupError::MissingEndpoint("introspection_endpoint"))?,
                client_id,
                client_secret,
                ttl: self.introspection_ttl,
                max_entries: self.introspection_max_entries,
                cache: Mutex::default(),
            }),
            None => Mode::Local(LocalConfig {
                jwks_uri: metadata
                    .jwks_uri
                    .ok_or(SetupError::MissingEndpoint("jwks_uri"))?,
                algorithms: self.algorithms,
                leeway: self.leeway.as_secs(),
                min_refresh_interval: self.min_refresh_interval,
                max_age: self.max_key_age,
                keys: RwLock::default(),
                refetch: tokio::sync::Mutex::new(()),
                fetches: Default::default(),
            }),
        };
        let realm = self.realm.unwrap_or_else(|| self.audience.clone());
        Ok(Validator {
            inner: Arc::new(Inner {
                issuer: self.issuer,
                audience: self.audience,
                realm,
                allow_query_token: self.allow_query_token,
                http,
                mode,
            }),
        })
    }
}
