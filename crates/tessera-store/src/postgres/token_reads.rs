//! Token reads on PostgreSQL, many per query.
//!
//! Introspection and revocation look a token up by its hash (an opaque
//! access token, a refresh token) or by its `jti` (a JWT, for its
//! revocation): one query per request, a round trip through the pool each.
//! Here the lookups queued while the previous round ran are answered by one
//! `= ANY($1)` query per kind of lookup, whatever their number (up to
//! [`MAX_ROUND`]). Each is still answered by a query sent after it was
//! queued, so it sees every token committed before its request arrived, as
//! a query of its own would ([`super::drain_queue`]).
//!
//! A token hash and a `jti` each name at most one row across all tenants
//! (they are the primary or unique keys of their tables): the query reads
//! rows by key alone, and a row of another tenant answers "not found", as
//! the single query `... AND tenant_id = $2` did.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use sqlx::postgres::{PgHasArrayType, PgRow};
use sqlx::{PgPool, Postgres, Row};
use tessera_core::secret::SecretHash;
use tessera_core::{AccessTokenRecord, RefreshTokenRecord, TenantId};
use tokio::sync::oneshot;

use super::drain_queue::{DrainQueue, Drainer};
use crate::{StoreError, StoreResult};

/// Lookups in one round at most.
const MAX_ROUND: usize = 512;

/// One caller's lookup of a token of `tenant` by `key`.
struct Pending<K, T> {
    tenant: TenantId,
    key: K,
    reply: oneshot::Sender<StoreResult<Option<T>>>,
}

enum Lookup {
    AccessByHash(Pending<Vec<u8>, AccessTokenRecord>),
    AccessByJti(Pending<String, AccessTokenRecord>),
    RefreshByHash(Pending<Vec<u8>, RefreshTokenRecord>),
}

/// Reads tokens by hash or `jti`, many per query.
#[derive(Debug)]
pub(crate) struct TokenReads {
    pool: PgPool,
    queue: Arc<DrainQueue<Lookup>>,
}

impl TokenReads {
    pub(crate) fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(TokenReads {
            pool,
            queue: Arc::new(DrainQueue::new()),
        })
    }

    pub(crate) async fn access_token_by_hash(
        self: &Arc<Self>,
        tenant: TenantId,
        hash: &SecretHash,
    ) -> StoreResult<Option<AccessTokenRecord>> {
        let (pending, answer) = pending(tenant, hash.0.clone());
        self.ask(Lookup::AccessByHash(pending));
        answered(answer).await
    }

    pub(crate) async fn access_token_by_jti(
        self: &Arc<Self>,
        tenant: TenantId,
        jti: &str,
    ) -> StoreResult<Option<AccessTokenRecord>> {
        let (pending, answer) = pending(tenant, jti.to_owned());
        self.ask(Lookup::AccessByJti(pending));
        answered(answer).await
    }

    pub(crate) async fn refresh_token(
        self: &Arc<Self>,
        tenant: TenantId,
        hash: &SecretHash,
    ) -> StoreResult<Option<RefreshTokenRecord>> {
        let (pending, answer) = pending(tenant, hash.0.clone());
        self.ask(Lookup::RefreshByHash(pending));
        answered(answer).await
    }

    fn ask(self: &Arc<Self>, lookup: Lookup) {
        if self.queue.push(lookup) {
            // The drainer is made before the task: see `DrainQueue::drainer`.
            let drainer = self.queue.drainer();
            tokio::spawn(Arc::clone(self).drain(drainer));
        }
    }

    /// Answers rounds of lookups until the queue is empty.
    async fn drain(self: Arc<Self>, mut drainer: Drainer<Lookup>) {
        while let Some(lookups) = drainer.next_round(MAX_ROUND) {
            self.answer(lookups).await;
        }
    }

    /// Answers `lookups` with one query per kind of lookup among them, the
    /// queries side by side on connections of their own. Lookups whose
    /// callers have gone are left out.
    async fn answer(&self, lookups: Vec<Lookup>) {
        let mut by_hash = Vec::new();
        let mut by_jti = Vec::new();
        let mut refresh = Vec::new();
        for lookup in lookups {
            match lookup {
                Lookup::AccessByHash(p) if !p.reply.is_closed() => by_hash.push(p),
                Lookup::AccessByJti(p) if !p.reply.is_closed() => by_jti.push(p),
                Lookup::RefreshByHash(p) if !p.reply.is_closed() => refresh.push(p),
                _ => {}
            }
        }
        tokio::join!(
            self.answer_kind(
                "SELECT * FROM access_tokens WHERE token_hash = ANY($1)",
                "token_hash",
                by_hash,
                super::access_from_row,
            ),
            self.answer_kind(
                "SELECT * FROM access_tokens WHERE jti = ANY($1)",
                "jti",
                by_jti,
                super::access_from_row,
            ),
            self.answer_kind(
                "SELECT * FROM refresh_tokens WHERE token_hash = ANY($1)",
                "token_hash",
                refresh,
                super::refresh_from_row,
            ),
        );
    }

    /// Answers `lookups`, all of one kind, with one query: `sql` finds the
    /// rows whose `key_column` is in `$1`. A row that cannot be read fails
    /// only the lookups of its key.
    async fn answer_kind<K, T>(
        &self,
        sql: &'static str,
        key_column: &'static str,
        lookups: Vec<Pending<K, T>>,
        from_row: fn(&PgRow) -> StoreResult<T>,
    ) where
        K: Clone + Eq + Hash + Send + PgHasArrayType + for<'q> sqlx::Encode<'q, Postgres>,
        K: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
    {
        if lookups.is_empty() {
            return;
        }
        let keys: Vec<K> = lookups.iter().map(|lookup| lookup.key.clone()).collect();
        let query = sqlx::query(sql).bind(keys).fetch_all(&self.pool);
        let rows = super::answered_within(super::STUCK_AFTER, query)
            .await
            .and_then(|rows| rows_by_key::<K>(rows, key_column));
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => {
                for lookup in lookups {
                    let _ = lookup.reply.send(Err(error.clone()));
                }
                return;
            }
        };
        for lookup in lookups {
            let found = match rows.get(&lookup.key) {
                Some(row) if of_tenant(row, lookup.tenant) => from_row(row).map(Some),
                _ => Ok(None),
            };
            let _ = lookup.reply.send(found);
        }
    }
}

