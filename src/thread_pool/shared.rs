//! The state a pool shares with its workers: the queue, the sleepers, the
//! thread count and the shutdown gate.
//!
//! Guarantees:
//! - A job that `push` accepted is run, cancelled or failed: never left in
//!   the queue with no worker to take it (a worker that cannot start fails
//!   the submit that needed it, see `push` and `fail_stranded`; a worker
//!   that leaves after its idle timeout is replaced by the next submit
//!   that finds none left, see the `headcount` module).
//! - A broken pool reports `BrokenPool`, before and after shutdown.

use std::io;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::SegQueue;

use super::gate::Gate;
use super::headcount::Headcount;
use super::job::JobRef;
use super::main_loop;
use super::sleep::Sleep;
use crate::Error;
use crate::error::Cause;
use crate::sync::{AtomicUsize, Condvar, Mutex, Ordering, fence, lock};

/// Returns `Err(reason)` when a worker's initializer fails.
pub(crate) type Initializer = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

pub(crate) struct Shared {
    pub(crate) queue: SegQueue<JobRef>,
    pub(crate) sleep: Sleep,
    /// Closes the pool to submissions (see the `gate` module).
    pub(crate) gate: Gate,
    /// Workers that found the queue empty after a task and have not been
    /// claimed by a submit since (Python's `_idle_semaphore`). Only kept while
    /// the pool may still grow.
    idle: AtomicUsize,
    /// Workers counted now (starting ones included); an idle one leaves
    /// after `idle_timeout`.
    pub(crate) headcount: Headcount,
    /// Threads started so far (for their names and `threads_started`).
    spawned: AtomicUsize,
    idle_timeout: Option<Duration>,
    /// CPUs this process may run on, read once.
    cpus: usize,
    thread_name_prefix: String,
    pub(crate) initializer: Option<Initializer>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// Worker threads started and not yet finished, and how many of them
    /// are themselves waiting in `shutdown(wait)`. Every waiting caller
    /// waits on `exited`, not only the first.
    live: Mutex<Threads>,
    exited: Condvar,
    /// Why the pool is broken (set once, by the first failure).
    broken: OnceLock<String>,
    /// Why the last worker thread failed to start.
    spawn_error: Mutex<Option<Arc<io::Error>>>,
}

/// What [`Shared::spawn_thread`] did.
enum Start {
    Started,
    /// The pool has `max_workers` threads already.
    Full,
    /// The thread could not start; `others` workers are running or starting.
    Failed {
        reason: Arc<io::Error>,
        others: usize,
    },
}

/// The error for a job that no worker can run because none could be
/// started. The pool is not broken: a later submit tries again.
fn spawn_failed(reason: Option<Arc<io::Error>>) -> Error {
    Error::SpawnFailed(match reason {
        Some(e) => Cause::with_source(format!("could not start a worker thread: {e}"), ArcIo(e)),
        None => Cause::new("could not start a worker thread"),
    })
}

/// An `io::Error` shared by the futures it fails (`io::Error` is not
/// `Clone`), as their errors' source.
#[derive(Debug)]
struct ArcIo(Arc<io::Error>);

impl std::fmt::Display for ArcIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ArcIo {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Shared {
    pub(crate) fn new(
        max_workers: usize,
        thread_name_prefix: String,
        initializer: Option<Initializer>,
        idle_timeout: Option<Duration>,
    ) -> Shared {
        Shared {
            queue: SegQueue::new(),
            sleep: Sleep::new(),
            gate: Gate::new(),
            idle: AtomicUsize::new(0),
            headcount: Headcount::new(max_workers),
            spawned: AtomicUsize::new(0),
            idle_timeout,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            thread_name_prefix,
            initializer,
            handles: Mutex::new(Vec::new()),
            live: Mutex::new(Threads::default()),
            exited: Condvar::new(),
            broken: OnceLock::new(),
            spawn_error: Mutex::new(None),
        }
    }

    pub(crate) fn max_workers(&self) -> usize {
        self.headcount.max()
    }

