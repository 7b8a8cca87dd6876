//! SQLite reads of the token hot path, made on the caller's own thread.
//!
//! A read through sqlx's pool is a round trip to the connection's worker
//! thread, and sqlx pings the connection again when it is given back: two
//! thread switches that cost more than the lookup itself, a primary-key read
//! of a page already in memory. These few reads (the configuration version,
//! and a token by hash or `jti`) go through read-only connections here
//! instead, each held for microseconds. WAL mode lets them read beside the
//! writer. The row mapping repeats that of `sql.rs`, which the PostgreSQL
//! backend uses; the same tests run against both.
//!
//! The configuration version, read on every request, is read again only
//! when some transaction has committed since the last read, which
//! [`CommitWatch`] tells without a read transaction.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use tessera_core::pkce::CodeChallenge;
use tessera_core::secret::SecretHash;
use tessera_core::{
    AccessTokenRecord, AuthorizationCode, ClientId, RedirectUri, RefreshTokenRecord, ScopeSet,
    TenantId, UnixTime,
};

use crate::sqlite_batch::store_error;
use crate::{StoreError, StoreResult};

/// As many connections as a request thread could want at once; the runtime
/// has one worker per core.
const READERS: usize = 4;

#[derive(Debug)]
pub(crate) struct Readers {
    connections: Vec<Mutex<Connection>>,
    /// `None` when the `-shm` file cannot be read: every version is then read.
    commits: Option<CommitWatch>,
    /// The configuration version last read, with the WAL-index header seen
    /// just before that read.
    last_version: Mutex<Option<(WalIndexHeader, i64)>>,
}

