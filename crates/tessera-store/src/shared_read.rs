//! One read of a value shared by every caller that asked for it before the
//! read was sent: fewer round trips, and still as fresh as a read of one's
//! own.
//!
//! PostgreSQL's configuration version is read on every request, a round
//! trip each. A caller that arrives while a read is on its way cannot use
//! that read: it may have been sent before a change the caller must see. So
//! the caller waits for the next read, which it shares with everyone who
//! arrived in the meantime. Under load one read serves a round trip's worth
//! of requests; an idle server reads once per request, as before.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::watch;

/// See the module documentation. `T` is the value, `E` the read's error.
pub(crate) struct SharedRead<T, E> {
    rounds: Mutex<Rounds<T, E>>,
    /// Moves whenever a read ends or its caller gives it up.
    ended: watch::Sender<u64>,
}

struct Rounds<T, E> {
    /// The number of the next read to be sent.
    next: u64,
    in_flight: bool,
    /// The last read that ended: its number and outcome.
    last: Option<(u64, Result<T, E>)>,
}

enum Step<T, E> {
    Done(Result<T, E>),
    Lead(u64),
    Wait(watch::Receiver<u64>),
}

impl<T, E> std::fmt::Debug for SharedRead<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedRead")
    }
}

impl<T: Clone, E: Clone> SharedRead<T, E> {
    pub(crate) fn new() -> Self {
        SharedRead {
            rounds: Mutex::new(Rounds {
                next: 0,
                in_flight: false,
                last: None,
            }),
            ended: watch::channel(0).0,
        }
    }

