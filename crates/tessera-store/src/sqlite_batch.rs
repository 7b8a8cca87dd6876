//! Group commit for SQLite's hot writes: the records of issued tokens,
//! refresh token rotations and authorization code redemptions.
//!
//! A token request that writes would otherwise pay for its own transaction:
//! a round trip to sqlx's worker thread per statement and one WAL commit,
//! while every other writer waits for SQLite's single write lock. Here one
//! thread owns a connection, takes every write that has queued up while the
//! previous batch ran, and commits them together. The batch first runs
//! without savepoints, which cost a statement journal per write; should one
//! write fail, the whole transaction is rolled back and the batch is run
//! again with each write in its own savepoint, so that the failing one is
//! undone alone and reported to its own caller. A caller hears of success
//! only once the batch has committed.
//!
//! The batch thread takes the same in-process lock as the sqlx writer
//! connection, so the two never meet on SQLite's lock inside this process;
//! other processes (the CLI) are waited for through the busy timeout.
//!
//! The SQL repeats the few statements of `sql.rs` these writes need, for
//! rusqlite; PostgreSQL's batch (`postgres/batch.rs`) does the same jobs
//! ([`Work`]) its own way. Both are exercised by the same test suite.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use sqlx::SqliteConnection;
use tessera_core::secret::SecretHash;
use tessera_core::{AccessTokenRecord, RefreshTokenRecord, TenantId, UnixTime};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::group_commit::{Done, Work, guarded};
use crate::sqlite_read::{code_from_row, refresh_from_row};
use crate::{CodeRedemption, DecideIssue, Rotation, StoreError, StoreResult};

/// Writes taken into one transaction at most. Bounds how long the batch
/// holds the write lock against the CLI and the sqlx writer.
const MAX_BATCH: usize = 256;

struct Job {
    work: Work,
    reply: oneshot::Sender<StoreResult<Done>>,
    ticket: Arc<Ticket>,
}

/// Who settles a queued job's fate: the batch that takes it, or its caller
/// who stops waiting first. Once a batch has taken a job its caller waits
/// for the outcome (bounded by the busy timeout): had it been told
/// "unavailable" while the batch committed its rotation, the client's retry
/// would look like reuse and revoke the family (RFC 9700 §4.14.2). Only the
/// HTTP request timeout (30 s by default) or a client that hangs up can
/// still part a caller from a committed write.
#[derive(Debug, Default)]
struct Ticket(AtomicU8);

impl Ticket {
    const QUEUED: u8 = 0;
    const TAKEN: u8 = 1;
    const WITHDRAWN: u8 = 2;

    /// The batch takes the job; false if its caller withdrew it first.
    /// Taking it again (the batch's run with savepoints) is true.
    fn take(&self) -> bool {
        match self.0.compare_exchange(
            Self::QUEUED,
            Self::TAKEN,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            Err(state) => state == Self::TAKEN,
        }
    }

    /// The caller stops waiting; false if a batch has already taken the job.
    fn withdraw(&self) -> bool {
        self.0
            .compare_exchange(
                Self::QUEUED,
                Self::WITHDRAWN,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }
}

/// The handle requests use to queue writes; the thread ends when the last
/// handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct BatchWriter {
    jobs: mpsc::UnboundedSender<Job>,
    /// How long a caller waits for its batch before it is told the
    /// database is unavailable, like a writer waiting for a connection.
    timeout: Duration,
    /// Dropped with the last handle, which stops the checkpointer, unless
    /// [`stop_checkpointer`](Self::stop_checkpointer) took it before.
    checkpointer: Arc<std::sync::Mutex<Option<Checkpointer>>>,
}

