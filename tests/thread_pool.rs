//! `ThreadPoolExecutor`: CPython's test_thread_pool.py and executor.py,
//! ported, plus `map`'s options (timeout, buffersize, chunksize) and the
//! "Better than Python" item 2 (one failing item does not end `map`).
#![cfg(not(loom))]

mod core_util;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use concurrent_futures::{Error, MapOptions, ThreadPoolExecutor};
use core_util::{DropSignal, Gate, LONG};

fn thread_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed>")
        .to_owned()
}

// ---- submit ----------------------------------------------------------------

#[test]
fn submit_returns_the_value() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let f = pool.submit(|| 2u64.pow(8)).unwrap();
    assert_eq!(f.result_timeout(LONG), Ok(&256));
    let g = pool.submit(|| String::from("owned")).unwrap();
    assert_eq!(g.into_result(), Ok("owned".to_string()));
}

#[test]
fn results_of_many_tasks() {
    let pool = ThreadPoolExecutor::new(4).unwrap();
    let futures: Vec<_> = (0..1000u64)
        .map(|i| pool.submit(move || i * i).unwrap())
        .collect();
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(f.into_result(), Ok((i * i) as u64));
    }
}

#[test]
fn panicking_task_fails_only_its_future() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let bad = pool.submit(|| -> u32 { panic!("boom {}", 42) }).unwrap();
    let good = pool.submit(|| 7u32).unwrap();
    match bad.result_timeout(LONG) {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "boom 42"),
        other => panic!("expected a panic error, got {other:?}"),
    }
    assert!(
        bad.exception()
            .unwrap()
            .unwrap()
            .to_string()
            .contains("boom 42")
    );
    assert_eq!(good.result_timeout(LONG), Ok(&7));
    // The same single worker is still alive and working.
    assert_eq!(pool.submit(|| 8u32).unwrap().result_timeout(LONG), Ok(&8));
    assert_eq!(pool.threads_started(), 1, "the worker survived the panic");
}

#[test]
fn panic_with_a_non_string_payload() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let f = pool.submit(|| std::panic::panic_any(17u8)).unwrap();
    assert!(matches!(
        f.result_timeout(LONG),
        Err(Error::Panicked { .. })
    ));
}

#[test]
fn no_stale_references_to_the_task() {
    // Python's test_no_stale_references: the closure (and what it captured)
    // is dropped once the task has run, even while the future and the pool
    // are alive.
    let (tx, rx) = mpsc::channel();
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let captured = DropSignal::new(1, &tx);
    // (Bind the whole value: `captured.id` alone would capture just the field.)
    let f = pool
        .submit(move || {
            let captured = captured;
            captured.id + 1
        })
        .unwrap();
    assert_eq!(
        rx.recv_timeout(LONG),
        Ok(1),
        "captured value not dropped after the task ran"
    );
    assert_eq!(f.result_timeout(LONG), Ok(&2));
    // A discarded future's value is dropped too.
    let tx2 = Mutex::new(tx.clone());
    drop(
        pool.submit(move || DropSignal::new(2, &tx2.lock().unwrap()))
            .unwrap(),
    );
    assert_eq!(rx.recv_timeout(LONG), Ok(2));
}

#[test]
fn cancelled_task_drops_its_closure() {
    let (tx, rx) = mpsc::channel();
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let blocker = pool.submit(move || g.wait()).unwrap();
    let captured = DropSignal::new(5, &tx);
    let f = pool
        .submit(move || {
            let captured = captured;
            captured.id
        })
        .unwrap();
    assert!(f.cancel());
    gate.open();
    blocker.result_timeout(LONG).unwrap();
    assert_eq!(
        rx.recv_timeout(LONG),
        Ok(5),
        "a cancelled task's closure is dropped"
    );
    assert_eq!(f.result(), Err(Error::Cancelled));
}

#[test]
fn cancel_queued_task_never_runs() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let gate = Gate::new();
    let g = gate.clone();
    let blocker = pool.submit(move || g.wait()).unwrap();
    let r = Arc::clone(&ran);
    let f = pool
        .submit(move || r.fetch_add(1, Ordering::SeqCst))
        .unwrap();
    assert!(f.cancel());
    assert!(!f.running());
    gate.open();
    blocker.result_timeout(LONG).unwrap();
    pool.shutdown(true, false);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(f.result(), Err(Error::Cancelled));
}

