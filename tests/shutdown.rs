//! Shutting a thread pool down: CPython's test_shutdown.py (thread pool
//! parts), ported, plus Drop (Python's `with` block) and "Better than Python"
//! item 6 (leaving a scope by panic cancels pending work, gh-130975).
#![cfg(not(loom))]

mod core_util;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concurrent_futures::{Error, Future, MapOptions, State, ThreadPoolExecutor};
use core_util::{Gate, LONG, bounded};

/// Submits `n` tasks that each announce their start, wait for `gate`, and
/// return their index.
fn gated_tasks(
    pool: &ThreadPoolExecutor,
    n: usize,
    gate: &Gate,
) -> (Vec<Future<usize>>, mpsc::Receiver<usize>) {
    let (tx, rx) = mpsc::channel();
    let futures = (0..n)
        .map(|i| {
            let g = gate.clone();
            let tx = Mutex::new(tx.clone());
            pool.submit(move || {
                tx.lock().unwrap().send(i).unwrap();
                g.wait();
                i
            })
            .unwrap()
        })
        .collect();
    (futures, rx)
}

#[test]
fn submit_after_shutdown_is_an_error() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    pool.shutdown(true, false);
    assert!(matches!(pool.submit(|| 2u32.pow(5)), Err(Error::ShutDown)));
    assert!(matches!(pool.map(|x: u32| x, [1, 2]), Err(Error::ShutDown)));
    assert!(matches!(
        pool.map_with(|x: u32| x, 0.., MapOptions::new().buffersize(2)),
        Err(Error::ShutDown)
    ));
    pool.scope(|s| assert!(matches!(s.submit(|| 1), Err(Error::ShutDown))));
    assert!(Error::ShutDown.to_string().contains("shut down"));
}

#[test]
fn submit_after_shutdown_without_wait_is_an_error() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    pool.submit(|| ()).unwrap().result_timeout(LONG).unwrap();
    pool.shutdown(false, false);
    assert!(matches!(pool.submit(|| ()), Err(Error::ShutDown)));
}

#[test]
fn shutdown_is_idempotent() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let f = pool.submit(|| 1u8).unwrap();
    pool.shutdown(true, false);
    pool.shutdown(true, false);
    pool.shutdown(false, true);
    pool.shutdown(true, true);
    assert_eq!(f.result_timeout(Duration::ZERO), Ok(&1));
    assert!(matches!(pool.submit(|| 1u8), Err(Error::ShutDown)));
    drop(pool);
}

#[test]
fn shutdown_before_any_submit() {
    let pool = ThreadPoolExecutor::new(3).unwrap();
    bounded("shutdown of an unused pool", move || {
        pool.shutdown(true, true);
        assert_eq!(pool.threads_started(), 0);
    });
}

#[test]
fn queued_work_still_runs_after_shutdown_issue12364() {
    let pool = ThreadPoolExecutor::new(5).unwrap();
    let futures: Vec<_> = (0..50u32)
        .map(|i| pool.submit(move || i * 2).unwrap())
        .collect();
    pool.shutdown(true, false);
    for (i, f) in futures.iter().enumerate() {
        assert_eq!(
            f.result_timeout(Duration::ZERO),
            Ok(&(i as u32 * 2)),
            "done once shutdown(wait) returns"
        );
    }
}

#[test]
fn cancel_futures() {
    // Python's test_cancel_futures, made deterministic: five workers are
    // held on a gate, so the other 45 tasks are certainly still queued.
    let pool = ThreadPoolExecutor::new(5).unwrap();
    let gate = Gate::new();
    let (futures, started) = gated_tasks(&pool, 50, &gate);
    for _ in 0..5 {
        started.recv_timeout(LONG).unwrap();
    }
    pool.shutdown(false, true);
    let cancelled = futures.iter().filter(|f| f.cancelled()).count();
    assert_eq!(cancelled, 45);
    gate.open();
    pool.shutdown(true, false);
    let others: Vec<_> = futures.iter().filter(|f| !f.cancelled()).collect();
    assert_eq!(others.len(), 5);
    for f in others {
        assert!(f.done());
        assert_eq!(f.exception(), Ok(None));
    }
    for f in &futures {
        assert!(f.done(), "every future is done");
    }
    assert!(started.try_recv().is_err(), "no cancelled task started");
}

#[test]
fn cancel_futures_with_wait() {
    // Same, with shutdown(wait=true): the gate opens from a done callback of
    // the last queued future, which runs as shutdown cancels it.
    let pool = ThreadPoolExecutor::new(5).unwrap();
    let gate = Gate::new();
    let (futures, started) = gated_tasks(&pool, 50, &gate);
    for _ in 0..5 {
        started.recv_timeout(LONG).unwrap();
    }
    let g = gate.clone();
    futures[49].add_done_callback(move |_| g.open());
    let pool = bounded("shutdown(wait, cancel_futures)", move || {
        pool.shutdown(true, true);
        pool
    });
    let states: Vec<State> = futures.iter().map(Future::state).collect();
    assert_eq!(
        states.iter().filter(|s| **s == State::Cancelled).count(),
        45
    );
    assert_eq!(states.iter().filter(|s| **s == State::Finished).count(), 5);
    for f in futures.iter().filter(|f| !f.cancelled()) {
        assert!(f.result().unwrap() < &5);
    }
    assert!(matches!(futures[10].result(), Err(Error::Cancelled)));
    drop(pool);
}

