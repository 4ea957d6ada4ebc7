//! Scheduling: which queued jobs go to which worker, in what batches, and
//! when a worker starts or retires.
//!
//! Guarantees:
//! * an idle worker is reused before a new one starts; there are never more
//!   than `max_workers` slots (starting ones included), and a worker starts
//!   only for a job that no starting worker will take;
//! * a batch goes to a worker only when it has nothing in flight, so its
//!   socket never holds requests behind answers it is blocked writing (no
//!   deadlock, whatever the payload sizes);
//! * the thread that finds an idle worker writes the batch itself, once the
//!   lock is released: `submit` to an idle worker, a supervisor as soon as
//!   its worker answered everything it had;
//! * a batch follows the remote layer's [batching policy](crate::remote::batch)
//!   (about a millisecond of work, a fair share of the queue, one job until
//!   the job time is known or under a per-task timeout), and holds at most
//!   [`BATCH_BYTES`] bytes;
//! * a job sent ahead stays pending: its future is gated on its ticket, so
//!   it can be cancelled until the worker begins it, and one cancelled
//!   between leaving the queue and being gated is not sent at all;
//! * a worker is sent at most `max_tasks_per_child` jobs and closed once it
//!   answered them;
//! * a worker whose resident memory exceeds `max_worker_memory` once it
//!   answered a batch is closed then, never in the middle of one (and never
//!   before its first batch, so that a limit below a fresh worker's size
//!   still lets each worker run a batch);
//! * a worker left idle starts its idle time, which the timer watches
//!   (`idle_timeout`); a closed worker is replaced once it is reaped, when
//!   work waits for it.

use std::io::IoSlice;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Instant;

use crate::Error;
use crate::error::Cause;
use crate::remote::message::ToWorkerRef;
use crate::remote::{batch, framing};

use super::board::Gate;
use super::process::resident_bytes;
use super::shared::{Failures, PoolState, Shared};
use super::slot::Slot;
use crate::remote::job::Payload;

/// Most payload bytes in one batch of several jobs (a bigger job goes alone).
const BATCH_BYTES: usize = 64 * 1024;

/// A batch to write to a worker, outside the lock.
struct Outgoing {
    worker: u64,
    stream: Arc<UnixStream>,
    jobs: Vec<(u64, u32, Arc<Payload>)>,
}

impl Outgoing {
    /// Writes the batch with one vectored write: the frames' heads are
    /// encoded here, and each job's items are written from its payload,
    /// not copied into a buffer first (a batch is up to [`BATCH_BYTES`],
    /// and a fresh buffer of that size per batch was a page fault per 4
    /// KiB written).
    fn send(self, shared: &Shared) {
        let mut heads = Vec::with_capacity(self.jobs.len() * 64);
        let mut ends = Vec::with_capacity(self.jobs.len());
        for (id, ticket, payload) in &self.jobs {
            let message = ToWorkerRef::Run {
                id: *id,
                ticket: *ticket,
                task: payload.task.name,
                fingerprint: payload.task.fingerprint,
                items: serde_bytes::Bytes::new(&[]),
            };
            // Sizes are checked at submit time; encoding cannot fail.
            let _ = framing::encode_frame_head(&message, payload.items.len(), &mut heads);
            ends.push(heads.len());
        }
        let mut slices = Vec::with_capacity(2 * self.jobs.len());
        let mut start = 0;
        for ((_, _, payload), end) in self.jobs.iter().zip(ends) {
            slices.push(IoSlice::new(&heads[start..end]));
            slices.push(IoSlice::new(&payload.items));
            start = end;
        }
        if framing::write_all_vectored(&*self.stream, &mut slices).is_err() {
            // The worker is gone (its supervisor sees the end of stream) or
            // the stream is unusable: make sure it is gone.
            shared.kill_worker(self.worker);
        }
    }
}

/// What scheduling decided under the lock, to carry out once it is
/// released: batches to write, and jobs to fail.
#[derive(Default)]
#[must_use = "jobs taken off the queue hang until their batch is sent"]
pub(super) struct Batches {
    outgoing: Vec<Outgoing>,
    failures: Failures,
}

impl Batches {
    /// Writes every batch, then fails what could not be scheduled. Call it
    /// without holding the lock: a write may block until the worker reads.
    pub(super) fn send(self, shared: &Shared) {
        for outgoing in self.outgoing {
            outgoing.send(shared);
        }
        shared.fail_all(self.failures);
    }
}

impl Shared {
    /// Hands queued jobs to idle workers and starts workers that are
    /// missing.
    pub(super) fn schedule(self: &Arc<Self>, st: &mut PoolState) -> Batches {
        let mut batches = Batches::default();
        while !st.queue.is_empty() {
            let Some(index) = st.slots.iter().position(Slot::idle) else {
                break;
            };
            match self.take_batch(st, index) {
                Some(o) => batches.outgoing.push(o),
                None => break,
            }
        }
        batches.failures = self.spawn_missing(st);
        batches
    }

