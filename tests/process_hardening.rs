//! The process pool under the defects a demanding and an adversarial user
//! found: work sent ahead stays cancellable, completed work never runs twice,
//! every accepted duration works, callbacks may block on their own pool,
//! deaths are seen at once and described truly, and running out of threads
//! is a typed error. Every blocking wait is bounded; nothing sleeps to
//! synchronise.
#![cfg(all(feature = "process", unix))]

mod process_util;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use concurrent_futures::{Error, Future, MapOptions, ProcessPoolExecutor, State, task};
use process_util::{Gates, LIMIT, gate, unique};

// ---- tasks ------------------------------------------------------------------

/// Appends `index` to the file `log`, one line per run.
#[task]
fn record(log: String, index: u32) -> u32 {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log)
        .unwrap();
    writeln!(f, "{index}").unwrap();
    index
}

/// Like `record`, but index `crash_at` ends the worker: by `abort` (a
/// crash the worker sees) or by SIGKILL (a death nobody can react to).
#[task]
fn record_or_die(log: String, index: u32, crash_at: u32, sigkill: bool) -> u32 {
    if index == crash_at {
        if sigkill {
            // SAFETY: signalling ourselves; the process dies at once.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        std::process::abort();
    }
    record(log, index)
}

/// Like `record`, but index `hold_at` holds its worker like `gate` instead.
#[task]
fn record_or_hold(log: String, index: u32, ctl: String, hold_at: u32) -> u32 {
    if index == hold_at {
        return gate(ctl);
    }
    record(log, index)
}

#[task]
fn square(n: u64) -> u64 {
    n * n
}

/// The worker's connection to its pool: its sockets past stdio.
fn own_sockets() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|fd| *fd > 2)
        .collect()
}

/// Closes the worker's connection, then blocks (at most 60 s) without
/// exiting; it never returns to the worker loop, whose descriptors are gone.
#[task]
fn close_connection_and_linger() -> u32 {
    for fd in own_sockets() {
        // SAFETY: closing descriptors this process owns; the worker loop
        // that owns them never runs again (see below).
        unsafe { libc::close(fd) };
    }
    std::thread::sleep(Duration::from_secs(60));
    // SAFETY: ends the process without running destructors of the closed
    // descriptors.
    unsafe { libc::_exit(0) }
}

/// Forks a child that keeps the worker's socket open (its pid goes to
/// `pid_file`), then aborts.
#[task]
fn die_while_a_child_holds_the_socket(pid_file: String) -> u32 {
    // SAFETY: fork in a single-threaded worker; the child only sleeps and
    // exits with `_exit`.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: async-signal-safe calls only, then `_exit`.
        unsafe {
            libc::sleep(120);
            libc::_exit(0);
        }
    }
    std::fs::write(&pid_file, child.to_string()).unwrap();
    std::process::abort();
}

// ---- helpers ------------------------------------------------------------------

struct Log(PathBuf);

impl Log {
    fn new() -> Log {
        Log(std::env::temp_dir().join(format!(
            "cf-hardening-{}-{}.log",
            std::process::id(),
            unique()
        )))
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }

