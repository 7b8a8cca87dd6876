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
use std::collections::hash_map::Entry;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tessera_core::jwt::VerifiedClaims;
use tessera_core::{Client, SigningKeyRecord, Tenant, TenantId, UnixTime};
use tessera_store::{Store, StoreResult};
use tokio::sync::watch;

tokio::task_local! {
    /// The configuration version read at the start of this request.
    static CONFIG_VERSION: i64;
}

/// Entries beyond this many are dropped, so that requests naming unknown
/// tenants or clients cannot grow the cache without bound.
const MAX_ENTRIES: usize = 50_000;

/// Verified JWTs kept at most (about 1 KiB each); past it they start afresh.
const MAX_VERIFIED_JWTS: usize = 4_096;

/// The longest a request waits for another's load of the entry it missed
/// before it loads for itself: a load stuck on a connection that stopped
/// answering must not hold up every request that needs the same entry.
const LONGEST_WAIT_FOR_LOAD: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct ConfigCache {
    state: RwLock<Entries>,
    /// The loads on their way, by version and entry. After a start or a
    /// change every request in flight misses at once; the first to miss an
    /// entry loads it, and the others wait for that load instead of each
    /// making the same read.
    loading: Mutex<HashMap<(i64, EntryKey), watch::Receiver<()>>>,
}

/// Names one entry of the cache, for `ConfigCache::loading`.
#[derive(Clone, PartialEq, Eq, Hash)]
enum EntryKey {
    Tenant(String),
    Client(i64, String),
    Keys(i64),
}

