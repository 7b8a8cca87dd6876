//! The SQLite backend: one file, WAL journal, embedded migrations. Most
//! queries are shared with PostgreSQL in `sql.rs`; the hot path's reads and
//! token writes are in `sqlite_read` and `sqlite_batch`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};

use crate::PoolSettings;
use crate::sqlite_batch::BatchWriter;
use crate::sqlite_read::Readers;

/// Tessera's storage in one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Connections for reads; WAL lets them run beside the writer.
    pool: SqlitePool,
    /// The one connection every write goes through, outside sqlx's pool.
    /// SQLite admits one writer at a time: several pooled writers would queue
    /// on its lock in its busy handler, which sleeps for milliseconds, while
    /// a mutex hands the connection over at once. And the pool would ping a
    /// connection each time it is given back, a round trip to its worker
    /// thread per write.
    writer: Arc<tokio::sync::Mutex<SqliteConnection>>,
    acquire_timeout: Duration,
    /// Group commit for the writes of token requests (`sqlite_batch`).
    batch: BatchWriter,
    /// Read-only connections for the token hot path's reads, used on the
    /// caller's own thread (`sqlite_read`).
    readers: Arc<Readers>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` — `sqlite://relative/path`
    /// or `sqlite:///absolute/path` — and applies the embedded migrations.
    pub async fn connect(url: &str, pool_settings: &PoolSettings) -> StoreResult<Self> {
        if names_no_file(url) {
            return Err(StoreError::Internal(
                "invalid database URL: an in-memory or temporary SQLite database is not \
                 supported, since each of Tessera's connections would see a different one; \
                 name a file, such as sqlite://tessera.db"
                    .into(),
            ));
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Internal(format!("invalid database URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL loses nothing on a process crash (kill -9); only
            // a power loss can drop the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // The batch writer's checkpointer does it, off the commit path.
            .pragma("wal_autocheckpoint", "0");
        let pool = SqlitePoolOptions::new()
            .max_connections(pool_settings.max_connections.max(1))
            .acquire_timeout(pool_settings.acquire_timeout)
            // A connection to a local file cannot be dropped by a server, so
            // skip sqlx's ping before each use: it costs a round trip to the
            // connection's worker thread per query.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let mut writer = SqliteConnection::connect_with(&options).await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut writer)
            .await?;
        let writer = Arc::new(tokio::sync::Mutex::new(writer));
        let batch = BatchWriter::start(
            options.get_filename(),
            writer.clone(),
            pool_settings.acquire_timeout,
        )?;
        let readers = Arc::new(Readers::open(options.get_filename())?);
        if readers.needs_first_commit() {
            // Every process start leaves the WAL-index change counter at 0,
            // where the readers cannot trust it (`sqlite_read::CommitWatch`);
            // a commit moves it. Every node reloads its configuration once.
            // Should it fail, versions are read per request until a commit.
            if let Err(error) = sqlx::query("UPDATE config_version SET version = version + 1")
                .execute(&mut *writer.lock().await)
                .await
            {
                tracing::warn!(%error, "cannot move the WAL-index change counter");
            }
        }
        Ok(SqliteStore {
            pool,
            writer,
            acquire_timeout: pool_settings.acquire_timeout,
            batch,
            readers,
        })
    }

    /// Token writes go to the batch thread, which commits many at once.
    async fn group_write(
        &self,
        work: crate::group_commit::Work,
    ) -> StoreResult<crate::group_commit::Done> {
        self.batch.write(work).await
    }

    /// The writer connection, once the writes before this one are done.
    async fn write(&self) -> StoreResult<tokio::sync::MutexGuard<'_, SqliteConnection>> {
        tokio::time::timeout(self.acquire_timeout, self.writer.lock())
            .await
            .map_err(|_| {
                StoreError::Unavailable("timed out waiting for the database writer".into())
            })
    }

    /// A last, complete checkpoint (see `Store::close`).
    async fn close_background_work(&self) {
        self.batch.stop_checkpointer().await;
    }

    /// Microseconds on a local file; a writer never blocks it in WAL mode.
    async fn read_config_version(&self) -> StoreResult<i64> {
        self.readers.config_version()
    }

    async fn read_refresh_token(
        &self,
        tenant: TenantId,
        token_hash: &SecretHash,
    ) -> StoreResult<Option<RefreshTokenRecord>> {
        self.readers.refresh_token(tenant, token_hash)
    }

    async fn read_access_token_by_hash(
        &self,
        tenant: TenantId,
        token_hash: &SecretHash,
    ) -> StoreResult<Option<AccessTokenRecord>> {
        self.readers.access_token_by_hash(tenant, token_hash)
    }

    async fn read_access_token_by_jti(
        &self,
        tenant: TenantId,
        jti: &str,
    ) -> StoreResult<Option<AccessTokenRecord>> {
        self.readers.access_token_by_jti(tenant, jti)
    }
}

crate::sql::sql_store!(SqliteStore, sqlx::Sqlite);

/// Whether `url` names no file: an in-memory database (`:memory:`,
/// `file::memory:`, `mode=memory`) or, with an empty path, SQLite's
/// temporary one. The batch thread and the readers open the database by its
/// file name (rusqlite), apart from sqlx's pool: each would get its own.
fn names_no_file(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    path.is_empty()
        || path.contains(":memory:")
        || query.split('&').any(|pair| pair == "mode=memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    /// A closed store leaves an empty WAL, whatever it wrote.
    #[tokio::test]
    async fn close_leaves_an_empty_wal() {
        let dir = std::env::temp_dir().join(format!("tessera-close-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let url = format!("sqlite://{}", path.display());
        let store = SqliteStore::connect(&url, &PoolSettings::default())
            .await
            .unwrap();
        for n in 0..50 {
            store
                .replace_server_secret(&format!("secret-{n}"), &[n; 32])
                .await
                .unwrap();
        }
        let wal = dir.join("t.db-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        store.close().await;
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_database_without_a_file_is_refused_with_a_reason() {
        for url in [
            "sqlite::memory:",
            "sqlite://tessera?mode=memory&cache=shared",
            "sqlite:file::memory:?cache=shared",
            "sqlite://",
            "sqlite:",
        ] {
            let refused = SqliteStore::connect(url, &PoolSettings::default()).await;
            assert!(
                matches!(&refused, Err(StoreError::Internal(why)) if why.contains("in-memory")),
                "{url}"
            );
        }
        for url in [
            "sqlite://memory.db",
            "sqlite:///var/lib/tessera/db?mode=rwc",
            "sqlite:tessera.db",
        ] {
            assert!(!names_no_file(url), "{url}");
        }
    }
}
