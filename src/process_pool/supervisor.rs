//! The supervisor thread of one worker process: it starts the process, reads
//! every answer, completes the futures, writes the worker's next batch as
//! soon as it answered the last one, and reaps the process when it ends.
//!
//! Guarantees:
//! * answers come in the order the jobs were sent; anything else (a
//!   malformed frame, an unexpected message, an answer out of order) is a
//!   protocol error: the worker is killed and what it held fails with
//!   [`Error::Protocol`];
//! * a future is completed outside the lock and after the worker's next batch
//!   is written, so a slow done callback does not leave the worker idle;
//! * a worker that never becomes ready (cannot start, bad handshake, failed
//!   initializer) breaks the pool with the reason, unless the pool was
//!   stopping its workers anyway;
//! * the slot is marked dying before the process is reaped, so that nothing
//!   signals a pid that may have been reused.
//!
//! Crashes: a dead worker closes its end of the socket; its supervisor reaps
//! it, fails the job it ran with [`Error::WorkerDied`] (pid and exit code or
//! signal), puts the rest of its batch back in front of the queue, to run
//! one at a time so that only the job that kills a worker fails, and starts a
//! replacement if work is waiting.

use std::io::{BufReader, ErrorKind};
use std::os::unix::net::UnixStream;
use std::process::{Child, ExitStatus};
use std::sync::Arc;

use crate::Error;
use crate::wire::{self, FromWorkerRef};

use super::job::Job;
use super::process::{self, describe, reap, send_signal};
use super::schedule::Batches;
use super::shared::{Failures, Shared, cancel_all, complete_all};

/// A ready worker: its process, our end of its socket and the reader of its
/// answers.
type Started = (Child, Arc<UnixStream>, BufReader<UnixStream>);
/// Why a worker never became ready, and its process if it was started.
type StartFailure = (Option<Child>, String);

impl Shared {
    /// The life of one worker process.
    pub(super) fn supervise(self: Arc<Self>, worker: u64) {
        let (mut child, stream, mut reader) = match self.start(worker) {
            Ok(started) => started,
            Err((child, reason)) => {
                self.start_failed(worker, child, reason);
                return;
            }
        };
        let batches = {
            let mut st = self.lock();
            match st.slot_index(worker) {
                Some(i) => {
                    st.slots[i].stream = Some(Arc::clone(&stream));
                    if st.kill_signal.is_some() {
                        st.slots[i].close();
                    }
                    self.after_batch(&mut st, i)
                }
                None => Batches::default(),
            }
        };
        batches.send(&self);
        let mut buf = Vec::new();
        let mut protocol_error = None;
        loop {
            let (id, results) = match next_answer(&mut reader, &mut buf) {
                Ok(Some(answer)) => answer,
                Ok(None) => break,
                Err(e) => {
                    protocol_error = Some(e);
                    self.kill_worker(worker);
                    break;
                }
            };
            let mut st = self.lock();
            let Some(i) = st.slot_index(worker) else {
                break;
            };
            let slot = &mut st.slots[i];
            if slot.inflight.front().map(|j| j.id) != Some(id) {
                protocol_error = Some(format!("answer for unknown job {id}"));
                slot.signal(libc::SIGKILL);
                break;
            }
            let job = slot.inflight.pop_front().expect("checked");
            let batches = if slot.inflight.is_empty() {
                slot.batch_answered();
                self.after_batch(&mut st, i)
            } else {
                Batches::default()
            };
            drop(st);
            batches.send(&self);
            job.sink.complete(Ok(results));
        }
        drop(reader);
        // Reap the process before dropping our end of the socket.
        let status = {
            self.set_dying(worker);
            reap(&mut child)
        };
        drop(stream);
        self.worker_exited(worker, child.id(), status, protocol_error);
    }

