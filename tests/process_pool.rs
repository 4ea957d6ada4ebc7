//! The process pool: CPython's test_process_pool.py and test_deadlock.py
//! behaviours, and the places where this pool must do better. Every blocking
//! wait is bounded; tasks that must stay busy block on a socket that the test
//! releases (see `Gates`), never on a sleep.
#![cfg(all(feature = "process", unix))]

use std::collections::HashSet;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use concurrent_futures::{
    Error, Future, MapOptions, ProcessPoolExecutor, RegisteredTask, ReturnWhen, TaskFn,
    ThreadPoolExecutor, as_completed, task, wait,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod process_util;
use process_util::{Gates, LIMIT, gate};

// ---- tasks ------------------------------------------------------------------

#[task]
fn square(n: u64) -> u64 {
    n * n
}

#[task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[task]
fn worker_pid() -> u32 {
    std::process::id()
}

#[task]
fn pid_of(_n: u32) -> u32 {
    std::process::id()
}

#[task]
fn checked_div(a: i32, b: i32) -> i32 {
    a / b // panics for b == 0
}

#[task]
fn exit_with(code: i32) -> u32 {
    std::process::exit(code)
}

#[task]
fn abort() -> u32 {
    std::process::abort()
}

#[task]
fn segfault() -> u32 {
    // SAFETY: raising a signal has no memory effects; the worker dies.
    unsafe { libc::raise(libc::SIGSEGV) };
    0
}

/// Runs out of memory: caps the address space, then allocates past it (the
/// allocation failure aborts the worker, as an OOM does).
#[task]
fn out_of_memory() -> usize {
    let limit = libc::rlimit {
        rlim_cur: 1 << 30,
        rlim_max: 1 << 30,
    };
    // SAFETY: setrlimit only changes this process's limits.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
    let v = std::hint::black_box(vec![1u8; 2 << 30]);
    std::hint::black_box(&v).len()
}

/// Writes raw bytes on the worker's own connection to the pool (found as
/// the process's one socket), then exits: a worker dying in the middle of a
/// message (`truncated`) or talking garbage.
#[task]
fn corrupt_connection(truncated: bool) -> u32 {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // Past stdin/stdout/stderr, which may be sockets too.
    let fd = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|fd| *fd > 2)
        .max()
        .expect("the worker's socket");
    // SAFETY: the descriptor is open; the process exits right after.
    let mut socket = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    if truncated {
        // A frame header announcing 100 bytes, then only 10.
        socket.write_all(&100u32.to_le_bytes()).unwrap();
        socket.write_all(&[7; 10]).unwrap();
        // SAFETY: ends the process at once.
        unsafe { libc::_exit(0) }
    } else {
        // A complete frame whose body is no message.
        socket.write_all(&5u32.to_le_bytes()).unwrap();
        socket.write_all(&[0xff; 5]).unwrap();
        std::process::id()
    }
}

#[task]
fn echo_len(s: String) -> (usize, String) {
    (s.len(), s)
}

#[task]
fn shout(text: String) {
    println!("{text} from {}", std::process::id());
}

#[task]
fn initializer_fails() {
    panic!("initializer says no");
}

#[task]
fn initializer_errs(reason: String) -> Result<(), String> {
    Err(reason)
}

#[task]
fn initializer_ok() {}

#[task]
fn initializer_exits() {
    std::process::exit(7);
}

/// Serializes fine, refuses to deserialize: the parent's decode fails.
#[derive(Debug)]
struct NoDecode;

impl Serialize for NoDecode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> Deserialize<'de> for NoDecode {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("NoDecode never deserializes"))
    }
}

/// Refuses to serialize.
#[derive(Debug)]
struct NoEncode;

impl Serialize for NoEncode {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("NoEncode never serializes"))
    }
}

impl<'de> Deserialize<'de> for NoEncode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u8::deserialize(d).map(|_| NoEncode)
    }
}

#[task]
fn takes_no_encode(_x: NoEncode) -> u8 {
    1
}

#[task]
fn returns_no_encode() -> NoEncode {
    NoEncode
}

#[task]
fn returns_no_decode() -> NoDecode {
    NoDecode
}

/// Claims to be a task without a registration, which only a hand-written
/// impl can do: the pool's run-time check must still refuse it.
#[derive(Clone, Copy)]
struct Unregistered;

impl TaskFn<u64, Unregistered> for Unregistered {
    type Output = u64;
    fn call_with(&self, n: u64) -> u64 {
        n
    }
}

impl RegisteredTask<u64, Unregistered> for Unregistered {}

/// Tasks in the shapes `#[task]` must keep working for: public in a module,
/// documented, under a `cfg`, with a pattern argument, recursive.
mod shapes {
    use concurrent_futures::task;

    /// Documented, public, and called from outside its module.
    #[task]
    pub fn sum_pair((a, b): (u32, u32)) -> u32 {
        a + b
    }

    #[cfg(unix)]
    #[task]
    pub fn factorial(n: u64) -> u64 {
        if n <= 1 { 1 } else { n * factorial(n - 1) }
    }
}

// ---- helpers ------------------------------------------------------------------

