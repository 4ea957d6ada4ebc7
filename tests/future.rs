//! `Future` and `Promise`: CPython's test_future.py, ported, plus the
//! crate's own guarantees (abandoned promises, abort, taking the value out).
//!
//! Each state is built by hand with a `Promise`: pending, running, cancelled,
//! finished with a value, finished with an error.
#![cfg(not(loom))]

mod core_util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use concurrent_futures::{Error, Future, Promise, State};
use core_util::{DropSignal, Gate, LONG, cancelled, failed, finished, pending, running};

fn invalid(message: &str) -> Error {
    Error::InvalidArgument(message.to_owned())
}

// ---- the truth tables over the five states ---------------------------------

#[test]
fn state_reports_each_state() {
    let (_p1, pend) = pending::<u32>();
    let (_p2, run) = running::<u32>();
    assert_eq!(pend.state(), State::Pending);
    assert_eq!(run.state(), State::Running);
    assert_eq!(cancelled::<u32>().state(), State::Cancelled);
    assert_eq!(finished(1u32).state(), State::Finished);
    assert_eq!(failed::<u32>("x").state(), State::Finished);
}

#[test]
fn cancel_truth_table() {
    // pending -> cancelled, true
    let (p, f) = pending::<u32>();
    assert!(f.cancel());
    assert_eq!(f.state(), State::Cancelled);
    assert!(p.is_cancelled());
    // running -> false, still running
    let (_p, f) = running::<u32>();
    assert!(!f.cancel());
    assert_eq!(f.state(), State::Running);
    // cancelled -> true again, still cancelled
    let f = cancelled::<u32>();
    assert!(f.cancel());
    assert!(f.cancel());
    assert_eq!(f.state(), State::Cancelled);
    // finished with a value or an error -> false, unchanged
    let f = finished(7u32);
    assert!(!f.cancel());
    assert_eq!(f.result(), Ok(&7));
    let f = failed::<u32>("bad");
    assert!(!f.cancel());
    assert_eq!(f.result(), Err(invalid("bad")));
}

#[test]
fn cancelled_done_running_truth_table() {
    let (_p1, pend) = pending::<u32>();
    let (_p2, run) = running::<u32>();
    let canc = cancelled::<u32>();
    let ok = finished(1u32);
    let err = failed::<u32>("e");
    //                          cancelled  done   running
    let table = [
        (&pend, false, false, false),
        (&run, false, false, true),
        (&canc, true, true, false),
        (&ok, false, true, false),
        (&err, false, true, false),
    ];
    for (i, (f, c, d, r)) in table.into_iter().enumerate() {
        assert_eq!(f.cancelled(), c, "cancelled() in row {i}");
        assert_eq!(f.done(), d, "done() in row {i}");
        assert_eq!(f.running(), r, "running() in row {i}");
    }
}

#[test]
fn result_with_timeout_zero_truth_table() {
    let (_p1, pend) = pending::<u32>();
    let (_p2, run) = running::<u32>();
    assert!(
        pend.result_timeout(Duration::ZERO)
            .unwrap_err()
            .is_timeout()
    );
    assert!(run.result_timeout(Duration::ZERO).unwrap_err().is_timeout());
    assert_eq!(
        cancelled::<u32>().result_timeout(Duration::ZERO),
        Err(Error::Cancelled)
    );
    assert_eq!(finished(42u32).result_timeout(Duration::ZERO), Ok(&42));
    assert_eq!(
        failed::<u32>("boom").result_timeout(Duration::ZERO),
        Err(invalid("boom"))
    );
}

#[test]
fn result_blocking_on_done_states() {
    assert_eq!(cancelled::<u32>().result(), Err(Error::Cancelled));
    assert_eq!(finished(42u32).result(), Ok(&42));
    assert_eq!(failed::<u32>("boom").result(), Err(invalid("boom")));
    // The value can be read any number of times.
    let f = finished(String::from("v"));
    for _ in 0..3 {
        assert_eq!(f.result().map(String::as_str), Ok("v"));
    }
    // An error too (errors are cloned out).
    let f = failed::<u32>("again");
    for _ in 0..3 {
        assert_eq!(f.result(), Err(invalid("again")));
    }
}