#[test]
fn running_task_cannot_be_cancelled() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let started = Gate::new();
    let gate = Gate::new();
    let (s, g) = (started.clone(), gate.clone());
    let f = pool
        .submit(move || {
            s.open();
            g.wait();
            3
        })
        .unwrap();
    started.wait();
    assert!(f.running());
    assert!(!f.cancel());
    assert!(!f.abort(), "threads cannot be stopped");
    gate.open();
    assert_eq!(f.result_timeout(LONG), Ok(&3));
}

/// CPython: `thread_name_prefix or "ThreadPoolExecutor-%d"`: an empty
/// prefix gives the default names.
#[test]
fn an_empty_thread_name_prefix_gives_the_default_names() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .thread_name_prefix("")
        .build()
        .unwrap();
    let name = pool
        .submit(thread_name)
        .unwrap()
        .result_timeout(LONG)
        .cloned();
    let name = name.unwrap();
    assert!(name.starts_with("ThreadPoolExecutor-"), "{name}");
    assert!(name.ends_with("_0"), "{name}");
}

#[test]
fn done_callbacks_run_in_the_worker() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .thread_name_prefix("cbpool")
        .build()
        .unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let f = pool.submit(move || g.wait()).unwrap();
    let (tx, rx) = mpsc::channel();
    f.add_done_callback(move |_| tx.send(thread_name()).unwrap());
    gate.open();
    assert_eq!(rx.recv_timeout(LONG).unwrap(), "cbpool_0");
}

#[test]
fn submit_from_inside_a_task() {
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let p = Arc::clone(&pool);
    let outer = pool.submit(move || p.submit(|| 5u32).unwrap()).unwrap();
    let inner = outer.into_result().unwrap();
    assert_eq!(inner.result_timeout(LONG), Ok(&5));
}

// ---- workers ---------------------------------------------------------------

#[test]
fn default_max_workers_is_min_32_cpus_plus_4() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = ThreadPoolExecutor::builder().build().unwrap();
    assert_eq!(pool.max_workers(), (cpus + 4).min(32));
    assert_eq!(pool.threads_started(), 0, "threads start lazily");
}

