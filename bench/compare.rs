//! `cargo bench --bench compare`: concurrent-futures against its peers on the
//! same work, in one process and one run, printed as a Markdown table.
//!
//! Thread pools, all with 4 workers:
//!
//! 1. submit-all/collect-all: 200,000 no-op tasks submitted, then every
//!    result collected in submission order (ns per task);
//! 2. serial round trip: 20,000 times submit one task, then wait for its
//!    result (us per round trip);
//! 3. map over 1,000,000 small items (`x * 2 + 1`), results consumed in order
//!    (ns per item), with peak RSS growth; for this crate also with a
//!    chunksize and with a buffersize over the infinite input `0..`.
//!
//! Peers: `threadpool::ThreadPool` and `rayon::ThreadPool::spawn`, each with a
//! one-slot channel per task (what a user writes to get a handle on a
//! fire-and-forget pool); `tokio::task::spawn_blocking` on a runtime with
//! `max_blocking_threads(4)` (one async worker, unused: the main thread
//! `block_on`s each `JoinHandle`); and Python's `ThreadPoolExecutor(4)`,
//! run as `python3 bench/python_peer.py` when `python3` is on the PATH.
//! `rayon`'s `par_iter` is shown for `map` as a reference (a data-parallel
//! loop, not a task API); it does not count as a peer.
//!
//! With the `process` feature (`cargo bench --bench compare --features
//! process`) the process pool is compared too, see [`process_pool_rows`]:
//! against `procspawn::Pool` (2 workers) and Python's
//! `ProcessPoolExecutor(2)`.
//!
//! How it measures: the contenders of one workload run round-robin (each
//! round starts with the next one), so that a change in the machine's load
//! hits all of them alike; a warm-up round at a tenth of the size comes
//! first, then 3 to 7 rounds as a time budget allows. The table shows the
//! median, the fastest and slowest run, the ratio to the best peer's median
//! (below 1 = faster than every peer), and the CPU time of the whole process
//! per task (all threads: spinning shows up there; not for process pools,
//! whose workers are other processes). Python runs in its own process after
//! the Rust rows, with the same sizes except `map` (a tenth: at ~15 us per
//! item the full size would take most of the time budget).
//!
//! Environment: `BENCH_QUICK=1` divides every size by 10 for a smoke run;
//! `BENCH_ONLY=submit,roundtrip,map,python,process` runs only those parts;
//! `BENCH_LOAD=N` runs N busy-loop processes beside the benchmark for its
//! whole duration (a busy machine: with N = 2 x cpus, every thread of the
//! benchmark competes for a core), see [`Load`].
//!
//! It also draws the comparison as an SVG chart (see [`chart`]): written to
//! `bench-compare.svg` in the target directory, and with `BENCH_SVG=path`
//! there too (a relative path is taken from the repository root, so
//! `BENCH_SVG=docs/bench.svg` refreshes the README's chart).

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

use concurrent_futures::{Future, MapOptions, ThreadPoolExecutor};
use rayon::iter::{IntoParallelIterator, ParallelIterator};

mod chart;

const WORKERS: usize = 4;
/// Rounds of a workload (every contender once) stop once the measured runs
/// have taken this long in all, but at least `MIN_REPS` and at most
/// `MAX_REPS` rounds run.
const WORKLOAD_BUDGET: Duration = Duration::from_secs(6);
/// The same for `map`, whose rounds are long.
const MAP_BUDGET: Duration = Duration::from_secs(15);
const MIN_REPS: usize = 3;
const MAX_REPS: usize = 7;

/// Work sizes, divided by 10 under `BENCH_QUICK=1`.
struct Sizes {
    quick: bool,
    submit_all: usize,
    round_trips: usize,
    map_items: usize,
    /// Python runs `map` on a tenth of the items: at ~15 us per item the full
    /// size alone would take most of the bench's time budget.
    python_map_items: usize,
    chunksize: usize,
    /// Chunks in flight for the buffersize rows.
    buffer_chunked: usize,
    buffer_single: usize,
}

impl Sizes {
    fn from_env() -> Sizes {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let div = if quick { 10 } else { 1 };
        Sizes {
            quick,
            submit_all: 200_000 / div,
            round_trips: 20_000 / div,
            map_items: 1_000_000 / div,
            python_map_items: 100_000 / div,
            chunksize: 1024,
            buffer_chunked: 8,
            buffer_single: 64,
        }
    }

    /// A process-pool size: same scaling.
    #[cfg_attr(not(all(feature = "process", unix)), allow(dead_code))]
    fn scaled(&self, n: usize) -> usize {
        if self.quick { n / 10 } else { n }
    }
}

// ---------------------------------------------------------------- the table

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    SubmitAll,
    RoundTrip,
    Map,
    #[cfg_attr(not(all(feature = "process", unix)), allow(dead_code))]
    ProcSubmitAll,
    #[cfg_attr(not(all(feature = "process", unix)), allow(dead_code))]
    ProcRoundTrip,
    #[cfg_attr(not(all(feature = "process", unix)), allow(dead_code))]
    ProcMap,
    #[cfg_attr(not(all(feature = "process", unix)), allow(dead_code))]
    ProcStartShutdown,
}

impl Workload {
    const ALL: [Workload; 7] = [
        Workload::SubmitAll,
        Workload::RoundTrip,
        Workload::Map,
        Workload::ProcSubmitAll,
        Workload::ProcRoundTrip,
        Workload::ProcMap,
        Workload::ProcStartShutdown,
    ];

    /// Process-pool workloads, whose work runs in other processes.
    fn in_processes(self) -> bool {
        matches!(
            self,
            Workload::ProcSubmitAll
                | Workload::ProcRoundTrip
                | Workload::ProcMap
                | Workload::ProcStartShutdown
        )
    }