#[derive(Debug)]
struct Checkpointer {
    /// Dropped to stop the thread.
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl BatchWriter {
    /// Opens a connection to the database at `path` and starts the thread.
    /// `write_lock` is the lock every writer of this process holds while it
    /// writes; `timeout` bounds a caller's wait.
    pub(crate) fn start(
        path: &std::path::Path,
        write_lock: Arc<Mutex<SqliteConnection>>,
        timeout: Duration,
    ) -> StoreResult<Self> {
        let connection = open(path)?;
        let (jobs, queue) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("tessera-sqlite-batch".into())
            .spawn({
                let write_lock = write_lock.clone();
                move || run(connection, queue, write_lock)
            })
            .map_err(|e| StoreError::Internal(format!("cannot start the batch writer: {e}")))?;
        let checkpoints = open(path)?;
        // The checkpointer gives way quickly to a long reader (another
        // process) rather than keep the writers waiting on `write_lock`.
        checkpoints
            .busy_timeout(CHECKPOINT_PATIENCE)
            .map_err(store_error)?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tessera-sqlite-checkpoint".into())
            .spawn(move || checkpoint(checkpoints, stopped, write_lock))
            .map_err(|e| StoreError::Internal(format!("cannot start the checkpointer: {e}")))?;
        Ok(BatchWriter {
            jobs,
            timeout,
            checkpointer: Arc::new(std::sync::Mutex::new(Some(Checkpointer { stop, thread }))),
        })
    }

    /// Stops the checkpointer and waits for its last, complete checkpoint.
    /// Without the wait, a process that exits right after its store is
    /// dropped ends the thread before that checkpoint.
    pub(crate) async fn stop_checkpointer(&self) {
        let taken = self
            .checkpointer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(Checkpointer { stop, thread }) = taken {
            drop(stop);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Queues `work` and waits until its batch has committed. Past the
    /// timeout, a write no batch has taken yet is withdrawn and never made;
    /// one a batch has taken is waited for (see [`Ticket`]).
    pub(crate) async fn write(&self, work: Work) -> StoreResult<Done> {
        let stopped = || StoreError::Unavailable("the batch writer has stopped".into());
        let (reply, mut done) = oneshot::channel();
        let ticket = Arc::new(Ticket::default());
        self.jobs
            .send(Job {
                work,
                reply,
                ticket: ticket.clone(),
            })
            .map_err(|_| stopped())?;
        match tokio::time::timeout(self.timeout, &mut done).await {
            Ok(outcome) => outcome.map_err(|_| stopped())?,
            Err(_) if ticket.withdraw() => Err(StoreError::Unavailable(
                "timed out waiting for the database writer".into(),
            )),
            Err(_) => done.await.map_err(|_| stopped())?,
        }
    }
}

/// A read-write connection with the settings of sqlx's connections.
fn open(path: &std::path::Path) -> StoreResult<Connection> {
    let connection = Connection::open(path).map_err(store_error)?;
    connection
        .busy_timeout(Duration::from_secs(5))
        .map_err(store_error)?;
    connection
        .execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0; \
             PRAGMA journal_size_limit = 268435456; PRAGMA temp_store = MEMORY;",
        )
        .map_err(store_error)?;
    Ok(connection)
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Past this many pages (4 KiB each) the WAL is started over.
const RESTART_WAL_AT: i64 = 32768;

/// How long the checkpointer waits for readers before it tries again later.
const CHECKPOINT_PATIENCE: Duration = Duration::from_millis(500);

/// Copies the WAL back into the database file, off the writers' path.
///
/// SQLite would otherwise checkpoint inside the commit that crosses 1,000
/// pages of WAL, with two `fsync`s, while every writer waits; every
/// connection of this process has that turned off (`wal_autocheckpoint =
/// 0`). A PASSIVE checkpoint takes no lock writers need, so commits go on
/// while it writes and syncs. But under a steady stream of commits it never
/// catches up with the last one, and SQLite starts the WAL over only then:
/// so once the WAL is large, a RESTART checkpoint copies the little that is
/// left while the writers wait on `write_lock`, and the next write starts
/// the WAL over. Ends with a TRUNCATE checkpoint when the store is closed
/// (`Store::close` waits for it) or dropped.
fn checkpoint(
    connection: Connection,
    stop: std::sync::mpsc::Receiver<()>,
    write_lock: Arc<Mutex<SqliteConnection>>,
) {
    let run = |mode: &str| {
        connection
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
                row.get::<_, i64>(1)
            })
            .inspect_err(|error| tracing::warn!(%error, "WAL checkpoint failed"))
    };
    // The WAL's size when it was last restarted: until the next write
    // starts it over, PASSIVE still reports that size, and an idle server
    // must not take the writers' lock again for nothing.
    let mut restarted_at = None;
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY)
    {
        if let Ok(pages) = run("PASSIVE")
            && pages > RESTART_WAL_AT
            && restarted_at != Some(pages)
        {
            let _writers_wait = write_lock.blocking_lock();
            if run("RESTART").is_ok() {
                restarted_at = Some(pages);
            }
        }
    }
    // A last, complete one, so that a stopped process leaves a small WAL.
    let _ = run("TRUNCATE");
}