#[test]
fn exception_truth_table() {
    let (_p1, pend) = pending::<u32>();
    let (_p2, run) = running::<u32>();
    assert!(
        pend.exception_timeout(Duration::ZERO)
            .unwrap_err()
            .is_timeout()
    );
    assert!(
        run.exception_timeout(Duration::ZERO)
            .unwrap_err()
            .is_timeout()
    );
    assert_eq!(cancelled::<u32>().exception(), Err(Error::Cancelled));
    assert_eq!(
        cancelled::<u32>().exception_timeout(Duration::ZERO),
        Err(Error::Cancelled)
    );
    assert_eq!(finished(1u32).exception(), Ok(None));
    assert_eq!(finished(1u32).exception_timeout(Duration::ZERO), Ok(None));
    assert_eq!(failed::<u32>("x").exception(), Ok(Some(invalid("x"))));
    assert_eq!(
        failed::<u32>("x").exception_timeout(Duration::ZERO),
        Ok(Some(invalid("x")))
    );
}

#[test]
fn into_result_truth_table() {
    assert_eq!(cancelled::<u32>().into_result(), Err(Error::Cancelled));
    assert_eq!(finished(vec![1, 2]).into_result(), Ok(vec![1, 2]));
    assert_eq!(failed::<u32>("x").into_result(), Err(invalid("x")));
}

#[test]
fn timeout_error_is_timeout_and_says_so() {
    let (_p, f) = pending::<u32>();
    let e = f.result_timeout(Duration::from_millis(1)).unwrap_err();
    assert!(e.is_timeout());
    assert!(!e.is_cancelled());
    assert!(e.to_string().contains("timed out"), "{e}");
}

// ---- waiting ---------------------------------------------------------------

#[test]
fn result_timeout_leaves_future_usable() {
    let (p, f) = pending::<u32>();
    assert!(
        f.result_timeout(Duration::from_millis(10))
            .unwrap_err()
            .is_timeout()
    );
    assert!(
        f.exception_timeout(Duration::from_millis(10))
            .unwrap_err()
            .is_timeout()
    );
    assert!(!f.wait_timeout(Duration::from_millis(10)));
    assert_eq!(f.state(), State::Pending);
    // Later, the value arrives and the same future delivers it.
    p.set_result(5).unwrap();
    assert_eq!(f.result_timeout(Duration::ZERO), Ok(&5));
    assert_eq!(f.result(), Ok(&5));
    assert!(f.wait_timeout(Duration::ZERO));
    assert_eq!(f.into_result(), Ok(5));
}

#[test]
fn result_timeout_then_cancel_still_works() {
    let (_p, f) = pending::<u32>();
    assert!(f.result_timeout(Duration::ZERO).unwrap_err().is_timeout());
    assert!(f.cancel());
    assert_eq!(f.result_timeout(Duration::ZERO), Err(Error::Cancelled));
}

#[test]
fn result_with_success_from_another_thread() {
    let (p, f) = pending::<u64>();
    let t = thread::spawn(move || {
        assert!(p.set_running());
        p.set_result(42).unwrap();
    });
    assert_eq!(f.result_timeout(LONG), Ok(&42));
    t.join().unwrap();
}

#[test]
fn result_with_cancel_from_another_thread() {
    let (_p, f) = pending::<u64>();
    let f = Arc::new(f);
    let f2 = Arc::clone(&f);
    let t = thread::spawn(move || assert!(f2.cancel()));
    assert_eq!(f.result_timeout(LONG), Err(Error::Cancelled));
    t.join().unwrap();
}

#[test]
fn exception_with_success_and_with_error_from_another_thread() {
    let (p, f) = pending::<u64>();
    let t = thread::spawn(move || p.set_error(invalid("remote")).unwrap());
    assert_eq!(f.exception_timeout(LONG), Ok(Some(invalid("remote"))));
    t.join().unwrap();

    let (p, f) = pending::<u64>();
    let t = thread::spawn(move || p.set_result(3).unwrap());
    assert_eq!(f.exception_timeout(LONG), Ok(None));
    t.join().unwrap();
}