    /// Starts workers while jobs wait that no starting worker will take.
    /// Returns the jobs to fail if no worker can be had at all.
    fn spawn_missing(self: &Arc<Self>, st: &mut PoolState) -> Failures {
        if st.broken.is_some() || st.kill_signal.is_some() {
            return Failures::new();
        }
        let mut starting = st.slots.iter().filter(|s| !s.is_ready()).count();
        while st.slots.len() < self.config.max_workers && starting < st.queue.len() {
            let id = st.next_worker;
            st.next_worker += 1;
            let shared = Arc::clone(self);
            let spawned = thread::Builder::new()
                .name(format!("process-pool-supervisor-{id}"))
                .spawn(move || shared.supervise(id));
            match spawned {
                Ok(handle) => {
                    // Threads of replaced workers are done: forget them.
                    st.threads.retain(|h| !h.is_finished());
                    st.threads.push(handle);
                    st.slots.push(Slot::new(id));
                    starting += 1;
                }
                Err(e) => {
                    // Not broken: threads may be back later. But if no
                    // worker is left to run the queue, it fails now rather
                    // than waiting forever.
                    if st.slots.is_empty() {
                        let reason =
                            Cause::with_source(format!("cannot start a supervisor thread: {e}"), e);
                        return st
                            .queue
                            .drain(..)
                            .map(|job| (job.sink, Error::SpawnFailed(reason.clone())))
                            .collect();
                    }
                    break;
                }
            }
        }
        self.start_timer(st, false);
        Failures::new()
    }

    /// How many jobs the idle worker at `index` gets next.
    fn batch_limit(&self, st: &PoolState, index: usize) -> usize {
        let slot = &st.slots[index];
        let timed = self.config.timeout.is_some()
            || st.queue.front().is_some_and(|job| job.timeout.is_some());
        let mut limit = batch::batch_limit(
            slot.job_time,
            st.queue.len(),
            self.config.max_workers,
            timed,
        );
        if let Some(max) = self.config.max_tasks_per_child {
            limit = limit.min(max.saturating_sub(slot.assigned));
        }
        limit
    }

    /// Takes the next batch of jobs for the idle worker at `index`.
    fn take_batch(self: &Arc<Self>, st: &mut PoolState, index: usize) -> Option<Outgoing> {
        let limit = self.batch_limit(st, index);
        let (board, stream) = st.slots[index].channel()?;
        let mut jobs = Vec::new();
        let mut bytes = 0;
        while jobs.len() < limit {
            let Some(job) = st.queue.front() else { break };
            // A job with a timeout of its own goes alone: the deadline is
            // the batch's.
            if !jobs.is_empty()
                && (bytes + job.payload.items.len() > BATCH_BYTES || job.timeout.is_some())
            {
                break;
            }
            let mut job = st.queue.pop_front().expect("front exists");
            if !job.sink.is_pending() {
                continue; // cancelled while queued
            }
            let slot = &mut st.slots[index];
            job.ticket = slot.take_ticket();
            board.post(job.ticket, job.id);
            let gate = Gate {
                board: Arc::clone(&board),
                ticket: job.ticket,
                id: job.id,
            };
            // Weak: the abort handler lives in the job's own future, which
            // the pool holds; a strong one would be a cycle, and would keep
            // the pool alive as long as any of its futures. Installed once.
            let abort = (!job.abortable).then(|| {
                let weak: Weak<Shared> = Arc::downgrade(self);
                let id = job.id;
                Box::new(move || {
                    if let Some(shared) = weak.upgrade() {
                        shared.abort(id);
                    }
                }) as Box<dyn FnOnce() + Send>
            });
            if !job.sink.set_gate(Box::new(gate), abort) {
                continue; // cancelled just now: never sent
            }
            job.abortable = true;
            #[cfg(feature = "tracing")]
            if let (Some(span), Some(pid)) = (job.sink.span(), slot.pid()) {
                span.sent_to_pid(pid);
            }
            bytes += job.payload.items.len();
            jobs.push((job.id, job.ticket, Arc::clone(&job.payload)));
            slot.inflight.push_back(job);
        }
        if jobs.is_empty() {
            return None;
        }
        let timeout = st.slots[index]
            .inflight
            .front()
            .and_then(|job| job.timeout)
            .or(self.config.timeout);
        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        let slot = &mut st.slots[index];
        slot.batch_sent(jobs.len(), deadline);
        if deadline.is_some() {
            self.start_timer(st, true);
            self.timer.notify_all();
        }
        let slot = &mut st.slots[index];
        Some(Outgoing {
            worker: slot.id,
            stream,
            jobs,
        })
    }

    /// After a worker answered everything it had: retire it, give it more
    /// work, or let it go at shutdown.
    pub(super) fn after_batch(self: &Arc<Self>, st: &mut PoolState, index: usize) -> Batches {
        let slot = &mut st.slots[index];
        slot.deadline = None;
        if slot.is_closing() || slot.is_dying() {
            return Batches::default();
        }
        if let Some(max) = self.config.max_tasks_per_child {
            if slot.assigned >= max {
                #[cfg(feature = "tracing")]
                super::events::worker_retired(slot.pid(), "max_tasks_per_child");
                slot.close();
                return Batches::default();
            }
        }
        if let Some(limit) = self.config.max_worker_memory {
            // One read of /proc per answered batch, under the lock: the
            // slot is not dying, so its pid is still our child's.
            let over = slot.assigned > 0
                && slot
                    .pid()
                    .and_then(resident_bytes)
                    .is_some_and(|rss| rss > limit);
            if over {
                #[cfg(feature = "tracing")]
                super::events::worker_retired(slot.pid(), "max_worker_memory");
                slot.close();
                return Batches::default();
            }
        }
        // Cancelled jobs are skipped: no batch means the queue is empty.
        let batch = self.take_batch(st, index);
        if batch.is_none() {
            if st.shutdown && st.queue.is_empty() {
                st.slots[index].close();
            } else if self.config.idle_timeout.is_some() && st.slots[index].went_idle() {
                // A new deadline for the timer, which may be waiting for
                // none at all.
                self.timer.notify_all();
            }
        }
        Batches {
            outgoing: batch.into_iter().collect(),
            failures: Failures::new(),
        }
    }
}
