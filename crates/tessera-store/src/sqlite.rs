//! The SQLite backend: one file, WAL journal, embedded migrations. The
//! queries are shared with PostgreSQL in `sql.rs`.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::PoolSettings;

/// Tessera's storage in one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// A read-only connection used on the caller's own thread for the one
    /// read of every request, the configuration version: a query through
    /// the pool is a round trip to the connection's worker thread, which
    /// cost more than the query itself.
    version_reader: Arc<Mutex<rusqlite::Connection>>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` — `sqlite://relative/path`
    /// or `sqlite:///absolute/path` — and applies the embedded migrations.
    pub async fn connect(url: &str, pool: &PoolSettings) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Internal(format!("invalid database URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL loses nothing on a process crash (kill -9); only
            // a power loss can drop the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(pool.max_connections.max(1))
            .acquire_timeout(pool.acquire_timeout)
            // A connection to a local file cannot be dropped by a server, so
            // skip sqlx's ping before each use: it costs a round trip to the
            // connection's worker thread per query.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let version_reader = rusqlite::Connection::open_with_flags(
            options.get_filename(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        version_reader
            .busy_timeout(Duration::from_secs(5))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(SqliteStore {
            pool,
            version_reader: Arc::new(Mutex::new(version_reader)),
        })
    }

    /// Microseconds on a local file; a writer never blocks it in WAL mode.
    async fn read_config_version(&self) -> StoreResult<i64> {
        let reader = self
            .version_reader
            .lock()
            .map_err(|_| StoreError::Internal("the version reader panicked".into()))?;
        reader
            .prepare_cached("SELECT version FROM config_version WHERE id = 1")
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}

crate::sql::sql_store!(SqliteStore, sqlx::Sqlite);
