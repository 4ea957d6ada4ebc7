//! [`Callbacks`]: where the done callbacks of futures completed by a remote
//! pool's internal threads run (the process pool's supervisors, the MPI
//! pool's MPI thread).
//!
//! The pool's own threads (a worker's supervisor, the timer) complete
//! futures, but never run user code: a callback that submits to the same
//! pool and waits for the result would otherwise block the very thread that
//! reads the answer it waits for. They hand the callbacks to a small thread
//! pool of this crate's own, started on first use.
//!
//! Guarantees:
//! * a future's callbacks run once each, in registration order, on one of
//!   the pool's callback threads (named after the pool, e.g.
//!   `process-pool-callbacks_N`), after
//!   the future's waiters were woken;
//! * a callback may block, even on its own pool: the next completion's
//!   callbacks get another thread (up to [`MAX_THREADS`] at once, then they
//!   queue);
//! * callbacks of futures completed by a user's thread (`cancel`,
//!   `shutdown(cancel_futures)`) run in that thread, as everywhere else;
//! * shutting the pool down with `wait` waits for the callbacks to finish;
//! * with an idle timeout, a callback thread idle that long ends (a pool
//!   with nothing to do holds no callback thread).

use std::sync::OnceLock;
use std::time::Duration;

use crate::future::DeferredCallbacks;
use crate::{ThreadPoolBuilder, ThreadPoolExecutor};

/// Most callback threads of one pool.
const MAX_THREADS: usize = 32;

pub(crate) struct Callbacks {
    /// The callback threads' name prefix.
    prefix: &'static str,
    idle_timeout: Option<Duration>,
    threads: OnceLock<Option<ThreadPoolExecutor>>,
}

impl Callbacks {
    /// No thread yet; they will be named `{prefix}_N`.
    pub(crate) fn new(prefix: &'static str) -> Callbacks {
        Callbacks {
            prefix,
            idle_timeout: None,
            threads: OnceLock::new(),
        }
    }

    /// Callback threads idle for `timeout` end (`None`, the default: they
    /// live until shutdown).
    pub(crate) fn idle_timeout(mut self, timeout: Option<Duration>) -> Callbacks {
        self.idle_timeout = timeout;
        self
    }

    /// Runs `deferred` on a callback thread (at once in this thread if none
    /// can be had, so that nothing is lost).
    pub(crate) fn run(&self, deferred: DeferredCallbacks) {
        if deferred.is_empty() {
            return;
        }
        let threads = self.threads.get_or_init(|| {
            let builder = ThreadPoolBuilder::new()
                .max_workers(MAX_THREADS)
                .thread_name_prefix(self.prefix);
            match self.idle_timeout {
                Some(timeout) => builder.idle_timeout(timeout),
                None => builder,
            }
            .build()
            .ok()
        });
        match threads {
            // A refused submission drops the closure, which runs the
            // callbacks here: late, never lost.
            Some(pool) => drop(pool.submit(move || deferred.run())),
            None => deferred.run(),
        }
    }

    /// Waits for every callback handed over so far (at shutdown).
    pub(crate) fn join(&self) {
        if let Some(Some(pool)) = self.threads.get() {
            pool.shutdown(true, false);
        }
    }
}
