//! [`Shared`]: what an MPI executor shares with the MPI thread: its
//! settings, its queue of jobs not sent yet, and its count of jobs not done.
//!
//! Guarantees:
//! * no user code runs under the lock;
//! * after [`shutdown`](Shared::shutdown) no job is accepted; once the pool
//!   is broken every queued and later job fails with [`Error::BrokenPool`];
//! * a queued job is either cancelled (by `shutdown(cancel_futures)` or its
//!   future's `cancel`, and then never sent) or taken by the MPI thread,
//!   which completes it;
//! * `shutdown` with `wait` returns once every job of the executor is done
//!   and its done callbacks ran.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::thread::{Command, MpiThread};
use crate::Error;
use crate::process_pool::InitCall;
use crate::process_pool::callbacks::Callbacks;
use crate::remote::client::Dispatch;
use crate::remote::job::{Payload, Sink};

/// The settings of an executor.
pub(super) struct Config {
    /// Jobs in flight per worker rank at most.
    pub(super) window: usize,
    pub(super) initializer: Option<InitCall>,
    /// The per-task timeout of every job (only with isolation).
    pub(super) timeout: Option<Duration>,
}

/// A job not sent yet.
pub(super) struct Job {
    pub(super) payload: Payload,
    pub(super) sink: Box<dyn Sink>,
    /// Its per-task timeout: its own, else the executor's.
    pub(super) timeout: Option<Duration>,
}

pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) thread: &'static MpiThread,
    state: Mutex<State>,
    /// Notified when `State::undone` drops to zero.
    all_done: Condvar,
    /// `State::shutdown`, readable without the lock.
    closed: AtomicBool,
    /// Where the done callbacks of futures the MPI thread completes run.
    pub(super) callbacks: Callbacks,
}

struct State {
    queue: VecDeque<Job>,
    /// Jobs accepted and not done (queued or sent).
    undone: usize,
    shutdown: bool,
    broken: Option<String>,
}

impl Dispatch for Arc<Shared> {
    fn executor(&self) -> &'static str {
        "mpi"
    }
    fn dispatch(
        &self,
        payload: Payload,
        sink: Box<dyn Sink>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let timeout = timeout.or(self.config.timeout);
        {
            let mut st = self.lock();
            if let Some(reason) = &st.broken {
                return Err(Error::BrokenPool(reason.clone()));
            }
            if st.shutdown {
                return Err(Error::ShutDown);
            }
            st.queue.push_back(Job {
                payload,
                sink,
                timeout,
            });
            st.undone += 1;
        }
        if !self.thread.send(Command::Wake) {
            // The program is exiting: the job will never be sent.
            self.break_pool("the program is exiting: MPI was finalized".into());
        }
        Ok(())
    }
}

impl Shared {
    pub(super) fn new(config: Config, thread: &'static MpiThread) -> Shared {
        Shared {
            config,
            thread,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                undone: 0,
                shutdown: false,
                broken: None,
            }),
            all_done: Condvar::new(),
            closed: AtomicBool::new(false),
            callbacks: Callbacks::new("mpi-pool-callbacks"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code that can panic runs under the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next queued job, for the MPI thread.
    pub(super) fn pop(&self) -> Option<Job> {
        self.lock().queue.pop_front()
    }

    /// `n` jobs are done (completed, failed or cancelled).
    pub(super) fn finished(&self, n: usize) {
        let mut st = self.lock();
        st.undone -= n;
        if st.undone == 0 {
            self.all_done.notify_all();
        }
    }

    /// Shut down, with nothing queued or sent: the MPI thread may forget it.
    pub(super) fn is_drained(&self) -> bool {
        self.closed.load(Ordering::Acquire) && self.lock().undone == 0
    }

    /// Marks the pool broken and fails what is queued (from the MPI thread:
    /// the callbacks go to the callback threads).
    pub(super) fn break_pool(&self, reason: String) {
        let failed: Vec<Job> = {
            let mut st = self.lock();
            if st.broken.is_none() {
                st.broken = Some(reason.clone());
            }
            st.queue.drain(..).collect()
        };
        let n = failed.len();
        for job in failed {
            self.callbacks
                .run(job.sink.fail(Error::BrokenPool(reason.clone())));
        }
        if n > 0 {
            self.finished(n);
        }
    }

    /// Stops accepting work; cancels the queue if asked; waits for every
    /// job and callback if asked.
    pub(super) fn shutdown(&self, wait: bool, cancel_futures: bool) {
        let cancelled: Vec<Job> = {
            let mut st = self.lock();
            st.shutdown = true;
            self.closed.store(true, Ordering::Release);
            if cancel_futures {
                st.queue.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        let n = cancelled.len();
        for job in cancelled {
            // Callbacks of a cancel run in the cancelling thread.
            job.sink.cancel();
        }
        if n > 0 {
            self.finished(n);
        }
        // Let the MPI thread see the shutdown (and forget us once drained).
        self.thread.send(Command::Wake);
        if wait {
            let mut st = self.lock();
            while st.undone > 0 {
                st = self.all_done.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            drop(st);
            self.callbacks.join();
        }
    }
}
