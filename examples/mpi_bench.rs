//! `MpiPoolExecutor` on the workloads of `bench/mpi/mpi4py_bench.py`, for
//! `bench/mpi/run.sh`, which runs both and prints the comparison.
//!
//! ```text
//! cargo build --release --features mpi --example mpi_bench
//! mpirun -x CONCURRENT_FUTURES_MPI=1 --oversubscribe -n 3 target/release/examples/mpi_bench
//! ```
//!
//! Prints one `RESULT <workload> <nanoseconds>` line per workload:
//! * `submit_all`: 20,000 no-op tasks submitted, then collected: per task;
//! * `round_trip`: 2,000 serial submit + result: the median one;
//! * `map`: `map` over 200,000 items, chunksize 1000: per item;
//! * `start_cold`: the first executor of the process: `new()`, one task,
//!   `shutdown`; it includes `MPI_Init` and every rank's handshake, paid
//!   once per process;
//! * `start_warm`: later executors, the same: the median of 5;
//! * `mpi_thread_cpu_per_job` (Linux): the CPU time rank 0's MPI thread
//!   spent per job of `submit_all` (sending it, receiving its answer,
//!   completing its future, and its idle polls): what bounds rank 0's rate.
//!
//! With the argument `start` it only makes an executor, runs one task and
//! exits (`run.sh` times the whole `mpirun`); with `map` it runs only the
//! map, 20 times (to profile it).
use std::time::{Duration, Instant};

use concurrent_futures::{MapOptions, MpiPoolExecutor, task};

const SUBMITS: u64 = 20_000;
const ROUND_TRIPS: usize = 2_000;
const MAP_ITEMS: u64 = 200_000;
const CHUNKSIZE: usize = 1000;

#[task]
fn noop(n: u64) -> u64 {
    n
}

fn report(name: &str, per_op: Duration) {
    println!("RESULT {name} {:.1}", per_op.as_secs_f64() * 1e9);
}

/// An executor, one task, shut down.
fn start_once() -> Duration {
    let start = Instant::now();
    let pool = MpiPoolExecutor::new().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    assert_eq!(pool.submit(noop, 1).unwrap().into_result(), Ok(1));
    pool.shutdown(true, false);
    start.elapsed()
}

/// The CPU time rank 0's MPI thread has used so far (Linux: its
/// `schedstat`), if it can be read.
fn mpi_thread_cpu() -> Option<Duration> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        // The thread is "concurrent-futures-mpi"; `comm` keeps 15 bytes.
        if comm.trim_end() == "concurrent-futu" {
            let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            let ns = stat.split_whitespace().next()?.parse().ok()?;
            return Some(Duration::from_nanos(ns));
        }
    }
    None
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("start") {
        // Only start, one task, shut down: `run.sh` times the whole job.
        start_once();
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("map") {
        // Only the map, 20 times (to profile it).
        let pool = MpiPoolExecutor::new().unwrap();
        for _ in 0..20 {
            let opts = MapOptions::new().chunksize(CHUNKSIZE);
            let start = Instant::now();
            let total: u64 = pool
                .map_with(noop, 0..MAP_ITEMS, opts)
                .unwrap()
                .map(Result::unwrap)
                .sum();
            assert_eq!(total, MAP_ITEMS * (MAP_ITEMS - 1) / 2);
            report("map", start.elapsed() / MAP_ITEMS as u32);
        }
        return;
    }
    report("start_cold", start_once());
    let pool = MpiPoolExecutor::new().unwrap();
    // Warm-up: both workers answered once.
    let warm: Vec<u64> = pool
        .map(noop, 0..100)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(warm.len(), 100);

    let start = Instant::now();
    let cpu = mpi_thread_cpu();
    let futures: Vec<_> = (0..SUBMITS)
        .map(|i| pool.submit(noop, i).unwrap())
        .collect();
    let total: u64 = futures.into_iter().map(|f| f.into_result().unwrap()).sum();
    report("submit_all", start.elapsed() / SUBMITS as u32);
    assert_eq!(total, SUBMITS * (SUBMITS - 1) / 2);
    if let (Some(before), Some(after)) = (cpu, mpi_thread_cpu()) {
        // Each job is two messages through the thread: the job, its answer.
        report("mpi_thread_cpu_per_job", (after - before) / SUBMITS as u32);
    }

    let times: Vec<Duration> = (0..ROUND_TRIPS + 100)
        .map(|i| {
            let start = Instant::now();
            let n = pool.submit(noop, i as u64).unwrap().into_result().unwrap();
            assert_eq!(n, i as u64);
            start.elapsed()
        })
        .skip(100)
        .collect();
    report("round_trip", median(times));

    let start = Instant::now();
    let opts = MapOptions::new().chunksize(CHUNKSIZE);
    let total: u64 = pool
        .map_with(noop, 0..MAP_ITEMS, opts)
        .unwrap()
        .map(Result::unwrap)
        .sum();
    report("map", start.elapsed() / MAP_ITEMS as u32);
    assert_eq!(total, MAP_ITEMS * (MAP_ITEMS - 1) / 2);
    drop(pool);

    report("start_warm", median((0..5).map(|_| start_once()).collect()));
}
