//! Worker initializers: CPython's test_init.py, ported. A successful
//! initializer runs once in each worker before its tasks; a failing one
//! breaks the pool: queued futures fail with `BrokenPool`, later submits too.
#![cfg(not(loom))]

mod core_util;

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use concurrent_futures::{Error, Future, ThreadPoolExecutor};
use core_util::{Gate, LONG, bounded};

thread_local! {
    static INITIALIZED: Cell<bool> = const { Cell::new(false) };
}

#[test]
fn initializer_runs_in_each_worker() {
    let inits = Arc::new(AtomicUsize::new(0));
    let names = Arc::new(Mutex::new(Vec::new()));
    let (i, n) = (Arc::clone(&inits), Arc::clone(&names));
    let pool = ThreadPoolExecutor::builder()
        .max_workers(4)
        .thread_name_prefix("initpool")
        .initializer(move || {
            i.fetch_add(1, Ordering::SeqCst);
            n.lock()
                .unwrap()
                .push(std::thread::current().name().unwrap().to_owned());
            INITIALIZED.with(|c| c.set(true));
        })
        .build()
        .unwrap();
    assert_eq!(inits.load(Ordering::SeqCst), 0, "no worker yet");
    // Four tasks meet at a barrier: four workers, each initialised.
    let barrier = Arc::new(Barrier::new(4));
    let futures: Vec<Future<bool>> = (0..4)
        .map(|_| {
            let b = Arc::clone(&barrier);
            pool.submit(move || {
                b.wait();
                INITIALIZED.with(Cell::get)
            })
            .unwrap()
        })
        .collect();
    for f in &futures {
        assert_eq!(f.result_timeout(LONG), Ok(&true));
    }
    // More tasks on the same workers do not initialise again.
    for _ in 0..20 {
        assert_eq!(
            pool.submit(|| INITIALIZED.with(Cell::get))
                .unwrap()
                .result_timeout(LONG),
            Ok(&true)
        );
    }
    pool.shutdown(true, false);
    assert_eq!(inits.load(Ordering::SeqCst), 4);
    let mut names = names.lock().unwrap().clone();
    names.sort();
    assert_eq!(
        names,
        ["initpool_0", "initpool_1", "initpool_2", "initpool_3"]
    );
}

fn assert_broken(result: Result<&u32, Error>) -> String {
    match result {
        Err(Error::BrokenPool(reason)) => reason,
        other => panic!("expected BrokenPool, got {other:?}"),
    }
}

#[test]
fn panicking_initializer_breaks_the_pool() {
    let release = Gate::new();
    let r = release.clone();
    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .initializer(move || {
            // Hold the failure until every submit below is queued.
            r.wait();
            panic!("initializer failed (expected in this test)");
        })
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let futures: Vec<Future<u32>> = (0..5)
        .map(|i| {
            let ran = Arc::clone(&ran);
            pool.submit(move || {
                ran.fetch_add(1, Ordering::SeqCst);
                i
            })
            .unwrap()
        })
        .collect();
    release.open();
    for f in &futures {
        let reason = assert_broken(f.result_timeout(LONG));
        assert!(reason.contains("initializer"), "{reason}");
        assert!(
            reason.contains("initializer failed (expected in this test)"),
            "{reason}"
        );
    }
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "no task runs on a broken pool"
    );
    // Later submits fail at once.
    match pool.submit(|| 1u32) {
        Err(Error::BrokenPool(reason)) => assert!(reason.contains("initializer")),
        other => panic!("expected BrokenPool, got {other:?}"),
    }
    assert!(matches!(
        pool.map(|x: u32| x, [1, 2, 3])
            .map(|m| m.collect::<Vec<_>>()),
        Err(Error::BrokenPool(_))
    ));
    assert!(Error::BrokenPool("why".into()).to_string().contains("why"));
    bounded("shutdown of a broken pool", move || {
        pool.shutdown(true, true)
    });
}

#[test]
fn failing_try_initializer_breaks_the_pool() {
    let release = Gate::new();
    let r = release.clone();
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .try_initializer(move || {
            r.wait();
            Err::<(), _>("no database connection")
        })
        .build()
        .unwrap();
    let futures: Vec<Future<u32>> = (0..3).map(|i| pool.submit(move || i).unwrap()).collect();
    release.open();
    for f in &futures {
        let reason = assert_broken(f.result_timeout(LONG));
        assert!(reason.contains("no database connection"), "{reason}");
    }
    assert!(matches!(pool.submit(|| 0u32), Err(Error::BrokenPool(_))));
    bounded("drop of a broken pool", move || drop(pool));
}