    /// How many times each index ran.
    fn runs(&self) -> HashMap<u32, usize> {
        let mut runs = HashMap::new();
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        for line in text.lines() {
            *runs.entry(line.parse().unwrap()).or_default() += 1;
        }
        runs
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn settle<T: Clone>(f: &Future<T>) -> Result<T, Error> {
    f.result_timeout(LIMIT).cloned()
}

/// One worker, warmed up so that the pool batches (the job time is known
/// and short). Then, all submitted at once: a first task that ends as soon
/// as everything is queued, a held `gate` task, and `n` recorded tasks.
/// When the first ends, the pool sends the gate and what follows ahead, in
/// one batch. Returns the pool, the gate's future, the gate's socket and
/// the recorded tasks' futures.
fn held_worker_with_queue(
    gates: &Gates,
    log: &Log,
    n: u32,
) -> (ProcessPoolExecutor, Future<u32>, String, Vec<Future<u32>>) {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    for i in 0..20 {
        assert_eq!(pool.submit(square, i).unwrap().into_result(), Ok(i * i));
    }
    let first = pool.submit(gate, gates.path.clone()).unwrap();
    let held = pool.submit(gate, gates.path.clone()).unwrap();
    let queued: Vec<_> = (0..n)
        .map(|i| pool.submit(record, (log.path(), i)).unwrap())
        .collect();
    let (_, first_socket) = gates.started();
    gates.release(&first_socket);
    assert!(settle(&first).is_ok());
    let (_, gate_socket) = gates.started();
    (pool, held, gate_socket, queued)
}

// ---- 1. what has not started stays cancellable ---------------------------------

#[test]
fn tasks_sent_ahead_can_be_cancelled_and_never_run() {
    let gates = Gates::new();
    let log = Log::new();
    let (pool, held, gate_socket, queued) = held_worker_with_queue(&gates, &log, 28);
    assert!(held.running(), "the gate task really began");
    for f in &queued {
        assert!(!f.running(), "a task waiting behind the gate has not begun");
        assert_eq!(f.state(), State::Pending);
    }
    for (i, f) in queued.iter().enumerate() {
        assert!(f.cancel(), "task {i} has not begun: cancel must succeed");
        assert!(f.cancelled());
    }
    gates.release(&gate_socket);
    assert!(settle(&held).is_ok());
    for f in &queued {
        assert_eq!(settle(f), Err(Error::Cancelled));
    }
    // The pool goes on, and none of the cancelled tasks ever ran.
    assert_eq!(pool.submit(square, 9).unwrap().into_result(), Ok(81));
    drop(pool);
    assert!(
        log.runs().is_empty(),
        "cancelled tasks ran: {:?}",
        log.runs()
    );
}

#[test]
fn shutdown_with_cancel_futures_cancels_tasks_sent_ahead() {
    let gates = Gates::new();
    let log = Log::new();
    let (pool, held, gate_socket, queued) = held_worker_with_queue(&gates, &log, 28);
    pool.shutdown(false, true);
    for (i, f) in queued.iter().enumerate() {
        assert!(
            f.cancelled(),
            "task {i} had not begun: shutdown must cancel it"
        );
    }
    gates.release(&gate_socket);
    assert!(settle(&held).is_ok(), "the running task still finishes");
    drop(pool);
    assert!(
        log.runs().is_empty(),
        "cancelled tasks ran: {:?}",
        log.runs()
    );
}

#[test]
fn dropping_a_started_map_cancels_what_was_sent_ahead() {
    let gates = Gates::new();
    let log = Log::new();
    let pool = ProcessPoolExecutor::new(1).unwrap();
    for i in 0..20 {
        assert_eq!(pool.submit(square, i).unwrap().into_result(), Ok(i * i));
    }
    // Item 0 runs at once, item 1 holds the worker, 2..30 wait behind it.
    let items = (0..30u32).map(|i| (log.path(), i, gates.path.clone(), 1u32));
    let mut map = pool
        .map_with(record_or_hold, items, MapOptions::new().timeout(LIMIT))
        .unwrap();
    assert_eq!(map.next(), Some(Ok(0)));
    let (_, gate_socket) = gates.started();
    drop(map);
    gates.release(&gate_socket);
    drop(pool);
    let runs = log.runs();
    assert_eq!(runs.get(&0), Some(&1));
    assert_eq!(
        runs.len(),
        1,
        "items that had not begun ran after the map was dropped: {runs:?}"
    );
}

// ---- 2. a crash inside a batch runs nothing twice --------------------------------

fn crash_in_a_batch(sigkill: bool) {
    let log = Log::new();
    let pool = ProcessPoolExecutor::new(1).unwrap();
    for i in 0..50 {
        assert_eq!(pool.submit(square, i).unwrap().into_result(), Ok(i * i));
    }
    let futures: Vec<_> = (0..200u32)
        .map(|i| {
            pool.submit(record_or_die, (log.path(), i, 100u32, sigkill))
                .unwrap()
        })
        .collect();
    let mut lost = 0;
    for (i, f) in futures.iter().enumerate() {
        match settle(f) {
            Ok(v) => assert_eq!(v, i as u32),
            Err(Error::WorkerDied { cause, .. }) if i == 100 => {
                let signal = if sigkill { "SIGKILL" } else { "SIGABRT" };
                assert!(cause.contains(signal), "{cause}");
            }
            // Only a death nobody can react to loses answers, and then the
            // task says it finished: it is not run again.
            Err(Error::WorkerDied { cause, .. }) if sigkill && i < 100 => {
                assert!(cause.contains("after the task finished"), "{cause}");
                lost += 1;
            }
            other => panic!("task {i}: {other:?}"),
        }
    }
    drop(pool);
    let runs = log.runs();
    for i in 0..200u32 {
        let expected = usize::from(i != 100);
        assert_eq!(runs.get(&i).copied().unwrap_or(0), expected, "task {i}");
    }
    if !sigkill {
        assert_eq!(lost, 0, "a crash the worker sees loses no answer");
    }
}

#[test]
fn a_crash_inside_a_batch_fails_only_the_crashing_task() {
    crash_in_a_batch(false);
}

#[test]
fn a_sigkill_inside_a_batch_reruns_no_finished_task() {
    crash_in_a_batch(true);
}

// ---- 3. every accepted duration works --------------------------------------------

#[test]
fn the_largest_timeouts_work() {
    // Everything runs on a helper thread, so that a hang fails the test.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(1)
            .timeout(Duration::MAX)
            .build()
            .unwrap();
        let one = pool.submit(square, 7).unwrap().into_result();
        let squares: Vec<_> = pool
            .map_with(square, 0..5, MapOptions::new().timeout(Duration::MAX))
            .unwrap()
            .collect();
        drop(pool); // returns: the supervisor is alive
        tx.send((one, squares)).unwrap();
    });
    let (one, squares) = rx
        .recv_timeout(LIMIT)
        .expect("a pool with a Duration::MAX timeout hung");
    assert_eq!(one, Ok(49));
    assert_eq!(squares, [Ok(0), Ok(1), Ok(4), Ok(9), Ok(16)]);
    assert!(
        ProcessPoolExecutor::builder()
            .timeout(Duration::ZERO)
            .build()
            .is_err(),
        "a zero per-task timeout is refused"
    );
}