#[test]
fn max_workers_zero_is_invalid() {
    match ThreadPoolExecutor::new(0) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("greater than 0"), "{msg}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert!(matches!(
        ThreadPoolExecutor::builder().max_workers(0).build(),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn thread_name_prefix_with_nul_is_invalid() {
    // `std::thread::Builder::name` panics on a NUL byte: refuse it at build,
    // not with a panic inside `submit`.
    match ThreadPoolExecutor::builder()
        .thread_name_prefix("a\0b")
        .build()
    {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("NUL"), "{msg}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn saturation_starts_exactly_max_workers() {
    let pool = ThreadPoolExecutor::new(4).unwrap();
    let gate = Gate::new();
    let futures: Vec<_> = (0..15 * 4)
        .map(|_| {
            let g = gate.clone();
            pool.submit(move || g.wait()).unwrap()
        })
        .collect();
    assert_eq!(pool.threads_started(), 4);
    gate.open();
    for f in &futures {
        f.result_timeout(LONG).unwrap();
    }
    assert_eq!(pool.threads_started(), 4);
    pool.shutdown(true, false);
}

#[test]
fn idle_thread_reuse() {
    let pool = ThreadPoolExecutor::builder().build().unwrap();
    assert_eq!(
        pool.submit(|| 21 * 2).unwrap().result_timeout(LONG),
        Ok(&42)
    );
    assert_eq!(pool.submit(|| 6 * 7).unwrap().result_timeout(LONG), Ok(&42));
    assert_eq!(
        pool.submit(|| 3 * 14).unwrap().result_timeout(LONG),
        Ok(&42)
    );
    assert_eq!(pool.threads_started(), 1);
    pool.shutdown(true, false);
}

#[test]
fn idle_reuse_over_many_round_trips() {
    let pool = ThreadPoolExecutor::new(8).unwrap();
    for i in 0..200u32 {
        assert_eq!(pool.submit(move || i).unwrap().into_result(), Ok(i));
    }
    assert_eq!(pool.threads_started(), 1);
}

#[test]
fn never_more_than_max_workers_under_concurrent_submits() {
    let pool = Arc::new(ThreadPoolExecutor::new(3).unwrap());
    let names = Arc::new(Mutex::new(HashSet::new()));
    let submitters: Vec<_> = (0..4)
        .map(|_| {
            let pool = Arc::clone(&pool);
            let names = Arc::clone(&names);
            std::thread::spawn(move || {
                let fs: Vec<_> = (0..500)
                    .map(|_| {
                        let names = Arc::clone(&names);
                        pool.submit(move || names.lock().unwrap().insert(thread_name()))
                            .unwrap()
                    })
                    .collect();
                for f in fs {
                    f.result_timeout(LONG).unwrap();
                }
            })
        })
        .collect();
    for s in submitters {
        s.join().unwrap();
    }
    assert!(pool.threads_started() <= 3);
    assert!(names.lock().unwrap().len() <= 3);
}

#[test]
fn thread_names_with_prefix() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(5)
        .thread_name_prefix("SpecialPool")
        .build()
        .unwrap();
    // All five tasks meet at a barrier, so five distinct threads run them.
    let barrier = Arc::new(Barrier::new(5));
    let futures: Vec<_> = (0..5)
        .map(|_| {
            let b = Arc::clone(&barrier);
            pool.submit(move || {
                b.wait();
                thread_name()
            })
            .unwrap()
        })
        .collect();
    let mut names: Vec<String> = futures
        .into_iter()
        .map(|f| f.into_result().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        (0..5)
            .map(|i| format!("SpecialPool_{i}"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn thread_names_default() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let futures: Vec<_> = (0..2)
        .map(|_| {
            let b = Arc::clone(&barrier);
            pool.submit(move || {
                b.wait();
                thread_name()
            })
            .unwrap()
        })
        .collect();
    let names: Vec<String> = futures
        .into_iter()
        .map(|f| f.into_result().unwrap())
        .collect();
    let mut prefixes = HashSet::new();
    let mut indices = Vec::new();
    for name in &names {
        // ThreadPoolExecutor-{pool}_{n}
        let rest = name
            .strip_prefix("ThreadPoolExecutor-")
            .unwrap_or_else(|| panic!("bad name {name}"));
        let (pool_id, n) = rest.split_once('_').unwrap();
        assert!(pool_id.parse::<usize>().is_ok(), "{name}");
        prefixes.insert(pool_id.to_owned());
        indices.push(n.parse::<usize>().unwrap());
    }
    indices.sort_unstable();
    assert_eq!(indices, [0, 1]);
    assert_eq!(prefixes.len(), 1, "one pool, one prefix");
    // Two pools get different default prefixes.
    let other = ThreadPoolExecutor::new(1).unwrap();
    let other_name = other.submit(thread_name).unwrap().into_result().unwrap();
    assert!(!other_name.starts_with(&format!(
        "ThreadPoolExecutor-{}_",
        prefixes.iter().next().unwrap()
    )));
}

// ---- map -------------------------------------------------------------------

#[test]
fn map_in_input_order() {
    let pool = ThreadPoolExecutor::new(4).unwrap();
    let out: Vec<u64> = pool
        .map(|i: u64| i.pow(3), 0..100)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(out, (0..100u64).map(|i| i.pow(3)).collect::<Vec<_>>());
    // Items finishing in reverse order still come out in input order.
    let gates: Vec<Gate> = (0..4).map(|_| Gate::new()).collect();
    let gs = gates.clone();
    let mut it = pool
        .map(
            move |i: usize| {
                gs[i].wait();
                if i > 0 {
                    gs[i - 1].open();
                }
                i
            },
            0..4,
        )
        .unwrap();
    gates[3].open();
    let got: Vec<usize> = it.by_ref().map(Result::unwrap).collect();
    assert_eq!(got, [0, 1, 2, 3]);
}

#[test]
fn map_submits_without_iteration() {
    // Python's test_map_submits_without_iteration (issue 11777). Here the
    // iterator must stay alive: dropping it cancels what has not started.
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let finished = Arc::new(Mutex::new(Vec::new()));
    let fin = Arc::clone(&finished);
    let _not_iterated = pool
        .map(move |n: usize| fin.lock().unwrap().push(n), 0..10)
        .unwrap();
    pool.shutdown(true, false);
    let mut got = finished.lock().unwrap().clone();
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}

#[test]
fn map_one_panicking_item_does_not_end_the_iteration() {
    // Python's test_map_exception stops at the ZeroDivisionError; here the
    // failing item yields its error and the rest follow.
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let out: Vec<_> = pool
        .map(
            |(a, b): (i32, i32)| {
                if b == 0 {
                    panic!("division by zero")
                } else {
                    (a / b, a % b)
                }
            },
            [(1, 2), (1, 3), (1, 0), (1, 5)],
        )
        .unwrap()
        .collect();
    assert_eq!(out.len(), 4);
    assert_eq!(out[0], Ok((0, 1)));
    assert_eq!(out[1], Ok((0, 1)));
    assert!(
        matches!(&out[2], Err(Error::Panicked { message, .. }) if message == "division by zero")
    );
    assert_eq!(out[3], Ok((0, 1)));
}

#[test]
fn map_chunksize_gives_equal_results() {
    let pool = ThreadPoolExecutor::new(3).unwrap();
    // Failures first, in a row, alone and last.
    let fails = |i: u32| [0, 13, 14, 30, 49].contains(&i);
    let f = move |i: u32| if fails(i) { panic!("thirteen") } else { i * 2 };
    let expected: Vec<Result<u32, bool>> = (0..50)
        .map(|i| if fails(i) { Err(true) } else { Ok(i * 2) })
        .collect();
    let seen = |r: Result<u32, Error>| {
        r.map_err(|e| matches!(e, Error::Panicked { message, .. } if message == "thirteen"))
    };
    for chunksize in [1, 2, 3, 7, 49, 50, 100] {
        for buffersize in [None, Some(1), Some(3)] {
            let mut opts = MapOptions::new().chunksize(chunksize);
            if let Some(b) = buffersize {
                opts = opts.buffersize(b);
            }
            let map = pool.map_with(f, 0..50, opts.clone()).unwrap();
            let got: Vec<Result<u32, bool>> = map.map(seen).collect();
            assert_eq!(
                got, expected,
                "chunksize {chunksize}, buffersize {buffersize:?}"
            );
            // `fold` (what `sum` and `for_each` use) yields the same.
            let map = pool.map_with(f, 0..50, opts).unwrap();
            let folded = map.fold(Vec::new(), |mut got, r| {
                got.push(seen(r));
                got
            });
            assert_eq!(
                folded, expected,
                "fold: chunksize {chunksize}, buffersize {buffersize:?}"
            );
        }
    }
}

#[test]
fn map_zero_sizes_are_invalid_at_call_time() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    for opts in [
        MapOptions::new().chunksize(0),
        MapOptions::new().buffersize(0),
    ] {
        let r = Arc::clone(&ran);
        match pool.map_with(
            move |i: u32| r.fetch_add(i as usize, Ordering::SeqCst),
            0..10,
            opts.clone(),
        ) {
            Err(Error::InvalidArgument(_)) => {}
            Err(e) => panic!("{opts:?}: expected InvalidArgument, got {e:?}"),
            Ok(_) => panic!("{opts:?}: expected InvalidArgument, got a map"),
        }
    }
    assert_eq!(pool.threads_started(), 0, "nothing was submitted");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn map_timeout_while_the_only_worker_is_busy() {
    // Python's test_executor_map_current_future_cancel.
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Gate::new();
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let log_n_wait = {
        let log = Arc::clone(&log);
        let stop = stop.clone();
        move |ident: &'static str| {
            log.lock().unwrap().push(format!("{ident} started"));
            stop.wait();
            log.lock().unwrap().push(format!("{ident} stopped"));
        }
    };
    let first = {
        let f = log_n_wait.clone();
        pool.submit(move || f("first")).unwrap()
    };
    {
        let mut it = pool
            .map_with(
                log_n_wait,
                ["second", "third"],
                MapOptions::new().timeout(Duration::ZERO),
            )
            .unwrap();
        match it.next() {
            Some(Err(e)) => assert!(e.is_timeout(), "{e:?}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(it.next().is_none(), "the iteration ends after the timeout");
    }
    stop.open();
    first.result_timeout(LONG).unwrap();
    pool.shutdown(true, false);
    assert_eq!(*log.lock().unwrap(), ["first started", "first stopped"]);
}

#[test]
fn map_timeout_measured_from_the_call() {
    // Python's test_map_timeout: the quick items arrive, then the timeout.
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let mut it = pool
        .map_with(
            move |i: u32| {
                if i == 2 {
                    g.wait();
                }
                i
            },
            [0, 1, 2],
            MapOptions::new().timeout(Duration::from_secs(3)),
        )
        .unwrap();
    assert_eq!(it.next(), Some(Ok(0)));
    assert_eq!(it.next(), Some(Ok(1)));
    match it.next() {
        Some(Err(Error::Timeout { unfinished, total })) => assert_eq!((unfinished, total), (1, 3)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(it.next(), None);
    gate.open();
}

#[test]
fn map_buffersize_over_an_infinite_iterator() {
    let pool = ThreadPoolExecutor::new(4).unwrap();
    let consumed = Arc::new(AtomicUsize::new(0));
    let max_ahead = Arc::new(AtomicUsize::new(0));
    let (c, m) = (Arc::clone(&consumed), Arc::clone(&max_ahead));
    let buffersize = 2;
    let it = pool
        .map_with(
            move |i: usize| {
                // Started `i`, consumed `c`: i + 1 - c tasks are ahead.
                let ahead = (i + 1).saturating_sub(c.load(Ordering::SeqCst));
                m.fetch_max(ahead, Ordering::SeqCst);
                i.to_string()
            },
            0..,
            MapOptions::new().buffersize(buffersize),
        )
        .unwrap();
    for (n, s) in it.take(1000).enumerate() {
        assert_eq!(s, Ok(n.to_string()));
        consumed.fetch_add(1, Ordering::SeqCst);
    }
    let ahead = max_ahead.load(Ordering::SeqCst);
    assert!(
        ahead <= buffersize + 1,
        "{ahead} tasks were started ahead of the consumer"
    );
    assert!(ahead >= 1);
}

#[test]
fn map_buffersize_on_several_infinite_iterables() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let mut it = pool
        .map_with(
            |(a, b): (u64, u64)| a + b,
            (0..).zip(10..),
            MapOptions::new().buffersize(2),
        )
        .unwrap();
    for i in 0..50u64 {
        assert_eq!(it.next(), Some(Ok(2 * i + 10)));
    }
}

#[test]
fn map_buffersize_bounds_submission_without_consumption() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&started);
    let it = pool
        .map_with(
            move |_: u64| s.fetch_add(1, Ordering::SeqCst),
            0..,
            MapOptions::new().buffersize(3),
        )
        .unwrap();
    pool.shutdown(true, false);
    assert_eq!(
        started.load(Ordering::SeqCst),
        3,
        "exactly buffersize tasks before the first next()"
    );
    drop(it);
}

#[test]
fn map_dropping_the_iterator_cancels_what_has_not_started() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let gate = Gate::new();
    let started = Gate::new();
    let (r, g, s) = (Arc::clone(&ran), gate.clone(), started.clone());
    let mut it = pool
        .map(
            move |i: usize| {
                if i == 1 {
                    s.open();
                    g.wait();
                }
                r.lock().unwrap().push(i);
                i
            },
            0..10,
        )
        .unwrap();
    assert_eq!(it.next(), Some(Ok(0)));
    started.wait();
    drop(it);
    gate.open();
    pool.shutdown(true, false);
    assert_eq!(
        *ran.lock().unwrap(),
        [0, 1],
        "only the items already run or running ran"
    );
}

#[test]
fn map_dropped_before_iterating_leaves_the_work_running() {
    // Python's fire-and-forget `executor.map(f, items)`: the generator never
    // started, so nothing is cancelled.
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&ran);
    drop(
        pool.map(move |i: usize| r.lock().unwrap().push(i), 0..10)
            .unwrap(),
    );
    pool.shutdown(true, false);
    let mut ran = ran.lock().unwrap().clone();
    ran.sort_unstable();
    assert_eq!(ran, (0..10).collect::<Vec<_>>());
}

#[test]
fn map_after_partial_consumption_then_drop() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let gate = Gate::new();
    let (r, g) = (Arc::clone(&ran), gate.clone());
    let mut it = pool
        .map(
            move |i: usize| {
                if i == 2 {
                    g.wait();
                }
                r.fetch_add(1, Ordering::SeqCst);
                i
            },
            0..20,
        )
        .unwrap();
    assert_eq!(it.next(), Some(Ok(0)));
    assert_eq!(it.next(), Some(Ok(1)));
    drop(it);
    gate.open();
    pool.shutdown(true, false);
    // Items 0 and 1 ran; item 2 was running or cancelled; 3.. never ran.
    assert!(
        ran.load(Ordering::SeqCst) <= 3,
        "ran {}",
        ran.load(Ordering::SeqCst)
    );
}

#[test]
fn map_with_buffersize_after_shutdown_reports_shut_down_in_order() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let mut it = pool
        .map_with(|i: u32| i, 0.., MapOptions::new().buffersize(2))
        .unwrap();
    assert_eq!(it.next(), Some(Ok(0)));
    pool.shutdown(false, false);
    // Chunks already submitted still arrive, then the error, then the end.
    assert_eq!(it.next(), Some(Ok(1)));
    assert_eq!(it.next(), Some(Ok(2)));
    assert_eq!(it.next(), Some(Err(Error::ShutDown)));
    assert_eq!(it.next(), None);
}

