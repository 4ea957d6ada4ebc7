//! The MPI thread of rank 0: the one thread of the process that calls MPI.
//!
//! MPI can be initialized once per process, so the thread is a process-wide
//! singleton, started by the first executor built and shared by every
//! later one; it ends only at exit (see [`exit`]). It initializes MPI with
//! `MPI_THREAD_FUNNELED` (only it calls MPI), collects every worker's
//! handshake, then loops: take commands (wake-ups, new executors), send
//! queued jobs to ranks with room in their window (`MPI_Isend`, the buffer
//! kept until `MPI_Test` says it was sent), and receive answers
//! (`MPI_Improbe` and a matched receive). It spins, then yields, then
//! sleeps (up to 1 ms, woken at once by a command) while answers are due,
//! and blocks on its command channel when nothing is in flight: an idle
//! executor costs no CPU on rank 0.
//!
//! Guarantees:
//! * No user code runs on this thread: the done callbacks of the futures it
//!   completes go to the executor's callback threads.
//! * A job is marked running as it is sent; a job cancelled before that is
//!   never sent.
//! * Every handshake is checked (protocol version, then build identity)
//!   before any job is sent; a worker that is refused, or silent for
//!   [`READY_TIMEOUT`], fails every build with a message naming its rank.
//! * At exit the workers are told to stop and MPI is finalized on this
//!   thread, after the answers still due arrived (for at most
//!   [`EXIT_TIMEOUT`]).

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mpi::ffi;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use serde_bytes::Bytes;

use super::entry::{self, TAG_MESSAGE, TAG_SHUTDOWN};
use super::shared::{Job, Shared};
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
}

/// The handle on the process's MPI thread.
pub(super) struct MpiThread {
    commands: Sender<Command>,
    /// The workers, by rank (1, 2, ...), or why there are none to use.
    workers: Result<Vec<WorkerId>, Error>,
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
    // dies, which drops the sender).
    let workers = match start_result.recv() {
        Ok(workers) => workers,
        Err(_) => {
            let _ = join.join();
            return Err(Error::SpawnFailed(
                "the MPI thread ended while initializing MPI".into(),
            ));
        }
    };
    Ok(MpiThread {
        commands,
        workers,
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

/// A worker rank as the thread sees it.
struct Rank {
    /// Its MPI rank.
    rank: i32,
    /// Jobs sent and not answered.
    in_flight: usize,
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
}

struct Loop {
    world: SimpleCommunicator,
    ranks: Vec<Rank>,
    pools: Vec<Pool>,
    sent: HashMap<u64, Sent>,
    outbox: Outbox,
    next_id: u64,
    /// Where the next round of sends starts, so that the ranks share evenly.
    cursor: usize,
}

/// The thread's body: initialize MPI, collect the handshakes, serve.
fn run(commands: Receiver<Command>, started: Sender<Result<Vec<WorkerId>, Error>>) {
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
    let workers = handshake(&world);
    let ranks = match &workers {
        Ok(workers) => workers
            .iter()
            .map(|w| Rank {
                rank: w.rank.unwrap_or(0) as i32,
                in_flight: 0,
                inits: VecDeque::new(),
                dead: false,
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let _ = started.send(workers);
    let mut this = Loop {
        world,
        ranks,
        pools: Vec::new(),
        sent: HashMap::new(),
        outbox: Outbox::default(),
        next_id: 1,
        cursor: 0,
    };
    let ack = this.serve(&commands);
    this.stop();
    drop(this);
    drop(universe); // MPI_Finalize, on the thread that initialized MPI
    if let Some(ack) = ack {
        let _ = ack.send(());
    }
}

/// Waits for every worker's hello and checks it.
fn handshake(world: &SimpleCommunicator) -> Result<Vec<WorkerId>, Error> {
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
    let mut found: Vec<Option<Result<WorkerId, String>>> = vec![None; size as usize - 1];
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
                *slot = Some(if status.tag() != TAG_MESSAGE {
                    Err(format!("rank {rank} sent tag {} first", status.tag()))
                } else {
                    message::check_ready(&body).and_then(|worker| {
                        if worker.rank == Some(rank as u32) {
                            Ok(worker)
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
            let waiting = self
                .ranks
                .iter()
                .any(|r| !r.dead && (r.in_flight > 0 || !r.inits.is_empty()));
            if !waiting && self.outbox.is_empty() {
                // Nothing can arrive that we wait for: sleep until told.
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
                        }
                    }
                }
                self.pools.push(pool);
            }
        }
    }

    /// Sends queued jobs to the ranks with room, one per rank per round.
    fn schedule(&mut self) -> bool {
        let mut any = false;
        let n = self.ranks.len();
        for p in 0..self.pools.len() {
            if self.pools[p].inits_due > 0 {
                continue;
            }
            let window = self.pools[p].shared.config.window;
            loop {
                let mut sent = false;
                let start = self.cursor;
                for step in 0..n {
                    let r = (start + step) % n;
                    let rank = &self.ranks[r];
                    if rank.dead || rank.in_flight >= window {
                        continue;
                    }
                    let Some(job) = self.pools[p].shared.pop() else {
                        break;
                    };
                    self.cursor = (r + 1) % n;
                    if self.send_job(p, r, job) {
                        sent = true;
                    }
                    any = true;
                }
                if !sent {
                    break;
                }
            }
        }
        any
    }

    /// Starts `job` and sends it to `ranks[r]`; false if it was cancelled
    /// (or failed to encode) instead.
    fn send_job(&mut self, p: usize, r: usize, job: Job) -> bool {
        let pool = &mut self.pools[p];
        if !job.sink.start() {
            pool.shared.finished(1);
            return false;
        }
        let id = self.next_id;
        self.next_id += 1;
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
        self.outbox.send(self.ranks[r].rank, TAG_MESSAGE, body);
        self.ranks[r].in_flight += 1;
        pool.in_flight += 1;
        self.sent.insert(
            id,
            Sent {
                pool: Arc::clone(&pool.shared),
                sink: job.sink,
                rank: r,
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
            let source = status.source_rank();
            let Some(r) = self.ranks.iter().position(|x| x.rank == source) else {
                continue;
            };
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

    /// A job's answer (or failure).
    fn done(&mut self, id: u64, outcome: Result<&[u8], Error>) {
        let Some(sent) = self.sent.remove(&id) else {
            return;
        };
        self.ranks[sent.rank].in_flight -= 1;
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
        eprintln!(
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
        for shared in std::mem::take(&mut self.ranks[r].inits) {
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
    fn stop(&mut self) {
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
            let due = self.sent.len() + self.ranks.iter().map(|r| r.inits.len()).sum::<usize>();
            if (due == 0 && self.outbox.is_empty()) || Instant::now() >= deadline {
                break;
            }
            backoff(&mut idle);
        }
        let ids: Vec<u64> = self.sent.keys().copied().collect();
        for id in ids {
            self.done(
                id,
                Err(Error::BrokenPool(
                    "the program exited while the task ran".into(),
                )),
            );
        }
    }

    /// At exit: answers complete their futures; nothing else matters.
    fn receive_at_exit(&mut self) {
        while let Some(message) = self.world.any_process().immediate_matched_probe() {
            let (body, status) = message.matched_receive_vec::<u8>();
            let source = status.source_rank();
            let Some(r) = self.ranks.iter().position(|x| x.rank == source) else {
                continue;
            };
            match message::decode::<FromWorkerRef>(&body) {
                Ok(FromWorkerRef::Done { id, results }) => self.done(id, Ok(results)),
                _ => {
                    self.ranks[r].inits.pop_front();
                }
            }
        }
    }
}
