//! The MPI thread of rank 0: the one thread of the process that calls MPI.
//!
//! MPI can be initialized once per process, so the thread is a process-wide
//! singleton, started by the first executor built and shared by every
//! later one; it ends only at exit (see [`exit`]). It initializes MPI with
//! `MPI_THREAD_FUNNELED` (only it calls MPI), collects every worker's
//! handshake, then loops: take commands (wake-ups, new executors, aborts),
//! send queued jobs to least-loaded ranks with room in their window (see
//! [`Loads`]; `MPI_Isend`, the buffer kept until `MPI_Test` says it was
//! sent), and receive answers
//! (`MPI_Improbe` and a matched receive). It spins, then yields, then
//! sleeps (up to 1 ms, woken at once by a command) while answers are due,
//! and blocks on its command channel when nothing is in flight (after the
//! same spins and yields, so that a caller waiting for each answer finds it
//! awake): an idle executor costs no CPU on rank 0.
//!
//! Guarantees:
//! * No user code runs on this thread: the done callbacks of the futures it
//!   completes go to the executor's callback threads.
//! * A job is marked running as it is sent; a job cancelled before that is
//!   never sent. Sent to an isolating rank, it gets an abort handler first,
//!   which asks that rank to stop it.
//! * Nothing costs O(ranks) per job or per answer: the next rank comes from
//!   [`Loads`], an answer's rank is its MPI rank minus one.
//! * Every handshake is checked (protocol version, then build identity)
//!   before any job is sent; a worker that is refused, or silent for
//!   [`READY_TIMEOUT`], fails every build with a message naming its rank.
//!   A rank that never initializes MPI (so that `MPI_Init` itself waits)
//!   fails the build after as long, without naming it (MPI cannot).
//! * At exit the workers are told to stop and MPI is finalized on this
//!   thread, after the answers still due arrived (for at most
//!   [`EXIT_TIMEOUT`]). If tasks still run then, the job ends with
//!   `MPI_Abort` instead (finalizing would wait for them, maybe forever).

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mpi::ffi;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use serde_bytes::Bytes;

use super::entry;
use super::loads::Loads;
use super::shared::{Job, Shared};
use super::wire::{
    self, TAG_ABORT, TAG_MESSAGE, TAG_READY_ISOLATED, TAG_RUN_TIMED, TAG_SHUTDOWN, TAG_STOPPED,
};
use crate::error::Cause;
use crate::remote::job::Sink;
use crate::remote::message::{self, FromWorkerRef, ToWorkerRef};
use crate::{Error, WorkerId};

/// How long the workers have to say hello after MPI is initialized.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the exit hook waits for answers still due before finalizing.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle polls spent spinning, then yielding, before sleeping.
const SPINS: u32 = 200;
const YIELDS: u32 = 50;
/// The longest sleep between two polls while answers are due.
const MAX_SLEEP: Duration = Duration::from_millis(1);

/// What the rest of the process asks of the MPI thread.
pub(super) enum Command {
    /// Something was queued: look at the queues.
    Wake,
    /// A new executor: serve its queue (after running its initializer on
    /// every worker).
    Attach(Arc<Shared>),
    /// The program exits: stop the workers, finalize MPI, then answer.
    Exit(Sender<()>),
    /// `Future::abort` of the sent job of this id: its rank stops it.
    Abort(u64),
    /// Tests only: send this rank a message it cannot read.
    Garbage(i32),
}

/// The handle on the process's MPI thread.
pub(super) struct MpiThread {
    commands: Sender<Command>,
    /// The workers, by rank (1, 2, ...), or why there are none to use.
    workers: Result<Vec<WorkerId>, Error>,
    /// Every worker rank runs its tasks in a child process (and can stop
    /// one).
    isolated: bool,
    join: Mutex<Option<JoinHandle<()>>>,
}

/// The thread, once started; `Err` if it could not be.
static THREAD: OnceLock<Result<MpiThread, Error>> = OnceLock::new();
/// Taken by the exit hook: no thread starts afterwards.
static EXITING: Mutex<bool> = Mutex::new(false);