#[test]
fn map_yields_owned_values_free_reference() {
    // Python's test_free_reference: the iterator keeps no reference to the
    // results it yielded.
    let (tx, rx) = mpsc::channel();
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let tx = Mutex::new(tx);
    let it = pool
        .map(
            move |i: usize| DropSignal::new(i, &tx.lock().unwrap()),
            0..10,
        )
        .unwrap();
    for (i, obj) in it.enumerate() {
        drop(obj.unwrap());
        assert_eq!(rx.recv_timeout(LONG), Ok(i));
    }
}

#[test]
fn map_over_borrowed_strs_and_empty_input() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let lens: Vec<usize> = pool
        .map(|s: &str| s.len(), ["a", "bb", "ccc"])
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(lens, [1, 2, 3]);
    assert_eq!(pool.map(|x: u8| x, Vec::new()).unwrap().count(), 0);
}

#[test]
fn debug_shows_the_settings() {
    let pool = ThreadPoolExecutor::new(3).unwrap();
    let s = format!("{pool:?}");
    assert!(s.contains("max_workers: 3"), "{s}");
}

#[test]
fn map_timeout_is_measured_from_the_call() {
    // The deadline runs from the `map` call, not from the first `next()`.
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let timeout = Duration::from_secs(1);
    let mut it = pool
        .map_with(
            move |_: u32| g.wait(),
            [0],
            MapOptions::new().timeout(timeout),
        )
        .unwrap();
    // Let the whole timeout pass before asking (a bounded wait on a gate
    // that nobody opens yet).
    let (tx, rx) = mpsc::channel::<()>();
    assert!(
        rx.recv_timeout(timeout + Duration::from_millis(100))
            .is_err()
    );
    drop(tx);
    let asked = Instant::now();
    assert!(matches!(it.next(), Some(Err(Error::Timeout { .. }))));
    assert!(
        asked.elapsed() < Duration::from_millis(900),
        "next() waited {:?} although the deadline had passed",
        asked.elapsed()
    );
    gate.open();
}

