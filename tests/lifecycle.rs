//! Worker lifecycle limits: the idle timeout of both pools (an idle worker
//! ends, and one starts again on the next submit) and the process pool's
//! memory limit (a worker over it is replaced between tasks). Each test
//! shows the limit acting and that no task is lost when it does.
//!
//! Where a test must wait for an idle timeout to elapse, it polls with a
//! generous bound ([`LIMIT`]) instead of sleeping a fixed time; every wait
//! for a result is bounded too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use concurrent_futures::{Error, ThreadPoolBuilder, ThreadPoolExecutor};

/// The bound on every wait of these tests.
const LIMIT: Duration = Duration::from_secs(10);

/// Polls `done` until it holds, for at most [`LIMIT`]; true if it did.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > LIMIT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---- thread pool --------------------------------------------------------------

/// Runs `n` tasks that wait for each other, so that the pool starts `n`
/// threads, and checks their results.
fn burst(pool: &ThreadPoolExecutor, n: usize) {
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            pool.submit(move || {
                barrier.wait();
                i
            })
            .unwrap()
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.result_timeout(LIMIT).cloned(), Ok(i));
    }
}

#[test]
fn idle_threads_end_and_the_next_submit_starts_one() {
    let inits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&inits);
    let pool = ThreadPoolBuilder::new()
        .max_workers(4)
        .idle_timeout(Duration::from_millis(30))
        .initializer(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    burst(&pool, 4);
    assert_eq!(pool.threads_started(), 4);
    assert!(
        eventually(|| pool.live_threads() == 0),
        "idle threads did not end: {pool:?}"
    );
    // Started again, lazily; each new thread runs the initializer.
    let results: Vec<u64> = (0..20)
        .map(|n| pool.submit(move || n * 2).unwrap())
        .map(|f| f.result_timeout(LIMIT).cloned().unwrap())
        .collect();
    assert_eq!(results, (0..20).map(|n| n * 2).collect::<Vec<_>>());
    assert!(pool.threads_started() > 4, "{pool:?}");
    // Once every thread is joined, each has run the initializer.
    pool.shutdown(true, false);
    assert_eq!(pool.live_threads(), 0);
    assert_eq!(inits.load(Ordering::SeqCst), pool.threads_started());
}

#[test]
fn under_a_trickle_of_work_the_pool_shrinks_to_what_it_needs() {
    // Four threads after a burst, then one short task at a time, five times
    // per idle timeout: one thread can take them all, and the other three
    // must end. (Woken in turn, oldest sleeper first, every thread ran
    // a task now and then and none ever reached its timeout.)
    let pool = ThreadPoolBuilder::new()
        .max_workers(4)
        .idle_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    burst(&pool, 4);
    assert_eq!(pool.live_threads(), 4);
    let shrunk = eventually(|| {
        let task = pool.submit(|| 1).unwrap();
        assert_eq!(task.result_timeout(LIMIT).cloned(), Ok(1));
        // The trickle's pace (a task about every 10 ms), not coordination.
        std::thread::sleep(Duration::from_millis(8));
        pool.live_threads() == 1
    });
    assert!(
        shrunk,
        "the pool kept its threads under a trickle: {pool:?}"
    );
}

