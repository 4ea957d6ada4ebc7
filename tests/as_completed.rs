//! `as_completed`: CPython's test_as_completed.py, ported, plus the crate's
//! guarantees: cancelled futures are yielded (never a hang), each future
//! once, and no reference kept to what was yielded.
#![cfg(not(loom))]

mod core_util;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{Error, Future, ThreadPoolExecutor, Waitable, as_completed};
use core_util::{DropSignal, Gate, LONG, cancelled, failed, finished, pending, running, same};

#[test]
fn no_timeout_yields_everything() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let canc = cancelled::<u32>();
    let err = failed::<u32>("e");
    let ok = finished(1u32);
    let f1 = pool.submit(|| 2u32 * 21).unwrap();
    let f2 = pool.submit(|| 7u32 * 6).unwrap();
    let all = [&canc, &err, &ok, &f1, &f2];
    let mut yielded = Vec::new();
    for f in as_completed(all, Some(LONG)) {
        yielded.push(f.unwrap());
    }
    assert_eq!(yielded.len(), 5);
    for f in all {
        assert_eq!(yielded.iter().filter(|y| std::ptr::eq(**y, f)).count(), 1);
    }
}

#[test]
fn already_finished_first_then_completion_order() {
    let (p1, a) = pending::<u32>();
    let done1 = finished(10u32);
    let (p2, b) = pending::<u32>();
    let done2 = cancelled::<u32>();
    let (p3, c) = pending::<u32>();
    let mut it = as_completed([&a, &done1, &b, &done2, &c], Some(LONG));
    // The done ones come first, in input order.
    assert!(std::ptr::eq(it.next().unwrap().unwrap(), &done1));
    assert!(std::ptr::eq(it.next().unwrap().unwrap(), &done2));
    // Then in the order they complete.
    p2.set_result(2).unwrap();
    assert!(std::ptr::eq(it.next().unwrap().unwrap(), &b));
    drop(p3); // abandoned: done with an error
    assert!(std::ptr::eq(it.next().unwrap().unwrap(), &c));
    p1.set_result(1).unwrap();
    assert!(std::ptr::eq(it.next().unwrap().unwrap(), &a));
    assert!(it.next().is_none());
    assert!(it.next().is_none(), "stays exhausted");
}

