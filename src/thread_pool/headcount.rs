//! How many worker threads a pool counts, and how an idle one leaves.
//!
//! Guarantees:
//! - At most `max` workers are counted, starting ones included.
//! - A worker that leaves after its idle timeout never strands a job: a
//!   job queued while it leaves is seen by it (and it stays), or by a
//!   submitter that then starts a worker, or by a worker still counted.
//!
//! The protocol (model-checked in `tests/loom_thread_pool.rs`): a leaving
//! worker takes itself out of the count, then (after a SeqCst fence) looks
//! at the queue once more, and counts itself back in if it finds work. A
//! submitter queues its job, then (after the SeqCst fence of
//! [`Sleep::wake_one`](super::sleep::Sleep::wake_one)) reads the count and
//! starts a worker if it is zero. Whichever order the two run in, either
//! the worker sees the job or the submitter sees the worker gone. A worker
//! that finds work but cannot count itself back in (the pool filled up
//! meanwhile) leaves anyway: the count is full of workers that joined after
//! it left, each of which looks at the queue before it sleeps.

use crate::sync::{AtomicUsize, Ordering, fence};

/// The count of a pool's workers (see the module documentation).
pub struct Headcount {
    count: AtomicUsize,
    max: usize,
}

impl Headcount {
    /// No worker yet, at most `max`.
    pub fn new(max: usize) -> Headcount {
        Headcount {
            count: AtomicUsize::new(0),
            max,
        }
    }

    /// The most workers counted at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Workers counted now (SeqCst: a submitter's check after queuing).
    pub fn get(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Counts one more worker, unless `max` are counted. Returns the count
    /// before, or `None` when full.
    pub fn join(&self) -> Option<usize> {
        self.count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
    }

    /// A worker counted by [`join`](Self::join) could not start. Returns how
    /// many others are counted.
    pub fn cancel_join(&self) -> usize {
        self.count.fetch_sub(1, Ordering::SeqCst) - 1
    }

    /// An idle worker's timeout expired: counts it out unless `has_work`
    /// (checked after counting out) finds something to do and it can count
    /// itself back in. True if it left: it must exit without taking a job.
    pub fn leave(&self, has_work: impl Fn() -> bool) -> bool {
        self.count.fetch_sub(1, Ordering::SeqCst);
        // Pairs with the fence of `Sleep::wake_one`, before the submitter
        // reads the count.
        fence(Ordering::SeqCst);
        !(has_work() && self.join().is_some())
    }
}