fn get<T: Clone>(f: &Future<T>) -> Result<T, Error> {
    f.result_timeout(LIMIT).cloned()
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not reaped) still has its /proc entry.
    Path::new(&format!("/proc/{pid}")).exists()
}

fn assert_reaped(pids: &HashSet<u32>) {
    for pid in pids {
        assert!(!alive(*pid), "worker {pid} was left behind");
    }
}

// ---- basics -------------------------------------------------------------------

#[test]
fn submit_one_several_and_no_arguments() {
    let pool = ProcessPoolExecutor::new(2).unwrap();
    assert_eq!(get(&pool.submit(square, 7).unwrap()), Ok(49));
    assert_eq!(get(&pool.submit(add, (40, 2)).unwrap()), Ok(42));
    let worker = get(&pool.submit(worker_pid, ()).unwrap()).unwrap();
    assert_ne!(worker, std::process::id());
    // The function stays callable as before.
    assert_eq!(square(3), 9);
}

#[test]
fn task_shapes_run_in_workers_and_in_place() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    assert_eq!(get(&pool.submit(shapes::sum_pair, (2, 3)).unwrap()), Ok(5));
    assert_eq!(get(&pool.submit(shapes::factorial, 5).unwrap()), Ok(120));
    assert_eq!(shapes::sum_pair((4, 5)), 9);
    assert_eq!(shapes::factorial(4), 24);
    // A task is `Copy`, and `*task` is a plain function pointer.
    let task = shapes::factorial;
    let pointer: fn(u64) -> u64 = *task;
    assert_eq!((pointer(3), task(3)), (6, 6));
    // The thread pool takes a task too.
    let threads = ThreadPoolExecutor::new(1).unwrap();
    let on_thread = threads.submit_with(shapes::sum_pair, (1, 1)).unwrap();
    assert_eq!(on_thread.result_timeout(LIMIT), Ok(&2));
}

#[test]
fn default_max_workers_is_the_cpu_count() {
    let pool = ProcessPoolExecutor::builder().build().unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(pool.max_workers(), cpus);
    assert!(pool.worker_pids().is_empty(), "workers start lazily");
}