    fn title(self) -> &'static str {
        match self {
            Workload::SubmitAll => "threads: submit-all/collect-all",
            Workload::RoundTrip => "threads: serial round trip",
            Workload::Map => "threads: map, in order",
            Workload::ProcSubmitAll => "processes: submit-all/collect-all",
            Workload::ProcRoundTrip => "processes: serial round trip",
            Workload::ProcMap => "processes: map, chunksize 1000",
            Workload::ProcStartShutdown => "processes: start + first result + shutdown",
        }
    }

    /// The unit a row's figure is printed in: (name, nanoseconds in one).
    fn unit(self) -> (&'static str, f64) {
        match self {
            Workload::SubmitAll | Workload::Map | Workload::ProcMap => ("ns", 1.0),
            Workload::RoundTrip | Workload::ProcSubmitAll | Workload::ProcRoundTrip => ("us", 1e3),
            Workload::ProcStartShutdown => ("ms", 1e6),
        }
    }

    fn per(self) -> &'static str {
        match self {
            Workload::Map | Workload::ProcMap => "item",
            Workload::RoundTrip | Workload::ProcRoundTrip => "round trip",
            Workload::ProcStartShutdown => "pool",
            _ => "task",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// This crate.
    Ours,
    /// Counts for "best peer".
    Peer,
    /// Shown for context only.
    Reference,
}

struct Row {
    workload: Workload,
    name: String,
    kind: Kind,
    /// Tasks (items, round trips, pools) per repetition.
    n: usize,
    /// Nanoseconds per task, one per repetition.
    samples: Vec<f64>,
    /// CPU time of the whole process (every thread) per task, one per
    /// repetition; empty where not measured.
    cpu: Vec<f64>,
    /// The largest peak RSS growth of a repetition, in KiB, if measured.
    peak_kib: Option<u64>,
    note: String,
}

impl Row {
    fn new(
        workload: Workload,
        name: impl Into<String>,
        kind: Kind,
        n: usize,
        samples: Vec<f64>,
    ) -> Row {
        Row {
            workload,
            name: name.into(),
            kind,
            n,
            samples,
            cpu: Vec::new(),
            peak_kib: None,
            note: String::new(),
        }
    }

    fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    fn median(&self) -> f64 {
        median(&self.samples).unwrap_or(f64::NAN)
    }

    fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.samples.iter().copied().fold(0.0, f64::max)
    }
}

fn median(samples: &[f64]) -> Option<f64> {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    match s.len() {
        0 => None,
        n if n % 2 == 1 => Some(s[m]),
        _ => Some((s[m - 1] + s[m]) / 2.0),
    }
}

/// The peer row with the lowest median in `workload`.
fn best_peer(rows: &[Row], workload: Workload) -> Option<&Row> {
    rows.iter()
        .filter(|r| r.workload == workload && r.kind == Kind::Peer)
        .min_by(|a, b| a.median().total_cmp(&b.median()))
}

/// `v` (in ns) in the workload's unit, three significant digits.
fn fmt_value(v: f64, workload: Workload) -> String {
    let (_, scale) = workload.unit();
    let x = v / scale;
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn fmt_count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_table(rows: &[Row]) {
    let header = [
        "workload",
        "implementation",
        "n",
        "median per task",
        "min-max",
        "vs best peer",
        "CPU per task",
        "notes",
    ];
    let mut lines: Vec<[String; 8]> = Vec::new();
    for workload in Workload::ALL {
        let best = best_peer(rows, workload).map(Row::median);
        for row in rows.iter().filter(|r| r.workload == workload) {
            let (unit, _) = workload.unit();
            let name = match row.kind {
                Kind::Ours => format!("**{}**", row.name),
                _ => row.name.clone(),
            };
            let ratio = match best {
                Some(b) => format!("{:.2}x", row.median() / b),
                None => "-".into(),
            };
            lines.push([
                workload.title().into(),
                name,
                fmt_count(row.n),
                format!(
                    "{} {unit}/{}",
                    fmt_value(row.median(), workload),
                    workload.per()
                ),
                format!(
                    "{}-{}",
                    fmt_value(row.min(), workload),
                    fmt_value(row.max(), workload)
                ),
                ratio,
                median(&row.cpu).map_or_else(|| "-".into(), |c| fmt_value(c, workload)),
                row.note.clone(),
            ]);
        }
    }
    let mut widths = header.map(str::len);
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        format!("| {} |", padded.join(" | "))
    };
    println!("{}", render(&header.map(String::from)));
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| {
            // Numbers right-aligned.
            if (2..=6).contains(&i) {
                format!("{}:", "-".repeat(w + 1))
            } else {
                "-".repeat(w + 2)
            }
        })
        .collect();
    println!("|{}|", rule.join("|"));
    for line in &lines {
        println!("{}", render(line));
    }
}

/// One line per target of the issues: the figure, the target, met or not.
fn print_targets(rows: &[Row], constant_memory: Option<String>) {
    println!();
    println!("Targets:");
    let ratio = |workload: Workload, name: &str| -> Option<(f64, String)> {
        let best = best_peer(rows, workload)?;
        let ours = rows
            .iter()
            .find(|r| r.workload == workload && r.kind == Kind::Ours && r.name.starts_with(name))?;
        Some((ours.median() / best.median(), best.name.clone()))
    };
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    if let Some((r, best)) = ratio(Workload::SubmitAll, "concurrent-futures") {
        println!(
            "- submit-all/collect-all: {r:.2}x the best peer ({best}); target <= 0.33x: {}",
            verdict(r <= 1.0 / 3.0)
        );
    }
    if let Some((r, best)) = ratio(Workload::RoundTrip, "concurrent-futures") {
        println!(
            "- serial round trip: {r:.2}x the best peer ({best}); target <= 1.00x: {}",
            verdict(r <= 1.0)
        );
    }
    if let Some(line) = constant_memory {
        println!("- map with buffersize over `0..`: {line}");
    }
    let against = |workload: Workload, peer: &str| -> Option<f64> {
        let peer = rows
            .iter()
            .find(|r| r.workload == workload && r.kind == Kind::Peer && r.name.starts_with(peer))?;
        let ours = rows
            .iter()
            .find(|r| r.workload == workload && r.kind == Kind::Ours)?;
        Some(ours.median() / peer.median())
    };
    if let Some(r) = against(Workload::ProcSubmitAll, "procspawn") {
        println!(
            "- processes, submit-all/collect-all: {r:.2}x procspawn; target <= 0.10x: {}",
            verdict(r <= 0.1)
        );
    }
    if let Some(r) = against(Workload::ProcRoundTrip, "procspawn") {
        println!(
            "- processes, round trip: {r:.2}x procspawn; target <= 0.50x: {}",
            verdict(r <= 0.5)
        );
    }
    if let Some(r) = against(Workload::ProcMap, "Python") {
        println!(
            "- processes, map: {:.1}x Python's throughput; target >= 5x: {}",
            1.0 / r,
            verdict(r <= 0.2)
        );
    }
    if let Some(r) = against(Workload::ProcStartShutdown, "Python") {
        println!(
            "- processes, start to shutdown: {r:.2}x Python's time; target < 1x: {}",
            verdict(r < 1.0)
        );
    }
}