fn run(
    mut connection: Connection,
    mut queue: mpsc::UnboundedReceiver<Job>,
    write_lock: Arc<Mutex<SqliteConnection>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcomes = {
            let _lock = write_lock.blocking_lock();
            commit_batch(&mut connection, &batch)
        };
        match outcomes {
            Ok(outcomes) => {
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    // The caller may have gone (its client hung up).
                    let _ = job.reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "a batch of writes failed to commit");
                for job in batch.drain(..) {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Unavailable(error.to_string())));
                }
            }
        }
    }
}

/// Runs every job of `batch` in one transaction. The outer error is the
/// commit's: then nothing of the batch was stored.
///
/// Jobs almost never fail, so they first run side by side with no savepoint
/// (a savepoint makes SQLite copy every page a job touches into a journal:
/// about a tenth of this thread's time). If one does fail, its earlier
/// statements may have stayed in the transaction: then all of it is rolled
/// back and the batch runs again, each job in its own savepoint, so that the
/// failing one is undone alone.
fn commit_batch(connection: &mut Connection, batch: &[Job]) -> StoreResult<Vec<StoreResult<Done>>> {
    if let Some(outcomes) = run_batch(connection, batch, false)? {
        return Ok(outcomes);
    }
    run_batch(connection, batch, true)?
        .ok_or_else(|| StoreError::Internal("a batch failed in its savepoints".into()))
}

/// One attempt of [`commit_batch`]. Without savepoints it gives up (`None`,
/// nothing stored) at the first job that fails.
fn run_batch(
    connection: &mut Connection,
    batch: &[Job],
    savepoints: bool,
) -> StoreResult<Option<Vec<StoreResult<Done>>>> {
    // IMMEDIATE: take the write lock now, not on the first write, so that a
    // concurrent writer in another process makes us wait, not fail.
    let mut transaction = connection
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(store_error)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        // Its caller has gone (withdrawn on timeout, or its client hung
        // up): a rotation made now would spend a refresh token nobody
        // receives, and the client's retry would look like reuse.
        if job.reply.is_closed() || !job.ticket.take() {
            outcomes.push(Err(StoreError::Unavailable("the caller has gone".into())));
            continue;
        }
        if !savepoints {
            match apply(&transaction, &job.work) {
                Ok(done) => outcomes.push(Ok(done)),
                Err(error) => {
                    // The caller reruns the batch with savepoints, which
                    // reports this failure to the job's own caller.
                    tracing::debug!(%error, "a batched write failed; retrying with savepoints");
                    transaction.rollback().map_err(store_error)?;
                    return Ok(None);
                }
            }
            continue;
        }
        let mut savepoint = transaction.savepoint().map_err(store_error)?;
        let outcome = apply(&savepoint, &job.work);
        if outcome.is_ok() {
            savepoint.commit().map_err(store_error)?;
        } else {
            savepoint.rollback().map_err(store_error)?;
        }
        outcomes.push(outcome);
    }
    transaction.commit().map_err(store_error)?;
    Ok(Some(outcomes))
}

