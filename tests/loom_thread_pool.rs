//! Model-checks the thread pool's sleep/wake, close and idle-exit protocols
//! with loom: every interleaving (up to the preemption bound) of a submit
//! racing a worker that goes to sleep, a submit racing `shutdown`,
//! `shutdown` racing a searching worker, and submits racing a worker that
//! leaves the pool after its idle timeout.
//!
//! Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     LOOM_MAX_PREEMPTIONS=3 cargo test --release --test loom_thread_pool
//! ```
//!
//! What runs is the pool's own code, reached through the `#[doc(hidden)]`
//! module `thread_pool::__loom` that exists only under `--cfg loom`: the
//! worker's `next_job` loop (search, last checks, sleep, leaving), `Sleep`
//! (wake-ups), `Gate` (closing) and `Headcount` (counting workers in and
//! out), all built on the crate's `sync` facade, which is loom's under
//! `--cfg loom`. Under loom time does not pass: a worker with an idle
//! timeout that finds no wake-up token times out at once, the most racy
//! case. Two things are stand-ins:
//!
//! - The queue. Loom cannot see inside crossbeam's `SegQueue` (its atomics
//!   are std's), so `Bag` stands in: the queued job ids as bits of one loom
//!   atomic, pushed with Release and popped or inspected with Acquire. That
//!   is weaker than `SegQueue` (which also uses SeqCst), so the protocols'
//!   own fences must carry every proof; order (FIFO) plays no part in them.
//! - The submit and close paths, as `Model::submit` and `Model::close`: the
//!   lines of `Shared::push` and `Shared::close` that these protocols
//!   consist of. Starting a worker is a loom thread running the same
//!   worker loop, counted in the same way (`Headcount::join`).
//!
//! A lost wake-up shows up as a deadlock (loom fails the model when every
//! thread is blocked), a lost job as a failed assertion.
#![cfg(loom)]

use std::time::Duration;

use concurrent_futures::thread_pool::__loom::{Gate, Headcount, Idle, JobQueue, Sleep, next_job};
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread::{self, JoinHandle};

/// Runs `f` under loom with a preemption bound (overridable by
/// LOOM_MAX_PREEMPTIONS) so that the suite finishes in reasonable time.
fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// [`model`] with at most `bound` preemptions (or fewer, from the
/// environment), for a model too large to explore at the usual bound.
fn model_bounded<F: Fn() + Sync + Send + 'static>(bound: usize, f: F) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(builder.preemption_bound.map_or(bound, |b| b.min(bound)));
    builder.check(f);
}

/// The queue's stand-in: job `id` is queued while bit `id` is set.
#[derive(Default)]
struct Bag(AtomicUsize);

impl Bag {
    fn push(&self, id: u32) {
        let old = self.0.fetch_or(1 << id, Ordering::Release);
        assert_eq!(old & (1 << id), 0, "job {id} queued twice");
    }
}

impl JobQueue for Bag {
    type Job = u32;

    fn pop(&self) -> Option<u32> {
        let taken = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                (bits != 0).then(|| bits & (bits - 1))
            })
            .ok()?;
        Some(taken.trailing_zeros())
    }

    fn is_empty(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }
}

/// What a pool's workers share, as `Shared` holds it.
struct Model {
    queue: Bag,
    sleep: Sleep,
    gate: Gate,
    broken: AtomicBool,
    /// The workers counted; only the idle-exit models use it.
    headcount: Headcount,
    /// `Some`: workers leave once idle (at once, under loom).
    idle_timeout: Option<Duration>,
    /// Workers that submits started, and what they will have run.
    started: Mutex<Vec<JoinHandle<Vec<u32>>>>,
}

impl Default for Model {
    fn default() -> Self {
        Model::new(usize::MAX, None)
    }
}

impl Model {
    fn new(max_workers: usize, idle_timeout: Option<Duration>) -> Model {
        Model {
            queue: Bag::default(),
            sleep: Sleep::new(),
            gate: Gate::new(),
            broken: AtomicBool::new(false),
            headcount: Headcount::new(max_workers),
            idle_timeout,
            started: Mutex::new(Vec::new()),
        }
    }