// ---------------------------------------------------------------- measuring

/// One implementation on one workload.
struct Contender<'a> {
    name: String,
    kind: Kind,
    /// Whether to record the peak RSS growth of each run.
    memory: bool,
    /// Runs the workload at size `n`; returns the time of the measured part.
    run: Box<dyn FnMut(usize) -> Duration + 'a>,
    /// The row's note, given the peak RSS growth in KiB (if recorded).
    note: Box<dyn Fn(Option<u64>) -> String + 'a>,
}

impl<'a> Contender<'a> {
    fn new(
        name: impl Into<String>,
        kind: Kind,
        run: impl FnMut(usize) -> Duration + 'a,
    ) -> Contender<'a> {
        Contender {
            name: name.into(),
            kind,
            memory: false,
            run: Box::new(run),
            note: Box::new(|_| String::new()),
        }
    }

    /// Records peak RSS growth and puts it in the note.
    fn memory(mut self, label: impl Into<String>) -> Contender<'a> {
        let label = label.into();
        self.memory = true;
        self.note = Box::new(move |kib| format!("{label}: peak RSS +{}", mem::fmt(kib)));
        self
    }

    fn note(mut self, note: impl Fn(Option<u64>) -> String + 'a) -> Contender<'a> {
        self.note = Box::new(note);
        self
    }
}

/// Runs every contender at size `n`, round-robin so that a change in the
/// machine's load hits all of them alike: a warm-up round at a tenth of the
/// size, then between `MIN_REPS` and `MAX_REPS` rounds as `budget` allows,
/// each round starting with the next contender. Returns one row each, with
/// nanoseconds per task for each round.
fn contend(workload: Workload, n: usize, budget: Duration, mut cs: Vec<Contender>) -> Vec<Row> {
    for c in &mut cs {
        (c.run)((n / 10).max(1));
    }
    let k = cs.len();
    let mut samples = vec![Vec::new(); k];
    let mut cpu = vec![Vec::new(); k];
    let mut growth: Vec<Option<u64>> = vec![None; k];
    let mut spent = Duration::ZERO;
    let mut round = 0;
    while round < MAX_REPS && (round < MIN_REPS || spent < budget) {
        for j in 0..k {
            let i = (j + round) % k;
            let c = &mut cs[i];
            let base = if c.memory { mem::start() } else { None };
            let cpu_before = process_cpu();
            let t = (c.run)(n);
            if let (Some(before), Some(after)) = (cpu_before, process_cpu()) {
                cpu[i].push((after - before).as_nanos() as f64 / n as f64);
            }
            if let (Some(base), Some(peak)) = (base, mem::peak_kib()) {
                growth[i] = Some(growth[i].unwrap_or(0).max(peak.saturating_sub(base)));
            }
            spent += t;
            samples[i].push(t.as_nanos() as f64 / n as f64);
        }
        round += 1;
    }
    let measured = samples.into_iter().zip(cpu).zip(growth);
    cs.into_iter()
        .zip(measured)
        .map(|(c, ((samples, cpu), growth))| {
            let mut row = Row::new(workload, c.name, c.kind, n, samples).note((c.note)(growth));
            // Worker processes' CPU time is not the process's own.
            if !workload.in_processes() {
                row.cpu = cpu;
            }
            row.peak_kib = growth;
            row
        })
        .collect()
}

/// CPU time of this process, every thread together.
fn process_cpu() -> Option<Duration> {
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    {
        #[repr(C)]
        struct Timespec {
            sec: i64,
            nsec: i64,
        }
        unsafe extern "C" {
            fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
        }
        const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec for the call to fill.
        if unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0 {
            return Some(Duration::new(ts.sec as u64, ts.nsec as u32));
        }
    }
    None
}

/// Peak resident memory, from `/proc/self/status`.
mod mem {
    use super::{AtomicU64, Ordering};

    /// VmRSS at the last [`start`], in KiB (0: unknown).
    static BASE: AtomicU64 = AtomicU64::new(0);

    fn status_kib(field: &str) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line[field.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// Returns freed memory to the system, resets the peak (VmHWM) to the
    /// current RSS, and returns that RSS; `None` if the peak can't be reset.
    pub fn start() -> Option<u64> {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            unsafe extern "C" {
                fn malloc_trim(pad: usize) -> i32;
            }
            // SAFETY: glibc's malloc_trim only releases free heap memory.
            unsafe { malloc_trim(0) };
        }
        // "5" resets VmHWM to VmRSS (Linux 4.0+).
        std::fs::write("/proc/self/clear_refs", "5").ok()?;
        let rss = status_kib("VmRSS:")?;
        BASE.store(rss, Ordering::Relaxed);
        Some(rss)
    }

    /// The peak RSS since the last [`start`], in KiB.
    pub fn peak_kib() -> Option<u64> {
        status_kib("VmHWM:")
    }

