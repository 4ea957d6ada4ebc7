//! `map_unordered` on the thread pool: every position exactly once, in
//! completion order, bounded submission, errors per item, cancellation on
//! drop, and the timeout. Every wait is bounded: the maps under test carry a
//! `LONG` timeout where a bug could otherwise block `next` forever.

mod core_util;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concurrent_futures::map::NO_POSITION;
use concurrent_futures::{Error, MapOptions, ThreadPoolExecutor};
use core_util::{Gate, LONG};

/// Options whose timeout turns a hang into a failed assertion.
fn bounded() -> MapOptions {
    MapOptions::new().timeout(LONG)
}

#[test]
fn every_position_exactly_once_with_its_own_result() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    for opts in [
        bounded(),
        bounded().chunksize(3),
        bounded().chunksize(7).buffersize(2),
    ] {
        let mut got: Vec<(usize, u64)> = pool
            .map_unordered_with(|n: u64| n * n, 0..200u64, opts)
            .unwrap()
            .map(|(i, r)| (i, r.unwrap()))
            .collect();
        got.sort_unstable();
        let want: Vec<(usize, u64)> = (0..200).map(|n| (n as usize, n * n)).collect();
        assert_eq!(got, want);
    }
}

#[test]
fn a_held_chunk_comes_last_while_the_others_are_yielded() {
    // Item 0 blocks its worker until the test has seen every other item:
    // an in-order map would wait for it and time out instead.
    for opts in [bounded(), bounded().buffersize(2)] {
        let pool = ThreadPoolExecutor::new(2).unwrap();
        let gate = Gate::new();
        let g = gate.clone();
        let mut it = pool
            .map_unordered_with(
                move |i: usize| {
                    if i == 0 {
                        g.wait();
                    }
                    i
                },
                0..20,
                opts.clone(),
            )
            .unwrap();
        let first: Vec<_> = it.by_ref().take(19).collect();
        let positions: HashSet<usize> = first.iter().map(|(i, _)| *i).collect();
        assert_eq!(positions, (1..20).collect(), "with {opts:?}");
        assert!(first.iter().all(|(i, r)| r == &Ok(*i)));
        gate.open();
        assert_eq!(it.next(), Some((0, Ok(0))));
        assert_eq!(it.next(), None);
    }
}

#[test]
fn buffersize_bounds_submission_over_an_infinite_input() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&pulled);
    let input = (0u64..).inspect(move |_| {
        p.fetch_add(1, Ordering::Relaxed);
    });
    let (buffersize, chunksize) = (4, 2);
    let opts = bounded().buffersize(buffersize).chunksize(chunksize);
    let got: Vec<(usize, u64)> = pool
        .map_unordered_with(|n: u64| n + 1, input, opts)
        .unwrap()
        .take(1000)
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    let positions: HashSet<usize> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(positions.len(), 1000, "no position twice");
    assert!(got.iter().all(|&(i, v)| v == i as u64 + 1));
    // At most `buffersize` chunks ahead of the one being yielded.
    let most = 1000 + (buffersize + 1) * chunksize;
    assert!(positions.iter().all(|&i| i < most));
    assert!(pulled.load(Ordering::Relaxed) <= most);
}

#[test]
fn one_failing_item_does_not_end_the_iteration() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let mut got: Vec<_> = pool
        .map_unordered_with(
            |n: u32| {
                if n == 3 {
                    panic!("bad item");
                }
                n
            },
            0..10,
            bounded().chunksize(4),
        )
        .unwrap()
        .collect();
    got.sort_by_key(|(i, _)| *i);
    assert_eq!(got.len(), 10);
    for (i, r) in got {
        if i == 3 {
            assert!(matches!(r, Err(Error::Panicked { .. })), "{r:?}");
        } else {
            assert_eq!(r, Ok(i as u32));
        }
    }
}