#[test]
fn zero_workers_is_an_error() {
    assert!(matches!(
        ProcessPoolExecutor::new(0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        ProcessPoolExecutor::builder()
            .max_tasks_per_child(0)
            .build(),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn unregistered_task_is_an_error_at_submit() {
    // A plain function or a closure does not compile (see the compile_fail
    // tests on `RegisteredTask`); this is the defence behind that.
    let pool = ProcessPoolExecutor::new(1).unwrap();
    match pool.submit(Unregistered, 1) {
        Err(Error::UnknownTask(name)) => assert!(name.contains("Unregistered"), "{name}"),
        other => panic!("expected UnknownTask, got {other:?}"),
    }
    assert!(
        pool.worker_pids().is_empty(),
        "no worker for a failed submit"
    );
}

#[test]
fn map_in_order_and_chunksizes_agree() {
    let pool = ProcessPoolExecutor::new(2).unwrap();
    let plain: Vec<u64> = pool
        .map(square, 0..40)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(plain, (0..40).map(|n| n * n).collect::<Vec<_>>());
    for chunksize in [6, 50, 40] {
        let chunked: Vec<u64> = pool
            .map_with(square, 0..40, MapOptions::new().chunksize(chunksize))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chunked, plain, "chunksize {chunksize}");
    }
    assert!(matches!(
        pool.map_with(square, 0..4, MapOptions::new().chunksize(0)),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn map_goes_on_after_a_failing_item() {
    let pool = ProcessPoolExecutor::new(2).unwrap();
    let results: Vec<_> = pool
        .map_with(
            checked_div,
            [(6, 3), (1, 0), (8, 2)],
            MapOptions::new().chunksize(2),
        )
        .unwrap()
        .collect();
    assert_eq!(results[0], Ok(2));
    assert!(matches!(results[1], Err(Error::Panicked { .. })));
    assert_eq!(results[2], Ok(4));
}

#[test]
fn the_pool_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ProcessPoolExecutor>();
}

#[test]
fn map_timeout_is_measured_from_the_call() {
    let gates = Gates::new();
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let mut results = pool
        .map_with(
            gate,
            vec![gates.path.clone(); 3],
            MapOptions::new().timeout(Duration::from_millis(200)),
        )
        .unwrap();
    let (_, first) = gates.started();
    assert!(matches!(results.next(), Some(Err(Error::Timeout { .. }))));
    assert!(results.next().is_none());
    gates.release(&first);
}

#[test]
fn map_with_buffersize_takes_an_infinite_input() {
    let pool = ProcessPoolExecutor::new(2).unwrap();
    let first: Vec<u64> = pool
        .map_with(square, 0.., MapOptions::new().buffersize(4).chunksize(3))
        .unwrap()
        .take(10)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(first, (0..10).map(|n| n * n).collect::<Vec<_>>());
}

/// Runs this very test in a child process of the test binary: its workers'
/// stdout must reach the child's stdout, and the harness's `main` (code
/// before the pool) must run exactly once in it, never in a worker.
#[test]
fn worker_stdout_reaches_the_parent_and_main_runs_once() {
    const NAME: &str = "worker_stdout_reaches_the_parent_and_main_runs_once";
    if std::env::var_os("CF_TEST_CHILD").is_some() {
        println!("MAIN-MARKER");
        let pool = ProcessPoolExecutor::new(2).unwrap();
        let f = pool.submit(shout, "TASK-MARKER".to_string()).unwrap();
        assert_eq!(get(&f), Ok(()));
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env("CF_TEST_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(stdout.matches("MAIN-MARKER").count(), 1, "{stdout}");
    assert_eq!(stdout.matches("TASK-MARKER from").count(), 1, "{stdout}");
    assert_eq!(stdout.matches("running 1 test").count(), 1, "{stdout}");
}

/// A worker blocked in a task dies with its parent (no orphan keeps
/// running): the child test process is SIGKILLed, its worker must follow.
#[test]
fn workers_die_with_their_parent() {
    const NAME: &str = "workers_die_with_their_parent";
    if std::env::var_os("CF_TEST_ORPHAN").is_some() {
        let gates = Gates::new();
        let pool = ProcessPoolExecutor::new(1).unwrap();
        let _blocked = pool.submit(gate, gates.path.clone()).unwrap();
        let (pid, _) = gates.started();
        println!("WORKER-PID {pid}");
        // Wait to be killed (bounded by the gate's own timeout).
        let _ = _blocked.result_timeout(LIMIT);
        std::process::exit(1);
    }
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env("CF_TEST_ORPHAN", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let worker: u32 = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let (_, pid) = line.split_once("WORKER-PID ")?;
            Some(pid.trim().parse().unwrap())
        })
        .expect("the child reports its worker");
    // SAFETY: pidfd_open has no memory effects.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, worker as libc::pid_t, 0) } as i32;
    assert!(pidfd >= 0, "pidfd_open failed");
    child.kill().unwrap();
    child.wait().unwrap();
    // The killed child could not remove its gate directory.
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("cf-process-test-{}-0", child.id())),
    );
    let mut poll = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; bounded timeout.
    let ready = unsafe { libc::poll(&mut poll, 1, LIMIT.as_millis() as i32) };
    // SAFETY: we own the descriptor.
    unsafe { libc::close(pidfd) };
    assert_eq!(ready, 1, "worker {worker} outlived its parent");
}

// ---- panics and serialization -------------------------------------------------

#[test]
fn panic_keeps_message_location_backtrace_and_worker() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let before = get(&pool.submit(worker_pid, ()).unwrap()).unwrap();
    match get(&pool.submit(checked_div, (1, 0)).unwrap()) {
        Err(Error::Panicked {
            message,
            location,
            backtrace,
        }) => {
            assert!(message.contains("divide by zero"), "{message}");
            assert!(location.unwrap().contains("process_pool.rs"));
            assert!(!backtrace.unwrap().is_empty());
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    let after = get(&pool.submit(worker_pid, ()).unwrap()).unwrap();
    assert_eq!(before, after, "the worker survives a panic");
}

#[test]
fn a_panic_debugs_in_one_line_and_keeps_its_backtrace() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let err = get(&pool.submit(checked_div, (1, 0)).unwrap()).unwrap_err();
    let frames = err.backtrace().expect("workers always capture one");
    assert!(frames.lines().count() > 1, "{frames}");
    let short = format!("{err:?}");
    assert_eq!(short.lines().count(), 1, "{short}");
    assert!(short.contains("divide by zero"), "{short}");
    // A vector of them stays readable too, and `{:#?}` gives the frames.
    let many = format!("{:?}", vec![err.clone(), err.clone()]);
    assert_eq!(many.lines().count(), 1);
    assert!(format!("{err:#?}").lines().count() > frames.lines().count() / 2);
}

#[test]
fn argument_that_fails_to_serialize_fails_that_submit_only() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    assert!(matches!(
        pool.submit(takes_no_encode, NoEncode),
        Err(Error::Serialization(_))
    ));
    let results: Vec<_> = pool
        .map_with(
            takes_no_encode,
            [NoEncode, NoEncode],
            MapOptions::new().chunksize(2),
        )
        .unwrap()
        .collect();
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(Error::Serialization(_))))
    );
    assert_eq!(get(&pool.submit(square, 5).unwrap()), Ok(25));
}

#[test]
fn result_that_fails_to_serialize_in_the_worker() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let f = pool.submit(returns_no_encode, ()).unwrap();
    assert!(f.wait_timeout(LIMIT));
    match f.into_result() {
        Err(Error::Serialization(m)) => assert!(m.contains("in the worker"), "{m}"),
        other => panic!("expected a serialization error, got {other:?}"),
    }
    assert_eq!(get(&pool.submit(square, 5).unwrap()), Ok(25));
}

#[test]
fn result_that_fails_to_deserialize_in_the_parent() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let f = pool.submit(returns_no_decode, ()).unwrap();
    assert!(f.wait_timeout(LIMIT));
    match f.into_result() {
        Err(Error::Serialization(m)) => assert!(m.contains("in the parent"), "{m}"),
        other => panic!("expected a serialization error, got {other:?}"),
    }
    assert_eq!(get(&pool.submit(square, 5).unwrap()), Ok(25));
}

