//! Token validation: locally against the issuer's JWKS (RFC 9068), or
//! remotely through introspection (RFC 7662).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
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

/// The longest one request to the issuer may take. It is also the grace
/// past `max_jwks_age` during which requests are still served from the old
/// keys while a refresh runs in the background; after it, a request waits
/// for the refresh, so a withdrawn key is refused at most `max_jwks_age`
/// plus one fetch after the keys were fetched.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Held by whoever fetches the JWKS: at most one fetch is in flight.
    /// Shared with the background refresh task, hence the `Arc`.
    refetch: Arc<tokio::sync::Mutex<()>>,
    fetches: std::sync::atomic::AtomicU64,
}

/// A verification key from the issuer's JWKS.
struct CachedKey {
    /// Absent when the JWKS names none (RFC 7517 §4.5 makes `kid` optional).
    kid: Option<String>,
    key: DecodingKey,
    /// The algorithm the JWKS binds the key to, if it names one.
    alg: Option<Algorithm>,
    kind: KeyKind,
}

impl CachedKey {
    /// Whether this key may verify a signature made with `alg`.
    fn fits(&self, alg: Algorithm) -> bool {
        self.kind.verifies(alg) && self.alg.is_none_or(|own| own == alg)
    }
}

/// The key types and curves a signature can be checked with here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn of(params: &AlgorithmParameters) -> Option<KeyKind> {
        match params {
            AlgorithmParameters::RSA(_) => Some(KeyKind::Rsa),
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => Some(KeyKind::P256),
                EllipticCurve::P384 => Some(KeyKind::P384),
                _ => None,
            },
            AlgorithmParameters::OctetKeyPair(okp) => {
                (okp.curve == EllipticCurve::Ed25519).then_some(KeyKind::Ed25519)
            }
            // Symmetric keys are never used (see DEFAULT_ALGORITHMS).
            AlgorithmParameters::OctetKey(_) => None,
        }
    }

    fn verifies(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256 => alg == ES256,
            KeyKind::P384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

#[derive(Default)]
struct KeyCache {
    keys: Vec<Arc<CachedKey>>,
    /// The last successful fetch.
    fetched_at: Option<Instant>,
    /// The last attempt, successful or not.
    attempted_at: Option<Instant>,
    /// Whether the last attempt failed: an unknown key is then a question
    /// for an issuer we cannot reach (503), not proof of a bad token (401).
    last_failed: bool,
    /// Counts successful fetches, so that a request which waited for
    /// another's fetch sees that the keys have changed meanwhile.
    generation: u64,
}

/// What a cache lookup found for a token's `kid` and `alg`.
enum Lookup {
    Found(Vec<Arc<CachedKey>>),
    /// The named key exists but is for another algorithm or key type.
    Mismatch,
    Unknown,
}

/// Whether the keys are refetched because of their age.
#[derive(Debug, PartialEq, Eq)]
enum Refresh {
    No,
    /// Serve from the cache while a task refetches.
    Background,
    /// Wait for the refetch before answering.
    Blocking,
}

impl KeyCache {
    fn attempted_within(&self, interval: Duration, now: Instant) -> bool {
        self.attempted_at
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
    }

    fn refresh(&self, now: Instant, max_age: Duration, min_interval: Duration) -> Refresh {
        refresh_plan(
            self.fetched_at.map(|at| now.saturating_duration_since(at)),
            self.attempted_within(min_interval, now),
            self.last_failed,
            max_age,
        )
    }

    /// The keys that may have signed a token with this `kid` and `alg`.
    /// RFC 7515 §4.1.4: `kid` is optional. A token that names one is checked
    /// with that key only; a token without one with every key that fits its
    /// algorithm, with or without a kid of its own.
    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        let named: Vec<_> = self
            .keys
            .iter()
            .filter(|key| kid.is_none() || key.kid.as_deref() == kid)
            .collect();
        if named.is_empty() {
            return Lookup::Unknown;
        }
        let fitting: Vec<_> = named
            .into_iter()
            .filter(|key| key.fits(alg))
            .cloned()
            .collect();
        match (fitting.is_empty(), kid) {
            (false, _) => Lookup::Found(fitting),
            (true, Some(_)) => Lookup::Mismatch,
            // No key for its algorithm: perhaps one published since.
            (true, None) => Lookup::Unknown,
        }
    }
}

