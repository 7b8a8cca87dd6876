//! Group commit for PostgreSQL's hot writes: the records of issued tokens,
//! refresh token rotations and authorization code redemptions, the same
//! jobs as SQLite's batch thread ([`crate::group_commit`]).
//!
//! Done one by one, each write is a transaction of its own: several round
//! trips through the pool and a WAL flush, and the pool's connections bound
//! how many are in flight. Here the jobs queued while the previous batch ran
//! are done in one transaction of a few statements, whatever their number:
//!
//! 1. one `UPDATE ... FROM UNNEST(...) RETURNING` spends the first
//!    presentation of every refresh token, and one every code, taking their
//!    row locks; each job's decision is made on the row it got back, and the
//!    rows of refused jobs are given back (`used_at` reset to `NULL`);
//! 2. one `INSERT ... SELECT FROM UNNEST(...)` per table stores every record
//!    to store: new grants' and the accepted jobs' tokens;
//! 3. what is left (reuse, replay, unknown credentials, a second
//!    presentation in the same batch) runs job by job, in queue order, so
//!    that a replay revokes the tokens its code's first use stored in step 2;
//! 4. one commit.
//!
//! The presentations of one credential are decided in queue order. Across
//! credentials, step 1's decisions come before step 3's: an order the
//! concurrent requests of a batch could have arrived in (SQLite's batch
//! keeps queue order throughout).
//!
//! Should a statement fail before the commit (a client deleted meanwhile,
//! say), the transaction is rolled back and each job of the batch runs
//! again in a transaction of its own, so that only the failing one fails.
//! Decisions have no side effects (see [`crate::DecideSuccessor`]), so
//! running one again is harmless. A failed commit is not run again: it may
//! have happened, and a rotation run twice would look like reuse. A caller
//! hears of success only after the commit.
//!
//! A batch whose statements have not answered within `STUCK_AFTER` (5 s; a
//! stuck connection, a database that stopped answering) is rolled back and
//! fails every job in it as unavailable. One whose commit has not answered
//! within 5 s more fails them as a failed commit does: it may have
//! happened. Either way the next batch goes on, and when the jobs of a
//! failed batch run alone, those after the first that timed out fail at
//! once: a stall costs the node's writes seconds, not their queue.
//!
//! No task runs while nothing is queued: the caller that finds the queue
//! idle spawns the task that drains it, on its own runtime, and the task
//! ends when the queue is empty. A job whose caller has gone before its
//! batch starts is not done (a rotation nobody receives would look like
//! reuse when the client retries); one already sent is done.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use tessera_core::secret::SecretHash;
use tessera_core::{AccessTokenRecord, RefreshTokenRecord, TenantId, UnixTime};
use tokio::sync::oneshot;

use super::drain_queue::{DrainQueue, Drainer};
use crate::group_commit::{Done, Work, guarded};
use crate::{CodeRedemption, Rotation, StoreError, StoreResult};

/// Jobs in one transaction at most.
const MAX_BATCH: usize = 512;

/// Begins a batch's transaction. Every token write of the node waits for the
/// batch, so a batch does not wait longer than this for a row lock (another
/// node's batch, a purge): it fails, and its callers answer `503`. A
/// statement still running after the batch gave up on it (`STUCK_AFTER`) is
/// cancelled by the server at 10 s, which ends its transaction and frees its
/// row locks.
const BEGIN: &str = "BEGIN; SET LOCAL lock_timeout = '2s'; SET LOCAL statement_timeout = '10s'";

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

/// RFC 9700 §4.14.2: rotation is single use. Spends every presented token
/// that is unused and unrevoked, and returns it as it is now.
const SPEND_REFRESH_TOKENS: &str = "\
UPDATE refresh_tokens t SET used_at = p.now
FROM UNNEST($1::bytea[], $2::bigint[], $3::bigint[]) AS p(hash, tenant, now)
WHERE t.token_hash = p.hash AND t.tenant_id = p.tenant
    AND t.used_at IS NULL AND t.revoked_at IS NULL
RETURNING t.*";

/// Gives back tokens whose rotation was refused: they were unused before.
const UNSPEND_REFRESH_TOKENS: &str = "\
UPDATE refresh_tokens t SET used_at = NULL
FROM UNNEST($1::bytea[], $2::bigint[]) AS p(hash, tenant)
WHERE t.token_hash = p.hash AND t.tenant_id = p.tenant";

/// RFC 6749 §4.1.2: a code is single use. Spends every presented code that
/// is unused, and returns it.
const SPEND_CODES: &str = "\
UPDATE authorization_codes c SET used_at = p.now
FROM UNNEST($1::bytea[], $2::bigint[], $3::bigint[]) AS p(hash, tenant, now)
WHERE c.code_hash = p.hash AND c.tenant_id = p.tenant AND c.used_at IS NULL
RETURNING c.*";

/// Gives back codes whose redemption was refused, so that a stolen code
/// presented by the wrong party stays redeemable by its client.
const UNSPEND_CODES: &str = "\
UPDATE authorization_codes c SET used_at = NULL
FROM UNNEST($1::bytea[], $2::bigint[]) AS p(hash, tenant)
WHERE c.code_hash = p.hash AND c.tenant_id = p.tenant";

struct Job {
    work: Work,
    reply: oneshot::Sender<StoreResult<Done>>,
}

/// Does the writes of [`Work`], many per transaction.
#[derive(Debug)]
pub(crate) struct WriteBatch {
    pool: PgPool,
    queue: Arc<DrainQueue<Job>>,
    timeout: Duration,
}

