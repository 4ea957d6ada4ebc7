//! Stress: many threads submitting, cancelling and waiting at once, hundreds
//! of thousands of tasks in all. Every future must end exactly once (counted
//! by its done callback), every task that ran must have a finished future,
//! and nothing may be lost or hang (every wait is bounded).
//!
//! Sized so that a debug build on a loaded 2-core machine stays well under
//! 20 s; `cargo test --release` runs more tasks.
#![cfg(not(loom))]

mod core_util;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};

use concurrent_futures::{
    Future, MapOptions, ReturnWhen, State, ThreadPoolExecutor, as_completed, wait,
};
use core_util::LONG;

fn scaled(debug: usize, release: usize) -> usize {
    if cfg!(debug_assertions) {
        debug
    } else {
        release
    }
}

type Shared = Arc<Future<usize>>;

struct Counters {
    /// One slot per future: how many times it ended (its callback ran).
    ends: Vec<AtomicU8>,
    callbacks: AtomicUsize,
    executed: AtomicUsize,
    finished: AtomicUsize,
    cancelled: AtomicUsize,
    cancel_true: AtomicUsize,
}

#[test]
fn submit_cancel_wait_storm() {
    const SUBMITTERS: usize = 4;
    const BATCH: usize = 250;
    let per_thread = scaled(75_000, 250_000);
    let total = SUBMITTERS * per_thread;
    let pool = Arc::new(ThreadPoolExecutor::new(4).unwrap());
    let counters = Arc::new(Counters {
        ends: (0..total).map(|_| AtomicU8::new(0)).collect(),
        callbacks: AtomicUsize::new(0),
        executed: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        cancelled: AtomicUsize::new(0),
        cancel_true: AtomicUsize::new(0),
    });

    // A canceller thread cancels futures that submitters hand it, racing
    // with the workers that start them.
    let (cancel_tx, cancel_rx) = mpsc::channel::<Shared>();
    let canceller = {
        let counters = Arc::clone(&counters);
        std::thread::spawn(move || {
            for f in cancel_rx {
                if f.cancel() {
                    assert_eq!(f.state(), State::Cancelled);
                    counters.cancel_true.fetch_add(1, Ordering::Relaxed);
                } else {
                    assert!(matches!(f.state(), State::Running | State::Finished));
                }
            }
        })
    };

    let start = Arc::new(Barrier::new(SUBMITTERS));
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|t| {
            let pool = Arc::clone(&pool);
            let counters = Arc::clone(&counters);
            let cancel_tx = cancel_tx.clone();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                for (b, batch_start) in (0..per_thread).step_by(BATCH).enumerate() {
                    let mut batch: Vec<Shared> = Vec::with_capacity(BATCH);
                    for i in batch_start..(batch_start + BATCH).min(per_thread) {
                        let id = t * per_thread + i;
                        let c = Arc::clone(&counters);
                        let f = pool
                            .submit(move || {
                                c.executed.fetch_add(1, Ordering::Relaxed);
                                id
                            })
                            .unwrap();
                        let c = Arc::clone(&counters);
                        f.add_done_callback(move |_| {
                            c.ends[id].fetch_add(1, Ordering::Relaxed);
                            c.callbacks.fetch_add(1, Ordering::Relaxed);
                        });
                        let f = Arc::new(f);
                        match i % 7 {
                            0 if f.cancel() => {
                                counters.cancel_true.fetch_add(1, Ordering::Relaxed);
                                assert!(f.cancelled());
                            }
                            3 => cancel_tx.send(Arc::clone(&f)).unwrap(),
                            _ => {}
                        }
                        batch.push(f);
                    }
                    // Wait for the batch in one of four ways.
                    match b % 4 {
                        0 => {
                            let w = wait(batch.iter(), Some(LONG), ReturnWhen::AllCompleted);
                            assert!(w.not_done.is_empty(), "wait(AllCompleted) timed out");
                        }
                        1 => {
                            // A timeout would be an Err item, not counted.
                            let n = as_completed(batch.iter(), Some(LONG))
                                .filter(Result::is_ok)
                                .count();
                            assert_eq!(n, batch.len());
                        }
                        2 => {
                            for f in &batch {
                                let _ =
                                    f.result_timeout(LONG).map_err(|e| assert!(!e.is_timeout()));
                            }
                        }
                        _ => {
                            let mut left: Vec<&Shared> = batch.iter().collect();
                            while !left.is_empty() {
                                let w = wait(left, Some(LONG), ReturnWhen::FirstCompleted);
                                assert!(!w.done.is_empty(), "wait(FirstCompleted) timed out");
                                left = w.not_done;
                            }
                        }
                    }
                    for f in &batch {
                        match f.state() {
                            State::Cancelled => {
                                counters.cancelled.fetch_add(1, Ordering::Relaxed);
                            }
                            State::Finished => {
                                let id = *f.result().unwrap();
                                assert!(id >= t * per_thread && id < (t + 1) * per_thread);
                                counters.finished.fetch_add(1, Ordering::Relaxed);
                            }
                            s => panic!("future not done after its wait: {s:?}"),
                        }
                    }
                }
            })
        })
        .collect();
    drop(cancel_tx);
    for s in submitters {
        s.join().unwrap();
    }
    canceller.join().unwrap();
    pool.shutdown(true, false);

    let c = &counters;
    let finished = c.finished.load(Ordering::SeqCst);
    let cancelled = c.cancelled.load(Ordering::SeqCst);
    assert_eq!(finished + cancelled, total, "every future ended");
    assert_eq!(
        c.executed.load(Ordering::SeqCst),
        finished,
        "a task ran iff its future finished"
    );
    assert_eq!(
        c.cancel_true.load(Ordering::SeqCst),
        cancelled,
        "cancel() said true iff cancelled"
    );
    eprintln!("storm: {total} futures, {finished} finished, {cancelled} cancelled");
    assert!(cancelled > 0, "some cancels won the race");
    // Callbacks run after waiters are woken; shutdown(wait) has joined the
    // workers that ran them, and cancels ran them in the cancelling thread.
    assert_eq!(
        c.callbacks.load(Ordering::SeqCst),
        total,
        "each callback ran once"
    );
    let wrong: Vec<usize> = (0..total)
        .filter(|&i| c.ends[i].load(Ordering::SeqCst) != 1)
        .take(10)
        .collect();
    assert!(
        wrong.is_empty(),
        "futures that did not end exactly once: {wrong:?}"
    );
}