#[test]
fn many_threads_wait_on_one_future() {
    let (p, f) = pending::<String>();
    let f = Arc::new(f);
    let gate = Arc::new(std::sync::Barrier::new(9));
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let f = Arc::clone(&f);
            let gate = Arc::clone(&gate);
            thread::spawn(move || {
                gate.wait();
                f.result_timeout(LONG).cloned()
            })
        })
        .collect();
    gate.wait();
    p.set_result("shared".into()).unwrap();
    for w in waiters {
        assert_eq!(w.join().unwrap(), Ok("shared".to_string()));
    }
}

#[test]
fn into_result_blocks_until_completion() {
    let (p, f) = pending::<Vec<u8>>();
    let t = thread::spawn(move || f.into_result());
    p.set_result(vec![9; 3]).unwrap();
    assert_eq!(t.join().unwrap(), Ok(vec![9; 3]));
}

#[test]
fn value_is_dropped_with_the_future() {
    let (tx, rx) = mpsc::channel();
    let f = finished(DropSignal::new(7, &tx));
    let (p2, f2) = pending::<DropSignal>();
    drop(f);
    assert_eq!(rx.recv_timeout(LONG), Ok(7));
    // The promise side holding the core does not keep a taken value alive.
    p2.set_result(DropSignal::new(8, &tx)).unwrap();
    let v = f2.into_result().unwrap();
    assert!(rx.try_recv().is_err());
    drop(v);
    assert_eq!(rx.recv_timeout(LONG), Ok(8));
    drop(p2);
    assert!(
        rx.try_recv().is_err(),
        "the value must be dropped exactly once"
    );
}

// ---- completing ------------------------------------------------------------

#[test]
fn completing_twice_is_invalid_state() {
    let (p, f) = pending::<u32>();
    p.set_result(1).unwrap();
    assert!(matches!(p.set_result(2), Err(Error::InvalidState(_))));
    assert!(matches!(
        p.set_error(invalid("late")),
        Err(Error::InvalidState(_))
    ));
    assert!(matches!(p.set_outcome(Ok(3)), Err(Error::InvalidState(_))));
    assert_eq!(f.result(), Ok(&1), "the first value is never overwritten");

    let (p, f) = pending::<u32>();
    p.set_error(invalid("first")).unwrap();
    assert!(matches!(
        p.set_error(invalid("second")),
        Err(Error::InvalidState(_))
    ));
    assert!(matches!(p.set_result(2), Err(Error::InvalidState(_))));
    assert_eq!(f.result(), Err(invalid("first")));
}

#[test]
fn completing_a_cancelled_future_is_invalid_state() {
    let (p, f) = pending::<u32>();
    assert!(f.cancel());
    assert!(matches!(p.set_result(1), Err(Error::InvalidState(_))));
    assert!(matches!(
        p.set_error(invalid("x")),
        Err(Error::InvalidState(_))
    ));
    assert_eq!(f.result(), Err(Error::Cancelled));
}

#[test]
fn set_running_truth_table() {
    let (p, f) = pending::<u32>();
    assert!(p.set_running());
    assert!(f.running());
    assert!(!p.set_running(), "not pending any more");
    p.set_result(1).unwrap();
    assert!(!p.set_running());
    assert_eq!(f.state(), State::Finished);

    let (p, f) = pending::<u32>();
    assert!(f.cancel());
    assert!(!p.set_running(), "a cancelled task must not run");
    assert_eq!(f.state(), State::Cancelled);
}

#[test]
fn finishing_from_pending_without_set_running_is_allowed() {
    let (p, f) = pending::<u32>();
    p.set_outcome(Err(invalid("direct"))).unwrap();
    assert_eq!(f.exception(), Ok(Some(invalid("direct"))));
}

#[test]
fn promise_reports_done_and_cancelled() {
    let (p, f) = pending::<u32>();
    assert!(!p.is_done() && !p.is_cancelled());
    assert!(p.cancel());
    assert!(p.is_done() && p.is_cancelled());
    assert!(f.cancelled());
}

#[test]
fn dropping_a_pending_promise_abandons_the_future() {
    let (p, f) = pending::<u32>();
    drop(p);
    assert!(f.done());
    assert_eq!(f.result_timeout(Duration::ZERO), Err(Error::Abandoned));
    assert_eq!(f.exception(), Ok(Some(Error::Abandoned)));
}

