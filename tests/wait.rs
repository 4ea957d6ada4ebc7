//! `wait`: CPython's test_wait.py, ported, plus "Better than Python" item 1
//! (a cancelled future never makes `wait` hang) and mixed value types.
#![cfg(not(loom))]

mod core_util;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{Error, Future, ReturnWhen, ThreadPoolExecutor, Waitable, wait};
use core_util::{Gate, LONG, bounded, cancelled, failed, finished, pending, same};

/// Used where `wait` must return at once although an unfinished future is in
/// the set: a wait that ran into this bound instead is a bug.
const BOUND: Duration = Duration::from_secs(20);

fn contains(list: &[&dyn Waitable], f: &dyn Waitable) -> bool {
    list.iter().any(|x| same(*x, f))
}

#[test]
fn duplicates_count_once_gh_20369() {
    let f = finished(1u32);
    let w = wait([&f, &f, &f], Some(LONG), ReturnWhen::AllCompleted);
    assert_eq!(w.done.len(), 1);
    assert!(w.not_done.is_empty());

    let (_p, g) = pending::<u32>();
    let w = wait([&g, &f, &g], Some(Duration::ZERO), ReturnWhen::AllCompleted);
    assert_eq!((w.done.len(), w.not_done.len()), (1, 1));
}

#[test]
fn first_completed() {
    let (_p1, never) = pending::<u32>();
    let (p2, soon) = pending::<u32>();
    let completer = thread::spawn(move || p2.set_result(2).unwrap());
    let w = wait([&never, &soon], Some(LONG), ReturnWhen::FirstCompleted);
    assert_eq!(w.done.len(), 1);
    assert!(std::ptr::eq(w.done[0], &soon));
    assert_eq!(w.not_done.len(), 1);
    assert!(std::ptr::eq(w.not_done[0], &never));
    completer.join().unwrap();
}

#[test]
fn first_completed_with_a_pool() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let slow = pool.submit(move || g.wait()).unwrap();
    let fast = pool.submit(|| 21 * 2).unwrap();
    let all: Vec<&dyn Waitable> = vec![&slow, &fast];
    let w = wait(all, Some(LONG), ReturnWhen::FirstCompleted);
    assert_eq!(w.done.len(), 1);
    assert!(same(w.done[0], &fast));
    assert!(same(w.not_done[0], &slow));
    gate.open();
    assert_eq!(slow.result_timeout(LONG), Ok(&()));
}

#[test]
fn first_completed_some_already_completed_returns_at_once() {
    let canc = cancelled::<u32>();
    let ok = finished(1u32);
    let (_p, never) = pending::<u32>();
    let start = Instant::now();
    let w = wait(
        [&canc, &ok, &never],
        Some(BOUND),
        ReturnWhen::FirstCompleted,
    );
    assert!(
        start.elapsed() < BOUND / 2,
        "wait blocked although futures were done"
    );
    assert_eq!(w.done.len(), 2);
    assert!(std::ptr::eq(w.done[0], &canc) && std::ptr::eq(w.done[1], &ok));
    assert_eq!(w.not_done.len(), 1);
}

#[test]
fn first_exception() {
    let (_p1, never) = pending::<u32>();
    let (p2, fails) = pending::<u32>();
    let (p3, succeeds) = pending::<u32>();
    let completer = thread::spawn(move || {
        p3.set_result(3).unwrap();
        p2.set_error(Error::InvalidArgument("failed".into()))
            .unwrap();
    });
    let w = wait(
        [&never, &fails, &succeeds],
        Some(LONG),
        ReturnWhen::FirstException,
    );
    completer.join().unwrap();
    assert!(
        w.done.iter().any(|f| std::ptr::eq(*f, &fails)),
        "the failed future is done"
    );
    assert!(w.not_done.iter().any(|f| std::ptr::eq(*f, &never)));
    assert_eq!(w.done.len() + w.not_done.len(), 3);
}

