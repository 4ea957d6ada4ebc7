//! Scoped submission ("Better than Python" item 8) and awaiting futures from
//! async code (item 7): with tokio, and with a hand-written waker.
#![cfg(not(loom))]

mod core_util;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use concurrent_futures::{Error, Future, ThreadPoolExecutor};
use core_util::{Gate, LONG, pending};

// ---- scope -----------------------------------------------------------------

#[test]
fn scope_tasks_borrow_stack_data() {
    let pool = ThreadPoolExecutor::new(3).unwrap();
    let words = [
        "scoped".to_string(),
        "tasks".to_string(),
        "borrow".to_string(),
    ];
    let total = pool.scope(|s| {
        let futures: Vec<_> = words
            .iter()
            .map(|w| s.submit(move || w.len()).unwrap())
            .collect();
        futures
            .into_iter()
            .map(|f| f.into_result().unwrap())
            .sum::<usize>()
    });
    assert_eq!(total, 17);
    // The data is still ours.
    assert_eq!(words.len(), 3);
}

#[test]
fn scope_tasks_borrow_mutably() {
    let pool = ThreadPoolExecutor::new(4).unwrap();
    let mut data: Vec<u64> = (0..1000).collect();
    pool.scope(|s| {
        for chunk in data.chunks_mut(100) {
            // The scope waits for the task: its future is not needed.
            drop(
                s.submit(move || {
                    for x in chunk {
                        *x *= *x;
                    }
                })
                .unwrap(),
            );
        }
    });
    assert_eq!(data, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
}

#[test]
fn every_task_is_done_when_scope_returns() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let counter = AtomicUsize::new(0);
    let gate = Gate::new();
    let opened = AtomicBool::new(false);
    pool.scope(|s| {
        for _ in 0..50 {
            // Futures are dropped at once: the scope still joins the tasks.
            drop(
                s.submit(|| {
                    gate.wait();
                    counter.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap(),
            );
        }
        opened.store(true, Ordering::SeqCst);
        gate.open();
    });
    assert!(opened.load(Ordering::SeqCst));
    assert_eq!(counter.load(Ordering::SeqCst), 50);
}

#[test]
fn scope_joins_tasks_that_outlive_the_body() {
    // The body returns while tasks are still blocked; the scope must not
    // return before they finish. The gate opens from another thread once the
    // scope has returned (a bug) or after a while (scope correctly waiting).
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let counter = AtomicUsize::new(0);
    let gate = Gate::new();
    let (returned_tx, returned_rx) = mpsc::channel::<()>();
    let g = gate.clone();
    let opener = thread::spawn(move || {
        let early = returned_rx.recv_timeout(Duration::from_millis(300)).is_ok();
        g.open();
        early
    });
    pool.scope(|s| {
        for _ in 0..4 {
            // The scope waits for the task: its future is not needed.
            drop(
                s.submit(|| {
                    gate.wait();
                    counter.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap(),
            );
        }
    });
    let _ = returned_tx.send(());
    assert_eq!(counter.load(Ordering::SeqCst), 4);
    assert!(
        !opener.join().unwrap(),
        "scope returned before its tasks finished"
    );
}

#[test]
fn scope_body_panicking_joins_running_tasks_and_cancels_pending_ones() {
    // Two workers, four tasks: two run (blocked on the gate), two wait in
    // the queue. The body panics: the running two are joined, the pending
    // two never run (gh-130975), then the panic resumes.
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let counter = AtomicUsize::new(0);
    let gate = Gate::new();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (returned_tx, returned_rx) = mpsc::channel::<()>();
    let g = gate.clone();
    let opener = thread::spawn(move || {
        let early = returned_rx.recv_timeout(Duration::from_millis(300)).is_ok();
        g.open();
        early
    });
    let (gate_ref, counter_ref) = (&gate, &counter);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        pool.scope(|s| {
            for _ in 0..4 {
                let started_tx = started_tx.clone();
                // The scope waits for the task: its future is not needed.
                drop(
                    s.submit(move || {
                        started_tx.send(()).unwrap();
                        gate_ref.wait();
                        counter_ref.fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap(),
                );
            }
            for _ in 0..2 {
                started_rx.recv_timeout(LONG).expect("two tasks start");
            }
            panic!("scope body panics (expected in this test)");
        })
    }));
    let _ = returned_tx.send(());
    let payload = outcome.expect_err("the body's panic propagates");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"scope body panics (expected in this test)")
    );
    assert_eq!(
        counter.load(Ordering::SeqCst),
        2,
        "the running tasks finished, the pending ones never ran"
    );
    assert!(
        started_rx.try_recv().is_err(),
        "no pending task started after the panic"
    );
    assert!(
        !opener.join().unwrap(),
        "scope unwound before its running tasks finished"
    );
}

#[test]
fn scope_tasks_may_return_borrows() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let text = String::from("alpha beta gamma");
    let longest: &str = pool.scope(|s| {
        let words: Vec<_> = text
            .split(' ')
            .map(|w| s.submit(move || (w.len(), w)).unwrap())
            .collect();
        words
            .into_iter()
            .map(|f| f.into_result().unwrap())
            .max()
            .unwrap()
            .1
    });
    assert_eq!(longest, "gamma");
}