    /// `Shared::push`, less the starting of threads: false if closed.
    fn submit(&self, id: u32) -> bool {
        let Some(entered) = self.gate.enter() else {
            return false;
        };
        self.queue.push(id);
        self.sleep.wake_one();
        drop(entered);
        true
    }

    /// Joins every worker started through `start_worker`: the jobs they ran.
    fn join_started(&self) -> Vec<u32> {
        let handles = std::mem::take(&mut *self.started.lock().unwrap());
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    }

    /// `Shared::close`.
    fn close(&self) {
        self.gate.close();
        self.sleep.wake_all();
    }

    /// `Shared::mark_broken`, less failing the queued futures.
    fn mark_broken(&self) {
        self.broken.store(true, Ordering::SeqCst);
        self.sleep.wake_all();
    }

    /// A worker's life: the ids of the jobs it ran, in order, until
    /// `next_job` tells it to exit (or `limit` jobs, to end the model).
    fn work(&self, limit: usize) -> Vec<u32> {
        let broken = || self.broken.load(Ordering::SeqCst);
        let idle = Idle {
            queue: &self.queue,
            sleep: &self.sleep,
            gate: &self.gate,
            headcount: &self.headcount,
            idle_timeout: self.idle_timeout,
            broken: &broken,
            crowded: &|| false,
        };
        let mut ran = Vec::new();
        while ran.len() < limit {
            match next_job(&idle) {
                Some(id) => ran.push(id),
                None => break,
            }
        }
        ran
    }
}

/// `Shared::push` of a pool whose workers leave when idle: queue the job,
/// wake a sleeper, and start a worker if none is counted any more (the
/// check after `wake_one`'s fence).
fn submit_and_start(pool: &Arc<Model>, id: u32) {
    assert!(pool.submit(id));
    if pool.headcount.get() == 0 {
        start_worker(pool);
    }
}

/// `Shared::spawn_thread`: a worker, if the count has room for one.
fn start_worker(pool: &Arc<Model>) {
    if pool.headcount.join().is_some() {
        let p = Arc::clone(pool);
        let handle = thread::spawn(move || p.work(usize::MAX));
        pool.started.lock().unwrap().push(handle);
    }
}

#[test]
fn submit_races_a_worker_going_to_sleep() {
    // The worker searches, finds nothing, announces its sleep and checks
    // once more, while the job is pushed and the submitter decides whom to
    // wake: whatever the order, the worker gets the job.
    model(|| {
        let pool = Arc::new(Model::default());
        let p = Arc::clone(&pool);
        let worker = thread::spawn(move || p.work(1));
        assert!(pool.submit(0));
        assert_eq!(worker.join().unwrap(), [0]);
    });
}

#[test]
fn two_submits_race_two_workers() {
    // A burst: each job is taken exactly once, and neither worker sleeps
    // through a job left in the queue. With three threads and a shutdown,
    // this model is the largest: at most two preemptions keep it to
    // seconds (three take minutes).
    model_bounded(2, || {
        let pool = Arc::new(Model::default());
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let p = Arc::clone(&pool);
                thread::spawn(move || p.work(2))
            })
            .collect();
        assert!(pool.submit(0));
        assert!(pool.submit(1));
        // Shut down to end the workers (and the model) once the jobs ran.
        pool.close();
        let mut ran: Vec<u32> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        ran.sort_unstable();
        assert_eq!(ran, [0, 1]);
    });
}

#[test]
fn a_burst_reaches_every_worker() {
    // Each worker takes one job and ends, so the two jobs must reach two
    // different workers: a worker that takes one must not leave the other
    // to itself while another worker sleeps (in the pool, the second job
    // would wait for the first to end).
    model(|| {
        let pool = Arc::new(Model::default());
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let p = Arc::clone(&pool);
                thread::spawn(move || p.work(1))
            })
            .collect();
        assert!(pool.submit(0));
        assert!(pool.submit(1));
        let mut ran: Vec<u32> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        ran.sort_unstable();
        assert_eq!(ran, [0, 1]);
    });
}