fn apply(connection: &Connection, work: &Work) -> StoreResult<Done> {
    match work {
        Work::Tokens { access, refresh } => {
            if let Some(access) = access {
                insert_access(connection, access)?;
            }
            if let Some(refresh) = refresh {
                insert_refresh(connection, refresh)?;
            }
            Ok(Done::Stored)
        }
        Work::Rotate {
            tenant,
            token_hash,
            now,
            decide,
        } => {
            // The batch holds the write lock: nothing can change the token
            // between this read and the UPDATE below.
            let Some(presented) = connection
                .prepare_cached(
                    "SELECT * FROM refresh_tokens WHERE token_hash = ?1 AND tenant_id = ?2",
                )
                .and_then(|mut s| {
                    s.query_row(params![token_hash.0, tenant.0], refresh_from_row)
                        .optional()
                })
                .map_err(store_error)?
            else {
                return Ok(Done::Rotation(Rotation::Unknown));
            };
            let successor = match guarded(|| decide(&presented))? {
                Ok(successor) => successor,
                Err(refusal) => return Ok(Done::Rotation(Rotation::Refused(refusal))),
            };
            // RFC 9700 §4.14.2: rotation is single use, decided by one
            // conditional UPDATE; reuse revokes the family.
            let used = connection
                .prepare_cached(
                    "UPDATE refresh_tokens SET used_at = ?1 WHERE token_hash = ?2 \
                     AND tenant_id = ?3 AND used_at IS NULL AND revoked_at IS NULL",
                )
                .and_then(|mut s| s.execute(params![now.0, token_hash.0, tenant.0]))
                .map_err(store_error)?;
            if used == 1 {
                insert_refresh(connection, &successor.refresh)?;
                insert_access(connection, &successor.access)?;
                return Ok(Done::Rotation(Rotation::Rotated(Box::new(successor))));
            }
            revoke_family(connection, &presented.family_id, *now)?;
            Ok(Done::Rotation(Rotation::Reused))
        }
        Work::Redeem {
            tenant,
            code_hash,
            now,
            decide,
        } => redeem(connection, *tenant, code_hash, *now, decide).map(Done::Redemption),
    }
}

/// [`Work::Redeem`]. The batch holds the write lock: nothing can change the
/// code between this read and the UPDATE.
fn redeem(
    connection: &Connection,
    tenant: TenantId,
    code_hash: &SecretHash,
    now: UnixTime,
    decide: &DecideIssue,
) -> StoreResult<CodeRedemption> {
    let Some((code, used)) = connection
        .prepare_cached("SELECT * FROM authorization_codes WHERE code_hash = ?1 AND tenant_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![code_hash.0, tenant.0], code_from_row)
                .optional()
        })
        .map_err(store_error)?
    else {
        return Ok(CodeRedemption::Unknown);
    };
    if used {
        // RFC 6749 §4.1.2: a replayed code revokes what it issued, which
        // its first use stored in the same transaction as the use itself.
        revoke_family(connection, &code.family_id, now)?;
        return Ok(CodeRedemption::Replayed);
    }
    let issued = match guarded(|| decide(&code))? {
        Ok(issued) => issued,
        Err(refusal) => return Ok(CodeRedemption::Refused(refusal)),
    };
    // RFC 6749 §4.1.2: single use. The read above, under the write lock,
    // found the code unused; the condition keeps that true even so.
    let used = connection
        .prepare_cached(
            "UPDATE authorization_codes SET used_at = ?1 \
             WHERE code_hash = ?2 AND tenant_id = ?3 AND used_at IS NULL",
        )
        .and_then(|mut s| s.execute(params![now.0, code_hash.0, tenant.0]))
        .map_err(store_error)?;
    if used != 1 {
        return Err(StoreError::Internal(
            "an unused code could not be marked used".into(),
        ));
    }
    insert_access(connection, &issued.access)?;
    if let Some(refresh) = &issued.refresh {
        insert_refresh(connection, refresh)?;
    }
    Ok(CodeRedemption::Redeemed(Box::new(issued)))
}

/// Revokes every refresh and access token of `family_id`.
fn revoke_family(connection: &Connection, family_id: &str, now: UnixTime) -> StoreResult<()> {
    for statement in [
        "UPDATE refresh_tokens SET revoked_at = ?1 WHERE family_id = ?2 AND revoked_at IS NULL",
        "UPDATE access_tokens SET revoked_at = ?1 WHERE family_id = ?2 AND revoked_at IS NULL",
    ] {
        connection
            .prepare_cached(statement)
            .and_then(|mut s| s.execute(params![now.0, family_id]))
            .map_err(store_error)?;
    }
    Ok(())
}