#[test]
fn initializer_failing_later_in_a_second_worker() {
    // The first worker initialises fine and runs tasks; the second fails:
    // from then on the pool is broken.
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .initializer(move || {
            if c.fetch_add(1, Ordering::SeqCst) == 1 {
                panic!("second initializer fails (expected in this test)");
            }
        })
        .build()
        .unwrap();
    let gate = Gate::new();
    let started = Gate::new();
    let (g, st) = (gate.clone(), started.clone());
    let first = pool
        .submit(move || {
            st.open();
            g.wait();
        })
        .unwrap();
    started.wait();
    // The first worker is busy, so this starts the second, which breaks.
    let second = pool.submit(|| 2u32).unwrap();
    assert_broken(second.result_timeout(LONG));
    gate.open();
    // The task that was already running finishes normally.
    assert_eq!(first.result_timeout(LONG), Ok(&()));
    assert!(matches!(pool.submit(|| 3u32), Err(Error::BrokenPool(_))));
}

#[test]
fn broken_pool_fails_scoped_tasks_too() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .initializer(|| panic!("initializer fails (expected in this test)"))
        .build()
        .unwrap();
    let first = pool.submit(|| 1u32).unwrap();
    assert_broken(first.result_timeout(LONG));
    let data = [1u32, 2, 3];
    pool.scope(|s| {
        let r = s.submit(|| data.iter().sum::<u32>());
        assert!(matches!(r, Err(Error::BrokenPool(_))));
    });
}

#[test]
fn submit_to_a_broken_pool_after_shutdown_reports_broken() {
    // Python checks "broken" before "shut down"; so does the process pool.
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .initializer(|| panic!("initializer fails (expected in this test)"))
        .build()
        .unwrap();
    let first = pool.submit(|| 1u32).unwrap();
    assert_broken(first.result_timeout(LONG));
    let pool = bounded("shutdown of a broken pool", move || {
        pool.shutdown(true, false);
        pool
    });
    match pool.submit(|| 2u32) {
        Err(Error::BrokenPool(reason)) => assert!(reason.contains("initializer"), "{reason}"),
        other => panic!("expected BrokenPool after shutdown, got {other:?}"),
    }
    assert!(matches!(
        pool.map(|x: u32| x, [1, 2]).map(|m| m.count()),
        Err(Error::BrokenPool(_))
    ));
}

/// Set in the child process of `a_broken_pool_says_why_on_stderr`.
const STDERR_CHILD: &str = "CONCURRENT_FUTURES_TEST_BROKEN_STDERR";

/// Python logs a failed initializer: a program that never looks at its
/// futures' errors still learns why its pool broke. Here the pool says so
/// once on stderr (run in a child process, whose stderr the test reads).
#[test]
fn a_broken_pool_says_why_on_stderr() {
    if std::env::var_os(STDERR_CHILD).is_some() {
        let pool = ThreadPoolExecutor::builder()
            .max_workers(2)
            .thread_name_prefix("loud")
            .try_initializer(|| Err::<(), _>("no database connection"))
            .build()
            .unwrap();
        // Each submit fails, or its future does, once the pool broke.
        for i in 0..3u32 {
            match pool.submit(move || i) {
                Ok(f) => drop(assert_broken(f.result_timeout(LONG))),
                Err(e) => assert!(matches!(e, Error::BrokenPool(_)), "{e:?}"),
            }
        }
        return;
    }
    let name = "a_broken_pool_says_why_on_stderr";
    let exe = std::env::current_exe().unwrap();
    let output = bounded("the child test", move || {
        std::process::Command::new(exe)
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(STDERR_CHILD, "1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}");
    let said: Vec<&str> = stderr.lines().filter(|l| l.contains("is broken")).collect();
    assert_eq!(said.len(), 1, "said once: {stderr}");
    assert!(said[0].contains("thread pool loud"), "{stderr}");
    assert!(said[0].contains("no database connection"), "{stderr}");
}
