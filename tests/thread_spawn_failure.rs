//! A worker thread that cannot start: the submit that needed it fails with a
//! typed error (no panic, nothing left queued), a job that a live worker
//! can take still runs, and the pool stays usable.
//!
//! Threads really fail to start here, with no test hook: the test runs
//! itself again as a child process (this test binary, `--exact` this test),
//! and the child lowers its address-space limit (`RLIMIT_AS`, which binds
//! root too, unlike `RLIMIT_NPROC`) so that a new thread's stack (64 MiB,
//! through `RUST_MIN_STACK`) no longer fits, while the small allocations
//! of the code under test still do.
#![cfg(all(not(loom), target_os = "linux", feature = "process"))]

mod core_util;

use std::process::Command;

use concurrent_futures::{Error, ThreadPoolExecutor};
use core_util::{Gate, LONG, bounded};

/// Marks the child process.
const CHILD: &str = "CONCURRENT_FUTURES_SPAWN_FAILURE_CHILD";
const TEST: &str = "submit_when_no_thread_can_start";
/// Each new thread's stack, in the child: far above the headroom below.
const STACK: usize = 64 << 20;
/// Address space the child may still grow by once limited.
const HEADROOM: u64 = 16 << 20;

#[test]
fn submit_when_no_thread_can_start() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(exe);
    command
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("RUST_MIN_STACK", STACK.to_string());
    let output = bounded("the child test process", move || command.output().unwrap());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "child failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}

fn child() {
    // Nothing runs yet: the submit must fail, typed, and leave nothing
    // queued (the pool is empty afterwards, and usable).
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let limit = Limit::tight();
    match pool.submit(|| 1u32) {
        Err(e @ Error::SpawnFailed(_)) => {
            let Error::SpawnFailed(reason) = &e else {
                unreachable!()
            };
            assert!(
                reason.starts_with("could not start a worker thread: "),
                "{reason}"
            );
            // The chain goes down to the system's error.
            let cause = std::error::Error::source(&e).expect("the cause");
            let io = cause.source().expect("the io error");
            assert!(
                io.to_string().contains("Resource temporarily unavailable"),
                "{io}"
            );
        }
        other => panic!("expected a could-not-start error, got {other:?}"),
    }
    assert_eq!(pool.threads_started(), 0);
    drop(limit);
    let f = pool.submit(|| 2u32).expect("the pool is not broken");
    assert_eq!(f.result_timeout(LONG), Ok(&2));
    drop(pool);

    // One worker runs (busy): the job that could not get a second worker
    // is queued, and the first worker runs it once free.
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let (started, release) = (Gate::new(), Gate::new());
    let (s, r) = (started.clone(), release.clone());
    let busy = pool
        .submit(move || {
            s.open();
            r.wait();
            1u32
        })
        .unwrap();
    started.wait();
    let limit = Limit::tight();
    let queued = pool.submit(|| 2u32).expect("a live worker can run it");
    assert_eq!(pool.threads_started(), 1, "no second thread could start");
    release.open();
    assert_eq!(busy.result_timeout(LONG), Ok(&1));
    assert_eq!(queued.result_timeout(LONG), Ok(&2));
    drop(limit);
    pool.shutdown(true, false);
}

/// Lowers the soft address-space limit to what is mapped now plus
/// [`HEADROOM`] and checks that a thread can no longer start; restores the
/// limit when dropped.
struct Limit(libc::rlimit);

impl Limit {
    fn tight() -> Limit {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().next().unwrap().parse().unwrap();
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `old` is a valid rlimit to write to.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) }, 0);
        let new = libc::rlimit {
            rlim_cur: pages * page + HEADROOM,
            rlim_max: old.rlim_max,
        };
        // SAFETY: `new` is a valid rlimit; lowering the soft limit is allowed.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &new) }, 0);
        let limit = Limit(old);
        // Without this, the test would pass without testing anything.
        let probe = std::thread::Builder::new().spawn(|| ());
        assert!(
            probe.is_err(),
            "the limit did not stop a thread from starting"
        );
        limit
    }
}

impl Drop for Limit {
    fn drop(&mut self) {
        // SAFETY: restores the limit read in `tight` (soft <= hard).
        unsafe { libc::setrlimit(libc::RLIMIT_AS, &self.0) };
    }
}
