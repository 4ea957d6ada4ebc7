//! Model-checks the future's state machine with loom: every interleaving of
//! the races where CPython had bugs (cancel vs start, completion vs callback
//! registration, completion vs a waiter, cancel vs completion), through the
//! public `Promise`/`Future`/`wait`/`as_completed` API.
//!
//! Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target-loom \
//!     LOOM_MAX_PREEMPTIONS=3 cargo test --release --test loom_future
//! ```
//!
//! Under `--cfg loom` the crate's `sync` module swaps in loom's Mutex,
//! Condvar and atomics. The thread pool uses `std::thread` and is not
//! modelled here.
#![cfg(loom)]

use concurrent_futures::{Error, Future, Promise, ReturnWhen, State, as_completed, wait};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// Runs `f` under loom with a preemption bound (overridable by
/// LOOM_MAX_PREEMPTIONS) so that the suite finishes in reasonable time.
fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

#[test]
fn cancel_races_set_running() {
    model(|| {
        let (promise, future) = Promise::<u32>::new();
        let runner = thread::spawn(move || {
            if promise.set_running() {
                promise.set_result(1).unwrap();
                true
            } else {
                // Cancelled first: the task must not run and cannot complete.
                assert!(promise.set_result(1).is_err());
                false
            }
        });
        let cancelled = future.cancel();
        let ran = runner.join().unwrap();
        assert!(cancelled != ran, "exactly one of cancel and start wins");
        if cancelled {
            assert_eq!(future.state(), State::Cancelled);
            assert_eq!(future.result(), Err(Error::Cancelled));
        } else {
            assert_eq!(future.result(), Ok(&1));
        }
    });
}

#[test]
fn cancel_races_completion() {
    model(|| {
        let (promise, future) = Promise::<u32>::new();
        let completer = thread::spawn(move || promise.set_result(7).is_ok());
        let cancelled = future.cancel();
        let completed = completer.join().unwrap();
        assert!(
            cancelled != completed,
            "exactly one of cancel and completion wins"
        );
        match future.result() {
            Ok(v) => {
                assert!(completed);
                assert_eq!(*v, 7);
            }
            Err(e) => {
                assert!(cancelled);
                assert_eq!(e, Error::Cancelled);
            }
        }
    });
}

#[test]
fn completion_races_add_done_callback() {
    model(|| {
        let (promise, future) = Promise::<u32>::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let completer = thread::spawn(move || promise.set_result(5).unwrap());
        let c = Arc::clone(&calls);
        future.add_done_callback(move |f| {
            assert_eq!(f.result(), Ok(&5), "the callback sees the value");
            c.fetch_add(1, Ordering::SeqCst);
        });
        completer.join().unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the callback ran exactly once"
        );
        assert_eq!(future.into_result(), Ok(5));
    });
}

