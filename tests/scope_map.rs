//! `Scope::map` / `Scope::map_with`: `map` whose closure and items borrow
//! from the stack. Every wait is bounded (the maps carry a `LONG` timeout,
//! gates give up after `LONG`).

mod core_util;

use std::sync::Mutex;

use concurrent_futures::{Error, MapOptions, ThreadPoolExecutor};
use core_util::{Gate, LONG};

#[test]
fn tasks_borrow_a_local_vec_of_strings() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let urls: Vec<String> = ["a", "bb", "ccc", "dddd"].map(String::from).to_vec();
    let lengths: Vec<usize> = pool.scope(|s| {
        s.map(|u: &String| u.len(), urls.iter())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    });
    assert_eq!(lengths, [1, 2, 3, 4]);
    // The closure may borrow too, not only the items.
    let suffix = String::from("!");
    let shouted: Vec<String> = pool.scope(|s| {
        s.map(|u: &String| format!("{u}{suffix}"), &urls)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    });
    assert_eq!(shouted, ["a!", "bb!", "ccc!", "dddd!"]);
}

#[test]
fn results_come_in_input_order_whatever_the_completion_order() {
    // Item 0 finishes last: it waits for a gate that item 9 opens.
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let gate = Gate::new();
    let items: Vec<usize> = (0..10).collect();
    let finished = Mutex::new(Vec::new());
    let got: Vec<usize> = pool.scope(|s| {
        let f = |i: &usize| {
            if *i == 0 {
                gate.wait();
            }
            finished.lock().unwrap().push(*i);
            if *i == 9 {
                gate.open();
            }
            *i
        };
        s.map_with(f, &items, MapOptions::new().timeout(LONG))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    });
    assert_eq!(got, items);
    assert_eq!(
        finished.lock().unwrap().last(),
        Some(&0),
        "0 completed last"
    );
}

#[test]
fn a_panicking_item_yields_its_error_and_the_rest_goes_on() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let items: Vec<i32> = vec![6, 0, 3, 2];
    for chunksize in [1, 3] {
        let got: Vec<_> = pool.scope(|s| {
            let opts = MapOptions::new().chunksize(chunksize).timeout(LONG);
            s.map_with(|d: &i32| 12 / d, &items, opts)
                .unwrap()
                .collect()
        });
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], Ok(2));
        assert!(matches!(got[1], Err(Error::Panicked { .. })), "{got:?}");
        assert_eq!(got[2..], [Ok(4), Ok(6)]);
    }
}

#[test]
fn chunksize_and_buffersize_give_the_same_results() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let data: Vec<u64> = (0..100).collect();
    let want: Vec<u64> = data.iter().map(|n| n * 3).collect();
    for opts in [
        MapOptions::new().chunksize(7),
        MapOptions::new().chunksize(100),
        MapOptions::new().chunksize(4).buffersize(3),
    ] {
        let got: Vec<u64> = pool.scope(|s| {
            s.map_with(|n: &u64| n * 3, &data, opts.clone().timeout(LONG))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        });
        assert_eq!(got, want, "with {opts:?}");
    }
}

#[test]
fn dropping_the_iterator_in_the_scope_cancels_what_has_not_started() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let ran = Mutex::new(Vec::new());
    let gate = Gate::new();
    let started = Gate::new();
    pool.scope(|s| {
        let mut it = s
            .map(
                |i: usize| {
                    if i == 1 {
                        started.open();
                        gate.wait();
                    }
                    ran.lock().unwrap().push(i);
                },
                0..10,
            )
            .unwrap();
        assert_eq!(it.next(), Some(Ok(())));
        started.wait();
        drop(it);
        gate.open();
    });
    assert_eq!(*ran.lock().unwrap(), [0, 1], "only what ran or was running");
}

#[test]
fn zero_sizes_are_invalid_at_call_time() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let data = [1u8, 2];
    pool.scope(|s| {
        assert!(matches!(
            s.map_with(|n: &u8| *n, &data, MapOptions::new().chunksize(0)),
            Err(Error::InvalidArgument(_))
        ));
    });
}
