//! SQLite reads of the token hot path, made on the caller's own thread.
//!
//! A read through sqlx's pool is a round trip to the connection's worker
//! thread, and sqlx pings the connection again when it is given back: two
//! thread switches that cost more than the lookup itself, a primary-key read
//! of a page already in memory. These few reads (the configuration version,
//! and a token by hash or `jti`) go through read-only connections here
//! instead, each held for microseconds. WAL mode lets them read beside the
//! writer. The SQL and the row mapping repeat those of `sql.rs`, which the
//! PostgreSQL backend uses; the same tests run against both.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use tessera_core::secret::SecretHash;
use tessera_core::{AccessTokenRecord, ClientId, RefreshTokenRecord, ScopeSet, TenantId, UnixTime};

use crate::sqlite_batch::store_error;
use crate::{StoreError, StoreResult};

/// As many connections as a request thread could want at once; the runtime
/// has one worker per core.
const READERS: usize = 4;

#[derive(Debug)]
pub(crate) struct Readers {
    connections: Vec<Mutex<Connection>>,
}

impl Readers {
    pub(crate) fn open(path: &Path) -> StoreResult<Self> {
        let connections = (0..READERS)
            .map(|_| {
                let connection = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(unavailable)?;
                connection
                    .busy_timeout(Duration::from_secs(5))
                    .map_err(unavailable)?;
                Ok(Mutex::new(connection))
            })
            .collect::<StoreResult<_>>()?;
        Ok(Readers { connections })
    }

    /// A free connection, or the first one when all are taken.
    fn connection(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        for connection in &self.connections {
            if let Ok(guard) = connection.try_lock() {
                return Ok(guard);
            }
        }
        self.connections[0]
            .lock()
            .map_err(|_| StoreError::Internal("a reader panicked".into()))
    }

    pub(crate) fn config_version(&self) -> StoreResult<i64> {
        self.connection()?
            .prepare_cached("SELECT version FROM config_version WHERE id = 1")
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .map_err(unavailable)
    }

    pub(crate) fn refresh_token(
        &self,
        tenant: TenantId,
        token_hash: &SecretHash,
    ) -> StoreResult<Option<RefreshTokenRecord>> {
        self.connection()?
            .prepare_cached("SELECT * FROM refresh_tokens WHERE token_hash = ?1 AND tenant_id = ?2")
            .and_then(|mut statement| {
                statement
                    .query_row(params![token_hash.0, tenant.0], refresh_from_row)
                    .optional()
            })
            .map_err(store_error)
    }

    pub(crate) fn access_token_by_hash(
        &self,
        tenant: TenantId,
        token_hash: &SecretHash,
    ) -> StoreResult<Option<AccessTokenRecord>> {
        self.access_token(
            "SELECT * FROM access_tokens WHERE token_hash = ?1 AND tenant_id = ?2",
            &token_hash.0,
            tenant,
        )
    }

    pub(crate) fn access_token_by_jti(
        &self,
        tenant: TenantId,
        jti: &str,
    ) -> StoreResult<Option<AccessTokenRecord>> {
        self.access_token(
            "SELECT * FROM access_tokens WHERE jti = ?1 AND tenant_id = ?2",
            &jti,
            tenant,
        )
    }

    fn access_token(
        &self,
        sql: &'static str,
        value: &dyn rusqlite::ToSql,
        tenant: TenantId,
    ) -> StoreResult<Option<AccessTokenRecord>> {
        self.connection()?
            .prepare_cached(sql)
            .and_then(|mut statement| {
                statement
                    .query_row(params![value, tenant.0], access_from_row)
                    .optional()
            })
            .map_err(store_error)
    }
}

fn unavailable(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn scope_set(text: &str) -> ScopeSet {
    // Stored scopes were validated on the way in.
    ScopeSet::parse(text).unwrap_or_default()
}

fn refresh_from_row(row: &Row<'_>) -> rusqlite::Result<RefreshTokenRecord> {
    Ok(RefreshTokenRecord {
        token_hash: SecretHash(row.get("token_hash")?),
        family_id: row.get("family_id")?,
        tenant_id: TenantId(row.get("tenant_id")?),
        client_id: ClientId::new(row.get::<_, String>("client_id")?),
        user_id: row.get("user_id")?,
        scope: scope_set(&row.get::<_, String>("scope")?),
        auth_time: row.get::<_, Option<i64>>("auth_time")?.map(UnixTime),
        issued_at: UnixTime(row.get("issued_at")?),
        expires_at: UnixTime(row.get("expires_at")?),
        spent: row.get::<_, Option<i64>>("used_at")?.is_some()
            || row.get::<_, Option<i64>>("revoked_at")?.is_some(),
    })
}

fn access_from_row(row: &Row<'_>) -> rusqlite::Result<AccessTokenRecord> {
    Ok(AccessTokenRecord {
        token_hash: row.get::<_, Option<Vec<u8>>>("token_hash")?.map(SecretHash),
        jti: row.get("jti")?,
        tenant_id: TenantId(row.get("tenant_id")?),
        client_id: ClientId::new(row.get::<_, String>("client_id")?),
        user_id: row.get("user_id")?,
        scope: scope_set(&row.get::<_, String>("scope")?),
        audiences: serde_json::from_str(&row.get::<_, String>("audiences")?).unwrap_or_default(),
        auth_time: row.get::<_, Option<i64>>("auth_time")?.map(UnixTime),
        issued_at: UnixTime(row.get("issued_at")?),
        expires_at: UnixTime(row.get("expires_at")?),
        family_id: row.get("family_id")?,
        revoked: row.get::<_, Option<i64>>("revoked_at")?.is_some(),
    })
}
