//! Round trip and throughput of `MpiPoolExecutor` with tiny tasks.
//!
//! ```text
//! cargo build --release --features mpi --example mpi_bench
//! mpirun -x CONCURRENT_FUTURES_MPI=1 --oversubscribe -n 3 target/release/examples/mpi_bench
//! ```
use std::time::{Duration, Instant};

use concurrent_futures::{MapOptions, MpiPoolExecutor, task};

#[task]
fn echo(n: u64) -> u64 {
    n
}

fn main() {
    let pool = MpiPoolExecutor::new().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    println!("{} worker ranks", pool.max_workers());

    // Round trip: one task at a time, submit to result.
    let n = 2000;
    let mut times: Vec<Duration> = (0..n + 100)
        .map(|i| {
            let start = Instant::now();
            pool.submit(echo, i as u64).unwrap().into_result().unwrap();
            start.elapsed()
        })
        .skip(100)
        .collect();
    times.sort();
    println!(
        "round trip (submit + result, one at a time, n={n}): median {:.1?}, p10 {:.1?}, p90 {:.1?}, p99 {:.1?}",
        times[n / 2],
        times[n / 10],
        times[n * 9 / 10],
        times[n * 99 / 100]
    );
    drop(pool);

    for (window, chunksize, total) in [(8, 1, 100_000), (64, 1, 100_000), (8, 100, 1_000_000)] {
        let pool = MpiPoolExecutor::builder().window(window).build().unwrap();
        let start = Instant::now();
        let opts = MapOptions::new().chunksize(chunksize);
        let sum: u64 = pool
            .map_with(echo, 0..total, opts)
            .unwrap()
            .map(Result::unwrap)
            .sum();
        let elapsed = start.elapsed();
        assert_eq!(sum, total * (total - 1) / 2);
        println!(
            "map of {total} tiny tasks, window {window}, chunksize {chunksize}: {:.0} tasks/s ({:.2?} per task)",
            total as f64 / elapsed.as_secs_f64(),
            elapsed / total as u32
        );
    }
}