#[test]
fn each_future_once_even_when_several_complete_together() {
    let pairs: Vec<_> = (0..50).map(|_| pending::<usize>()).collect();
    let (promises, futures): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
    let it = as_completed(&futures, Some(LONG));
    for (i, p) in promises.into_iter().enumerate() {
        p.set_result(i).unwrap();
    }
    let mut seen: Vec<usize> = it.map(|f| *f.unwrap().result().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
}

#[test]
fn future_times_out() {
    for timeout in [Duration::ZERO, Duration::from_millis(100)] {
        let canc = cancelled::<u32>();
        let err = failed::<u32>("e");
        let ok = finished(1u32);
        let (_p, never) = pending::<u32>();
        let mut completed = Vec::new();
        let mut error = None;
        for f in as_completed([&canc, &never, &err, &ok], Some(timeout)) {
            match f {
                Ok(f) => completed.push(f),
                Err(e) => {
                    assert!(error.is_none(), "one timeout error, then the end");
                    error = Some(e);
                }
            }
        }
        assert_eq!(completed.len(), 3, "timeout {timeout:?}");
        assert!(!completed.iter().any(|f| std::ptr::eq(*f, &never)));
        assert_eq!(
            error,
            Some(Error::Timeout {
                unfinished: 1,
                total: 4
            })
        );
    }
}

#[test]
fn duplicate_futures_yield_once() {
    let (p, f) = pending::<u32>();
    let it = as_completed(std::iter::repeat_n(&f, 3), Some(LONG));
    p.set_result(1).unwrap();
    assert_eq!(it.count(), 1);
    let g = finished(2u32);
    assert_eq!(as_completed([&g, &g, &f, &g, &f], Some(LONG)).count(), 2);
}

#[test]
fn correct_timeout_exception_msg() {
    let canc = cancelled::<u32>();
    let (_p1, pend) = pending::<u32>();
    let (_p2, run) = running::<u32>();
    let ok = finished(1u32);
    let items: Vec<_> = as_completed([&canc, &pend, &run, &ok], Some(Duration::ZERO)).collect();
    assert_eq!(items.len(), 3);
    assert!(items[0].is_ok() && items[1].is_ok());
    let error = items[2].as_ref().unwrap_err();
    assert_eq!(
        *error,
        Error::Timeout {
            unfinished: 2,
            total: 4
        }
    );
    assert!(
        error.to_string().contains("2 (of 4) futures unfinished"),
        "{error}"
    );
    // One future: the same text, counted (CPython's "1 (of 1) futures
    // unfinished").
    let items: Vec<_> = as_completed([&pend], Some(Duration::ZERO)).collect();
    let error = items[0].as_ref().unwrap_err();
    assert!(
        error.to_string().contains("1 (of 1) futures unfinished"),
        "{error}"
    );
}

#[test]
fn duplicates_do_not_count_in_the_timeout_total() {
    let ok = finished(1u32);
    let (_p, pend) = pending::<u32>();
    let error = as_completed([&ok, &pend, &pend, &ok], Some(Duration::ZERO))
        .find_map(Result::err)
        .unwrap();
    assert_eq!(
        error,
        Error::Timeout {
            unfinished: 1,
            total: 2
        }
    );
}

#[test]
fn cancelled_futures_are_yielded_never_hang() {
    let pairs: Vec<_> = (0..4).map(|_| pending::<u32>()).collect();
    let (_promises, futures): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
    let futures: Vec<Arc<Future<u32>>> = futures.into_iter().map(Arc::new).collect();
    let to_cancel = futures.clone();
    let canceller = thread::spawn(move || {
        for f in &to_cancel {
            assert!(f.cancel());
        }
    });
    let mut n = 0;
    for f in as_completed(futures.clone(), Some(LONG)) {
        assert!(f.unwrap().cancelled());
        n += 1;
    }
    assert_eq!(n, 4);
    canceller.join().unwrap();
}

#[test]
fn cancel_pool_futures_while_iterating() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let gate = Gate::new();
    let g = gate.clone();
    let blocker = Arc::new(pool.submit(move || g.wait()).unwrap());
    let queued: Vec<Arc<Future<()>>> = (0..10)
        .map(|_| Arc::new(pool.submit(|| ()).unwrap()))
        .collect();
    let mut it = as_completed(queued.clone(), Some(LONG));
    for f in &queued {
        assert!(f.cancel());
    }
    let mut n = 0;
    for f in it.by_ref() {
        assert!(f.unwrap().cancelled());
        n += 1;
    }
    assert_eq!(n, 10);
    gate.open();
    blocker.result_timeout(LONG).unwrap();
}

#[test]
fn holds_no_reference_to_yielded_futures_arc() {
    // Python's test_free_reference_yielded_future, with Arc counts.
    let pairs: Vec<_> = (0..8).map(|_| pending::<u32>()).collect();
    let (promises, futures): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
    let mut futures: Vec<Arc<Future<u32>>> = futures.into_iter().map(Arc::new).collect();
    futures.push(Arc::new(cancelled()));
    futures.push(Arc::new(finished(42)));
    let originals = futures.clone();
    let mut it = as_completed(futures, Some(Duration::ZERO));
    let mut yielded = 0;
    for item in it.by_ref() {
        match item {
            Ok(f) => {
                let which = originals.iter().position(|o| Arc::ptr_eq(o, &f)).unwrap();
                drop(f);
                assert_eq!(
                    Arc::strong_count(&originals[which]),
                    1,
                    "iterator kept a reference"
                );
                yielded += 1;
            }
            Err(e) => assert_eq!(
                e,
                Error::Timeout {
                    unfinished: 8,
                    total: 10
                }
            ),
        }
    }
    assert_eq!(yielded, 2);
    drop(it);
    for o in &originals {
        assert_eq!(
            Arc::strong_count(o),
            1,
            "dropping the iterator releases the rest"
        );
    }

    // Without a timeout, completing one at a time.
    let pending_ones: Vec<Arc<Future<u32>>> = originals[..8].to_vec();
    let mut promises = promises.into_iter();
    promises.next().unwrap().set_result(0).unwrap();
    let mut n = 0;
    for f in as_completed(pending_ones.clone(), Some(LONG)) {
        let f = f.unwrap();
        let which = pending_ones
            .iter()
            .position(|o| Arc::ptr_eq(o, &f))
            .unwrap();
        drop(f);
        assert_eq!(
            Arc::strong_count(&pending_ones[which]),
            2,
            "only ours and `originals`"
        );
        n += 1;
        if let Some(p) = promises.next() {
            p.set_result(n).unwrap();
        }
    }
    assert_eq!(n, 8);
}

