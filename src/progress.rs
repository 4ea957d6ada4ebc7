//! Progress bars (feature `progress`): `.progress()` on a `map`,
//! `map_unordered` or `as_completed` draws a terminal bar on stderr and
//! yields exactly the same items.
//!
//! ```
//! use concurrent_futures::ThreadPoolExecutor;
//!
//! let pool = ThreadPoolExecutor::new(4).unwrap();
//! let squares: Vec<u64> = pool
//!     .map(|n: u64| n * n, 0..1000)
//!     .unwrap()
//!     .progress()
//!     .collect::<Result<_, _>>()
//!     .unwrap();
//! assert_eq!(squares[999], 999 * 999);
//! ```
//!
//! On a terminal the bar reads like this (a frame captured in an 80-column
//! terminal, half-way through a `map` of 1,000 items; in colour, redrawn at
//! most 20 times a second, the bar as wide as the terminal allows, left as
//! it is when the iteration ends):
//!
//! ```text
//! [00:00:01] ███████████▌░░░░░░░░░░░ 497/1,000 items · 368.8/s · ETA 1s · 6 failed
//! ```
//!
//! - The count is the number of items yielded so far. Every item counts,
//!   whether a value or an error, and so does the one error that ends an
//!   iteration early (a timeout).
//! - The failures are the items that are `Err`: a panicking or failing
//!   task, a cancelled or lost chunk (one per item), a timeout. For
//!   `as_completed`, whose items are futures, a future that finished with
//!   an error counts too (a cancelled one does not, as in
//!   [`ReturnWhen::FirstException`](crate::ReturnWhen::FirstException)).
//! - The total is exact, never a guess. `map` and `map_unordered` without a
//!   buffersize submit their whole input before the call returns, so the
//!   total is known from the start. With a buffersize the input is read as
//!   the iteration goes: the total (the number of items submitted) is known
//!   only once the input has run out, and until then the bar shows the
//!   count and the rate without a bar or ETA (for an endless input, for
//!   ever). For `as_completed` it is the number of futures (each counted
//!   once). To show a total you know in advance, pass a bar of that length
//!   to `progress_with` (`ProgressBar::new(n)`): the bar's own length is
//!   kept unless the submitted count outgrows it.
//! - It draws nothing when stderr is not a terminal (a pipe, a file, a CI
//!   log) or `TERM` is `dumb`: indicatif's
//!   [`ProgressDrawTarget::stderr`](indicatif::ProgressDrawTarget::stderr)
//!   hides the bar then, and counting costs an atomic add and a clock read
//!   per item.
//!
//! Without the feature, `progress` and this module do not exist and the
//! iterators carry nothing for them.

use std::fmt;

pub use indicatif;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::map::Fallible;
use crate::{AsCompleted, Map, MapUnordered, Waitable};

/// The iterator of `.progress()`: the same items as the iterator it wraps,
/// in the same order, counted on a progress bar (see the [module
/// docs](self)).
///
/// Dropping it leaves the bar where the iteration stopped (it does not
/// jump to 100%), and drops the wrapped iterator, which cancels what it
/// would cancel.
///
/// ```
/// use concurrent_futures::ThreadPoolExecutor;
/// use concurrent_futures::progress::indicatif::ProgressBar;
///
/// let pool = ThreadPoolExecutor::new(2).unwrap();
/// let mut results = pool
///     .map(|n: u32| if n == 3 { panic!("bad item") } else { n }, 0..10)
///     .unwrap()
///     .progress_with(ProgressBar::hidden());
/// let values: Vec<u32> = results.by_ref().filter_map(Result::ok).collect();
/// assert_eq!(values, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
/// assert_eq!((results.bar().position(), results.bar().length()), (10, Some(10)));
/// assert_eq!(results.failures(), 1);
/// ```
#[must_use = "a Progress yields its results only when iterated"]
pub struct Progress<I> {
    inner: I,
    bar: ProgressBar,
    failures: u64,
    /// The length last given to the bar (`None`: not known yet).
    len: Option<u64>,
    /// What the items are called, when this module styles the bar (it made
    /// it); `None` for a bar of the caller's, whose style is left alone.
    unit: Option<&'static str>,
    ended: bool,
}