fn pending<K, T>(
    tenant: TenantId,
    key: K,
) -> (Pending<K, T>, oneshot::Receiver<StoreResult<Option<T>>>) {
    let (reply, answer) = oneshot::channel();
    (Pending { tenant, key, reply }, answer)
}

/// `rows` by the value of their `key_column`.
fn rows_by_key<K>(rows: Vec<PgRow>, key_column: &str) -> StoreResult<HashMap<K, PgRow>>
where
    K: Eq + Hash + for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    let mut by_key = HashMap::with_capacity(rows.len());
    for row in rows {
        by_key.insert(row.try_get::<K, _>(key_column)?, row);
    }
    Ok(by_key)
}

fn of_tenant(row: &PgRow, tenant: TenantId) -> bool {
    row.try_get::<i64, _>("tenant_id")
        .is_ok_and(|id| id == tenant.0)
}

async fn answered<T>(answer: oneshot::Receiver<StoreResult<T>>) -> StoreResult<T> {
    answer.await.unwrap_or_else(|_| {
        Err(StoreError::Internal(
            "the token reads stopped before this one".into(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::test_support::Schema;
    use crate::test_records::{access, refresh};

    /// An opaque access token of tenant 1 with hash `[n; 32]`.
    fn opaque(n: u8) -> AccessTokenRecord {
        AccessTokenRecord {
            token_hash: Some(SecretHash(vec![n; 32])),
            ..access(&format!("opaque-{n}"), "f", "client")
        }
    }

    fn hash(n: u8) -> SecretHash {
        SecretHash(vec![n; 32])
    }

    type Answer<T> = oneshot::Receiver<StoreResult<Option<T>>>;

    /// Queues lookups without starting a task, so that the test decides
    /// what a round holds.
    fn by_hash(reads: &TokenReads, tenant: i64, n: u8) -> Answer<AccessTokenRecord> {
        let (pending, answer) = pending(TenantId(tenant), hash(n).0);
        let _started = reads.queue.push(Lookup::AccessByHash(pending));
        answer
    }

    fn by_jti(reads: &TokenReads, tenant: i64, jti: &str) -> Answer<AccessTokenRecord> {
        let (pending, answer) = pending(TenantId(tenant), jti.to_owned());
        let _started = reads.queue.push(Lookup::AccessByJti(pending));
        answer
    }

    fn refresh_by_hash(reads: &TokenReads, tenant: i64, n: u8) -> Answer<RefreshTokenRecord> {
        let (pending, answer) = pending(TenantId(tenant), hash(n).0);
        let _started = reads.queue.push(Lookup::RefreshByHash(pending));
        answer
    }

    async fn found<T, V>(answer: Answer<T>, value: impl Fn(T) -> V) -> Option<V> {
        answer.await.unwrap().unwrap().map(value)
    }

    /// One round answers every kind of lookup, repeated ones included; a
    /// token of another tenant (2, which has none) is not found, nor is an
    /// unknown one.
    #[tokio::test]
    async fn one_round_answers_every_kind_of_lookup() {
        let schema = Schema::new().await;
        schema
            .store(Some(opaque(1)), Some(refresh(2, "f", "client")))
            .await;
        schema
            .store(Some(access("jwt-1", "f", "client")), None)
            .await;
        let reads = TokenReads::new(schema.pool.clone());
        let hashes = [
            by_hash(&reads, 1, 1),
            by_hash(&reads, 1, 1),
            by_hash(&reads, 2, 1),
            by_hash(&reads, 1, 9),
        ];
        let jtis = [
            by_jti(&reads, 1, "jwt-1"),
            by_jti(&reads, 2, "jwt-1"),
            by_jti(&reads, 1, "jwt-9"),
        ];
        let refreshes = [
            refresh_by_hash(&reads, 1, 2),
            refresh_by_hash(&reads, 2, 2),
            refresh_by_hash(&reads, 1, 1),
        ];
        let mut drainer = reads.queue.drainer();
        let round = drainer.next_round(MAX_ROUND).unwrap();
        assert_eq!(round.len(), 10);
        reads.answer(round).await;
        assert!(drainer.next_round(MAX_ROUND).is_none());
        assert!(reads.queue.is_idle());

        let jti = |t: AccessTokenRecord| t.jti;
        let mut answers = Vec::new();
        for answer in hashes {
            answers.push(found(answer, jti).await);
        }
        let opaque_1 = Some("opaque-1".to_owned());
        assert_eq!(answers, [opaque_1.clone(), opaque_1, None, None]);
        let mut answers = Vec::new();
        for answer in jtis {
            answers.push(found(answer, jti).await);
        }
        assert_eq!(answers, [Some("jwt-1".to_owned()), None, None]);
        let mut answers = Vec::new();
        for answer in refreshes {
            answers.push(found(answer, |t| t.token_hash).await);
        }
        assert_eq!(answers, [Some(hash(2)), None, None]);
        schema.drop().await;
    }

    /// A lookup queued while a round is on its way is not answered by that
    /// round but by the next, which sees a token stored in between.
    #[tokio::test]
    async fn a_lookup_queued_during_a_round_waits_for_the_next() {
        let schema = Schema::new().await;
        let reads = TokenReads::new(schema.pool.clone());
        let first = by_hash(&reads, 1, 1);
        let mut drainer = reads.queue.drainer();
        let round = drainer.next_round(MAX_ROUND).unwrap();
        let mut second = by_hash(&reads, 1, 1);
        reads.answer(round).await;
        assert!(found(first, |t| t.jti).await.is_none());
        assert!(matches!(
            second.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        schema.store(Some(opaque(1)), None).await;
        let round = drainer.next_round(MAX_ROUND).unwrap();
        reads.answer(round).await;
        assert!(drainer.next_round(MAX_ROUND).is_none());
        assert_eq!(found(second, |t| t.jti).await, Some("opaque-1".to_owned()));
        schema.drop().await;
    }

    /// Concurrent callers through the public methods are all answered, and
    /// the queue goes idle afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_lookups_are_all_answered() {
        let schema = Schema::new().await;
        for n in 1..=100u8 {
            schema
                .store(Some(opaque(n)), Some(refresh(n, "f", "client")))
                .await;
        }
        let reads = TokenReads::new(schema.pool.clone());
        let mut lookups = tokio::task::JoinSet::new();
        for n in 1..=200u8 {
            let reads = Arc::clone(&reads);
            lookups.spawn(async move {
                let access = reads.access_token_by_hash(TenantId(1), &hash(n)).await;
                let refresh = reads.refresh_token(TenantId(1), &hash(n)).await;
                (n, access.unwrap().is_some(), refresh.unwrap().is_some())
            });
        }
        for (n, access, refresh) in lookups.join_all().await {
            assert_eq!((access, refresh), (n <= 100, n <= 100), "token {n}");
        }
        assert!(reads.queue.goes_idle().await);
        schema.drop().await;
    }

    /// A query that fails fails the lookups it served, with the store's
    /// error (unavailable: the edge answers 503); none is left waiting, and
    /// the queue goes idle.
    #[tokio::test]
    async fn a_failed_query_fails_its_lookups() {
        let schema = Schema::new().await;
        let reads = TokenReads::new(schema.pool.clone());
        schema.pool.close().await;
        let token = hash(1);
        let (by_hash, by_jti) = tokio::join!(
            reads.access_token_by_hash(TenantId(1), &token),
            reads.access_token_by_jti(TenantId(1), "jwt"),
        );
        assert!(matches!(by_hash, Err(StoreError::Unavailable(_))));
        assert!(matches!(by_jti, Err(StoreError::Unavailable(_))));
        schema.drop().await;
    }

    /// A draining task dropped before its first poll (its runtime shut
    /// down) leaves the queue idle and fails the lookups it held.
    #[test]
    fn a_task_dropped_before_its_first_poll_leaves_the_queue_idle() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let schema = runtime.block_on(Schema::new());
        let reads = TokenReads::new(schema.pool.clone());
        let waiting = by_hash(&reads, 1, 1);
        let task = Arc::clone(&reads).drain(reads.queue.drainer());
        drop(task);
        assert!(reads.queue.is_idle());
        assert!(matches!(
            runtime.block_on(answered(waiting)),
            Err(StoreError::Internal(_))
        ));
        runtime.block_on(schema.drop());
    }
}
