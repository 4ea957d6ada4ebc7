//! The opt-in, and the worker ranks' loop.
//!
//! A program opts in with the environment variable [`OPT_IN_ENV`]
//! (`CONCURRENT_FUTURES_MPI=1`) on its `mpirun` line. The crate's static
//! constructor (the one that also diverts process-pool workers, see
//! [`run_if_worker`](crate::run_if_worker)) then calls [`divert`] before
//! `main`: it reads the launcher's rank variable, **without** initializing
//! MPI, and
//! * on a rank >= 1 serves tasks for rank 0 and exits (status 0), never
//!   returning to `main`;
//! * on rank 0 registers an `atexit` hook that shuts the worker ranks down
//!   and finalizes MPI when the program ends, also if no executor was ever
//!   made (else the workers would wait for rank 0 forever);
//! * without the variable, or outside an MPI launcher, does nothing at all:
//!   such a program may use MPI for its own purposes.
//!
//! Guarantees:
//! * The opt-in variable is removed from the environment once read, so
//!   programs a rank starts (including itself) are never diverted by it.
//! * A worker rank only runs registered tasks, and answers every request in
//!   order; a message it cannot read makes it print one line to stderr and
//!   exit with status 86 (`mpirun` then ends the job), never panic.
//! * A worker rank never initializes MPI before `divert` saw the opt-in.

use std::sync::atomic::{AtomicBool, Ordering};

use mpi::traits::*;
use serde_bytes::Bytes;

use super::wire::{TAG_MESSAGE, TAG_READY_ISOLATED, TAG_SHUTDOWN};
use crate::WorkerId;
use crate::remote::message::{self, FromWorkerRef, PROTOCOL_VERSION, ToWorkerRef};
use crate::remote::serve;
use crate::remote::tasks::build_identity;

/// The environment variable by which a program run under `mpirun` opts in
/// to [`MpiPoolExecutor`](super::MpiPoolExecutor): `1` (anything but empty
/// or `0`) turns every rank but 0 into a worker; `isolate` also makes each
/// worker rank run its tasks in a child process of its own, so that a task
/// that crashes fails with [`Error::WorkerDied`](crate::Error::WorkerDied)
/// instead of ending the MPI job.
///
/// ```text
/// mpirun -x CONCURRENT_FUTURES_MPI=1 -n 4 ./app
/// mpirun -x CONCURRENT_FUTURES_MPI=isolate -n 4 ./app
/// ```
pub const OPT_IN_ENV: &str = "CONCURRENT_FUTURES_MPI";

/// Exit status of a worker rank that received garbage.
const EXIT_PROTOCOL: i32 = 86;

/// The launcher variables that name a process's rank, read in this order:
/// Open MPI, PMIx launchers, MPICH's hydra (and Intel MPI), Slurm's `srun`.
const RANK_VARIABLES: [&str; 4] = [
    "OMPI_COMM_WORLD_RANK",
    "PMIX_RANK",
    "PMI_RANK",
    "SLURM_PROCID",
];

/// Set once this process saw the opt-in as rank 0.
static RANK_ZERO: AtomicBool = AtomicBool::new(false);

/// Set once this process became a worker rank (whose opt-in variable is
/// gone by then: its tasks' own processes must not see it).
static WORKER_RANK: AtomicBool = AtomicBool::new(false);

/// This process's rank according to its launcher's environment, if it was
/// started by one.
pub(super) fn launcher_rank() -> Option<u32> {
    RANK_VARIABLES
        .iter()
        .find_map(|name| std::env::var(name).ok()?.trim().parse().ok())
}