/// Whether keys `age` old (`None`: never fetched) need refetching. Within
/// `max_age` they are trusted. Past it they are refreshed in the background,
/// unless a refetch was attempted within the minimum interval. Past
/// `max_age` plus [`FETCH_TIMEOUT`] (no request came along in time to
/// refresh them in the background), the request waits, except when the last
/// attempt failed: waiting for an issuer that is down gains nothing, as the
/// keys are kept anyway.
fn refresh_plan(
    age: Option<Duration>,
    attempted_recently: bool,
    last_failed: bool,
    max_age: Duration,
) -> Refresh {
    // Never fetched: the unknown-key path fetches.
    let Some(age) = age else {
        return Refresh::No;
    };
    if age < max_age || attempted_recently {
        Refresh::No
    } else if age >= max_age.saturating_add(FETCH_TIMEOUT) && !last_failed {
        Refresh::Blocking
    } else {
        Refresh::Background
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

/// A JWKS with its keys left unparsed, so that each is parsed on its own.
#[derive(Deserialize)]
struct RawJwkSet {
    keys: Vec<serde_json::Value>,
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
        let kid = header.kid.as_deref();
        self.refresh_if_old(local).await;
        // At most one refetch per request, for a key the cache lacks.
        let mut refetched = false;
        loop {
            let (found, generation) = {
                let cache = local.keys.read().map_err(|_| TokenError::Unavailable)?;
                (cache.lookup(kid, header.alg), cache.generation)
            };
            let keys = match found {
                Lookup::Found(keys) => keys,
                Lookup::Mismatch => {
                    return Err(TokenError::Invalid("algorithm does not match the key"));
                }
                Lookup::Unknown if refetched => return Err(TokenError::Invalid("unknown key")),
                Lookup::Unknown => {
                    self.refetch(local, generation).await?;
                    refetched = true;
                    continue;
                }
            };
            if let Some(outcome) = self.verify(local, token, header.alg, &keys) {
                return outcome;
            }
            // No key verifies. With a kid the named key has answered; without
            // one, the signer may be a key published since the last fetch.
            if kid.is_some() || refetched {
                return Err(TokenError::Invalid("bad signature"));
            }
            match self.refetch(local, generation).await {
                Err(TokenError::Invalid(_)) => return Err(TokenError::Invalid("bad signature")),
                other => other?,
            }
            refetched = true;
        }
    }

    /// Checks the token's signature with each candidate key in turn, then its
    /// claims. `None` when no key's signature matches.
    fn verify(
        &self,
        local: &LocalConfig,
        token: &str,
        alg: Algorithm,
        keys: &[Arc<CachedKey>],
    ) -> Option<Result<AccessToken, TokenError>> {
        use jsonwebtoken::errors::ErrorKind;
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = local.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.inner.issuer]);
        validation.set_audience(&[&self.inner.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        for key in keys {
            // The signature is checked before the claims, so any error but
            // these means the key did sign the token.
            let error = match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                &key.key,
                &validation,
            ) {
                Ok(data) => {
                    return Some(
                        AccessToken::from_claims(data.claims)
                            .ok_or(TokenError::Invalid("missing claims")),
                    );
                }
                Err(error) => error,
            };
            let description = match error.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat => continue,
                ErrorKind::ExpiredSignature => "expired",
                ErrorKind::ImmatureSignature => "not yet valid",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidAudience => "wrong audience",
                _ => "invalid token",
            };
            return Some(Err(TokenError::Invalid(description)));
        }
        None
    }

    /// Refetches keys that are past `max_age`: in the background at first, so
    /// that no request waits for the issuer; a request that finds them older
    /// than `max_age` plus one fetch (after a quiet spell) waits, so that a
    /// withdrawn key is not accepted for longer.
    async fn refresh_if_old(&self, local: &LocalConfig) {
        let plan = match local.keys.read() {
            Ok(cache) => cache.refresh(Instant::now(), local.max_age, local.min_refresh_interval),
            Err(_) => return,
        };
        match plan {
            Refresh::No => {}
            Refresh::Background => self.refresh_in_background(local),
            Refresh::Blocking => {
                // Waits for a refresh already in flight, if any.
                let _refetching = local.refetch.lock().await;
                let still = local.keys.read().is_ok_and(|cache| {
                    cache.refresh(Instant::now(), local.max_age, local.min_refresh_interval)
                        == Refresh::Blocking
                });
                if still {
                    // A failure keeps the old keys, so it is no reason to refuse.
                    let _ = self.fetch_jwks(local).await;
                }
            }
        }
    }

    /// Starts a refresh in a task of its own, unless one is in flight.
    fn refresh_in_background(&self, local: &LocalConfig) {
        let Ok(refetching) = local.refetch.clone().try_lock_owned() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let validator = self.clone();
        runtime.spawn(async move {
            let _refetching = refetching;
            let Mode::Local(local) = &validator.inner.mode else {
                return;
            };
            // Another fetch may have completed just before the lock was taken.
            let needed = local.keys.read().is_ok_and(|cache| {
                cache.refresh(Instant::now(), local.max_age, local.min_refresh_interval)
                    != Refresh::No
            });
            if needed {
                let _ = validator.fetch_jwks(local).await;
            }
        });
    }

    /// Fetches the JWKS for a key the cache lacks, at most once per
    /// `min_refresh_interval`. Returns at once if the keys changed since the
    /// caller looked (generation `seen`): another request has just fetched.
    async fn refetch(&self, local: &LocalConfig, seen: u64) -> Result<(), TokenError> {
        let _refetching = local.refetch.lock().await;
        {
            let cache = local.keys.read().map_err(|_| TokenError::Unavailable)?;
            if cache.generation != seen {
                return Ok(());
            }
            if cache.attempted_within(local.min_refresh_interval, Instant::now()) {
                // The key may well exist: the issuer just could not be asked.
                return Err(if cache.last_failed {
                    TokenError::Unavailable
                } else {
                    TokenError::Invalid("unknown key")
                });
            }
        }
        self.fetch_jwks(local).await
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
                .json::<RawJwkSet>()
                .await
                .ok()
        }
        .await;
        let keys = fetched.map(|set| usable_keys(set.keys));
        let mut cache = local.keys.write().map_err(|_| TokenError::Unavailable)?;
        let now = Instant::now();
        cache.attempted_at = Some(now);
        let Some(keys) = keys else {
            cache.last_failed = true;
            tracing::warn!(jwks_uri = %local.jwks_uri, "fetching the JWKS failed");
            return Err(TokenError::Unavailable);
        };
        cache.last_failed = false;
        cache.fetched_at = Some(now);
        cache.generation += 1;
        cache.keys = keys;
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
            AccessToken::from_introspection(answer).ok_or(TokenError::Invalid("missing claims"))?;
        // Without `exp` (optional, RFC 7662 §2.2) the answer is reused for the
        // TTL only.
        let lifetime = match token.expires_at {
            Some(expires_at) => {
                let now_unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                Duration::from_secs(u64::try_from(expires_at - now_unix).unwrap_or(0))
            }
            None => remote.ttl,
        };
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

