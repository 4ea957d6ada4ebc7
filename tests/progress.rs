//! `.progress()` (feature `progress`): the same items in the same order,
//! counted on the bar (position, length, failures), with no drawing when
//! stderr is not a terminal. Counts are read from hidden bars, so no test
//! needs a terminal.
#![cfg(feature = "progress")]

use std::process::{Command, Stdio};
use std::time::Duration;

use concurrent_futures::progress::indicatif::{ProgressBar, ProgressDrawTarget};
use concurrent_futures::{MapOptions, Promise, ThreadPoolExecutor, as_completed};

/// Panics on every seventh item.
fn bad_sevens(n: u32) -> u32 {
    if n % 7 == 3 {
        panic!("item {n} is bad");
    }
    n * 2
}

/// Items as comparable text (`Error` carries a backtrace-free message).
fn text<T: std::fmt::Debug>(items: impl Iterator<Item = T>) -> Vec<String> {
    items.map(|item| format!("{item:?}")).collect()
}

#[test]
fn map_yields_the_same_items_in_order_and_counts_failures() {
    let pool = ThreadPoolExecutor::new(3).unwrap();
    let plain = text(pool.map(bad_sevens, 0..200).unwrap());
    let bar = ProgressBar::hidden();
    let mut counted = pool
        .map(bad_sevens, 0..200)
        .unwrap()
        .progress_with(bar.clone());
    assert_eq!(
        bar.length(),
        Some(200),
        "all submitted by map: known at once"
    );
    let tracked = text(counted.by_ref());
    assert_eq!(tracked, plain);
    let failures = (0..200).filter(|n| n % 7 == 3).count() as u64;
    assert_eq!(counted.failures(), failures);
    assert_eq!((bar.position(), bar.length()), (200, Some(200)));
    assert_eq!(bar.message(), format!("{failures} failed"));
    drop(counted);
    assert!(bar.is_finished());
}

#[test]
fn a_chunked_map_counts_items_not_chunks() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let opts = MapOptions::new().chunksize(16);
    let bar = ProgressBar::hidden();
    let mut counted = pool
        .map_with(bad_sevens, 0..100, opts)
        .unwrap()
        .progress_with(bar.clone());
    assert_eq!(counted.by_ref().filter(Result::is_err).count(), 14);
    assert_eq!(counted.failures(), 14);
    assert_eq!((bar.position(), bar.length()), (100, Some(100)));
}

#[test]
fn a_buffered_map_learns_its_total_when_the_input_runs_out() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let opts = MapOptions::new().buffersize(4);
    let bar = ProgressBar::hidden();
    let mut counted = pool
        .map_with(|n: u32| n + 1, 0..100, opts)
        .unwrap()
        .progress_with(bar.clone());
    assert_eq!(counted.next().map(Result::unwrap), Some(1));
    assert_eq!(bar.length(), None, "only 5 of 100 submitted so far");
    let rest: Vec<u32> = counted.by_ref().map(Result::unwrap).collect();
    assert_eq!(rest, (2..=100).collect::<Vec<_>>());
    assert_eq!((bar.position(), bar.length()), (100, Some(100)));
    assert_eq!(counted.failures(), 0);
}

#[test]
fn a_length_given_up_front_is_kept() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let opts = MapOptions::new().buffersize(2);
    let bar = ProgressBar::with_draw_target(Some(30), ProgressDrawTarget::hidden());
    let mut counted = pool
        .map_with(|n: u32| n, 0..30, opts)
        .unwrap()
        .progress_with(bar);
    counted.next();
    assert_eq!(counted.bar().length(), Some(30));
    assert_eq!(counted.by_ref().count(), 29);
    assert_eq!(counted.bar().position(), 30);
}