impl MpiThread {
    /// The process's MPI thread, started on first use, with its workers.
    pub(super) fn get() -> Result<&'static MpiThread, Error> {
        if !entry::is_rank_zero() {
            return Err(Error::InvalidArgument(entry::not_launched()));
        }
        let exiting = EXITING.lock().unwrap_or_else(|e| e.into_inner());
        if *exiting {
            return Err(Error::ShutDown);
        }
        let thread = THREAD.get_or_init(start);
        drop(exiting);
        let thread = thread.as_ref().map_err(Clone::clone)?;
        thread.workers.as_ref().map_err(Clone::clone)?;
        Ok(thread)
    }

    /// The workers, by rank.
    pub(super) fn workers(&self) -> &[WorkerId] {
        self.workers.as_deref().unwrap_or(&[])
    }

    /// True if every worker rank isolates its tasks in a child process, so
    /// that a running task can be stopped (timeouts, `abort`).
    pub(super) fn isolated(&self) -> bool {
        self.isolated
    }

    /// `Ok` if a running task can be stopped (every rank isolates), else the
    /// error of a timeout that could not be kept.
    pub(super) fn check_isolated(&self) -> Result<(), Error> {
        if self.isolated {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "a per-task timeout needs task isolation: without it a task runs on its worker \
             rank itself, which cannot be stopped without ending the MPI job; launch with \
             `mpirun -x {}=isolate` (each rank then runs its tasks in a child process it can kill)",
            entry::OPT_IN_ENV
        )))
    }

    /// Sends a command; false if the thread is gone (the program exits).
    pub(super) fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }
}

/// Starts the thread and waits for its handshakes.
fn start() -> Result<MpiThread, Error> {
    let (commands, receiver) = mpsc::channel();
    let (started, start_result) = mpsc::channel();
    let join = std::thread::Builder::new()
        .name("concurrent-futures-mpi".into())
        .spawn(move || run(receiver, started))
        .map_err(|e| Error::SpawnFailed(Cause::with_source("cannot start the MPI thread", e)))?;
    // The thread answers within READY_TIMEOUT of initializing MPI (or
    // dies, which drops the sender). MPI_Init itself waits for every rank
    // to initialize MPI, without a bound of its own: the wait here is
    // bounded too, and the thread is left where it blocks.
    let (workers, isolated) = match start_result.recv_timeout(READY_TIMEOUT) {
        Ok(Ok((workers, isolated))) => (Ok(workers), isolated),
        Ok(Err(e)) => (Err(e), false),
        Err(RecvTimeoutError::Timeout) => {
            return Err(Error::SpawnFailed(
                format!(
                    "MPI did not start within {READY_TIMEOUT:?}: a rank of this MPI job never \
                     initialized MPI, or never answered (is every rank this program, launched \
                     with `mpirun -x {}=1`?)",
                    entry::OPT_IN_ENV
                )
                .into(),
            ));
        }
        Err(RecvTimeoutError::Disconnected) => {
            let _ = join.join();
            return Err(Error::SpawnFailed(
                "the MPI thread ended while initializing MPI".into(),
            ));
        }
    };
    Ok(MpiThread {
        commands,
        workers,
        isolated,
        join: Mutex::new(Some(join)),
    })
}

/// The exit hook's work (see the entry module): stop the thread if it
/// runs, else tell the workers to exit ourselves.
pub(super) fn exit() {
    let mut exiting = EXITING.lock().unwrap_or_else(|e| e.into_inner());
    *exiting = true;
    match THREAD.get() {
        Some(Ok(thread)) => {
            drop(exiting);
            let (ack, acked) = mpsc::channel();
            if thread.send(Command::Exit(ack)) {
                // The thread bounds its own wait; it answers or dies.
                let _ = acked.recv();
            }
            if let Some(join) = thread.join.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = join.join();
            }
        }
        Some(Err(_)) => {}
        None => shut_down_unstarted(),
    }
}

/// No executor was made: initialize MPI just to stop the workers.
fn shut_down_unstarted() {
    if mpi::environment::is_initialized() {
        return; // Somebody else owns MPI; nothing we can do cleanly.
    }
    let Some(universe) = mpi::initialize() else {
        return;
    };
    let world = universe.world();
    for rank in 1..world.size() {
        world
            .process_at_rank(rank)
            .send_with_tag(&[0u8; 0][..], TAG_SHUTDOWN);
    }
    // Receive their hellos, so that none is left unreceived at finalize.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = world.size() - 1;
    while left > 0 && Instant::now() < deadline {
        match world.any_process().immediate_matched_probe() {
            Some(message) => {
                let _ = message.matched_receive_vec::<u8>();
                left -= 1;
            }
            None => std::thread::yield_now(),
        }
    }
    drop(universe); // MPI_Finalize
}