    pub(crate) fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// Queues a job and makes sure a worker will run it.
    ///
    /// A worker is started (when one is needed) *before* the job is queued,
    /// so that when no thread can be started and none runs, the job is
    /// refused instead of being queued where nobody would ever take it.
    pub(crate) fn push(self: &std::sync::Arc<Self>, job: JobRef) -> Result<(), (Error, JobRef)> {
        let Some(entered) = self.gate.enter() else {
            // Python's order, and the process pool's: broken before shut down.
            let error = match self.is_broken() {
                true => self.broken_error(),
                false => Error::ShutDown,
            };
            return Err((error, job));
        };
        if self.is_broken() {
            drop(entered);
            return Err((self.broken_error(), job));
        }
        let mut no_thread = None;
        if self.headcount.get() < self.max_workers() && !self.claim_idle() {
            if let Start::Failed { reason, others: 0 } = self.spawn_thread() {
                no_thread = Some(reason);
            }
        }
        if let Some(reason) = no_thread {
            drop(entered);
            // Jobs that others queued counting on a start that failed too.
            self.fail_stranded();
            return Err((spawn_failed(Some(reason)), job));
        }
        self.queue.push(job);
        self.sleep.wake_one();
        // Failing futures runs their done callbacks, which may shut this pool
        // down: only outside the gate, or `close` would wait for us forever.
        drop(entered);
        if self.is_broken() {
            // Broke while we pushed: fail it (and anything else) ourselves.
            self.fail_queued();
        } else if self.headcount.get() == 0 {
            // We queued counting on a worker that has left since (idle
            // timeout), or that another submitter was starting and whose
            // start failed: nobody would take the job. Start one; if none
            // can start, fail what is stranded. (The check is after
            // `wake_one`'s fence, as the `headcount` protocol and
            // `fail_stranded` need.)
            if let Start::Failed { others: 0, .. } = self.spawn_thread() {
                self.fail_stranded();
            }
        }
        Ok(())
    }

    /// Fails the queued jobs if no worker runs and none is being started:
    /// nobody would ever take them.
    ///
    /// Called after a start failed with no other worker counted. Whoever
    /// queues a job, or brings the count down to zero by a failed start,
    /// calls this afterwards (SeqCst on both sides): either it sees no
    /// worker and fails the job, or the job is visible to whoever brings the
    /// count to zero later, or a worker runs it. (A worker that leaves after
    /// its idle timeout never fails jobs: it stays if it sees one, see the
    /// `headcount` module.)
    fn fail_stranded(&self) {
        loop {
            fence(Ordering::SeqCst);
            if self.headcount.get() > 0 {
                return;
            }
            let Some(job) = self.queue.pop() else { return };
            if self.headcount.get() > 0 {
                // A worker started meanwhile: it is the one to run the job.
                // Put it back and look again (the loop ends on the count).
                self.queue.push(job);
                self.sleep.wake_one();
                continue;
            }
            let reason = lock(&self.spawn_error).clone();
            job.fail(spawn_failed(reason));
        }
    }