#[test]
fn first_exception_with_a_panicking_task() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let slow = pool.submit(move || g.wait()).unwrap();
    let boom = pool
        .submit(|| -> u32 { panic!("divide by zero (expected in this test)") })
        .unwrap();
    let all: Vec<&dyn Waitable> = vec![&slow, &boom];
    let w = wait(all, Some(LONG), ReturnWhen::FirstException);
    assert_eq!(w.done.len(), 1);
    assert!(same(w.done[0], &boom));
    assert!(matches!(boom.exception(), Ok(Some(Error::Panicked { .. }))));
    gate.open();
    slow.result_timeout(LONG).unwrap();
}

#[test]
fn first_exception_some_already_complete() {
    let ok = finished(1u32);
    let canc = cancelled::<u32>();
    let (p, fails) = pending::<u32>();
    let (_p, never) = pending::<u32>();
    let completer = thread::spawn(move || p.set_error(Error::InvalidArgument("x".into())).unwrap());
    let w = wait(
        [&ok, &canc, &fails, &never],
        Some(LONG),
        ReturnWhen::FirstException,
    );
    completer.join().unwrap();
    assert_eq!(w.done.len(), 3);
    assert!(std::ptr::eq(w.done[0], &ok));
    assert!(std::ptr::eq(w.done[1], &canc));
    assert!(std::ptr::eq(w.done[2], &fails));
    assert_eq!(w.not_done.len(), 1);
    assert!(std::ptr::eq(w.not_done[0], &never));
}

#[test]
fn first_exception_one_already_failed_returns_at_once() {
    let err = failed::<u32>("already");
    let (_p, never) = pending::<u32>();
    let start = Instant::now();
    let w = wait([&never, &err], Some(BOUND), ReturnWhen::FirstException);
    assert!(
        start.elapsed() < BOUND / 2,
        "wait blocked although a future had failed"
    );
    assert_eq!(w.done.len(), 1);
    assert!(std::ptr::eq(w.done[0], &err));
    assert_eq!(w.not_done.len(), 1);
}

#[test]
fn first_exception_all_done_without_error_returns_at_once() {
    let a = finished(1u32);
    let b = cancelled::<u32>();
    let w = bounded("wait(FirstException) on done futures", move || {
        let w = wait([&a, &b], None, ReturnWhen::FirstException);
        (w.done.len(), w.not_done.len())
    });
    assert_eq!(w, (2, 0));
}

#[test]
fn first_exception_does_not_treat_cancelled_as_an_error() {
    let canc = cancelled::<u32>();
    let (_p, never) = pending::<u32>();
    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    let w = wait([&canc, &never], Some(timeout), ReturnWhen::FirstException);
    assert!(
        start.elapsed() >= timeout,
        "a cancelled future is not an exception"
    );
    assert_eq!((w.done.len(), w.not_done.len()), (1, 1));
}

#[test]
fn all_completed() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let ok = finished(1u32);
    let canc = cancelled::<u32>();
    let err = failed::<u32>("e");
    let f1 = pool.submit(|| 21u32 * 2).unwrap();
    let f2 = pool.submit(|| 7u32 * 6).unwrap();
    let w = wait(
        [&ok, &canc, &err, &f1, &f2],
        Some(LONG),
        ReturnWhen::AllCompleted,
    );
    assert_eq!(w.done.len(), 5);
    assert!(w.not_done.is_empty());
    assert_eq!((f1.result(), f2.result()), (Ok(&42), Ok(&42)));
}

#[test]
fn all_completed_without_timeout() {
    let (p1, f1) = pending::<u32>();
    let (p2, f2) = pending::<u32>();
    let f1 = Arc::new(f1);
    let f2 = Arc::new(f2);
    let (a, b) = (Arc::clone(&f1), Arc::clone(&f2));
    let waiter = thread::spawn(move || {
        let w = wait([a, b], None, ReturnWhen::AllCompleted);
        (w.done.len(), w.not_done.len())
    });
    p2.set_result(2).unwrap();
    p1.set_result(1).unwrap();
    assert_eq!(waiter.join().unwrap(), (2, 0));
}

