//! A task's own error is a failure of its future (issue 7, item 1):
//! `submit_fallible`, `Promise::set_failure` and `.fallible()` on `map`
//! make `Err` count in `wait(FirstException)`, `exception()`,
//! `as_completed` and `map`, keeping the error itself; `submit` still gives
//! the nested `Result` as a value.
//!
//! No sleeps: held tasks block on a gate the test opens, and every blocking
//! wait is bounded.
#![cfg(not(loom))]

mod core_util;
#[cfg(all(feature = "process", unix))]
mod process_util;

use std::error::Error as _;
use std::fmt;
use std::time::Instant;

use concurrent_futures::{
    Error, Promise, ReturnWhen, TaskError, ThreadPoolExecutor, Waitable, as_completed, wait,
};
use core_util::{Gate, LONG, bounded, same};

/// The user's own error type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    all(feature = "process", unix),
    derive(serde::Serialize, serde::Deserialize)
)]
struct Refused {
    code: u32,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused with code {}", self.code)
    }
}

impl std::error::Error for Refused {}

/// Checks that `error` is `Error::Failed` carrying `Refused { code }`,
/// through every way of reaching it.
fn assert_refused(error: &Error, code: u32) {
    let Error::Failed(task_error) = error else {
        panic!("expected Error::Failed, got {error:?}");
    };
    assert_eq!(task_error.type_name(), std::any::type_name::<Refused>());
    assert_eq!(task_error.message(), format!("refused with code {code}"));
    assert_eq!(
        task_error.downcast_ref::<Refused>(),
        Some(&Refused { code })
    );
    assert_eq!(
        error.to_string(),
        format!(
            "task failed: {}: refused with code {code}",
            std::any::type_name::<Refused>()
        )
    );
    // The standard chain: `Error`'s source is the user's error itself.
    let source = error.source().expect("Error::Failed has a source");
    assert_eq!(source.downcast_ref::<Refused>(), Some(&Refused { code }));
    let source = task_error.source().expect("TaskError has a source");
    assert_eq!(source.downcast_ref::<Refused>(), Some(&Refused { code }));
}

// ---- thread pool --------------------------------------------------------------

#[test]
fn wait_first_exception_returns_on_a_fallible_task_error() {
    bounded("wait(FirstException)", || {
        let pool = ThreadPoolExecutor::new(3).unwrap();
        let gate = Gate::new();
        let (g1, g2) = (gate.clone(), gate.clone());
        let held1 = pool.submit(move || g1.wait()).unwrap();
        let held2 = pool.submit(move || g2.wait()).unwrap();
        let failing = pool
            .submit_fallible(|| Err::<u32, _>(Refused { code: 1 }))
            .unwrap();
        let all: Vec<&dyn Waitable> = vec![&held1, &held2, &failing];
        let start = Instant::now();
        let w = wait(all, Some(LONG), ReturnWhen::FirstException);
        // Returned because of the failure, not because the time ran out.
        assert!(start.elapsed() < LONG, "wait ran into its timeout");
        assert_eq!(w.done.len(), 1);
        assert!(same(w.done[0], &failing));
        assert_eq!(w.not_done.len(), 2);
        gate.open();
        assert_eq!(held1.result_timeout(LONG), Ok(&()));
        assert_eq!(held2.result_timeout(LONG), Ok(&()));
    });
}

#[test]
fn exception_is_the_tasks_own_error() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let f = pool
        .submit_fallible(|| Err::<u32, _>(Refused { code: 7 }))
        .unwrap();
    let error = f.exception_timeout(LONG).unwrap().expect("the task failed");
    assert_refused(&error, 7);
    assert!(f.result().is_err());
    assert_refused(&f.into_result().unwrap_err(), 7);

    let ok = pool.submit_fallible(|| Ok::<_, Refused>(5u32)).unwrap();
    assert_eq!(ok.exception_timeout(LONG), Ok(None));
    assert_eq!(ok.into_result(), Ok(5));
}