#[test]
fn round_trips_from_many_threads_lose_no_wakeup() {
    // Sequential submit + result from several threads keeps workers
    // oscillating between idle and busy: a lost wake-up would leave a task
    // queued and fail its bounded wait.
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let per_thread = scaled(10_000, 50_000);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let f = pool.submit(move || t * i).unwrap();
                    assert_eq!(f.result_timeout(LONG), Ok(&(t * i)));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(pool.threads_started() <= 2);
}

#[test]
fn many_waiters_on_shared_futures() {
    // Futures completed by the pool while several threads wait on
    // overlapping sets with every ReturnWhen and as_completed.
    let pool = ThreadPoolExecutor::new(3).unwrap();
    let rounds = scaled(500, 2_000);
    for round in 0..rounds {
        let futures: Arc<Vec<Future<usize>>> = Arc::new(
            (0..32)
                .map(|i| pool.submit(move || i * round).unwrap())
                .collect(),
        );
        let waiters: Vec<_> = (0..3)
            .map(|k| {
                let fs = Arc::clone(&futures);
                std::thread::spawn(move || match k {
                    0 => wait(fs.iter(), Some(LONG), ReturnWhen::AllCompleted)
                        .done
                        .len(),
                    1 => as_completed(fs.iter(), Some(LONG))
                        .filter(Result::is_ok)
                        .count(),
                    _ => {
                        let w = wait(fs.iter(), Some(LONG), ReturnWhen::FirstCompleted);
                        assert!(!w.done.is_empty());
                        32
                    }
                })
            })
            .collect();
        for w in waiters {
            assert_eq!(w.join().unwrap(), 32);
        }
        for (i, f) in futures.iter().enumerate() {
            assert_eq!(f.result(), Ok(&(i * round)));
        }
    }
}