fn insert_access(connection: &Connection, t: &AccessTokenRecord) -> StoreResult<()> {
    connection
        .prepare_cached(
            "INSERT INTO access_tokens (jti, token_hash, tenant_id, client_id, user_id, scope, \
             audiences, auth_time, issued_at, expires_at, family_id, revoked_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL) ON CONFLICT (jti) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                t.jti,
                t.token_hash.as_ref().map(|h| &h.0),
                t.tenant_id.0,
                t.client_id.as_str(),
                t.user_id,
                t.scope.to_string(),
                serde_json::to_string(&t.audiences).unwrap_or_else(|_| "[]".to_owned()),
                t.auth_time.map(|a| a.0),
                t.issued_at.0,
                t.expires_at.0,
                t.family_id,
            ])
        })
        .map_err(store_error)?;
    Ok(())
}

fn insert_refresh(connection: &Connection, t: &RefreshTokenRecord) -> StoreResult<()> {
    connection
        .prepare_cached(
            "INSERT INTO refresh_tokens (token_hash, family_id, tenant_id, client_id, user_id, \
             scope, auth_time, issued_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .and_then(|mut s| {
            s.execute(params![
                t.token_hash.0,
                t.family_id,
                t.tenant_id.0,
                t.client_id.as_str(),
                t.user_id,
                t.scope.to_string(),
                t.auth_time.map(|a| a.0),
                t.issued_at.0,
                t.expires_at.0,
            ])
        })
        .map_err(store_error)?;
    Ok(())
}