#[test]
fn map_unordered_yields_every_position_once_and_counts_failures() {
    let pool = ThreadPoolExecutor::new(3).unwrap();
    let bar = ProgressBar::hidden();
    let mut counted = pool
        .map_unordered(bad_sevens, 0..120)
        .unwrap()
        .progress_with(bar.clone());
    let mut items: Vec<(usize, Option<u32>)> = counted.by_ref().map(|(i, r)| (i, r.ok())).collect();
    items.sort_unstable();
    let expected: Vec<(usize, Option<u32>)> = (0..120u32)
        .map(|n| (n as usize, (n % 7 != 3).then_some(n * 2)))
        .collect();
    assert_eq!(items, expected);
    assert_eq!(counted.failures(), 17);
    assert_eq!((bar.position(), bar.length()), (120, Some(120)));
}

#[test]
fn fallible_counts_the_tasks_own_errors() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let inputs = ["1", "x", "3", "", "5"];
    let plain = text(
        pool.map(|s: &str| s.parse::<u8>(), inputs)
            .unwrap()
            .fallible(),
    );
    let mut counted = pool
        .map(|s: &str| s.parse::<u8>(), inputs)
        .unwrap()
        .fallible()
        .progress_with(ProgressBar::hidden());
    assert_eq!(text(counted.by_ref()), plain);
    assert_eq!(counted.failures(), 2);
    assert_eq!(counted.bar().position(), 5);
}

#[test]
fn as_completed_counts_failed_futures_and_the_timeout() {
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let failing = pool.submit(|| -> u32 { panic!("no") }).unwrap();
    let fine = pool.submit(|| 1).unwrap();
    failing.exception().unwrap();
    fine.result().unwrap();
    let (_never, pending) = Promise::<u32>::new();
    let bar = ProgressBar::hidden();
    let mut counted =
        as_completed([failing, fine, pending], Some(Duration::ZERO)).progress_with(bar.clone());
    assert_eq!(bar.length(), Some(3));
    let items: Vec<bool> = counted.by_ref().map(|f| f.is_ok()).collect();
    // Two done futures, then the timeout for the third.
    assert_eq!(items, [true, true, false]);
    assert_eq!(counted.failures(), 2, "the panicked future and the timeout");
    assert_eq!((bar.position(), bar.length()), (3, Some(3)));
}

#[test]
fn a_map_cut_short_leaves_the_bar_where_it_stopped() {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let (gate, open) = Promise::<()>::new();
    let opts = MapOptions::new().timeout(Duration::from_millis(100));
    let bar = ProgressBar::hidden();
    let counted = pool
        .map_with(move |_: u32| open.wait(), 0..3, opts)
        .unwrap()
        .progress_with(bar.clone());
    let items: Vec<_> = counted.collect();
    assert_eq!(items.len(), 1);
    assert!(items[0].as_ref().unwrap_err().is_timeout());
    assert!(bar.is_finished());
    assert_eq!(
        (bar.position(), bar.length()),
        (1, Some(3)),
        "not shown as 100%"
    );
    gate.set_result(()).unwrap();

    // Dropped by the caller part-way: the same.
    let bar = ProgressBar::hidden();
    let taken = pool
        .map(|n: u32| n, 0..50)
        .unwrap()
        .progress_with(bar.clone())
        .take(5)
        .count();
    assert_eq!(taken, 5);
    assert!(bar.is_finished());
    assert_eq!((bar.position(), bar.length()), (5, Some(50)));
}

/// `.progress()` draws on stderr only when it is a terminal: run this test
/// again in a child process whose stderr is a pipe (with a `TERM` that
/// would draw), and check that the bar is hidden and nothing was written.
#[test]
fn nothing_is_drawn_when_stderr_is_not_a_terminal() {
    const CHILD: &str = "CONCURRENT_FUTURES_PROGRESS_TEST_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let pool = ThreadPoolExecutor::new(2).unwrap();
        let mut counted = pool.map(|n: u32| n, 0..500).unwrap().progress();
        assert!(counted.bar().is_hidden());
        assert_eq!(counted.by_ref().count(), 500);
        assert_eq!(counted.bar().position(), 500);
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "nothing_is_drawn_when_stderr_is_not_a_terminal",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran the test: {stdout}"
    );
    assert_eq!(stderr, "", "nothing drawn on a pipe");
}
