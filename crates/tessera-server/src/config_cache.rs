//! A cache of what every token request reads and almost never changes: the
//! tenant, the client and the tenant's signing keys.
//!
//! It is never stale. Triggers bump a counter in the database
//! (`config_version`) on every change to tenants, keys, scopes and clients,
//! whoever makes it: this process, the CLI, or another node. Each request
//! reads that counter once ([`with_config_version`], a middleware), and the
//! cache throws everything away when the counter differs from the one its
//! entries were loaded under. So a request costs one small read instead of
//! three, and a client deleted a moment ago is refused by every node.
//!
//! Outside a request (the CLI, background tasks) the cache is bypassed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use tessera_core::jwt::VerifiedClaims;
use tessera_core::{Client, SigningKeyRecord, Tenant, TenantId, UnixTime};
use tessera_store::{Store, StoreResult};

tokio::task_local! {
    /// The configuration version read at the start of this request.
    static CONFIG_VERSION: i64;
}

/// Entries beyond this many are dropped, so that requests naming unknown
/// tenants or clients cannot grow the cache without bound.
const MAX_ENTRIES: usize = 50_000;

/// Verified JWTs kept at most (about 1 KiB each); past it they start afresh.
const MAX_VERIFIED_JWTS: usize = 4_096;

#[derive(Default)]
pub struct ConfigCache {
    state: RwLock<Entries>,
}

#[derive(Default)]
struct Entries {
    version: Option<i64>,
    tenants: HashMap<String, Option<Tenant>>,
    /// Shared, not cloned, with the requests that use them.
    clients: HashMap<(i64, String), Option<Arc<Client>>>,
    /// Every key of a tenant, published or not, in the store's order.
    keys: HashMap<i64, Arc<Vec<SigningKeyRecord>>>,
    /// JWT access tokens whose signature checked out, with their tenant id:
    /// introspection of the same token, which resource servers repeat for
    /// every call they serve, then skips the ECDSA verification.
    verified_jwts: HashMap<String, (i64, Arc<VerifiedClaims>)>,
}

impl Entries {
    fn len(&self) -> usize {
        self.tenants.len() + self.clients.len() + self.keys.len()
    }
}

/// Runs `request` with the configuration version read now, so that its
/// lookups can use the cache. If the version cannot be read, the request
/// runs without the cache (and meets the database's trouble itself).
pub async fn with_config_version<F: Future>(store: &dyn Store, request: F) -> F::Output {
    match store.config_version().await {
        Ok(version) => CONFIG_VERSION.scope(version, request).await,
        Err(_) => request.await,
    }
}

impl ConfigCache {
    /// Looks up `key` with `get`; on a miss, loads it with `load` and keeps
    /// it, tagged with this request's version.
    async fn cached<V, Get, Put, Load, Fut>(&self, get: Get, put: Put, load: Load) -> StoreResult<V>
    where
        V: Clone,
        Get: Fn(&Entries) -> Option<V>,
        Put: FnOnce(&mut Entries, V),
        Load: FnOnce() -> Fut,
        Fut: Future<Output = StoreResult<V>>,
    {
        let Ok(version) = CONFIG_VERSION.try_with(|v| *v) else {
            return load().await;
        };
        if let Ok(entries) = self.state.read()
            && entries.version == Some(version)
            && let Some(found) = get(&entries)
        {
            return Ok(found);
        }
        // Loaded after the version was read, so at least that fresh.
        let loaded = load().await?;
        if let Ok(mut entries) = self.state.write() {
            if entries.version != Some(version) || entries.len() >= MAX_ENTRIES {
                // A newer version (or an older request) starts afresh; a
                // request that read an older version must not fill the cache.
                if entries.version.is_some_and(|current| current > version) {
                    return Ok(loaded);
                }
                *entries = Entries {
                    version: Some(version),
                    ..Entries::default()
                };
            }
            put(&mut entries, loaded.clone());
        }
        Ok(loaded)
    }

    pub async fn tenant_by_name(
        &self,
        store: &dyn Store,
        name: &str,
    ) -> StoreResult<Option<Tenant>> {
        self.cached(
            |e| e.tenants.get(name).cloned(),
            |e, v| {
                e.tenants.insert(name.to_owned(), v);
            },
            || store.tenant_by_name(name),
        )
        .await
    }

    pub async fn client(
        &self,
        store: &dyn Store,
        tenant: TenantId,
        client_id: &str,
    ) -> StoreResult<Option<Arc<Client>>> {
        let key = (tenant.0, client_id.to_owned());
        self.cached(
            |e| e.clients.get(&key).cloned(),
            |e, v| {
                e.clients.insert(key.clone(), v);
            },
            || async { Ok(store.client(tenant, client_id).await?.map(Arc::new)) },
        )
        .await
    }

    /// The keys published at `now`, newest first, as `Store::published_keys`.
    /// Usually that is all of them, and the cached list itself is returned.
    pub async fn published_keys(
        &self,
        store: &dyn Store,
        tenant: TenantId,
        now: UnixTime,
    ) -> StoreResult<Arc<Vec<SigningKeyRecord>>> {
        let all = self
            .cached(
                |e| e.keys.get(&tenant.0).cloned(),
                |e, v| {
                    e.keys.insert(tenant.0, v);
                },
                || async move {
                    Ok(Arc::new(
                        store.published_keys(tenant, UnixTime(i64::MIN)).await?,
                    ))
                },
            )
            .await?;
        let published = |key: &SigningKeyRecord| key.retire_at.is_none_or(|at| now < at);
        if all.iter().all(published) {
            return Ok(all);
        }
        Ok(Arc::new(
            all.iter().filter(|k| published(k)).cloned().collect(),
        ))
    }

    /// The claims of `token` if its signature was verified under this
    /// request's configuration version. The caller checks that the key that
    /// signed it (`kid`) is still published.
    pub fn verified_jwt(&self, tenant: TenantId, token: &str) -> Option<Arc<VerifiedClaims>> {
        let version = CONFIG_VERSION.try_with(|v| *v).ok()?;
        let entries = self.state.read().ok()?;
        if entries.version != Some(version) {
            return None;
        }
        match entries.verified_jwts.get(token) {
            Some((owner, claims)) if *owner == tenant.0 => Some(claims.clone()),
            _ => None,
        }
    }

    /// Remembers that `token`'s signature checked out.
    pub fn remember_verified_jwt(
        &self,
        tenant: TenantId,
        token: &str,
        claims: Arc<VerifiedClaims>,
    ) {
        let Ok(version) = CONFIG_VERSION.try_with(|v| *v) else {
            return;
        };
        if let Ok(mut entries) = self.state.write()
            && entries.version == Some(version)
        {
            if entries.verified_jwts.len() >= MAX_VERIFIED_JWTS {
                entries.verified_jwts.clear();
            }
            entries
                .verified_jwts
                .insert(token.to_owned(), (tenant.0, claims));
        }
    }
}
