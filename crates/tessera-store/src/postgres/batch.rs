//! Group commit for PostgreSQL's token inserts: the records of issued
//! tokens (opaque access tokens, new grants' refresh tokens).
//!
//! Stored one by one, each token is a statement and a commit: a round trip
//! through the pool and a WAL flush, and the pool's connections bound how
//! many are in flight. Here the tokens queued while the previous insert ran
//! are stored by one statement, `INSERT ... SELECT FROM UNNEST(...)` for
//! each table inside one `WITH`, which commits them together. A statement
//! is atomic, so a grant's access and refresh records are stored together
//! or not at all. Should the statement fail (a client deleted meanwhile,
//! say), each grant of the batch is stored again on its own, so that only
//! the failing one fails. A caller hears of success only after the commit.
//!
//! No task runs while nothing is queued: the caller that finds the queue
//! idle spawns the task that drains it, on its own runtime, and the task
//! ends when the queue is empty. A caller that gives up waiting does not
//! stop the write, as with any other write already sent.

use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tessera_core::{AccessTokenRecord, RefreshTokenRecord};
use tokio::sync::oneshot;

use crate::{StoreError, StoreResult};

/// Grants stored by one statement at most.
const MAX_BATCH: usize = 512;

/// Both inserts of `sql.rs`'s `insert_access` and `insert_refresh`, for
/// arrays of rows: one element per record, `NULL` where a field is absent.
const INSERT_TOKENS: &str = "\
WITH access AS (
    INSERT INTO access_tokens (jti, token_hash, tenant_id, client_id, user_id, scope, audiences,
        auth_time, issued_at, expires_at, family_id)
    SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::bigint[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[])
    ON CONFLICT (jti) DO NOTHING
), refresh AS (
    INSERT INTO refresh_tokens (token_hash, family_id, tenant_id, client_id, user_id, scope,
        auth_time, issued_at, expires_at)
    SELECT * FROM UNNEST($12::bytea[], $13::text[], $14::bigint[], $15::text[], $16::text[],
        $17::text[], $18::bigint[], $19::bigint[], $20::bigint[])
)
SELECT 1";

/// The records of one grant, and who waits for them.
struct Grant {
    access: Option<AccessTokenRecord>,
    refresh: Option<RefreshTokenRecord>,
    reply: oneshot::Sender<StoreResult<()>>,
}

#[derive(Default)]
struct Queue {
    grants: Vec<Grant>,
    /// Whether a task is draining the queue.
    draining: bool,
}

/// Stores the records of issued tokens, many grants per statement.
#[derive(Debug)]
pub(crate) struct TokenBatch {
    pool: PgPool,
    queue: Mutex<Queue>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("grants", &self.grants.len())
            .field("draining", &self.draining)
            .finish()
    }
}

impl TokenBatch {
    pub(crate) fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(TokenBatch {
            pool,
            queue: Mutex::new(Queue::default()),
        })
    }

    /// Stores the records of one grant, with whatever else is queued.
    pub(crate) async fn put(
        self: &Arc<Self>,
        access: Option<&AccessTokenRecord>,
        refresh: Option<&RefreshTokenRecord>,
    ) -> StoreResult<()> {
        if access.is_none() && refresh.is_none() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.lock();
            queue.grants.push(Grant {
                access: access.cloned(),
                refresh: refresh.cloned(),
                reply,
            });
            !std::mem::replace(&mut queue.draining, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).drain());
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Internal(
                "the token batch stopped before storing this grant".into(),
            ))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue holds no invariant a panic could break halfway.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores batches until the queue is empty.
    async fn drain(self: Arc<Self>) {
        let mut exit = IdleOnExit {
            batch: &self,
            armed: true,
        };
        loop {
            let grants = {
                let mut queue = self.lock();
                if queue.grants.is_empty() {
                    queue.draining = false;
                    exit.armed = false;
                    return;
                }
                let taken = queue.grants.len().min(MAX_BATCH);
                let rest = queue.grants.split_off(taken);
                std::mem::replace(&mut queue.grants, rest)
            };
            self.store(grants).await;
        }
    }

    /// Stores `grants` together, or, if that fails, each on its own.
    async fn store(&self, grants: Vec<Grant>) {
        let together = insert(&self.pool, &grants).await;
        if together.is_ok() || grants.len() == 1 {
            for grant in grants {
                let _ = grant.reply.send(together.clone());
            }
            return;
        }
        for grant in grants {
            let alone = insert(&self.pool, std::slice::from_ref(&grant)).await;
            let _ = grant.reply.send(alone);
        }
    }
}

/// Marks the queue idle if the draining task ends before it is empty: by a
/// panic, or dropped with its runtime.
struct IdleOnExit<'a> {
    batch: &'a TokenBatch,
    armed: bool,
}

