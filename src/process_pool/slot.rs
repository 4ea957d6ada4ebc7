//! [`Slot`]: one worker process as the pool sees it, from the moment its
//! supervisor thread is started until the process is reaped.
//!
//! Guarantees:
//! * a slot signals its process only while it is not `dying`, i.e. before its
//!   supervisor starts reaping it, so a signal never reaches a process that
//!   reused the pid;
//! * a slot is [`idle`](Slot::idle) only when it is ready and holds nothing in
//!   flight: a batch is never written behind answers the worker may be
//!   blocked writing;
//! * a slot counts as idle since the moment it last went idle (see
//!   [`went_idle`](Slot::went_idle)), so an idle timeout never retires a
//!   worker that holds a job;
//! * every job in flight holds its own ticket on the slot's board: tickets
//!   are handed out in order and at most [`TICKETS`] jobs are in flight, so
//!   no two jobs in flight share one.

use std::collections::VecDeque;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::board::{Board, TICKETS};
use super::process::send_signal;
use crate::remote::job::Request;

/// Why the pool stopped a worker itself, so that its death is not blamed
/// on the job it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// terminate/kill_workers.
    Pool,
    /// This job ran past its deadline.
    Timeout(u64),
    /// The pool broke (an internal thread failed).
    Broken,
}

pub(super) struct Slot {
    pub(super) id: u64,
    pid: Option<u32>,
    /// Set once the worker is ready (handshake and initializer done).
    stream: Option<Arc<UnixStream>>,
    /// The tickets shared with the worker, once it was started.
    board: Option<Arc<Board>>,
    next_ticket: u32,
    pub(super) inflight: VecDeque<Request>,
    /// Jobs sent to this worker so far.
    pub(super) assigned: usize,
    /// Our end is closed for writing: the worker finishes and exits.
    closing: bool,
    /// The supervisor is reaping the process: never signal its pid again.
    dying: bool,
    /// Why the pool stopped it, if it did.
    pub(super) stopped: Option<Stop>,
    /// Killed because these jobs were aborted.
    pub(super) aborted: Vec<u64>,
    /// When the job in flight runs out of time (`None`: never).
    pub(super) deadline: Option<Instant>,
    /// When the batch in flight was sent, and how many jobs it had.
    sent: Option<(Instant, u32)>,
    /// A moving average of how long one job takes on this worker (from
    /// sending to answer), once known.
    pub(super) job_time: Option<Duration>,
    /// When it last went idle, if it is idle.
    idle_since: Option<Instant>,
}

impl Slot {
    /// A worker whose supervisor thread is starting it.
    pub(super) fn new(id: u64) -> Slot {
        Slot {
            id,
            pid: None,
            stream: None,
            board: None,
            next_ticket: 0,
            inflight: VecDeque::new(),
            assigned: 0,
            closing: false,
            dying: false,
            stopped: None,
            aborted: Vec::new(),
            deadline: None,
            sent: None,
            job_time: None,
            idle_since: None,
        }
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.pid.filter(|_| !self.dying)
    }

    /// The process was started with this board.
    pub(super) fn started(&mut self, pid: u32, board: Arc<Board>) {
        self.pid = Some(pid);
        self.board = Some(board);
    }

    /// The worker is ready for jobs.
    pub(super) fn ready(&mut self, stream: Arc<UnixStream>) {
        self.stream = Some(stream);
    }

    pub(super) fn is_ready(&self) -> bool {
        self.stream.is_some()
    }

    pub(super) fn idle(&self) -> bool {
        self.stream.is_some() && self.inflight.is_empty() && !self.closing && !self.dying
    }

    pub(super) fn is_dying(&self) -> bool {
        self.dying
    }

    pub(super) fn is_closing(&self) -> bool {
        self.closing
    }

    /// The supervisor reaps the process from now on.
    pub(super) fn set_dying(&mut self) {
        self.dying = true;
    }

    pub(super) fn signal(&self, signal: i32) {
        if let (Some(pid), false) = (self.pid, self.dying) {
            send_signal(pid, signal);
        }
    }

    /// The pool stops the worker on purpose.
    pub(super) fn stop(&mut self, why: Stop, signal: i32) {
        if self.dying {
            return;
        }
        if self.stopped.is_none() {
            self.stopped = Some(why);
        }
        self.signal(signal);
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

    /// The board and the stream to send a batch with.
    pub(super) fn channel(&self) -> Option<(Arc<Board>, Arc<UnixStream>)> {
        Some((
            Arc::clone(self.board.as_ref()?),
            Arc::clone(self.stream.as_ref()?),
        ))
    }

    /// The next ticket, for a job about to be sent.
    pub(super) fn take_ticket(&mut self) -> u32 {
        debug_assert!(self.inflight.len() < TICKETS);
        let ticket = self.next_ticket;
        self.next_ticket = self.next_ticket.wrapping_add(1) % TICKETS as u32;
        ticket
    }

    pub(super) fn board(&self) -> Option<&Arc<Board>> {
        self.board.as_ref()
    }

    /// The scheduler found nothing to send it: if it is idle, its idle time
    /// starts now. True if it did.
    pub(super) fn went_idle(&mut self) -> bool {
        self.idle_since = self.idle().then(Instant::now);
        self.idle_since.is_some()
    }

    /// When a worker idle for `timeout` is due to retire (`None`: it is not
    /// idle, or the deadline is past the clock's range, i.e. never).
    pub(super) fn idle_until(&self, timeout: Duration) -> Option<Instant> {
        self.idle_since
            .filter(|_| self.idle())
            .and_then(|since| since.checked_add(timeout))
    }

    /// A batch of `n` jobs was sent.
    pub(super) fn batch_sent(&mut self, n: usize, deadline: Option<Instant>) {
        self.idle_since = None;
        self.assigned += n;
        self.sent = Some((Instant::now(), n as u32));
        self.deadline = deadline;
    }

    /// The worker answered its whole batch: fold the time it took into the
    /// job-time average that decides how much to send at once.
    pub(super) fn batch_answered(&mut self) {
        self.deadline = None;
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
