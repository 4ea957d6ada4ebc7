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
//! * only jobs known to be short are batched (up to [`MAX_BATCH`] jobs and
//!   [`BATCH_BYTES`] bytes in one write, answered in one write too), and none
//!   under a per-task timeout;
//! * a worker is sent at most `max_tasks_per_child` jobs and closed once it
//!   answered them;
//! * a job leaves the queue running (its future can then only be aborted,
//!   not cancelled) and with its abort handler set.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crate::wire::{self, ToWorkerRef};

use super::job::Payload;
use super::shared::{Shared, State, complete_all};
use super::slot::Slot;

/// Most jobs sent to a worker in one write.
const MAX_BATCH: usize = 64;
/// Most payload bytes in one batch of several jobs (a bigger job goes alone).
const BATCH_BYTES: usize = 64 * 1024;
/// Jobs are batched only while one takes less than this on the worker.
const BATCH_JOB_TIME: Duration = Duration::from_micros(500);

/// A batch to write to a worker, outside the lock.
struct Outgoing {
    worker: u64,
    stream: Arc<UnixStream>,
    jobs: Vec<(u64, Arc<Payload>)>,
}

impl Outgoing {
    fn send(self, shared: &Shared) {
        let mut buf = Vec::with_capacity(self.jobs.iter().map(|(_, p)| p.items.len() + 64).sum());
        for (id, payload) in &self.jobs {
            let message = ToWorkerRef::Run {
                id: *id,
                task: payload.task.name,
                fingerprint: payload.task.fingerprint,
                items: serde_bytes::Bytes::new(&payload.items),
            };
            // Sizes are checked at submit time; encoding cannot fail.
            let _ = wire::encode_frame(&message, &mut buf);
        }
        if (&*self.stream).write_all(&buf).is_err() {
            // The worker is gone (its supervisor sees the end of stream) or
            // the stream is unusable: make sure it is gone.
            shared.kill_worker(self.worker);
        }
    }
}

/// Batches taken off the queue, to write once the lock is released.
#[derive(Default)]
#[must_use = "jobs taken off the queue hang until their batch is sent"]
pub(super) struct Batches(Vec<Outgoing>);

impl Batches {
    /// Writes every batch. Call it without holding the lock: a write may
    /// block until the worker reads.
    pub(super) fn send(self, shared: &Shared) {
        for outgoing in self.0 {
            outgoing.send(shared);
        }
    }
}

impl Shared {
    /// Hands queued jobs to idle workers and starts workers that are
    /// missing.
    pub(super) fn schedule(self: &Arc<Self>, st: &mut State) -> Batches {
        let mut batches = Batches::default();
        while !st.queue.is_empty() {
            let Some(index) = st.slots.iter().position(Slot::idle) else {
                break;
            };
            match self.take_batch(st, index) {
                Some(o) => batches.0.push(o),
                None => break,
            }
        }
        self.spawn_missing(st);
        batches
    }

    /// Starts workers while jobs wait that no starting worker will take.
    fn spawn_missing(self: &Arc<Self>, st: &mut State) {
        if st.broken.is_some() || st.kill_signal.is_some() {
            return;
        }
        let mut starting = st.slots.iter().filter(|s| s.stream.is_none()).count();
        while st.slots.len() < self.config.max_workers && starting < st.queue.len() {
            let id = st.next_worker;
            st.next_worker += 1;
            let shared = Arc::clone(self);
            let spawned = thread::Builder::new()
                .name(format!("process-pool-worker-{id}"))
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
                    let failures = self.break_pool(st, format!("cannot start a thread: {e}"));
                    // Completing runs user callbacks: not under the lock.
                    thread::spawn(move || complete_all(failures));
                    return;
                }
            }
        }
        self.start_timer(st);
    }

    /// Takes the next batch of jobs for the idle worker at `index`.
    fn take_batch(self: &Arc<Self>, st: &mut State, index: usize) -> Option<Outgoing> {
        let max_workers = self.config.max_workers;
        // Batch only tasks known to be short: a long task gains nothing from
        // it, and a batched job counts as running (it can no longer be
        // cancelled, only aborted).
        let short = st.slots[index].job_time.is_some_and(|t| t < BATCH_JOB_TIME);
        let mut limit = if self.config.timeout.is_some() || !short {
            1
        } else {
            MAX_BATCH.min((st.queue.len() / max_workers).max(1))
        };
        if let Some(max) = self.config.max_tasks_per_child {
            limit = limit.min(max.saturating_sub(st.slots[index].assigned));
        }
        let mut jobs = Vec::new();
        let mut bytes = 0;
        while jobs.len() < limit {
            let Some(job) = st.queue.front() else { break };
            if !jobs.is_empty() && (job.solo || bytes + job.payload.items.len() > BATCH_BYTES) {
                break;
            }
            let mut job = st.queue.pop_front().expect("front exists");
            if job.started {
                if job.sink.is_cancelled() {
                    continue;
                }
            } else {
                if !job.sink.start() {
                    continue; // cancelled while queued
                }
                job.started = true;
                // Weak: the handler lives in the job's own future, which
                // the pool holds; a strong one would be a cycle, and would
                // keep the pool alive as long as any of its futures.
                let weak: Weak<Shared> = Arc::downgrade(self);
                let id = job.id;
                job.sink.set_abort_handler(Box::new(move || {
                    if let Some(shared) = weak.upgrade() {
                        shared.abort(id);
                    }
                }));
            }
            bytes += job.payload.items.len();
            let solo = job.solo;
            jobs.push((job.id, Arc::clone(&job.payload)));
            st.slots[index].inflight.push_back(job);
            if solo {
                break;
            }
        }
        if jobs.is_empty() {
            return None;
        }
        let slot = &mut st.slots[index];
        slot.assigned += jobs.len();
        slot.sent = Some((Instant::now(), jobs.len() as u32));
        if let Some(timeout) = self.config.timeout {
            slot.deadline = Some(Instant::now() + timeout);
            self.timer.notify_all();
        }
        Some(Outgoing {
            worker: slot.id,
            stream: Arc::clone(slot.stream.as_ref().expect("idle slots are ready")),
            jobs,
        })
    }

    /// After a worker answered everything it had: retire it, give it more
    /// work, or let it go at shutdown.
    pub(super) fn after_batch(self: &Arc<Self>, st: &mut State, index: usize) -> Batches {
        let slot = &mut st.slots[index];
        slot.deadline = None;
        if slot.closing || slot.dying {
            return Batches::default();
        }
        if let Some(max) = self.config.max_tasks_per_child {
            if slot.assigned >= max {
                slot.close();
                return Batches::default();
            }
        }
        let batch = if st.queue.is_empty() {
            None
        } else {
            self.take_batch(st, index)
        };
        if batch.is_none() && st.shutdown && st.queue.is_empty() {
            st.slots[index].close();
        }
        Batches(batch.into_iter().collect())
    }
}