#[test]
fn as_completed_yields_the_failed_future() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let good = pool.submit_fallible(|| Ok::<_, Refused>(1u32)).unwrap();
    let bad = pool
        .submit_fallible(|| Err::<u32, _>(Refused { code: 2 }))
        .unwrap();
    let mut failed = 0;
    let mut succeeded = 0;
    for f in as_completed([&good, &bad], Some(LONG)) {
        let f = f.unwrap();
        match f.exception().unwrap() {
            Some(error) => {
                assert!(std::ptr::eq(f, &bad));
                assert_refused(&error, 2);
                failed += 1;
            }
            None => {
                assert_eq!(f.result(), Ok(&1));
                succeeded += 1;
            }
        }
    }
    assert_eq!((failed, succeeded), (1, 1));
}

#[test]
fn map_fallible_yields_each_items_error_and_goes_on() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let check = |n: u32| {
        if n % 2 == 1 {
            Err(Refused { code: n })
        } else {
            Ok(n * 10)
        }
    };
    let results: Vec<Result<u32, Error>> = pool.map(check, 0..5).unwrap().fallible().collect();
    assert_eq!(results.len(), 5);
    for (n, r) in (0..5).zip(&results) {
        if n % 2 == 1 {
            assert_refused(r.as_ref().unwrap_err(), n);
        } else {
            assert_eq!(r, &Ok(n * 10));
        }
    }

    let mut unordered: Vec<(usize, Result<u32, Error>)> = pool
        .map_unordered(check, 0..5)
        .unwrap()
        .fallible()
        .collect();
    unordered.sort_by_key(|(i, _)| *i);
    let positions: Vec<usize> = unordered.iter().map(|(i, _)| *i).collect();
    assert_eq!(positions, [0, 1, 2, 3, 4]);
    for (i, r) in &unordered {
        let n = *i as u32;
        if n % 2 == 1 {
            assert_refused(r.as_ref().unwrap_err(), n);
        } else {
            assert_eq!(r, &Ok(n * 10));
        }
    }
}

#[test]
fn map_fallible_keeps_a_panic_an_error() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let results: Vec<Result<u32, Error>> = pool
        .map(
            |n: u32| -> Result<u32, Refused> {
                assert!(n != 1, "one is not allowed");
                Ok(n)
            },
            0..3,
        )
        .unwrap()
        .fallible()
        .collect();
    assert_eq!(results[0], Ok(0));
    assert!(matches!(&results[1], Err(Error::Panicked { .. })));
    assert_eq!(results[2], Ok(2));
}

#[test]
fn scope_submit_fallible_fails_its_future() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let codes = [3u32, 4];
    let errors: Vec<Option<Error>> = pool.scope(|s| {
        let futures: Vec<_> = codes
            .iter()
            .map(|c| {
                s.submit_fallible(move || {
                    if *c == 3 {
                        Err(Refused { code: *c })
                    } else {
                        Ok(*c)
                    }
                })
                .unwrap()
            })
            .collect();
        futures
            .iter()
            .map(|f| f.exception_timeout(LONG).unwrap())
            .collect()
    });
    assert_refused(errors[0].as_ref().unwrap(), 3);
    assert_eq!(errors[1], None);
}

#[test]
fn promise_set_failure_fails_the_future() {
    let (promise, future) = Promise::<u32>::new();
    let (_held, pending) = Promise::<u32>::new();
    promise.set_failure(Refused { code: 9 }).unwrap();
    let all: Vec<&dyn Waitable> = vec![&pending, &future];
    let start = Instant::now();
    let w = wait(all, Some(LONG), ReturnWhen::FirstException);
    assert!(start.elapsed() < LONG, "wait ran into its timeout");
    assert_eq!(w.done.len(), 1);
    assert!(same(w.done[0], &future));
    assert_refused(&future.exception().unwrap().unwrap(), 9);
    // A finished future cannot be failed again.
    assert!(matches!(
        promise.set_failure(Refused { code: 10 }),
        Err(Error::InvalidState(_))
    ));
    assert_refused(&future.into_result().unwrap_err(), 9);
}

#[test]
fn the_nested_form_stays_a_value() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let f = pool.submit(|| Err::<u32, _>(Refused { code: 4 })).unwrap();
    assert_eq!(f.exception_timeout(LONG), Ok(None));
    assert_eq!(f.into_result(), Ok(Err(Refused { code: 4 })));
    let items: Vec<_> = pool
        .map(|n: u32| Err::<u32, _>(Refused { code: n }), [6])
        .unwrap()
        .collect();
    assert_eq!(items, [Ok(Err(Refused { code: 6 }))]);
}

