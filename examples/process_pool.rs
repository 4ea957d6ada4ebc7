//! CPU-bound work on a process pool: Python's example, then the failure
//! paths that Python's pool gets wrong.
//!
//! Run with `cargo run --example process_pool --features process`.

use std::time::{Duration, Instant};

use concurrent_futures::{Error, ProcessPoolExecutor, as_completed, task};

/// The task of Python's example.
#[task]
fn task(n: u64) -> u64 {
    n * n
}

/// Something CPU-bound: the number of primes below `n`.
#[task]
fn count_primes(n: u64) -> usize {
    (2..n)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count()
}

/// Several arguments travel as a tuple.
#[task]
fn describe(name: String, count: usize) -> String {
    println!("worker {} describes {name}", std::process::id());
    format!("{name}: {count}")
}

#[task]
fn crash(code: i32) {
    std::process::exit(code);
}

#[task]
fn fail(message: String) -> u8 {
    panic!("{message}")
}

fn main() -> Result<(), Error> {
    // with ProcessPoolExecutor(max_workers=4) as executor:
    //     results = list(executor.map(task, range(10)))
    // print(results)
    let results: Vec<u64> = {
        let executor = ProcessPoolExecutor::new(4)?;
        executor.map(task, 0..10)?.collect::<Result<_, _>>()?
    };
    println!("{results:?}");

    let pool = ProcessPoolExecutor::new(2)?;
    let start = Instant::now();
    let futures: Vec<_> = [200_000, 300_000, 400_000]
        .into_iter()
        .map(|n| pool.submit(count_primes, n))
        .collect::<Result<_, _>>()?;
    for future in as_completed(&futures, Some(Duration::from_secs(60))) {
        println!("primes: {:?}", future?.result()?);
    }
    println!("took {:?}", start.elapsed());

    let text = pool.submit(describe, ("answers".to_string(), 42))?;
    println!("{}", text.result()?);

    // A worker that dies fails only its own task; the pool goes on.
    let dead = pool.submit(crash, 3)?;
    println!("crash: {}", dead.result().unwrap_err());
    let panicked = pool.submit(fail, "boom".to_string())?;
    match panicked.result() {
        Err(Error::Panicked {
            message, location, ..
        }) => {
            println!("panic: {message} at {location:?}")
        }
        other => println!("unexpected: {other:?}"),
    }
    println!("still fine: {:?}", pool.submit(task, 12)?.result()?);
    Ok(())
}