#[test]
fn payload_of_64_mib_each_way() {
    let pool = ProcessPoolExecutor::new(2).unwrap();
    let big = "x".repeat(64 << 20);
    let f = pool.submit(echo_len, big.clone()).unwrap();
    let small = pool.submit(square, 3).unwrap();
    let (len, back) = get(&f).unwrap();
    assert_eq!(len, 64 << 20);
    assert!(back == big);
    assert_eq!(get(&small), Ok(9));
}

// ---- dying workers ---------------------------------------------------------------

fn assert_died(result: Result<u32, Error>, cause: &str) -> u32 {
    match result {
        Err(Error::WorkerDied { worker, cause: c }) => {
            assert!(c.contains(cause), "cause {c:?} should mention {cause:?}");
            assert_eq!(worker, concurrent_futures::WorkerId::process(worker.pid));
            worker.pid
        }
        other => panic!("expected WorkerDied ({cause}), got {other:?}"),
    }
}

#[test]
fn worker_that_exits_aborts_or_segfaults_fails_only_its_task() {
    let pool = ProcessPoolExecutor::new(2).unwrap();
    let before: Vec<_> = (0..20).map(|n| pool.submit(square, n).unwrap()).collect();
    let exit = pool.submit(exit_with, 3).unwrap();
    let aborted = pool.submit(abort, ()).unwrap();
    let segv = pool.submit(segfault, ()).unwrap();
    let after: Vec<_> = (0..20).map(|n| pool.submit(square, n).unwrap()).collect();
    let exit_pid = assert_died(get(&exit), "exit code 3");
    let abort_pid = assert_died(get(&aborted), "SIGABRT");
    let segv_pid = assert_died(get(&segv), "SIGSEGV");
    assert_ne!(exit_pid, abort_pid);
    assert_ne!(abort_pid, segv_pid);
    for (n, f) in before.iter().chain(&after).enumerate() {
        let n = (n % 20) as u64;
        assert_eq!(get(f), Ok(n * n));
    }
    // The pool is still usable.
    assert_eq!(get(&pool.submit(add, (1, 1)).unwrap()), Ok(2));
}

#[test]
fn worker_out_of_memory_fails_only_its_task() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let oom = pool.submit(out_of_memory, ()).unwrap();
    let fine = pool.submit(square, 8).unwrap();
    match get(&oom) {
        Err(Error::WorkerDied { cause, .. }) => assert!(cause.contains("SIGABRT"), "{cause}"),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    assert_eq!(get(&fine), Ok(64));
}

#[test]
fn worker_dying_mid_message_or_talking_garbage() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let truncated = pool.submit(corrupt_connection, true).unwrap();
    assert_died(get(&truncated), "exit code 0");
    let garbage = pool.submit(corrupt_connection, false).unwrap();
    match get(&garbage) {
        Err(Error::Protocol(message)) => assert!(message.contains("killed"), "{message}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert_eq!(get(&pool.submit(square, 11).unwrap()), Ok(121));
}

/// Several threads submit at once while some tasks kill their workers:
/// exactly the crashing tasks fail, every other one succeeds.
#[test]
fn concurrent_submits_with_crashing_tasks() {
    let pool = ProcessPoolExecutor::new(2).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let pool = &pool;
            s.spawn(move || {
                let futures: Vec<_> = (0..150u64)
                    .map(|n| {
                        if n % 50 == 7 {
                            (true, pool.submit(exit_with, 9).unwrap())
                        } else {
                            let x = t * 1000 + n;
                            (false, pool.submit(pid_of, x as u32).unwrap())
                        }
                    })
                    .collect();
                for (crashes, f) in &futures {
                    let result = get(f);
                    if *crashes {
                        assert_died(result, "exit code 9");
                    } else {
                        assert!(result.is_ok(), "{result:?}");
                    }
                }
            });
        }
    });
}

#[test]
fn crash_in_a_chunk_fails_that_chunk_only() {
    let pool = ProcessPoolExecutor::new(2).unwrap();
    let results: Vec<Result<u32, Error>> = pool
        .map_with(exit_with, [0, 0, 5, 0], MapOptions::new().chunksize(1))
        .unwrap()
        .collect();
    // exit(0) is a death too: the task never answered.
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(Error::WorkerDied { .. })))
    );
    let results: Vec<Result<u32, Error>> = pool
        .map_with(pid_of, 0..10, MapOptions::new().chunksize(5))
        .unwrap()
        .collect();
    assert!(results.iter().all(Result::is_ok));
}

#[test]
fn worker_killed_from_outside_while_others_run() {
    let gates = Gates::new();
    let pool = ProcessPoolExecutor::new(2).unwrap();
    let victim = pool.submit(gate, gates.path.clone()).unwrap();
    let (victim_pid, _) = gates.started();
    let others: Vec<_> = (0..50).map(|n| pool.submit(square, n).unwrap()).collect();
    // SAFETY: kill has no memory effects; the pid is our pool's worker.
    unsafe { libc::kill(victim_pid as i32, libc::SIGKILL) };
    let pid = assert_died(get(&victim), "SIGKILL");
    assert_eq!(pid, victim_pid);
    for (n, f) in others.iter().enumerate() {
        assert_eq!(get(f), Ok((n * n) as u64));
    }
    assert_eq!(get(&pool.submit(square, 9).unwrap()), Ok(81));
}

