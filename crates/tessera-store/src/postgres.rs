//! The PostgreSQL backend, for several Tessera nodes sharing one database.
//! Most queries are shared with SQLite in `sql.rs`; token writes and token
//! reads are batched here (`batch`, `token_reads`).

use std::str::FromStr;
use std::sync::Arc;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::PoolSettings;
use crate::shared_read::SharedRead;

pub(crate) mod batch;
mod drain_queue;
#[cfg(test)]
mod test_support;
mod token_reads;

/// Tessera's storage in a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// The configuration version, read on every request: one read serves
    /// all the requests that arrived before it was sent.
    version: Arc<SharedRead<i64, StoreError>>,
    /// Does token writes, many per transaction.
    writes: Arc<batch::WriteBatch>,
    /// Reads tokens by hash or `jti`, many per query.
    token_reads: Arc<token_reads::TokenReads>,
}

/// A pooled connection idle for this long is pinged before it is handed out.
const PING_WHEN_IDLE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// A query of the hot path (the configuration version, a batch of writes, a
/// round of token reads) that has not answered by then is taken as stuck: a
/// connection that stopped answering, say. Its callers hear `Unavailable`
/// (`503`), and the node's later queries go on without it instead of
/// queueing behind it. sqlx gives the connection back to the pool once the
/// query in flight has ended; a dead one keeps its place in the pool until
/// the operating system gives up on it.
const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// The outcome of `query`, or `Unavailable` if it has not answered within
/// `limit` (see [`STUCK_AFTER`]).
async fn answered_within<T, E: Into<StoreError>>(
    limit: std::time::Duration,
    query: impl std::future::Future<Output = Result<T, E>>,
) -> StoreResult<T> {
    match tokio::time::timeout(limit, query).await {
        Ok(outcome) => outcome.map_err(Into::into),
        Err(_) => Err(StoreError::Unavailable(
            "the database did not answer in time".into(),
        )),
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/database`, with any
    /// libpq-style parameters sqlx accepts, such as
    /// `?options=-c%20search_path%3Dtessera`) and applies the migrations.
    pub async fn connect(url: &str, pool: &PoolSettings) -> StoreResult<Self> {
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Internal(format!("invalid database URL: {e}")))?;
        // Named for pg_stat_activity, unless the URL names it.
        if options.get_application_name().is_none() {
            options = options.application_name("tessera");
        }
        let pool = PgPoolOptions::new()
            .max_connections(pool.max_connections.max(1))
            .acquire_timeout(pool.acquire_timeout)
            // A connection the server dropped (restart, pg_terminate_backend)
            // while it sat idle is noticed and replaced before it is handed
            // out. One in steady use is not pinged first: that would be a
            // round trip on every request. If it was dropped, its request
            // fails cleanly (503) and sqlx closes it.
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_WHEN_IDLE_FOR {
                        sqlx::Connection::ping(connection).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await?;
        // sqlx holds a PostgreSQL advisory lock while it migrates, so nodes
        // starting at once apply each migration exactly once.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresStore {
            writes: batch::WriteBatch::new(pool.clone()),
            token_reads: token_reads::TokenReads::new(pool.clone()),
            pool,
            version: Arc::new(SharedRead::new()),
        })
    }
}

impl PostgresStore {
    /// A pooled connection: PostgreSQL's row locks let writers run side by side.
    async fn write(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        Ok(self.pool.acquire().await?)
    }

    /// Token writes go to the write batch, which commits many at once.
    async fn group_write(
        &self,
        work: crate::group_commit::Work,
    ) -> StoreResult<crate::group_commit::Done> {
        self.writes.write(work).await
    }

    /// Its batches end with their queues; nothing runs in the background.
    async fn close_background_work(&self) {}

    async fn read_config_version(&self) -> StoreResult<i64> {
        self.version
            .get(|| async {
                let read = sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
                    .fetch_one(&self.pool);
                answered_within(STUCK_AFTER, read).await
            })
            .await
    }

    async fn read_refresh_token(
        &self,
        tenant: TenantId,
        token_hash: &SecretHash,
    ) -> StoreResult<Option<RefreshTokenRecord>> {
        self.token_reads.refresh_token(tenant, token_hash).await
    }

    async fn read_access_token_by_hash(
        &self,
        tenant: TenantId,
        token_hash: &SecretHash,
    ) -> StoreResult<Option<AccessTokenRecord>> {
        self.token_reads
            .access_token_by_hash(tenant, token_hash)
            .await
    }

    async fn read_access_token_by_jti(
        &self,
        tenant: TenantId,
        jti: &str,
    ) -> StoreResult<Option<AccessTokenRecord>> {
        self.token_reads.access_token_by_jti(tenant, jti).await
    }
}

crate::sql::sql_store!(PostgresStore, sqlx::Postgres);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::test_support::Schema;

    /// A version read that does not answer (here, the table is locked)
    /// fails as unavailable instead of holding up every request of the
    /// node, and the next read, once the database answers, succeeds.
    #[tokio::test]
    async fn a_stuck_version_read_fails_and_the_next_one_succeeds() {
        let schema = Schema::new().await;
        let store = PostgresStore::connect(&schema.url, &PoolSettings::default())
            .await
            .unwrap();
        let mut locker = schema.pool.begin().await.unwrap();
        sqlx::query("LOCK TABLE config_version IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *locker)
            .await
            .unwrap();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            store.read_config_version(),
        );
        assert!(matches!(
            read.await.expect("the read never gave up"),
            Err(StoreError::Unavailable(_))
        ));
        locker.rollback().await.unwrap();
        assert!(store.read_config_version().await.is_ok());
        store.pool.close().await;
        schema.drop().await;
    }
}