#[test]
fn map_items_cancelled_by_shutdown_yield_cancelled_and_continue() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let gate = Gate::new();
    let started = Gate::new();
    let (g, st) = (gate.clone(), started.clone());
    let it = pool
        .map(
            move |i: u32| {
                if i == 0 {
                    st.open();
                    g.wait();
                }
                i
            },
            0..5,
        )
        .unwrap();
    started.wait();
    pool.shutdown(false, true);
    gate.open();
    let got: Vec<_> = it.collect();
    assert_eq!(
        got,
        [
            Ok(0),
            Err(Error::Cancelled),
            Err(Error::Cancelled),
            Err(Error::Cancelled),
            Err(Error::Cancelled)
        ]
    );
}

#[test]
fn map_chunk_cancelled_by_shutdown_yields_one_error_per_item() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let gate = Gate::new();
    let started = Gate::new();
    let (g, st) = (gate.clone(), started.clone());
    let it = pool
        .map_with(
            move |i: u32| {
                if i == 0 {
                    st.open();
                    g.wait();
                }
                i
            },
            0..5,
            MapOptions::new().chunksize(2),
        )
        .unwrap();
    started.wait();
    pool.shutdown(false, true);
    gate.open();
    let got: Vec<_> = it.collect();
    // Chunks [0, 1] (running), [2, 3] and [4] (cancelled).
    assert_eq!(
        got,
        [
            Ok(0),
            Ok(1),
            Err(Error::Cancelled),
            Err(Error::Cancelled),
            Err(Error::Cancelled)
        ]
    );
}