#[test]
fn holds_no_reference_to_yielded_futures_values() {
    // Owned futures: the value of a yielded future is dropped as soon as
    // the caller drops it, while the iterator is still alive.
    let (tx, rx) = mpsc::channel();
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let futures: Vec<Future<DropSignal>> = (0..6)
        .map(|i| {
            let tx = Mutex::new(tx.clone());
            pool.submit(move || DropSignal::new(i, &tx.lock().unwrap()))
                .unwrap()
        })
        .collect();
    let mut it = as_completed(futures, Some(LONG));
    let mut dropped = Vec::new();
    for _ in 0..6 {
        let f = it.next().unwrap().unwrap();
        let id = f.result().unwrap().id;
        drop(f);
        assert_eq!(
            rx.recv_timeout(LONG),
            Ok(id),
            "value not dropped with its future"
        );
        dropped.push(id);
    }
    assert!(it.next().is_none());
    dropped.sort_unstable();
    assert_eq!(dropped, (0..6).collect::<Vec<_>>());
}

#[test]
fn mixed_types_and_executors() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let a: Future<u32> = pool.submit(|| 1).unwrap();
    let b: Future<String> = pool.submit(|| "b".into()).unwrap();
    let (p, c) = pending::<Vec<u8>>();
    let all: Vec<&dyn Waitable> = vec![&a, &b, &c];
    let mut it = as_completed(all, Some(LONG));
    let first_two = [it.next().unwrap().unwrap(), it.next().unwrap().unwrap()];
    assert!(first_two.iter().any(|f| same(*f, &a)));
    assert!(first_two.iter().any(|f| same(*f, &b)));
    p.set_result(vec![1]).unwrap();
    assert!(same(it.next().unwrap().unwrap(), &c));
    assert!(it.next().is_none());
}

#[test]
fn yielded_futures_can_be_consumed() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let futures: Vec<_> = (1..=10u64)
        .map(|n| pool.submit(move || n * n).unwrap())
        .collect();
    let total: u64 = as_completed(futures, None)
        .map(|f| f.unwrap().into_result().unwrap())
        .sum();
    assert_eq!(total, 385);
}

#[test]
fn empty_input_ends_at_once() {
    assert_eq!(as_completed(Vec::<Future<u8>>::new(), None).count(), 0);
    assert_eq!(
        as_completed(Vec::<Future<u8>>::new(), Some(Duration::ZERO)).count(),
        0
    );
}

#[test]
fn dropping_the_iterator_early_unregisters() {
    let (p, f) = pending::<u32>();
    let it = as_completed([&f], Some(LONG));
    drop(it);
    // Completing afterwards must not touch the dropped iterator.
    p.set_result(1).unwrap();
    assert_eq!(f.result(), Ok(&1));
}