impl WriteBatch {
    pub(crate) fn new(pool: PgPool) -> Arc<Self> {
        Self::with_timeout(pool, super::STUCK_AFTER)
    }

    fn with_timeout(pool: PgPool, timeout: Duration) -> Arc<Self> {
        Arc::new(WriteBatch {
            pool,
            queue: Arc::new(DrainQueue::new()),
            timeout,
        })
    }

    /// Does `work` with whatever else is queued.
    pub(crate) async fn write(self: &Arc<Self>, work: Work) -> StoreResult<Done> {
        let (reply, answer) = oneshot::channel();
        if self.queue.push(Job { work, reply }) {
            // The drainer is made before the task: see `DrainQueue::drainer`.
            let drainer = self.queue.drainer();
            tokio::spawn(Arc::clone(self).drain(drainer));
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Internal(
                "the write batch stopped before this write".into(),
            ))
        })
    }

    /// Does batches until the queue is empty.
    async fn drain(self: Arc<Self>, mut drainer: Drainer<Job>) {
        while let Some(jobs) = drainer.next_round(MAX_BATCH) {
            self.run(jobs).await;
        }
    }

    /// Does `jobs` in one transaction or, if that fails, each in its own.
    async fn run(&self, jobs: Vec<Job>) {
        let (jobs, gone): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|job| !job.reply.is_closed());
        drop(gone);
        if jobs.is_empty() {
            return;
        }
        match self.transaction(&jobs).await {
            Ok(outcomes) => {
                for (job, done) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(done));
                }
            }
            // A job can make the batch fail (a client deleted meanwhile, a
            // decision that panicked): each runs again alone. An unavailable
            // database would fail them all again, one by one.
            Err(Failed::Undone(error))
                if jobs.len() > 1 && !matches!(error, StoreError::Unavailable(_)) =>
            {
                tracing::debug!(%error, "a batch of writes failed; running each alone");
                // Once the database has stopped answering, the jobs left fail
                // at once rather than taking `STUCK_AFTER` each.
                let mut unavailable: Option<StoreError> = None;
                for job in jobs {
                    if job.reply.is_closed() {
                        continue;
                    }
                    if let Some(error) = &unavailable {
                        let _ = job.reply.send(Err(error.clone()));
                        continue;
                    }
                    let alone = match self.transaction(std::slice::from_ref(&job)).await {
                        Ok(mut outcomes) => outcomes
                            .pop()
                            .ok_or_else(|| StoreError::Internal("a write came to nothing".into())),
                        Err(Failed::Undone(error) | Failed::AtCommit(error)) => Err(error),
                    };
                    if let Err(error @ StoreError::Unavailable(_)) = &alone {
                        unavailable = Some(error.clone());
                    }
                    let _ = job.reply.send(alone);
                }
            }
            // A commit whose answer was lost may have happened: running the
            // jobs again could take a rotation that succeeded for reuse.
            Err(Failed::Undone(error) | Failed::AtCommit(error)) => {
                for job in jobs {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Does every job of `jobs` in one transaction.
    async fn transaction(&self, jobs: &[Job]) -> Result<Vec<Done>, Failed> {
        // Cut short before its commit, the transaction is rolled back: sqlx
        // sends the ROLLBACK once the statement in flight has ended.
        let (tx, outcomes) =
            super::answered_within(self.timeout, self.transaction_until_commit(jobs))
                .await
                .map_err(Failed::Undone)?;
        // Cut short at its commit, it may have happened.
        super::answered_within(self.timeout, tx.commit())
            .await
            .map_err(Failed::AtCommit)?;
        Ok(outcomes)
    }

    /// Everything of [`transaction`](Self::transaction) but its commit.
    async fn transaction_until_commit(
        &self,
        jobs: &[Job],
    ) -> StoreResult<(sqlx::Transaction<'static, sqlx::Postgres>, Vec<Done>)> {
        let mut tx = self.pool.begin_with(BEGIN).await?;
        let mut outcomes: Vec<Option<Done>> = jobs.iter().map(|_| None).collect();
        let mut records = Records::default();
        let mut first = vec![false; jobs.len()];
        for credential in Credential::BOTH {
            spend_first_presentations(
                &mut tx,
                jobs,
                credential,
                &mut outcomes,
                &mut records,
                &mut first,
            )
            .await?;
        }
        for (job, outcome) in jobs.iter().zip(outcomes.iter_mut()) {
            if let Work::Tokens { access, refresh } = &job.work {
                records.push(access.as_ref(), refresh.as_ref());
                *outcome = Some(Done::Stored);
            }
        }
        records.insert(&mut tx).await?;
        for ((job, outcome), first) in jobs.iter().zip(outcomes.iter_mut()).zip(first) {
            if outcome.is_none() {
                // A first presentation step 1 did not spend cannot be spent;
                // a later one can, if the first was refused and gave it back.
                *outcome = Some(leftover(&mut tx, &job.work, !first).await?);
            }
        }
        let outcomes = outcomes
            .into_iter()
            .map(|done| done.ok_or_else(|| StoreError::Internal("a write was not done".into())))
            .collect::<StoreResult<_>>()?;
        Ok((tx, outcomes))
    }
}

/// Why a batch's transaction failed.
enum Failed {
    /// Before the commit: nothing of it was done.
    Undone(StoreError),
    /// At the commit: it may or may not have been done.
    AtCommit(StoreError),
}

/// The two kinds of single-use credential a job can present.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Credential {
    RefreshToken,
    Code,
}

impl Credential {
    const BOTH: [Credential; 2] = [Credential::RefreshToken, Credential::Code];