impl Readers {
    pub(crate) fn open(path: &Path) -> StoreResult<Self> {
        let connections: Vec<Mutex<Connection>> = (0..READERS)
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
        // SQLite names the `-shm` file after the path it resolved (symbolic
        // links followed), which may not be the one it was given.
        let commits = connections[0]
            .lock()
            .ok()
            .and_then(|connection| connection.path().map(|p| p.to_owned()))
            .and_then(|resolved| CommitWatch::open(Path::new(&resolved)));
        if commits.is_none() {
            tracing::debug!("no readable -shm file: the configuration version is read per request");
        }
        Ok(Readers {
            connections,
            commits,
            last_version: Mutex::new(None),
        })
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

    /// True when the WAL-index header cannot be trusted yet (see
    /// [`CommitWatch::header`]) and a commit would make it so.
    pub(crate) fn needs_first_commit(&self) -> bool {
        self.commits
            .as_ref()
            .is_some_and(|commits| commits.header().is_none())
    }

    /// The configuration version, as of a moment after this call began.
    pub(crate) fn config_version(&self) -> StoreResult<i64> {
        let header = self.commits.as_ref().and_then(CommitWatch::header);
        if let Some(header) = header
            && let Ok(last) = self.last_version.try_lock()
            && let Some((seen, version)) = *last
            && seen == header
        {
            // Nothing has committed since before `version` was read.
            return Ok(version);
        }
        let version = self.read_config_version()?;
        if let Some(header) = header
            && let Ok(mut last) = self.last_version.try_lock()
        {
            // `header` was read first: a commit between the two reads makes
            // the next header differ from it, and that request reads again.
            *last = Some((header, version));
        }
        Ok(version)
    }

    fn read_config_version(&self) -> StoreResult<i64> {
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

/// The WAL-index header: the first 48 bytes of the `-shm` file.
type WalIndexHeader = [u8; 48];

/// Tells whether any transaction has committed, without a read transaction.
///
/// Every commit that changes a WAL database, from any process, rewrites the
/// WAL-index header at the start of its `-shm` file with a new change
/// counter and checksum (<https://sqlite.org/walformat.html>, "The WAL-Index Header").
/// Reading it is one `pread`. A read transaction takes and releases locks on
/// that file with `fcntl`, and under load the reader threads queued on
/// SQLite's mutex around those calls: a fifth of scenario 1's throughput.
#[derive(Debug)]
struct CommitWatch {
    /// Never closed: closing any descriptor of a file drops every POSIX lock
    /// the process holds on that file (fcntl(2)), SQLite's locks on the
    /// `-shm` file included, while the process's connections rely on them.
    /// One descriptor per store opened in the process's life.
    shm: &'static File,
}

impl CommitWatch {
    /// Opens the `-shm` file of the database file at `path` (as SQLite
    /// resolved it), which exists once a connection has opened the database
    /// in WAL mode.
    fn open(path: &Path) -> Option<Self> {
        let mut name = path.as_os_str().to_owned();
        name.push("-shm");
        let shm = File::open(name).ok()?;
        Some(CommitWatch {
            shm: Box::leak(Box::new(shm)),
        })
    }

    /// The current header; `None` while a writer is rewriting it, when it
    /// awaits recovery after a crash, or while its change counter or both
    /// its salts are 0.
    ///
    /// Recovery rebuilds the header from the WAL file alone, with a change
    /// counter of 0; from an empty WAL, with every field 0, as every process
    /// start also leaves it. A connection that has restarted the WAL before
    /// then writes the next WAL with salts of 0 (only a connection's first
    /// WAL draws random salts), so after two such recoveries the same
    /// commits give the same headers again, whatever changed in between.
    /// Those headers are never trusted. Any other header never repeats: the
    /// counter or the frame count grows with every commit, and each restart
    /// of the WAL moves the first salt and draws the second.
    fn header(&self) -> Option<WalIndexHeader> {
        // The header is stored twice: a writer writes the second copy, then
        // the first. Equal copies are a header no writer was changing.
        let mut copies = [0u8; 96];
        self.shm.read_exact_at(&mut copies, 0).ok()?;
        let (first, second) = copies.split_at(48);
        let initialised = first[12] == 1;
        let change_counter = &first[8..12];
        let salts = &first[32..40];
        if !initialised || change_counter == [0; 4] || salts == [0; 8] || first != second {
            return None;
        }
        first.try_into().ok()
    }
}

fn unavailable(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn scope_set(text: &str) -> ScopeSet {
    // Stored scopes were validated on the way in.
    ScopeSet::parse(text).unwrap_or_default()
}

pub(crate) fn refresh_from_row(row: &Row<'_>) -> rusqlite::Result<RefreshTokenRecord> {
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

/// An authorization code and whether it was used.
pub(crate) fn code_from_row(row: &Row<'_>) -> rusqlite::Result<(AuthorizationCode, bool)> {
    let code = AuthorizationCode {
        code_hash: SecretHash(row.get("code_hash")?),
        tenant_id: TenantId(row.get("tenant_id")?),
        client_id: ClientId::new(row.get::<_, String>("client_id")?),
        user_id: row.get("user_id")?,
        redirect_uri: RedirectUri::from_stored(row.get("redirect_uri")?),
        redirect_uri_in_request: row.get("redirect_uri_in_request")?,
        scope: scope_set(&row.get::<_, String>("scope")?),
        code_challenge: row
            .get::<_, Option<String>>("code_challenge")?
            .map(CodeChallenge::from_stored),
        auth_time: UnixTime(row.get("auth_time")?),
        expires_at: UnixTime(row.get("expires_at")?),
        family_id: row.get("family_id")?,
    };
    Ok((code, row.get::<_, Option<i64>>("used_at")?.is_some()))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A database with Tessera's schema and an open store, in a directory
    /// removed on drop.
    async fn migrated_database() -> (tempfile::TempDir, std::path::PathBuf, Arc<dyn crate::Store>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read.db");
        let url = format!("sqlite://{}", path.display());
        let store = crate::connect(&url, &crate::PoolSettings::default())
            .await
            .unwrap();
        (dir, path, store)
    }

    /// Checkpoints everything and empties the WAL, which restarts it.
    fn truncate_wal(connection: &Connection) {
        let busy: i64 = connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
            .unwrap();
        assert_eq!(busy, 0, "the WAL is empty");
    }

    /// Another process's changes, here another connection's, are seen by
    /// the very next read; without changes the header does not move.
    #[tokio::test]
    async fn the_version_follows_every_commit_of_another_connection() {
        let (_dir, path, _store) = migrated_database().await;
        let readers = Readers::open(&path).unwrap();
        let watch = readers.commits.as_ref().expect("a readable -shm file");
        let other = Connection::open(&path).unwrap();
        other
            .execute("CREATE TABLE scratch (round INTEGER)", [])
            .unwrap();

        let mut expected = readers.config_version().unwrap();
        let mut header = watch.header().expect("an initialised header");
        for round in 0..50 {
            assert_eq!(readers.config_version().unwrap(), expected);
            assert_eq!(watch.header(), Some(header), "a read changes nothing");

            if round % 2 == 0 {
                other
                    .execute("UPDATE config_version SET version = version + 1", [])
                    .unwrap();
                expected += 1;
            } else {
                // A commit that leaves the version alone.
                other
                    .execute("INSERT INTO scratch (round) VALUES (?1)", [round])
                    .unwrap();
            }
            let moved = watch.header().expect("an initialised header");
            assert_ne!(moved, header, "every change rewrites the header");
            header = moved;
            assert_eq!(readers.config_version().unwrap(), expected);
        }
    }

    /// The `-shm` file is the one SQLite uses, next to the file a symbolic
    /// link points to, even when a stale one lies next to the link.
    #[tokio::test]
    async fn the_watched_shm_file_is_the_one_sqlite_uses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("volume")).unwrap();
        let real = dir.path().join("volume/real.db");
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let url = format!("sqlite://{}", link.display());
        let _store = crate::connect(&url, &crate::PoolSettings::default())
            .await
            .unwrap();
        // A stale copy of a valid header where a careless reader would look.
        std::fs::copy(
            dir.path().join("volume/real.db-shm"),
            dir.path().join("link.db-shm"),
        )
        .unwrap();
        let readers = Readers::open(&link).unwrap();
        let other = Connection::open(&real).unwrap();

        let before = readers.config_version().unwrap();
        other
            .execute("UPDATE config_version SET version = version + 1", [])
            .unwrap();
        assert_eq!(readers.config_version().unwrap(), before + 1);
    }

    /// After a crash, recovery rebuilds the header with a change counter of
    /// 0, the same bytes each time for an empty WAL, and a connection that
    /// restarted the WAL before writes the next one with salts of 0: such
    /// headers are not trusted, and the version is read.
    #[tokio::test]
    async fn a_recovered_header_is_not_trusted() {
        let (dir, path, _store) = migrated_database().await;
        let readers = Readers::open(&path).unwrap();
        let watch = readers.commits.as_ref().unwrap();
        let other = Connection::open(&path).unwrap();
        let version = readers.config_version().unwrap();
        assert!(watch.header().is_some());

        truncate_wal(&other);
        // A writer killed while writing the first copy of the header.
        let shm = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("read.db-shm"))
            .unwrap();
        shm.write_all_at(&[0xff; 4], 0).unwrap();
        // Closing it would drop this process's locks on the file.
        std::mem::forget(shm);
        let _: i64 = other
            .query_row("SELECT version FROM config_version", [], |row| row.get(0))
            .unwrap();

        assert_eq!(watch.header(), None, "recovered: change counter 0");
        assert_eq!(readers.config_version().unwrap(), version);
        // `other` restarted the WAL with its checkpoint: salts of 0.
        other
            .execute("UPDATE config_version SET version = version + 1", [])
            .unwrap();
        assert_eq!(watch.header(), None, "salts of 0");
        assert_eq!(readers.config_version().unwrap(), version + 1);

        // The next restart of the WAL draws a salt again.
        truncate_wal(&other);
        other
            .execute("UPDATE config_version SET version = version + 1", [])
            .unwrap();
        assert!(watch.header().is_some());
        assert_eq!(readers.config_version().unwrap(), version + 2);
    }

    /// A store opened on a database no process has open (an empty WAL)
    /// commits once, so that its readers can trust the header.
    #[tokio::test]
    async fn opening_a_closed_database_moves_the_change_counter() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.db");
        let _store = crate::connect(
            &format!("sqlite://{}", first.display()),
            &crate::PoolSettings::default(),
        )
        .await
        .unwrap();
        let other = Connection::open(&first).unwrap();
        truncate_wal(&other);
        // With the WAL empty, the main file alone is the whole database.
        let copy = dir.path().join("copy.db");
        std::fs::copy(&first, &copy).unwrap();
        // A first reader opens the WAL and its index, as the pool does.
        let reader = Connection::open(&copy).unwrap();
        let _: i64 = reader
            .query_row("SELECT version FROM config_version", [], |row| row.get(0))
            .unwrap();
        let untouched = Readers::open(&copy).unwrap();
        assert!(untouched.needs_first_commit(), "a fresh start leaves 0");

        let _copy_store = crate::connect(
            &format!("sqlite://{}", copy.display()),
            &crate::PoolSettings::default(),
        )
        .await
        .unwrap();
        assert!(!untouched.needs_first_commit());
        assert!(!Readers::open(&copy).unwrap().needs_first_commit());
    }

    #[test]
    fn without_a_shm_file_nothing_is_watched() {
        let dir = tempfile::tempdir().unwrap();
        assert!(CommitWatch::open(&dir.path().join("missing.db")).is_none());
    }
}