#[test]
fn submit_races_close() {
    // After `close` returns no job can enter; a job that got in is run
    // (the worker exits only once it is), never lost, never run twice.
    model(|| {
        let pool = Arc::new(Model::default());
        let p = Arc::clone(&pool);
        let worker = thread::spawn(move || p.work(2));
        let p = Arc::clone(&pool);
        let submitter = thread::spawn(move || p.submit(0));
        pool.close();
        assert!(pool.gate.enter().is_none(), "entered a closed gate");
        assert!(!pool.submit(1), "submitted after close returned");
        let accepted = submitter.join().unwrap();
        let ran = worker.join().unwrap();
        match accepted {
            true => assert_eq!(ran, [0], "an accepted job was lost"),
            false => assert!(ran.is_empty()),
        }
        assert!(pool.queue.is_empty());
    });
}

#[test]
fn close_races_a_searching_worker() {
    // An idle worker, searching or on its way to sleep, exits once the
    // pool is closed: shutdown(wait) does not hang.
    model(|| {
        let pool = Arc::new(Model::default());
        let p = Arc::clone(&pool);
        let worker = thread::spawn(move || p.work(1));
        pool.close();
        assert!(worker.join().unwrap().is_empty());
    });
}

#[test]
fn breaking_races_a_searching_worker() {
    // The same when an initializer breaks the pool.
    model(|| {
        let pool = Arc::new(Model::default());
        let p = Arc::clone(&pool);
        let worker = thread::spawn(move || p.work(1));
        pool.mark_broken();
        assert!(worker.join().unwrap().is_empty());
    });
}

#[test]
fn submit_races_an_idle_worker_leaving() {
    // The pool's only worker times out idle and leaves while a job is
    // queued: either the worker sees the job and stays to run it, or the
    // submitter sees the count at zero and starts a worker. The job runs
    // exactly once, and every worker ends up counted out.
    model(|| {
        let pool = Arc::new(Model::new(1, Some(Duration::from_secs(1))));
        start_worker(&pool);
        submit_and_start(&pool, 0);
        let ran = pool.join_started();
        assert_eq!(ran, [0], "the job was lost or run twice");
        assert!(pool.queue.is_empty());
        assert_eq!(pool.headcount.get(), 0);
    });
}

#[test]
fn two_submits_race_an_idle_worker_leaving() {
    // Two submitters while the only worker (of at most one) leaves: one may
    // start a new worker while the leaving one, seeing a job, tries to
    // count itself back in and finds the pool full. Either way both jobs
    // run, each once. Three threads plus the workers they start: at most
    // two preemptions keep it to seconds.
    model_bounded(2, || {
        let pool = Arc::new(Model::new(1, Some(Duration::from_secs(1))));
        start_worker(&pool);
        let p = Arc::clone(&pool);
        let other = thread::spawn(move || submit_and_start(&p, 1));
        submit_and_start(&pool, 0);
        other.join().unwrap();
        let mut ran = pool.join_started();
        ran.sort_unstable();
        assert_eq!(ran, [0, 1], "a job was lost or run twice");
        assert!(pool.queue.is_empty());
        assert_eq!(pool.headcount.get(), 0);
    });
}

#[test]
fn an_idle_worker_leaving_races_one_that_stays_busy() {
    // Two workers (of at most two): one leaves idle while the other is
    // taking the first job; the second job must reach a worker even though
    // the count does not fall to zero (the submitter starts nobody).
    model_bounded(2, || {
        let pool = Arc::new(Model::new(2, Some(Duration::from_secs(1))));
        start_worker(&pool);
        start_worker(&pool);
        submit_and_start(&pool, 0);
        submit_and_start(&pool, 1);
        let mut ran = pool.join_started();
        ran.sort_unstable();
        assert_eq!(ran, [0, 1], "a job was lost or run twice");
        assert!(pool.queue.is_empty());
        assert_eq!(pool.headcount.get(), 0);
    });
}