#[test]
fn scoped_tasks_may_submit_more_scoped_tasks() {
    // Tasks submitted from inside scoped tasks belong to the same scope: the
    // scope joins them too, even though nobody waits for their futures.
    let pool = ThreadPoolExecutor::new(3).unwrap();
    let counter = AtomicUsize::new(0);
    pool.scope(|s| {
        for _ in 0..10 {
            // The scope waits for the task: its future is not needed.
            drop(
                s.submit(|| {
                    for _ in 0..10 {
                        drop(
                            s.submit(|| {
                                counter.fetch_add(1, Ordering::SeqCst);
                            })
                            .unwrap(),
                        );
                    }
                })
                .unwrap(),
            );
        }
    });
    assert_eq!(counter.load(Ordering::SeqCst), 100);
}

#[test]
fn scope_task_panic_fails_only_its_future() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let value = 5u32;
    let (a, b) = pool.scope(|s| {
        let bad = s
            .submit(|| -> u32 { panic!("scoped task panics (expected in this test)") })
            .unwrap();
        let good = s.submit(|| value * 2).unwrap();
        (bad.into_result(), good.into_result())
    });
    assert!(matches!(a, Err(Error::Panicked { .. })));
    assert_eq!(b, Ok(10));
}

#[test]
fn scope_returns_the_body_value_and_nests_with_plain_submits() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let outside = pool.submit(|| 1u32).unwrap();
    let name = String::from("abc");
    let r = pool.scope(|s| {
        let f = s.submit(|| name.to_uppercase()).unwrap();
        f.into_result().unwrap()
    });
    assert_eq!(r, "ABC");
    assert_eq!(outside.result_timeout(LONG), Ok(&1));
}