#[test]
fn dropping_a_running_promise_abandons_the_future() {
    let (p, f) = running::<u32>();
    let t = thread::spawn(move || drop(p));
    assert_eq!(f.result_timeout(LONG), Err(Error::Abandoned));
    t.join().unwrap();
}

#[test]
fn dropping_a_completed_promise_keeps_the_outcome() {
    let (p, f) = pending::<u32>();
    p.set_result(3).unwrap();
    drop(p);
    assert_eq!(f.result(), Ok(&3));
    let (p, f) = pending::<u32>();
    assert!(f.cancel());
    drop(p);
    assert_eq!(f.result(), Err(Error::Cancelled));
}

#[test]
fn abort_truth_table() {
    // pending -> cancelled
    let (p, f) = pending::<u32>();
    assert!(f.abort());
    assert!(f.cancelled());
    assert!(!p.set_running());
    // running without an abort handler -> false, keeps running
    let (p, f) = running::<u32>();
    assert!(!f.abort());
    assert!(f.running());
    p.set_result(1).unwrap();
    assert_eq!(f.result(), Ok(&1));
    // finished -> false
    assert!(!finished(1u32).abort());
    // cancelled -> true
    assert!(cancelled::<u32>().abort());
}

#[test]
fn abort_running_with_handler_cancels_and_calls_it_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (p, f) = running::<u32>();
    let c = Arc::clone(&calls);
    p.set_abort_handler(move || {
        c.fetch_add(1, Ordering::SeqCst);
    });
    assert!(f.abort());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(f.cancelled());
    assert!(f.abort(), "aborting again reports cancelled");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler runs once");
    // The worker finishing afterwards cannot overwrite the cancellation.
    assert!(matches!(p.set_result(9), Err(Error::InvalidState(_))));
    assert_eq!(f.result(), Err(Error::Cancelled));
}

#[test]
fn abort_handler_is_not_called_after_completion() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (p, f) = running::<u32>();
    let c = Arc::clone(&calls);
    p.set_abort_handler(move || {
        c.fetch_add(1, Ordering::SeqCst);
    });
    p.set_result(4).unwrap();
    assert!(!f.abort());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(f.result(), Ok(&4));
}

// ---- done callbacks --------------------------------------------------------

type Log = Arc<Mutex<Vec<(usize, thread::ThreadId)>>>;

fn logging(log: &Log, i: usize) -> impl FnOnce(&Future<u32>) + Send + 'static {
    let log = Arc::clone(log);
    move |_| log.lock().unwrap().push((i, thread::current().id()))
}

#[test]
fn callbacks_before_completion_run_in_order_in_completing_thread() {
    let log = Log::default();
    let (p, f) = pending::<u32>();
    for i in 0..5 {
        f.add_done_callback(logging(&log, i));
    }
    assert!(
        log.lock().unwrap().is_empty(),
        "nothing runs before completion"
    );
    let completer = thread::spawn(move || {
        p.set_result(1).unwrap();
        thread::current().id()
    });
    let completer_id = completer.join().unwrap();
    let log = log.lock().unwrap();
    let order: Vec<usize> = log.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, [0, 1, 2, 3, 4]);
    assert!(
        log.iter().all(|(_, t)| *t == completer_id),
        "callbacks run in the completing thread"
    );
}

#[test]
fn callback_after_completion_runs_at_once_in_caller_thread() {
    for f in [finished(1u32), failed::<u32>("e"), cancelled::<u32>()] {
        let log = Log::default();
        f.add_done_callback(logging(&log, 0));
        f.add_done_callback(logging(&log, 1));
        let log = log.lock().unwrap();
        assert_eq!(log.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1]);
        assert!(log.iter().all(|(_, t)| *t == thread::current().id()));
    }
}

#[test]
fn callback_sees_result_and_error() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (p, f) = pending::<u32>();
    let s = Arc::clone(&seen);
    f.add_done_callback(move |f| s.lock().unwrap().push(format!("{:?}", f.result())));
    p.set_result(5).unwrap();
    let (p, f) = pending::<u32>();
    let s = Arc::clone(&seen);
    f.add_done_callback(move |f| s.lock().unwrap().push(format!("{:?}", f.exception())));
    p.set_error(invalid("e")).unwrap();
    let f = finished(6u32);
    let s = Arc::clone(&seen);
    f.add_done_callback(move |f| s.lock().unwrap().push(format!("{:?}", f.result())));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "Ok(5)".to_string(),
            format!("{:?}", Ok::<_, Error>(Some(invalid("e")))),
            "Ok(6)".to_string()
        ]
    );
}

