//! The timer thread of a pool with a per-task timeout: it kills a worker
//! whose job runs past its deadline, so that the job fails with
//! [`Error::TaskTimeout`](crate::Error::TaskTimeout) and the worker is
//! replaced.
//!
//! Guarantees:
//! * at most one timer thread per pool, started with the first worker and
//!   ended once the pool is shut down with no worker and no job left;
//! * it sleeps on the pool's condvar until the nearest deadline: whoever sets
//!   a deadline, removes a worker or shuts the pool down notifies it;
//! * the job is marked timed out before its worker is killed, so that the
//!   supervisor fails it with the timeout, not as a crash; a worker already
//!   being reaped is never signalled.

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use super::shared::{Shared, State};

impl Shared {
    /// Starts the timer thread if the pool needs one and has none.
    pub(super) fn start_timer(self: &Arc<Self>, st: &mut State) {
        if self.config.timeout.is_some() && !st.timer_running && !st.slots.is_empty() {
            let shared = Arc::clone(self);
            if let Ok(handle) = thread::Builder::new()
                .name("process-pool-timer".into())
                .spawn(move || shared.run_timer())
            {
                st.timer_running = true;
                st.threads.push(handle);
            }
        }
    }

    fn run_timer(self: Arc<Self>) {
        let mut st = self.lock();
        loop {
            if st.shutdown && st.slots.is_empty() && st.queue.is_empty() {
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
                    if let (Some(job), None) = (slot.inflight.front(), slot.timed_out) {
                        slot.timed_out = Some(job.id);
                        slot.signal(libc::SIGKILL);
                    }
                } else {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
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
