//! A tour of concurrent-futures doing real work, with timings.
//!
//! Run with `cargo run --release --example tour`.
//!
//! 1. I/O-bound: read and checksum every file under a directory tree, first
//!    serially, then on a `ThreadPoolExecutor`, with `as_completed` progress.
//! 2. CPU-bound: count primes in ranges serially, on threads, and in worker
//!    processes (a registered `#[task]`, with a progress bar on a
//!    terminal), then show a crashing task failing alone while the process
//!    pool carries on.
//! 3. The model: `wait` with a timeout, cancelling queued work, `map` with a
//!    buffersize over an infinite input, scoped tasks borrowing the stack,
//!    awaiting a pool future from async code, and a panicking task that
//!    fails only its own future.
//!
//! Built with `--features tracing`, it also logs the pools' events (worker
//! start, death, replacement...) at `INFO` on stderr: `cargo run --release
//! --features tracing --example tour 2>events.log`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use concurrent_futures::{
    Error, MapOptions, ProcessPoolExecutor, Promise, ReturnWhen, ThreadPoolExecutor, as_completed,
    task, wait,
};

fn main() -> Result<(), Error> {
    // Task spans are at DEBUG: INFO keeps the log to the workers' lives.
    #[cfg(feature = "tracing")]
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .with_writer(std::io::stderr)
        .init();
    println!("concurrent-futures tour ({} cpus)\n", cpus());
    io_bound()?;
    cpu_bound()?;
    the_model()?;
    Ok(())
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

// ---------------------------------------------------------------- I/O-bound

fn io_bound() -> Result<(), Error> {
    let root = ["/usr/share", "/usr/lib", "."]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut files = Vec::new();
    collect_files(&root, &mut files, 4000);
    println!(
        "1. I/O-bound: checksum {} files under {}",
        files.len(),
        root.display()
    );

    let start = Instant::now();
    let serial: u64 = files
        .iter()
        .map(|f| checksum(f).1)
        .fold(0, u64::wrapping_add);
    let serial_time = start.elapsed();

    let pool = ThreadPoolExecutor::builder()
        .max_workers(16)
        .thread_name_prefix("io")
        .build()?;
    let start = Instant::now();
    let futures: Vec<_> = files
        .iter()
        .cloned()
        .map(|f| pool.submit(move || checksum(&f)))
        .collect::<Result<_, _>>()?;
    let mut pooled = 0u64;
    let mut bytes = 0u64;
    let total = futures.len();
    for (n, future) in as_completed(futures, Some(Duration::from_secs(300))).enumerate() {
        let (size, sum) = future?.into_result()?;
        pooled = pooled.wrapping_add(sum);
        bytes += size;
        if (n + 1) % (total / 4).max(1) == 0 {
            println!("   ... {}/{} files done (as_completed)", n + 1, total);
        }
    }
    let pooled_time = start.elapsed();
    assert_eq!(serial, pooled, "same checksum either way");
    println!(
        "   serial {:>8.1} ms | 16 threads {:>8.1} ms | speed-up {:.1}x | {:.1} MiB read per pass (page cache warm)\n",
        ms(serial_time),
        ms(pooled_time),
        ratio(serial_time, pooled_time),
        bytes as f64 / (1 << 20) as f64
    );
    Ok(())
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, limit: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if out.len() >= limit {
            return;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect_files(&entry.path(), out, limit);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}

/// Size and FNV-1a hash of a file (0 for unreadable files).
fn checksum(path: &Path) -> (u64, u64) {
    let Ok(data) = std::fs::read(path) else {
        return (0, 0);
    };
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in &data {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3);
    }
    (data.len() as u64, hash)
}

// ---------------------------------------------------------------- CPU-bound

/// Primes in `[lo, hi)`, by trial division: deliberately CPU-heavy.
/// Registered, so worker processes can run it too.
#[task]
fn count_primes(range: (u64, u64)) -> u64 {
    (range.0..range.1)
        .filter(|&n| n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

fn cpu_bound() -> Result<(), Error> {
    let ranges: Vec<(u64, u64)> = (0..16).map(|i| (i * 250_000, (i + 1) * 250_000)).collect();
    println!("2. CPU-bound: count primes below 4,000,000 in 16 chunks");

    let start = Instant::now();
    // `*count_primes` is the task as a plain function pointer, for the APIs
    // that take closures (a `#[task]` is a unit struct, callable directly).
    let serial: u64 = ranges.iter().copied().map(*count_primes).sum();
    let serial_time = start.elapsed();

    let pool = ThreadPoolExecutor::new(cpus())?;
    let start = Instant::now();
    let threaded: u64 = pool
        .map(*count_primes, ranges.clone())?
        .sum::<Result<u64, Error>>()?;
    let threaded_time = start.elapsed();
    assert_eq!(serial, threaded);

    // The same map on worker processes, which take the task itself.
    let processes = ProcessPoolExecutor::new(cpus())?;
    let start = Instant::now();
    let results = processes.map(count_primes, ranges.clone())?;
    // A progress bar on stderr (feature `progress`, on by default), drawn
    // only on a terminal: count, rate, ETA, failures.
    #[cfg(feature = "progress")]
    let results = results.progress();
    let in_processes: u64 = results.sum::<Result<u64, Error>>()?;
    let process_time = start.elapsed();
    assert_eq!(serial, in_processes);
    println!(
        "   {} primes | serial {:>7.1} ms | {} threads {:>7.1} ms ({:.1}x) | {} processes {:>7.1} ms ({:.1}x, pool start included)",
        serial,
        ms(serial_time),
        cpus(),
        ms(threaded_time),
        ratio(serial_time, threaded_time),
        cpus(),
        ms(process_time),
        ratio(serial_time, process_time),
    );

    // A task that crashes its worker fails alone; the pool replaces the
    // worker and the other tasks complete.
    let futures: Vec<_> = (0..6u64)
        .map(|i| processes.submit(crash_on_three, i))
        .collect::<Result<_, _>>()?;
    let mut outcomes = Vec::new();
    for f in &futures {
        match f.result_timeout(Duration::from_secs(60)) {
            Ok(v) => outcomes.push(v.to_string()),
            Err(e) => outcomes.push(format!("<{e}>")),
        }
    }
    println!(
        "   process pool with a task that aborts: {}",
        outcomes.join(", ")
    );

    // A per-task timeout stops a runaway task by stopping its worker.
    let guarded = ProcessPoolExecutor::builder()
        .max_workers(1)
        .timeout(Duration::from_millis(200))
        .build()?;
    let runaway = guarded.submit(spin_forever, ())?;
    let after = guarded.submit(count_primes, (0, 1000))?;
    println!(
        "   per-task timeout: runaway task -> {}; next task -> {:?}",
        runaway.result_timeout(Duration::from_secs(60)).unwrap_err(),
        after.result_timeout(Duration::from_secs(60))?
    );
    println!();
    Ok(())
}

#[task]
fn crash_on_three(i: u64) -> u64 {
    if i == 3 {
        std::process::abort();
    }
    i * 100
}

#[task]
fn spin_forever() {
    loop {
        std::hint::spin_loop();
    }
}

// ---------------------------------------------------------------- the model

fn the_model() -> Result<(), Error> {
    println!("3. The model");
    let pool = ThreadPoolExecutor::new(2)?;

    // wait with a timeout: a timeout is not an error, it splits the set.
    let (gate, opened) = Promise::<()>::new();
    let opened = std::sync::Arc::new(opened);
    let blocked = {
        let opened = std::sync::Arc::clone(&opened);
        pool.submit(move || opened.wait_timeout(Duration::from_secs(60)))?
    };
    let quick = pool.submit(|| 7)?;
    let waited = wait(
        [&blocked, &blocked],
        Some(Duration::from_millis(50)),
        ReturnWhen::AllCompleted,
    );
    println!(
        "   wait(timeout=50ms): {} done, {} not done (the duplicate counted once)",
        waited.done.len(),
        waited.not_done.len()
    );
    let first = wait(
        [&quick as &dyn concurrent_futures::Waitable, &blocked],
        None,
        ReturnWhen::FirstCompleted,
    );
    println!("   wait(FIRST_COMPLETED): {} done first", first.done.len());

    // Cancel queued work: with both workers busy, these have not started.
    let (gate2, opened2) = Promise::<()>::new();
    let opened2 = std::sync::Arc::new(opened2);
    let busy = {
        let opened2 = std::sync::Arc::clone(&opened2);
        pool.submit(move || opened2.wait_timeout(Duration::from_secs(60)))?
    };
    let queued: Vec<_> = (0..5)
        .map(|i| pool.submit(move || i))
        .collect::<Result<_, _>>()?;
    let cancelled = queued.iter().filter(|f| f.cancel()).count();
    gate.set_result(()).unwrap();
    gate2.set_result(()).unwrap();
    blocked.result_timeout(Duration::from_secs(60))?;
    busy.result_timeout(Duration::from_secs(60))?;
    let ended = as_completed(queued, Some(Duration::from_secs(60))).count();
    println!("   cancelled {cancelled} of 5 queued tasks; as_completed still yields all {ended}");

    // One failing item does not end map; the error carries the panic's
    // message and location (the panic is not printed: it is the result).
    let results: Vec<String> = pool
        .map(
            |n: u32| {
                if n == 2 {
                    panic!("item {n} is bad");
                }
                n * 10
            },
            0..5,
        )?
        .map(|r| match r {
            Ok(v) => v.to_string(),
            Err(e) => format!("<{e}>"),
        })
        .collect();
    println!("   map with a panicking item: {}", results.join(", "));

    // map over an infinite input, in constant memory.
    let first_big = pool
        .map_with(|n: u64| n * n, 1.., MapOptions::new().buffersize(4))?
        .map(Result::unwrap)
        .find(|sq| *sq > 1_000_000)
        .unwrap();
    println!("   map(buffersize=4) over 1..: first square above 1e6 is {first_big}");

    // Scoped tasks borrow from the stack.
    let text = String::from("the quick brown fox jumps over the lazy dog");
    let words: Vec<&str> = text.split(' ').collect();
    let longest = pool.scope(|s| {
        let futures: Vec<_> = words
            .iter()
            .map(|w| s.submit(move || (w.len(), *w)).unwrap())
            .collect();
        futures
            .into_iter()
            .map(|f| f.into_result().unwrap())
            .max()
            .unwrap()
    });
    println!("   scope: longest borrowed word is {:?}", longest.1);

    // A pool future is a std::future::Future.
    let future = pool.submit(|| "awaited from async code")?;
    let awaited = block_on(future)?;
    println!("   async: {awaited}");
    println!();
    Ok(())
}

/// A minimal executor for one future: park until woken.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}