impl<I> Progress<I> {
    /// A bar on stderr, styled here; hidden when stderr is not a terminal.
    fn on_stderr(inner: I, unit: &'static str, total: Option<usize>) -> Progress<I> {
        // Styled before it is shown, so that its first frame is ours.
        let len = total.map(|n| n as u64);
        let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::hidden());
        let progress = Progress::start(inner, bar, Some(unit));
        progress.restyle();
        progress.bar.set_draw_target(ProgressDrawTarget::stderr());
        progress
    }

    /// Counts on `bar` as it is.
    fn with_bar(inner: I, bar: ProgressBar, total: Option<usize>) -> Progress<I> {
        let mut progress = Progress::start(inner, bar, None);
        progress.set_total(total);
        progress
    }

    fn start(inner: I, bar: ProgressBar, unit: Option<&'static str>) -> Progress<I> {
        bar.set_message("0 failed");
        let len = bar.length();
        Progress {
            inner,
            bar,
            failures: 0,
            len,
            unit,
            ended: false,
        }
    }

    /// The bar it counts on: its `position()` is the number of items
    /// yielded, its `length()` the total once known.
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    /// use concurrent_futures::progress::indicatif::ProgressBar;
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let mut squares = pool.map(|n: u64| n * n, 0..4).unwrap().progress_with(ProgressBar::hidden());
    /// assert_eq!(squares.bar().length(), Some(4)); // all submitted by `map`
    /// squares.next();
    /// assert_eq!(squares.bar().position(), 1);
    /// ```
    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }

    /// How many of the items yielded so far were failures.
    ///
    /// ```
    /// use concurrent_futures::{ThreadPoolExecutor, as_completed};
    /// use concurrent_futures::progress::indicatif::ProgressBar;
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let futures: Vec<_> = (0..4u32)
    ///     .map(|n| pool.submit(move || if n == 2 { panic!("no") } else { n }).unwrap())
    ///     .collect();
    /// let mut done = as_completed(futures, None).progress_with(ProgressBar::hidden());
    /// assert_eq!(done.by_ref().count(), 4);
    /// assert_eq!(done.failures(), 1); // the future that panicked
    /// ```
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Records the total, if now known and larger than the bar's length.
    fn set_total(&mut self, total: Option<usize>) {
        let Some(total) = total else { return };
        let total = total as u64;
        if self.len.is_some_and(|len| len >= total) {
            return;
        }
        let first = self.len.is_none();
        self.len = Some(total);
        self.bar.set_length(total);
        if first {
            self.restyle();
        }
    }

    /// This module's style: a bar with an ETA once the total is known, a
    /// spinner with the count and rate before.
    fn restyle(&self) {
        let Some(unit) = self.unit else { return };
        let template = match self.len {
            // The bar takes the width the rest leaves on the terminal.
            Some(_) => format!(
                "[{{elapsed_precise}}] {{wide_bar:.cyan/blue}} {{human_pos}}/{{human_len}} {unit} \
                 · {{per_sec:1}} · ETA {{eta}} · {{msg}}"
            ),
            None => format!(
                "[{{elapsed_precise}}] {{spinner:.cyan}} {{human_pos}} {unit} · {{per_sec:1}} · {{msg}}"
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(&template) {
            self.bar.set_style(style.progress_chars("█▉▊▋▌▍▎▏░"));
        }
    }

    /// Counts one item yielded (`Some(failed)`), or the end of the
    /// iteration (`None`), after updating the total.
    fn step(&mut self, item: Option<bool>, total: Option<usize>) {
        self.set_total(total);
        match item {
            Some(failed) => {
                if failed {
                    self.failures += 1;
                    self.bar.set_message(format!("{} failed", self.failures));
                }
                // The error that ends an iteration early comes on top of
                // the submitted items: never show more done than in all.
                if self.len.is_some_and(|len| self.bar.position() >= len) {
                    self.len = Some(self.bar.position() + 1);
                    self.bar.set_length(self.bar.position() + 1);
                }
                self.bar.inc(1);
            }
            None => self.end(),
        }
    }

    /// Leaves the bar drawn as it stands: an iteration cut short (by a
    /// timeout, or by the caller) does not show 100%.
    fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            self.bar.abandon();
            // indicatif leaves the cursor at the end of the bar: what the
            // program prints next starts on a line of its own.
            if self.unit.is_some() && !self.bar.is_hidden() {
                eprintln!();
            }
        }
    }
}