/// The keys of a JWKS that can verify signatures here. Each key is parsed
/// on its own: one of a type or curve not supported here (X25519, Ed448,
/// secp256k1, a new `kty`) must not hide the others.
fn usable_keys(raw: Vec<serde_json::Value>) -> Vec<Arc<CachedKey>> {
    let total = raw.len();
    let keys: Vec<_> = raw
        .into_iter()
        .filter_map(|value| usable_key(&serde_json::from_value(value).ok()?))
        .map(Arc::new)
        .collect();
    if keys.len() < total {
        tracing::debug!(
            skipped = total - keys.len(),
            "JWKS keys skipped: not signature keys of a supported type"
        );
    }
    keys
}

fn usable_key(jwk: &Jwk) -> Option<CachedKey> {
    // RFC 7517 §4.2: a key published for encryption (or anything but
    // signatures) is not for verifying them.
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|usage| *usage != PublicKeyUse::Signature)
    {
        return None;
    }
    // RFC 7517 §4.3: when `key_ops` is present, it must allow "verify".
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let kind = KeyKind::of(&jwk.algorithm)?;
    // A key bound to an algorithm not for signatures (RSA-OAEP, ...) or not
    // for its own type is skipped.
    let alg = match jwk.common.key_algorithm {
        Some(alg) => Some(
            alg.to_string()
                .parse::<Algorithm>()
                .ok()
                .filter(|alg| kind.verifies(*alg))?,
        ),
        None => None,
    };
    Some(CachedKey {
        kid: jwk.common.key_id.clone(),
        key: DecodingKey::from_jwk(jwk).ok()?,
        alg,
        kind,
    })
}

