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
//!   is written, so a slow completion does not leave the worker idle; its
//!   done callbacks run on a callback thread, never here;
//! * a worker that cannot be started for want of resources fails the queued
//!   jobs only if no other worker is left to run them, and the pool stays
//!   usable; a worker that starts but never becomes ready (bad handshake,
//!   failed initializer) breaks the pool with the reason, unless the pool
//!   was stopping its workers anyway;
//! * the slot is marked dying before the process is reaped, so that nothing
//!   signals a pid that may have been reused;
//! * a panic in this thread (a bug) breaks the pool with the reason and
//!   fails what the worker held; it never leaves a future or `shutdown`
//!   waiting.
//!
//! Crashes: a dead worker closes its end of the socket (or its pidfd says
//! it exited); its supervisor reaps it and reads each job's ticket on the
//! board: the job it was running fails with [`Error::WorkerDied`] (pid and
//! exit code or signal), jobs it had not begun go back to the front of the
//! queue, and a job it finished but whose answer was lost fails too: a job
//! that ran is never run again. A replacement starts if work is waiting.

use std::io::{BufReader, ErrorKind};
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::error::Cause;
use crate::remote::framing;
use crate::remote::message::{self, FromWorkerRef};
use crate::{Error, WorkerId};

use super::board::{Board, Phase};
use super::process::{self, Connection, Ended, Process, describe, send_signal};
use super::schedule::Batches;
use super::shared::{Failures, Shared, cancel_all};
use super::slot::Stop;
use crate::remote::job::Request;

/// A ready worker: its process, our end of its socket and the reader of its
/// answers.
type Started = (Process, Arc<UnixStream>, BufReader<Connection>);

/// Why a worker never became ready.
enum StartFailure {
    /// The system refused a process, a socket or memory: try again later.
    Spawn(Cause),
    /// It started and failed its handshake or initializer.
    Handshake(Process, String),
}

/// An answer from a worker.
enum Answer<'b> {
    Done(u64, &'b [u8]),
    Skipped(u64),
}

impl Shared {
    /// The life of one worker process. A panic here is a bug: it breaks the
    /// pool instead of leaving futures waiting.
    pub(super) fn supervise(self: Arc<Self>, worker: u64) {
        let outcome = catch_unwind(AssertUnwindSafe(|| Arc::clone(&self).run_worker(worker)));
        if let Err(payload) = outcome {
            let message = crate::error::panic_message(payload.as_ref());
            self.internal_failure(
                Some(worker),
                format!("a supervisor thread panicked: {message}"),
            );
        }
    }

