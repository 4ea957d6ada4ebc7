//! `MpiPoolExecutor` in a few lines: rank 0 maps a task over the other ranks.
//!
//! ```text
//! cargo build --release --features mpi --example mpi_map
//! mpirun -x CONCURRENT_FUTURES_MPI=1 --oversubscribe -n 3 target/release/examples/mpi_map
//! ```
use concurrent_futures::{MpiPoolExecutor, task};

/// Runs on a worker rank: the square of `n`, and where it was computed.
#[task]
fn square(n: u64) -> (u64, u32) {
    let rank = std::env::var("OMPI_COMM_WORLD_RANK")
        .or_else(|_| std::env::var("PMI_RANK"))
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    (n * n, rank)
}

fn main() {
    let pool = match MpiPoolExecutor::new() {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    println!("{} worker ranks: {:?}", pool.max_workers(), pool.workers());
    for result in pool.map(square, 0..10).unwrap() {
        let (value, rank) = result.unwrap();
        println!("{value} (from rank {rank})");
    }
}