// ---- 4. a done callback may block on its own pool --------------------------------

fn callback_blocks_on_its_pool(workers: usize) {
    let pool = Arc::new(ProcessPoolExecutor::new(workers).unwrap());
    let (tx, rx) = mpsc::channel();
    for i in 0..4u64 {
        let f = pool.submit(square, i).unwrap();
        let (inner, tx) = (Arc::clone(&pool), tx.clone());
        f.add_done_callback(move |_| {
            let nested = inner.submit(square, i + 10).unwrap();
            tx.send(nested.result_timeout(LIMIT).cloned()).unwrap();
        });
        // The future itself is dropped: its callbacks still run.
    }
    let mut got: Vec<u64> = (0..4)
        .map(|_| {
            rx.recv_timeout(LIMIT)
                .expect("callback deadlocked")
                .unwrap()
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, [100, 121, 144, 169]);
}

#[test]
fn a_done_callback_may_wait_on_its_own_pool_with_one_worker() {
    callback_blocks_on_its_pool(1);
}

#[test]
fn a_done_callback_may_wait_on_its_own_pool_with_four_workers() {
    callback_blocks_on_its_pool(4);
}

#[test]
fn process_callbacks_run_off_the_pool_threads_in_order() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let gates = Gates::new();
    // Held until every callback is registered, so that none runs at once.
    let f = pool.submit(gate, gates.path.clone()).unwrap();
    let (pid, gate_socket) = gates.started();
    let seen = Arc::new(Mutex::new(Vec::new()));
    for n in 0..3 {
        let seen = Arc::clone(&seen);
        f.add_done_callback(move |f| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            seen.lock().unwrap().push((n, *f.result().unwrap(), name));
        });
    }
    gates.release(&gate_socket);
    assert_eq!(f.into_result(), Ok(pid)); // waits for the callbacks
    let seen = seen.lock().unwrap();
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1, 2]);
    for (_, value, thread) in seen.iter() {
        assert_eq!(*value, pid);
        assert!(thread.starts_with("process-pool-callbacks"), "{thread}");
    }
}

// ---- 5. into_result inside the future's own callback -------------------------

#[test]
fn into_result_in_a_process_futures_own_callback_does_not_hang() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let slot: Arc<Mutex<Option<Future<u64>>>> = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel();
    let (gates, f) = {
        let gates = Gates::new();
        let f = pool.submit(gate, gates.path.clone()).unwrap();
        (gates, f)
    };
    let (_, gate_socket) = gates.started();
    let g = pool.submit(square, 5).unwrap();
    let inner = Arc::clone(&slot);
    g.add_done_callback(move |_| {
        let own = inner.lock().unwrap().take().expect("the future");
        tx.send(own.into_result()).unwrap();
    });
    *slot.lock().unwrap() = Some(g);
    gates.release(&gate_socket);
    assert!(settle(&f).is_ok());
    let got = rx.recv_timeout(LIMIT).expect("into_result hung");
    assert!(matches!(got, Err(Error::InvalidState(_))), "{got:?}");
}

// ---- 7. deaths are seen at once and described truly ------------------------------