#[test]
fn cancel_races_add_done_callback() {
    model(|| {
        let (_promise, future) = Promise::<u32>::new();
        let future = std::sync::Arc::new(future);
        let calls = Arc::new(AtomicUsize::new(0));
        let f2 = std::sync::Arc::clone(&future);
        let canceller = thread::spawn(move || assert!(f2.cancel()));
        let c = Arc::clone(&calls);
        future.add_done_callback(move |f| {
            assert!(f.cancelled());
            c.fetch_add(1, Ordering::SeqCst);
        });
        canceller.join().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn completion_races_a_waiter() {
    model(|| {
        let (promise, future) = Promise::<u32>::new();
        let completer = thread::spawn(move || {
            assert!(promise.set_running());
            promise.set_result(42).unwrap();
        });
        assert_eq!(future.result(), Ok(&42));
        completer.join().unwrap();
    });
}

#[test]
fn completion_races_into_result_with_a_callback() {
    // The callback borrows the value while `into_result` wants to move it
    // out: the taker must wait for the callback.
    model(|| {
        let (promise, future) = Promise::<String>::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        future.add_done_callback(move |f| {
            assert_eq!(f.result().map(String::as_str), Ok("v"));
            c.fetch_add(1, Ordering::SeqCst);
        });
        let completer = thread::spawn(move || promise.set_result("v".to_string()).unwrap());
        assert_eq!(future.into_result(), Ok("v".to_string()));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "taken only after the callback ran"
        );
        completer.join().unwrap();
    });
}

#[test]
fn abandoned_promise_races_a_waiter() {
    model(|| {
        let (promise, future) = Promise::<u32>::new();
        let dropper = thread::spawn(move || drop(promise));
        assert_eq!(future.result(), Err(Error::Abandoned));
        dropper.join().unwrap();
    });
}

#[test]
fn abandoned_promise_races_cancel() {
    model(|| {
        let (promise, future) = Promise::<u32>::new();
        let dropper = thread::spawn(move || drop(promise));
        let cancelled = future.cancel();
        dropper.join().unwrap();
        match future.result() {
            Err(Error::Cancelled) => assert!(cancelled),
            Err(Error::Abandoned) => assert!(!cancelled),
            other => panic!("unexpected {other:?}"),
        }
    });
}

#[test]
fn abort_with_handler_races_completion() {
    model(|| {
        let (promise, future) = Promise::<u32>::new();
        assert!(promise.set_running());
        let stops = Arc::new(AtomicUsize::new(0));
        let s = Arc::clone(&stops);
        promise.set_abort_handler(move || {
            s.fetch_add(1, Ordering::SeqCst);
        });
        let completer = thread::spawn(move || promise.set_result(3).is_ok());
        let aborted = future.abort();
        let completed = completer.join().unwrap();
        assert!(aborted != completed);
        assert_eq!(stops.load(Ordering::SeqCst), usize::from(aborted));
        if aborted {
            assert_eq!(future.result(), Err(Error::Cancelled));
        } else {
            assert_eq!(future.result(), Ok(&3));
        }
    });
}

#[test]
fn wait_all_completed_races_completion_and_cancel() {
    model(|| {
        let (p1, f1) = Promise::<u32>::new();
        let (_p2, f2) = Promise::<u32>::new();
        let f2 = std::sync::Arc::new(f2);
        let f2c = std::sync::Arc::clone(&f2);
        let completer = thread::spawn(move || p1.set_result(1).unwrap());
        let canceller = thread::spawn(move || assert!(f2c.cancel()));
        let w = wait([&f1, &*f2], None, ReturnWhen::AllCompleted);
        assert_eq!((w.done.len(), w.not_done.len()), (2, 0));
        completer.join().unwrap();
        canceller.join().unwrap();
    });
}

#[test]
fn wait_first_exception_races_failure() {
    model(|| {
        let (p1, f1) = Promise::<u32>::new();
        let (_p2, f2) = Promise::<u32>::new();
        let failer =
            thread::spawn(move || p1.set_error(Error::InvalidArgument("x".into())).unwrap());
        let w = wait([&f1, &f2], None, ReturnWhen::FirstException);
        assert_eq!(w.done.len(), 1);
        assert!(std::ptr::eq(w.done[0], &f1));
        failer.join().unwrap();
    });
}

#[test]
fn wait_first_completed_races_two_completions() {
    model(|| {
        let (p1, f1) = Promise::<u32>::new();
        let (p2, f2) = Promise::<u32>::new();
        let t1 = thread::spawn(move || p1.set_result(1).unwrap());
        let t2 = thread::spawn(move || p2.set_result(2).unwrap());
        let w = wait([&f1, &f2], None, ReturnWhen::FirstCompleted);
        assert!(!w.done.is_empty());
        t1.join().unwrap();
        t2.join().unwrap();
    });
}

#[test]
fn as_completed_races_completion_and_cancel() {
    model(|| {
        let (p1, f1) = Promise::<u32>::new();
        let (_p2, f2) = Promise::<u32>::new();
        let f2 = std::sync::Arc::new(f2);
        let f2c = std::sync::Arc::clone(&f2);
        let completer = thread::spawn(move || p1.set_result(1).unwrap());
        let canceller = thread::spawn(move || assert!(f2c.cancel()));
        let yielded: Vec<&Future<u32>> = as_completed([&f1, &*f2], None)
            .map(|f| f.unwrap())
            .collect();
        assert_eq!(yielded.len(), 2, "each future once, the cancelled one too");
        assert!(!std::ptr::eq(yielded[0], yielded[1]));
        completer.join().unwrap();
        canceller.join().unwrap();
    });
}

#[test]
fn awaiting_races_completion() {
    use std::pin::Pin;
    use std::task::{Context, Poll, Wake, Waker};

    struct Flag(AtomicUsize);
    impl Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    model(|| {
        let (promise, mut future) = Promise::<u32>::new();
        let flag = std::sync::Arc::new(Flag(AtomicUsize::new(0)));
        let waker = Waker::from(std::sync::Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let completer = thread::spawn(move || promise.set_result(9).unwrap());
        match Pin::new(&mut future).poll(&mut cx) {
            Poll::Ready(v) => assert_eq!(v, Ok(9)),
            Poll::Pending => {
                completer.join().unwrap();
                // Pending must be followed by a wake-up once it is ready.
                assert!(flag.0.load(Ordering::SeqCst) >= 1, "lost wake-up");
                assert_eq!(Pin::new(&mut future).poll(&mut cx), Poll::Ready(Ok(9)));
                return;
            }
        }
        completer.join().unwrap();
    });
}