#[test]
fn shutdown_no_wait_with_a_running_task() {
    let pool = ThreadPoolExecutor::new(3).unwrap();
    let gate = Gate::new();
    let (futures, started) = gated_tasks(&pool, 1, &gate);
    started.recv_timeout(LONG).unwrap();
    // Returns although the task cannot finish until the gate opens.
    let pool = bounded("shutdown(wait=false)", move || {
        pool.shutdown(false, false);
        pool
    });
    assert!(futures[0].running());
    gate.open();
    assert_eq!(
        futures[0].result_timeout(LONG),
        Ok(&0),
        "the task still finishes"
    );
    drop(pool);
}

#[test]
fn shutdown_no_wait_lets_queued_work_run() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let gate = Gate::new();
    let (futures, started) = gated_tasks(&pool, 3, &gate);
    started.recv_timeout(LONG).unwrap();
    let pool = bounded("shutdown(wait=false) with queued work", move || {
        pool.shutdown(false, false);
        pool
    });
    gate.open();
    // Queued work still runs after shutdown(wait=false).
    for (i, f) in futures.iter().enumerate() {
        assert_eq!(f.result_timeout(LONG), Ok(&i));
    }
    drop(pool);
}

#[test]
fn shutdown_no_wait_cancel_futures() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let gate = Gate::new();
    let (futures, started) = gated_tasks(&pool, 4, &gate);
    started.recv_timeout(LONG).unwrap();
    pool.shutdown(false, true);
    assert!(futures[1..].iter().all(|f| f.cancelled()));
    gate.open();
    assert_eq!(futures[0].result_timeout(LONG), Ok(&0));
}

#[test]
fn threads_terminate() {
    let pool = ThreadPoolExecutor::new(3).unwrap();
    let gate = Gate::new();
    let (futures, _started) = gated_tasks(&pool, 3, &gate);
    assert_eq!(pool.threads_started(), 3);
    gate.open();
    bounded("shutdown(wait) of three workers", move || {
        pool.shutdown(true, false)
    });
    assert!(futures.iter().all(Future::done));
}

#[test]
fn drop_is_shutdown_with_wait() {
    // Python's test_context_manager_shutdown / test_del_shutdown.
    let futures = bounded("drop of a busy pool", || {
        let pool = ThreadPoolExecutor::new(5).unwrap();
        let futures: Vec<_> = (-5i32..5)
            .map(|v| pool.submit(move || v.abs()).unwrap())
            .collect();
        drop(pool);
        futures
    });
    for (f, v) in futures.iter().zip(-5i32..5) {
        assert_eq!(
            f.result_timeout(Duration::ZERO),
            Ok(&v.abs()),
            "done once drop returned"
        );
    }
}

#[test]
fn drop_waits_for_queued_work() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let gate = Gate::new();
    let (futures, started) = gated_tasks(&pool, 10, &gate);
    started.recv_timeout(LONG).unwrap();
    let g = gate.clone();
    let opener = std::thread::spawn(move || g.open());
    bounded("drop", move || drop(pool));
    opener.join().unwrap();
    for (i, f) in futures.iter().enumerate() {
        assert_eq!(
            f.result_timeout(Duration::ZERO),
            Ok(&i),
            "queued work ran before drop returned"
        );
    }
}