    /// The outcome of a read sent after this call began: this caller's own
    /// `read`, or another caller's sent since. A failed read fails every
    /// caller it served (the version's callers then run without the cache).
    pub(crate) async fn get<F, Fut>(&self, read: F) -> Result<T, E>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // Reads numbered `ticket` or later were sent after this call began.
        let ticket = self.lock().next;
        loop {
            let step = {
                let mut rounds = self.lock();
                match &rounds.last {
                    Some((number, outcome)) if *number >= ticket => Step::Done(outcome.clone()),
                    _ if !rounds.in_flight => {
                        rounds.in_flight = true;
                        rounds.next += 1;
                        Step::Lead(rounds.next - 1)
                    }
                    // Subscribed under the lock: the end of the read in
                    // flight cannot be missed.
                    _ => Step::Wait(self.ended.subscribe()),
                }
            };
            match step {
                Step::Done(outcome) => return outcome,
                Step::Wait(mut ended) => {
                    let _ = ended.changed().await;
                }
                Step::Lead(number) => {
                    let mut lead = Lead {
                        shared: self,
                        outcome: None,
                        number,
                    };
                    let outcome = read().await;
                    lead.outcome = Some(outcome.clone());
                    return outcome;
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rounds<T, E>> {
        // The lock is never held across a panic that could poison it: only
        // plain assignments run under it.
        self.rounds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The caller sending a read. Dropped when the read ended, or when its
/// caller gave up waiting (its request was cancelled): either way the others
/// are told, and in the second one of them sends the next read.
struct Lead<'a, T: Clone, E: Clone> {
    shared: &'a SharedRead<T, E>,
    outcome: Option<Result<T, E>>,
    number: u64,
}

impl<T: Clone, E: Clone> Drop for Lead<'_, T, E> {
    fn drop(&mut self) {
        {
            let mut rounds = self.shared.lock();
            rounds.in_flight = false;
            if let Some(outcome) = self.outcome.take() {
                rounds.last = Some((self.number, outcome));
            }
        }
        self.shared.ended.send_modify(|ends| *ends += 1);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    /// A value that moves on every change, and a read of it that takes a
    /// while and counts itself.
    struct Source {
        value: AtomicU64,
        reads: AtomicU64,
    }

    impl Source {
        async fn read(&self) -> Result<u64, String> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let value = self.value.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(value)
        }
    }

    fn source() -> Arc<Source> {
        Arc::new(Source {
            value: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        })
    }

    /// Callers that arrive together share reads, and none gets a value older
    /// than the last change made before it arrived.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_share_reads_and_never_see_an_older_value() {
        let source = source();
        let shared = Arc::new(SharedRead::<u64, String>::new());
        let mut callers = Vec::new();
        for i in 0..200u64 {
            if i % 50 == 0 {
                source.value.fetch_add(1, Ordering::SeqCst);
            }
            let seen_before = source.value.load(Ordering::SeqCst);
            let (source, shared) = (source.clone(), shared.clone());
            callers.push(tokio::spawn(async move {
                let value = shared.get(|| source.read()).await.unwrap();
                assert!(value >= seen_before, "{value} < {seen_before}");
            }));
            tokio::time::sleep(Duration::from_micros(300)).await;
        }
        for caller in callers {
            caller.await.unwrap();
        }
        let reads = source.reads.load(Ordering::SeqCst);
        assert!(reads < 100, "{reads} reads for 200 callers");
    }

    /// A caller that arrives while a read is on its way waits for the next
    /// one, which sees the change made in between.
    #[tokio::test]
    async fn a_read_already_sent_does_not_serve_a_later_caller() {
        let source = source();
        let shared = Arc::new(SharedRead::<u64, String>::new());
        let first = tokio::spawn({
            let (source, shared) = (source.clone(), shared.clone());
            async move { shared.get(|| source.read()).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        source.value.store(7, Ordering::SeqCst);
        let second = shared.get(|| source.read()).await;
        assert_eq!(first.await.unwrap(), Ok(0));
        assert_eq!(second, Ok(7));
        assert_eq!(source.reads.load(Ordering::SeqCst), 2);
    }

    /// Callers that arrive while a read is on its way all share the next
    /// one, which sees the change made in between.
    #[tokio::test]
    async fn callers_that_arrive_during_a_read_share_the_next_one() {
        let source = source();
        let shared = Arc::new(SharedRead::<u64, String>::new());
        let get = |shared: &Arc<SharedRead<u64, String>>| {
            let (source, shared) = (source.clone(), shared.clone());
            tokio::spawn(async move { shared.get(|| source.read()).await })
        };
        let first = get(&shared);
        tokio::time::sleep(Duration::from_millis(5)).await;
        source.value.store(7, Ordering::SeqCst);
        let (second, third) = (get(&shared), get(&shared));
        assert_eq!(first.await.unwrap(), Ok(0));
        assert_eq!(second.await.unwrap(), Ok(7));
        assert_eq!(third.await.unwrap(), Ok(7));
        assert_eq!(source.reads.load(Ordering::SeqCst), 2);
    }

    /// The caller sending a read is cancelled: the others do not wait
    /// forever, one of them sends the next read.
    #[tokio::test]
    async fn a_cancelled_read_hands_over() {
        let source = source();
        let shared = Arc::new(SharedRead::<u64, String>::new());
        // A read that never ends, until its caller is cancelled.
        let cancelled = tokio::spawn({
            let shared = shared.clone();
            async move {
                shared
                    .get(std::future::pending::<Result<u64, String>>)
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let waiting = tokio::spawn({
            let (source, shared) = (source.clone(), shared.clone());
            async move { shared.get(|| source.read()).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        cancelled.abort();
        let outcome = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting caller was not left waiting");
        assert_eq!(outcome.unwrap(), Ok(0));
        assert_eq!(source.reads.load(Ordering::SeqCst), 1);
    }

    /// A failed read fails the callers it serves; the next caller reads again.
    #[tokio::test]
    async fn a_failed_read_is_not_kept() {
        let shared = SharedRead::<u64, String>::new();
        let failed = shared.get(|| async { Err("down".to_owned()) }).await;
        assert_eq!(failed, Err("down".to_owned()));
        assert_eq!(shared.get(|| async { Ok(3) }).await, Ok(3));
    }
}
