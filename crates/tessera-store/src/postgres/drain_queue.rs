//! A queue that one task at a time drains, many jobs per round trip: the
//! scaffolding shared by PostgreSQL's write batches and token reads.
//!
//! No task runs while nothing is queued. The caller whose job finds the
//! queue idle starts the task; the task takes the jobs queued while its
//! last round ran (up to a limit per round) and ends when the queue is
//! empty. A job queued while a round is on its way waits for the next
//! round, so it is served by a statement sent after it arrived.

use std::sync::{Arc, Mutex};

/// See the module documentation.
pub(crate) struct DrainQueue<J> {
    inner: Mutex<Inner<J>>,
}

struct Inner<J> {
    jobs: Vec<J>,
    /// Whether a task is draining the queue.
    draining: bool,
}

impl<J> std::fmt::Debug for DrainQueue<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("DrainQueue")
            .field("jobs", &inner.jobs.len())
            .field("draining", &inner.draining)
            .finish()
    }
}

impl<J> DrainQueue<J> {
    pub(crate) fn new() -> Self {
        DrainQueue {
            inner: Mutex::new(Inner {
                jobs: Vec::new(),
                draining: false,
            }),
        }
    }

    /// Queues `job`. True if no task was draining the queue: the caller
    /// must start one, which calls [`drainer`](Self::drainer).
    #[must_use]
    pub(crate) fn push(&self, job: J) -> bool {
        let mut inner = self.lock();
        inner.jobs.push(job);
        !std::mem::replace(&mut inner.draining, true)
    }

    /// The draining task's handle on the queue. Made before the task is
    /// spawned and moved into it, so that a task dropped before its first
    /// poll (its runtime shutting down) still leaves the queue idle.
    pub(crate) fn drainer(self: &Arc<Self>) -> Drainer<J> {
        Drainer {
            queue: Arc::clone(self),
            armed: true,
        }
    }

    /// Whether no task is draining and no job is queued.
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        let inner = self.lock();
        !inner.draining && inner.jobs.is_empty()
    }

    /// Whether the queue is idle within a few seconds: the last caller can
    /// hear back before its task has found the queue empty.
    #[cfg(test)]
    pub(crate) async fn goes_idle(&self) -> bool {
        for _ in 0..500 {
            if self.is_idle() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<J>> {
        // Only pushes and swaps run under the lock: a panic cannot leave
        // the queue halfway changed.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Held by the task draining a [`DrainQueue`]. If the task ends before the
/// queue is empty (a panic, or its runtime dropped it), the queue is marked
/// idle and its jobs dropped, so that their callers hear of the failure
/// (their reply channels close) rather than wait for the next caller to
/// start a task.
pub(crate) struct Drainer<J> {
    queue: Arc<DrainQueue<J>>,
    armed: bool,
}

impl<J> Drainer<J> {
    /// The next round: up to `max` jobs, oldest first. `None` when the queue
    /// is empty, which it is then marked idle: the task must end.
    pub(crate) fn next_round(&mut self, max: usize) -> Option<Vec<J>> {
        debug_assert!(self.armed, "a drainer is used after the queue went idle");
        let mut inner = self.queue.lock();
        if inner.jobs.is_empty() {
            inner.draining = false;
            self.armed = false;
            return None;
        }
        let taken = inner.jobs.len().min(max);
        let rest = inner.jobs.split_off(taken);
        Some(std::mem::replace(&mut inner.jobs, rest))
    }
}

impl<J> Drop for Drainer<J> {
    fn drop(&mut self) {
        if self.armed {
            let jobs = {
                let mut inner = self.queue.lock();
                inner.draining = false;
                std::mem::take(&mut inner.jobs)
            };
            // Dropped outside the lock: a job's drop may wake its caller.
            drop(jobs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_job_starts_a_task_and_an_empty_queue_ends_it() {
        let queue = Arc::new(DrainQueue::new());
        assert!(queue.push(1));
        assert!(!queue.push(2), "a task is already draining");
        let mut drainer = queue.drainer();
        assert!(!queue.push(3));
        assert_eq!(drainer.next_round(2), Some(vec![1, 2]));
        assert_eq!(drainer.next_round(2), Some(vec![3]));
        assert_eq!(drainer.next_round(2), None);
        drop(drainer);
        assert!(queue.is_idle());
        assert!(queue.push(4), "the next job starts a new task");
    }

    #[test]
    fn a_task_that_ends_early_leaves_the_queue_idle_and_drops_its_jobs() {
        let queue = Arc::new(DrainQueue::new());
        let (reply, answer) = tokio::sync::oneshot::channel::<()>();
        assert!(queue.push(reply));
        let drainer = queue.drainer();
        drop(drainer);
        assert!(queue.is_idle());
        assert!(answer.blocking_recv().is_err(), "the caller hears of it");
    }
}
