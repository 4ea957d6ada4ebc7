//! Every `Duration` the API accepts works: a timeout too large for a
//! deadline (`Duration::MAX`) or large enough to sit near the clock's limit
//! means "no deadline" in effect, never a panic, an overflow or an early
//! timeout. The futures here complete from another thread, so each test
//! proves that the wait returns the value.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use concurrent_futures::{
    Error, Future, MapOptions, Promise, ReturnWhen, ThreadPoolExecutor, as_completed, wait,
};

/// Timeouts that cannot be added to `Instant::now()`, and some that can but
/// leave a deadline centuries away.
const HUGE: [Duration; 5] = [
    Duration::MAX,
    Duration::new(u64::MAX, 0),
    Duration::from_secs(i64::MAX as u64),
    Duration::from_secs(i64::MAX as u64 / 2),
    Duration::from_secs(1 << 40),
];

/// A future that another thread completes with `outcome`.
fn completed_elsewhere(outcome: Result<u32, Error>) -> (Future<u32>, thread::JoinHandle<()>) {
    let (promise, future): (Promise<u32>, Future<u32>) = Promise::new();
    let completer = thread::spawn(move || promise.set_outcome(outcome).unwrap());
    (future, completer)
}

#[test]
fn future_waits_with_huge_timeouts() {
    for timeout in HUGE {
        let (f, t) = completed_elsewhere(Ok(7));
        assert!(f.wait_timeout(timeout), "{timeout:?}");
        t.join().unwrap();

        let (f, t) = completed_elsewhere(Ok(8));
        assert_eq!(f.result_timeout(timeout), Ok(&8), "{timeout:?}");
        t.join().unwrap();

        let (f, t) = completed_elsewhere(Ok(9));
        assert_eq!(f.exception_timeout(timeout), Ok(None), "{timeout:?}");
        t.join().unwrap();

        let error = Error::InvalidArgument("boom".into());
        let (f, t) = completed_elsewhere(Err(error.clone()));
        assert_eq!(f.exception_timeout(timeout), Ok(Some(error)), "{timeout:?}");
        t.join().unwrap();
    }
}

#[test]
fn wait_with_huge_timeouts() {
    for timeout in HUGE {
        for return_when in [
            ReturnWhen::FirstCompleted,
            ReturnWhen::FirstException,
            ReturnWhen::AllCompleted,
        ] {
            let (f, t) = completed_elsewhere(Ok(1));
            let f = Arc::new(f);
            let waited = wait([Arc::clone(&f)], Some(timeout), return_when);
            assert_eq!(
                (waited.done.len(), waited.not_done.len()),
                (1, 0),
                "{timeout:?} {return_when:?}"
            );
            assert_eq!(f.result_timeout(timeout), Ok(&1));
            t.join().unwrap();
        }
    }
}

#[test]
fn as_completed_with_huge_timeouts() {
    for timeout in HUGE {
        let (f, t) = completed_elsewhere(Ok(3));
        let (g, u) = completed_elsewhere(Ok(4));
        let mut got: Vec<u32> = as_completed([f, g], Some(timeout))
            .map(|f| *f.unwrap().result_timeout(timeout).unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, [3, 4], "{timeout:?}");
        t.join().unwrap();
        u.join().unwrap();
    }
}

#[test]
fn thread_pool_map_with_huge_timeouts() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    for timeout in HUGE {
        for options in [
            MapOptions::new().timeout(timeout),
            MapOptions::new().timeout(timeout).buffersize(1),
            MapOptions::new().timeout(timeout).chunksize(2),
        ] {
            let got: Vec<_> = pool
                .map_with(|x: u32| x * 2, 0..5, options)
                .unwrap()
                .collect();
            assert_eq!(got, [Ok(0), Ok(2), Ok(4), Ok(6), Ok(8)], "{timeout:?}");
        }
        let f = pool.submit(|| 5u32).unwrap();
        assert_eq!(f.result_timeout(timeout), Ok(&5));
        assert!(f.wait_timeout(timeout));
        assert_eq!(f.exception_timeout(timeout), Ok(None));
    }
}

#[cfg(all(feature = "process", unix))]
mod process {
    use super::*;
    use concurrent_futures::{ProcessPoolExecutor, task};

    #[task]
    fn triple(n: u32) -> u32 {
        n * 3
    }

    #[test]
    fn process_pool_map_and_results_with_huge_timeouts() {
        let pool = ProcessPoolExecutor::new(1).unwrap();
        for timeout in HUGE {
            for options in [
                MapOptions::new().timeout(timeout),
                MapOptions::new().timeout(timeout).buffersize(1),
                MapOptions::new().timeout(timeout).chunksize(2),
            ] {
                let got: Vec<_> = pool.map_with(triple, 0..5, options).unwrap().collect();
                assert_eq!(got, [Ok(0), Ok(3), Ok(6), Ok(9), Ok(12)], "{timeout:?}");
            }
            let f = pool.submit(triple, 5).unwrap();
            assert_eq!(f.result_timeout(timeout), Ok(&15));
            assert!(f.wait_timeout(timeout));
            assert_eq!(f.exception_timeout(timeout), Ok(None));
        }
    }
}