    /// Peak growth since the last [`start`], in KiB.
    pub fn growth_kib() -> Option<u64> {
        let base = BASE.load(Ordering::Relaxed);
        (base != 0).then(|| peak_kib().map(|p| p.saturating_sub(base)))?
    }

    pub fn fmt(kib: Option<u64>) -> String {
        match kib {
            Some(k) => format!("{:.1} MiB", k as f64 / 1024.0),
            None => "n/a".into(),
        }
    }
}

// ---------------------------------------------------------------- executors

/// What the workloads need of an executor: submit a closure and get a
/// handle, wait on the handle for the value.
trait Exec {
    type Handle<T: Send + 'static>;
    fn submit<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Self::Handle<T>;
    fn wait<T: Send + 'static>(&self, handle: Self::Handle<T>) -> T;
}

impl Exec for ThreadPoolExecutor {
    type Handle<T: Send + 'static> = Future<T>;

    fn submit<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Future<T> {
        ThreadPoolExecutor::submit(self, f).expect("submit")
    }

    fn wait<T: Send + 'static>(&self, handle: Future<T>) -> T {
        handle.into_result().expect("task")
    }
}

/// A fire-and-forget pool, given a handle by a one-slot channel per task.
struct WithChannel<P>(P);

/// Runs a job on a fire-and-forget pool.
trait Spawn {
    fn spawn_job(&self, job: impl FnOnce() + Send + 'static);
}

impl Spawn for threadpool::ThreadPool {
    fn spawn_job(&self, job: impl FnOnce() + Send + 'static) {
        self.execute(job);
    }
}

impl Spawn for rayon::ThreadPool {
    fn spawn_job(&self, job: impl FnOnce() + Send + 'static) {
        self.spawn(job);
    }
}

impl<P: Spawn> Exec for WithChannel<P> {
    type Handle<T: Send + 'static> = Receiver<T>;

    fn submit<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Receiver<T> {
        let (tx, rx) = sync_channel(1);
        self.0.spawn_job(move || {
            let _ = tx.send(f());
        });
        rx
    }

    fn wait<T: Send + 'static>(&self, handle: Receiver<T>) -> T {
        handle.recv().expect("task")
    }
}

impl Exec for tokio::runtime::Runtime {
    type Handle<T: Send + 'static> = tokio::task::JoinHandle<T>;

    fn submit<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Self::Handle<T> {
        self.spawn_blocking(f)
    }

    fn wait<T: Send + 'static>(&self, handle: Self::Handle<T>) -> T {
        self.block_on(handle).expect("task")
    }
}

fn threads_started(pool: &ThreadPoolExecutor) -> String {
    match pool.threads_started() {
        1 => "1 thread started".into(),
        n => format!("{n} threads started"),
    }
}

fn ours() -> ThreadPoolExecutor {
    ThreadPoolExecutor::new(WORKERS).expect("pool")
}

fn threadpool() -> WithChannel<threadpool::ThreadPool> {
    WithChannel(threadpool::ThreadPool::new(WORKERS))
}

fn rayon_pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(WORKERS)
        .build()
        .expect("rayon pool")
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(WORKERS)
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------- workloads

fn small(x: u64) -> u64 {
    x * 2 + 1
}

/// Sum of `small(x)` over `0..n`.
fn small_sum(n: usize) -> u64 {
    (n as u64) * (n as u64)
}

fn submit_all<E: Exec>(e: &E, n: usize) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..n as u64).map(|i| e.submit(move || i)).collect();
    let sum: u64 = handles.into_iter().map(|h| e.wait(h)).sum();
    let elapsed = start.elapsed();
    assert_eq!(sum, (n as u64) * (n as u64).saturating_sub(1) / 2);
    elapsed
}

fn round_trips<E: Exec>(e: &E, n: usize) -> Duration {
    let start = Instant::now();
    let mut sum = 0u64;
    for i in 0..n as u64 {
        sum += e.wait(e.submit(move || i));
    }
    let elapsed = start.elapsed();
    assert_eq!(sum, (n as u64) * (n as u64).saturating_sub(1) / 2);
    elapsed
}

/// `map` for a pool without one: a task per item, results in order.
fn map_per_item<E: Exec>(e: &E, n: usize) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..n as u64).map(|x| e.submit(move || small(x))).collect();
    let sum: u64 = handles.into_iter().map(|h| e.wait(h)).sum();
    let elapsed = start.elapsed();
    assert_eq!(sum, small_sum(n));
    elapsed
}

fn map_ours(pool: &ThreadPoolExecutor, n: usize, options: MapOptions) -> Duration {
    let start = Instant::now();
    let sum: u64 = pool
        .map_with(small, 0..n as u64, options)
        .expect("map")
        .map(|r| r.expect("item"))
        .sum();
    let elapsed = start.elapsed();
    assert_eq!(sum, small_sum(n));
    elapsed
}