#[test]
fn timeout_returns_normally_with_not_done() {
    let ok = finished(1u32);
    let err = failed::<u32>("e");
    let canc = cancelled::<u32>();
    let (_p, never) = pending::<u32>();
    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    let w = wait(
        [&ok, &err, &canc, &never],
        Some(timeout),
        ReturnWhen::AllCompleted,
    );
    assert!(start.elapsed() >= timeout);
    assert_eq!(w.done.len(), 3);
    assert_eq!(w.not_done.len(), 1);
    assert!(std::ptr::eq(w.not_done[0], &never));
    // The future is still usable afterwards.
    assert!(
        never
            .result_timeout(Duration::ZERO)
            .unwrap_err()
            .is_timeout()
    );
}

#[test]
fn zero_timeout_polls_for_every_return_when() {
    let ok = finished(1u32);
    let (_p, never) = pending::<u32>();
    for rw in [
        ReturnWhen::FirstCompleted,
        ReturnWhen::FirstException,
        ReturnWhen::AllCompleted,
    ] {
        let w = wait([&never, &ok], Some(Duration::ZERO), rw);
        assert_eq!(w.done.len(), 1, "{rw:?}");
        assert!(std::ptr::eq(w.done[0], &ok));
        assert!(std::ptr::eq(w.not_done[0], &never));
        let w = wait([&never], Some(Duration::ZERO), rw);
        assert_eq!((w.done.len(), w.not_done.len()), (0, 1), "{rw:?}");
    }
}

#[test]
fn results_are_in_input_order() {
    let futures: Vec<Future<usize>> = (0..10).map(finished).collect();
    let w = wait(&futures, Some(LONG), ReturnWhen::AllCompleted);
    let values: Vec<usize> = w.done.iter().map(|f| *f.result().unwrap()).collect();
    assert_eq!(values, (0..10).collect::<Vec<_>>());
}

#[test]
fn mixed_value_types_through_dyn_waitable() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let a: Future<u32> = pool.submit(|| 1).unwrap();
    let b: Future<String> = pool.submit(|| "two".to_string()).unwrap();
    let c: Future<Vec<u8>> = finished(vec![3]);
    let (_p, d) = pending::<()>();
    let all: Vec<&dyn Waitable> = vec![&a, &b, &c, &d];
    let w = wait(
        all.iter().copied(),
        Some(Duration::from_millis(50)),
        ReturnWhen::AllCompleted,
    );
    assert_eq!(w.done.len(), 3);
    assert!(contains(&w.done, &a) && contains(&w.done, &b) && contains(&w.done, &c));
    assert!(same(w.not_done[0], &d));
    // Boxed trait objects work as well.
    let boxed: Vec<Box<dyn Waitable>> = vec![Box::new(finished(1u8)), Box::new(finished('x'))];
    assert_eq!(wait(boxed, None, ReturnWhen::AllCompleted).done.len(), 2);
    assert_eq!(
        (a.result(), b.result().map(String::as_str)),
        (Ok(&1), Ok("two"))
    );
}

#[test]
fn cancelled_futures_never_hang_wait() {
    // Better than Python (gh-92001 and friends): cancelling a future some
    // thread waits on wakes the wait.
    let (_p1, f1) = pending::<u32>();
    let (_p2, f2) = pending::<u32>();
    let f1 = Arc::new(f1);
    let f2 = Arc::new(f2);
    let (a, b) = (Arc::clone(&f1), Arc::clone(&f2));
    let waiter = thread::spawn(move || {
        let w = wait([a, b], Some(LONG), ReturnWhen::AllCompleted);
        (w.done.len(), w.not_done.len())
    });
    assert!(f1.cancel());
    assert!(f2.cancel());
    assert_eq!(waiter.join().unwrap(), (2, 0));
}

#[test]
fn cancelled_pool_futures_never_hang_wait() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let blocker = pool.submit(move || g.wait()).unwrap();
    let queued: Vec<Arc<Future<u32>>> = (0..5)
        .map(|i| Arc::new(pool.submit(move || i).unwrap()))
        .collect();
    let for_waiter = queued.clone();
    let waiter = thread::spawn(move || {
        let w = wait(for_waiter, Some(LONG), ReturnWhen::AllCompleted);
        (w.done.len(), w.not_done.len())
    });
    for f in &queued {
        assert!(f.cancel(), "queued behind the blocker, so still pending");
    }
    assert_eq!(waiter.join().unwrap(), (5, 0));
    gate.open();
    blocker.result_timeout(LONG).unwrap();
}

