//! What every request shares: the store, the secret hasher and the
//! deployment's configuration.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tessera_core::jwt::SigningKey;
use tessera_core::secret::SecretHasher;
use tessera_core::throttle::ThrottlePolicy;
use tessera_core::{Client, SigningKeyRecord, Tenant, TenantId, TenantName, UnixTime};
use tessera_store::{Store, StoreResult};

use crate::config_cache::ConfigCache;
use crate::service::ServiceError;
use tessera_core::jwt::{VerifiedClaims, verify_access_token};

/// Name of the deployment-wide key of the secret hasher in `server_secrets`.
pub(crate) const HASH_KEY_NAME: &str = "secret-hash-key";

/// Cloned several times per request (by the router, the middleware and the
/// `State` extractor), so everything but two small settings sits behind
/// one `Arc`: a clone is one reference count, not a copy of the hasher's
/// HMAC context and the public URL.
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
    /// Brute-force throttling of passwords.
    pub throttle: ThrottlePolicy,
    /// Take the client address from the last `X-Forwarded-For` entry (set this
    /// only behind a proxy that writes that header).
    pub trust_forwarded_for: bool,
}

/// The part of [`AppState`] that every clone shares.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub hasher: SecretHasher,
    /// Public base URL, without a trailing slash; every issuer and link is
    /// built from it, never from the request's `Host` header.
    pub public_url: String,
    /// Tenants, clients and signing keys, checked against the database's
    /// configuration version on every request (see `config_cache`).
    config: ConfigCache,
    /// Parsed signing keys by kid. A kid names one immutable key, so this
    /// cache can never be stale; it only saves re-parsing PKCS#8 per token.
    signing_keys: RwLock<HashMap<String, Arc<SigningKey>>>,
    /// Bounds concurrent Argon2id verifications (19 MiB and tens of
    /// milliseconds each), so a flood of logins queues instead of exhausting
    /// memory and starving the token endpoint.
    pub(crate) password_checks: tokio::sync::Semaphore,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl AppState {
    /// Loads (creating on first use) the deployment's hashing key.
    pub async fn new(store: Arc<dyn Store>, public_url: &str) -> Result<Self, ServiceError> {
        let key = store
            .server_secret(HASH_KEY_NAME, &|| {
                crate::service::random_bytes::<32>().to_vec()
            })
            .await?;
        Ok(AppState {
            shared: Arc::new(Shared {
                store,
                hasher: SecretHasher::new(&key),
                public_url: public_url.trim_end_matches('/').to_owned(),
                config: ConfigCache::default(),
                signing_keys: RwLock::default(),
                password_checks: tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                ),
            }),
            throttle: ThrottlePolicy::default(),
            trust_forwarded_for: false,
        })
    }

    /// The tenant named `name`, through the configuration cache.
    pub(crate) async fn tenant_by_name(&self, name: &str) -> StoreResult<Option<Tenant>> {
        self.config.tenant_by_name(self.store.as_ref(), name).await
    }

    /// A client of `tenant`, through the configuration cache.
    pub(crate) async fn client(
        &self,
        tenant: TenantId,
        client_id: &str,
    ) -> StoreResult<Option<Arc<Client>>> {
        self.config
            .client(self.store.as_ref(), tenant, client_id)
            .await
    }

    /// The tenant's keys published at `now`, through the configuration cache.
    pub(crate) async fn published_keys(
        &self,
        tenant: TenantId,
        now: UnixTime,
    ) -> StoreResult<Arc<Vec<SigningKeyRecord>>> {
        self.config
            .published_keys(self.store.as_ref(), tenant, now)
            .await
    }

    /// The issuer identifier of a tenant (RFC 8414 §2).
    pub fn issuer(&self, tenant: &TenantName) -> String {
        // Sized at once: on the token path, a `format!` that grows its
        // buffer costs `realloc`s (see `jwt::claims_json`).
        let tenant = tenant.as_str();
        let mut issuer = String::with_capacity(self.public_url.len() + 3 + tenant.len());
        issuer.push_str(&self.public_url);
        issuer.push_str("/t/");
        issuer.push_str(tenant);
        issuer
    }

    pub(crate) fn cached_signing_key(&self, kid: &str) -> Option<Arc<SigningKey>> {
        self.signing_keys.read().ok()?.get(kid).cloned()
    }

    pub(crate) fn cache_signing_key(&self, key: Arc<SigningKey>) {
        if let Ok(mut keys) = self.signing_keys.write() {
            keys.insert(key.kid().to_owned(), key);
        }
    }

    /// The claims of a JWT access token of `tenant` signed by one of `keys`
    /// (its published keys), verifying the signature only the first time
    /// while the configuration is unchanged.
    pub(crate) fn verify_access_token(
        &self,
        tenant: TenantId,
        token: &str,
        keys: &[SigningKeyRecord],
    ) -> Option<Arc<VerifiedClaims>> {
        // A remembered verification counts only while its key is published:
        // retirement is a matter of time, not of a configuration change.
        if let Some(claims) = self.config.verified_jwt(tenant, token)
            && keys.iter().any(|key| key.kid == claims.kid)
        {
            return Some(claims);
        }
        let claims = Arc::new(verify_access_token(
            token,
            keys.iter().map(|k| k.public_jwk.as_str()),
        )?);
        self.config
            .remember_verified_jwt(tenant, token, claims.clone());
        Some(claims)
    }
}