#[test]
fn drop_while_panicking_cancels_pending_work_gh_130975() {
    let gate = Gate::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let futures: Arc<Mutex<Vec<Future<()>>>> = Arc::default();
    let (g, r, fs) = (gate.clone(), Arc::clone(&ran), Arc::clone(&futures));
    let outcome = bounded("unwinding out of a pool's scope", move || {
        catch_unwind(AssertUnwindSafe(move || {
            let pool = ThreadPoolExecutor::new(1).unwrap();
            let started = Gate::new();
            let (s, gg) = (started.clone(), g.clone());
            let blocker = pool
                .submit(move || {
                    s.open();
                    gg.wait();
                })
                .unwrap();
            started.wait();
            let mut queued: Vec<Future<()>> = (0..20)
                .map(|_| {
                    let r = Arc::clone(&r);
                    pool.submit(move || {
                        r.fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap()
                })
                .collect();
            // The running task can finish once the last queued one is
            // cancelled (its callback runs in the thread that cancels it).
            let g2 = g.clone();
            queued[19].add_done_callback(move |_| g2.open());
            queued.push(blocker);
            *fs.lock().unwrap() = queued;
            panic!("leaving the pool's scope by panic (expected in this test)");
        }))
    });
    assert!(outcome.is_err(), "the panic propagates");
    assert!(gate.is_open());
    let futures = futures.lock().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0, "queued work must not run");
    for f in &futures[..20] {
        assert!(f.cancelled(), "pending work is cancelled");
    }
    assert_eq!(
        futures[20].state(),
        State::Finished,
        "the running task was waited for"
    );
}

#[test]
fn shutdown_from_inside_a_task() {
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let p = Arc::clone(&pool);
    let f = pool
        .submit(move || {
            p.shutdown(true, false);
            matches!(p.submit(|| ()), Err(Error::ShutDown))
        })
        .unwrap();
    assert_eq!(f.result_timeout(LONG), Ok(&true));
    assert!(matches!(pool.submit(|| ()), Err(Error::ShutDown)));
    bounded("shutdown after a task shut the pool down", move || {
        pool.shutdown(true, false)
    });
}

#[test]
fn two_tasks_shut_down_their_pool_at_once() {
    // Two workers each call shutdown(wait=true) at the same time: neither
    // may wait for the other forever.
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let both = Arc::new(std::sync::Barrier::new(2));
    let futures: Vec<_> = (0..2)
        .map(|i| {
            let (p, b) = (Arc::clone(&pool), Arc::clone(&both));
            pool.submit(move || {
                b.wait();
                p.shutdown(true, false);
                i
            })
            .unwrap()
        })
        .collect();
    for (i, f) in futures.iter().enumerate() {
        assert_eq!(f.result_timeout(LONG), Ok(&i));
    }
    bounded("shutdown after two tasks shut the pool down", move || {
        pool.shutdown(true, false)
    });
}

#[test]
fn done_callback_shuts_the_pool_down_and_cancels() {
    // A done callback runs in the worker that completed the task; shutting
    // the pool down (and cancelling the queue) from there must not deadlock.
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let gate = Gate::new();
    let (futures, started) = gated_tasks(&pool, 6, &gate);
    started.recv_timeout(LONG).unwrap();
    let p = Arc::clone(&pool);
    let (tx, rx) = mpsc::channel();
    futures[0].add_done_callback(move |_| {
        p.shutdown(true, true);
        tx.send(()).unwrap();
    });
    gate.open();
    rx.recv_timeout(LONG)
        .expect("the callback's shutdown returned");
    assert_eq!(futures[0].result_timeout(LONG), Ok(&0));
    for f in &futures[1..] {
        assert_eq!(f.result_timeout(LONG), Err(Error::Cancelled));
    }
    bounded("drop after a callback shut the pool down", move || {
        drop(pool)
    });
}

#[test]
fn last_reference_dropped_inside_a_task() {
    // The pool's Drop (shutdown with wait) runs on one of its own workers.
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let gate = Gate::new();
    let (p, g) = (Arc::clone(&pool), gate.clone());
    let f = pool
        .submit(move || {
            g.wait();
            drop(p);
            7
        })
        .unwrap();
    drop(pool);
    gate.open();
    assert_eq!(f.result_timeout(LONG), Ok(&7));
}

#[test]
fn second_shutdown_with_wait_also_waits() {
    // shutdown(wait=true) must not return while a task still runs, even if
    // another caller (here: the task itself) already called shutdown(wait).
    let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
    let gate = Gate::new();
    let shut = Gate::new();
    let (p, g, s) = (Arc::clone(&pool), gate.clone(), shut.clone());
    let f = pool
        .submit(move || {
            p.shutdown(true, false);
            s.open();
            g.wait();
            1
        })
        .unwrap();
    shut.wait();
    let (returned_tx, returned_rx) = mpsc::channel::<()>();
    let g = gate.clone();
    let opener = std::thread::spawn(move || {
        // Open the gate when shutdown below has returned (a bug), or after
        // a while (shutdown correctly still waiting).
        let early = returned_rx.recv_timeout(Duration::from_millis(500)).is_ok();
        g.open();
        early
    });
    let p = Arc::clone(&pool);
    let done_when_returned = bounded("second shutdown(wait)", move || {
        p.shutdown(true, false);
        let done = f.done();
        let _ = returned_tx.send(());
        done
    });
    let early = opener.join().unwrap();
    assert!(
        done_when_returned && !early,
        "shutdown(wait=true) returned while a task was still running"
    );
}

#[test]
fn cancelled_future_before_shutdown_does_not_hang_gh_94440() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    pool.submit(|| 0).unwrap().result_timeout(LONG).unwrap();
    let f = pool.submit(|| 1).unwrap();
    f.cancel();
    bounded("shutdown(wait) after a cancel", move || {
        pool.shutdown(true, false)
    });
}

#[test]
fn concurrent_shutdown_and_submit() {
    // Submits racing with shutdown either succeed (and then run) or fail
    // with ShutDown; nothing is lost.
    for _ in 0..20 {
        let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
        let submitters: Vec<_> = (0..3)
            .map(|_| {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || {
                    let mut accepted = Vec::new();
                    for i in 0..200u32 {
                        match pool.submit(move || i) {
                            Ok(f) => accepted.push(f),
                            Err(Error::ShutDown) => break,
                            Err(e) => panic!("unexpected {e:?}"),
                        }
                    }
                    accepted
                })
            })
            .collect();
        pool.shutdown(true, false);
        for s in submitters {
            for f in s.join().unwrap() {
                assert!(f.result_timeout(LONG).is_ok());
            }
        }
    }
}
