//! The loop each worker thread runs.
//!
//! Guarantees:
//! - A worker exits only when the pool is broken, or closed with an empty
//!   queue (which then stays empty), or after sleeping through its idle
//!   timeout, leaving as the `headcount` module says (a job queued
//!   meanwhile keeps it, or is seen by whoever queued it): a job that got
//!   into the queue is run by some worker, or cancelled or failed by
//!   shutdown.
//! - A worker never sleeps while a job it could take is queued (the `sleep`
//!   module's protocol).
//!
//! [`next_job`] is generic over the queue so that `tests/loom_thread_pool.rs`
//! can run this very code under loom, with a queue loom can model.

use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;

use super::gate::Gate;
use super::headcount::Headcount;
use super::job::JobRef;
use super::shared::Shared;
use super::sleep::Sleep;

pub(crate) fn run(shared: &Shared) {
    if let Some(init) = &shared.initializer {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(init))
            .unwrap_or_else(|p| Err(crate::error::panic_message(p.as_ref())));
        if let Err(reason) = outcome {
            shared.mark_broken(format!("a worker's initializer failed: {reason}"));
            return;
        }
    }
    let on_ran = || shared.note_idle();
    let pool = Idle {
        queue: &shared.queue,
        sleep: &shared.sleep,
        gate: &shared.gate,
        headcount: &shared.headcount,
        idle_timeout: shared.idle_timeout(),
        broken: &|| shared.is_broken(),
        crowded: &|| shared.crowded(),
    };
    while let Some(job) = next_job(&pool) {
        job.run(&on_ran);
    }
    shared.worker_left();
}

/// The queue as a worker sees it.
pub trait JobQueue {
    /// What the queue holds.
    type Job;
    /// Takes the oldest job, if any.
    fn pop(&self) -> Option<Self::Job>;
    /// Whether the queue looks empty.
    fn is_empty(&self) -> bool;
}

impl JobQueue for SegQueue<JobRef> {
    type Job = JobRef;
    fn pop(&self) -> Option<JobRef> {
        SegQueue::pop(self)
    }
    fn is_empty(&self) -> bool {
        SegQueue::is_empty(self)
    }
}

/// What a worker looks at between jobs.
pub struct Idle<'a, Q> {
    /// The pool's queue.
    pub queue: &'a Q,
    /// Searchers and sleepers.
    pub sleep: &'a Sleep,
    /// The shutdown gate.
    pub gate: &'a Gate,
    /// The pool's count of workers, which an idle worker leaves.
    pub headcount: &'a Headcount,
    /// How long a worker sleeps with nothing to do before it leaves the
    /// pool (`None`: it never leaves while the pool is open).
    pub idle_timeout: Option<Duration>,
    /// Whether the pool is broken (no task may run any more).
    pub broken: &'a dyn Fn() -> bool,
    /// Whether the pool's awake threads outnumber the CPUs.
    pub crowded: &'a dyn Fn() -> bool,
}

/// The next job for this worker to run, searching and sleeping as needed;
/// `None` when the worker should exit.
pub fn next_job<Q: JobQueue>(pool: &Idle<'_, Q>) -> Option<Q::Job> {
    let queue = pool.queue;
    // Work arrives in bursts: a worker that takes a job after it went idle
    // (searching, or on its way to sleep) brings another worker in if more
    // is queued, before running this one. Submitters skipped waking anyone
    // while it searched, and without this the rest of a burst could wait
    // for this job to end while other workers sleep (found by the loom
    // model). Not after every job: a busy pool would pay for the check.
    let take = |job, idle: bool| {
        if idle && !queue.is_empty() {
            pool.sleep.wake_one();
        }
        Some(job)
    };
    let mut idle = false;
    // When this idle spell times out: set at its first sleep, kept across
    // wake-ups that find nothing (another worker took the job).
    let mut deadline = None;
    loop {
        if (pool.broken)() {
            return None;
        }
        if let Some(job) = queue.pop() {
            return take(job, idle);
        }
        idle = true;
        let searching = match pool.sleep.search(|| queue.pop(), (pool.crowded)()) {
            Ok(job) => return take(job, idle),
            Err(searching) => searching,
        };
        if pool.gate.closed() {
            // Closed: nothing can be queued any more, so an empty queue stays
            // empty. One last pop covers a job queued just before closing.
            drop(searching);
            return queue.pop();
        }
        let has_work = || !queue.is_empty() || pool.gate.closed() || (pool.broken)();
        let Some(timeout) = pool.idle_timeout else {
            pool.sleep.sleep(searching, has_work, None);
            continue;
        };
        // Saturating: a deadline past the clock's range is never.
        let until = *deadline.get_or_insert_with(|| Instant::now().checked_add(timeout));
        let woken = pool.sleep.sleep(searching, has_work, until);
        if !woken && pool.headcount.leave(|| !queue.is_empty()) {
            return None;
        }
    }
}