#[test]
fn map_outliving_its_pool() {
    let mut it = {
        let pool = ThreadPoolExecutor::new(2).unwrap();
        pool.map_with(|i: u32| i * 10, 0.., MapOptions::new().buffersize(2))
            .unwrap()
        // The pool is dropped here: it waits for the two submitted items.
    };
    assert_eq!(it.next(), Some(Ok(0)));
    assert_eq!(it.next(), Some(Ok(10)));
    assert_eq!(it.next(), Some(Err(Error::ShutDown)));
    assert_eq!(it.next(), None);
}

#[test]
fn tasks_may_return_values_that_are_not_sync() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let f = pool.submit(|| std::cell::Cell::new(5u8)).unwrap();
    assert_eq!(f.result_timeout(LONG).map(std::cell::Cell::get), Ok(5));
    assert_eq!(f.into_result().map(std::cell::Cell::into_inner), Ok(5));
}

#[test]
fn huge_timeouts_mean_no_deadline() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let f = pool.submit(|| 1u8).unwrap();
    assert_eq!(f.result_timeout(Duration::MAX), Ok(&1));
    assert!(f.wait_timeout(Duration::MAX));
    let got: Vec<_> = pool
        .map_with(|x: u8| x, [1, 2], MapOptions::new().timeout(Duration::MAX))
        .unwrap()
        .collect();
    assert_eq!(got, [Ok(1), Ok(2)]);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// `map` equals a sequential map, item by item, whatever the chunk
        /// size, buffer size, input length and failing items.
        #[test]
        fn map_matches_sequential(
            len in 0usize..120,
            chunksize in 1usize..20,
            buffersize in proptest::option::of(1usize..6),
            workers in 1usize..5,
            failing in proptest::collection::hash_set(0usize..120, 0..8),
        ) {
            let pool = ThreadPoolExecutor::new(workers).unwrap();
            let failing = Arc::new(failing);
            let f = {
                let failing = Arc::clone(&failing);
                move |i: usize| if failing.contains(&i) { panic!("item {i} fails") } else { i * 7 }
            };
            let mut opts = MapOptions::new().chunksize(chunksize).timeout(LONG);
            if let Some(b) = buffersize {
                opts = opts.buffersize(b);
            }
            let got: Vec<Result<usize, String>> = pool
                .map_with(f, 0..len, opts)
                .unwrap()
                .map(|r| r.map_err(|e| match e {
                    Error::Panicked { message, .. } => message,
                    other => format!("unexpected {other:?}"),
                }))
                .collect();
            let expected: Vec<Result<usize, String>> = (0..len)
                .map(|i| if failing.contains(&i) { Err(format!("item {i} fails")) } else { Ok(i * 7) })
                .collect();
            prop_assert_eq!(got, expected);
        }
    }
}

