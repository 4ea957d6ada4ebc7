//! `RedisExecutor` end to end on one machine: starts its own `redis-server`
//! (needs it on the PATH) and two workers (this same program, in worker
//! mode), then submits tasks and maps over them.
//!
//! ```text
//! cargo run --release --features redis --example redis_map
//! ```
//!
//! Across machines, the same three steps: run `redis-server` somewhere,
//! start workers with
//! `CONCURRENT_FUTURES_REDIS=redis://HOST:6379/squares ./redis_map` on
//! other machines, and run the client with the same URL.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use concurrent_futures::{MapOptions, RedisExecutor, task};

#[task]
fn square(n: u64) -> u64 {
    n * n
}

#[task]
fn host_and_pid() -> String {
    format!("pid {}", std::process::id())
}

/// Kills its child when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. A Redis server (here a private one on a free port).
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _server = Killed(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (is it installed?): {e}"))?,
    );
    let url = format!("redis://127.0.0.1:{port}/");

    // 2. The client. The server may need a moment to listen.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pool = loop {
        match RedisExecutor::builder().url(&url).queue("squares").build() {
            Ok(pool) => break pool,
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    // 3. Workers (usually on other machines): this program, started with CONCURRENT_FUTURES_REDIS
    //    (it becomes a worker before `main`).
    let workers: Vec<Killed> = (0..2)
        .map(|_| {
            Command::new(std::env::current_exe()?)
                .env(
                    "CONCURRENT_FUTURES_REDIS",
                    format!("{url}squares?concurrency=2"),
                )
                .spawn()
                .map(Killed)
        })
        .collect::<Result<_, _>>()?;

    let future = pool.submit(square, 12)?;
    println!(
        "12 squared is {}",
        future.result_timeout(Duration::from_secs(30))?
    );
    println!("ran in {}", pool.submit(host_and_pid, ())?.into_result()?);

    let start = Instant::now();
    let options = MapOptions::new().chunksize(100);
    let total: u64 = pool
        .map_with(square, 0..10_000u64, options)?
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .sum();
    println!(
        "sum of 10,000 squares: {total} in {:.1?} over {} workers",
        start.elapsed(),
        workers.len()
    );
    Ok(())
}