/// One `MPI_Isend` under way: its buffer lives until it completes.
struct Outgoing {
    request: ffi::MPI_Request,
    _buffer: Vec<u8>,
}

/// The sends under way.
#[derive(Default)]
struct Outbox(Vec<Outgoing>);

impl Outbox {
    /// Starts sending `buffer` to `rank` with `tag`.
    fn send(&mut self, rank: i32, tag: i32, buffer: Vec<u8>) {
        // SAFETY: reading a constant handle of the MPI library.
        let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
        // SAFETY: MPI is initialized on this thread (the only one calling
        // MPI); the buffer's heap storage stays where it is, unchanged,
        // until `MPI_Test` reports the send complete (it is moved into
        // `self.0` below, which keeps it until then); its length fits an
        // `i32` (messages are at most 1 GiB).
        unsafe {
            ffi::MPI_Isend(
                buffer.as_ptr().cast(),
                buffer.len() as i32,
                ffi::RSMPI_UINT8_T,
                rank,
                tag,
                ffi::RSMPI_COMM_WORLD,
                &mut request,
            );
        }
        self.0.push(Outgoing {
            request,
            _buffer: buffer,
        });
    }

    /// Drops the buffers of the sends that completed.
    fn poll(&mut self) {
        self.0.retain_mut(|outgoing| {
            let mut done = 0;
            let mut status = std::mem::MaybeUninit::<ffi::MPI_Status>::uninit();
            // SAFETY: `request` is a live request of this thread's
            // `MPI_Isend` (a completed one is removed at once, so it is
            // never tested again); `status` is written by MPI_Test.
            unsafe { ffi::MPI_Test(&mut outgoing.request, &mut done, status.as_mut_ptr()) };
            done == 0
        });
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A worker rank as the thread sees it (its load is in [`Loads`]).
struct Rank {
    /// Its MPI rank.
    rank: i32,
    /// It runs its tasks in a child process: it can stop one.
    isolated: bool,
    /// Executors whose initializer was sent to it and not answered, in order.
    inits: VecDeque<Arc<Shared>>,
    /// It sent something unreadable: it gets nothing more.
    dead: bool,
}

/// An executor the thread serves.
struct Pool {
    shared: Arc<Shared>,
    /// Initializers not answered yet: no job is sent before they all are.
    inits_due: usize,
    /// Jobs of this executor sent and not answered.
    in_flight: usize,
}

/// A job sent to a worker.
struct Sent {
    pool: Arc<Shared>,
    sink: Box<dyn Sink>,
    /// Index in `ranks`.
    rank: usize,
    /// Its per-task timeout, if any.
    timeout: Option<Duration>,
}

struct Loop {
    world: SimpleCommunicator,
    /// By rank - 1 (every rank of the job is a worker).
    ranks: Vec<Rank>,
    /// The live ranks by load: who gets the next job.
    loads: Loads,
    pools: Vec<Pool>,
    sent: HashMap<u64, Sent>,
    /// Initializers sent and not answered, over every rank.
    inits_out: usize,
    outbox: Outbox,
    next_id: u64,
}

/// The thread's body: initialize MPI, collect the handshakes, serve.
fn run(commands: Receiver<Command>, started: Sender<Result<(Vec<WorkerId>, bool), Error>>) {
    let Some((universe, _threading)) = mpi::initialize_with_threading(mpi::Threading::Funneled)
    else {
        let _ = started.send(Err(Error::SpawnFailed(
            "MPI was initialized already, by other code of this program: with \
             CONCURRENT_FUTURES_MPI=1, concurrent_futures owns MPI on rank 0"
                .into(),
        )));
        return;
    };
    let world = universe.world();
    let hellos = handshake(&world);
    let ranks: Vec<Rank> = match &hellos {
        Ok(hellos) => hellos
            .iter()
            .map(|(w, isolated)| Rank {
                rank: w.rank.unwrap_or(0) as i32,
                isolated: *isolated,
                inits: VecDeque::new(),
                dead: false,
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let _ = started.send(hellos.map(|hellos| {
        let isolated = hellos.iter().all(|(_, isolated)| *isolated);
        (hellos.into_iter().map(|(w, _)| w).collect(), isolated)
    }));
    let mut this = Loop {
        world,
        loads: Loads::new(ranks.len()),
        ranks,
        pools: Vec::new(),
        sent: HashMap::new(),
        inits_out: 0,
        outbox: Outbox::default(),
        next_id: 1,
    };
    let ack = this.serve(&commands);
    let still_running = this.stop();
    if still_running > 0 {
        // MPI_Finalize would wait for ranks that still run a task, for
        // good if it never ends: the job ends here instead, with the
        // program's success (it is exiting; its tasks' futures said so).
        crate::trace::diag!(
            warn,
            "concurrent_futures: the program exits while {still_running} task(s) still run on \
             worker ranks after {EXIT_TIMEOUT:?}: ending the MPI job (MPI_Abort) rather than \
             waiting for them"
        );
        this.world.abort(0);
    }
    drop(this);
    drop(universe); // MPI_Finalize, on the thread that initialized MPI
    if let Some(ack) = ack {
        let _ = ack.send(());
    }
}

/// Waits for every worker's hello and checks it: the workers by rank, and
/// whether each isolates its tasks.
fn handshake(world: &SimpleCommunicator) -> Result<Vec<(WorkerId, bool)>, Error> {
    let size = world.size();
    if world.rank() != 0 {
        return Err(Error::InvalidArgument(entry::not_launched()));
    }
    if size < 2 {
        return Err(Error::InvalidArgument(format!(
            "the MPI job has a single rank, so no worker: {}",
            "launch it with `mpirun -x CONCURRENT_FUTURES_MPI=1 -n N ./app`, N >= 2"
        )));
    }
    let mut found: Vec<Option<Result<(WorkerId, bool), String>>> = vec![None; size as usize - 1];
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut left = found.len();
    let mut idle = 0u32;
    while left > 0 {
        match world.any_process().immediate_matched_probe() {
            Some(message) => {
                let (body, status) = message.matched_receive_vec::<u8>();
                let rank = status.source_rank();
                let slot = &mut found[rank as usize - 1];
                if slot.is_none() {
                    left -= 1;
                }
                let isolated = status.tag() == TAG_READY_ISOLATED;
                *slot = Some(if status.tag() != TAG_MESSAGE && !isolated {
                    Err(format!("rank {rank} sent tag {} first", status.tag()))
                } else {
                    message::check_ready(&body).and_then(|worker| {
                        if worker.rank == Some(rank as u32) {
                            Ok((worker, isolated))
                        } else {
                            Err(format!("rank {rank} says it is {worker}"))
                        }
                    })
                });
                idle = 0;
            }
            None if Instant::now() >= deadline => break,
            None => backoff(&mut idle),
        }
    }
    let mut workers = Vec::new();
    let mut refusals = Vec::new();
    for (i, slot) in found.into_iter().enumerate() {
        match slot {
            Some(Ok(worker)) => workers.push(worker),
            Some(Err(reason)) => refusals.push(format!("MPI rank {} refused: {reason}", i + 1)),
            None => refusals.push(format!(
                "MPI rank {} never said hello within {READY_TIMEOUT:?} (is it this program, \
                 launched with CONCURRENT_FUTURES_MPI=1?)",
                i + 1
            )),
        }
    }
    if refusals.is_empty() {
        Ok(workers)
    } else {
        Err(Error::SpawnFailed(refusals.join("; ").into()))
    }
}

/// One idle poll: spin, then yield, then sleep.
fn backoff(idle: &mut u32) {
    *idle = idle.saturating_add(1);
    if *idle <= SPINS {
        std::hint::spin_loop();
    } else if *idle <= SPINS + YIELDS {
        std::thread::yield_now();
    } else {
        std::thread::sleep(sleep_for(*idle));
    }
}

/// Exponential: 1, 2, 4... µs up to [`MAX_SLEEP`].
fn sleep_for(idle: u32) -> Duration {
    let k = (idle - SPINS - YIELDS).min(20);
    Duration::from_micros(1 << k).min(MAX_SLEEP)
}

impl Loop {
    /// Serves until told to exit (returns the one to answer) or until every
    /// handle is gone.
    fn serve(&mut self, commands: &Receiver<Command>) -> Option<Sender<()>> {
        let mut idle = 0u32;
        loop {
            let mut progress = false;
            loop {
                match commands.try_recv() {
                    Ok(Command::Exit(ack)) => return Some(ack),
                    Ok(command) => {
                        self.command(command);
                        progress = true;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return None,
                }
            }
            progress |= self.schedule();
            progress |= self.receive();
            if !self.outbox.is_empty() {
                self.outbox.poll();
            }
            self.retire();
            if progress {
                idle = 0;
                continue;
            }
            let waiting = !self.sent.is_empty() || self.inits_out > 0;
            if !waiting && self.outbox.is_empty() && idle >= SPINS + YIELDS {
                // Nothing can arrive that we wait for, and nothing came for
                // a while (the next job of a caller that waits for each
                // answer comes within microseconds: it finds us polling, not
                // asleep): sleep until told.
                match commands.recv() {
                    Ok(Command::Exit(ack)) => return Some(ack),
                    Ok(command) => self.command(command),
                    Err(_) => return None,
                }
                idle = 0;
                continue;
            }
            idle = idle.saturating_add(1);
            if idle <= SPINS {
                std::hint::spin_loop();
            } else if idle <= SPINS + YIELDS {
                std::thread::yield_now();
            } else {
                match commands.recv_timeout(sleep_for(idle)) {
                    Ok(Command::Exit(ack)) => return Some(ack),
                    Ok(command) => {
                        self.command(command);
                        idle = 0;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return None,
                }
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Wake | Command::Exit(_) => {}
            Command::Garbage(rank) => {
                // Not a protocol message: an unknown variant tag.
                self.outbox.send(rank, TAG_MESSAGE, vec![0xff; 16]);
            }
            Command::Abort(id) => {
                // Answered meanwhile: nothing to stop.
                if let Some(sent) = self.sent.get(&id) {
                    let rank = &self.ranks[sent.rank];
                    if rank.isolated && !rank.dead {
                        self.outbox.send(rank.rank, TAG_ABORT, wire::id_body(id));
                    }
                }
            }
            Command::Attach(shared) => {
                let mut pool = Pool {
                    shared: Arc::clone(&shared),
                    inits_due: 0,
                    in_flight: 0,
                };
                if let Some(init) = &shared.config.initializer {
                    let mut body = Vec::new();
                    let request = ToWorkerRef::Init {
                        task: init.task.name,
                        fingerprint: init.task.fingerprint,
                        args: Bytes::new(&init.args),
                    };
                    if message::append(&request, &mut body).is_ok() {
                        for rank in self.ranks.iter_mut().filter(|r| !r.dead) {
                            self.outbox.send(rank.rank, TAG_MESSAGE, body.clone());
                            rank.inits.push_back(Arc::clone(&shared));
                            pool.inits_due += 1;
                            self.inits_out += 1;
                        }
                    }
                }
                self.pools.push(pool);
            }
        }
    }

    /// Sends queued jobs, each to a least-loaded rank with room in the
    /// executor's window: O(1) amortised per job (see [`Loads`]).
    fn schedule(&mut self) -> bool {
        let mut any = false;
        for p in 0..self.pools.len() {
            if self.pools[p].inits_due > 0 {
                continue;
            }
            let window = self.pools[p].shared.config.window;
            loop {
                let Some((r, load)) = self.loads.least() else {
                    return any;
                };
                if load >= window {
                    break; // every live rank's window is full
                }
                let Some(job) = self.pools[p].shared.pop() else {
                    break;
                };
                self.send_job(p, r, job);
                any = true;
            }
        }
        any
    }

    /// Starts `job` and sends it to `ranks[r]`; false if it was cancelled
    /// (or failed to encode) instead.
    fn send_job(&mut self, p: usize, r: usize, job: Job) -> bool {
        let id = self.next_id;
        self.next_id += 1;
        let pool = &mut self.pools[p];
        let rank = &self.ranks[r];
        if rank.isolated {
            // Installed before the start: an abort either cancels the job
            // before it is sent, or finds the handler. The thread is
            // 'static, so the handler keeps nothing alive.
            let thread = pool.shared.thread;
            job.sink.control().set_abort_handler(Box::new(move || {
                thread.send(Command::Abort(id));
            }));
        }
        if !job.sink.start() {
            pool.shared.finished(1);
            return false;
        }
        let request = ToWorkerRef::Run {
            id,
            ticket: 0,
            task: job.payload.task.name,
            fingerprint: job.payload.task.fingerprint,
            items: Bytes::new(&job.payload.items),
        };
        let mut body = Vec::with_capacity(job.payload.items.len() + 64);
        if let Err(e) = message::append(&request, &mut body) {
            let error = message::serialization_error("the job failed to encode", e.to_string());
            pool.shared.callbacks.run(job.sink.fail(error));
            pool.shared.finished(1);
            return false;
        }
        // Only an isolating rank gets a timed job (the executor refuses a
        // timeout otherwise).
        match job.timeout.filter(|_| rank.isolated) {
            Some(timeout) => {
                self.outbox
                    .send(rank.rank, TAG_RUN_TIMED, wire::timed(timeout, &body))
            }
            None => self.outbox.send(rank.rank, TAG_MESSAGE, body),
        }
        #[cfg(feature = "tracing")]
        if let Some(span) = job.sink.span() {
            span.sent_to_rank(rank.rank);
        }
        self.loads.add(r);
        pool.in_flight += 1;
        self.sent.insert(
            id,
            Sent {
                pool: Arc::clone(&pool.shared),
                sink: job.sink,
                rank: r,
                timeout: job.timeout,
            },
        );
        true
    }

    /// Receives every answer that arrived.
    fn receive(&mut self) -> bool {
        let mut any = false;
        while let Some(message) = self.world.any_process().immediate_matched_probe() {
            let (body, status) = message.matched_receive_vec::<u8>();
            any = true;
            // Ranks 1..size are the workers, in order.
            let r = status.source_rank() as usize - 1;
            if r >= self.ranks.len() || self.ranks[r].dead {
                continue;
            }
            if status.tag() == TAG_STOPPED {
                match wire::read_id(&body) {
                    Ok(id) => self.stopped(id),
                    Err(e) => self.kill_rank(r, e),
                }
                continue;
            }
            match message::decode::<FromWorkerRef>(&body) {
                Ok(FromWorkerRef::Done { id, results }) => self.done(id, Ok(results)),
                Ok(FromWorkerRef::InitDone { outcome }) => {
                    let outcome = outcome
                        .map(|bytes| &bytes[..])
                        .map_err(|e| Error::from(e).to_string());
                    self.init_done(r, outcome);
                }
                Ok(other) => self.kill_rank(r, format!("unexpected message {other:?}")),
                Err(e) => self.kill_rank(r, e.to_string()),
            }
        }
        any
    }

    /// A job's rank stopped it: its deadline passed (or it was aborted, and
    /// its future is cancelled already).
    fn stopped(&mut self, id: u64) {
        let error = match self.sent.get(&id).and_then(|sent| sent.timeout) {
            Some(timeout) => {
                crate::trace::event!(
                    warn,
                    executor = "mpi",
                    rank = self.sent.get(&id).map(|sent| self.ranks[sent.rank].rank),
                    job = id,
                    ?timeout,
                    "task timed out"
                );
                Error::TaskTimeout(timeout)
            }
            None => Error::Cancelled,
        };
        self.done(id, Err(error));
    }

    /// A job's answer (or failure).
    fn done(&mut self, id: u64, outcome: Result<&[u8], Error>) {
        let Some(sent) = self.sent.remove(&id) else {
            return;
        };
        self.loads.sub(sent.rank);
        if let Some(pool) = self
            .pools
            .iter_mut()
            .find(|p| Arc::ptr_eq(&p.shared, &sent.pool))
        {
            pool.in_flight -= 1;
        }
        sent.pool.callbacks.run(sent.sink.complete(outcome));
        sent.pool.finished(1);
    }

    /// An initializer's answer from `ranks[r]`.
    fn init_done(&mut self, r: usize, outcome: Result<&[u8], String>) {
        let Some(shared) = self.ranks[r].inits.pop_front() else {
            let rank = self.ranks[r].rank;
            return self.kill_rank(r, format!("rank {rank} answered an initializer never sent"));
        };
        self.inits_out -= 1;
        if let Some(pool) = self
            .pools
            .iter_mut()
            .find(|p| Arc::ptr_eq(&p.shared, &shared))
        {
            pool.inits_due -= 1;
        }
        let init = shared.config.initializer.as_ref();
        let failure = match (outcome, init) {
            (Ok(bytes), Some(init)) => (init.check)(bytes).err(),
            (Ok(_), None) => None,
            (Err(reason), _) => Some(reason),
        };
        if let Some(reason) = failure {
            let worker = &self.ranks[r];
            crate::trace::event!(
                error,
                executor = "mpi",
                rank = worker.rank,
                cause = %reason,
                "initializer failed"
            );
            shared.break_pool(format!(
                "the initializer failed on worker rank {}: {reason}",
                worker.rank
            ));
        }
    }

    /// `ranks[r]` sent garbage: it gets nothing more, and what it ran fails.
    fn kill_rank(&mut self, r: usize, reason: String) {
        let rank = &mut self.ranks[r];
        rank.dead = true;
        self.loads.remove(r);
        crate::trace::diag!(
            warn,
            "concurrent_futures MPI: worker rank {} sent an unreadable answer and is no longer \
             used: {reason}",
            rank.rank
        );
        let ids: Vec<u64> = self
            .sent
            .iter()
            .filter(|(_, s)| s.rank == r)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.done(id, Err(Error::Protocol(reason.clone())));
        }
        let inits = std::mem::take(&mut self.ranks[r].inits);
        self.inits_out -= inits.len();
        for shared in inits {
            if let Some(pool) = self
                .pools
                .iter_mut()
                .find(|p| Arc::ptr_eq(&p.shared, &shared))
            {
                pool.inits_due -= 1;
            }
            shared.break_pool(format!("a worker rank failed its initializer: {reason}"));
        }
        if self.ranks.iter().all(|r| r.dead) {
            for pool in &self.pools {
                pool.shared
                    .break_pool("every worker rank sent garbage and was dropped".into());
            }
        }
    }

    /// Forgets executors that were shut down and have nothing left.
    fn retire(&mut self) {
        self.pools.retain(|pool| {
            !(pool.in_flight == 0 && pool.inits_due == 0 && pool.shared.is_drained())
        });
    }

    /// At exit: what is still due fails, the workers are told to stop, and
    /// the answers still due are received (for at most [`EXIT_TIMEOUT`]).
    /// Returns how many jobs were still running then.
    fn stop(&mut self) -> usize {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        for pool in &self.pools {
            pool.shared
                .break_pool("the program is exiting: MPI was finalized".into());
        }
        // Every rank of the job, also refused ones, which wait for it.
        let size = self.world.size();
        for rank in 1..size {
            self.outbox.send(rank, TAG_SHUTDOWN, Vec::new());
        }
        let mut idle = 0;
        loop {
            self.receive_at_exit();
            self.outbox.poll();
            let due = self.sent.len() + self.inits_out;
            if (due == 0 && self.outbox.is_empty()) || Instant::now() >= deadline {
                break;
            }
            backoff(&mut idle);
        }
        let ids: Vec<u64> = self.sent.keys().copied().collect();
        let still_running = ids.len() + self.inits_out;
        for id in ids {
            self.done(
                id,
                Err(Error::BrokenPool(
                    "the program exited while the task ran".into(),
                )),
            );
        }
        still_running
    }

    /// At exit: answers complete their futures; nothing else matters.
    fn receive_at_exit(&mut self) {
        while let Some(message) = self.world.any_process().immediate_matched_probe() {
            let (body, status) = message.matched_receive_vec::<u8>();
            let r = status.source_rank() as usize - 1;
            if r >= self.ranks.len() {
                continue;
            }
            if status.tag() == TAG_STOPPED {
                if let Ok(id) = wire::read_id(&body) {
                    self.stopped(id);
                }
                continue;
            }
            match message::decode::<FromWorkerRef>(&body) {
                Ok(FromWorkerRef::Done { id, results }) => self.done(id, Ok(results)),
                _ => {
                    if self.ranks[r].inits.pop_front().is_some() {
                        self.inits_out -= 1;
                    }
                }
            }
        }
    }
}