#[test]
fn abort_on_a_queued_pool_task_cancels_it() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let blocker = pool.submit(move || g.wait()).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&ran);
    let queued = pool
        .submit(move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    assert!(queued.abort());
    assert!(queued.cancelled());
    gate.open();
    blocker.result_timeout(LONG).unwrap();
    pool.shutdown(true, false);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn done_callbacks_may_submit_follow_up_work() {
    // A chain of tasks, each submitted by the done callback of the one
    // before, from inside a worker.
    fn step(pool: &Arc<ThreadPoolExecutor>, n: usize, done: mpsc::Sender<usize>) {
        let f = pool.submit(move || n).unwrap();
        let p = Arc::clone(pool);
        f.add_done_callback(move |f| {
            let n = *f.result().unwrap();
            if n == 0 {
                done.send(n).unwrap();
            } else {
                step(&p, n - 1, done);
            }
        });
    }
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let (tx, rx) = mpsc::channel();
    step(&pool, 200, tx);
    assert_eq!(rx.recv_timeout(LONG), Ok(0));
}

#[test]
fn a_panicking_task_reports_message_and_location() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let line = line!() + 1;
    let f = pool.submit(|| -> u8 { panic!("located {}", 7) }).unwrap();
    match f.result_timeout(Duration::from_secs(30)) {
        Err(Error::Panicked {
            message, location, ..
        }) => {
            assert_eq!(message, "located 7");
            let location = location.expect("the pool records where the task panicked");
            assert!(
                location.starts_with(&format!("tests/thread_pool.rs:{line}:")),
                "{location}"
            );
        }
        other => panic!("expected a panic error, got {other:?}"),
    }
    // A panic outside any task still reaches the previous hook and unwinds
    // normally.
    assert!(std::panic::catch_unwind(|| panic!("outside")).is_err());
}