// ---- initializer ------------------------------------------------------------------

#[test]
fn initializer_that_fails_breaks_the_pool() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .initializer(initializer_fails, ())
        .build()
        .unwrap();
    let f = pool.submit(square, 2).unwrap();
    match get(&f) {
        Err(Error::BrokenPool(reason)) => {
            assert!(reason.contains("initializer says no"), "{reason}")
        }
        other => panic!("expected BrokenPool, got {other:?}"),
    }
    assert!(matches!(pool.submit(square, 2), Err(Error::BrokenPool(_))));

    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .initializer(initializer_errs, "no config".to_string())
        .build()
        .unwrap();
    match get(&pool.submit(square, 2).unwrap()) {
        Err(Error::BrokenPool(reason)) => assert!(reason.contains("no config"), "{reason}"),
        other => panic!("expected BrokenPool, got {other:?}"),
    }
}

/// Set in the child process of `a_broken_pool_says_why_on_stderr`.
const STDERR_CHILD: &str = "CONCURRENT_FUTURES_TEST_BROKEN_STDERR";

/// As Python logs a failed initializer, the pool says once on stderr why
/// it broke (run in a child process, whose stderr the test reads).
#[test]
fn a_broken_pool_says_why_on_stderr() {
    if std::env::var_os(STDERR_CHILD).is_some() {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(2)
            .initializer(initializer_errs, "no config".to_string())
            .build()
            .unwrap();
        // Each submit fails, or its future does, once the pool broke.
        for n in [2, 3] {
            match pool.submit(square, n) {
                Ok(f) => assert!(matches!(get(&f), Err(Error::BrokenPool(_)))),
                Err(e) => assert!(matches!(e, Error::BrokenPool(_)), "{e:?}"),
            }
        }
        return;
    }
    let name = "a_broken_pool_says_why_on_stderr";
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(STDERR_CHILD, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let Ok(output) = rx.recv_timeout(LIMIT) else {
        // SAFETY: `kill` has no memory effects; the child is not reaped
        // yet (its waiter has not returned), so the pid is still its.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        panic!("the child did not finish within {LIMIT:?}");
    };
    let output = output.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}");
    let said: Vec<&str> = stderr.lines().filter(|l| l.contains("is broken")).collect();
    assert_eq!(said.len(), 1, "said once: {stderr}");
    assert!(said[0].contains("process pool"), "{stderr}");
    assert!(said[0].contains("no config"), "{stderr}");
    // Not the pool's own kill as the worker's cause: "stopped by the
    // pool", or the worker's own exit if it ended first.
    assert!(!said[0].contains("SIGKILL"), "{stderr}");
}

#[test]
fn initializer_that_kills_its_worker_breaks_the_pool() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .initializer(initializer_exits, ())
        .build()
        .unwrap();
    match get(&pool.submit(square, 2).unwrap()) {
        Err(Error::BrokenPool(reason)) => {
            assert!(reason.contains("initializer"), "{reason}");
            assert!(reason.contains("exit code 7"), "{reason}");
        }
        other => panic!("expected BrokenPool, got {other:?}"),
    }
}

#[test]
fn initializer_that_works() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .initializer(initializer_ok, ())
        .build()
        .unwrap();
    assert_eq!(get(&pool.submit(square, 4).unwrap()), Ok(16));
}

// ---- scheduling -------------------------------------------------------------------

#[test]
fn idle_worker_is_reused() {
    let pool = ProcessPoolExecutor::new(4).unwrap();
    let pids: HashSet<u32> = (0..3)
        .map(|_| get(&pool.submit(worker_pid, ()).unwrap()).unwrap())
        .collect();
    assert_eq!(pids.len(), 1);
    assert_eq!(pool.worker_pids().len(), 1);
}

#[test]
fn max_tasks_per_child_replaces_the_worker() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_tasks_per_child(3)
        .build()
        .unwrap();
    let pids: Vec<u32> = (0..4)
        .map(|_| get(&pool.submit(worker_pid, ()).unwrap()).unwrap())
        .collect();
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[1], pids[2]);
    assert_ne!(pids[2], pids[3]);
    assert!(!alive(pids[0]), "the retired worker is reaped");
}

/// Tells a copy of this test binary to play the rebuilt-binary scenario on
/// itself; the value is the copy's path.
const REBUILT_ENV: &str = "CF_TEST_REBUILT_BINARY";

/// The worker's pid, the inode of the file it runs and its `argv[0]`.
#[task]
fn whoami() -> (u32, u64, String) {
    use std::os::unix::fs::MetadataExt;
    let exe = std::fs::metadata("/proc/self/exe").unwrap();
    let arg0 = std::env::args().next().unwrap_or_default();
    (std::process::id(), exe.ino(), arg0)
}