    fn run_worker(self: Arc<Self>, worker: u64) {
        let (mut process, stream, mut reader) = match self.start(worker) {
            Ok(started) => started,
            Err(failure) => {
                self.start_failed(worker, failure);
                return;
            }
        };
        #[cfg(feature = "tracing")]
        super::events::worker_started(process.id());
        let batches = {
            let mut st = self.lock();
            match st.slot_index(worker) {
                Some(i) => {
                    st.slots[i].ready(Arc::clone(&stream));
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
            let answer = match next_answer(&mut reader, &mut buf) {
                Ok(Some(answer)) => answer,
                Ok(None) => break,
                Err(e) => {
                    protocol_error = Some(e);
                    self.kill_worker(worker);
                    break;
                }
            };
            #[cfg(test)]
            fault::maybe_panic(fault::SUPERVISOR);
            let id = match answer {
                Answer::Done(id, _) | Answer::Skipped(id) => id,
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
            match answer {
                Answer::Done(_, results) => self.callbacks.run(job.sink.complete(Ok(results))),
                // Cancelled through its gate, by whoever cancelled it.
                Answer::Skipped(_) => debug_assert!(!job.sink.is_pending()),
            }
        }
        drop(reader);
        // Reap the process before dropping our end of the socket.
        self.set_dying(worker);
        let ended = process.reap();
        drop(stream);
        self.worker_exited(worker, process.id(), ended, protocol_error);
    }

    /// Starts the process, waits for its handshake and runs the initializer.
    fn start(&self, worker: u64) -> Result<Started, StartFailure> {
        let board = Board::create().map(Arc::new).map_err(|e| {
            StartFailure::Spawn(Cause::with_source(
                format!("cannot create a ticket board: {e}"),
                e,
            ))
        })?;
        let (process, ours) = process::spawn(&board).map_err(StartFailure::Spawn)?;
        {
            let mut st = self.lock();
            // terminate/kill_workers may have run while this worker started:
            // it must not escape the signal.
            let kill_signal = st.kill_signal;
            if let Some(slot) = st.slot_mut(worker) {
                slot.started(process.id(), board);
                if let Some(signal) = kill_signal {
                    slot.stop(Stop::Pool, signal);
                }
            }
        }
        match process::handshake(&process, &ours, &self.config) {
            Ok(reader) => Ok((process, Arc::new(ours), reader)),
            Err(reason) => Err(StartFailure::Handshake(process, reason)),
        }
    }

    fn set_dying(&self, worker: u64) {
        if let Some(slot) = self.lock().slot_mut(worker) {
            slot.set_dying();
        }
    }

    /// A worker that never became ready: the pool is broken if it started
    /// and failed; if it could not start at all, the queue fails only when
    /// no other worker is left to run it.
    fn start_failed(self: &Arc<Self>, worker: u64, failure: StartFailure) {
        self.set_dying(worker);
        let (reason, broken) = match failure {
            StartFailure::Spawn(reason) => (reason, false),
            StartFailure::Handshake(mut process, reason) => {
                let how = process.end_after_failed_start();
                let reason = format!("{reason} (worker process {}: {how})", process.id());
                #[cfg(feature = "tracing")]
                super::events::worker_start_failed(&reason);
                (Cause::new(reason), true)
            }
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
            } else if broken {
                self.break_pool(&mut st, reason.to_string())
            } else if st.slots.is_empty() {
                st.queue
                    .drain(..)
                    .map(|job| (job.sink, Error::SpawnFailed(reason.clone())))
                    .collect()
            } else {
                Vec::new()
            }
        };
        self.fail_all(failures);
    }

    /// A ready worker's process ended: settle each job it held by its
    /// ticket, and start a replacement if work waits.
    fn worker_exited(
        self: &Arc<Self>,
        worker: u64,
        pid: u32,
        ended: Ended,
        protocol_error: Option<String>,
    ) {
        let mut st = self.lock();
        let Some(i) = st.slot_index(worker) else {
            return;
        };
        let slot = st.slots.remove(i);
        let broken = st.broken.clone();
        #[cfg(feature = "tracing")]
        super::events::worker_ended(pid, ended, slot.stopped.as_ref(), protocol_error.as_deref());
        let died = |finished: bool| match (&protocol_error, &broken, slot.stopped) {
            (Some(e), _, _) => Error::Protocol(format!(
                "worker process {pid} broke the protocol ({e}) and was killed"
            )),
            (None, Some(reason), Some(Stop::Broken)) => Error::BrokenPool(reason.clone()),
            _ if finished => Error::WorkerDied {
                worker: WorkerId::process(pid),
                cause: format!(
                    "{}, after the task finished and before its result reached the pool \
                     (the task is not run again)",
                    describe(ended)
                ),
            },
            _ => Error::WorkerDied {
                worker: WorkerId::process(pid),
                cause: describe(ended),
            },
        };
        let mut failures: Failures = Vec::new();
        let mut requeue = Vec::new();
        let board = slot.board().cloned();
        for job in slot.inflight {
            let phase = board
                .as_ref()
                .map_or(Phase::Started, |b| b.phase(job.ticket, job.id));
            if slot.aborted.contains(&job.id) {
                // Already cancelled by `abort`: nothing to report.
                failures.push((job.sink, Error::Cancelled));
                continue;
            }
            match phase {
                Phase::Sent => requeue.push(job),
                Phase::Cancelled => {}
                Phase::Started if slot.stopped == Some(Stop::Timeout(job.id)) => {
                    let timeout = job.timeout.or(self.config.timeout).unwrap_or_default();
                    failures.push((job.sink, Error::TaskTimeout(timeout)));
                }
                Phase::Started => failures.push((job.sink, died(false))),
                Phase::Done => failures.push((job.sink, died(true))),
            }
        }
        for job in requeue.into_iter().rev() {
            // Back to an ordinary pending job, unless cancelled meanwhile;
            // a broken pool runs nothing more.
            if !job.sink.clear_gate() {
                continue;
            }
            match &st.broken {
                Some(reason) => failures.push((job.sink, Error::BrokenPool(reason.clone()))),
                None => st.queue.push_front(job),
            }
        }
        let cancelled: Vec<Request> = if st.kill_signal.is_some() {
            st.queue.drain(..).collect()
        } else {
            Vec::new()
        };
        self.timer.notify_all();
        #[cfg(feature = "tracing")]
        let next_worker = st.next_worker;
        let batches = self.schedule(&mut st);
        #[cfg(feature = "tracing")]
        if st.next_worker > next_worker {
            super::events::worker_replaced(pid);
        }
        drop(st);
        batches.send(self);
        self.fail_all(failures);
        cancel_all(cancelled);
    }

    /// An internal thread panicked: the pool is broken with `reason`; the
    /// worker of that thread (if any) is killed and what it held fails,
    /// every other worker is stopped so that nothing waits on a pool that
    /// can no longer time out or replace workers.
    pub(super) fn internal_failure(self: &Arc<Self>, worker: Option<u64>, reason: String) {
        let mut failures = {
            let mut st = self.lock();
            let mut failures = self.break_pool(&mut st, reason.clone());
            if let Some(i) = worker.and_then(|w| st.slot_index(w)) {
                let mut slot = st.slots.remove(i);
                if let Some(pid) = slot.pid() {
                    slot.set_dying();
                    send_signal(pid, libc::SIGKILL);
                    // SAFETY: waitpid on our own unreaped child (the slot was
                    // not dying, so nobody reaped it) has no memory effects.
                    unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
                }
                failures.extend(
                    slot.inflight
                        .into_iter()
                        .map(|job| (job.sink, Error::BrokenPool(reason.clone()))),
                );
            }
            for slot in &mut st.slots {
                slot.stop(Stop::Broken, libc::SIGKILL);
            }
            self.timer.notify_all();
            failures
        };
        // Even the callbacks must not depend on the broken machinery.
        for (sink, error) in failures.drain(..) {
            sink.fail(error).run();
        }
    }
}

/// Reads the worker's next answer: `Ok(None)` at the end of its stream (the
/// worker exited or died), `Err` if it broke the protocol.
fn next_answer<'b>(
    reader: &mut BufReader<Connection>,
    buf: &'b mut Vec<u8>,
) -> Result<Option<Answer<'b>>, String> {
    match framing::read_frame(reader, buf) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) if e.kind() == ErrorKind::InvalidData => return Err(e.to_string()),
        // End of stream inside a frame, reset: the worker died.
        Err(_) => return Ok(None),
    }
    match message::decode::<FromWorkerRef>(buf) {
        Ok(FromWorkerRef::Done { id, results }) => Ok(Some(Answer::Done(id, results))),
        Ok(FromWorkerRef::Skipped { id }) => Ok(Some(Answer::Skipped(id))),
        Ok(other) => Err(format!("unexpected message {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Fault injection for the tests of the pool's own failure handling: makes
/// an internal thread panic as a bug would.
#[cfg(test)]
pub(super) mod fault {
    use std::sync::atomic::{AtomicU8, Ordering};

    pub(crate) const SUPERVISOR: u8 = 1;
    pub(crate) const TIMER: u8 = 2;

    static ARMED: AtomicU8 = AtomicU8::new(0);

    /// The next time the `which` thread passes its check, it panics.
    pub(crate) fn arm(which: u8) {
        ARMED.store(which, Ordering::SeqCst);
    }

    pub(crate) fn maybe_panic(which: u8) {
        if ARMED
            .compare_exchange(which, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            panic!("injected fault");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::fault;
    use crate::{Error, ProcessPoolExecutor};

    const LIMIT: Duration = Duration::from_secs(30);

    #[crate::task]
    fn triple(n: u32) -> u32 {
        n * 3
    }

    #[crate::task]
    fn spin_forever() {
        loop {
            std::hint::spin_loop();
        }
    }

    /// Both scenarios in one test: the fault switch is process-wide.
    #[test]
    fn an_internal_thread_that_panics_breaks_the_pool_and_nothing_hangs() {
        // A supervisor panics while handling an answer.
        let pool = ProcessPoolExecutor::new(1).unwrap();
        assert_eq!(pool.submit(triple, 1).unwrap().into_result(), Ok(3));
        fault::arm(fault::SUPERVISOR);
        let hit = pool.submit(triple, 2).unwrap();
        match hit.result_timeout(LIMIT) {
            Err(Error::BrokenPool(reason)) => assert!(reason.contains("supervisor"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(pool.submit(triple, 3), Err(Error::BrokenPool(_))));
        drop(pool); // returns

        // The timer panics while a task runs past nothing: the pool breaks,
        // the running task fails instead of running unwatched.
        let pool = ProcessPoolExecutor::builder()
            .max_workers(1)
            .timeout(Duration::from_secs(3600))
            .build()
            .unwrap();
        assert_eq!(pool.submit(triple, 1).unwrap().into_result(), Ok(3));
        fault::arm(fault::TIMER);
        let stuck = pool.submit(spin_forever, ()).unwrap();
        match stuck.result_timeout(LIMIT) {
            Err(Error::BrokenPool(reason)) => assert!(reason.contains("timer"), "{reason}"),
            other => panic!("{other:?}"),
        }
        drop(pool); // returns
    }
}