/// `map` with a buffersize over the infinite input `0..`, taking `n`
/// results. Records the peak RSS growth after a tenth of them in `at_tenth`.
fn map_ours_infinite(
    pool: &ThreadPoolExecutor,
    n: usize,
    options: MapOptions,
    at_tenth: Option<&AtomicU64>,
) -> Duration {
    let start = Instant::now();
    let mut sum = 0u64;
    let results = pool.map_with(small, 0u64.., options).expect("map").take(n);
    for (k, r) in results.enumerate() {
        sum += r.expect("item");
        if let (true, Some(at_tenth)) = (k == n / 10, at_tenth) {
            at_tenth.store(mem::growth_kib().unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(sum, small_sum(n));
    elapsed
}

fn map_rayon_par_iter(pool: &rayon::ThreadPool, n: usize) -> Duration {
    let start = Instant::now();
    let results: Vec<u64> = pool.install(|| (0..n as u64).into_par_iter().map(small).collect());
    let sum: u64 = results.into_iter().sum();
    let elapsed = start.elapsed();
    assert_eq!(sum, small_sum(n));
    elapsed
}

// ---------------------------------------------------------------- the rows

/// One of the two per-task workloads, run the same way on every executor.
trait PerTask {
    fn run<E: Exec>(e: &E, n: usize) -> Duration;
}

struct SubmitAll;
impl PerTask for SubmitAll {
    fn run<E: Exec>(e: &E, n: usize) -> Duration {
        submit_all(e, n)
    }
}

struct RoundTrips;
impl PerTask for RoundTrips {
    fn run<E: Exec>(e: &E, n: usize) -> Duration {
        round_trips(e, n)
    }
}

/// Rows for a per-task workload: this library against the three thread
/// pools, each given fresh.
fn per_task_rows<W: PerTask>(workload: Workload, n: usize, rows: &mut Vec<Row>) {
    let ours = ours();
    let threadpool = threadpool();
    let rayon = WithChannel(rayon_pool());
    let tokio = tokio_runtime();
    let contenders = vec![
        Contender::new("concurrent-futures", Kind::Ours, |n| W::run(&ours, n))
            .note(|_| threads_started(&ours)),
        Contender::new("threadpool + channel", Kind::Peer, |n| {
            W::run(&threadpool, n)
        }),
        Contender::new("rayon spawn + channel", Kind::Peer, |n| W::run(&rayon, n)),
        Contender::new("tokio spawn_blocking", Kind::Peer, |n| W::run(&tokio, n)),
    ];
    rows.extend(contend(workload, n, WORKLOAD_BUDGET, contenders));
}

/// The map rows; returns the constant-memory verdict for the targets.
fn map_rows(s: &Sizes, rows: &mut Vec<Row>) -> String {
    let n = s.map_items;
    let chunk = s.chunksize;
    let (buf_chunked, buf_single) = (s.buffer_chunked, s.buffer_single);
    let bounded_chunked = MapOptions::new().chunksize(chunk).buffersize(buf_chunked);
    let bounded_single = MapOptions::new().buffersize(buf_single);
    let chunked = MapOptions::new().chunksize(chunk);
    let at_tenth = AtomicU64::new(u64::MAX);
    let bound = buf_chunked * chunk;

    let ours = ours();
    let threadpool = threadpool();
    let rayon = WithChannel(rayon_pool());
    let tokio = tokio_runtime();
    let per_item = "a task + handle per item";
    let contenders = vec![
        Contender::new("concurrent-futures map_with", Kind::Ours, |n| {
            map_ours_infinite(&ours, n, bounded_chunked.clone(), Some(&at_tenth))
        })
        .memory(format!(
            "`0..`, buffersize {buf_chunked}, chunksize {chunk} (<= {} items in flight)",
            fmt_count(bound)
        )),
        Contender::new("concurrent-futures map_with", Kind::Ours, |n| {
            map_ours_infinite(&ours, n, bounded_single.clone(), None)
        })
        .memory(format!(
            "`0..`, buffersize {buf_single}, chunksize 1 (<= {buf_single} items in flight)"
        )),
        Contender::new("concurrent-futures map_with", Kind::Ours, |n| {
            map_ours(&ours, n, chunked.clone())
        })
        .memory(format!("chunksize {chunk}, all submitted at once")),
        Contender::new("concurrent-futures map", Kind::Ours, |n| {
            map_ours(&ours, n, MapOptions::new())
        })
        .memory("chunksize 1 (default), all submitted at once"),
        Contender::new("threadpool + channel", Kind::Peer, |n| {
            map_per_item(&threadpool, n)
        })
        .memory(per_item),
        Contender::new("rayon spawn + channel", Kind::Peer, |n| {
            map_per_item(&rayon, n)
        })
        .memory(per_item),
        Contender::new("tokio spawn_blocking", Kind::Peer, |n| {
            map_per_item(&tokio, n)
        })
        .memory(per_item),
        Contender::new("rayon par_iter().map().collect()", Kind::Reference, |n| {
            map_rayon_par_iter(&rayon.0, n)
        })
        .memory("reference, not a task API"),
    ];
    let map_rows = contend(Workload::Map, n, MAP_BUDGET, contenders);
    let tenth = match at_tenth.load(Ordering::Relaxed) {
        u64::MAX => None,
        k => Some(k),
    };
    let verdict = format!(
        "peak RSS growth +{} after a tenth of the items, +{} after all {} \
         (buffersize {buf_chunked} x chunksize {chunk}: at most {} items in flight)",
        mem::fmt(tenth),
        mem::fmt(map_rows[0].peak_kib),
        fmt_count(n),
        fmt_count(bound)
    );
    rows.extend(map_rows);
    verdict
}

// ---------------------------------------------------------------- Python

/// Runs `bench/python_peer.py MODE ARGS...`; its JSON, or why not.
fn run_python(args: &[String]) -> Result<serde_json::Value, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python_peer.py");
    let output = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| format!("python3 not run ({e})"))?;
    if !output.status.success() {
        return Err(format!(
            "python3 {script} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("bad JSON from {script}: {e}"))
}

/// Adds one row per workload found in the script's output; returns the
/// Python version.
fn python_rows(
    json: &serde_json::Value,
    workloads: &[(&str, Workload, &str)],
    rows: &mut Vec<Row>,
) -> String {
    for &(key, workload, name) in workloads {
        let Some(w) = json["workloads"].get(key) else {
            continue;
        };
        let n = w["n"].as_u64().unwrap_or(0) as usize;
        let samples: Vec<f64> = w["samples_ns"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
            .unwrap_or_default();
        let cpu: Vec<f64> = w["cpu_ns"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
            .unwrap_or_default();
        if n > 0 && !samples.is_empty() {
            let mut row = Row::new(workload, name, Kind::Peer, n, samples);
            if json["mode"] == "thread" {
                row.cpu = cpu;
            }
            rows.push(row);
        }
    }
    json["python"].as_str().unwrap_or("?").to_string()
}

fn python_thread_rows(s: &Sizes, rows: &mut Vec<Row>) -> Result<String, String> {
    let args = [
        "thread".to_string(),
        "--submit-all".into(),
        s.submit_all.to_string(),
        "--round-trips".into(),
        s.round_trips.to_string(),
        "--map-items".into(),
        s.python_map_items.to_string(),
    ];
    let json = run_python(&args)?;
    let name = "Python ThreadPoolExecutor(4)";
    let workloads = [
        ("submit_all", Workload::SubmitAll, name),
        ("round_trip", Workload::RoundTrip, name),
        ("map", Workload::Map, "Python ThreadPoolExecutor(4).map"),
    ];
    let version = python_rows(&json, &workloads, rows);
    for row in rows.iter_mut() {
        if row.workload == Workload::Map && row.name.starts_with("Python") {
            row.note = "a tenth of the items, to save time".into();
        }
    }
    Ok(version)
}

// ---------------------------------------------------------------- processes

// PROCESS POOL SECTION (feature "process"): the rows of issue 3, compiled
// only with `--features process`. Peers: procspawn::Pool (2 workers) and
// Python's ProcessPoolExecutor(2).
#[cfg(all(feature = "process", unix))]
mod process {
    #[concurrent_futures::task]
    pub fn echo(x: u64) -> u64 {
        x
    }

    #[concurrent_futures::task]
    pub fn small(x: u64) -> u64 {
        super::small(x)
    }
}

/// The process-pool rows: 20,000 tiny tasks submit-all/collect-all, 2,000
/// serial round trips, `map` of 200,000 items with chunksize 1,000, and pool
/// start + first result + shutdown; against `procspawn::Pool` (2 workers)
/// and Python's `ProcessPoolExecutor(2)`.
#[cfg(all(feature = "process", unix))]
fn process_pool_rows(s: &Sizes, rows: &mut Vec<Row>) -> Result<(), String> {
    use concurrent_futures::ProcessPoolExecutor;

    const PROCESS_WORKERS: usize = 2;
    let tasks = s.scaled(20_000);
    let trips = s.scaled(2_000);
    let items = s.scaled(200_000);
    let chunk = 1_000;
    let starts = 5;
    let triangle = |n: usize| (n as u64) * (n as u64).saturating_sub(1) / 2;
    let ours_name = "concurrent-futures";
    let peer_name = "procspawn::Pool(2)";

    let ours = ProcessPoolExecutor::new(PROCESS_WORKERS).map_err(|e| e.to_string())?;
    let peer = procspawn::Pool::new(PROCESS_WORKERS).map_err(|e| e.to_string())?;

    let ours_submit_all = |n: usize| {
        let start = Instant::now();
        let futures: Vec<_> = (0..n as u64)
            .map(|i| ours.submit(process::echo, i).expect("submit"))
            .collect();
        let sum: u64 = futures
            .into_iter()
            .map(|f| f.into_result().expect("task"))
            .sum();
        let elapsed = start.elapsed();
        assert_eq!(sum, triangle(n));
        elapsed
    };
    // Each pending procspawn task holds file descriptors: within the limit,
    // submit in windows (all at once when the limit allows).
    let fd_limit = raise_fd_limit(1 << 18);
    let window = (fd_limit.saturating_sub(1024) / 8).max(1) as usize;
    let peer_submit_all = |n: usize| {
        let start = Instant::now();
        let mut sum = 0u64;
        for lo in (0..n as u64).step_by(window) {
            let hi = (lo + window as u64).min(n as u64);
            let handles: Vec<_> = (lo..hi).map(|i| peer.spawn(i, |i| i)).collect();
            sum += handles
                .into_iter()
                .map(|h| h.join().expect("task"))
                .sum::<u64>();
        }
        let elapsed = start.elapsed();
        assert_eq!(sum, triangle(n));
        elapsed
    };
    let windowed = move |_| match window < tasks {
        true => format!(
            "in windows of {} tasks (open-file limit {})",
            fmt_count(window),
            fmt_count(fd_limit as usize)
        ),
        false => String::new(),
    };
    let contenders = vec![
        Contender::new(ours_name, Kind::Ours, ours_submit_all),
        Contender::new(peer_name, Kind::Peer, peer_submit_all).note(windowed),
    ];
    rows.extend(contend(
        Workload::ProcSubmitAll,
        tasks,
        WORKLOAD_BUDGET,
        contenders,
    ));

    let ours_round_trips = |n: usize| {
        let start = Instant::now();
        let mut sum = 0;
        for i in 0..n as u64 {
            let future = ours.submit(process::echo, i).expect("submit");
            sum += future.into_result().expect("task");
        }
        let elapsed = start.elapsed();
        assert_eq!(sum, triangle(n));
        elapsed
    };
    let peer_round_trips = |n: usize| {
        let start = Instant::now();
        let mut sum = 0;
        for i in 0..n as u64 {
            sum += peer.spawn(i, |i| i).join().expect("task");
        }
        let elapsed = start.elapsed();
        assert_eq!(sum, triangle(n));
        elapsed
    };
    let contenders = vec![
        Contender::new(ours_name, Kind::Ours, ours_round_trips),
        Contender::new(peer_name, Kind::Peer, peer_round_trips),
    ];
    rows.extend(contend(
        Workload::ProcRoundTrip,
        trips,
        WORKLOAD_BUDGET,
        contenders,
    ));

    let ours_map = |n: usize| {
        let start = Instant::now();
        let options = MapOptions::new().chunksize(chunk);
        let sum: u64 = ours
            .map_with(process::small, 0..n as u64, options)
            .expect("map")
            .map(|r| r.expect("item"))
            .sum();
        let elapsed = start.elapsed();
        assert_eq!(sum, small_sum(n));
        elapsed
    };
    let peer_map = |n: usize| {
        // procspawn has no map: one task per chunk.
        let start = Instant::now();
        let handles: Vec<_> = (0..n as u64)
            .step_by(chunk)
            .map(|lo| {
                let items: Vec<u64> = (lo..(lo + chunk as u64).min(n as u64)).collect();
                peer.spawn(items, |items: Vec<u64>| {
                    items.into_iter().map(small).collect::<Vec<u64>>()
                })
            })
            .collect();
        let sum: u64 = handles
            .into_iter()
            .flat_map(|h| h.join().expect("task"))
            .sum();
        let elapsed = start.elapsed();
        assert_eq!(sum, small_sum(n));
        elapsed
    };
    let contenders = vec![
        Contender::new(ours_name, Kind::Ours, ours_map),
        Contender::new(peer_name, Kind::Peer, peer_map).note(|_| "a task per chunk".into()),
    ];
    rows.extend(contend(
        Workload::ProcMap,
        items,
        WORKLOAD_BUDGET,
        contenders,
    ));
    drop(ours);
    peer.shutdown();

    let ours_start = |n: usize| {
        let start = Instant::now();
        for _ in 0..n {
            let pool = ProcessPoolExecutor::new(PROCESS_WORKERS).expect("pool");
            let future = pool.submit(process::echo, 1).expect("submit");
            assert_eq!(future.into_result(), Ok(1));
            pool.shutdown(true, false);
        }
        start.elapsed()
    };
    let peer_start = |n: usize| {
        let start = Instant::now();
        for _ in 0..n {
            let pool = procspawn::Pool::new(PROCESS_WORKERS).expect("pool");
            assert_eq!(pool.spawn(1u64, |i| i).join().expect("task"), 1);
            pool.shutdown();
        }
        start.elapsed()
    };
    let contenders = vec![
        Contender::new(ours_name, Kind::Ours, ours_start),
        Contender::new(peer_name, Kind::Peer, peer_start),
    ];
    rows.extend(contend(
        Workload::ProcStartShutdown,
        starts,
        WORKLOAD_BUDGET,
        contenders,
    ));

    let args = [
        "process".to_string(),
        "--submit-all".into(),
        tasks.to_string(),
        "--round-trips".into(),
        trips.to_string(),
        "--map-items".into(),
        items.to_string(),
        "--chunksize".into(),
        chunk.to_string(),
        "--starts".into(),
        starts.to_string(),
    ];
    let json = run_python(&args)?;
    let name = "Python ProcessPoolExecutor(2)";
    let workloads = [
        ("submit_all", Workload::ProcSubmitAll, name),
        ("round_trip", Workload::ProcRoundTrip, name),
        ("map", Workload::ProcMap, name),
        ("start_shutdown", Workload::ProcStartShutdown, name),
    ];
    python_rows(&json, &workloads, rows);
    Ok(())
}

/// Raises this process's open-file limit towards `want` (as far as the hard
/// limit, or beyond it where allowed); returns the soft limit now in force.
#[cfg(all(feature = "process", unix))]
fn raise_fd_limit(want: u64) -> u64 {
    #[cfg(target_os = "linux")]
    {
        #[repr(C)]
        struct Rlimit {
            cur: u64,
            max: u64,
        }
        unsafe extern "C" {
            fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
            fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
        }
        const RLIMIT_NOFILE: i32 = 7;
        let mut lim = Rlimit { cur: 0, max: 0 };
        // SAFETY: `lim` is a valid, writable rlimit for the calls to read and fill.
        unsafe {
            if getrlimit(RLIMIT_NOFILE, &mut lim) != 0 {
                return 1024;
            }
            if lim.cur < want {
                let raised = Rlimit {
                    cur: want,
                    max: lim.max.max(want),
                };
                if setrlimit(RLIMIT_NOFILE, &raised) != 0 {
                    let capped = Rlimit {
                        cur: want.min(lim.max),
                        max: lim.max,
                    };
                    setrlimit(RLIMIT_NOFILE, &capped);
                }
                getrlimit(RLIMIT_NOFILE, &mut lim);
            }
        }
        lim.cur
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = want;
        1024
    }
}

// ---------------------------------------------------------------- main

/// The version of `krate` in this workspace's Cargo.lock.
fn locked_version(krate: &str) -> String {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
        .unwrap_or_default();
    let needle = format!("name = \"{krate}\"\nversion = \"");
    lock.split_once(&needle)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(|| "?".into(), |(v, _)| v.to_string())
}

/// The 1-minute load average, to tell a quiet machine from a busy one.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

/// `BENCH_LOAD=N`: N busy-loop processes that compete with the benchmark
/// for the CPUs, killed (and reaped) when this guard drops, also when the
/// benchmark panics. Each is a shell loop that also checks every few
/// milliseconds that the benchmark still exists, so that none outlives a
/// benchmark killed outright (SIGKILL runs no destructor).
struct Load(Vec<std::process::Child>);

impl Load {
    fn start() -> Load {
        let n: usize = match std::env::var("BENCH_LOAD") {
            Ok(v) if !v.trim().is_empty() => v.trim().parse().expect("BENCH_LOAD=<number>"),
            _ => 0,
        };
        let pid = std::process::id();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do i=0; \
             while [ $i -lt 20000 ]; do i=$((i+1)); done; done"
        );
        let mut load = Load(Vec::new());
        for _ in 0..n {
            let child = Command::new("sh")
                .args(["-c", &script])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("BENCH_LOAD: could not start `sh`");
            load.0.push(child);
        }
        load
    }

    fn describe(&self) -> String {
        match self.0.len() {
            0 => String::new(),
            n => format!(", BENCH_LOAD={n}: {n} busy-loop processes beside"),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------- the chart

/// The rows as the chart's panels, one per workload, in the table's order.
fn chart_groups(rows: &[Row]) -> Vec<chart::Group> {
    Workload::ALL
        .iter()
        .map(|&workload| {
            let best = best_peer(rows, workload).map(Row::median);
            let of: Vec<&Row> = rows.iter().filter(|r| r.workload == workload).collect();
            let bars = of
                .iter()
                .map(|row| {
                    let twins = of.iter().filter(|r| r.name == row.name).count();
                    chart::Bar {
                        label: chart_label(row, twins > 1),
                        kind: match row.kind {
                            Kind::Ours => chart::BarKind::Ours,
                            Kind::Peer => chart::BarKind::Peer,
                            Kind::Reference => chart::BarKind::Reference,
                        },
                        median_ns: row.median(),
                        min_ns: row.min(),
                        max_ns: row.max(),
                        ratio: best.map(|b| row.median() / b),
                    }
                })
                .collect();
            let n = of.first().map_or(0, |r| r.n);
            chart::Group {
                title: format!("{} ({} per run)", workload.title(), fmt_count(n)),
                per: workload.per(),
                bars,
            }
        })
        .collect()
}

/// A bar's name: the row's, told apart from a twin of the same name by
/// the first part of its note (`map_with (0.., buffersize 8, chunksize
/// 1024)`).
fn chart_label(row: &Row, twin: bool) -> String {
    if !twin {
        return row.name.clone();
    }
    let detail = row.note.split(':').next().unwrap_or_default();
    let detail = detail.split(" (").next().unwrap_or_default();
    format!("{} ({})", row.name, detail.replace('`', ""))
}

/// Where the chart goes: the target directory, and `BENCH_SVG` if set
/// (relative to the repository root).
fn chart_paths() -> Vec<std::path::PathBuf> {
    // The benchmark runs as target/<profile>/deps/compare-<hash>.
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(std::path::Path::to_path_buf));
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut paths = vec![
        target
            .unwrap_or_else(|| root.join("target"))
            .join("bench-compare.svg"),
    ];
    if let Ok(path) = std::env::var("BENCH_SVG")
        && !path.trim().is_empty()
    {
        paths.push(root.join(path.trim()));
    }
    paths
}

/// Whether `BENCH_ONLY` (a comma-separated list of `submit`, `roundtrip`,
/// `map`, `python`, `process`; unset = all) selects `part`.
fn selected(part: &str) -> bool {
    match std::env::var("BENCH_ONLY") {
        Ok(only) if !only.trim().is_empty() => only.split(',').any(|p| p.trim() == part),
        _ => true,
    }
}

fn main() {
    // A procspawn worker is this program started again: it must branch off
    // before anything else runs.
    #[cfg(all(feature = "process", unix))]
    procspawn::init();

    let load = Load::start();
    let started = Instant::now();
    let s = Sizes::from_env();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_before = load_average();
    let (quick, duration) = match s.quick {
        true => (", BENCH_QUICK=1: sizes / 10", "about 20 s"),
        false => ("", "1 to 3 minutes"),
    };
    let loaded = load.describe();
    eprintln!("compare: {WORKERS} workers, {cpus} cpus{quick}{loaded}; this takes {duration}...");

    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut constant_memory = None;
    let mut python = "Python: not run".to_string();
    if selected("submit") {
        eprintln!("  threads: submit-all/collect-all");
        per_task_rows::<SubmitAll>(Workload::SubmitAll, s.submit_all, &mut rows);
    }
    if selected("roundtrip") {
        eprintln!("  threads: serial round trip");
        per_task_rows::<RoundTrips>(Workload::RoundTrip, s.round_trips, &mut rows);
    }
    if selected("map") {
        eprintln!("  threads: map");
        constant_memory = Some(map_rows(&s, &mut rows));
    }
    if selected("python") {
        eprintln!("  threads: Python");
        python = match python_thread_rows(&s, &mut rows) {
            Ok(version) => format!("Python {version}"),
            Err(why) => {
                notes.push(format!("Python rows skipped: {why}"));
                "Python: skipped".into()
            }
        };
    }

    // PROCESS POOL SECTION: see `process_pool_rows`.
    #[cfg(all(feature = "process", unix))]
    if selected("process") {
        eprintln!("  processes");
        if let Err(why) = process_pool_rows(&s, &mut rows) {
            notes.push(format!("process-pool rows incomplete: {why}"));
        }
    }
    #[cfg(not(all(feature = "process", unix)))]
    notes.push("process-pool rows: run with `--features process`".into());

    let procspawn = match cfg!(all(feature = "process", unix)) {
        true => format!(", procspawn {}", locked_version("procspawn")),
        false => String::new(),
    };
    let versions = format!(
        "concurrent-futures {} vs threadpool {}, rayon {}, tokio {}{procspawn}, {python}; \
         {WORKERS} workers on {cpus} cpus{quick}{loaded}",
        env!("CARGO_PKG_VERSION"),
        locked_version("threadpool"),
        locked_version("rayon"),
        locked_version("tokio"),
    );
    println!();
    println!("{versions}");
    println!();
    print_table(&rows);
    print_targets(&rows, constant_memory);
    if !notes.is_empty() {
        println!();
        println!("Notes:");
        for note in notes {
            println!("- {note}");
        }
    }
    println!();
    println!(
        "Median of 3-7 runs after a warm-up, contenders interleaved; min-max = fastest and \
         slowest run; vs best peer = median / best peer's median (lower is better); CPU = \
         CPU time of the whole process (all threads) per task. Load average {load_before} before, \
         {} after; total bench time {:.0} s.",
        load_average(),
        started.elapsed().as_secs_f64()
    );

    let groups = chart_groups(&rows);
    let title = "concurrent-futures against its peers: time per task, log scale (lower is better)";
    let subtitle = [
        versions,
        format!(
            "median of 3-7 runs after a warm-up, contenders interleaved; load average {load_before} \
             before, {} after",
            load_average()
        ),
    ];
    for path in chart_paths() {
        match chart::write_svg(&path, title, &subtitle, &groups) {
            Ok(()) => println!("Chart: {}", path.canonicalize().unwrap_or(path).display()),
            Err(why) => eprintln!("chart not written to {}: {why}", path.display()),
        }
    }
}