    /// Takes one idle permit, if there is one.
    fn claim_idle(&self) -> bool {
        self.idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Called by a worker after a task, before completing its future: one
    /// permit more, never more than there are workers. (Also in a full
    /// pool, where no submit claims one: once idle workers leave, the one
    /// still at work must have given its permit, or the next submit starts
    /// a thread beside it, as many times as workers leave.)
    pub(crate) fn note_idle(&self) {
        if self.queue.is_empty() {
            let workers = self.headcount.get();
            let _ = self
                .idle
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < workers).then(|| n + 1)
                });
        }
    }

    /// Called by a worker whose loop ended (it left after its idle timeout,
    /// or the pool closed): takes back an idle permit it may have left, so
    /// that a submit does not count on a worker that is gone instead of
    /// starting one. (A hint only: a submit that does so anyway still
    /// starts a worker when none is left.)
    ///
    /// The permits are brought down to the idle workers left, not by one:
    /// permits are not anyone's, and under a trickle of work taking one
    /// back took the permit that the one busy worker had just given, so
    /// that the next submit started a thread, which left in turn (a thread
    /// started per idle timeout, for good); and the permits of a full pool
    /// may outnumber its idle workers by more than one.
    pub(crate) fn worker_left(&self) {
        let idle_workers = self.sleep.idle();
        let _ = self
            .idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > idle_workers).then_some(idle_workers)
            });
    }

    /// Starts one more worker if the pool may grow.
    ///
    /// Never panics: a thread that cannot start (out of threads, of memory
    /// for its stack) is reported, and the pool stays usable.
    fn spawn_thread(self: &std::sync::Arc<Self>) -> Start {
        if self.headcount.join().is_none() {
            return Start::Full;
        }
        let index = self.spawned.fetch_add(1, Ordering::Relaxed);
        let shared = std::sync::Arc::clone(self);
        lock(&self.live).live += 1;
        // The builder checked the prefix for NUL bytes, on which `name`
        // would make `spawn` panic.
        let spawned = std::thread::Builder::new()
            .name(format!("{}_{}", self.thread_name_prefix, index))
            .spawn(move || {
                CURRENT_POOL.with(|p| p.set(std::sync::Arc::as_ptr(&shared) as usize));
                let _exit = ExitGuard(&shared);
                main_loop::run(&shared)
            });
        match spawned {
            Ok(handle) => {
                let mut handles = lock(&self.handles);
                // Threads that left after their idle timeout are done:
                // forget them, or a long-lived pool would collect handles.
                handles.retain(|h| !h.is_finished());
                handles.push(handle);
                Start::Started
            }
            Err(e) => {
                self.spawned.fetch_sub(1, Ordering::Relaxed);
                let reason = Arc::new(e);
                *lock(&self.spawn_error) = Some(Arc::clone(&reason));
                self.thread_exited();
                let others = self.headcount.cancel_join();
                Start::Failed { reason, others }
            }
        }
    }

    /// Whether this pool's awake workers, plus one submitter, outnumber the
    /// CPUs (see the `sleep` module).
    pub(crate) fn crowded(&self) -> bool {
        let started = self.headcount.get();
        started.saturating_sub(self.sleep.sleepers()) + 1 > self.cpus
    }

    /// Threads started so far (those that failed to start not counted).
    pub(crate) fn threads_started(&self) -> usize {
        self.spawned.load(Ordering::Relaxed)
    }

    /// Worker threads whose thread function has not returned yet.
    pub(crate) fn live_threads(&self) -> usize {
        lock(&self.live).live
    }

    /// Closes the pool to submissions; returns once no submit is in flight.
    pub(crate) fn close(&self) {
        self.gate.close();
        self.sleep.wake_all();
    }

    pub(crate) fn cancel_queued(&self) {
        while let Some(job) = self.queue.pop() {
            job.cancel();
        }
    }

    /// A worker's initializer failed: no task will run any more.
    pub(crate) fn mark_broken(&self, reason: String) {
        if self.broken.set(reason.clone()).is_ok() {
            // Said once, as Python logs a failed initializer: a program that
            // never looks at the futures' errors still learns why.
            crate::trace::diag!(
                error,
                "concurrent_futures: thread pool {} is broken, its queued and later tasks fail: {reason}",
                self.thread_name_prefix
            );
        }
        self.fail_queued();
        self.sleep.wake_all();
    }

    fn fail_queued(&self) {
        while let Some(job) = self.queue.pop() {
            job.fail(self.broken_error());
        }
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.get().is_some()
    }

    fn broken_error(&self) -> Error {
        let reason = self.broken.get().cloned().unwrap_or_default();
        Error::BrokenPool(reason)
    }

    fn thread_exited(&self) {
        lock(&self.live).live -= 1;
        self.exited.notify_all();
    }

    /// Waits until every worker has finished, then joins them. Called from
    /// one of this pool's own workers (a task shutting its pool down), it
    /// waits until every *other* worker has finished or is itself waiting
    /// here, and joins nobody: two tasks shutting the pool down at once must
    /// not wait for (or join) each other.
    pub(crate) fn join_threads(&self) {
        let own = CURRENT_POOL.with(|p| p.get()) == self as *const Shared as usize;
        let mut threads = lock(&self.live);
        if own {
            threads.waiting += 1;
            self.exited.notify_all();
        }
        // Another caller waits for every worker, those waiting here included.
        let others = |t: &Threads| if own { t.live - t.waiting } else { t.live };
        while others(&threads) > 0 {
            threads = self.exited.wait(threads).unwrap_or_else(|p| p.into_inner());
        }
        if own {
            threads.waiting -= 1;
            return;
        }
        drop(threads);
        let handles = std::mem::take(&mut *lock(&self.handles));
        for handle in handles {
            let _ = handle.join();
        }
    }
}

std::thread_local! {
    /// The pool (its `Shared`, by address) whose worker the current thread
    /// is, or 0.
    static CURRENT_POOL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts a worker out when its thread function ends, however it ends.
struct ExitGuard<'a>(&'a Shared);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        self.0.thread_exited();
    }
}

/// See [`Shared::join_threads`].
#[derive(Default)]
struct Threads {
    live: usize,
    waiting: usize,
}