#[test]
fn a_worker_that_closes_its_connection_is_reported_as_such() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let got = pool
        .submit(close_connection_and_linger, ())
        .unwrap()
        .result_timeout(LIMIT)
        .cloned();
    match got {
        Err(Error::WorkerDied { cause, .. }) => {
            assert!(cause.contains("closed its connection"), "{cause}");
            assert!(!cause.contains("SIGKILL"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.submit(square, 2).unwrap().into_result(), Ok(4));
}

#[test]
fn a_worker_death_is_seen_while_its_child_holds_the_socket() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let pid_file = std::env::temp_dir().join(format!(
        "cf-hardening-child-{}-{}",
        std::process::id(),
        unique()
    ));
    let got = pool
        .submit(
            die_while_a_child_holds_the_socket,
            pid_file.display().to_string(),
        )
        .unwrap()
        .result_timeout(LIMIT)
        .cloned();
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        // SAFETY: signalling the orphan the task left behind.
        unsafe { libc::kill(pid.trim().parse().unwrap(), libc::SIGKILL) };
        let _ = std::fs::remove_file(&pid_file);
    }
    match got {
        Err(Error::WorkerDied { cause, .. }) => assert!(cause.contains("SIGABRT"), "{cause}"),
        other => panic!("the death was not seen: {other:?}"),
    }
}

// ---- 8. running out of threads -------------------------------------------------

const LIMITED_CHILD: &str = "CF_TEST_LIMITED_ADDRESS_SPACE";

fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn set_address_space_limit(bytes: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and change this process's limits.
    unsafe {
        libc::getrlimit(libc::RLIMIT_AS, &mut limit);
        limit.rlim_cur = bytes.min(limit.rlim_max);
        libc::setrlimit(libc::RLIMIT_AS, &limit);
    }
}

/// Runs in a child process (see the test below): with the address space
/// capped just above what it uses, no thread stack can be mapped.
fn out_of_threads_scenario() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    set_address_space_limit(vm_size() + (1 << 20));
    let starved = pool
        .submit(square, 3)
        .map(|f| f.result_timeout(LIMIT).cloned());
    set_address_space_limit(libc::RLIM_INFINITY);
    match starved {
        Ok(Err(Error::SpawnFailed(reason))) | Err(Error::SpawnFailed(reason)) => {
            assert!(reason.contains("thread"), "{reason}")
        }
        other => panic!("expected SpawnFailed, got {other:?}"),
    }
    // Not broken: with resources back, the pool works.
    assert_eq!(pool.submit(square, 4).unwrap().into_result(), Ok(16));
}

#[test]
fn running_out_of_threads_is_a_typed_error_and_the_pool_recovers() {
    if std::env::var_os(LIMITED_CHILD).is_some() {
        out_of_threads_scenario();
        return;
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "running_out_of_threads_is_a_typed_error_and_the_pool_recovers",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(LIMITED_CHILD, "1")
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "the scenario failed in the child ({}):\n{}\n{}",
        child.status,
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
}

// ---- a timeout per submit ----------------------------------------------------

#[task]
fn spin_forever() {
    loop {
        std::hint::spin_loop();
    }
}

#[test]
fn a_timeout_per_submit_stops_only_that_task() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let limit = Duration::from_millis(200);
    let stuck = pool.submit_timeout(spin_forever, (), limit).unwrap();
    // Queued behind it, without a deadline of their own.
    let after: Vec<_> = (0..5u64).map(|i| pool.submit(square, i).unwrap()).collect();
    assert_eq!(settle(&stuck), Err(Error::TaskTimeout(limit)));
    for (i, f) in after.iter().enumerate() {
        assert_eq!(settle(f), Ok((i * i) as u64));
    }
    assert!(matches!(
        pool.submit_timeout(square, 1, Duration::ZERO),
        Err(Error::InvalidArgument(_))
    ));
    // A generous timeout lets a task finish.
    let fine = pool.submit_timeout(square, 12, LIMIT).unwrap();
    assert_eq!(settle(&fine), Ok(144));
}

// ---- async callers: a dropped await stops its task ------------------------------

#[test]
fn an_abandoned_await_stops_its_process_task() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let spinning = pool.submit(spin_forever, ()).unwrap().abort_on_drop();
    let waited =
        rt.block_on(async { tokio::time::timeout(Duration::from_millis(50), spinning).await });
    assert!(waited.is_err(), "the task never ends by itself");
    // The guard went with the timeout: the worker was stopped, so the only
    // worker is free again (otherwise this would wait forever).
    assert_eq!(
        pool.submit(square, 5).unwrap().result_timeout(LIMIT),
        Ok(&25)
    );
}

#[test]
fn an_awaited_guard_gives_the_value_and_into_inner_keeps_the_task() {
    let pool = ProcessPoolExecutor::new(1).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let guarded = pool.submit(square, 6).unwrap().abort_on_drop();
    assert_eq!(rt.block_on(guarded), Ok(36));
    let kept = pool.submit(square, 7).unwrap().abort_on_drop().into_inner();
    assert_eq!(settle(&kept), Ok(49));
}
