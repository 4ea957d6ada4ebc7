//! [`Shared`]: what every thread of a process pool shares (its settings, the
//! queue of jobs, the worker slots), and the operations the public API calls
//! on it (submit, shutdown, terminate/kill, abort, pids).
//!
//! Threads: the user's; one supervisor thread per worker process (see
//! [`supervisor`](super::supervisor)); one timer thread when a per-task
//! timeout or an idle timeout is set (see [`timer`](super::timer)); callback
//! threads (see
//! [`callbacks`](super::callbacks)). They share one [`PoolState`] under one
//! mutex, and no thread ever polls.
//!
//! Guarantees:
//! * no user code runs under the lock, and none on the pool's internal
//!   threads: failures and batches to write are collected under the lock
//!   and acted on after it is released, and the done callbacks of futures
//!   that internal threads complete run on callback threads;
//! * an internal thread that panics (a bug) does not die silently: the pool
//!   is marked broken with the reason, what that thread held fails, and
//!   `shutdown` still returns;
//! * after [`shutdown`](Shared::shutdown) no job is accepted; once the pool is
//!   broken every queued and later job fails with [`Error::BrokenPool`];
//! * `shutdown` with `wait` returns once every thread of the pool is joined,
//!   except the calling thread when it is one of them (a done callback).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::Error;
use crate::remote::message::ByteBuf;
use crate::remote::tasks::TaskRef;

use super::callbacks::Callbacks;
use super::slot::{Slot, Stop};
use crate::remote::client::Dispatch;
use crate::remote::job::{Payload, Request, Sink};

/// The settings of a pool.
pub(super) struct Config {
    pub(super) max_workers: usize,
    pub(super) max_tasks_per_child: Option<usize>,
    pub(super) timeout: Option<Duration>,
    pub(super) initializer: Option<InitCall>,
    /// A worker idle this long is retired (`None`: never).
    pub(super) idle_timeout: Option<Duration>,
    /// A worker whose resident memory exceeds this many bytes after a batch
    /// is retired (`None`: never).
    pub(super) max_worker_memory: Option<u64>,
}

/// A registered task that runs once in every new worker.
pub(crate) struct InitCall {
    pub(crate) task: TaskRef,
    pub(crate) args: ByteBuf,
    /// Decodes the initializer's result: `Err` means it failed.
    pub(crate) check: fn(&[u8]) -> Result<(), String>,
}

pub(super) struct Shared {
    pub(super) config: Config,
    state: Mutex<PoolState>,
    /// Wakes the timer thread: notified whenever a deadline is set, a worker
    /// leaves or the pool shuts down.
    pub(super) timer: Condvar,
    /// Where the done callbacks of futures completed by internal threads run.
    pub(super) callbacks: Callbacks,
}

#[derive(Default)]
pub(super) struct PoolState {
    pub(super) queue: VecDeque<Request>,
    pub(super) slots: Vec<Slot>,
    pub(super) next_job: u64,
    pub(super) next_worker: u64,
    pub(super) shutdown: bool,
    pub(super) broken: Option<String>,
    /// Set by terminate/kill_workers: every worker, also one still
    /// starting, gets this signal.
    pub(super) kill_signal: Option<i32>,
    pub(super) threads: Vec<JoinHandle<()>>,
    pub(super) timer_running: bool,
}

impl PoolState {
    /// Where the slot of `worker` is; `None` once it left the pool.
    pub(super) fn slot_index(&self, worker: u64) -> Option<usize> {
        self.slots.iter().position(|s| s.id == worker)
    }

    pub(super) fn slot_mut(&mut self, worker: u64) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.id == worker)
    }
}

/// Futures to fail once the lock is released.
pub(super) type Failures = Vec<(Box<dyn Sink>, Error)>;

/// Cancels queued jobs (their futures are pending: nothing of theirs began),
/// running their callbacks in this thread.
pub(super) fn cancel_all(jobs: Vec<Request>) {
    for job in jobs {
        job.sink.cancel();
    }
}

impl Dispatch for Arc<Shared> {
    fn executor(&self) -> &'static str {
        "process"
    }
    fn dispatch(
        &self,
        payload: Payload,
        sink: Box<dyn Sink>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        self.submit(payload, sink, timeout)
    }
}

impl Shared {
    pub(super) fn new(config: Config) -> Shared {
        let callbacks = Callbacks::new("process-pool-callbacks").idle_timeout(config.idle_timeout);
        Shared {
            config,
            state: Mutex::new(PoolState {
                // Job ids start at 1: a zeroed ticket names no job.
                next_job: 1,
                ..PoolState::default()
            }),
            timer: Condvar::new(),
            callbacks,
        }
    }