/// rusqlite's errors in the store's terms, as `From<sqlx::Error>` maps sqlx's.
pub(crate) fn store_error(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => match &error {
            rusqlite::Error::SqliteFailure(e, _) => match e.extended_code {
                rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => StoreError::NotFound,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => StoreError::Conflict,
                _ => StoreError::Internal(error.to_string()),
            },
            _ => StoreError::Internal(error.to_string()),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(error.to_string())
        }
        _ => StoreError::Internal(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use tessera_core::TokenError;

    use super::*;

    /// The records of tenant 1's client `client`.
    fn refresh(hash: u8, family: &str) -> RefreshTokenRecord {
        crate::test_records::refresh(hash, family, "client")
    }

    fn access(jti: &str, family: &str) -> AccessTokenRecord {
        crate::test_records::access(jti, family, "client")
    }

    /// Rotates the token with hash `old` into one with hash `new`, in its
    /// family, with the access token `jti`.
    fn rotate(old: u8, new: u8, jti: &str, now: i64) -> Work {
        let jti = jti.to_owned();
        Work::Rotate {
            tenant: TenantId(1),
            token_hash: SecretHash(vec![old; 32]),
            now: UnixTime(now),
            decide: Box::new(move |stored| {
                Ok(crate::Successor {
                    refresh: refresh(new, &stored.family_id),
                    access: access(&jti, &stored.family_id),
                })
            }),
        }
    }

    /// A new database with Tessera's schema, in a directory removed on drop.
    async fn migrated_database() -> (tempfile::TempDir, std::path::PathBuf, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batch.db");
        let url = format!("sqlite://{}", path.display());
        crate::connect(&url, &crate::PoolSettings::default())
            .await
            .unwrap();
        (dir, path, url)
    }

    fn job(work: Work) -> (Job, oneshot::Receiver<StoreResult<Done>>) {
        let (reply, outcome) = oneshot::channel();
        let ticket = Arc::default();
        (
            Job {
                work,
                reply,
                ticket,
            },
            outcome,
        )
    }

    fn count(connection: &Connection, sql: &str) -> i64 {
        connection.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    /// One failing write in a batch is undone alone, with everything it did,
    /// and the writes around it commit; rotations in one batch see each other.
    #[tokio::test]
    async fn a_failing_write_is_undone_alone_and_its_batch_commits() {
        let (_dir, path, _) = migrated_database().await;
        let mut connection = open(&path).unwrap();
        // The records name no real tenant or client; this test is about the batch.
        connection
            .execute_batch("PRAGMA foreign_keys = OFF")
            .unwrap();

        let batch = [
            job(Work::Tokens {
                access: Some(access("a1", "f1")),
                refresh: Some(refresh(1, "f1")),
            }),
            // Its refresh token's hash is taken: its access token must go too.
            job(Work::Tokens {
                access: Some(access("a2", "f2")),
                refresh: Some(refresh(1, "f2")),
            }),
            // Refused by its decision: nothing is written, the token stays unused.
            job(Work::Rotate {
                tenant: TenantId(1),
                token_hash: SecretHash(vec![1; 32]),
                now: UnixTime(4),
                decide: Box::new(|_| Err(TokenError::InvalidGrant("refused"))),
            }),
            job(rotate(1, 3, "a3", 5)),
            // The same token again, in the same batch: reuse.
            job(rotate(1, 4, "a4", 6)),
            // A token never stored.
            job(rotate(9, 10, "a10", 6)),
            // Its caller stops waiting before the batch begins.
            job(Work::Tokens {
                access: Some(access("a5", "f5")),
                refresh: None,
            }),
        ];
        let (jobs, mut replies): (Vec<Job>, Vec<_>) = batch.into_iter().unzip();
        drop(replies.pop());
        let outcomes = commit_batch(&mut connection, &jobs).unwrap();

        assert!(matches!(outcomes[0], Ok(Done::Stored)));
        assert!(matches!(outcomes[1], Err(StoreError::Conflict)));
        assert!(matches!(
            &outcomes[2],
            Ok(Done::Rotation(Rotation::Refused(TokenError::InvalidGrant(
                "refused"
            ))))
        ));
        assert!(matches!(
            &outcomes[3],
            Ok(Done::Rotation(Rotation::Rotated(successor))) if successor.access.jti == "a3"
        ));
        assert!(matches!(outcomes[4], Ok(Done::Rotation(Rotation::Reused))));
        assert!(matches!(outcomes[5], Ok(Done::Rotation(Rotation::Unknown))));
        assert!(matches!(outcomes[6], Err(StoreError::Unavailable(_))));
        drop(replies);
        assert_eq!(
            count(
                &connection,
                "SELECT count(*) FROM access_tokens WHERE jti = 'a5'"
            ),
            0
        );

        assert_eq!(
            count(
                &connection,
                "SELECT count(*) FROM access_tokens WHERE jti = 'a2'"
            ),
            0
        );
        assert_eq!(
            count(
                &connection,
                "SELECT count(*) FROM access_tokens WHERE jti = 'a4'"
            ),
            0
        );
        assert_eq!(count(&connection, "SELECT count(*) FROM refresh_tokens"), 2);
        // The reuse revoked the family, the rotation's new tokens included.
        assert_eq!(
            count(
                &connection,
                "SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL"
            ),
            0
        );
        assert_eq!(
            count(
                &connection,
                "SELECT count(*) FROM access_tokens WHERE revoked_at = 6"
            ),
            2
        );
    }

    /// Stores an unused code `hash` of `family`, expiring at 1000, with
    /// foreign keys off: the records name no real tenant, client or user.
    fn insert_code(connection: &Connection, hash: u8, family: &str) {
        connection
            .execute_batch("PRAGMA foreign_keys = OFF")
            .unwrap();
        connection
            .execute(
                "INSERT INTO authorization_codes (code_hash, tenant_id, client_id, user_id, \
                 redirect_uri, redirect_uri_in_request, scope, code_challenge, auth_time, \
                 expires_at, family_id) VALUES (?1, 1, 'client', 'user', \
                 'https://app.example/cb', 1, 'read', NULL, 1, 1000, ?2)",
                params![vec![hash; 32], family],
            )
            .unwrap();
    }

    /// A redemption of code `hash` that issues the access token `jti` and the
    /// refresh token `refresh_hash` in the code's family, unless `refuse`.
    fn redeem_code(hash: u8, jti: &str, refresh_hash: u8, now: i64, refuse: bool) -> Work {
        let jti = jti.to_owned();
        Work::Redeem {
            tenant: TenantId(1),
            code_hash: SecretHash(vec![hash; 32]),
            now: UnixTime(now),
            decide: Box::new(move |code| {
                if refuse {
                    return Err(TokenError::InvalidGrant("refused"));
                }
                Ok(crate::Issued {
                    access: access(&jti, &code.family_id),
                    refresh: Some(refresh(refresh_hash, &code.family_id)),
                })
            }),
        }
    }

    /// A refused redemption writes nothing; the first accepted one marks the
    /// code used and stores its tokens in the same batch; a replay, even in
    /// that batch, revokes them.
    #[tokio::test]
    async fn a_code_is_redeemed_once_with_its_tokens_and_a_replay_revokes_them() {
        let (_dir, path, _) = migrated_database().await;
        let mut connection = open(&path).unwrap();
        insert_code(&connection, 7, "code-family");
        let batch = [
            job(redeem_code(7, "refused", 70, 2, true)),
            job(redeem_code(7, "first", 71, 3, false)),
            job(redeem_code(7, "replay", 72, 4, false)),
            job(redeem_code(8, "unknown", 80, 4, false)),
        ];
        let (jobs, _replies): (Vec<Job>, Vec<_>) = batch.into_iter().unzip();
        let outcomes = commit_batch(&mut connection, &jobs).unwrap();

        assert!(matches!(
            &outcomes[0],
            Ok(Done::Redemption(CodeRedemption::Refused(
                TokenError::InvalidGrant("refused")
            )))
        ));
        assert!(matches!(
            &outcomes[1],
            Ok(Done::Redemption(CodeRedemption::Redeemed(issued))) if issued.access.jti == "first"
        ));
        assert!(matches!(
            outcomes[2],
            Ok(Done::Redemption(CodeRedemption::Replayed))
        ));
        assert!(matches!(
            outcomes[3],
            Ok(Done::Redemption(CodeRedemption::Unknown))
        ));
        assert_eq!(
            count(&connection, "SELECT used_at FROM authorization_codes"),
            3
        );
        assert_eq!(count(&connection, "SELECT count(*) FROM access_tokens"), 1);
        assert_eq!(
            count(
                &connection,
                "SELECT count(*) FROM access_tokens WHERE jti = 'first' \
                 AND family_id = 'code-family' AND revoked_at = 4"
            ),
            1
        );
        assert_eq!(
            count(
                &connection,
                "SELECT count(*) FROM refresh_tokens WHERE family_id = 'code-family' \
                 AND revoked_at = 4"
            ),
            1
        );
        assert_eq!(count(&connection, "SELECT count(*) FROM refresh_tokens"), 1);
    }

    /// A decision that panics fails its own job; the batch thread and the
    /// other jobs of the batch go on.
    #[tokio::test]
    async fn a_panicking_decision_fails_only_its_job() {
        let (_dir, path, _) = migrated_database().await;
        let mut connection = open(&path).unwrap();
        insert_code(&connection, 7, "f");
        let batch = [
            job(Work::Redeem {
                tenant: TenantId(1),
                code_hash: SecretHash(vec![7; 32]),
                now: UnixTime(2),
                decide: Box::new(|_| panic!("a bug in a decision")),
            }),
            job(Work::Tokens {
                access: Some(access("a1", "f1")),
                refresh: None,
            }),
        ];
        let (jobs, _replies): (Vec<Job>, Vec<_>) = batch.into_iter().unzip();
        let outcomes = commit_batch(&mut connection, &jobs).unwrap();
        assert!(matches!(outcomes[0], Err(StoreError::Internal(_))));
        assert!(matches!(outcomes[1], Ok(Done::Stored)));
        assert_eq!(
            count(
                &connection,
                "SELECT count(*) FROM authorization_codes WHERE used_at IS NULL"
            ),
            1
        );
    }

    /// Stores tenant 1, its client `client` and an unused refresh token
    /// `hash` of family `f`, so that the batch thread's foreign keys hold.
    fn insert_tenant_client_and_token(connection: &Connection, hash: u8) {
        connection
            .execute_batch(
                "INSERT INTO tenants (id, name, access_token_ttl, refresh_token_ttl, \
                 authorization_code_ttl, created_at) VALUES (1, 't', 60, 60, 60, 1); \
                 INSERT INTO clients (client_id, tenant_id, name, auth_method, grant_types, \
                 redirect_uris, audiences, token_format, created_at) \
                 VALUES ('client', 1, 'c', 'none', 'refresh_token', '[]', '[]', 'jwt', 1);",
            )
            .unwrap();
        connection
            .execute(
                "INSERT INTO refresh_tokens (token_hash, family_id, tenant_id, client_id, \
                 scope, issued_at, expires_at) VALUES (?1, 'f', 1, 'client', '', 1, 1000)",
                params![vec![hash; 32]],
            )
            .unwrap();
    }

    /// A caller whose timeout passes while its batch runs hears the batch's
    /// outcome, not "unavailable": its rotation was committed, and a retry
    /// after a 503 would look like reuse.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timeout_does_not_withdraw_a_write_a_batch_has_taken() {
        let (_dir, path, url) = migrated_database().await;
        let connection = open(&path).unwrap();
        insert_tenant_client_and_token(&connection, 1);
        let write_lock = Arc::new(Mutex::new(sqlx::Connection::connect(&url).await.unwrap()));
        // Long enough for the batch to take the job first on a busy machine.
        let timeout = Duration::from_millis(500);
        let writer = BatchWriter::start(&path, write_lock, timeout).unwrap();

        let (taken, job_taken) = std::sync::mpsc::channel();
        let (go_on, may_go_on) = std::sync::mpsc::channel::<()>();
        // A decision must be Sync; a receiver is not.
        let may_go_on = std::sync::Mutex::new(may_go_on);
        let Work::Rotate { decide, .. } = rotate(1, 2, "a2", 5) else {
            unreachable!()
        };
        let slow_rotation = Work::Rotate {
            tenant: TenantId(1),
            token_hash: SecretHash(vec![1; 32]),
            now: UnixTime(5),
            decide: Box::new(move |stored| {
                // The batch has taken the job; it goes on once the caller's
                // timeout has passed.
                taken.send(()).unwrap();
                may_go_on.lock().unwrap().recv().unwrap();
                decide(stored)
            }),
        };
        let write = tokio::spawn(async move { writer.write(slow_rotation).await });
        tokio::task::spawn_blocking(move || job_taken.recv().unwrap())
            .await
            .unwrap();
        tokio::time::sleep(timeout * 2).await;
        go_on.send(()).unwrap();
        assert!(matches!(
            write.await.unwrap(),
            Ok(Done::Rotation(Rotation::Rotated(_)))
        ));
        assert_eq!(
            count(
                &connection,
                "SELECT count(*) FROM refresh_tokens WHERE used_at = 5"
            ),
            1
        );
    }

    /// A job its caller withdrew (timed out while it was queued) is not
    /// made, even though the caller still holds its receiver; a job taken
    /// once can no longer be withdrawn.
    #[tokio::test]
    async fn a_withdrawn_write_is_not_made_and_a_taken_one_cannot_be_withdrawn() {
        let (_dir, path, _) = migrated_database().await;
        let mut connection = open(&path).unwrap();
        connection
            .execute_batch("PRAGMA foreign_keys = OFF")
            .unwrap();
        let (withdrawn, _withdrawn_reply) = job(Work::Tokens {
            access: Some(access("withdrawn", "f")),
            refresh: None,
        });
        let (kept, _kept_reply) = job(Work::Tokens {
            access: Some(access("kept", "f")),
            refresh: None,
        });
        assert!(withdrawn.ticket.withdraw());
        let batch = [withdrawn, kept];
        let outcomes = commit_batch(&mut connection, &batch).unwrap();
        assert!(matches!(outcomes[0], Err(StoreError::Unavailable(_))));
        assert!(matches!(outcomes[1], Ok(Done::Stored)));
        assert!(!batch[1].ticket.withdraw());
        assert_eq!(
            count(
                &connection,
                "SELECT count(*) FROM access_tokens WHERE jti = 'withdrawn'"
            ),
            0
        );
        assert_eq!(
            count(
                &connection,
                "SELECT count(*) FROM access_tokens WHERE jti = 'kept'"
            ),
            1
        );
    }

    /// Writes queued from many tasks at once are each answered with their
    /// own outcome.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_queued_write_is_answered() {
        let (_dir, path, url) = migrated_database().await;
        let write_lock = Arc::new(Mutex::new(sqlx::Connection::connect(&url).await.unwrap()));
        let writer = BatchWriter::start(&path, write_lock, Duration::from_secs(5)).unwrap();
        // Without tenants and clients the foreign keys refuse every write:
        // each caller must hear so, and nothing may be stored.
        let writes = (0..200u8).map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .write(Work::Tokens {
                        access: Some(access(&format!("jti-{i}"), "f")),
                        refresh: None,
                    })
                    .await
            })
        });
        let writes: Vec<_> = writes.collect();
        for write in writes {
            assert!(matches!(write.await.unwrap(), Err(StoreError::NotFound)));
        }
    }
}