/// Replacing the program's file on disk (what `cargo build` does) while a
/// pool runs: later workers still start, from the parent's own build.
///
/// The scenario deletes its own executable, so it runs in a copy of this
/// test binary, started with a filter that selects only this test and
/// [`REBUILT_ENV`] set; the copy reports through its exit status and
/// libtest's summary.
#[test]
fn replacing_the_executable_does_not_break_the_pool() {
    if let Some(exe) = std::env::var_os(REBUILT_ENV) {
        return rebuilt_binary_scenario(Path::new(&exe));
    }
    let name = "replacing_the_executable_does_not_break_the_pool";
    // Only for its temporary directory, removed on drop.
    let scratch = Gates::new();
    let copy = scratch.dir.join("copy-of-the-test-binary");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    // Another test's thread may fork while the copy is still open for
    // writing in this process; its child holds that descriptor until it
    // execs, and running the copy meanwhile fails with ETXTBSY. Retry.
    let mut tries = 0;
    let child = loop {
        let spawned = std::process::Command::new(&copy)
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(REBUILT_ENV, &copy)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        match spawned {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break other.unwrap(),
        }
    };
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let output = match rx.recv_timeout(LIMIT * 2) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // SAFETY: `kill` has no memory effects; the child is not reaped
            // yet (its waiter has not returned), so the pid is still its.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("the scenario did not finish within {:?}", LIMIT * 2);
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "scenario failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    // The filter selected this test, and the scenario ran (not zero tests).
    assert!(stdout.contains("test result: ok. 1 passed"), "{stdout}");
    assert!(
        stdout.contains("scenario: 3 workers after the rebuild"),
        "{stdout}"
    );
}

fn rebuilt_binary_scenario(exe: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let own = std::fs::metadata("/proc/self/exe").unwrap().ino();
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    let (first, ino, _) = get(&pool.submit(whoami, ()).unwrap()).unwrap();
    assert_eq!(ino, own);
    // What a rebuild does: a new file at the old path. This one is not even
    // a worker, so a worker started from the path could not answer.
    std::fs::remove_file(exe).unwrap();
    std::fs::write(exe, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut pids = HashSet::from([first]);
    for _ in 0..3 {
        let (pid, ino, arg0) = get(&pool.submit(whoami, ()).unwrap()).unwrap();
        assert!(pids.insert(pid), "each task has a new worker");
        assert_eq!(ino, own, "the worker runs the parent's build");
        assert_eq!(Path::new(&arg0), exe, "argv[0] is the program's path");
    }
    println!("scenario: 3 workers after the rebuild");
}

#[test]
fn saturation_never_exceeds_max_workers() {
    let gates = Gates::new();
    let pool = ProcessPoolExecutor::new(2).unwrap();
    let futures: Vec<_> = (0..4)
        .map(|_| pool.submit(gate, gates.path.clone()).unwrap())
        .collect();
    let first = gates.started();
    let second = gates.started();
    assert_ne!(first.0, second.0);
    assert!(!gates.another_starts_within(Duration::from_millis(300)));
    assert!(pool.worker_pids().len() <= 2);
    gates.release(&first.1);
    gates.release(&second.1);
    let third = gates.started();
    let fourth = gates.started();
    gates.release(&third.1);
    gates.release(&fourth.1);
    let pids: HashSet<u32> = futures.iter().map(|f| get(f).unwrap()).collect();
    assert_eq!(pids.len(), 2);
}

#[test]
fn thousand_submits_while_every_worker_is_busy() {
    let gates = Gates::new();
    let pool = ProcessPoolExecutor::new(2).unwrap();
    let blockers: Vec<_> = (0..2)
        .map(|_| pool.submit(gate, gates.path.clone()).unwrap())
        .collect();
    let a = gates.started();
    let b = gates.started();
    let start = Instant::now();
    let queued: Vec<_> = (0..1000).map(|n| pool.submit(square, n).unwrap()).collect();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "submit must not block"
    );
    assert!(queued.iter().all(|f| !f.done()));
    gates.release(&a.1);
    gates.release(&b.1);
    for (n, f) in queued.iter().enumerate() {
        assert_eq!(get(f), Ok((n * n) as u64));
    }
    for f in &blockers {
        assert!(get(f).is_ok());
    }
}

// ---- timeouts and cancellation ----------------------------------------------------

#[test]
fn per_task_timeout_stops_only_that_task() {
    let gates = Gates::new();
    let timeout = Duration::from_millis(500);
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .timeout(timeout)
        .build()
        .unwrap();
    let slow = pool.submit(gate, gates.path.clone()).unwrap();
    let (slow_pid, _) = gates.started();
    let quick: Vec<_> = (0..20).map(|n| pool.submit(square, n).unwrap()).collect();
    assert_eq!(get(&slow), Err(Error::TaskTimeout(timeout)));
    for (n, f) in quick.iter().enumerate() {
        assert_eq!(get(f), Ok((n * n) as u64));
    }
    assert_eq!(get(&pool.submit(square, 3).unwrap()), Ok(9));
    pool.shutdown(true, false);
    assert!(!alive(slow_pid));
}

