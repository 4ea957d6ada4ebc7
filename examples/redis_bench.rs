//! Measures `RedisExecutor`: serial round trips and submit-all/collect-all
//! throughput of no-op tasks, with N worker processes (children of this
//! program, in worker mode) against one `redis-server` (its own, on a free
//! port of 127.0.0.1, unless `--url` names one), and counts the Redis
//! commands per task (INFO commandstats).
//!
//! ```text
//! cargo run --release --features redis --example redis_bench -- \
//!     [--workers 2] [--concurrency 1] [--prefetch 16] [--tasks 20000] \
//!     [--round-trips 2000] [--verify] [--url redis://127.0.0.1:6379/]
//! ```
//!
//! `--verify` also runs the tasks once more counting every run in a Redis
//! hash, and checks that none was lost or run twice.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use concurrent_futures::{RedisExecutor, task};

#[task]
fn noop(i: u64) -> u64 {
    i
}

thread_local! {
    static CONN: std::cell::RefCell<Option<redis::Connection>> = const { std::cell::RefCell::new(None) };
}

/// Counts its run in the hash `runs` of the server at `url`.
#[task]
fn counted(url: String, i: u64) -> u64 {
    CONN.with(|c| {
        let mut c = c.borrow_mut();
        let conn = c.get_or_insert_with(|| {
            redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap()
        });
        redis::cmd("HINCRBY")
            .arg("runs")
            .arg(i)
            .arg(1)
            .query::<i64>(conn)
            .unwrap();
    });
    i
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Total commands the server has run.
fn commands(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .filter_map(|l| l.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
        .sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let workers: usize = arg("--workers", 2);
    let concurrency: usize = arg("--concurrency", 1);
    let prefetch: usize = arg("--prefetch", 16);
    let tasks: u64 = arg("--tasks", 20_000);
    let round_trips: usize = arg("--round-trips", 2000);
    let verify = std::env::args().any(|a| a == "--verify");
    let mut _server = None;
    let url = match std::env::args().position(|a| a == "--url") {
        Some(i) => std::env::args().nth(i + 1).ok_or("--url needs a value")?,
        None => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            _server = Some(Killed(
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .stdout(Stdio::null())
                    .spawn()?,
            ));
            format!("redis://127.0.0.1:{port}/")
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let pool = loop {
        match RedisExecutor::builder().url(&url).queue("bench").build() {
            Ok(pool) => break pool,
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut conn = redis::Client::open(url.as_str())?.get_connection()?;
    let _workers: Vec<Killed> = (0..workers)
        .map(|_| {
            Command::new(std::env::current_exe()?)
                .env(
                    "CONCURRENT_FUTURES_REDIS",
                    format!("{url}bench?concurrency={concurrency}&prefetch={prefetch}"),
                )
                .spawn()
                .map(Killed)
        })
        .collect::<Result<_, _>>()?;
    let limit = Duration::from_secs(120);
    // Every worker up (each answers one task; reads are FIFO).
    let warm: Vec<_> = (0..workers * concurrency * 4)
        .map(|i| pool.submit(noop, i as u64))
        .collect::<Result<_, _>>()?;
    for f in &warm {
        f.result_timeout(limit)?;
    }
    println!("{workers} workers x concurrency {concurrency}, prefetch {prefetch}, {url}");

    let mut times = Vec::with_capacity(round_trips);
    for i in 0..round_trips {
        let start = Instant::now();
        let value = pool.submit(noop, i as u64)?.into_result()?;
        times.push(start.elapsed());
        assert_eq!(value, i as u64);
    }
    times.sort();
    let q = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "round trip (submit + result, one at a time, n={round_trips}): median {:.1?}, p10 {:.1?}, p90 {:.1?}, p99 {:.1?}",
        q(0.5),
        q(0.1),
        q(0.9),
        q(0.99)
    );

    let before = commands(&mut conn);
    let start = Instant::now();
    let futures: Vec<_> = (0..tasks)
        .map(|i| pool.submit(noop, i))
        .collect::<Result<_, _>>()?;
    let submitted = start.elapsed();
    for (i, f) in futures.iter().enumerate() {
        assert_eq!(*f.result_timeout(limit)?, i as u64, "task {i}");
    }
    let elapsed = start.elapsed();
    let used = commands(&mut conn) - before;
    println!(
        "submit all, collect all, {tasks} no-op tasks: {:.0} tasks/s ({:.1?} to submit, {:.1?} in all); {:.1} Redis commands per task",
        tasks as f64 / elapsed.as_secs_f64(),
        submitted,
        elapsed,
        used as f64 / tasks as f64
    );

    if verify {
        let _: () = redis::cmd("DEL").arg("runs").query(&mut conn)?;
        let start = Instant::now();
        let futures: Vec<_> = (0..tasks)
            .map(|i| pool.submit(counted, (url.clone(), i)))
            .collect::<Result<_, _>>()?;
        for (i, f) in futures.iter().enumerate() {
            assert_eq!(*f.result_timeout(limit)?, i as u64, "task {i}");
        }
        let runs: HashMap<u64, u64> = redis::cmd("HGETALL").arg("runs").query(&mut conn)?;
        let lost = (0..tasks).filter(|i| !runs.contains_key(i)).count();
        let twice = runs.values().filter(|&&n| n > 1).count();
        println!(
            "verify: {tasks} counted tasks in {:.1?}: {lost} lost, {twice} run twice",
            start.elapsed()
        );
        assert_eq!((lost, twice), (0, 0));
    }
    let left: u64 = redis::cmd("XLEN").arg("cf:bench:tasks").query(&mut conn)?;
    println!("entries left in the stream: {left}");
    Ok(())
}