/// `Some(submitted)` once that is all there will be.
fn known((submitted, all): (usize, bool)) -> Option<usize> {
    all.then_some(submitted)
}

impl<'a, T> Map<'a, T> {
    /// The same items, counted on a progress bar on stderr (drawn only if
    /// stderr is a terminal): count/total, rate, ETA and failures. See the
    /// [`progress`](crate::progress) module for what is counted.
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let doubled: Vec<_> = pool.map(|n: u32| n * 2, 0..100).unwrap().progress().collect();
    /// assert_eq!(doubled[99], Ok(198));
    /// ```
    pub fn progress(self) -> Progress<Self> {
        let total = known(self.submitted());
        Progress::on_stderr(self, "items", total)
    }

    /// The same items, counted on `bar`, whose draw target, style and
    /// length (if set) are kept; its message becomes the failure count
    /// (`"2 failed"`). See [`Progress`].
    ///
    /// ```
    /// use concurrent_futures::{MapOptions, ThreadPoolExecutor};
    /// use concurrent_futures::progress::indicatif::ProgressBar;
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// // A buffered map learns its total only at the end; say it up front.
    /// let opts = MapOptions::new().buffersize(4);
    /// let results = pool.map_with(|n: u32| n + 1, 0..50, opts).unwrap();
    /// let mut counted = results.progress_with(ProgressBar::new(50).with_prefix("adding"));
    /// assert_eq!(counted.by_ref().count(), 50);
    /// assert_eq!(counted.bar().length(), Some(50));
    /// ```
    pub fn progress_with(self, bar: ProgressBar) -> Progress<Self> {
        let total = known(self.submitted());
        Progress::with_bar(self, bar, total)
    }
}

impl<'a, T> MapUnordered<'a, T> {
    /// The same `(position, result)` pairs in the same order, counted on a
    /// progress bar on stderr (drawn only if stderr is a terminal); see
    /// [`Map::progress`].
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let mut seen: Vec<usize> =
    ///     pool.map_unordered(|n: u32| n, 0..100).unwrap().progress().map(|(i, _)| i).collect();
    /// seen.sort_unstable();
    /// assert_eq!(seen, (0..100).collect::<Vec<_>>());
    /// ```
    pub fn progress(self) -> Progress<Self> {
        let total = known(self.submitted());
        Progress::on_stderr(self, "items", total)
    }

    /// The same pairs, counted on `bar` (see [`Map::progress_with`]).
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    /// use concurrent_futures::progress::indicatif::ProgressBar;
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let mut counted =
    ///     pool.map_unordered(|n: u32| n, 0..10).unwrap().progress_with(ProgressBar::hidden());
    /// assert_eq!(counted.by_ref().count(), 10);
    /// assert_eq!(counted.bar().position(), 10);
    /// ```
    pub fn progress_with(self, bar: ProgressBar) -> Progress<Self> {
        let total = known(self.submitted());
        Progress::with_bar(self, bar, total)
    }
}

impl<I> Fallible<I> {
    /// The same items, counted on a progress bar on stderr (drawn only if
    /// stderr is a terminal); a task's own `Err` counts as a failure. See
    /// [`Map::progress`].
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let parsed: Vec<_> =
    ///     pool.map(|s: &str| s.parse::<u8>(), ["1", "x"]).unwrap().fallible().progress().collect();
    /// assert_eq!(parsed[0], Ok(1));
    /// assert!(parsed[1].is_err());
    /// ```
    pub fn progress(self) -> Progress<Self>
    where
        Self: Tracked,
    {
        let total = self.total();
        Progress::on_stderr(self, "items", total)
    }

    /// The same items, counted on `bar` (see [`Map::progress_with`]).
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    /// use concurrent_futures::progress::indicatif::ProgressBar;
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let mut parsed = pool
    ///     .map_unordered(|s: &str| s.parse::<u8>(), ["1", "x", "y"])
    ///     .unwrap()
    ///     .fallible()
    ///     .progress_with(ProgressBar::hidden());
    /// assert_eq!(parsed.by_ref().count(), 3);
    /// assert_eq!(parsed.failures(), 2);
    /// ```
    pub fn progress_with(self, bar: ProgressBar) -> Progress<Self>
    where
        Self: Tracked,
    {
        let total = self.total();
        Progress::with_bar(self, bar, total)
    }
}