#[test]
fn cancel_pending_and_abort_running() {
    let gates = Gates::new();
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let running = pool.submit(gate, gates.path.clone()).unwrap();
    let (running_pid, _) = gates.started();
    let pending = pool.submit(square, 4).unwrap();
    assert!(pending.cancel());
    assert!(
        !running.cancel(),
        "a running task is not cancelled by cancel()"
    );
    assert!(running.abort(), "abort stops the worker running it");
    assert!(running.wait_timeout(LIMIT));
    assert_eq!(get(&running), Err(Error::Cancelled));
    assert_eq!(get(&pending), Err(Error::Cancelled));
    // The worker was replaced.
    let next = get(&pool.submit(worker_pid, ()).unwrap()).unwrap();
    assert_ne!(next, running_pid);
    pool.shutdown(true, false);
    assert!(!alive(running_pid));
}

// ---- shutdown, terminate, kill, drop -------------------------------------------------

#[test]
fn shutdown_is_idempotent_and_refuses_new_work() {
    let pool = ProcessPoolExecutor::new(2).unwrap();
    let f = pool.submit(square, 6).unwrap();
    pool.shutdown(true, false);
    pool.shutdown(true, false);
    assert_eq!(get(&f), Ok(36));
    assert!(matches!(pool.submit(square, 1), Err(Error::ShutDown)));
    assert!(pool.worker_pids().is_empty());
}

#[test]
fn shutdown_without_cancel_runs_the_queue() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let futures: Vec<_> = (0..50).map(|n| pool.submit(square, n).unwrap()).collect();
    pool.shutdown(true, false);
    for (n, f) in futures.iter().enumerate() {
        assert_eq!(
            f.result_timeout(Duration::ZERO).cloned(),
            Ok((n * n) as u64)
        );
    }
}

#[test]
fn shutdown_with_cancel_futures() {
    let gates = Gates::new();
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let running = pool.submit(gate, gates.path.clone()).unwrap();
    let (_, gate_path) = gates.started();
    let queued: Vec<_> = (0..5).map(|n| pool.submit(square, n).unwrap()).collect();
    pool.shutdown(false, true);
    for f in &queued {
        assert!(f.cancelled());
    }
    gates.release(&gate_path);
    assert!(get(&running).is_ok());
    pool.shutdown(true, false);
}

fn stop_blocked(kill: bool) {
    let gates = Gates::new();
    let pool = ProcessPoolExecutor::new(2).unwrap();
    let blocked: Vec<_> = (0..2)
        .map(|_| pool.submit(gate, gates.path.clone()).unwrap())
        .collect();
    let pids: HashSet<u32> = [gates.started().0, gates.started().0].into();
    let queued = pool.submit(square, 1).unwrap();
    if kill {
        pool.kill_workers();
    } else {
        pool.terminate_workers();
    }
    let cause = if kill { "SIGKILL" } else { "SIGTERM" };
    for f in &blocked {
        assert_died(get(f), cause);
    }
    assert!(queued.cancelled());
    assert_reaped(&pids);
    assert!(pool.worker_pids().is_empty());
    assert!(matches!(pool.submit(square, 1), Err(Error::ShutDown)));
}

#[test]
fn terminate_workers_with_a_blocked_task() {
    stop_blocked(false);
}

#[test]
fn kill_workers_with_a_blocked_task() {
    stop_blocked(true);
}

#[test]
fn no_worker_left_behind_after_shutdown_or_drop() {
    let mut pids = HashSet::new();
    {
        let pool = ProcessPoolExecutor::new(2).unwrap();
        let futures: Vec<_> = (0..40).map(|n| pool.submit(pid_of, n).unwrap()).collect();
        pids.extend(futures.iter().map(|f| get(f).unwrap()));
        pids.extend(pool.worker_pids());
        pool.shutdown(true, false);
        assert_reaped(&pids);
    }
    let mut dropped = HashSet::new();
    {
        let pool = ProcessPoolExecutor::new(2).unwrap();
        let futures: Vec<_> = (0..40).map(|n| pool.submit(pid_of, n).unwrap()).collect();
        dropped.extend(pool.worker_pids());
        // Dropped with work possibly still queued: Drop waits for it.
        drop(pool);
        for f in &futures {
            dropped.insert(f.result_timeout(Duration::ZERO).cloned().unwrap());
        }
    }
    assert_reaped(&dropped);
}

#[test]
fn drop_while_panicking_cancels_the_queue() {
    let gates = Gates::new();
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let running = pool.submit(gate, gates.path.clone()).unwrap();
    let (_, gate_path) = gates.started();
    let queued = pool.submit(square, 3).unwrap();
    // The unwinding Drop cancels the queued task (the callback runs in the
    // cancelling thread) and then waits for the running one, which the
    // callback releases.
    queued.add_done_callback(move |_| {
        let _ = UnixDatagram::unbound().unwrap().send_to(b"go", &gate_path);
    });
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _pool = pool;
        panic!("leaving the scope by panic");
    }));
    assert!(unwound.is_err());
    assert!(queued.cancelled(), "queued work was cancelled");
    assert!(get(&running).is_ok());
}

// ---- mixing with the rest of the crate ------------------------------------------------