#[test]
fn timeout_is_measured_from_the_call() {
    let ok = finished(1u32);
    let (_p, never) = pending::<u32>();
    let timeout = Duration::from_secs(1);
    let mut it = as_completed([&ok, &never], Some(timeout));
    // Let the whole timeout pass before iterating.
    assert!(!never.wait_timeout(timeout + Duration::from_millis(100)));
    let asked = Instant::now();
    assert!(it.next().unwrap().is_ok());
    assert_eq!(
        it.next().unwrap().unwrap_err(),
        Error::Timeout {
            unfinished: 1,
            total: 2
        }
    );
    assert!(
        asked.elapsed() < Duration::from_millis(900),
        "waited {:?} although the deadline had passed",
        asked.elapsed()
    );
    assert!(it.next().is_none());
}

#[test]
fn huge_timeout_means_no_deadline() {
    let (p, f) = pending::<u32>();
    let it = as_completed([&f], Some(Duration::MAX));
    p.set_result(1).unwrap();
    assert_eq!(it.count(), 1);
}

#[test]
fn into_remaining_hands_back_the_unfinished_futures_after_a_timeout() {
    let (p1, f1) = concurrent_futures::Promise::<u32>::new();
    let (p2, f2) = concurrent_futures::Promise::<u32>::new();
    let (_p3, f3) = concurrent_futures::Promise::<u32>::new();
    p1.set_result(1).unwrap();
    let mut it =
        concurrent_futures::as_completed(vec![f1, f2, f3], Some(std::time::Duration::ZERO));
    assert_eq!(it.next().unwrap().unwrap().into_result(), Ok(1));
    assert!(it.next().unwrap().unwrap_err().is_timeout());
    let rest = it.into_remaining();
    assert_eq!(rest.len(), 2);
    // They are still live futures: completing one is seen through it.
    p2.set_result(2).unwrap();
    let done: Vec<u32> = rest
        .into_iter()
        .filter(|f| f.done())
        .map(|f| f.into_result().unwrap())
        .collect();
    assert_eq!(done, [2]);
}

// ---- as a Stream, for async code -------------------------------------------------

#[test]
fn as_completed_is_a_stream_that_wakes_on_completion() {
    use futures_core::Stream;
    use std::pin::Pin;

    let (p1, f1) = concurrent_futures::Promise::<u32>::new();
    let (p2, f2) = concurrent_futures::Promise::<u32>::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let got = rt.block_on(async move {
        let mut stream = as_completed(vec![f1, f2], Some(Duration::from_secs(30)));
        // Nothing is done yet: the first poll must park the task, and the
        // completions (from another thread) must wake it.
        let completer = std::thread::spawn(move || {
            p2.set_result(2).unwrap();
            p1.set_result(1).unwrap();
        });
        let mut got = Vec::new();
        while let Some(f) = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await {
            got.push(f.unwrap().into_result().unwrap());
        }
        completer.join().unwrap();
        got
    });
    assert_eq!(got, [2, 1], "completion order, each once");
}

/// Futures compare and hash by identity, so Python's `future_to_url`
/// idiom ports as is: the `&Future` that `as_completed` yields over the
/// map's keys indexes the map.
#[test]
fn futures_are_map_keys_by_identity() {
    use std::collections::HashMap;

    let pool = ThreadPoolExecutor::new(2).unwrap();
    let a = finished(7u32);
    let b = finished(7u32);
    assert_eq!(a, a);
    assert_ne!(a, b, "equal values, different futures");

    let urls = [
        "http://a.example/",
        "http://bb.example/",
        "http://ccc.example/",
    ];
    let future_to_url: HashMap<Future<usize>, &str> = urls
        .iter()
        .map(|&u| (pool.submit(move || u.len()).unwrap(), u))
        .collect();
    assert_eq!(future_to_url.len(), urls.len());
    let mut seen = Vec::new();
    for f in as_completed(future_to_url.keys(), Some(LONG)) {
        let f = f.unwrap();
        let url = future_to_url[f];
        assert_eq!(*f.result().unwrap(), url.len());
        seen.push(url);
    }
    seen.sort_unstable();
    assert_eq!(seen, urls);
}