/// Held by the request that loads an entry. Dropping it, whether the load
/// succeeded, failed or was cancelled with its request, removes the entry
/// from `loading`, then drops the sender, which wakes the waiting requests.
struct Loading<'a> {
    loading: &'a Mutex<HashMap<(i64, EntryKey), watch::Receiver<()>>>,
    key: (i64, EntryKey),
    _done: watch::Sender<()>,
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        // `Drop::drop` runs before the fields are dropped: the entry is gone
        // before the waiters wake, so none of them can wait for it again.
        self.loading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
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
    /// Looks up an entry with `get`; on a miss, loads it with `load` and
    /// keeps it, tagged with this request's version. While one request loads
    /// the entry named `key`, the others that miss it wait for that load.
    async fn cached<V, Get, Put, Load, Fut>(
        &self,
        key: impl FnOnce() -> EntryKey,
        get: Get,
        put: Put,
        load: Load,
    ) -> StoreResult<V>
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
        if let Some(found) = self.current(version, &get) {
            return Ok(found);
        }
        let _loading = match self.start_loading((version, key())) {
            Ok(loading) => Some(loading),
            Err(mut load_done) => {
                // A load made under the same version is as fresh as ours
                // would be. `changed` returns when the loader drops its
                // sender: loaded, failed or cancelled.
                let _ = tokio::time::timeout(LONGEST_WAIT_FOR_LOAD, load_done.changed()).await;
                if let Some(found) = self.current(version, &get) {
                    return Ok(found);
                }
                // It failed, was cancelled or is stuck: this request loads
                // for itself.
                None
            }
        };
        // Loaded after the version was read, so at least that fresh.
        let loaded = load().await?;
        self.keep(version, put, loaded.clone());
        Ok(loaded)
    }

    /// The entry `get` finds, if the cache holds `version`.
    fn current<V>(&self, version: i64, get: impl Fn(&Entries) -> Option<V>) -> Option<V> {
        let entries = self.state.read().ok()?;
        if entries.version == Some(version) {
            get(&entries)
        } else {
            None
        }
    }

    /// Marks `key` as being loaded by the caller, or, if another request is
    /// already loading it, returns what to wait on.
    fn start_loading(&self, key: (i64, EntryKey)) -> Result<Loading<'_>, watch::Receiver<()>> {
        let mut loading = self.loading.lock().unwrap_or_else(PoisonError::into_inner);
        match loading.entry(key) {
            Entry::Occupied(entry) => Err(entry.get().clone()),
            Entry::Vacant(entry) => {
                let key = entry.key().clone();
                let (done, load_done) = watch::channel(());
                entry.insert(load_done);
                Ok(Loading {
                    loading: &self.loading,
                    key,
                    _done: done,
                })
            }
        }
    }

    /// Keeps an entry loaded under `version`.
    fn keep<V>(&self, version: i64, put: impl FnOnce(&mut Entries, V), loaded: V) {
        let Ok(mut entries) = self.state.write() else {
            return;
        };
        if entries.version != Some(version) || entries.len() >= MAX_ENTRIES {
            // A newer version (or an older request) starts afresh; a
            // request that read an older version must not fill the cache.
            if entries.version.is_some_and(|current| current > version) {
                return;
            }
            *entries = Entries {
                version: Some(version),
                ..Entries::default()
            };
        }
        put(&mut entries, loaded);
    }

    pub async fn tenant_by_name(
        &self,
        store: &dyn Store,
        name: &str,
    ) -> StoreResult<Option<Tenant>> {
        self.cached(
            || EntryKey::Tenant(name.to_owned()),
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
            || EntryKey::Client(key.0, key.1.clone()),
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
                || EntryKey::Keys(tenant.0),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tessera_store::StoreError;
    use tokio::sync::Semaphore;
    use tokio::task::JoinHandle;

    type Lookup = JoinHandle<StoreResult<Option<Tenant>>>;

    /// A cache whose loads of tenant "t" are counted and held at `gate`
    /// until the test lets them through, one per permit. The first load
    /// behaves as `first` says.
    struct Fixture {
        cache: ConfigCache,
        loads: AtomicUsize,
        gate: Semaphore,
        first: FirstLoad,
    }

    #[derive(PartialEq)]
    enum FirstLoad {
        Succeeds,
        Fails,
        /// Never ends, as on a connection that stopped answering.
        Hangs,
    }

    impl Fixture {
        fn new(first: FirstLoad) -> Arc<Self> {
            Arc::new(Fixture {
                cache: ConfigCache::default(),
                loads: AtomicUsize::new(0),
                gate: Semaphore::new(0),
                first,
            })
        }

        /// Looks up tenant "t" under configuration version 1, in a task.
        fn spawn_lookup(self: &Arc<Self>) -> Lookup {
            let fixture = self.clone();
            tokio::spawn(CONFIG_VERSION.scope(1, async move {
                let fixture = &fixture;
                fixture
                    .cache
                    .cached(
                        || EntryKey::Tenant("t".to_owned()),
                        |e| e.tenants.get("t").cloned(),
                        |e, v| {
                            e.tenants.insert("t".to_owned(), v);
                        },
                        || async move {
                            let first = fixture.loads.fetch_add(1, Ordering::SeqCst) == 0;
                            if first && fixture.first == FirstLoad::Hangs {
                                std::future::pending::<()>().await;
                            }
                            // Each permit lets one load through.
                            fixture.gate.acquire().await.expect("gate open").forget();
                            if first && fixture.first == FirstLoad::Fails {
                                return Err(StoreError::Unavailable("test".to_owned()));
                            }
                            Ok(None)
                        },
                    )
                    .await
            }))
        }

        /// A lookup that misses and loads, then one that waits for it.
        async fn loader_and_waiter(self: &Arc<Self>) -> (Lookup, Lookup) {
            let loader = self.spawn_lookup();
            let_tasks_run().await;
            let waiter = self.spawn_lookup();
            let_tasks_run().await;
            assert_eq!(self.loads(), 1);
            (loader, waiter)
        }

        fn loads(&self) -> usize {
            self.loads.load(Ordering::SeqCst)
        }
    }

    /// Lets every spawned task run until it waits (the test runtime has one
    /// thread).
    async fn let_tasks_run() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// The answer of a lookup. The tests run on a paused clock, which moves
    /// only when every task waits on a timer: a waiter that was never woken
    /// would reach this shorter timeout before its own wait ran out.
    async fn answer(task: Lookup) -> StoreResult<Option<Tenant>> {
        tokio::time::timeout(LONGEST_WAIT_FOR_LOAD / 2, task)
            .await
            .expect("a waiting lookup was never woken")
            .expect("the lookup task panicked")
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_that_miss_at_once_share_one_load() {
        let fixture = Fixture::new(FirstLoad::Succeeds);
        let lookups: Vec<_> = (0..8).map(|_| fixture.spawn_lookup()).collect();
        let_tasks_run().await;
        assert_eq!(fixture.loads(), 1, "one load while it is on its way");

        fixture.gate.add_permits(1);
        for lookup in lookups {
            assert!(matches!(answer(lookup).await, Ok(None)));
        }
        assert_eq!(fixture.loads(), 1);
        // And the entry is kept.
        assert!(matches!(answer(fixture.spawn_lookup()).await, Ok(None)));
        assert_eq!(fixture.loads(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_load_lets_the_waiting_lookups_load() {
        let fixture = Fixture::new(FirstLoad::Succeeds);
        let (loader, waiter) = fixture.loader_and_waiter().await;

        // The loader's request goes away (the client hung up) mid-load.
        loader.abort();
        fixture.gate.add_permits(1);
        assert!(matches!(answer(waiter).await, Ok(None)));
        assert_eq!(fixture.loads(), 2, "the waiter loaded for itself");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_load_fails_only_its_own_lookup() {
        let fixture = Fixture::new(FirstLoad::Fails);
        let (loader, waiter) = fixture.loader_and_waiter().await;

        fixture.gate.add_permits(2);
        assert!(matches!(
            answer(loader).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(answer(waiter).await, Ok(None)));
        assert_eq!(fixture.loads(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_failed_load_the_next_lookups_share_one_load() {
        let fixture = Fixture::new(FirstLoad::Fails);
        let loader = fixture.spawn_lookup();
        let_tasks_run().await;
        fixture.gate.add_permits(1);
        assert!(answer(loader).await.is_err());

        let lookups: Vec<_> = (0..3).map(|_| fixture.spawn_lookup()).collect();
        let_tasks_run().await;
        assert_eq!(fixture.loads(), 2, "one new load for the three lookups");
        fixture.gate.add_permits(1);
        for lookup in lookups {
            assert!(matches!(answer(lookup).await, Ok(None)));
        }
    }

    /// A load that never ends holds up the lookups waiting for it only so
    /// long; then each loads for itself. (Tokio's clock is paused: it
    /// jumps to the next timer when every task waits.)
    #[tokio::test(start_paused = true)]
    async fn a_hung_load_holds_up_the_waiting_lookups_only_so_long() {
        let fixture = Fixture::new(FirstLoad::Hangs);
        let (_hung, waiter) = fixture.loader_and_waiter().await;

        fixture.gate.add_permits(1);
        let answer = tokio::time::timeout(LONGEST_WAIT_FOR_LOAD * 2, waiter)
            .await
            .expect("the waiter waited for the hung load")
            .expect("the lookup task panicked");
        assert!(matches!(answer, Ok(None)));
        assert_eq!(fixture.loads(), 2, "the waiter loaded for itself");
    }
}