#[test]
fn process_and_thread_futures_mix_in_wait_and_as_completed() {
    let processes = ProcessPoolExecutor::new(2).unwrap();
    let threads = ThreadPoolExecutor::new(2).unwrap();
    let p = processes.submit(square, 5).unwrap();
    let t = threads.submit(|| 25u64).unwrap();
    let both = [&p, &t];
    let waited = wait(both, Some(LIMIT), ReturnWhen::AllCompleted);
    assert!(waited.not_done.is_empty());
    let mut n = 0;
    for f in as_completed(both, Some(LIMIT)) {
        assert_eq!(f.unwrap().result(), Ok(&25));
        n += 1;
    }
    assert_eq!(n, 2);
}

/// Switching code that submits registered tasks from threads to processes
/// is a one-word change; `map` also needs the task as a closure (`*square`)
/// on threads, the task itself on processes.
#[test]
fn switching_executors_is_a_one_word_change() {
    macro_rules! seed {
        ($Executor:ident, $square:expr) => {{
            let executor = $Executor::new(4).unwrap();
            let mut results: Vec<u64> = executor
                .map($square, 0..10)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let futures: Vec<_> = (0..3)
                .map(|i| executor.submit_with(add, (i, 100)).unwrap())
                .collect();
            for f in futures {
                results.push(f.result_timeout(LIMIT).unwrap().unsigned_abs());
            }
            results
        }};
    }
    assert_eq!(
        seed!(ThreadPoolExecutor, *square),
        seed!(ProcessPoolExecutor, square)
    );
}

#[test]
fn a_process_future_can_be_awaited() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let f = pool.submit(add, (20, 22)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let value = rt.block_on(async { tokio::time::timeout(LIMIT, f).await });
    assert_eq!(value.unwrap(), Ok(42));
}

// ---- map_unordered ----------------------------------------------------------

#[test]
fn map_unordered_every_position_once_in_any_chunking() {
    let pool = ProcessPoolExecutor::new(2).unwrap();
    for opts in [
        MapOptions::new(),
        MapOptions::new().chunksize(7),
        MapOptions::new().chunksize(3).buffersize(2),
    ] {
        let mut got: Vec<(usize, u64)> = pool
            .map_unordered_with(square, 0..40, opts.timeout(LIMIT))
            .unwrap()
            .map(|(i, r)| (i, r.unwrap()))
            .collect();
        got.sort_unstable();
        assert_eq!(
            got,
            (0..40).map(|n| (n as usize, n * n)).collect::<Vec<_>>()
        );
    }
}

#[test]
fn map_unordered_goes_on_after_a_failing_item() {
    let pool = ProcessPoolExecutor::new(2).unwrap();
    let mut got: Vec<_> = pool
        .map_unordered_with(
            checked_div,
            [(6, 3), (1, 0), (8, 2)],
            MapOptions::new().chunksize(2).timeout(LIMIT),
        )
        .unwrap()
        .collect();
    got.sort_by_key(|(i, _)| *i);
    assert_eq!(got[0], (0, Ok(2)));
    assert!(matches!(got[1], (1, Err(Error::Panicked { .. }))));
    assert_eq!(got[2], (2, Ok(4)));
}

#[test]
fn map_unordered_with_buffersize_takes_an_infinite_input() {
    let pool = ProcessPoolExecutor::new(2).unwrap();
    let got: Vec<(usize, u64)> = pool
        .map_unordered_with(
            square,
            0..,
            MapOptions::new().buffersize(4).chunksize(3).timeout(LIMIT),
        )
        .unwrap()
        .take(100)
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    let positions: HashSet<usize> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(positions.len(), 100);
    assert!(got.iter().all(|&(i, v)| v == (i * i) as u64));
    assert!(positions.iter().all(|&i| i < 100 + 5 * 3));
}

#[test]
fn map_unordered_timeout_ends_with_one_error() {
    let gates = Gates::new();
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let mut results = pool
        .map_unordered_with(
            gate,
            vec![gates.path.clone(); 3],
            MapOptions::new().timeout(Duration::from_millis(200)),
        )
        .unwrap();
    let (_, first) = gates.started();
    assert!(matches!(
        results.next(),
        Some((
            concurrent_futures::map::NO_POSITION,
            Err(Error::Timeout { .. })
        ))
    ));
    assert!(results.next().is_none());
    gates.release(&first);
}

#[test]
fn map_takes_borrowed_items_without_cloning_them() {
    let pool = ProcessPoolExecutor::new(2).unwrap();
    let pairs = [(1i64, 2i64), (3, 4), (5, 6)];
    let sums: Vec<i64> = pool
        .map_with(add, pairs.iter(), MapOptions::new().chunksize(2))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(sums, [3, 7, 11]);
    let texts = ["x".repeat(3), "y".repeat(5)];
    let mut lens: Vec<(usize, usize)> = pool
        .map_unordered(echo_len, texts.iter())
        .unwrap()
        .map(|(i, r)| (i, r.unwrap().0))
        .collect();
    lens.sort_unstable();
    assert_eq!(lens, [(0, 3), (1, 5)]);
}