#[test]
fn cancel_wakes_first_completed_and_first_exception() {
    for rw in [ReturnWhen::FirstCompleted, ReturnWhen::FirstException] {
        let (_p, f) = pending::<u32>();
        let f = Arc::new(f);
        let (_q, never) = pending::<u32>();
        let never = Arc::new(never);
        let (a, b) = (Arc::clone(&f), Arc::clone(&never));
        let waiter = thread::spawn(move || {
            // FirstException: a cancellation is no error, so this waits for
            // all; cancel the other one too below.
            let w = wait([a, b], Some(LONG), rw);
            w.done.len()
        });
        assert!(f.cancel());
        if rw == ReturnWhen::FirstException {
            assert!(never.cancel());
            assert_eq!(waiter.join().unwrap(), 2);
        } else {
            assert!(waiter.join().unwrap() >= 1);
        }
    }
}

#[test]
fn abandoned_futures_count_as_failed() {
    let (p, f) = pending::<u32>();
    let (_q, never) = pending::<u32>();
    drop(p);
    let w = bounded("wait(FirstException) on an abandoned future", move || {
        let w = wait([&f, &never], None, ReturnWhen::FirstException);
        (w.done.len(), w.not_done.len())
    });
    assert_eq!(w, (1, 1));
}

#[test]
fn empty_input_returns_at_once() {
    // Python returns at once when every future (of none) is done. A
    // FirstCompleted wait on nothing must not block forever.
    for rw in [
        ReturnWhen::AllCompleted,
        ReturnWhen::FirstException,
        ReturnWhen::FirstCompleted,
    ] {
        let w = bounded(&format!("wait(empty, None, {rw:?})"), move || {
            let w = wait(Vec::<Future<u32>>::new(), None, rw);
            (w.done.len(), w.not_done.len())
        });
        assert_eq!(w, (0, 0), "{rw:?}");
    }
}

#[test]
fn repeated_waits_on_a_long_lived_future() {
    // Each wait registers and unregisters; many timed-out waits followed by
    // a completion must still wake the last waiter.
    let (p, f) = pending::<u32>();
    let f = Arc::new(f);
    for _ in 0..100 {
        let w = wait(
            [&*f],
            Some(Duration::from_micros(10)),
            ReturnWhen::AllCompleted,
        );
        assert_eq!(w.not_done.len(), 1);
    }
    let g = Arc::clone(&f);
    let waiter = thread::spawn(move || {
        wait([&*g], Some(LONG), ReturnWhen::FirstCompleted)
            .done
            .len()
    });
    p.set_result(1).unwrap();
    assert_eq!(waiter.join().unwrap(), 1);
}

#[test]
fn concurrent_waiters_on_shared_futures() {
    let promises_and_futures: Vec<_> = (0..16).map(|_| pending::<usize>()).collect();
    let (promises, futures): (Vec<_>, Vec<_>) = promises_and_futures.into_iter().unzip();
    let futures: Arc<Vec<Future<usize>>> = Arc::new(futures);
    let waiters: Vec<_> = (0..4)
        .map(|i| {
            let fs = Arc::clone(&futures);
            thread::spawn(move || {
                let rw = [ReturnWhen::AllCompleted, ReturnWhen::FirstException][i % 2];
                let w = wait(fs.iter(), Some(LONG), rw);
                w.done.len()
            })
        })
        .collect();
    for (i, p) in promises.into_iter().enumerate() {
        p.set_result(i).unwrap();
    }
    for w in waiters {
        assert_eq!(w.join().unwrap(), 16);
    }
}

#[test]
fn huge_timeout_means_no_deadline() {
    let (p, f) = pending::<u32>();
    let f = Arc::new(f);
    let g = Arc::clone(&f);
    let waiter = thread::spawn(move || {
        wait([g], Some(Duration::MAX), ReturnWhen::AllCompleted)
            .done
            .len()
    });
    p.set_result(1).unwrap();
    assert_eq!(waiter.join().unwrap(), 1);
}