impl Drop for IdleOnExit<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut queue = self.batch.lock();
            queue.draining = false;
            // Their callers hear of the failure rather than wait for the
            // next caller to start a task.
            queue.grants.clear();
        }
    }
}

/// One statement that stores every record of `grants`.
async fn insert(pool: &PgPool, grants: &[Grant]) -> StoreResult<()> {
    let access: Vec<&AccessTokenRecord> = grants.iter().filter_map(|g| g.access.as_ref()).collect();
    let refresh: Vec<&RefreshTokenRecord> =
        grants.iter().filter_map(|g| g.refresh.as_ref()).collect();
    fn column<'a, R, T>(records: &[&'a R], field: impl Fn(&'a R) -> T) -> Vec<T> {
        records.iter().map(|record| field(record)).collect()
    }
    sqlx::query(INSERT_TOKENS)
        .bind(column(&access, |t| t.jti.clone()))
        .bind(column(&access, |t| {
            t.token_hash.as_ref().map(|h| h.0.clone())
        }))
        .bind(column(&access, |t| t.tenant_id.0))
        .bind(column(&access, |t| t.client_id.as_str().to_owned()))
        .bind(column(&access, |t| t.user_id.clone()))
        .bind(column(&access, |t| t.scope.to_string()))
        .bind(column(&access, |t| super::to_json(&t.audiences)))
        .bind(column(&access, |t| t.auth_time.map(|a| a.0)))
        .bind(column(&access, |t| t.issued_at.0))
        .bind(column(&access, |t| t.expires_at.0))
        .bind(column(&access, |t| t.family_id.clone()))
        .bind(column(&refresh, |t| t.token_hash.0.clone()))
        .bind(column(&refresh, |t| t.family_id.clone()))
        .bind(column(&refresh, |t| t.tenant_id.0))
        .bind(column(&refresh, |t| t.client_id.as_str().to_owned()))
        .bind(column(&refresh, |t| t.user_id.clone()))
        .bind(column(&refresh, |t| t.scope.to_string()))
        .bind(column(&refresh, |t| t.auth_time.map(|a| a.0)))
        .bind(column(&refresh, |t| t.issued_at.0))
        .bind(column(&refresh, |t| t.expires_at.0))
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use tessera_core::secret::SecretHash;
    use tessera_core::{ClientId, ScopeSet, TenantId, UnixTime};

    use super::*;

    /// A schema of its own on the test server (`TESSERA_TEST_POSTGRES_URL`,
    /// by default the local one every development and CI machine runs),
    /// migrated, with tenant 1 and its client `client`; dropped by `drop`.
    struct Schema {
        admin: String,
        name: String,
        pool: PgPool,
    }

    impl Schema {
        async fn new() -> Schema {
            let admin = std::env::var("TESSERA_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let name = format!("test_batch_{}_{nanos}", std::process::id());
            let pool = PgPool::connect(&admin)
                .await
                .expect("PostgreSQL must run on 127.0.0.1:5432 (see README)");
            sqlx::query(&format!("CREATE SCHEMA {name}"))
                .execute(&pool)
                .await
                .unwrap();
            let url = format!("{admin}?options=-c%20search_path%3D{name}");
            let store = crate::PostgresStore::connect(&url, &crate::PoolSettings::default())
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO tenants (name, access_token_ttl, refresh_token_ttl, \
                 authorization_code_ttl, created_at) VALUES ('t', 60, 60, 60, 0)",
            )
            .execute(&store.pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO clients (client_id, tenant_id, name, auth_method, grant_types, \
                 redirect_uris, audiences, token_format, created_at) \
                 SELECT 'client', id, 'c', 'none', '', '[]', '[]', 'opaque', 0 FROM tenants",
            )
            .execute(&store.pool)
            .await
            .unwrap();
            Schema {
                admin,
                name,
                pool: store.pool,
            }
        }

        async fn count(&self, table: &str) -> i64 {
            sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&self.pool)
                .await
                .unwrap()
        }

        async fn drop(self) {
            self.pool.close().await;
            let admin = PgPool::connect(&self.admin).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
                .execute(&admin)
                .await
                .unwrap();
        }
    }

    fn tenant() -> TenantId {
        TenantId(1)
    }

    fn access(n: u8, client: &str) -> AccessTokenRecord {
        AccessTokenRecord {
            token_hash: Some(SecretHash(vec![n; 32])),
            jti: format!("jti-{n}"),
            tenant_id: tenant(),
            client_id: ClientId::new(client),
            user_id: None,
            scope: ScopeSet::parse("read").unwrap(),
            audiences: vec!["api".into()],
            auth_time: None,
            issued_at: UnixTime(1),
            expires_at: UnixTime(1_000),
            family_id: Some(format!("family-{n}")),
            revoked: false,
        }
    }

    fn refresh(n: u8, client: &str) -> RefreshTokenRecord {
        RefreshTokenRecord {
            token_hash: SecretHash(vec![n; 32]),
            family_id: format!("family-{n}"),
            tenant_id: tenant(),
            client_id: ClientId::new(client),
            user_id: None,
            scope: ScopeSet::parse("read").unwrap(),
            auth_time: None,
            issued_at: UnixTime(1),
            expires_at: UnixTime(1_000),
            spent: false,
        }
    }

    /// Queues grants without starting a task, so that the test decides what
    /// one batch holds.
    fn queue(
        batch: &TokenBatch,
        access: Option<AccessTokenRecord>,
        refresh: Option<RefreshTokenRecord>,
    ) -> oneshot::Receiver<StoreResult<()>> {
        let (reply, answer) = oneshot::channel();
        let mut queue = batch.lock();
        queue.draining = true;
        queue.grants.push(Grant {
            access,
            refresh,
            reply,
        });
        answer
    }

    /// The grants of one batch are stored together; one that cannot be
    /// stored (its client is gone) fails alone, with both its records, and
    /// the others are stored.
    #[tokio::test]
    async fn a_failing_grant_fails_alone_and_its_batch_is_stored() {
        let schema = Schema::new().await;
        let batch = TokenBatch::new(schema.pool.clone());
        let answers = vec![
            queue(
                &batch,
                Some(access(1, "client")),
                Some(refresh(1, "client")),
            ),
            queue(&batch, Some(access(2, "client")), None),
            queue(&batch, Some(access(3, "gone")), Some(refresh(3, "client"))),
            queue(&batch, None, Some(refresh(4, "client"))),
        ];
        Arc::clone(&batch).drain().await;
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await.unwrap());
        }
        assert!(outcomes[0].is_ok() && outcomes[1].is_ok() && outcomes[3].is_ok());
        assert!(
            matches!(outcomes[2], Err(StoreError::NotFound)),
            "{outcomes:?}"
        );
        assert_eq!(schema.count("access_tokens").await, 2);
        // The failing grant's refresh record, valid on its own, is not stored.
        assert_eq!(schema.count("refresh_tokens").await, 2);
        let stored: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT token_hash FROM refresh_tokens ORDER BY token_hash")
                .fetch_all(&schema.pool)
                .await
                .unwrap();
        assert_eq!(stored, vec![vec![1; 32], vec![4; 32]]);
        assert!(!batch.lock().draining);
        schema.drop().await;
    }

    /// Grants put at the same time are all stored and answered, and the
    /// queue is idle afterwards; a grant put later starts a new task.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_grants_are_all_stored() {
        let schema = Schema::new().await;
        let batch = TokenBatch::new(schema.pool.clone());
        let mut puts = tokio::task::JoinSet::new();
        for n in 1..=200u8 {
            let batch = Arc::clone(&batch);
            puts.spawn(async move {
                let (access, refresh) = (access(n, "client"), refresh(n, "client"));
                batch.put(Some(&access), Some(&refresh)).await
            });
        }
        for outcome in puts.join_all().await {
            outcome.unwrap();
        }
        assert_eq!(schema.count("access_tokens").await, 200);
        assert_eq!(schema.count("refresh_tokens").await, 200);
        assert!(!batch.lock().draining);
        batch
            .put(None, Some(&refresh(201, "client")))
            .await
            .unwrap();
        assert_eq!(schema.count("refresh_tokens").await, 201);
        schema.drop().await;
    }

    /// A draining task dropped before the queue is empty (its runtime shut
    /// down) leaves the queue idle, and fails the grants it held.
    #[test]
    fn a_dropped_task_leaves_the_queue_idle() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let schema = runtime.block_on(Schema::new());
        let batch = TokenBatch::new(schema.pool.clone());
        let sent = queue(&batch, Some(access(1, "client")), None);
        // Polled once, the task has sent the first batch's statement; a
        // grant queued then waits for the next batch.
        let mut drain = Box::pin(Arc::clone(&batch).drain());
        let polled = runtime.block_on(poll_once(drain.as_mut()));
        assert!(
            polled.is_none(),
            "the statement cannot be done on the first poll"
        );
        let waiting = queue(&batch, Some(access(2, "client")), None);
        {
            // As a runtime drops its tasks: inside its context.
            let _context = runtime.enter();
            drop(drain);
        }
        assert!(!batch.lock().draining);
        assert!(batch.lock().grants.is_empty());
        assert!(runtime.block_on(sent).is_err());
        assert!(runtime.block_on(waiting).is_err());
        // The next grant starts a new task.
        let later = access(3, "client");
        runtime.block_on(batch.put(Some(&later), None)).unwrap();
        runtime.block_on(schema.drop());
    }

    /// Polls `future` once.
    async fn poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|context| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(context) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