#[test]
fn a_cancelled_chunk_yields_one_error_per_position() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let gate = Gate::new();
    let started = Gate::new();
    let (g, st) = (gate.clone(), started.clone());
    let it = pool
        .map_unordered_with(
            move |i: u32| {
                if i == 0 {
                    st.open();
                    g.wait();
                }
                i
            },
            0..5,
            bounded().chunksize(2),
        )
        .unwrap();
    started.wait();
    pool.shutdown(false, true);
    gate.open();
    let mut got: Vec<_> = it.collect();
    got.sort_by_key(|(i, _)| *i);
    // Chunks [0, 1] (running), [2, 3] and [4] (cancelled).
    assert_eq!(
        got,
        [
            (0, Ok(0)),
            (1, Ok(1)),
            (2, Err(Error::Cancelled)),
            (3, Err(Error::Cancelled)),
            (4, Err(Error::Cancelled))
        ]
    );
}

#[test]
fn dropping_the_iterator_cancels_what_has_not_started() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let gate = Gate::new();
    let started = Gate::new();
    let (r, g, s) = (Arc::clone(&ran), gate.clone(), started.clone());
    let mut it = pool
        .map_unordered_with(
            move |i: usize| {
                if i == 1 {
                    s.open();
                    g.wait();
                }
                r.lock().unwrap().push(i);
                i
            },
            0..10,
            bounded(),
        )
        .unwrap();
    // One worker runs the chunks in submission order: 0 completes first.
    assert_eq!(it.next(), Some((0, Ok(0))));
    started.wait();
    drop(it);
    gate.open();
    pool.shutdown(true, false);
    assert_eq!(*ran.lock().unwrap(), [0, 1], "only what ran or was running");
}

#[test]
fn dropped_before_iterating_leaves_the_work_running() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&ran);
    drop(
        pool.map_unordered(move |i: usize| r.lock().unwrap().push(i), 0..10)
            .unwrap(),
    );
    pool.shutdown(true, false);
    let mut ran = ran.lock().unwrap().clone();
    ran.sort_unstable();
    assert_eq!(ran, (0..10).collect::<Vec<_>>());
}

#[test]
fn timeout_yields_one_error_then_cancels_and_ends() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let gate = Gate::new();
    let (r, g) = (Arc::clone(&ran), gate.clone());
    let mut it = pool
        .map_unordered_with(
            move |i: usize| {
                if i == 0 {
                    g.wait();
                }
                r.lock().unwrap().push(i);
                i
            },
            0..3,
            MapOptions::new().timeout(Duration::from_millis(100)),
        )
        .unwrap();
    assert_eq!(
        it.next(),
        Some((
            NO_POSITION,
            Err(Error::Timeout {
                unfinished: 3,
                total: 3
            })
        ))
    );
    assert_eq!(it.next(), None);
    gate.open();
    pool.shutdown(true, false);
    assert_eq!(*ran.lock().unwrap(), [0], "the rest was cancelled");
}

#[test]
fn zero_sizes_are_invalid_at_call_time() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    for opts in [
        MapOptions::new().chunksize(0),
        MapOptions::new().buffersize(0),
    ] {
        assert!(matches!(
            pool.map_unordered_with(|n: u8| n, 0..4, opts),
            Err(Error::InvalidArgument(_))
        ));
    }
}

#[test]
fn shut_down_under_a_buffered_map_is_reported_last_at_the_first_unsubmitted_position() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let mut it = pool
        .map_unordered_with(|n: usize| n, 0..10, bounded().buffersize(2))
        .unwrap();
    pool.shutdown(true, false);
    // Items 0 and 1 were submitted before the shutdown; taking one up tries
    // to submit item 2, which fails.
    let mut got: Vec<_> = it.by_ref().collect();
    let last = got.pop();
    got.sort_by_key(|(i, _)| *i);
    assert_eq!(got, [(0, Ok(0)), (1, Ok(1))]);
    assert_eq!(last, Some((2, Err(Error::ShutDown))));
}