    /// Starts the process, waits for its handshake and runs the initializer.
    fn start(&self, worker: u64) -> Result<Started, StartFailure> {
        let (child, ours) = process::spawn().map_err(|reason| (None, reason))?;
        {
            let mut st = self.lock();
            // terminate/kill_workers may have run while this worker started:
            // it must not escape the signal.
            let kill_signal = st.kill_signal;
            if let Some(slot) = st.slot_mut(worker) {
                slot.pid = Some(child.id());
                if let Some(signal) = kill_signal {
                    slot.killed_by_pool = true;
                    slot.signal(signal);
                }
            }
        }
        match process::handshake(&ours, &self.config) {
            Ok(reader) => Ok((child, Arc::new(ours), reader)),
            Err(reason) => Err((Some(child), reason)),
        }
    }

    fn set_dying(&self, worker: u64) {
        if let Some(slot) = self.lock().slot_mut(worker) {
            slot.dying = true;
        }
    }

    /// A worker that never became ready: the pool is broken (unless the
    /// pool was stopping its workers anyway).
    fn start_failed(self: &Arc<Self>, worker: u64, child: Option<Child>, reason: String) {
        self.set_dying(worker);
        let reason = match child {
            Some(mut child) => {
                send_signal(child.id(), libc::SIGKILL);
                let status = reap(&mut child);
                format!(
                    "{reason} (worker process {}: {})",
                    child.id(),
                    describe(status)
                )
            }
            None => reason,
        };
        let failures = {
            let mut st = self.lock();
            let stopping = st.kill_signal.is_some();
            if let Some(i) = st.slot_index(worker) {
                st.slots.remove(i);
            }
            self.timer.notify_all();
            if stopping {
                Vec::new()
            } else {
                self.break_pool(&mut st, reason)
            }
        };
        complete_all(failures);
    }

    /// A ready worker's process ended: fail or re-queue what it held and
    /// start a replacement if work waits.
    fn worker_exited(
        self: &Arc<Self>,
        worker: u64,
        pid: u32,
        status: ExitStatus,
        protocol_error: Option<String>,
    ) {
        let mut st = self.lock();
        let Some(i) = st.slot_index(worker) else {
            return;
        };
        let slot = st.slots.remove(i);
        let culprit_known = !slot.aborted.is_empty() || slot.timed_out.is_some();
        let batch = slot.inflight.len() > 1;
        let died = || match &protocol_error {
            Some(e) => Error::Protocol(format!(
                "worker process {pid} broke the protocol ({e}) and was killed"
            )),
            None => Error::WorkerDied {
                pid,
                cause: describe(status),
            },
        };
        let mut failures: Failures = Vec::new();
        let mut requeue = Vec::new();
        for mut job in slot.inflight {
            if slot.aborted.contains(&job.id) {
                failures.push((job.sink, Error::Cancelled));
            } else if slot.timed_out == Some(job.id) {
                let timeout = self.config.timeout.unwrap_or_default();
                failures.push((job.sink, Error::TaskTimeout(timeout)));
            } else if slot.killed_by_pool || protocol_error.is_some() {
                failures.push((job.sink, died()));
            } else if culprit_known {
                requeue.push(job);
            } else if !batch || job.solo {
                failures.push((job.sink, died()));
            } else {
                job.solo = true;
                requeue.push(job);
            }
        }
        for job in requeue.into_iter().rev() {
            st.queue.push_front(job);
        }
        let cancelled: Vec<Job> = if st.kill_signal.is_some() {
            st.queue.drain(..).collect()
        } else {
            Vec::new()
        };
        self.timer.notify_all();
        let batches = self.schedule(&mut st);
        drop(st);
        batches.send(self);
        complete_all(failures);
        cancel_all(cancelled);
    }
}

/// Reads the worker's next answer: `Ok(None)` at the end of its stream (the
/// worker exited or died), `Err` if it broke the protocol.
fn next_answer<'b>(
    reader: &mut BufReader<UnixStream>,
    buf: &'b mut Vec<u8>,
) -> Result<Option<(u64, &'b [u8])>, String> {
    match wire::read_frame(reader, buf) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) if e.kind() == ErrorKind::InvalidData => return Err(e.to_string()),
        // End of stream inside a frame, reset: the worker died.
        Err(_) => return Ok(None),
    }
    match wire::decode::<FromWorkerRef>(buf) {
        Ok(FromWorkerRef::Done { id, results }) => Ok(Some((id, results))),
        Ok(other) => Err(format!("unexpected message {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}
