//! `MpiPoolExecutor` under a real `mpirun` (feature `mpi`; needs Open MPI's
//! `mpirun` on the PATH).
//!
//! This test binary is its own MPI program (`harness = false`): run by
//! cargo, its `main` is the driver, which launches
//! `mpirun --oversubscribe -n 3 -x CONCURRENT_FUTURES_MPI=1 <this binary> <scenario>`
//! once per scenario, under `timeout` (so nothing can hang CI), and checks
//! the exit status, the time taken and the output. Under `mpirun`, rank 0
//! runs the scenario (its assertions fail the job: a panic exits non-zero)
//! and the other ranks become workers before `main`.
//!
//! Scenarios and what they cover:
//! * `basic`: results of `submit`, `submit_with`, `submit_fallible` (value
//!   and the task's own error, downcast), remote panic messages, `map` in
//!   order (single items and chunks), `map_unordered`, `workers()` /
//!   `max_workers()`, jobs spread over both ranks, futures mixed with a
//!   thread pool's in `wait` and `as_completed`, `.await`, done callbacks on
//!   a callback thread (not the MPI thread), a second executor after the
//!   first was shut down (the MPI thread is reused), `Drop`.
//! * `initializer`: a failing initializer makes the pool broken
//!   (`BrokenPool` naming the rank and the initializer's error); a working
//!   one runs on every rank before the tasks.
//! * `cancel`: `shutdown(cancel_futures)` cancels queued jobs (never sent)
//!   while sent ones run to the end; `Future::cancel` of a queued job; submit
//!   after shutdown fails with `ShutDown`; jobs sent count as running;
//!   dropping the executor while panicking cancels the queue and waits for
//!   the sent jobs. Without isolation, `timeout`/`submit_timeout` are
//!   `InvalidArgument` and `abort` of a running task returns false.
//! * `isolate` (`CONCURRENT_FUTURES_MPI=isolate`): a task that aborts fails
//!   alone with `WorkerDied` naming its rank and its child's pid; the jobs
//!   before and after it, panics, chunks and the initializer (rerun in the
//!   replacement child) all work.
//! * `timeout` (isolate): a zero timeout is refused; a spinning task with a
//!   200 ms `submit_timeout` fails with `TaskTimeout(200 ms)` while the
//!   tasks before and after it and a timed task that ends in time succeed;
//!   the replacement child runs the initializer; the builder's `timeout`
//!   applies to every task and `map` chunk; the job exits 0.
//! * `abort_task` (isolate, window 1): `Future::abort` of a spinning task
//!   that runs (it says so with a marker file) cancels it, its rank kills
//!   the child and answers, so both ranks take work again, in a fresh
//!   child; abort of a queued task cancels it.
//! * `scale` (16 ranks, 15 workers, `--mca mpi_yield_when_idle 1`): 20,000
//!   tasks, a `map_unordered` of 100,000 single items and a `map` of
//!   100,000 in chunks of 100; every result arrives exactly once and
//!   right, and every rank takes work.
//! * `exit_running`: rank 0 returns from `main` while a worker rank runs a
//!   task that never ends; the job ends after the exit timeout (MPI_Abort
//!   with status 0) instead of waiting in `MPI_Finalize` for good.
//! * `noexec`: rank 0 returns from `main` without making an executor; the
//!   job ends cleanly and quickly (exit hook).
//! * `abort`: a task aborts its worker rank; `mpirun` ends the job, which
//!   exits non-zero, quickly, with a message naming the dead rank.
//! * `garbage`: rank 0 sends rank 1 a message it cannot read (through a
//!   hidden test hook); the worker prints why and exits with status 86,
//!   and `mpirun` ends the job quickly, non-zero. `garbage_isolated`: the
//!   same with isolation, while the rank's child spins forever.
//! * `refuse` (MPMD, the worker is this binary with another build id): the
//!   build fails naming rank 1 and "another build"; the job still ends
//!   cleanly.
//! * `single` (`-n 1`) and `optout` (no `CONCURRENT_FUTURES_MPI`): clear
//!   errors saying how to launch, no hang.
//! * In this process, outside `mpirun`: `new()` explains how to launch.

use std::error::Error as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use concurrent_futures::{
    Error, MapOptions, MpiPoolExecutor, ReturnWhen, ThreadPoolExecutor, Waitable, as_completed,
    task, wait,
};
use serde::{Deserialize, Serialize};

/// The most any one `mpirun` may take before it is killed and the test fails.
const LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- tasks

#[task]
fn square(n: u64) -> u64 {
    n * n
}

#[task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[derive(Debug, Serialize, Deserialize)]
struct ParseFailure(String);

impl std::fmt::Display for ParseFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot parse {:?}", self.0)
    }
}

impl std::error::Error for ParseFailure {}