#[test]
fn submits_racing_idle_threads_leaving_are_never_stranded() {
    // Idle timeouts of 1 ms and submits paced around it, from two threads:
    // many submits land while a thread is timing out and leaving. Every
    // result arrives (a stranded job would time out its wait).
    let pool = Arc::new(
        ThreadPoolBuilder::new()
            .max_workers(2)
            .idle_timeout(Duration::from_millis(1))
            .build()
            .unwrap(),
    );
    let submitters: Vec<_> = (0..2u64)
        .map(|s| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                for i in 0..300u64 {
                    // Jitter (0 to 1.5 ms) to land on either side of the
                    // timeout, not coordination.
                    std::thread::sleep(Duration::from_micros((i * 7 + s * 3) % 16 * 100));
                    let f = pool.submit(move || i + s).unwrap();
                    assert_eq!(f.result_timeout(LIMIT).cloned(), Ok(i + s), "job {i} lost");
                }
            })
        })
        .collect();
    for s in submitters {
        s.join().unwrap();
    }
    // Threads do leave after 1 ms idle, and the next submit still runs.
    // (How many left while submits raced them depends on the machine's
    // load: on a busy one a woken thread rarely reaches its timeout.)
    assert!(
        eventually(|| pool.live_threads() == 0),
        "no thread left: {pool:?}"
    );
    let f = pool.submit(|| 7).unwrap();
    assert_eq!(f.result_timeout(LIMIT).cloned(), Ok(7));
}

#[test]
fn without_an_idle_timeout_threads_stay() {
    let pool = ThreadPoolBuilder::new()
        .max_workers(2)
        .idle_timeout(Duration::MAX) // never
        .build()
        .unwrap();
    assert_eq!(
        pool.submit(|| 1).unwrap().result_timeout(LIMIT).cloned(),
        Ok(1)
    );
    assert_eq!(pool.live_threads(), 1);
    pool.shutdown(true, false);
    assert_eq!(pool.live_threads(), 0, "shutdown(wait) ends them");
}

#[test]
fn a_zero_idle_timeout_is_invalid() {
    let zero = ThreadPoolBuilder::new()
        .idle_timeout(Duration::ZERO)
        .build();
    assert!(matches!(zero, Err(Error::InvalidArgument(_))));
}

#[test]
fn shutdown_waits_for_a_pool_whose_threads_left() {
    let pool = ThreadPoolBuilder::new()
        .max_workers(2)
        .idle_timeout(Duration::from_millis(5))
        .build()
        .unwrap();
    assert_eq!(
        pool.submit(|| 1).unwrap().result_timeout(LIMIT).cloned(),
        Ok(1)
    );
    assert!(eventually(|| pool.live_threads() == 0));
    pool.shutdown(true, false); // returns: nobody left to wait for
    assert!(matches!(pool.submit(|| 2), Err(Error::ShutDown)));
}

// ---- process pool -------------------------------------------------------------

#[cfg(all(feature = "process", unix))]
mod process {
    use std::collections::HashSet;
    use std::path::Path;
    use std::sync::Mutex;
    use std::time::Duration;

    use concurrent_futures::{Error, ProcessPoolBuilder, task};

    use super::{LIMIT, eventually};

    #[task]
    fn worker_pid() -> u32 {
        std::process::id()
    }

    /// Sleeps in the worker (the task's own work, not coordination).
    #[task]
    fn nap(ms: u64) -> u32 {
        std::thread::sleep(Duration::from_millis(ms));
        std::process::id()
    }

    static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

    /// Allocates `mib` MiB, touches every page and keeps it (a leak), then
    /// returns its pid.
    #[task]
    fn hoard(mib: usize) -> u32 {
        let block = vec![1u8; mib << 20];
        HOARD.lock().unwrap().push(block);
        std::process::id()
    }

