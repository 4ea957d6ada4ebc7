//! The timer thread of a pool with per-task timeouts (the pool's, or a
//! task's own from `submit_timeout`) or an idle timeout: it kills a worker
//! whose job runs past its deadline, so that the job fails with
//! [`Error::TaskTimeout`](crate::Error::TaskTimeout) and the worker is
//! replaced, and it closes a worker idle for the pool's `idle_timeout`
//! (the worker exits, its supervisor reaps it, and the next submit that
//! needs a worker starts one).
//!
//! Guarantees:
//! * at most one timer thread per pool, started with the first worker (or
//!   the first job with a timeout of its own) and ended once the pool is
//!   shut down with no worker and no job left (with an idle timeout, once
//!   no worker and no job is left at all: an idle pool holds no thread; the
//!   next worker starts it again);
//! * only an idle worker (ready, nothing in flight, not closing) is closed
//!   for its idle time, under the lock that the scheduler takes to send it
//!   a batch: a worker is never closed with a job sent to it;
//! * it sleeps on the pool's condvar until the nearest deadline: whoever sets
//!   a deadline, removes a worker or shuts the pool down notifies it;
//! * the job is marked timed out before its worker is killed, so that the
//!   supervisor fails it with the timeout, not as a crash; a worker already
//!   being reaped is never signalled.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use super::shared::{PoolState, Shared};
use super::slot::Stop;

impl Shared {
    /// Starts the timer thread if the pool needs one (it has a per-task
    /// timeout, or `needed`: a job with its own is being sent) and has none.
    pub(super) fn start_timer(self: &Arc<Self>, st: &mut PoolState, needed: bool) {
        let needed = needed || self.config.timeout.is_some() || self.config.idle_timeout.is_some();
        if needed && !st.timer_running && !st.slots.is_empty() {
            let shared = Arc::clone(self);
            if let Ok(handle) = thread::Builder::new()
                .name("process-pool-timer".into())
                .spawn(move || shared.timer_thread())
            {
                st.timer_running = true;
                st.threads.push(handle);
            }
        }
    }

    /// A panic here is a bug: it breaks the pool (whose deadlines nobody
    /// would enforce any more) instead of dying silently.
    fn timer_thread(self: Arc<Self>) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.run_timer())) {
            let message = crate::error::panic_message(payload.as_ref());
            self.lock().timer_running = false;
            self.internal_failure(None, format!("the timer thread panicked: {message}"));
        }
    }

    fn run_timer(&self) {
        let mut st = self.lock();
        loop {
            #[cfg(test)]
            super::supervisor::fault::maybe_panic(super::supervisor::fault::TIMER);
            let idle_pool = st.shutdown || self.config.idle_timeout.is_some();
            if idle_pool && st.slots.is_empty() && st.queue.is_empty() {
                st.timer_running = false;
                return;
            }
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            for slot in &mut st.slots {
                let Some(deadline) = slot.deadline else {
                    continue;
                };
                if deadline <= now {
                    slot.deadline = None;
                    if let Some(id) = slot.inflight.front().map(|job| job.id) {
                        #[cfg(feature = "tracing")]
                        super::events::task_timed_out(
                            slot.pid(),
                            id,
                            slot.inflight
                                .front()
                                .and_then(|j| j.timeout)
                                .or(self.config.timeout),
                        );
                        slot.stop(Stop::Timeout(id), libc::SIGKILL);
                    }
                } else {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
                }
            }
            if let Some(timeout) = self.config.idle_timeout {
                for slot in &mut st.slots {
                    match slot.idle_until(timeout) {
                        Some(due) if due <= now => {
                            #[cfg(feature = "tracing")]
                            super::events::worker_retired(slot.pid(), "idle");
                            slot.close();
                        }
                        Some(due) => next = Some(next.map_or(due, |n| n.min(due))),
                        None => {}
                    }
                }
            }
            st = match next {
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(now);
                    self.timer
                        .wait_timeout(st, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.timer.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}
