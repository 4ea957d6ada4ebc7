//! [`Slot`]: one worker process as the pool sees it, from the moment its
//! supervisor thread is started until the process is reaped.
//!
//! Guarantees:
//! * a slot signals its process only while it is not `dying`, i.e. before its
//!   supervisor starts reaping it, so a signal never reaches a process that
//!   reused the pid;
//! * a slot is [`idle`](Slot::idle) only when it is ready and holds nothing in
//!   flight: a batch is never written behind answers the worker may be
//!   blocked writing.

use std::collections::VecDeque;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::job::Job;
use super::process::send_signal;

pub(super) struct Slot {
    pub(super) id: u64,
    pub(super) pid: Option<u32>,
    /// Set once the worker is ready (handshake and initializer done).
    pub(super) stream: Option<Arc<UnixStream>>,
    pub(super) inflight: VecDeque<Job>,
    /// Jobs sent to this worker so far.
    pub(super) assigned: usize,
    /// Our end is closed for writing: the worker finishes and exits.
    pub(super) closing: bool,
    /// The supervisor is reaping the process: never signal its pid again.
    pub(super) dying: bool,
    /// Stopped by terminate/kill_workers.
    pub(super) killed_by_pool: bool,
    /// Killed because this job ran past the timeout.
    pub(super) timed_out: Option<u64>,
    /// Killed because these jobs were aborted.
    pub(super) aborted: Vec<u64>,
    /// When the job in flight runs out of time.
    pub(super) deadline: Option<Instant>,
    /// When the batch in flight was sent, and how many jobs it had.
    pub(super) sent: Option<(Instant, u32)>,
    /// A moving average of how long one job takes on this worker (from
    /// sending to answer), once known.
    pub(super) job_time: Option<Duration>,
}

impl Slot {
    /// A worker whose supervisor thread is starting it.
    pub(super) fn new(id: u64) -> Slot {
        Slot {
            id,
            pid: None,
            stream: None,
            inflight: VecDeque::new(),
            assigned: 0,
            closing: false,
            dying: false,
            killed_by_pool: false,
            timed_out: None,
            aborted: Vec::new(),
            deadline: None,
            sent: None,
            job_time: None,
        }
    }

    pub(super) fn idle(&self) -> bool {
        self.stream.is_some() && self.inflight.is_empty() && !self.closing && !self.dying
    }

    pub(super) fn signal(&self, signal: i32) {
        if let (Some(pid), false) = (self.pid, self.dying) {
            send_signal(pid, signal);
        }
    }

    /// Lets the worker finish what it holds and exit: it sees end of stream.
    pub(super) fn close(&mut self) {
        if !self.closing {
            self.closing = true;
            if let Some(stream) = &self.stream {
                let _ = stream.shutdown(Shutdown::Write);
            }
        }
    }

    /// The worker answered its whole batch: fold the time it took into the
    /// job-time average that decides whether to batch.
    pub(super) fn batch_answered(&mut self) {
        if let Some((at, n)) = self.sent.take() {
            let per_job = at.elapsed() / n.max(1);
            // Weighted towards the past, so that one odd job does not flip
            // the decision to batch.
            self.job_time = Some(match self.job_time {
                Some(avg) => (avg * 3 + per_job) / 4,
                None => per_job,
            });
        }
    }
}