impl<W: Waitable> AsCompleted<W> {
    /// The same futures in the same order, counted on a progress bar on
    /// stderr (drawn only if stderr is a terminal): done/total, rate, ETA,
    /// and failures (futures that finished with an error, and the timeout).
    ///
    /// ```
    /// use concurrent_futures::{ThreadPoolExecutor, as_completed};
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let futures: Vec<_> = (0..20u64).map(|n| pool.submit(move || n).unwrap()).collect();
    /// let total: u64 =
    ///     as_completed(futures, None).progress().map(|f| f.unwrap().into_result().unwrap()).sum();
    /// assert_eq!(total, 190);
    /// ```
    pub fn progress(self) -> Progress<Self> {
        let total = Some(self.total());
        Progress::on_stderr(self, "futures", total)
    }

    /// The same futures, counted on `bar` (see [`Map::progress_with`]).
    ///
    /// ```
    /// use concurrent_futures::{Promise, as_completed};
    /// use concurrent_futures::progress::indicatif::ProgressBar;
    ///
    /// let (p, f) = Promise::new();
    /// p.set_result(1).unwrap();
    /// let mut done = as_completed([f], None).progress_with(ProgressBar::hidden());
    /// assert_eq!(done.bar().length(), Some(1));
    /// assert!(done.next().is_some());
    /// assert_eq!(done.bar().position(), 1);
    /// ```
    pub fn progress_with(self, bar: ProgressBar) -> Progress<Self> {
        let total = Some(self.total());
        Progress::with_bar(self, bar, total)
    }
}

/// What a [`Progress`] needs of the iterator it wraps: whether an item is a
/// failure, and the total once known. Implemented by [`Map`],
/// [`MapUnordered`], [`AsCompleted`] and their [`Fallible`] forms; not
/// meant to be implemented elsewhere.
pub trait Tracked: Iterator + sealed::Sealed {
    /// Whether `item` counts as a failure.
    #[doc(hidden)]
    fn failed(item: &Self::Item) -> bool;

    /// The number of items it yields in all, once known.
    #[doc(hidden)]
    fn total(&self) -> Option<usize>;
}

mod sealed {
    pub trait Sealed {}
}

impl<T> sealed::Sealed for Map<'_, T> {}
impl<T> Tracked for Map<'_, T> {
    fn failed(item: &Self::Item) -> bool {
        item.is_err()
    }

    fn total(&self) -> Option<usize> {
        known(self.submitted())
    }
}

impl<T> sealed::Sealed for MapUnordered<'_, T> {}
impl<T> Tracked for MapUnordered<'_, T> {
    fn failed((_, item): &Self::Item) -> bool {
        item.is_err()
    }

    fn total(&self) -> Option<usize> {
        known(self.submitted())
    }
}

impl<W: Waitable> sealed::Sealed for AsCompleted<W> {}
impl<W: Waitable> Tracked for AsCompleted<W> {
    fn failed(item: &Self::Item) -> bool {
        item.as_ref().map_or(true, |f| f.header().failed())
    }

    fn total(&self) -> Option<usize> {
        Some(AsCompleted::total(self))
    }
}

impl<I> sealed::Sealed for Fallible<I> {}
impl<T, E> Tracked for Fallible<Map<'_, Result<T, E>>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn failed(item: &Self::Item) -> bool {
        item.is_err()
    }

    fn total(&self) -> Option<usize> {
        self.inner().total()
    }
}

impl<T, E> Tracked for Fallible<MapUnordered<'_, Result<T, E>>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn failed((_, item): &Self::Item) -> bool {
        item.is_err()
    }

    fn total(&self) -> Option<usize> {
        self.inner().total()
    }
}

impl<I: Tracked> Iterator for Progress<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next();
        let total = self.inner.total();
        self.step(item.as_ref().map(I::failed), total);
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<I> Drop for Progress<I> {
    fn drop(&mut self) {
        self.end();
    }
}

impl<I: fmt::Debug> fmt::Debug for Progress<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Progress")
            .field("inner", &self.inner)
            .field("position", &self.bar.position())
            .field("length", &self.len)
            .field("failures", &self.failures)
            .finish()
    }
}