#[test]
fn scope_with_cancelled_tasks_returns() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let ran = AtomicUsize::new(0);
    let gate = Gate::new();
    pool.scope(|s| {
        let started = Gate::new();
        let st = started.clone();
        let g = gate.clone();
        // The scope waits for the task: its future is not needed.
        drop(
            s.submit(move || {
                st.open();
                g.wait();
            })
            .unwrap(),
        );
        started.wait();
        let queued: Vec<_> = (0..5)
            .map(|_| {
                s.submit(|| {
                    ran.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap()
            })
            .collect();
        for f in &queued {
            assert!(f.cancel());
        }
        gate.open();
    });
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

// ---- async: tokio ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_pool_futures_in_tokio() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let f = pool.submit(|| 6 * 7).unwrap();
    assert_eq!(f.await, Ok(42));
    let futures: Vec<_> = (0..20u64)
        .map(|i| pool.submit(move || i * 2).unwrap())
        .collect();
    let mut sum = 0;
    for f in futures {
        sum += f.await.unwrap();
    }
    assert_eq!(sum, 380);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_from_spawned_tokio_tasks() {
    let pool = ThreadPoolExecutor::new(3).unwrap();
    let handles: Vec<_> = (0..10u32)
        .map(|i| {
            let f = pool.submit(move || i + 100).unwrap();
            // A pool future is itself a `Send + 'static` std future.
            tokio::spawn(f)
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap(), Ok(i as u32 + 100));
    }
}

#[tokio::test]
async fn await_on_current_thread_runtime() {
    // The value arrives while this single-threaded runtime is parked in
    // `.await`: only the waker can bring it back.
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let f = pool
        .submit(move || {
            g.wait();
            "late"
        })
        .unwrap();
    let opener = pool.submit(move || gate.open());
    drop(opener);
    assert_eq!(tokio::time::timeout(LONG, f).await.unwrap(), Ok("late"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_errors() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let f = pool
        .submit(|| -> u8 { panic!("async panic (expected in this test)") })
        .unwrap();
    assert!(matches!(f.await, Err(Error::Panicked { .. })));
    let (_p, g) = pending::<u8>();
    assert!(g.cancel());
    assert_eq!(g.await, Err(Error::Cancelled));
    let (p, h) = pending::<u8>();
    drop(p);
    assert_eq!(h.await, Err(Error::Abandoned));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_timeout_leaves_the_future_usable() {
    let (p, mut f) = pending::<String>();
    let r = tokio::time::timeout(Duration::from_millis(20), &mut f).await;
    assert!(r.is_err(), "still pending");
    let completer = thread::spawn(move || p.set_result("now".into()).unwrap());
    assert_eq!(
        tokio::time::timeout(LONG, &mut f).await.unwrap(),
        Ok("now".to_string())
    );
    completer.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_a_promise_completed_from_a_blocking_thread() {
    let (p, f) = pending::<Vec<u8>>();
    tokio::task::spawn_blocking(move || p.set_result(vec![1, 2, 3]).unwrap());
    assert_eq!(
        tokio::time::timeout(LONG, f).await.unwrap(),
        Ok(vec![1, 2, 3])
    );
}

// ---- async: a hand-written executor ----------------------------------------

struct ThreadWaker {
    thread: Thread,
    woken: AtomicUsize,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

fn thread_waker() -> (Arc<ThreadWaker>, Waker) {
    let w = Arc::new(ThreadWaker {
        thread: thread::current(),
        woken: AtomicUsize::new(0),
    });
    (Arc::clone(&w), Waker::from(w))
}

/// A minimal `block_on`: poll, park until woken, poll again. Fails the test
/// after [`LONG`] instead of hanging.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let (_w, waker) = thread_waker();
    let mut cx = Context::from_waker(&waker);
    let deadline = Instant::now() + LONG;
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        let now = Instant::now();
        assert!(now < deadline, "block_on: never woken");
        thread::park_timeout(deadline - now);
    }
}

#[test]
fn block_on_pool_futures() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    assert_eq!(block_on(pool.submit(|| 5u8).unwrap()), Ok(5));
    let fs: Vec<_> = (0..10u32)
        .map(|i| pool.submit(move || i).unwrap())
        .collect();
    let total = block_on(async move {
        let mut total = 0;
        for f in fs {
            total += f.await.unwrap();
        }
        total
    });
    assert_eq!(total, 45);
}

#[test]
fn waker_is_woken_on_completion_from_another_thread() {
    let (p, mut f) = pending::<u32>();
    let (w, waker) = thread_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
    assert_eq!(w.woken.load(Ordering::SeqCst), 0);
    let completer = thread::spawn(move || p.set_result(9).unwrap());
    let deadline = Instant::now() + LONG;
    while w.woken.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "never woken");
        thread::park_timeout(Duration::from_millis(100));
    }
    assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Ready(Ok(9)));
    completer.join().unwrap();
}

#[test]
fn the_latest_waker_is_woken() {
    let (p, mut f) = pending::<u32>();
    let (w1, waker1) = thread_waker();
    let (w2, waker2) = thread_waker();
    assert!(
        Pin::new(&mut f)
            .poll(&mut Context::from_waker(&waker1))
            .is_pending()
    );
    // The task moved: polled again with another waker.
    assert!(
        Pin::new(&mut f)
            .poll(&mut Context::from_waker(&waker2))
            .is_pending()
    );
    p.set_result(1).unwrap();
    assert!(
        w2.woken.load(Ordering::SeqCst) >= 1,
        "the current waker must be woken"
    );
    let _ = w1;
    assert_eq!(
        Pin::new(&mut f).poll(&mut Context::from_waker(&waker2)),
        Poll::Ready(Ok(1))
    );
}

#[test]
fn waker_is_woken_on_cancel() {
    let (_p, f) = pending::<u32>();
    let f = Arc::new(Mutex::new(f));
    let (w, waker) = thread_waker();
    assert!(
        Pin::new(&mut *f.lock().unwrap())
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    assert!(f.lock().unwrap().cancel());
    assert!(w.woken.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        Pin::new(&mut *f.lock().unwrap()).poll(&mut Context::from_waker(&waker)),
        Poll::Ready(Err(Error::Cancelled))
    );
}

#[test]
fn await_waits_for_done_callbacks_to_finish() {
    // A callback borrows the value, so `.await` (which takes it) becomes
    // ready only after the callbacks have run, and is then woken.
    let (p, mut f) = pending::<String>();
    let gate = Gate::new();
    let entered = Gate::new();
    let (g, e) = (gate.clone(), entered.clone());
    f.add_done_callback(move |f| {
        let v = f.result().unwrap();
        e.open();
        g.wait();
        assert_eq!(v, "v");
    });
    let completer = thread::spawn(move || p.set_result("v".into()).unwrap());
    entered.wait();
    assert!(f.done());
    let (w, waker) = thread_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(
        Pin::new(&mut f).poll(&mut cx).is_pending(),
        "a callback still borrows the value"
    );
    gate.open();
    completer.join().unwrap();
    assert!(
        w.woken.load(Ordering::SeqCst) >= 1,
        "woken once the callbacks finished"
    );
    assert_eq!(
        Pin::new(&mut f).poll(&mut cx),
        Poll::Ready(Ok("v".to_string()))
    );
}

#[test]
fn polling_after_ready_is_an_error_not_ub() {
    let mut f: Future<u32> = core_util::finished(3);
    let (_w, waker) = thread_waker();
    let mut cx = Context::from_waker(&waker);
    assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Ready(Ok(3)));
    match Pin::new(&mut f).poll(&mut cx) {
        Poll::Ready(Err(Error::InvalidState(_))) => {}
        other => panic!("expected InvalidState after the value was taken, got {other:?}"),
    }
}
