//! The parent side of the process pool: the queue, the worker processes and
//! their supervision.
//!
//! Threads: one supervisor thread per worker process (it starts the process,
//! reads every answer, completes the futures and sends the next batch), plus
//! one timer thread when a per-task timeout is set. No thread ever polls.
//!
//! Sending: a batch goes to a worker only when the worker has nothing in
//! flight, so a worker's pipe never holds requests behind answers it is
//! blocked writing (no deadlock, whatever the payload sizes). The thread that
//! finds an idle worker writes itself: `submit` writes directly to an idle
//! worker, and a supervisor writes the next batch as soon as its worker has
//! answered. Batches of tiny jobs (up to [`MAX_BATCH`] jobs and
//! [`BATCH_BYTES`] bytes) go in one write, and the worker answers them in one
//! write too.
//!
//! Crashes: a dead worker closes its end of the socket; its supervisor reaps
//! it, fails the job it ran with [`Error::WorkerDied`] (pid and exit code or
//! signal), puts the rest of its batch back in front of the queue, to run
//! one at a time so that only the job that kills a worker fails, and starts a
//! replacement if work is waiting.

use std::collections::VecDeque;
use std::io::{BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::Error;
use crate::registry::TaskRef;
use crate::wire::{self, ByteBuf, FromWorkerRef, PROTOCOL_VERSION, ToWorkerRef};
use crate::worker::WORKER_ENV;

use super::job::{Job, Payload, Sink};

/// Most jobs sent to a worker in one write.
const MAX_BATCH: usize = 64;
/// Most payload bytes in one batch of several jobs (a bigger job goes alone).
const BATCH_BYTES: usize = 64 * 1024;
/// Jobs are batched only while one takes less than this on the worker.
const BATCH_JOB_TIME: Duration = Duration::from_micros(500);
/// How long a new worker may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The settings of a pool.
pub(super) struct Config {
    pub(super) max_workers: usize,
    pub(super) max_tasks_per_child: Option<usize>,
    pub(super) timeout: Option<Duration>,
    pub(super) initializer: Option<Initializer>,
}

/// A registered task that runs once in every new worker.
pub(super) struct Initializer {
    pub(super) task: TaskRef,
    pub(super) args: ByteBuf,
    /// Decodes the initializer's result: `Err` means it failed.
    pub(super) check: fn(&[u8]) -> Result<(), String>,
}

pub(super) struct Shared {
    pub(super) config: Config,
    state: Mutex<State>,
    /// Wakes the timer thread.
    timer: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    slots: Vec<Slot>,
    next_job: u64,
    next_worker: u64,
    shutdown: bool,
    broken: Option<String>,
    /// Set by terminate/kill_workers: every worker, also one still
    /// starting, gets this signal.
    kill_signal: Option<i32>,
    threads: Vec<JoinHandle<()>>,
    timer_running: bool,
}

/// One worker process, as the pool sees it.
struct Slot {
    id: u64,
    pid: Option<u32>,
    /// Set once the worker is ready (handshake and initializer done).
    stream: Option<Arc<UnixStream>>,
    inflight: VecDeque<Job>,
    /// Jobs sent to this worker so far.
    assigned: usize,
    /// Our end is closed for writing: the worker finishes and exits.
    closing: bool,
    /// The supervisor is reaping the process: never signal its pid again.
    dying: bool,
    /// Stopped by terminate/kill_workers.
    killed_by_pool: bool,
    /// Killed because this job ran past the timeout.
    timed_out: Option<u64>,
    /// Killed because these jobs were aborted.
    aborted: Vec<u64>,
    /// When the job in flight runs out of time.
    deadline: Option<Instant>,
    /// When the batch in flight was sent, and how many jobs it had.
    sent: Option<(Instant, u32)>,
    /// A moving average of how long one job takes on this worker (from
    /// sending to answer), once known.
    job_time: Option<Duration>,
}

impl Slot {
    fn idle(&self) -> bool {
        self.stream.is_some() && self.inflight.is_empty() && !self.closing && !self.dying
    }

    fn signal(&self, signal: i32) {
        if let (Some(pid), false) = (self.pid, self.dying) {
            send_signal(pid, signal);
        }
    }

    fn close(&mut self) {
        if !self.closing {
            self.closing = true;
            if let Some(stream) = &self.stream {
                let _ = stream.shutdown(Shutdown::Write);
            }
        }
    }
}

fn send_signal(pid: u32, signal: i32) {
    // SAFETY: `kill` has no memory effects. `pid` is a child of this process
    // that has not been reaped (slots are marked `dying` before the reap),
    // so the pid cannot have been reused by another process.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

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

type Failures = Vec<(Box<dyn Sink>, Error)>;

fn complete_all(failures: Failures) {
    for (sink, error) in failures {
        sink.fail(error);
    }
}

/// Cancels queued jobs: pending futures end cancelled; jobs put back after a
/// crash already ran, so they fail with [`Error::Cancelled`].
fn cancel_all(jobs: Vec<Job>) {
    for job in jobs {
        if !job.sink.cancel() {
            job.sink.fail(Error::Cancelled);
        }
    }
}

impl Shared {
    pub(super) fn new(config: Config) -> Shared {
        Shared {
            config,
            state: Mutex::new(State::default()),
            timer: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated
        // in a way that matters more than hanging would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job and sends it at once if a worker is idle.
    pub(super) fn submit(
        self: &Arc<Self>,
        payload: Payload,
        sink: Box<dyn Sink>,
    ) -> Result<(), Error> {
        let mut st = self.lock();
        if let Some(reason) = &st.broken {
            return Err(Error::BrokenPool(reason.clone()));
        }
        if st.shutdown {
            return Err(Error::ShutDown);
        }
        let id = st.next_job;
        st.next_job += 1;
        st.queue.push_back(Job {
            id,
            payload: Arc::new(payload),
            sink,
            started: false,
            solo: false,
        });
        let outgoing = self.schedule(&mut st);
        drop(st);
        for o in outgoing {
            o.send(self);
        }
        Ok(())
    }

    /// Hands queued jobs to idle workers and starts workers that are
    /// missing. Returns the batches to write.
    fn schedule(self: &Arc<Self>, st: &mut State) -> Vec<Outgoing> {
        let mut outgoing = Vec::new();
        while !st.queue.is_empty() {
            let Some(index) = st.slots.iter().position(Slot::idle) else {
                break;
            };
            match self.take_batch(st, index) {
                Some(o) => outgoing.push(o),
                None => break,
            }
        }
        self.spawn_missing(st);
        outgoing
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
                    st.slots.push(Slot {
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
                    });
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
    fn after_batch(self: &Arc<Self>, st: &mut State, index: usize) -> Vec<Outgoing> {
        let slot = &mut st.slots[index];
        slot.deadline = None;
        if slot.closing || slot.dying {
            return Vec::new();
        }
        if let Some(max) = self.config.max_tasks_per_child {
            if slot.assigned >= max {
                slot.close();
                return Vec::new();
            }
        }
        let mut outgoing = Vec::new();
        if !st.queue.is_empty() {
            outgoing.extend(self.take_batch(st, index));
        }
        if outgoing.is_empty() && st.shutdown && st.queue.is_empty() {
            st.slots[index].close();
        }
        outgoing
    }

    fn slot_index(st: &State, worker: u64) -> Option<usize> {
        st.slots.iter().position(|s| s.id == worker)
    }

    /// Kills a worker whose stream failed; its supervisor cleans up.
    fn kill_worker(&self, worker: u64) {
        let st = self.lock();
        if let Some(i) = Self::slot_index(&st, worker) {
            st.slots[i].signal(libc::SIGKILL);
        }
    }

    /// `Future::abort` of a running job: stop the worker running it.
    fn abort(&self, job: u64) {
        let mut st = self.lock();
        for slot in &mut st.slots {
            if slot.inflight.iter().any(|j| j.id == job) {
                if !slot.dying {
                    slot.aborted.push(job);
                    slot.signal(libc::SIGKILL);
                }
                return;
            }
        }
        // Not on a worker (put back in the queue after a crash): the future
        // is cancelled already and will be skipped.
    }

    /// Marks the pool broken and fails everything queued.
    fn break_pool(&self, st: &mut State, reason: String) -> Failures {
        if st.broken.is_none() {
            st.broken = Some(reason.clone());
        }
        st.queue
            .drain(..)
            .map(|job| (job.sink, Error::BrokenPool(reason.clone())))
            .collect()
    }

    /// The life of one worker process.
    fn supervise(self: Arc<Self>, worker: u64) {
        let (mut child, stream, mut reader) = match self.start(worker) {
            Ok(started) => started,
            Err((child, reason)) => {
                self.start_failed(worker, child, reason);
                return;
            }
        };
        let outgoing = {
            let mut st = self.lock();
            match Self::slot_index(&st, worker) {
                Some(i) => {
                    st.slots[i].stream = Some(Arc::clone(&stream));
                    if st.kill_signal.is_some() {
                        st.slots[i].close();
                    }
                    self.after_batch(&mut st, i)
                }
                None => Vec::new(),
            }
        };
        for o in outgoing {
            o.send(&self);
        }
        let mut buf = Vec::new();
        let mut protocol_error = None;
        loop {
            match wire::read_frame(&mut reader, &mut buf) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    protocol_error = Some(e.to_string());
                    self.kill_worker(worker);
                    break;
                }
                // End of stream inside a frame, reset: the worker died.
                Err(_) => break,
            }
            let (id, results) = match wire::decode::<FromWorkerRef>(&buf) {
                Ok(FromWorkerRef::Done { id, results }) => (id, results),
                Ok(other) => {
                    protocol_error = Some(format!("unexpected message {other:?}"));
                    self.kill_worker(worker);
                    break;
                }
                Err(e) => {
                    protocol_error = Some(e.to_string());
                    self.kill_worker(worker);
                    break;
                }
            };
            let mut st = self.lock();
            let Some(i) = Self::slot_index(&st, worker) else {
                break;
            };
            let slot = &mut st.slots[i];
            if slot.inflight.front().map(|j| j.id) != Some(id) {
                protocol_error = Some(format!("answer for unknown job {id}"));
                slot.signal(libc::SIGKILL);
                break;
            }
            let job = slot.inflight.pop_front().expect("checked");
            if slot.inflight.is_empty() {
                if let Some((at, n)) = slot.sent.take() {
                    let per_job = at.elapsed() / n.max(1);
                    slot.job_time = Some(match slot.job_time {
                        Some(avg) => (avg * 3 + per_job) / 4,
                        None => per_job,
                    });
                }
            }
            let outgoing = if slot.inflight.is_empty() {
                self.after_batch(&mut st, i)
            } else {
                Vec::new()
            };
            drop(st);
            for o in outgoing {
                o.send(&self);
            }
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

    fn set_dying(&self, worker: u64) {
        let mut st = self.lock();
        if let Some(i) = Self::slot_index(&st, worker) {
            st.slots[i].dying = true;
        }
    }

    /// Starts the process, waits for its handshake and runs the initializer.
    #[allow(clippy::type_complexity)]
    fn start(
        &self,
        worker: u64,
    ) -> Result<(Child, Arc<UnixStream>, BufReader<UnixStream>), (Option<Child>, String)> {
        let exe = std::env::current_exe()
            .map_err(|e| (None, format!("cannot find the current executable: {e}")))?;
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| (None, format!("cannot create a socket pair: {e}")))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&theirs);
        let mut command = Command::new(&exe);
        command.env(WORKER_ENV, fd.to_string()).stdin(Stdio::null());
        // SAFETY: the closure runs in the child between fork and exec; it
        // only makes async-signal-safe system calls: `fcntl` lets the
        // child's end of the socket survive the exec (std creates it
        // CLOEXEC), and on Linux `prctl` kills the worker if this thread (the
        // worker's supervisor, which outlives it) or the whole parent dies.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                #[cfg(any(target_os = "linux", target_os = "android"))]
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| (None, format!("cannot start {}: {e}", exe.display())))?;
        drop(theirs);
        {
            let mut st = self.lock();
            if let Some(i) = Self::slot_index(&st, worker) {
                st.slots[i].pid = Some(child.id());
                if let Some(signal) = st.kill_signal {
                    st.slots[i].killed_by_pool = true;
                    st.slots[i].signal(signal);
                }
            }
        }
        let fail = |child: Child, reason: String| Err((Some(child), reason));
        let reader = match ours.try_clone() {
            Ok(r) => r,
            Err(e) => return fail(child, format!("cannot clone a socket: {e}")),
        };
        let _ = ours.set_read_timeout(Some(START_TIMEOUT));
        let mut reader = BufReader::with_capacity(64 * 1024, reader);
        let mut buf = Vec::new();
        let handshake = match wire::read_frame(&mut reader, &mut buf) {
            Ok(true) => wire::decode::<FromWorkerRef>(&buf).map_err(|e| e.to_string()),
            Ok(false) | Err(_) => Err("the worker process ended before its handshake (is the \
                                       program's worker entry linked? see concurrent_futures::worker)"
                .to_owned()),
        };
        match handshake {
            Ok(FromWorkerRef::Ready { version, .. }) if version == PROTOCOL_VERSION => {}
            Ok(FromWorkerRef::Ready { version, .. }) => {
                return fail(
                    child,
                    format!("worker speaks protocol version {version}, not {PROTOCOL_VERSION}"),
                );
            }
            Ok(other) => return fail(child, format!("unexpected first message {other:?}")),
            Err(reason) => return fail(child, reason),
        }
        let _ = ours.set_read_timeout(None);
        if let Some(init) = &self.config.initializer {
            let message = ToWorkerRef::Init {
                task: init.task.name,
                fingerprint: init.task.fingerprint,
                args: serde_bytes::Bytes::new(&init.args),
            };
            let mut out = Vec::new();
            let _ = wire::encode_frame(&message, &mut out);
            let _ = ours.set_read_timeout(self.config.timeout);
            if (&ours).write_all(&out).is_err() {
                return fail(
                    child,
                    "the worker process ended before its initializer ran".into(),
                );
            }
            let outcome = match wire::read_frame(&mut reader, &mut buf) {
                Ok(true) => match wire::decode::<FromWorkerRef>(&buf) {
                    Ok(FromWorkerRef::InitDone { outcome: Ok(bytes) }) => (init.check)(bytes),
                    Ok(FromWorkerRef::InitDone {
                        outcome: Err(remote),
                    }) => Err(Error::from(remote).to_string()),
                    Ok(other) => Err(format!("unexpected message {other:?}")),
                    Err(e) => Err(e.to_string()),
                },
                Ok(false) | Err(_) => Err("the worker process died while running it".into()),
            };
            if let Err(reason) = outcome {
                return fail(
                    child,
                    format!("initializer {} failed: {reason}", init.task.name),
                );
            }
            let _ = ours.set_read_timeout(None);
        }
        Ok((child, Arc::new(ours), reader))
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
            if let Some(i) = Self::slot_index(&st, worker) {
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
        let Some(i) = Self::slot_index(&st, worker) else {
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
        let outgoing = self.schedule(&mut st);
        drop(st);
        for o in outgoing {
            o.send(self);
        }
        complete_all(failures);
        cancel_all(cancelled);
    }

    /// The per-task timeout: kills a worker whose job runs too long.
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

    /// Stops accepting work; cancels the queue if asked; lets idle workers
    /// exit; waits for every worker if asked.
    pub(super) fn shutdown(&self, wait: bool, cancel_futures: bool) {
        let cancelled = {
            let mut st = self.lock();
            st.shutdown = true;
            let cancelled: Vec<Job> = if cancel_futures {
                st.queue.drain(..).collect()
            } else {
                Vec::new()
            };
            if st.queue.is_empty() {
                for slot in &mut st.slots {
                    if slot.idle() {
                        slot.close();
                    }
                }
            }
            self.timer.notify_all();
            cancelled
        };
        cancel_all(cancelled);
        if wait {
            self.join();
        }
    }

    /// Sends `signal` to every worker; what they ran fails with
    /// [`Error::WorkerDied`], what was queued is cancelled.
    pub(super) fn signal_workers(&self, signal: i32) {
        {
            let mut st = self.lock();
            st.kill_signal = Some(signal);
            for slot in &mut st.slots {
                if !slot.dying {
                    slot.killed_by_pool = true;
                    slot.signal(signal);
                }
            }
        }
        self.shutdown(true, true);
    }

    /// Joins every thread of the pool (except the calling one, if it is a
    /// thread of the pool, e.g. in a done callback).
    fn join(&self) {
        let me = thread::current().id();
        loop {
            let threads = std::mem::take(&mut self.lock().threads);
            if threads.is_empty() {
                return;
            }
            for handle in threads {
                if handle.thread().id() != me {
                    let _ = handle.join();
                }
            }
        }
    }

    /// The pids of the live worker processes.
    pub(super) fn pids(&self) -> Vec<u32> {
        self.lock()
            .slots
            .iter()
            .filter(|s| !s.dying)
            .filter_map(|s| s.pid)
            .collect()
    }
}

/// Waits for a process that closed its connection. It normally exits at
/// once; one that does not within two seconds is killed.
fn reap(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    let mut pause = Duration::from_micros(20);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if start.elapsed() < Duration::from_secs(2) => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                return child.wait().unwrap_or_else(|_| ExitStatus::from_raw(0));
            }
        }
    }
}

/// `exit code 3` or `signal 9 (SIGKILL)`.
pub(super) fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(signal) => {
            let name = match signal {
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGILL => " (SIGILL)",
                libc::SIGFPE => " (SIGFPE)",
                libc::SIGPIPE => " (SIGPIPE)",
                libc::SIGINT => " (SIGINT)",
                _ => "",
            };
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            format!("signal {signal}{name}{core}")
        }
        None => format!("{status}"),
    }
}