    fn spend_statement(self) -> &'static str {
        match self {
            Credential::RefreshToken => SPEND_REFRESH_TOKENS,
            Credential::Code => SPEND_CODES,
        }
    }

    fn unspend_statement(self) -> &'static str {
        match self {
            Credential::RefreshToken => UNSPEND_REFRESH_TOKENS,
            Credential::Code => UNSPEND_CODES,
        }
    }

    fn hash_column(self) -> &'static str {
        match self {
            Credential::RefreshToken => "token_hash",
            Credential::Code => "code_hash",
        }
    }
}

/// A job that presents a refresh token or a code.
struct Presentation<'a> {
    /// The job's place in its batch.
    index: usize,
    credential: Credential,
    tenant: TenantId,
    hash: &'a SecretHash,
    now: UnixTime,
}

impl<'a> Presentation<'a> {
    /// What `work`, the job at `index`, presents, if anything.
    fn of(index: usize, work: &'a Work) -> Option<Self> {
        let (credential, tenant, hash, now) = match work {
            Work::Rotate {
                tenant,
                token_hash,
                now,
                ..
            } => (Credential::RefreshToken, tenant, token_hash, now),
            Work::Redeem {
                tenant,
                code_hash,
                now,
                ..
            } => (Credential::Code, tenant, code_hash, now),
            Work::Tokens { .. } => return None,
        };
        Some(Presentation {
            index,
            credential,
            tenant: *tenant,
            hash,
            now: *now,
        })
    }
}

/// The jobs that present a `credential`, the first presentation of each
/// only: a later one in the same batch runs on its own. In (tenant, hash)
/// order, so that every node takes row locks in one order (the index-driven
/// join follows the array) and two nodes' batches do not deadlock.
fn first_presentations(jobs: &[Job], credential: Credential) -> Vec<Presentation<'_>> {
    let mut seen = HashSet::new();
    let mut presented: Vec<_> = jobs
        .iter()
        .enumerate()
        .filter_map(|(index, job)| Presentation::of(index, &job.work))
        .filter(|p| p.credential == credential && seen.insert((p.tenant.0, p.hash.0.as_slice())))
        .collect();
    presented.sort_unstable_by(|a, b| (a.tenant.0, &a.hash.0).cmp(&(b.tenant.0, &b.hash.0)));
    presented
}