#[test]
fn task_errors_compare_by_type_name_and_message() {
    let a = TaskError::new(Refused { code: 1 });
    assert_eq!(a, TaskError::new(Refused { code: 1 }));
    assert_ne!(a, TaskError::new(Refused { code: 2 }));
    assert_eq!(a.clone(), a);
    assert_eq!(Error::Failed(a.clone()), Error::Failed(a));
}

// ---- process pool -------------------------------------------------------------

#[cfg(all(feature = "process", unix))]
mod process {
    use super::*;
    use crate::process_util::{Gates, LIMIT, gate};
    use concurrent_futures::{ProcessPoolExecutor, task};

    #[task]
    fn check(n: u32) -> Result<u32, Refused> {
        if n % 2 == 1 {
            Err(Refused { code: n })
        } else {
            Ok(n * 10)
        }
    }

    #[test]
    fn wait_first_exception_returns_on_a_process_task_error() {
        let pool = ProcessPoolExecutor::new(3).unwrap();
        let gates = Gates::new();
        let held1 = pool.submit(gate, gates.path.clone()).unwrap();
        let held2 = pool.submit(gate, gates.path.clone()).unwrap();
        let (_, first) = gates.started();
        let (_, second) = gates.started();
        let failing = pool.submit_fallible(check, 5).unwrap();
        let all: Vec<&dyn Waitable> = vec![&held1, &held2, &failing];
        let start = Instant::now();
        let w = wait(all, Some(LIMIT), ReturnWhen::FirstException);
        assert!(start.elapsed() < LIMIT, "wait ran into its timeout");
        assert_eq!(w.done.len(), 1);
        assert!(same(w.done[0], &failing));
        assert_eq!(w.not_done.len(), 2);
        gates.release(&first);
        gates.release(&second);
        assert!(held1.result_timeout(LIMIT).is_ok());
        assert!(held2.result_timeout(LIMIT).is_ok());
        assert_refused(&failing.into_result().unwrap_err(), 5);
    }

    #[test]
    fn exception_of_a_process_task_is_its_decoded_error() {
        let pool = ProcessPoolExecutor::new(1).unwrap();
        let bad = pool.submit_fallible(check, 3).unwrap();
        assert_refused(&bad.exception_timeout(LIMIT).unwrap().unwrap(), 3);
        let good = pool.submit_fallible(check, 2).unwrap();
        assert_eq!(good.exception_timeout(LIMIT), Ok(None));
        assert_eq!(good.into_result(), Ok(20));
    }

    #[test]
    fn as_completed_yields_the_failed_process_future() {
        let pool = ProcessPoolExecutor::new(2).unwrap();
        let good = pool.submit_fallible(check, 2).unwrap();
        let bad = pool.submit_fallible(check, 1).unwrap();
        let mut failed = 0;
        for f in as_completed([&good, &bad], Some(LIMIT)) {
            let f = f.unwrap();
            if let Some(error) = f.exception().unwrap() {
                assert!(std::ptr::eq(f, &bad));
                assert_refused(&error, 1);
                failed += 1;
            }
        }
        assert_eq!(failed, 1);
    }

    #[test]
    fn map_fallible_over_processes() {
        let pool = ProcessPoolExecutor::new(2).unwrap();
        let results: Vec<Result<u32, Error>> = pool.map(check, 0..4).unwrap().fallible().collect();
        assert_eq!(results[0], Ok(0));
        assert_refused(results[1].as_ref().unwrap_err(), 1);
        assert_eq!(results[2], Ok(20));
        assert_refused(results[3].as_ref().unwrap_err(), 3);

        let mut unordered: Vec<_> = pool
            .map_unordered(check, 0..2)
            .unwrap()
            .fallible()
            .collect();
        unordered.sort_by_key(|(i, _)| *i);
        assert_eq!(unordered[0], (0, Ok(0)));
        assert_eq!(unordered[1].0, 1);
        assert_refused(unordered[1].1.as_ref().unwrap_err(), 1);
    }

    #[test]
    fn the_nested_form_stays_a_value_in_processes() {
        let pool = ProcessPoolExecutor::new(1).unwrap();
        let f = pool.submit(check, 7).unwrap();
        assert_eq!(f.exception_timeout(LIMIT), Ok(None));
        assert_eq!(f.into_result(), Ok(Err(Refused { code: 7 })));
    }
}