    /// Fails futures from an internal thread: their callbacks go to the
    /// callback threads.
    pub(super) fn fail_all(&self, failures: Failures) {
        for (sink, error) in failures {
            self.callbacks.run(sink.fail(error));
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding the lock cannot leave the state half-updated
        // in a way that matters more than hanging would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job (with its own timeout, if any) and sends it at once if
    /// a worker is idle.
    fn submit(
        self: &Arc<Self>,
        payload: Payload,
        sink: Box<dyn Sink>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let mut st = self.lock();
        if let Some(reason) = &st.broken {
            return Err(Error::BrokenPool(reason.clone()));
        }
        if st.shutdown {
            return Err(Error::ShutDown);
        }
        let id = st.next_job;
        st.next_job += 1;
        st.queue.push_back(Request::new(id, payload, sink, timeout));
        let batches = self.schedule(&mut st);
        drop(st);
        batches.send(self);
        Ok(())
    }

    /// Kills a worker whose stream failed; its supervisor cleans up.
    pub(super) fn kill_worker(&self, worker: u64) {
        if let Some(slot) = self.lock().slot_mut(worker) {
            slot.signal(libc::SIGKILL);
        }
    }

    /// `Future::abort` of a running job: stop the worker running it.
    pub(super) fn abort(&self, job: u64) {
        let mut st = self.lock();
        for slot in &mut st.slots {
            if slot.inflight.iter().any(|j| j.id == job) {
                if !slot.is_dying() {
                    slot.aborted.push(job);
                    slot.signal(libc::SIGKILL);
                }
                return;
            }
        }
        // Not on a worker (put back in the queue after a crash): the future
        // is cancelled already and will be skipped.
    }

    /// Marks the pool broken and fails everything queued.
    pub(super) fn break_pool(&self, st: &mut PoolState, reason: String) -> Failures {
        if st.broken.is_none() {
            // Said once, as Python logs a failed initializer: a program that
            // never looks at the futures' errors still learns why.
            crate::trace::diag!(
                error,
                "concurrent_futures: a process pool is broken, its queued and later tasks fail: {reason}"
            );
            st.broken = Some(reason.clone());
        }
        st.queue
            .drain(..)
            .map(|job| (job.sink, Error::BrokenPool(reason.clone())))
            .collect()
    }

    /// Stops accepting work; cancels the queue if asked; lets idle workers
    /// exit; waits for every worker if asked.
    pub(super) fn shutdown(&self, wait: bool, cancel_futures: bool) {
        let (cancelled, sent_ahead) = {
            let mut st = self.lock();
            st.shutdown = true;
            let mut cancelled: Vec<Request> = Vec::new();
            let mut sent_ahead = Vec::new();
            if cancel_futures {
                cancelled = st.queue.drain(..).collect();
                // Jobs sent ahead that have not begun are cancellable too:
                // their gates decide, once the lock is released.
                sent_ahead = st
                    .slots
                    .iter()
                    .flat_map(|s| s.inflight.iter().map(|j| j.sink.canceller()))
                    .collect();
            }
            // Busy workers are closed by their supervisor once the queue is
            // empty (see `after_batch`).
            if st.queue.is_empty() {
                for slot in &mut st.slots {
                    if slot.idle() {
                        slot.close();
                    }
                }
            }
            self.timer.notify_all();
            (cancelled, sent_ahead)
        };
        cancel_all(cancelled);
        for canceller in sent_ahead {
            canceller.cancel();
        }
        if wait {
            self.join();
            self.callbacks.join();
        }
    }

    /// Sends `signal` to every worker; what they ran fails with
    /// [`Error::WorkerDied`], what was queued is cancelled.
    pub(super) fn signal_workers(&self, signal: i32) {
        {
            let mut st = self.lock();
            st.kill_signal = Some(signal);
            for slot in &mut st.slots {
                slot.stop(Stop::Pool, signal);
            }
        }
        self.shutdown(true, true);
    }

    /// Joins every thread of the pool (except the calling one, if it is a
    /// thread of the pool, e.g. in a done callback).
    fn join(&self) {
        let me = thread::current().id();
        // Joined threads may have started others (replacement workers):
        // loop until none is left.
        loop {
            let threads = std::mem::take(&mut self.lock().threads);
            if threads.is_empty() {
                return;
            }
            for handle in threads {
                if handle.thread().id() != me {
                    let _ = handle.join();
                }
            }
        }
    }

    /// The pids of the live worker processes.
    pub(super) fn pids(&self) -> Vec<u32> {
        self.lock().slots.iter().filter_map(Slot::pid).collect()
    }
}