#[task]
fn parse(text: String) -> Result<i64, ParseFailure> {
    text.parse().map_err(|_| ParseFailure(text))
}

#[task]
fn boom(message: String) -> u32 {
    panic!("{message}")
}

/// The MPI rank this task runs on.
#[task]
fn rank() -> u32 {
    std::env::var("OMPI_COMM_WORLD_RANK")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Work that takes `ms` milliseconds of CPU (a workload, not a wait).
#[task]
fn text_of(n: usize) -> String {
    "x".repeat(n)
}

/// Why an executor cannot be made here (a worker rank).
#[task]
fn nested_executor() -> String {
    MpiPoolExecutor::new()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

#[task]
fn spin_ms(ms: u64) -> u64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_millis(ms) {
        n = n.wrapping_add(1);
        std::hint::spin_loop();
    }
    n
}

#[task]
fn refuse() -> Result<(), String> {
    Err("no licence".to_string())
}

static LEVEL: AtomicU32 = AtomicU32::new(0);

#[task]
fn set_level(level: u32) {
    LEVEL.store(level, Ordering::SeqCst);
}

#[task]
fn current_level() -> u32 {
    LEVEL.load(Ordering::SeqCst)
}

#[task]
fn abort_now() {
    std::process::abort()
}

/// Never returns: only a timeout or an abort ends it.
#[task]
fn spin_forever() {
    loop {
        std::hint::spin_loop();
    }
}

/// Creates `marker` (saying it runs), then never returns.
#[task]
fn spin_marked(marker: String) {
    std::fs::write(&marker, b"running").unwrap();
    loop {
        std::hint::spin_loop();
    }
}

/// Runs until the file `release` exists (at most [`LIMIT`]): a long job
/// that rank 0 ends when it is ready. Returns 0 if it was never released.
#[task]
fn hold(release: String) -> u64 {
    let start = Instant::now();
    let mut polls = 1;
    while !std::path::Path::new(&release).exists() {
        if start.elapsed() > LIMIT {
            return 0;
        }
        std::thread::yield_now();
        polls += 1;
    }
    polls
}

/// A path for a marker file of this run, absent.
fn marker(name: &str) -> String {
    let path = std::env::temp_dir().join(format!("cf-mpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path.to_str().unwrap().to_string()
}

/// The process the task runs in.
#[task]
fn pid() -> u32 {
    std::process::id()
}

// ---------------------------------------------------------------- rank 0

fn under_mpirun() -> bool {
    ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

fn main() {
    if under_mpirun() {
        let scenario = std::env::args().nth(1).unwrap_or_default();
        scenario_main(&scenario);
        println!("PASS {scenario}");
        return;
    }
    driver();
}

fn scenario_main(scenario: &str) {
    match scenario {
        "basic" => basic(),
        "initializer" => initializer(),
        "cancel" => cancel(),
        "noexec" => {}
        "exit_running" => {
            // The program leaves a task that never ends on a worker rank.
            let pool = MpiPoolExecutor::new().unwrap();
            let spinning = pool.submit(spin_forever, ()).unwrap();
            // Sent (and so running) within moments; bounded all the same.
            let deadline = Instant::now() + Duration::from_secs(20);
            while !spinning.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            pool.shutdown(false, false);
            std::mem::forget(spinning);
            std::mem::forget(pool);
        }
        "isolate" => isolate(),
        "timeout" => timeout(),
        "scale" => scale(),
        "abort_task" => abort_task(),
        "abort" => {
            let pool = MpiPoolExecutor::new().unwrap();
            let dying = pool.submit(abort_now, ()).unwrap();
            println!("submitted a task that aborts its rank");
            // mpirun ends the job long before this times out.
            let outcome = dying.result_timeout(LIMIT);
            println!("NOT KILLED: {outcome:?}");
            std::process::exit(3);
        }
        "garbage" => {
            let pool = MpiPoolExecutor::new().unwrap();
            assert_eq!(outcome(pool.submit(square, 3).unwrap()), Ok(9));
            // With isolation, a task that never ends must not hold the
            // rank's exit up (the first job goes to rank 1).
            let _stuck = pool
                .isolated()
                .then(|| pool.submit(spin_forever, ()).unwrap());
            pool.__test_send_garbage(1);
            println!("sent garbage to rank 1");
            // mpirun ends the job long before this times out.
            let waiting = pool.submit(spin_ms, 60_000).unwrap();
            let outcome = waiting.result_timeout(LIMIT);
            println!("NOT KILLED: {outcome:?}");
            std::process::exit(3);
        }
        "refuse" => {
            let error = MpiPoolExecutor::new().unwrap_err();
            println!("REFUSED: {error}");
            let text = error.to_string();
            assert!(matches!(error, Error::SpawnFailed(_)), "{error:?}");
            assert!(text.contains("rank 1"), "{text}");
            assert!(text.contains("another build"), "{text}");
        }
        "single" => {
            let error = MpiPoolExecutor::new().unwrap_err();
            println!("SINGLE: {error}");
            assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
            assert!(error.to_string().contains("single rank"), "{error}");
            assert!(
                error
                    .to_string()
                    .contains("mpirun -x CONCURRENT_FUTURES_MPI=1")
            );
        }
        "optout" => {
            let error = MpiPoolExecutor::new().unwrap_err();
            println!("OPTOUT: {error}");
            assert!(error.to_string().contains("did not opt in"), "{error}");
            assert!(
                error
                    .to_string()
                    .contains("mpirun -x CONCURRENT_FUTURES_MPI=1")
            );
        }
        other => panic!("unknown scenario {other:?}"),
    }
}

fn basic() {
    let pool = MpiPoolExecutor::new().unwrap();
    assert_eq!(pool.max_workers(), 2);
    let ranks: Vec<Option<u32>> = pool.workers().iter().map(|w| w.rank).collect();
    assert_eq!(ranks, [Some(1), Some(2)]);
    assert!(pool.workers().iter().all(|w| w.pid != std::process::id()));

    // A task cannot make an executor on its worker rank, and is told so.
    let why = pool
        .submit(nested_executor, ())
        .unwrap()
        .into_result()
        .unwrap();
    assert!(why.contains("a worker rank"), "{why}");

    // A result over the message limit fails its task, not its rank (which
    // exited, and the job with it).
    match pool.submit(text_of, (1 << 30) + 1).unwrap().into_result() {
        Err(Error::Serialization(why)) => {
            assert!(why.to_string().contains("result too large"), "{why}")
        }
        other => panic!("{:?}", other.map(|s| s.len())),
    }

    // Values, the task's own errors, panics.
    assert_eq!(pool.submit(square, 7).unwrap().into_result(), Ok(49));
    assert_eq!(
        pool.submit_with(add, (40, 2)).unwrap().into_result(),
        Ok(42)
    );
    let parsed = pool.submit_fallible(parse, "42".to_string()).unwrap();
    assert_eq!(parsed.into_result(), Ok(42));
    match pool
        .submit_fallible(parse, "x".to_string())
        .unwrap()
        .into_result()
    {
        Err(Error::Failed(e)) => {
            assert_eq!(e.message(), "cannot parse \"x\"");
            assert_eq!(e.downcast_ref::<ParseFailure>().unwrap().0, "x");
        }
        other => panic!("{other:?}"),
    }
    let nested = pool.submit(parse, "y".to_string()).unwrap().into_result();
    assert!(matches!(nested, Ok(Err(ParseFailure(ref s))) if s == "y"));
    match pool
        .submit(boom, "bad input".to_string())
        .unwrap()
        .into_result()
    {
        Err(Error::Panicked {
            message, location, ..
        }) => {
            assert_eq!(message, "bad input");
            assert!(location.unwrap().contains("mpi.rs"));
        }
        other => panic!("{other:?}"),
    }

    // map, in order, single items and chunks; map_unordered.
    let squares: Vec<u64> = pool
        .map(square, 0..100u64)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(squares, (0..100u64).map(|n| n * n).collect::<Vec<_>>());
    let opts = MapOptions::new().chunksize(7).buffersize(3);
    let chunked: Vec<u64> = pool
        .map_with(square, 0..1000u64, opts)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(chunked, (0..1000u64).map(|n| n * n).collect::<Vec<_>>());
    let mut seen = [false; 50];
    for (i, r) in pool.map_unordered(square, 0..50u64).unwrap() {
        assert_eq!(r, Ok((i * i) as u64));
        seen[i] = true;
    }
    assert!(seen.iter().all(|&s| s));
    let mut seen = 0;
    let opts = MapOptions::new().chunksize(10);
    for (i, r) in pool.map_unordered_with(square, 0..95u64, opts).unwrap() {
        assert_eq!(r, Ok((i * i) as u64));
        seen += 1;
    }
    assert_eq!(seen, 95);

    // Both ranks take work.
    let ranks: Vec<u32> = pool
        .map(rank, std::iter::repeat_n((), 40))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(ranks.contains(&1) && ranks.contains(&2), "{ranks:?}");

    // Futures mix with other executors' in wait and as_completed.
    let threads = ThreadPoolExecutor::new(1).unwrap();
    let local = threads.submit(|| 5u64).unwrap();
    let remote = pool.submit(square, 3).unwrap();
    let both: [&dyn Waitable; 2] = [&local, &remote];
    let waited = wait(both, Some(LIMIT), ReturnWhen::AllCompleted);
    assert_eq!(waited.done.len(), 2);
    let many: Vec<_> = (0..10u64)
        .map(|n| pool.submit(square, n).unwrap())
        .collect();
    assert_eq!(as_completed(&many, Some(LIMIT)).count(), 10);
    assert_eq!(remote.into_result(), Ok(9));

    // .await
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let awaited = rt.block_on(async { pool.submit(square, 12).unwrap().await });
    assert_eq!(awaited, Ok(144));

    // Done callbacks run on a callback thread, never on the MPI thread.
    let (tx, rx) = std::sync::mpsc::channel();
    let f = pool.submit(square, 4).unwrap();
    f.add_done_callback(move |_| {
        let name = std::thread::current().name().map(str::to_owned);
        tx.send(name).unwrap();
    });
    let name = rx.recv_timeout(LIMIT).unwrap();
    assert!(
        name.as_deref()
            .is_some_and(|n| n.starts_with("mpi-pool-callbacks")),
        "{name:?}"
    );

    // A second executor reuses the MPI thread and the workers.
    pool.shutdown(true, false);
    assert!(matches!(pool.submit(square, 1), Err(Error::ShutDown)));
    drop(pool);
    let again = MpiPoolExecutor::new().unwrap();
    assert_eq!(again.submit(square, 5).unwrap().into_result(), Ok(25));
    let e = again
        .submit(boom, "x".into())
        .unwrap()
        .into_result()
        .unwrap_err();
    assert!(e.source().is_none() || e.to_string().contains('x'));
}

fn initializer() {
    let broken = MpiPoolExecutor::builder()
        .initializer(refuse, ())
        .build()
        .unwrap();
    let outcome = broken
        .submit(current_level, ())
        .and_then(|f| f.into_result());
    match outcome {
        Err(Error::BrokenPool(reason)) => {
            assert!(reason.contains("no licence"), "{reason}");
            assert!(reason.contains("rank"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Later submits fail at once.
    assert!(matches!(
        broken.submit(current_level, ()),
        Err(Error::BrokenPool(reason)) if reason.contains("no licence")
    ));
    drop(broken);

    let pool = MpiPoolExecutor::builder()
        .initializer(set_level, 7)
        .build()
        .unwrap();
    let levels: Vec<u32> = pool
        .map(current_level, std::iter::repeat_n((), 20))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(levels, [7; 20]);
    assert_eq!(
        LEVEL.load(Ordering::SeqCst),
        0,
        "it ran on the workers only"
    );
    assert!(matches!(
        MpiPoolExecutor::builder().window(0).build(),
        Err(Error::InvalidArgument(_))
    ));
}

/// Under `CONCURRENT_FUTURES_MPI=isolate`: a crash fails its own task.
fn isolate() {
    let pool = MpiPoolExecutor::builder()
        .initializer(set_level, 3)
        .build()
        .unwrap();
    let before = pool.submit(square, 6).unwrap();
    let dying = pool.submit(abort_now, ()).unwrap();
    let after: Vec<_> = (0..20u64)
        .map(|n| pool.submit(square, n).unwrap())
        .collect();
    match dying.into_result() {
        Err(Error::WorkerDied { worker, cause }) => {
            assert!(matches!(worker.rank, Some(1 | 2)), "{worker:?}");
            assert!(worker.pid != std::process::id());
            assert!(
                !pool.workers().iter().any(|w| w.pid == worker.pid),
                "a child, not the rank"
            );
            assert!(
                cause.contains("SIGABRT") || cause.contains("signal 6"),
                "{cause}"
            );
            println!("isolated: {worker} died: {cause}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(before.into_result(), Ok(36));
    for (n, f) in after.into_iter().enumerate() {
        assert_eq!(f.into_result(), Ok((n * n) as u64));
    }
    // Panics and the task's own errors still come back; the replacement
    // child ran the initializer too.
    let panicked = pool
        .submit(boom, "still here".into())
        .unwrap()
        .into_result();
    assert!(matches!(panicked, Err(Error::Panicked { message, .. }) if message == "still here"));
    let levels: Vec<u32> = pool
        .map(current_level, std::iter::repeat_n((), 10))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(levels, [3; 10]);
    let chunked: Vec<u64> = pool
        .map_with(square, 0..100u64, MapOptions::new().chunksize(10))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(chunked[99], 99 * 99);
}

/// The outcome of `future`, waiting at most [`LIMIT`].
fn outcome<T>(future: concurrent_futures::Future<T>) -> Result<T, Error> {
    assert!(future.wait_timeout(LIMIT), "no answer within {LIMIT:?}");
    future.into_result()
}

/// Under `CONCURRENT_FUTURES_MPI=isolate`: per-task timeouts kill the
/// task's child; the rank, the other tasks and the job go on.
fn timeout() {
    // A zero timeout is refused before anything else.
    assert!(matches!(
        MpiPoolExecutor::builder().timeout(Duration::ZERO).build(),
        Err(Error::InvalidArgument(_))
    ));
    let pool = MpiPoolExecutor::builder()
        .initializer(set_level, 5)
        .build()
        .unwrap();
    assert!(pool.isolated());
    assert!(matches!(
        pool.submit_timeout(square, 2, Duration::ZERO),
        Err(Error::InvalidArgument(_))
    ));
    let before: Vec<_> = (0..10u64)
        .map(|n| pool.submit(square, n).unwrap())
        .collect();
    let start = Instant::now();
    let stuck = pool
        .submit_timeout(spin_forever, (), Duration::from_millis(200))
        .unwrap();
    let after: Vec<_> = (0..10u64)
        .map(|n| pool.submit(square, n).unwrap())
        .collect();
    // A timed task that finishes in time is unaffected.
    let quick = pool
        .submit_timeout(square, 9, Duration::from_secs(30))
        .unwrap();
    match outcome(stuck) {
        Err(Error::TaskTimeout(t)) => assert_eq!(t, Duration::from_millis(200)),
        other => panic!("{other:?}"),
    }
    let took = start.elapsed();
    println!("timed out after {took:.2?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    for (n, f) in before.into_iter().chain(after).enumerate() {
        assert_eq!(outcome(f), Ok(((n % 10) * (n % 10)) as u64));
    }
    assert_eq!(outcome(quick), Ok(81));
    // The replacement child ran the initializer; both ranks still work.
    let levels: Vec<u32> = pool
        .map(current_level, std::iter::repeat_n((), 20))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(levels, [5; 20]);
    pool.shutdown(true, false);

    // The builder's timeout applies to every task and every map chunk.
    let timed = MpiPoolExecutor::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let stuck: Vec<_> = (0..3)
        .map(|_| timed.submit(spin_forever, ()).unwrap())
        .collect();
    let chunked: Vec<u64> = timed
        .map_with(square, 0..100u64, MapOptions::new().chunksize(10))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(chunked, (0..100u64).map(|n| n * n).collect::<Vec<_>>());
    for f in stuck {
        assert!(matches!(outcome(f), Err(Error::TaskTimeout(_))));
    }
    assert_eq!(outcome(timed.submit(square, 12).unwrap()), Ok(144));
}

/// Under `CONCURRENT_FUTURES_MPI=isolate`: `Future::abort` of a running
/// task kills its child; the rank gets work again at once.
fn abort_task() {
    // Window 1: a rank whose aborted job never answered would get no job.
    let pool = MpiPoolExecutor::builder().window(1).build().unwrap();
    let marker = std::env::temp_dir().join(format!("cf-mpi-abort-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let children: Vec<u32> = pool
        .map(pid, std::iter::repeat_n((), 10))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let running = pool
        .submit(spin_marked, marker.to_str().unwrap().to_string())
        .unwrap();
    // Bounded: the task says it runs by creating the marker.
    let start = Instant::now();
    while !marker.exists() {
        assert!(start.elapsed() < LIMIT, "the task never started");
        std::thread::yield_now();
    }
    let _ = std::fs::remove_file(&marker);
    assert!(running.running());
    assert!(!running.cancel(), "cancel leaves a running task alone");
    assert!(running.abort(), "abort stops a running task");
    assert!(running.cancelled());
    assert_eq!(running.result_timeout(LIMIT).err(), Some(Error::Cancelled));
    // Both ranks take work again (the aborted one answered), in a new
    // child for the aborted one. That rank starts its new child first, and
    // meanwhile the other may run a whole short map alone: map again until
    // both ranks appear, within the bound.
    let start = Instant::now();
    let mut after: Vec<(u32, u32)> = Vec::new();
    let ranks = loop {
        let more: Vec<(u32, u32)> = pool
            .map(rank_and_pid, std::iter::repeat_n((), 40))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        after.extend(more);
        let ranks: std::collections::BTreeSet<u32> = after.iter().map(|(r, _)| *r).collect();
        if ranks.len() == 2 || start.elapsed() > LIMIT {
            break ranks;
        }
    };
    assert_eq!(ranks.into_iter().collect::<Vec<_>>(), [1, 2]);
    let fresh = after.iter().filter(|(_, p)| !children.contains(p)).count();
    assert!(
        fresh > 0,
        "the aborted rank's child was replaced: {after:?}"
    );
    // A queued task is cancelled by abort and never runs.
    let busy: Vec<_> = (0..2).map(|_| pool.submit(spin_ms, 300).unwrap()).collect();
    let queued = pool.submit(square, 3).unwrap();
    assert!(queued.abort());
    assert!(queued.cancelled());
    for f in busy {
        assert!(outcome(f).unwrap() > 0);
    }

    // Another executor with an initializer while both ranks run tasks
    // that never end: it starts, the tasks can still be aborted, and its
    // own tasks run in the new children. (Before: each rank waited for its
    // old child at the initializer, deaf to aborts, for good.)
    let spinning: Vec<_> = (0..2)
        .map(|i| {
            let path = self::marker(&format!("busy-{i}"));
            let f = pool.submit(spin_marked, path.clone()).unwrap();
            (f, path)
        })
        .collect();
    for (_, path) in &spinning {
        let start = Instant::now();
        while !std::path::Path::new(path).exists() {
            assert!(start.elapsed() < LIMIT, "a task never started");
            std::thread::yield_now();
        }
        let _ = std::fs::remove_file(path);
    }
    let second = MpiPoolExecutor::builder()
        .initializer(set_level, 7)
        .build()
        .unwrap();
    for (f, _) in &spinning {
        assert!(f.abort(), "abort stops a running task");
        assert_eq!(f.result_timeout(LIMIT).err(), Some(Error::Cancelled));
    }
    assert_eq!(
        second
            .submit(current_level, ())
            .unwrap()
            .result_timeout(LIMIT)
            .cloned(),
        Ok(7)
    );
}

/// 16 ranks (15 workers) on this machine: 20,000 tasks and a `map` of
/// 100,000 items, every result exactly once and right, every rank used.
fn scale() {
    let pool = MpiPoolExecutor::new().unwrap();
    let workers = pool.max_workers();
    assert_eq!(workers, 15);
    let start = Instant::now();
    let futures: Vec<_> = (0..20_000u64)
        .map(|n| pool.submit(tagged_square, n).unwrap())
        .collect();
    let mut seen = vec![false; 20_000];
    let mut ranks = vec![0usize; workers + 1];
    for f in futures {
        let (n, sq, on) = outcome(f).unwrap();
        assert_eq!(sq, n * n);
        assert!(!std::mem::replace(&mut seen[n as usize], true), "{n} twice");
        ranks[on as usize] += 1;
    }
    assert!(seen.iter().all(|&s| s));
    println!(
        "20000 tasks in {:.2?}, per rank {:?}",
        start.elapsed(),
        &ranks[1..]
    );
    assert!(ranks[1..].iter().all(|&n| n > 0), "{ranks:?}");

    let start = Instant::now();
    let mut seen = vec![false; 100_000];
    let opts = MapOptions::new().timeout(LIMIT);
    for (i, r) in pool
        .map_unordered_with(square, 0..100_000u64, opts)
        .unwrap()
    {
        assert_eq!(r, Ok((i * i) as u64));
        assert!(!std::mem::replace(&mut seen[i], true), "{i} twice");
    }
    assert!(seen.iter().all(|&s| s));
    let ordered: Vec<u64> = pool
        .map_with(square, 0..100_000u64, MapOptions::new().chunksize(100))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        ordered
            .iter()
            .enumerate()
            .all(|(i, &s)| s == (i * i) as u64)
    );
    println!("2 maps of 100000 items in {:.2?}", start.elapsed());
}

/// `n`, its square, and the rank that computed it.
#[task]
fn tagged_square(n: u64) -> (u64, u64, u32) {
    let on = std::env::var("OMPI_COMM_WORLD_RANK")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(u32::MAX);
    (n, n * n, on)
}

/// The rank and the process the task runs in.
#[task]
fn rank_and_pid() -> (u32, u32) {
    (
        std::env::var("OMPI_COMM_WORLD_RANK")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(u32::MAX),
        std::process::id(),
    )
}

fn cancel() {
    // Without isolation a running task cannot be stopped: timeouts are
    // refused, and abort of a running task returns false.
    assert!(matches!(
        MpiPoolExecutor::builder()
            .timeout(Duration::from_secs(1))
            .build(),
        Err(Error::InvalidArgument(m)) if m.contains("isolate")
    ));
    let pool = MpiPoolExecutor::builder().window(1).build().unwrap();
    assert!(!pool.isolated());
    assert!(matches!(
        pool.submit_timeout(square, 2, Duration::from_secs(1)),
        Err(Error::InvalidArgument(m)) if m.contains("isolate")
    ));
    // One long job per rank: both ranks' windows are full until `release`.
    let release = marker("cancel-1");
    let long: Vec<_> = (0..2)
        .map(|_| pool.submit(hold, release.clone()).unwrap())
        .collect();
    let start = Instant::now();
    while !long.iter().all(|f| f.running()) {
        assert!(start.elapsed() < LIMIT, "the long jobs were never sent");
        std::thread::yield_now();
    }
    assert!(
        !long[0].abort(),
        "a running task on a rank cannot be stopped"
    );
    let queued: Vec<_> = (0..10u64)
        .map(|n| pool.submit(square, n).unwrap())
        .collect();
    assert!(queued.iter().all(|f| !f.running() && !f.done()));
    assert!(queued[0].cancel(), "a queued job can be cancelled");
    pool.shutdown(false, true);
    assert!(
        queued.iter().all(|f| f.cancelled()),
        "the queue was cancelled"
    );
    assert!(matches!(pool.submit(square, 1), Err(Error::ShutDown)));
    std::fs::write(&release, b"go").unwrap();
    for f in long {
        assert!(outcome(f).unwrap() > 0, "sent jobs run to the end");
    }
    pool.shutdown(true, false);
    let _ = std::fs::remove_file(&release);

    // Leaving the executor's scope by panic cancels the queue instead of
    // running it.
    let pool = MpiPoolExecutor::builder().window(1).build().unwrap();
    let release = marker("cancel-2");
    let long: Vec<_> = (0..2)
        .map(|_| pool.submit(hold, release.clone()).unwrap())
        .collect();
    let start = Instant::now();
    while !long.iter().all(|f| f.running()) {
        assert!(start.elapsed() < LIMIT, "the long jobs were never sent");
        std::thread::yield_now();
    }
    let queued: Vec<_> = (0..5u64).map(|n| pool.submit(square, n).unwrap()).collect();
    let unwound = std::thread::scope(|s| {
        // The long jobs end once the drop has cancelled the queue.
        s.spawn(|| {
            let start = Instant::now();
            while !queued.iter().all(|f| f.cancelled()) {
                assert!(start.elapsed() < LIMIT, "the queue was never cancelled");
                std::thread::yield_now();
            }
            std::fs::write(&release, b"go").unwrap();
        });
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _pool = pool;
            panic!("leaving the scope by panic");
        }))
    });
    let _ = std::fs::remove_file(&release);
    assert!(unwound.is_err());
    assert!(
        queued.iter().all(|f| f.cancelled()),
        "the drop cancelled the queue"
    );
    assert!(
        long.iter().all(|f| f.done()),
        "the drop waited for the sent jobs"
    );
}

// ---------------------------------------------------------------- driver

struct Run {
    status: Option<i32>,
    elapsed: Duration,
    output: String,
}

/// Runs `mpirun <args>` under `timeout`, with the root variables.
fn mpirun(args: &[&str], opt_in: bool) -> Run {
    mpirun_within(args, opt_in, LIMIT)
}

/// [`mpirun`], killed after `limit`.
fn mpirun_within(args: &[&str], opt_in: bool, limit: Duration) -> Run {
    let mut command = Command::new("timeout");
    command
        .arg("--kill-after=5")
        .arg(limit.as_secs().to_string())
        .arg("mpirun")
        .arg("--oversubscribe");
    if opt_in {
        command.args(["-x", "CONCURRENT_FUTURES_MPI=1"]);
    }
    command
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("CONCURRENT_FUTURES_MPI")
        .stdin(Stdio::null());
    let start = Instant::now();
    let out = command.output().expect("cannot run timeout/mpirun");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Run {
        status: out.status.code(),
        elapsed: start.elapsed(),
        output,
    }
}

fn me() -> PathBuf {
    std::env::current_exe().unwrap()
}

/// A copy of this binary with another GNU build id: a different build to
/// the handshake, the same program otherwise.
fn other_build() -> PathBuf {
    let mut bytes = std::fs::read(me()).unwrap();
    let note = b"\x03\x00\x00\x00GNU\x00";
    let at = bytes
        .windows(note.len())
        .position(|w| w == note)
        .expect("this binary has a GNU build-id note");
    bytes[at + note.len()] ^= 0xff;
    let path = me().with_file_name(format!("mpi-other-build-{}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn check(name: &str, run: &Run, ok: impl Fn(&Run) -> bool, failures: &mut Vec<String>) {
    let verdict = ok(run);
    println!(
        "test mpi::{name} ... {} ({:.2?}, status {:?})",
        if verdict { "ok" } else { "FAILED" },
        run.elapsed,
        run.status
    );
    if !verdict {
        failures.push(format!("---- {name} ----\n{}", run.output));
    }
}

fn passed(scenario: &'static str) -> impl Fn(&Run) -> bool {
    move |run| run.status == Some(0) && run.output.contains(&format!("PASS {scenario}"))
}

/// The worker that got garbage said why and exited 86; mpirun ended the
/// job quickly.
fn garbage_killed(r: &Run) -> bool {
    r.status.is_some_and(|s| s != 0 && s != 124 && s != 137)
        && r.elapsed < Duration::from_secs(30)
        && r.output.contains("sent garbage to rank 1")
        && !r.output.contains("NOT KILLED")
        && r.output.contains("concurrent_futures MPI worker rank 1")
        && r.output.contains("Exit code:    86")
}

fn driver() {
    let exe = me();
    let exe = exe.to_str().unwrap();
    let mut failures = Vec::new();

    // Outside mpirun: a clear error, no MPI initialized, no hang.
    let start = Instant::now();
    let outside = MpiPoolExecutor::new();
    let outside_ok = matches!(&outside, Err(Error::InvalidArgument(m))
        if m.contains("not started by an MPI launcher") && m.contains("mpirun -x CONCURRENT_FUTURES_MPI=1 -n N"));
    println!(
        "test mpi::outside_mpirun ... {} ({:.2?})",
        if outside_ok { "ok" } else { "FAILED" },
        start.elapsed()
    );
    if !outside_ok {
        failures.push(format!("---- outside_mpirun ----\n{outside:?}"));
    }

    for scenario in ["basic", "initializer", "cancel"] {
        let run = mpirun(&["-n", "3", exe, scenario], true);
        check(scenario, &run, passed(scenario), &mut failures);
    }

    for scenario in ["isolate", "timeout", "abort_task"] {
        let run = mpirun(
            &[
                "-x",
                "CONCURRENT_FUTURES_MPI=isolate",
                "-n",
                "3",
                exe,
                scenario,
            ],
            false,
        );
        check(scenario, &run, passed(scenario), &mut failures);
    }

    // 16 ranks on a machine of a few cores: idle ranks must yield, and the
    // limit is generous (it takes seconds).
    let run = mpirun_within(
        &[
            "--mca",
            "mpi_yield_when_idle",
            "1",
            "-n",
            "16",
            exe,
            "scale",
        ],
        true,
        Duration::from_secs(300),
    );
    if std::env::var_os("MPI_TEST_VERBOSE").is_some() {
        println!("{}", run.output);
    }
    check("scale", &run, passed("scale"), &mut failures);

    let run = mpirun(&["-n", "3", exe, "noexec"], true);
    check(
        "noexec",
        &run,
        |r| passed("noexec")(r) && r.elapsed < Duration::from_secs(20),
        &mut failures,
    );

    // Exiting while a task never ends: the job ends after the exit
    // timeout (30 s), with the program's success, instead of waiting
    // forever in MPI_Finalize.
    let run = mpirun(&["-n", "3", exe, "exit_running"], true);
    check(
        "exit_running",
        &run,
        |r| {
            r.status == Some(0)
                && r.output.contains("PASS exit_running")
                && r.output.contains("ending the MPI job")
                && r.elapsed < Duration::from_secs(90)
        },
        &mut failures,
    );

    let run = mpirun(&["-n", "3", exe, "abort"], true);
    let abort_output = run.output.clone();
    check(
        "abort",
        &run,
        |r| {
            // Ended by mpirun (not by `timeout`, status 124), non-zero,
            // naming the rank that died and how.
            r.status.is_some_and(|s| s != 0 && s != 124 && s != 137)
                && r.elapsed < Duration::from_secs(30)
                && r.output.contains("submitted a task that aborts its rank")
                && !r.output.contains("NOT KILLED")
                && r.output.contains("noticed that process rank 1")
                && r.output.contains("signal 6")
        },
        &mut failures,
    );

    for (name, opt_in) in [
        ("garbage", "CONCURRENT_FUTURES_MPI=1"),
        ("garbage_isolated", "CONCURRENT_FUTURES_MPI=isolate"),
    ] {
        let run = mpirun(&["-x", opt_in, "-n", "3", exe, "garbage"], false);
        check(name, &run, garbage_killed, &mut failures);
    }

    let other = other_build();

    let run = mpirun(
        &[
            "-n",
            "1",
            exe,
            "refuse",
            ":",
            "-n",
            "1",
            // `-x` is per application context.
            "-x",
            "CONCURRENT_FUTURES_MPI=1",
            other.to_str().unwrap(),
        ],
        true,
    );
    let _ = std::fs::remove_file(&other);
    check("refuse", &run, passed("refuse"), &mut failures);

    let run = mpirun(&["-n", "1", exe, "single"], true);
    check("single", &run, passed("single"), &mut failures);

    let run = mpirun(&["-n", "2", exe, "optout"], false);
    check("optout", &run, passed("optout"), &mut failures);

    if std::env::var_os("MPI_TEST_VERBOSE").is_some() {
        println!("---- abort output ----\n{}", abort_output);
    }
    if !failures.is_empty() {
        for failure in &failures {
            eprintln!("{failure}");
        }
        eprintln!("{} MPI test(s) failed", failures.len());
        std::process::exit(1);
    }
    println!("all MPI tests passed");
}