fn opted_in() -> bool {
    std::env::var_os(OPT_IN_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// True if this process is rank 0 of an MPI job that opted in.
pub(super) fn is_rank_zero() -> bool {
    RANK_ZERO.load(Ordering::Acquire)
}

/// Why this process cannot make an [`MpiPoolExecutor`](super::MpiPoolExecutor),
/// in words that say how to launch it.
pub(super) fn not_launched() -> String {
    let how = format!(
        "launch the program with `mpirun -x {OPT_IN_ENV}=1 -n N ./app` (N >= 2: rank 0 runs \
         main, the other ranks run the tasks)"
    );
    match launcher_rank() {
        None => format!("this process was not started by an MPI launcher: {how}"),
        Some(_) if !opted_in() && !WORKER_RANK.load(Ordering::Acquire) => {
            format!("this MPI job did not opt in ({OPT_IN_ENV} is not set): {how}")
        }
        Some(rank) => format!(
            "this process is rank {rank}, a worker rank; only rank 0 makes an MpiPoolExecutor \
             (call serve_if_worker() as the first line of main where the static constructor \
             does not run): {how}"
        ),
    }
}

/// Called before `main` by the crate's static constructor: makes a worker
/// rank of an opted-in MPI job a worker (never returning), and registers
/// the exit hook on its rank 0. Does nothing without the opt-in.
pub(crate) fn divert() {
    if !opted_in() {
        return;
    }
    let Some(rank) = launcher_rank() else {
        // Not under a launcher: `main` runs, and the executor explains.
        return;
    };
    let isolate = std::env::var_os(OPT_IN_ENV).is_some_and(|v| v == "isolate");
    // SAFETY: this runs before `main` (from the static constructor) or as
    // the first line of `main`, when the program has no other thread that
    // could read the environment concurrently.
    unsafe { std::env::remove_var(OPT_IN_ENV) };
    if rank == 0 {
        if !RANK_ZERO.swap(true, Ordering::AcqRel) {
            // SAFETY: `at_exit` is an `extern "C" fn()` that never unwinds.
            unsafe { libc::atexit(at_exit) };
        }
        return;
    }
    WORKER_RANK.store(true, Ordering::Release);
    crate::panic::install_hook_with_backtraces();
    let code = match serve(isolate) {
        Ok(()) => 0,
        Err(e) => {
            crate::trace::diag!(
                error,
                "concurrent_futures MPI worker rank {rank} (pid {}): {e}",
                std::process::id()
            );
            EXIT_PROTOCOL
        }
    };
    std::process::exit(code);
}

/// Makes this process an MPI worker if it is a worker rank of an MPI job
/// that opted in (see the [module docs](super)), and never returns in that
/// case; otherwise returns at once. On rank 0 of such a job, it arranges for
/// the workers to be shut down when the program exits.
///
/// Where the library's static constructor runs (Linux, Android, the BSDs,
/// illumos, macOS) this is done before `main` already and calling it is a
/// no-op; elsewhere, call it as the first line of `main`.
///
/// # Examples
///
/// ```no_run
/// use concurrent_futures::{MpiPoolExecutor, task};
///
/// #[task]
/// fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// fn main() {
///     concurrent_futures::mpi_pool::serve_if_worker(); // a no-op where it ran before main
///     let pool = MpiPoolExecutor::new().unwrap();
///     assert_eq!(pool.submit(square, 7).unwrap().into_result(), Ok(49));
/// }
/// ```
pub fn serve_if_worker() {
    divert();
}

/// Rank 0's exit hook: stops the MPI thread (which tells the workers and
/// finalizes), or, if no executor ever started it, initializes MPI only to
/// tell the workers to exit.
extern "C" fn at_exit() {
    // Nothing may unwind into the C runtime.
    let _ = std::panic::catch_unwind(super::thread::exit);
}

/// The worker loop: hello, then answer every request until told to stop
/// (in a child process, with `isolate`: see the `isolate` module).
fn serve(isolate: bool) -> Result<(), String> {
    // Funneled: with `isolate`, the local process pool has threads of its
    // own (they never call MPI).
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
        .ok_or("MPI was initialized already")?;
    let world = universe.world();
    match serve_on(&world, isolate) {
        Ok(()) => {
            drop(universe); // MPI_Finalize
            Ok(())
        }
        Err(e) => {
            // No MPI_Finalize: it would wait for the other ranks, which
            // wait for rank 0; exiting with an error status (the caller)
            // makes mpirun end the job.
            std::mem::forget(universe);
            Err(e)
        }
    }
}

/// [`serve`] once MPI is initialized.
fn serve_on(world: &mpi::topology::SimpleCommunicator, isolate: bool) -> Result<(), String> {
    let root = world.process_at_rank(0);
    let me = WorkerId {
        pid: std::process::id(),
        host: mpi::environment::processor_name().ok(),
        rank: Some(world.rank() as u32),
    };
    let mut out = Vec::new();
    let ready = FromWorkerRef::Ready {
        version: PROTOCOL_VERSION,
        build: build_identity(),
        worker: me.clone(),
    };
    message::append(&ready, &mut out).map_err(|e| e.to_string())?;
    // The tag says whether this rank can stop a running task.
    let hello = if isolate {
        TAG_READY_ISOLATED
    } else {
        TAG_MESSAGE
    };
    root.send_with_tag(&out[..], hello);
    if isolate {
        return super::isolate::serve(world, &me);
    }
    let mut results = Vec::new();
    loop {
        let (body, status) = root.matched_probe().matched_receive_vec::<u8>();
        if status.tag() == TAG_SHUTDOWN {
            break;
        }
        if status.tag() != TAG_MESSAGE {
            // A timed job or an abort: never sent to a rank that does not
            // isolate, and never run without its deadline.
            return Err(format!("unexpected MPI tag {}", status.tag()));
        }
        let request = message::decode::<ToWorkerRef>(&body).map_err(|e| e.to_string())?;
        results.clear();
        out.clear();
        let answer = match request {
            ToWorkerRef::Shutdown => break,
            ToWorkerRef::Init {
                task,
                fingerprint,
                args,
            } => {
                let outcome = serve::init(task, fingerprint, args, &mut results)
                    .map(|()| Bytes::new(&results));
                FromWorkerRef::InitDone { outcome }
            }
            // The ticket names a slot of a shared board, which MPI does not
            // have: a job sent to a rank counts as started.
            ToWorkerRef::Run {
                id,
                task,
                fingerprint,
                items,
                ..
            } => {
                if !serve::run(task, fingerprint, items, &mut results) {
                    return Err(format!("malformed items in job {id}"));
                }
                // Too large to send: an error per item, as in the process
                // pool, rather than the rank's exit (and the job's end).
                if results.len() > message::MAX_MESSAGE - 1024 {
                    let error = message::RemoteError::Serialization {
                        what: "result too large".into(),
                        why: format!(
                            "an answer of {} bytes exceeds the message limit of {} bytes",
                            results.len(),
                            message::MAX_MESSAGE
                        ),
                    };
                    results = serve::fail_each(items, &error);
                }
                FromWorkerRef::Done {
                    id,
                    results: Bytes::new(&results),
                }
            }
        };
        message::append(&answer, &mut out)
            .map_err(|e| format!("an answer failed to encode: {e}"))?;
        if out.len() > message::MAX_MESSAGE {
            return Err(format!(
                "an answer of {} bytes exceeds the message limit",
                out.len()
            ));
        }
        root.send_with_tag(&out[..], TAG_MESSAGE);
    }
    Ok(())
}