/// Runs the spend statement of `presented`'s credential (all of one kind)
/// and returns the rows it spent, by tenant and hash.
async fn spend(
    tx: &mut PgConnection,
    credential: Credential,
    presented: &[Presentation<'_>],
) -> StoreResult<HashMap<(i64, Vec<u8>), PgRow>> {
    let rows = sqlx::query(credential.spend_statement())
        .bind(
            presented
                .iter()
                .map(|p| p.hash.0.clone())
                .collect::<Vec<_>>(),
        )
        .bind(presented.iter().map(|p| p.tenant.0).collect::<Vec<_>>())
        .bind(presented.iter().map(|p| p.now.0).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
    let hash_column = credential.hash_column();
    rows.into_iter()
        .map(|row| Ok(((row.try_get("tenant_id")?, row.try_get(hash_column)?), row)))
        .collect()
}

/// Gives back the credentials of `refused` (all of one kind).
async fn unspend(
    tx: &mut PgConnection,
    credential: Credential,
    refused: &[&Presentation<'_>],
) -> StoreResult<()> {
    if refused.is_empty() {
        return Ok(());
    }
    sqlx::query(credential.unspend_statement())
        .bind(refused.iter().map(|p| p.hash.0.clone()).collect::<Vec<_>>())
        .bind(refused.iter().map(|p| p.tenant.0).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Runs the decision of `work` on the credential it spent (`row`, as it was
/// before): the job's outcome, and whether it was accepted, in which case
/// the records to store are added to `records`.
fn decide_on(work: &Work, row: &PgRow, records: &mut Records) -> StoreResult<(Done, bool)> {
    match work {
        Work::Rotate { decide, .. } => {
            // `decide` judges the token as it was before this batch spent it.
            let mut token = super::refresh_from_row(row)?;
            token.spent = false;
            Ok(match guarded(|| decide(&token))? {
                Ok(successor) => {
                    records.push(Some(&successor.access), Some(&successor.refresh));
                    (Done::Rotation(Rotation::Rotated(Box::new(successor))), true)
                }
                Err(refusal) => (Done::Rotation(Rotation::Refused(refusal)), false),
            })
        }
        Work::Redeem { decide, .. } => {
            let code = super::code_from_row(row)?;
            Ok(match guarded(|| decide(&code))? {
                Ok(issued) => {
                    records.push(Some(&issued.access), issued.refresh.as_ref());
                    (
                        Done::Redemption(CodeRedemption::Redeemed(Box::new(issued))),
                        true,
                    )
                }
                Err(refusal) => (Done::Redemption(CodeRedemption::Refused(refusal)), false),
            })
        }
        Work::Tokens { .. } => Err(StoreError::Internal("issued tokens spend nothing".into())),
    }
}

/// Step 1: spends the first presentation of each `credential` and decides
/// on it; marks in `first` the jobs that were first presentations.
async fn spend_first_presentations(
    tx: &mut PgConnection,
    jobs: &[Job],
    credential: Credential,
    outcomes: &mut [Option<Done>],
    records: &mut Records,
    first: &mut [bool],
) -> StoreResult<()> {
    let presented = first_presentations(jobs, credential);
    if presented.is_empty() {
        return Ok(());
    }
    let mut spent = spend(tx, credential, &presented).await?;
    let mut refused = Vec::new();
    for presentation in &presented {
        first[presentation.index] = true;
        let key = (presentation.tenant.0, presentation.hash.0.clone());
        let Some(row) = spent.remove(&key) else {
            continue;
        };
        let (done, accepted) = decide_on(&jobs[presentation.index].work, &row, records)?;
        if !accepted {
            refused.push(presentation);
        }
        outcomes[presentation.index] = Some(done);
    }
    if !spent.is_empty() {
        return Err(StoreError::Internal(
            "the database spent a credential nobody presented".into(),
        ));
    }
    unspend(tx, credential, &refused).await
}

/// Step 3: one presentation, on its own. Step 1 did not spend its
/// credential: it is used, revoked, unknown, or presented earlier in this
/// batch (`spendable`: then it may have been given back, and is spent and
/// decided on here).
async fn leftover(tx: &mut PgConnection, work: &Work, spendable: bool) -> StoreResult<Done> {
    let Some(presented) = Presentation::of(0, work) else {
        return Ok(Done::Stored);
    };
    let spent = if spendable {
        spend(tx, presented.credential, std::slice::from_ref(&presented)).await?
    } else {
        HashMap::new()
    };
    if let Some(row) = spent.into_values().next() {
        let mut records = Records::default();
        let (done, accepted) = decide_on(work, &row, &mut records)?;
        if accepted {
            records.insert(tx).await?;
        } else {
            unspend(tx, presented.credential, &[&presented]).await?;
        }
        return Ok(done);
    }
    let (tenant, hash, now) = (presented.tenant, presented.hash, presented.now);
    match work {
        Work::Rotate { decide, .. } => {
            let Some(row) = sqlx::query(
                "SELECT * FROM refresh_tokens WHERE token_hash = $1 AND tenant_id = $2",
            )
            .bind(&hash.0)
            .bind(tenant.0)
            .fetch_optional(&mut *tx)
            .await?
            else {
                return Ok(Done::Rotation(Rotation::Unknown));
            };
            let token = super::refresh_from_row(&row)?;
            if let Err(refusal) = guarded(|| decide(&token))? {
                return Ok(Done::Rotation(Rotation::Refused(refusal)));
            }
            // RFC 9700 §4.14.2: reuse of a rotated token revokes its family.
            super::revoke_family(tx, &token.family_id, now).await?;
            Ok(Done::Rotation(Rotation::Reused))
        }
        Work::Redeem { .. } => {
            let family: Option<String> = sqlx::query_scalar(
                "SELECT family_id FROM authorization_codes WHERE code_hash = $1 AND tenant_id = $2",
            )
            .bind(&hash.0)
            .bind(tenant.0)
            .fetch_optional(&mut *tx)
            .await?;
            Ok(Done::Redemption(match family {
                Some(family_id) => {
                    // RFC 6749 §4.1.2: a replayed code revokes what it issued.
                    super::revoke_family(tx, &family_id, now).await?;
                    CodeRedemption::Replayed
                }
                None => CodeRedemption::Unknown,
            }))
        }
        Work::Tokens { .. } => Ok(Done::Stored),
    }
}

/// The token records a transaction stores, by table.
#[derive(Default)]
struct Records {
    access: Vec<AccessTokenRecord>,
    refresh: Vec<RefreshTokenRecord>,
}

impl Records {
    fn push(&mut self, access: Option<&AccessTokenRecord>, refresh: Option<&RefreshTokenRecord>) {
        self.access.extend(access.cloned());
        self.refresh.extend(refresh.cloned());
    }

    /// One statement that stores every record.
    async fn insert(&self, tx: &mut PgConnection) -> StoreResult<()> {
        if self.access.is_empty() && self.refresh.is_empty() {
            return Ok(());
        }
        fn column<R, T>(records: &[R], field: impl Fn(&R) -> T) -> Vec<T> {
            records.iter().map(field).collect()
        }
        let (access, refresh) = (&self.access, &self.refresh);
        sqlx::query(INSERT_TOKENS)
            .bind(column(access, |t| t.jti.clone()))
            .bind(column(access, |t| {
                t.token_hash.as_ref().map(|h| h.0.clone())
            }))
            .bind(column(access, |t| t.tenant_id.0))
            .bind(column(access, |t| t.client_id.as_str().to_owned()))
            .bind(column(access, |t| t.user_id.clone()))
            .bind(column(access, |t| t.scope.to_string()))
            .bind(column(access, |t| super::to_json(&t.audiences)))
            .bind(column(access, |t| t.auth_time.map(|a| a.0)))
            .bind(column(access, |t| t.issued_at.0))
            .bind(column(access, |t| t.expires_at.0))
            .bind(column(access, |t| t.family_id.clone()))
            .bind(column(refresh, |t| t.token_hash.0.clone()))
            .bind(column(refresh, |t| t.family_id.clone()))
            .bind(column(refresh, |t| t.tenant_id.0))
            .bind(column(refresh, |t| t.client_id.as_str().to_owned()))
            .bind(column(refresh, |t| t.user_id.clone()))
            .bind(column(refresh, |t| t.scope.to_string()))
            .bind(column(refresh, |t| t.auth_time.map(|a| a.0)))
            .bind(column(refresh, |t| t.issued_at.0))
            .bind(column(refresh, |t| t.expires_at.0))
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tessera_core::TokenError;

    use super::*;
    use crate::postgres::test_support::Schema;
    use crate::test_records::{access, refresh};
    use crate::{Issued, Successor};

    fn tokens(n: u8, client: &str) -> Work {
        let family = format!("family-{n}");
        Work::Tokens {
            access: Some(access(&format!("jti-{n}"), &family, client)),
            refresh: Some(refresh(n, &family, client)),
        }
    }

    /// Rotates the token `[old; 32]` into `[new; 32]` with the access token
    /// `jti`, or refuses it if `new` is 0.
    fn rotate(old: u8, new: u8, jti: &str, now: i64) -> Work {
        let jti = jti.to_owned();
        Work::Rotate {
            tenant: TenantId(1),
            token_hash: SecretHash(vec![old; 32]),
            now: UnixTime(now),
            decide: Box::new(move |stored| {
                if new == 0 {
                    return Err(TokenError::InvalidGrant("refused"));
                }
                Ok(Successor {
                    refresh: refresh(new, &stored.family_id, "client"),
                    access: access(&jti, &stored.family_id, "client"),
                })
            }),
        }
    }

    /// Redeems the code `[n; 32]`, issuing the access token `jti` and a
    /// refresh token `[n + 100; 32]`, or refuses it if `jti` is empty.
    fn redeem(n: u8, jti: &str, now: i64) -> Work {
        let jti = jti.to_owned();
        Work::Redeem {
            tenant: TenantId(1),
            code_hash: SecretHash(vec![n; 32]),
            now: UnixTime(now),
            decide: Box::new(move |code| {
                if jti.is_empty() {
                    return Err(TokenError::InvalidGrant("refused"));
                }
                Ok(Issued {
                    access: access(&jti, &code.family_id, "client"),
                    refresh: Some(refresh(n + 100, &code.family_id, "client")),
                })
            }),
        }
    }

    /// Queues `work` without starting a task, so that the test decides what
    /// one batch holds.
    fn queue(batch: &WriteBatch, work: Work) -> oneshot::Receiver<StoreResult<Done>> {
        let (reply, answer) = oneshot::channel();
        let _started = batch.queue.push(Job { work, reply });
        answer
    }

    /// Runs `works` as one batch and returns their outcomes.
    async fn one_batch(batch: &Arc<WriteBatch>, works: Vec<Work>) -> Vec<StoreResult<Done>> {
        let answers: Vec<_> = works.into_iter().map(|work| queue(batch, work)).collect();
        Arc::clone(batch).drain(batch.queue.drainer()).await;
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await.unwrap());
        }
        assert!(batch.queue.is_idle());
        outcomes
    }

    /// The grants of one batch are stored together; one that cannot be
    /// stored (its client is gone) fails alone, with both its records, and
    /// the others are stored.
    #[tokio::test]
    async fn a_failing_grant_fails_alone_and_its_batch_is_stored() {
        let schema = Schema::new().await;
        let batch = WriteBatch::new(schema.pool.clone());
        let outcomes = one_batch(
            &batch,
            vec![
                tokens(1, "client"),
                Work::Tokens {
                    access: Some(access("jti-2", "family-2", "client")),
                    refresh: None,
                },
                Work::Tokens {
                    access: Some(access("jti-3", "family-3", "gone")),
                    refresh: Some(refresh(3, "family-3", "client")),
                },
                Work::Tokens {
                    access: None,
                    refresh: Some(refresh(4, "family-4", "client")),
                },
            ],
        )
        .await;
        assert!(matches!(outcomes[0], Ok(Done::Stored)));
        assert!(matches!(outcomes[1], Ok(Done::Stored)));
        assert!(matches!(outcomes[2], Err(StoreError::NotFound)));
        assert!(matches!(outcomes[3], Ok(Done::Stored)));
        assert_eq!(schema.count("SELECT count(*) FROM access_tokens").await, 2);
        // The failing grant's refresh record, valid on its own, is not stored.
        let stored: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT token_hash FROM refresh_tokens ORDER BY token_hash")
                .fetch_all(&schema.pool)
                .await
                .unwrap();
        assert_eq!(stored, vec![vec![1; 32], vec![4; 32]]);
        schema.drop().await;
    }

    /// A batch whose commit fails is not run again, alone or together: the
    /// commit may have happened for all the server can tell, and a rotation
    /// run twice would look like reuse. Every caller hears of the failure,
    /// and nothing of the batch is stored.
    #[tokio::test]
    async fn a_failed_commit_fails_every_job_and_is_not_run_again() {
        let schema = Schema::new().await;
        schema
            .store(None, Some(refresh(1, "family-1", "client")))
            .await;
        // A deferred constraint trigger fails the commit, after every
        // statement of the batch has succeeded.
        schema
            .execute_all(&[
                "CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.jti = 'refused-at-commit' THEN \
                 RAISE EXCEPTION 'refused at commit'; END IF; RETURN NULL; END $$",
                "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON access_tokens \
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()",
            ])
            .await;
        let batch = WriteBatch::new(schema.pool.clone());
        let outcomes = one_batch(
            &batch,
            vec![
                rotate(1, 2, "jti-rotated", 5),
                Work::Tokens {
                    access: Some(access("refused-at-commit", "family-9", "client")),
                    refresh: None,
                },
                tokens(3, "client"),
            ],
        )
        .await;
        for outcome in &outcomes {
            assert!(
                matches!(outcome, Err(StoreError::Internal(why)) if why.contains("refused at commit"))
            );
        }
        assert_eq!(schema.count("SELECT count(*) FROM access_tokens").await, 0);
        assert_eq!(
            schema
                .count("SELECT count(*) FROM refresh_tokens WHERE used_at IS NULL")
                .await,
            1
        );
        assert_eq!(schema.count("SELECT count(*) FROM refresh_tokens").await, 1);
        schema.drop().await;
    }

    /// Makes inserting the access token `stalls`, from its attempt number
    /// `from` on (1 for the first), keep its transaction busy for 4 s, as a
    /// database that stopped answering would. The attempts are counted by a
    /// sequence, which a rollback does not undo.
    async fn stall_inserts_of_stalls(schema: &Schema, from: i64) {
        schema
            .execute_all(&[
                "CREATE SEQUENCE stall_attempts",
                &format!(
                    "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$ \
                     BEGIN IF NEW.jti = 'stalls' AND nextval('stall_attempts') >= {from} \
                     THEN PERFORM pg_sleep(4); END IF; RETURN NEW; END $$"
                ),
                "CREATE TRIGGER stall BEFORE INSERT ON access_tokens \
                 FOR EACH ROW EXECUTE FUNCTION stall()",
            ])
            .await;
    }

    /// A batch that failed (a grant whose client is gone) runs each job
    /// alone; once one of them is stuck, the jobs after it fail at once
    /// instead of each waiting out its own time.
    #[tokio::test]
    async fn after_a_stuck_job_run_alone_the_rest_fail_at_once() {
        let schema = Schema::new().await;
        // Not when the three are inserted together, which fails on the
        // first's client, but when `stalls` is inserted alone.
        stall_inserts_of_stalls(&schema, 2).await;
        let batch = WriteBatch::with_timeout(schema.pool.clone(), Duration::from_secs(2));
        let outcomes = one_batch(
            &batch,
            vec![
                Work::Tokens {
                    access: Some(access("jti-1", "family-1", "gone")),
                    refresh: None,
                },
                Work::Tokens {
                    access: Some(access("stalls", "family-2", "client")),
                    refresh: None,
                },
                tokens(3, "client"),
            ],
        )
        .await;
        assert!(matches!(outcomes[0], Err(StoreError::NotFound)));
        assert!(matches!(outcomes[1], Err(StoreError::Unavailable(_))));
        assert!(matches!(outcomes[2], Err(StoreError::Unavailable(_))));
        schema.drop().await;
    }

    /// A batch stuck in the database fails its jobs as unavailable once its
    /// time is up; nothing of it is stored, and the next batch is done.
    #[tokio::test]
    async fn a_stuck_batch_fails_its_jobs_and_the_next_batch_is_done() {
        let schema = Schema::new().await;
        schema
            .store(None, Some(refresh(1, "family-1", "client")))
            .await;
        stall_inserts_of_stalls(&schema, 1).await;
        // Long enough for the next batch on a busy machine, well under the
        // stall.
        let batch = WriteBatch::with_timeout(schema.pool.clone(), Duration::from_secs(2));
        let outcomes = one_batch(
            &batch,
            vec![
                rotate(1, 2, "jti-rotated", 5),
                Work::Tokens {
                    access: Some(access("stalls", "family-9", "client")),
                    refresh: None,
                },
            ],
        )
        .await;
        for outcome in &outcomes {
            assert!(matches!(outcome, Err(StoreError::Unavailable(_))));
        }

        let outcomes = one_batch(&batch, vec![tokens(3, "client")]).await;
        assert!(matches!(outcomes[0], Ok(Done::Stored)));
        // The stuck transaction is rolled back once its statement ends: the
        // lock its rotation took on token 1 is then released, the token
        // unspent, and neither access token stored.
        let unlocked = sqlx::query_scalar::<_, Option<i64>>(
            "SELECT used_at FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
        )
        .bind(vec![1u8; 32])
        .fetch_one(&schema.pool);
        let used_at = tokio::time::timeout(Duration::from_secs(30), unlocked)
            .await
            .expect("the stuck transaction still holds its locks")
            .unwrap();
        assert_eq!(used_at, None);
        assert_eq!(
            schema
                .count("SELECT count(*) FROM access_tokens WHERE jti IN ('stalls', 'jti-rotated')")
                .await,
            0
        );
        schema.drop().await;
    }

    /// Rotations in one batch: the first presentation of a token decides;
    /// a refused one gives the token back for a later presentation; a
    /// presentation after a rotation is reuse and revokes the family,
    /// including the successor stored in the same batch; tokens spent
    /// before, unknown ones and another tenant's are not rotated.
    #[tokio::test]
    async fn rotations_of_a_token_in_one_batch_are_decided_in_queue_order() {
        let schema = Schema::new().await;
        for (n, family) in [(1, "f1"), (3, "f3"), (11, "f11")] {
            schema.store(None, Some(refresh(n, family, "client"))).await;
        }
        schema
            .store(
                Some(access("a9", "f9", "client")),
                Some(refresh(9, "f9", "client")),
            )
            .await;
        sqlx::query("UPDATE refresh_tokens SET used_at = 1 WHERE family_id = 'f9'")
            .execute(&schema.pool)
            .await
            .unwrap();
        let mut other_tenant = rotate(11, 13, "other-tenant", 5);
        if let Work::Rotate { tenant, .. } = &mut other_tenant {
            *tenant = TenantId(2);
        }
        let batch = WriteBatch::new(schema.pool.clone());
        let outcomes = one_batch(
            &batch,
            vec![
                rotate(1, 0, "", 5),
                rotate(1, 2, "after-1", 6),
                rotate(1, 20, "again-1", 7),
                rotate(3, 4, "after-3", 8),
                rotate(3, 30, "again-3", 9),
                rotate(11, 12, "after-11", 10),
                rotate(9, 10, "after-9", 11),
                rotate(7, 8, "unknown", 12),
                other_tenant,
                tokens(50, "client"),
            ],
        )
        .await;
        let rotated = |i: usize, jti: &str| matches!(&outcomes[i], Ok(Done::Rotation(Rotation::Rotated(next))) if next.access.jti == jti);
        let reused = |i: usize| matches!(outcomes[i], Ok(Done::Rotation(Rotation::Reused)));
        let unknown = |i: usize| matches!(outcomes[i], Ok(Done::Rotation(Rotation::Unknown)));
        assert!(matches!(
            &outcomes[0],
            Ok(Done::Rotation(Rotation::Refused(TokenError::InvalidGrant(
                "refused"
            ))))
        ));
        assert!(rotated(1, "after-1") && reused(2));
        assert!(rotated(3, "after-3") && reused(4));
        assert!(rotated(5, "after-11"));
        assert!(reused(6) && unknown(7) && unknown(8));
        assert!(matches!(outcomes[9], Ok(Done::Stored)));
        let count = |sql: &'static str| schema.count(sql);
        // Family 1: spent by the second job, at its time; its successor and
        // access token stored, then revoked by the reuse.
        assert_eq!(
            count("SELECT used_at FROM refresh_tokens WHERE token_hash = decode(repeat('01', 32), 'hex')").await,
            6
        );
        assert_eq!(
            count("SELECT count(*) FROM refresh_tokens WHERE family_id = 'f1' AND revoked_at = 7")
                .await,
            2
        );
        assert_eq!(
            count("SELECT count(*) FROM access_tokens WHERE jti = 'after-1' AND revoked_at = 7")
                .await,
            1
        );
        // Family 3: rotated in step 1, its successor stored in step 2, then
        // revoked by the reuse in step 3.
        assert_eq!(
            count("SELECT count(*) FROM refresh_tokens WHERE family_id = 'f3' AND revoked_at = 9")
                .await,
            2
        );
        assert_eq!(
            count("SELECT count(*) FROM access_tokens WHERE jti = 'after-3' AND revoked_at = 9")
                .await,
            1
        );
        // Family 11: rotated once, by its own tenant, and kept.
        assert_eq!(
            count(
                "SELECT count(*) FROM refresh_tokens WHERE family_id = 'f11' AND revoked_at IS NULL"
            )
            .await,
            2
        );
        assert_eq!(
            count("SELECT used_at FROM refresh_tokens WHERE token_hash = decode(repeat('0b', 32), 'hex')").await,
            10
        );
        // Family 9 was spent before: revoked, nothing new stored.
        assert_eq!(
            count("SELECT count(*) FROM refresh_tokens WHERE family_id = 'f9' AND revoked_at = 11")
                .await,
            1
        );
        assert_eq!(
            count("SELECT count(*) FROM access_tokens WHERE family_id = 'f9' AND revoked_at = 11")
                .await,
            1
        );
        assert_eq!(
            count("SELECT count(*) FROM access_tokens WHERE jti IN ('again-1', 'again-3', 'after-9', 'unknown', 'other-tenant')").await,
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM refresh_tokens WHERE family_id = 'family-50'").await,
            1
        );
        schema.drop().await;
    }

    /// Redemptions in one batch: a refused one leaves the code for a later
    /// presentation; a replay after the redemption revokes what it issued,
    /// also when that was stored in the same statement as the rest of the
    /// batch; a code redeemed once keeps its tokens.
    #[tokio::test]
    async fn redemptions_of_a_code_in_one_batch_are_decided_in_queue_order() {
        let schema = Schema::new().await;
        for (n, family) in [(7, "c7"), (5, "c5"), (6, "c6")] {
            schema.code(n, family).await;
        }
        let batch = WriteBatch::new(schema.pool.clone());
        let outcomes = one_batch(
            &batch,
            vec![
                redeem(7, "", 2),
                redeem(7, "first-7", 3),
                redeem(7, "replay-7", 4),
                redeem(8, "unknown", 4),
                redeem(5, "first-5", 4),
                redeem(5, "replay-5", 5),
                redeem(6, "first-6", 5),
            ],
        )
        .await;
        let redeemed = |i: usize, jti: &str| matches!(&outcomes[i], Ok(Done::Redemption(CodeRedemption::Redeemed(issued))) if issued.access.jti == jti);
        let replayed =
            |i: usize| matches!(outcomes[i], Ok(Done::Redemption(CodeRedemption::Replayed)));
        assert!(matches!(
            &outcomes[0],
            Ok(Done::Redemption(CodeRedemption::Refused(
                TokenError::InvalidGrant("refused")
            )))
        ));
        assert!(redeemed(1, "first-7") && replayed(2));
        assert!(matches!(
            outcomes[3],
            Ok(Done::Redemption(CodeRedemption::Unknown))
        ));
        assert!(redeemed(4, "first-5") && replayed(5));
        assert!(redeemed(6, "first-6"));
        let count = |sql: &'static str| schema.count(sql);
        assert_eq!(
            count("SELECT count(*) FROM authorization_codes WHERE used_at IS NOT NULL").await,
            3
        );
        for (family, revoked) in [("c7", "4"), ("c5", "5")] {
            let sql = format!(
                "SELECT (SELECT count(*) FROM access_tokens WHERE family_id = '{family}' AND revoked_at = {revoked}) \
                 + (SELECT count(*) FROM refresh_tokens WHERE family_id = '{family}' AND revoked_at = {revoked})"
            );
            assert_eq!(
                sqlx::query_scalar::<_, i64>(&sql)
                    .fetch_one(&schema.pool)
                    .await
                    .unwrap(),
                2,
                "{family}"
            );
        }
        assert_eq!(
            count(
                "SELECT count(*) FROM access_tokens WHERE jti = 'first-6' AND revoked_at IS NULL"
            )
            .await,
            1
        );
        assert_eq!(count("SELECT count(*) FROM access_tokens").await, 3);
        schema.drop().await;
    }

    /// Two nodes' batches that present the same token at once: one rotates
    /// it, the other sees reuse and revokes the family, successor included.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_presenting_one_token_rotate_it_once() {
        let schema = Schema::new().await;
        schema.store(None, Some(refresh(1, "f1", "client"))).await;
        let nodes = [
            WriteBatch::new(schema.pool.clone()),
            WriteBatch::new(schema.pool.clone()),
        ];
        let (a, b) = tokio::join!(
            nodes[0].write(rotate(1, 2, "node-a", 5)),
            nodes[1].write(rotate(1, 3, "node-b", 5)),
        );
        let outcomes = [a.unwrap(), b.unwrap()];
        let rotated = outcomes
            .iter()
            .filter(|o| matches!(o, Done::Rotation(Rotation::Rotated(_))))
            .count();
        let reused = outcomes
            .iter()
            .filter(|o| matches!(o, Done::Rotation(Rotation::Reused)))
            .count();
        assert_eq!((rotated, reused), (1, 1));
        assert_eq!(
            schema
                .count(
                    "SELECT count(*) FROM refresh_tokens WHERE family_id = 'f1' AND revoked_at = 5"
                )
                .await,
            2
        );
        schema.drop().await;
    }

    /// A job whose caller has gone before its batch starts is not done: a
    /// rotation nobody receives would spend the token.
    #[tokio::test]
    async fn a_job_whose_caller_has_gone_is_not_done() {
        let schema = Schema::new().await;
        schema.store(None, Some(refresh(1, "f1", "client"))).await;
        let batch = WriteBatch::new(schema.pool.clone());
        drop(queue(&batch, rotate(1, 2, "nobody", 5)));
        let kept = queue(&batch, tokens(50, "client"));
        Arc::clone(&batch).drain(batch.queue.drainer()).await;
        assert!(matches!(kept.await.unwrap(), Ok(Done::Stored)));
        assert_eq!(
            schema
                .count("SELECT count(*) FROM refresh_tokens WHERE used_at IS NULL")
                .await,
            2
        );
        schema.drop().await;
    }

    /// A decision that panics fails its own job; the other jobs of its
    /// batch are done, and the code it was about stays unused.
    #[tokio::test]
    async fn a_panicking_decision_fails_only_its_job() {
        let schema = Schema::new().await;
        schema.code(7, "c7").await;
        let batch = WriteBatch::new(schema.pool.clone());
        let outcomes = one_batch(
            &batch,
            vec![
                Work::Redeem {
                    tenant: TenantId(1),
                    code_hash: SecretHash(vec![7; 32]),
                    now: UnixTime(2),
                    decide: Box::new(|_| panic!("a bug in a decision")),
                },
                tokens(1, "client"),
            ],
        )
        .await;
        assert!(matches!(outcomes[0], Err(StoreError::Internal(_))));
        assert!(matches!(outcomes[1], Ok(Done::Stored)));
        assert_eq!(
            schema
                .count("SELECT count(*) FROM authorization_codes WHERE used_at IS NULL")
                .await,
            1
        );
        schema.drop().await;
    }

    /// Writes put at the same time are all done and answered, and the
    /// queue is idle afterwards; a write put later starts a new task.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_all_done() {
        let schema = Schema::new().await;
        let batch = WriteBatch::new(schema.pool.clone());
        let mut writes = tokio::task::JoinSet::new();
        for n in 1..=200u8 {
            let batch = Arc::clone(&batch);
            writes.spawn(async move { batch.write(tokens(n, "client")).await });
        }
        for outcome in writes.join_all().await {
            assert!(matches!(outcome, Ok(Done::Stored)));
        }
        assert_eq!(
            schema.count("SELECT count(*) FROM access_tokens").await,
            200
        );
        assert_eq!(
            schema.count("SELECT count(*) FROM refresh_tokens").await,
            200
        );
        assert!(batch.queue.goes_idle().await);
        batch.write(tokens(201, "client")).await.unwrap();
        assert_eq!(
            schema.count("SELECT count(*) FROM refresh_tokens").await,
            201
        );
        schema.drop().await;
    }

    /// A draining task dropped before the queue is empty (its runtime shut
    /// down) leaves the queue idle, and fails the jobs it held.
    #[test]
    fn a_dropped_task_leaves_the_queue_idle() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let schema = runtime.block_on(Schema::new());
        let batch = WriteBatch::new(schema.pool.clone());
        let sent = queue(&batch, tokens(1, "client"));
        // Polled once, the task has sent the first batch's first statement;
        // a job queued then waits for the next batch.
        let mut drain = Box::pin(Arc::clone(&batch).drain(batch.queue.drainer()));
        let polled = runtime.block_on(poll_once(drain.as_mut()));
        assert!(
            polled.is_none(),
            "the batch cannot be done on the first poll"
        );
        let waiting = queue(&batch, tokens(2, "client"));
        {
            // As a runtime drops its tasks: inside its context.
            let _context = runtime.enter();
            drop(drain);
        }
        assert!(batch.queue.is_idle());
        assert!(runtime.block_on(sent).is_err());
        assert!(runtime.block_on(waiting).is_err());
        // The next write starts a new task.
        runtime.block_on(batch.write(tokens(3, "client"))).unwrap();
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