#[test]
fn callback_on_cancel_runs_in_cancelling_thread() {
    let log = Log::default();
    let flags = Arc::new(Mutex::new(Vec::new()));
    let (_p, f) = pending::<u32>();
    f.add_done_callback(logging(&log, 0));
    let fl = Arc::clone(&flags);
    f.add_done_callback(move |f| {
        fl.lock()
            .unwrap()
            .push((f.cancelled(), f.done(), f.result().cloned()))
    });
    let f = Arc::new(f);
    let f2 = Arc::clone(&f);
    let canceller = thread::spawn(move || {
        assert!(f2.cancel());
        thread::current().id()
    });
    let id = canceller.join().unwrap();
    assert_eq!(*log.lock().unwrap(), [(0, id)]);
    assert_eq!(
        *flags.lock().unwrap(),
        [(true, true, Err(Error::Cancelled))]
    );
}

#[test]
fn callback_on_abandon_runs() {
    let count = Arc::new(AtomicUsize::new(0));
    let (p, f) = pending::<u32>();
    let c = Arc::clone(&count);
    f.add_done_callback(move |f| {
        assert_eq!(f.result(), Err(Error::Abandoned));
        c.fetch_add(1, Ordering::SeqCst);
    });
    drop(p);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[test]
fn panicking_callback_does_not_stop_the_next() {
    let log = Log::default();
    let (p, f) = pending::<u32>();
    f.add_done_callback(logging(&log, 0));
    f.add_done_callback(|_| panic!("callback 1 panics (expected in this test)"));
    f.add_done_callback(logging(&log, 2));
    p.set_result(1).unwrap();
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .map(|(i, _)| *i)
            .collect::<Vec<_>>(),
        [0, 2]
    );
    assert_eq!(f.result(), Ok(&1), "the future is unaffected");

    // Added after completion: the panic is contained too.
    f.add_done_callback(|_| panic!("late callback panics (expected in this test)"));
    f.add_done_callback(logging(&log, 3));
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .map(|(i, _)| *i)
            .collect::<Vec<_>>(),
        [0, 2, 3]
    );
    assert_eq!(f.into_result(), Ok(1));
}

#[test]
fn callbacks_run_exactly_once() {
    let count = Arc::new(AtomicUsize::new(0));
    let (p, f) = pending::<u32>();
    for _ in 0..3 {
        let c = Arc::clone(&count);
        f.add_done_callback(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        });
    }
    p.set_result(1).unwrap();
    assert!(!f.cancel());
    let _ = p.set_result(2);
    drop(p);
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[test]
fn callback_may_add_another_callback_and_use_the_future() {
    let log = Log::default();
    let (p, f) = pending::<u32>();
    let inner_log = Arc::clone(&log);
    f.add_done_callback(move |f| {
        // Registering from inside a callback runs the new one at once.
        f.add_done_callback(logging(&inner_log, 1));
        assert!(!f.cancel());
        assert!(f.done());
        inner_log.lock().unwrap().push((2, thread::current().id()));
    });
    p.set_result(1).unwrap();
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .map(|(i, _)| *i)
            .collect::<Vec<_>>(),
        [1, 2]
    );
}

#[test]
fn callback_keeps_no_value_alive_after_it_ran() {
    let (tx, rx) = mpsc::channel();
    let (p, f) = pending::<DropSignal>();
    f.add_done_callback(|f| assert_eq!(f.result().unwrap().id, 1));
    p.set_result(DropSignal::new(1, &tx)).unwrap();
    drop(p);
    drop(f);
    assert_eq!(
        rx.recv_timeout(LONG),
        Ok(1),
        "the value is dropped once all handles are gone"
    );
}