    fn alive(pid: u32) -> bool {
        // A zombie (exited, not reaped) still has its /proc entry.
        Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn idle_workers_exit_and_the_next_submit_starts_one() {
        let pool = ProcessPoolBuilder::new()
            .max_workers(2)
            .idle_timeout(Duration::from_millis(50))
            .build()
            .unwrap();
        let first = pool.submit(worker_pid, ()).unwrap();
        let first = first.result_timeout(LIMIT).cloned().unwrap();
        assert!(
            eventually(|| pool.worker_pids().is_empty()),
            "idle workers stayed: {:?}",
            pool.worker_pids()
        );
        #[cfg(target_os = "linux")]
        assert!(
            eventually(|| !alive(first)),
            "the idle worker was not reaped"
        );
        let second = pool.submit(worker_pid, ()).unwrap();
        let second = second.result_timeout(LIMIT).cloned().unwrap();
        assert_ne!(first, second, "a new worker runs the next task");
        assert_eq!(pool.worker_pids(), [second]);
    }

    #[test]
    fn a_busy_worker_is_not_retired_for_idleness() {
        // The task runs for six idle timeouts: it is not idle meanwhile.
        let pool = ProcessPoolBuilder::new()
            .max_workers(1)
            .idle_timeout(Duration::from_millis(50))
            .build()
            .unwrap();
        let pid = pool
            .submit(nap, 300)
            .unwrap()
            .result_timeout(LIMIT)
            .cloned();
        assert!(pid.is_ok(), "{pid:?}");
    }

    #[test]
    fn submits_racing_idle_workers_leaving_are_never_lost() {
        // Idle timeouts of 2 ms and submits paced around them: many land
        // while the timer closes a worker or its supervisor reaps it.
        let pool = ProcessPoolBuilder::new()
            .max_workers(2)
            .idle_timeout(Duration::from_millis(2))
            .build()
            .unwrap();
        let mut pids = HashSet::new();
        for i in 0..60u64 {
            std::thread::sleep(Duration::from_micros(i % 8 * 500)); // jitter
            let f = pool.submit(worker_pid, ()).unwrap();
            pids.insert(f.result_timeout(LIMIT).cloned().unwrap());
        }
        // However the timing fell, one retirement for sure.
        assert!(eventually(|| pool.worker_pids().is_empty()));
        let f = pool.submit(worker_pid, ()).unwrap();
        pids.insert(f.result_timeout(LIMIT).cloned().unwrap());
        // Also a burst, every result arriving.
        let results: Vec<u32> = pool
            .map(worker_pid, std::iter::repeat_n((), 50))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(results.len(), 50);
        assert!(pids.len() > 1, "no worker ever left");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_worker_over_its_memory_limit_is_replaced_between_tasks() {
        let pool = ProcessPoolBuilder::new()
            .max_workers(1)
            .max_worker_memory(32 << 20)
            .build()
            .unwrap();
        let small = pool
            .submit(hoard, 0)
            .unwrap()
            .result_timeout(LIMIT)
            .cloned();
        let small = small.unwrap();
        let again = pool
            .submit(hoard, 0)
            .unwrap()
            .result_timeout(LIMIT)
            .cloned();
        assert_eq!(again, Ok(small), "a worker under the limit is kept");
        // The task that crosses the limit completes: never stopped midway.
        let big = pool
            .submit(hoard, 64)
            .unwrap()
            .result_timeout(LIMIT)
            .cloned();
        assert_eq!(big, Ok(small));
        let next = pool
            .submit(hoard, 0)
            .unwrap()
            .result_timeout(LIMIT)
            .cloned();
        let next = next.unwrap();
        assert_ne!(next, small, "the worker over the limit was replaced");
        assert!(
            eventually(|| !alive(small)),
            "the old worker was not reaped"
        );
        // Several in flight: every result arrives, workers come and go.
        let futures: Vec<_> = [64, 0, 64, 0, 0, 64]
            .into_iter()
            .map(|mib| pool.submit(hoard, mib).unwrap())
            .collect();
        let pids: HashSet<u32> = futures
            .iter()
            .map(|f| f.result_timeout(LIMIT).cloned().unwrap())
            .collect();
        assert!(pids.len() >= 2, "{pids:?}");
        assert!(!pids.contains(&small));
    }

    #[test]
    fn zero_limits_are_invalid() {
        let idle = ProcessPoolBuilder::new()
            .idle_timeout(Duration::ZERO)
            .build();
        assert!(matches!(idle, Err(Error::InvalidArgument(_))));
        let memory = ProcessPoolBuilder::new().max_worker_memory(0).build();
        assert!(matches!(memory, Err(Error::InvalidArgument(_))));
    }
}