#[test]
fn concurrent_maps_with_buffersize() {
    let pool = Arc::new(ThreadPoolExecutor::new(4).unwrap());
    let n = scaled(50_000, 200_000);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let opts = MapOptions::new().buffersize(8).chunksize(1 + t * 3);
                let mut expected = 0u64;
                for r in pool.map_with(|x: u64| x * 3, 0.., opts).unwrap().take(n) {
                    assert_eq!(r, Ok(expected * 3));
                    expected += 1;
                }
                expected
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), n as u64);
    }
}

#[test]
fn shutdown_with_cancel_under_load() {
    // Submitters race with shutdown(cancel_futures): every future that was
    // accepted ends exactly once, finished or cancelled.
    for _ in 0..scaled(20, 60) {
        let pool = Arc::new(ThreadPoolExecutor::new(3).unwrap());
        let ends = Arc::new(AtomicUsize::new(0));
        let go = Arc::new(Barrier::new(4));
        let submitters: Vec<_> = (0..3)
            .map(|_| {
                let pool = Arc::clone(&pool);
                let ends = Arc::clone(&ends);
                let go = Arc::clone(&go);
                std::thread::spawn(move || {
                    go.wait();
                    let mut accepted = Vec::new();
                    for i in 0..2_000usize {
                        let Ok(f) = pool.submit(move || i) else { break };
                        let e = Arc::clone(&ends);
                        f.add_done_callback(move |_| {
                            e.fetch_add(1, Ordering::SeqCst);
                        });
                        accepted.push(f);
                    }
                    accepted
                })
            })
            .collect();
        go.wait();
        pool.shutdown(true, true);
        let mut accepted = 0;
        for s in submitters {
            for f in s.join().unwrap() {
                assert!(f.wait_timeout(LONG));
                match f.result() {
                    Ok(_) | Err(concurrent_futures::Error::Cancelled) => {}
                    Err(e) => panic!("unexpected {e:?}"),
                }
                accepted += 1;
            }
        }
        assert_eq!(ends.load(Ordering::SeqCst), accepted);
    }
}

#[test]
fn concurrent_scopes_with_cancellations() {
    // Several threads run scopes on one pool at once; each scope cancels some
    // of its own queued tasks. Every scope must return with all its
    // non-cancelled tasks done, and borrowed counters must add up.
    let pool = Arc::new(ThreadPoolExecutor::new(3).unwrap());
    let rounds = scaled(100, 400);
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    let ran = AtomicUsize::new(0);
                    let cancelled = pool.scope(|s| {
                        let futures: Vec<_> = (0..64)
                            .map(|_| {
                                s.submit(|| {
                                    ran.fetch_add(1, Ordering::Relaxed);
                                })
                                .unwrap()
                            })
                            .collect();
                        futures.iter().step_by(3).filter(|f| f.cancel()).count()
                    });
                    assert_eq!(ran.load(Ordering::Relaxed) + cancelled, 64);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn many_awaits_on_a_multi_thread_runtime() {
    // Wakers registered by `.await` race with completions on the pool; a
    // lost wake-up leaves a tokio task pending forever (bounded below).
    let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
    let n = scaled(20_000, 100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let total = rt.block_on(async move {
        let mut handles = Vec::with_capacity(n / 100);
        for chunk in 0..n / 100 {
            let pool = Arc::clone(&pool);
            handles.push(tokio::spawn(async move {
                let mut sum = 0usize;
                for i in 0..100 {
                    let f = pool.submit(move || chunk * 100 + i).unwrap();
                    sum += tokio::time::timeout(LONG, f)
                        .await
                        .expect("lost wake-up")
                        .unwrap();
                }
                sum
            }));
        }
        let mut total = 0usize;
        for h in handles {
            total += h.await.unwrap();
        }
        total
    });
    assert_eq!(total, n * (n - 1) / 2);
}