#[test]
fn taking_the_value_waits_for_running_callbacks() {
    // A callback borrows the value; `into_result` must not move it out until
    // the callback has returned.
    let gate = Gate::new();
    let entered = Gate::new();
    let (p, f) = pending::<String>();
    let (g, e) = (gate.clone(), entered.clone());
    f.add_done_callback(move |f| {
        let v: &String = f.result().unwrap();
        e.open();
        g.wait();
        assert_eq!(v, "value", "the value must still be there");
    });
    let completer = thread::spawn(move || p.set_result("value".to_string()).unwrap());
    entered.wait();
    // Done (result borrows fine), but callbacks are still running.
    assert!(f.done());
    assert_eq!(f.result().map(String::as_str), Ok("value"));
    let (tx, rx) = mpsc::channel();
    let taker = thread::spawn(move || tx.send(f.into_result()).unwrap());
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "into_result returned while a callback still borrowed the value"
    );
    gate.open();
    assert_eq!(rx.recv_timeout(LONG).unwrap(), Ok("value".to_string()));
    completer.join().unwrap();
    taker.join().unwrap();
}

// ---- formatting and traits -------------------------------------------------

#[test]
fn debug_shows_the_state() {
    let (p, f) = pending::<u32>();
    assert!(format!("{f:?}").contains("Pending"), "{f:?}");
    assert!(format!("{p:?}").contains("Promise"), "{p:?}");
    p.set_running();
    assert!(format!("{f:?}").contains("Running"));
    p.set_result(1).unwrap();
    assert!(format!("{f:?}").contains("Finished"));
    assert!(format!("{:?}", cancelled::<u32>()).contains("Cancelled"));
}

#[test]
fn futures_and_promises_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Future<String>>();
    send::<Promise<String>>();
    send::<Future<std::cell::Cell<u8>>>();
    send_sync::<Error>();
}

#[test]
fn errors_display_and_compare() {
    assert_eq!(Error::Cancelled.to_string(), "the future was cancelled");
    assert!(Error::Cancelled.is_cancelled());
    let e: Box<dyn std::error::Error + Send + Sync> = Box::new(Error::Abandoned);
    assert!(e.to_string().contains("dropped"));
    assert_eq!(Error::ShutDown.clone(), Error::ShutDown);
}

// ---- taking the value out from the future's own done callback ---------------

/// A future stored where its own callback can reach it.
type Shelf = Arc<Mutex<Option<Future<u32>>>>;

#[test]
fn into_result_in_its_own_callback_is_an_error_not_a_hang() {
    let (promise, future) = Promise::new();
    let shelf: Shelf = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel();
    let inner = Arc::clone(&shelf);
    future.add_done_callback(move |f| {
        assert_eq!(
            f.result(),
            Ok(&7),
            "the value is readable through the callback's handle"
        );
        let own = inner.lock().unwrap().take().unwrap();
        tx.send(own.into_result()).unwrap();
    });
    *shelf.lock().unwrap() = Some(future);
    promise.set_result(7).unwrap();
    let got = rx.recv_timeout(LONG).expect("into_result hung");
    assert!(matches!(got, Err(Error::InvalidState(_))), "{got:?}");
}

#[test]
fn awaiting_in_its_own_callback_is_an_error_not_a_hang() {
    let (promise, future) = Promise::new();
    let shelf: Shelf = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel();
    let inner = Arc::clone(&shelf);
    future.add_done_callback(move |_| {
        let own = inner.lock().unwrap().take().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        tx.send(rt.block_on(own)).unwrap();
    });
    *shelf.lock().unwrap() = Some(future);
    promise.set_result(7).unwrap();
    let got = rx.recv_timeout(LONG).expect(".await hung");
    assert!(matches!(got, Err(Error::InvalidState(_))), "{got:?}");
}

#[test]
fn into_result_in_its_own_thread_pool_callback_does_not_hang() {
    let pool = concurrent_futures::ThreadPoolExecutor::new(1).unwrap();
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let f = pool
        .submit(move || {
            gate_rx.recv_timeout(LONG).unwrap();
            5u32
        })
        .unwrap();
    let shelf: Shelf = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel();
    let inner = Arc::clone(&shelf);
    f.add_done_callback(move |_| {
        let own = inner.lock().unwrap().take().unwrap();
        tx.send(own.into_result()).unwrap();
    });
    *shelf.lock().unwrap() = Some(f);
    gate_tx.send(()).unwrap();
    let got = rx.recv_timeout(LONG).expect("into_result hung");
    assert!(matches!(got, Err(Error::InvalidState(_))), "{got:?}");
}