/// RFC 6749 §2.3.1: client credentials are form-urlencoded before Basic.
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

impl ValidatorBuilder {
    /// The realm of `WWW-Authenticate` challenges (default: the audience).
    /// [`discover`](Self::discover) refuses a realm with control characters,
    /// quotes or backslashes.
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
    /// (default 10 minutes). The refetch runs in the background while
    /// requests are served from the old keys; a request that finds the keys
    /// older than this plus the 10 s fetch timeout waits for it instead. So a
    /// key the issuer withdraws is refused at most this long plus one fetch
    /// after the keys were fetched. If the issuer is unreachable then, the
    /// keys are kept.
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
        let realm = self.realm.unwrap_or_else(|| self.audience.clone());
        // The realm is a quoted-string in every challenge (RFC 6750 §3): one
        // that cannot be sent as is is refused now rather than altered or
        // dropped in each response.
        if realm
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\')
        {
            return Err(SetupError::InvalidRealm(
                "control characters, quotes and backslashes are not allowed",
            ));
        }
        let issuer_url =
            url::Url::parse(&self.issuer).map_err(|e| SetupError::InvalidIssuer(e.to_string()))?;
        // RFC 8414 §2: the issuer is an https URL (http is allowed here, for
        // development) without query or fragment.
        if !matches!(issuer_url.scheme(), "https" | "http") {
            return Err(SetupError::InvalidIssuer(
                "the issuer must be an https or http URL".into(),
            ));
        }
        if issuer_url.query().is_some() || issuer_url.fragment().is_some() {
            return Err(SetupError::InvalidIssuer(
                "the issuer must have no query or fragment".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| SetupError::Metadata(e.to_string()))?;
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
                refetch: Arc::default(),
                fetches: Default::default(),
            }),
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn old_keys_are_refreshed_in_the_background_then_waited_for() {
        let plan = |age: Option<Duration>, recently: bool, failed: bool| {
            refresh_plan(age, recently, failed, MINUTE)
        };
        assert_eq!(plan(None, false, false), Refresh::No, "never fetched");
        assert_eq!(plan(Some(MINUTE / 2), false, false), Refresh::No);
        assert_eq!(plan(Some(MINUTE), false, false), Refresh::Background);
        let late = MINUTE + FETCH_TIMEOUT;
        assert_eq!(
            plan(Some(late - Duration::from_millis(1)), false, false),
            Refresh::Background
        );
        assert_eq!(plan(Some(late), false, false), Refresh::Blocking);
        // Rate-limited, and no waiting for an issuer that just failed.
        assert_eq!(plan(Some(late), true, false), Refresh::No);
        assert_eq!(plan(Some(late), false, true), Refresh::Background);
    }
}
