//! The shutdown gate: how a pool closes to submissions without a lock on
//! the submit path.
//!
//! Guarantees:
//! - Once [`Gate::close`] has returned (in any thread), [`Gate::enter`]
//!   fails, and every submitter that did enter has left: nothing can reach
//!   the queue any more.
//! - [`Gate::closed`] turns true only at that point, so a worker that sees
//!   it and then finds the queue empty knows the queue stays empty.
//!
//! A submitter counts itself in (one atomic add) for as long as it queues
//! its job; closing sets the `CLOSED` bit, then waits for the count to
//! drain. Model-checked in `tests/loom_thread_pool.rs`.

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicBool, AtomicUsize, Ordering, yield_now};

/// Set in `count` once the pool is closed to new submissions.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// See the module documentation.
pub struct Gate {
    /// Submitters inside, plus the `CLOSED` bit. Padded: submitters write
    /// it twice per task, and it must not share a cache line with the flags
    /// workers poll.
    count: CachePadded<AtomicUsize>,
    /// Closed and drained: no job can enter the queue any more.
    drained: AtomicBool,
}

/// A submitter inside the gate; leaves when dropped.
pub struct Entered<'a>(&'a Gate);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl Gate {
    /// An open gate.
    pub fn new() -> Gate {
        Gate {
            count: CachePadded::new(AtomicUsize::new(0)),
            drained: AtomicBool::new(false),
        }
    }

    /// Enters the gate to queue a job, unless the pool is closed. Hold the
    /// guard until the job is in the queue.
    pub fn enter(&self) -> Option<Entered<'_>> {
        let entered = Entered(self);
        if self.count.fetch_add(1, Ordering::SeqCst) & CLOSED != 0 {
            return None; // `entered` leaves again
        }
        Some(entered)
    }

    /// Closes the gate; returns once no submitter is inside. Idempotent, and
    /// every caller returns only once the gate is drained. Never call it
    /// while holding an [`Entered`] (it would wait for itself).
    pub fn close(&self) {
        let before = self.count.fetch_or(CLOSED, Ordering::SeqCst);
        if before & CLOSED == 0 {
            while self.count.load(Ordering::SeqCst) & !CLOSED != 0 {
                yield_now();
            }
            self.drained.store(true, Ordering::SeqCst);
        }
        while !self.drained.load(Ordering::SeqCst) {
            yield_now();
        }
    }

    /// True once no job can be added to the queue any more.
    pub fn closed(&self) -> bool {
        self.drained.load(Ordering::SeqCst)
    }
}
