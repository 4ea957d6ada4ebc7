//! `map`: one task per input item (or per chunk of items), results in input
//! order, shared by every executor.
//!
//! Each item is its own result: a panicking item yields its error and the
//! iteration goes on (unlike Python, where the first exception ends `map`).
//! Dropping the iterator once iteration has begun cancels every submitted
//! chunk that has not started; an iterator dropped before its first `next`
//! leaves the work running, as Python's `map` does (fire and forget).
//!
//! [`MapUnordered`] is the same over the same chunks, in completion
//! order instead of input order.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::future::deadline;
use crate::{Error, Future};

mod fallible;
mod unordered;
pub use fallible::Fallible;
pub use unordered::{MapUnordered, NO_POSITION};

/// Options for `map_with`: a deadline, bounded submission, and batching.
///
/// ```
/// use concurrent_futures::{MapOptions, ThreadPoolExecutor};
/// use std::time::Duration;
///
/// let pool = ThreadPoolExecutor::new(2).unwrap();
/// // An infinite input is fine with a buffersize: only 8 chunks are ever
/// // submitted ahead of the consumer.
/// let opts = MapOptions::new().buffersize(8).chunksize(4).timeout(Duration::from_secs(60));
/// let squares: Vec<u64> = pool
///     .map_with(|n: u64| n * n, 0.., opts)
///     .unwrap()
///     .take(5)
///     .map(Result::unwrap)
///     .collect();
/// assert_eq!(squares, [0, 1, 4, 9, 16]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapOptions {
    timeout: Option<Duration>,
    buffersize: Option<usize>,
    chunksize: usize,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            timeout: None,
            buffersize: None,
            chunksize: 1,
        }
    }
}

impl MapOptions {
    /// No timeout, no buffersize (everything is submitted at once), chunks of
    /// one item.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::MapOptions;
    ///
    /// let opts = MapOptions::new();
    /// assert_eq!(opts, MapOptions::default());
    /// ```
    pub fn new() -> MapOptions {
        MapOptions::default()
    }

    /// A deadline for the whole iteration, measured from the `map` call. When
    /// it passes, the iterator yields one [`Error::Timeout`], cancels what is
    /// left, and ends.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{MapOptions, Promise, ThreadPoolExecutor};
    /// use std::time::Duration;
    ///
    /// let pool = ThreadPoolExecutor::new(1).unwrap();
    /// let (gate, open) = Promise::<()>::new();
    /// let opts = MapOptions::new().timeout(Duration::from_millis(100));
    /// // The only item waits for `gate`, which is not set in time.
    /// let results: Vec<_> = pool.map_with(move |_: ()| open.wait(), [()], opts).unwrap().collect();
    /// assert_eq!(results.len(), 1);
    /// assert!(results[0].as_ref().unwrap_err().is_timeout());
    /// gate.set_result(()).unwrap(); // let the task end
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> MapOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Submit at most `n` chunks ahead of the consumer instead of the whole
    /// input at once; this makes an infinite input work in constant memory.
    /// Zero is an error.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, MapOptions, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let opts = MapOptions::new().buffersize(4);
    /// // An endless input: only 4 items are ever submitted ahead of the consumer.
    /// let first: Vec<u64> = pool
    ///     .map_with(|n: u64| n + 1, 0.., opts)
    ///     .unwrap()
    ///     .take(3)
    ///     .map(Result::unwrap)
    ///     .collect();
    /// assert_eq!(first, [1, 2, 3]);
    ///
    /// let zero = pool.map_with(|n: u64| n, 0..1, MapOptions::new().buffersize(0));
    /// assert!(matches!(zero, Err(Error::InvalidArgument(_))));
    /// ```
    pub fn buffersize(mut self, n: usize) -> MapOptions {
        self.buffersize = Some(n);
        self
    }

    /// Items per task (per message, for the process pool). Zero is an error.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{MapOptions, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let opts = MapOptions::new().chunksize(10);
    /// let threads: Vec<_> = pool
    ///     .map_with(|_: u32| std::thread::current().id(), 0..20, opts)
    ///     .unwrap()
    ///     .map(Result::unwrap)
    ///     .collect();
    /// // Items 0 to 9 are one task, so they ran on one thread.
    /// assert!(threads[..10].iter().all(|id| *id == threads[0]));
    /// ```
    pub fn chunksize(mut self, n: usize) -> MapOptions {
        self.chunksize = n;
        self
    }

    /// The chunk size.
    pub(crate) fn get_chunksize(&self) -> usize {
        self.chunksize
    }

    /// Checks the sizes: [`Error::InvalidArgument`] for a zero (executors
    /// call it before anything is submitted).
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.chunksize == 0 {
            return Err(Error::InvalidArgument(
                "chunksize must be at least 1".into(),
            ));
        }
        if self.buffersize == Some(0) {
            return Err(Error::InvalidArgument(
                "buffersize must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The results of one chunk, one per item in input order: the values of
/// the items that succeeded, and the failures by position.
///
/// Values and failures are kept apart on purpose: a `Result<T, Error>` is
/// large, and a vector of them was written and read back one whole result
/// at a time, with a failed store-to-load forward per item that cost more
/// than a remote executor's decoding. A value is taken out and wrapped in
/// `Ok` in registers.
pub(crate) struct ChunkResults<T> {
    /// The values in hand: a chunk of one item (`map`'s default) holds its
    /// value without a vector, which was an allocation per item.
    one: Option<T>,
    values: std::vec::IntoIter<T>,
    failures: std::vec::IntoIter<(usize, Error)>,
    /// The position of the next item, and of the next failure (`usize::MAX`
    /// when none is left).
    position: usize,
    next_failure: usize,
}

impl<T: Send + 'static> ChunkResults<T> {
    /// The results of a chunk: the `values` of the items that succeeded, in
    /// order, and the `failures` by position, in order of position.
    pub(crate) fn new(values: Vec<T>, failures: Vec<(usize, Error)>) -> ChunkResults<T> {
        let failures = failures.into_iter();
        ChunkResults {
            next_failure: failures.as_slice().first().map_or(usize::MAX, |f| f.0),
            one: None,
            values: values.into_iter(),
            failures,
            position: 0,
        }
    }

    /// The result of a chunk of one item that succeeded.
    pub(crate) fn one(value: T) -> ChunkResults<T> {
        let mut results = ChunkResults::new(Vec::new(), Vec::new());
        results.one = Some(value);
        results
    }
}

impl<T> ChunkResults<T> {
    #[cold]
    #[inline(never)]
    fn take_failure(&mut self) -> Error {
        let (_, error) = self.failures.next().expect("a failure is due here");
        self.next_failure = self.failures.as_slice().first().map_or(usize::MAX, |f| f.0);
        error
    }
}

impl<T> Iterator for ChunkResults<T> {
    type Item = Result<T, Error>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let position = self.position;
        self.position += 1;
        if position == self.next_failure {
            return Some(Err(self.take_failure()));
        }
        match self.one.take().or_else(|| self.values.next()) {
            Some(value) => Some(Ok(value)),
            None => {
                self.position = position;
                None
            }
        }
    }

    /// The values between two failures in a loop of their own, without a
    /// test per item.
    #[inline]
    fn fold<B, F: FnMut(B, Self::Item) -> B>(mut self, init: B, mut f: F) -> B {
        let mut acc = init;
        if let Some(value) = self.one.take() {
            acc = f(acc, Ok(value));
        }
        loop {
            let run = self.next_failure.saturating_sub(self.position);
            for value in self.values.by_ref().take(run) {
                self.position += 1;
                acc = f(acc, Ok(value));
            }
            if self.position != self.next_failure {
                return acc;
            }
            self.position += 1;
            let failure = self.take_failure();
            acc = f(acc, Err(failure));
        }
    }
}

impl<T> fmt::Debug for ChunkResults<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkResults").finish_non_exhaustive()
    }
}

/// The future of one chunk: one result per item.
pub(crate) type ChunkFuture<T> = Future<ChunkResults<T>>;

/// Submits the next chunk: `None` once the input is exhausted, else the
/// number of items in the chunk and its future (or why it could not be
/// submitted).
pub(crate) type ChunkSource<'a, T> =
    Box<dyn FnMut() -> Option<Result<(usize, ChunkFuture<T>), Error>> + 'a>;

/// The iterator returned by `map`: one `Result` per input item, in input
/// order.
#[must_use = "a Map yields its results only when iterated; dropping it cancels the items not yet started"]
pub struct Map<'a, T> {
    source: ChunkSource<'a, T>,
    buffer: VecDeque<(usize, ChunkFuture<T>)>,
    current: Option<ChunkResults<T>>,
    /// Failures of a whole chunk (cancelled, worker died), one per item.
    repeat: Option<(Error, usize)>,
    /// Why the rest of the input could not be submitted; yielded after the
    /// chunks already in flight.
    tail_error: Option<Error>,
    deadline: Option<Instant>,
    /// Whether `next` still submits chunks: a buffered map whose input has
    /// not run out (nor failed to submit). Without a buffersize the whole
    /// input is submitted up front.
    feeding: bool,
    submitted: usize,
    finished: bool,
    /// Whether `next` was ever called: like Python's generator, an iterator
    /// never started does not cancel anything when dropped.
    started: bool,
}

impl<'a, T> Map<'a, T> {
    /// Validates `options` and submits the first chunks: all of them without
    /// a buffersize, `buffersize` of them with one. Executors build their
    /// `map` on this.
    pub(crate) fn new(
        options: &MapOptions,
        mut source: ChunkSource<'a, T>,
    ) -> Result<Map<'a, T>, Error> {
        options.validate()?;
        let deadline = options.timeout.and_then(deadline);
        let mut buffer = VecDeque::new();
        let limit = options.buffersize.unwrap_or(usize::MAX);
        let mut submitted = 0;
        let mut exhausted = false;
        while buffer.len() < limit {
            match source() {
                None => {
                    exhausted = true;
                    break;
                }
                Some(Ok((n, future))) => {
                    submitted += n;
                    buffer.push_back((n, future));
                }
                Some(Err(e)) => {
                    for (_, f) in &buffer {
                        f.cancel();
                    }
                    return Err(e);
                }
            }
        }
        Ok(Map {
            source,
            buffer,
            current: None,
            repeat: None,
            tail_error: None,
            deadline,
            feeding: options.buffersize.is_some() && !exhausted,
            submitted,
            finished: false,
            started: false,
        })
    }

    fn refill(&mut self) {
        if !self.feeding {
            return;
        }
        match (self.source)() {
            None => self.feeding = false,
            Some(Ok((n, future))) => {
                self.submitted += n;
                self.buffer.push_back((n, future));
            }
            // The pool went away under us: report it in order, after the
            // chunks in flight, and submit nothing more.
            Some(Err(e)) => {
                self.tail_error = Some(e);
                self.feeding = false;
            }
        }
    }

    /// The items submitted so far, and whether that is all there will be
    /// (the input ran out, or submitting failed): a progress bar's length.
    #[cfg(feature = "progress")]
    pub(crate) fn submitted(&self) -> (usize, bool) {
        (self.submitted, !self.feeding)
    }

    fn cancel_all(&mut self) {
        for (_, f) in self.buffer.drain(..) {
            f.cancel();
        }
        self.finished = true;
    }
}

impl<T> Map<'_, T> {
    /// `next` once the chunk in hand is used up: the next chunk's results,
    /// a chunk's failure repeated, the timeout, or the end.
    #[inline(never)]
    fn next_chunk(&mut self) -> Option<Result<T, Error>> {
        self.started = true;
        loop {
            if let Some(item) = self.current.as_mut().and_then(Iterator::next) {
                return Some(item);
            }
            if let Some((error, left)) = &mut self.repeat {
                *left -= 1;
                let error = error.clone();
                if *left == 0 {
                    self.repeat = None;
                }
                return Some(Err(error));
            }
            if self.finished {
                return None;
            }
            let Some((n, future)) = self.buffer.pop_front() else {
                self.finished = true;
                return self.tail_error.take().map(Err);
            };
            self.refill();
            if let Some(deadline) = self.deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if !future.wait_timeout(left) {
                    future.cancel();
                    let unfinished = n + self.buffer.iter().map(|(n, _)| n).sum::<usize>();
                    let total = self.submitted;
                    self.cancel_all();
                    return Some(Err(Error::timeout(unfinished, total)));
                }
            }
            match future.into_result() {
                Ok(results) => self.current = Some(results),
                Err(error) => self.repeat = Some((error, n)),
            }
        }
    }
}

impl<T> Iterator for Map<'_, T> {
    type Item = Result<T, Error>;

    /// Inlined into the consumer's loop: the results of the chunk in hand
    /// (most calls) come without a call, and without copying a whole
    /// `Result` through memory.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(item) = self.current.as_mut().and_then(Iterator::next) {
            return Some(item);
        }
        self.next_chunk()
    }

    /// What `sum`, `count`, `for_each` and the like use: each chunk's
    /// results in a loop of their own.
    #[inline]
    fn fold<B, F: FnMut(B, Self::Item) -> B>(mut self, init: B, mut f: F) -> B {
        let mut acc = init;
        loop {
            if let Some(results) = self.current.take() {
                acc = results.fold(acc, &mut f);
            }
            match self.next_chunk() {
                Some(item) => acc = f(acc, item),
                None => return acc,
            }
        }
    }
}

impl<T> Drop for Map<'_, T> {
    fn drop(&mut self) {
        if self.started {
            self.cancel_all();
        }
    }
}

impl<T> fmt::Debug for Map<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("chunks_in_flight", &self.buffer.len())
            .field("submitted_items", &self.submitted)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(position: usize) -> (usize, Error) {
        (position, Error::InvalidState(format!("item {position}")))
    }

    /// Values and failures come back merged in input order, wherever the
    /// failures are: first, consecutive, last, or everything.
    #[test]
    fn chunk_results_merge_values_and_failures_by_position() {
        let shown = |results: ChunkResults<u32>| -> Vec<String> {
            results
                .map(|r| match r {
                    Ok(v) => v.to_string(),
                    Err(Error::InvalidState(m)) => m,
                    Err(e) => panic!("unexpected {e}"),
                })
                .collect()
        };
        let results = ChunkResults::new(vec![1, 3, 4], vec![failure(0), failure(2), failure(5)]);
        assert_eq!(
            shown(results),
            ["item 0", "1", "item 2", "3", "4", "item 5"]
        );
        let results = ChunkResults::new(vec![0], vec![failure(1), failure(2)]);
        assert_eq!(shown(results), ["0", "item 1", "item 2"]);
        let results = ChunkResults::new(vec![], vec![failure(0), failure(1)]);
        assert_eq!(shown(results), ["item 0", "item 1"]);
        let results = ChunkResults::<u32>::new(vec![], vec![]);
        assert!(shown(results).is_empty());

        // A chunk of one value, held without a vector.
        let results = ChunkResults::one(5);
        assert_eq!(shown(results), ["5"]);

        // `fold` yields what `next` does, for every place of the failures
        // among seven items.
        for mask in 0u32..128 {
            let results = || {
                let failures = (0..7).filter(|i| mask & (1 << i) != 0).map(failure);
                let values = (0..7).filter(|i| mask & (1 << i) == 0).map(|i| i as u32);
                ChunkResults::new(values.collect(), failures.collect())
            };
            let folded = results().fold(Vec::new(), |mut got, r| {
                got.push(r);
                got
            });
            assert_eq!(folded, results().collect::<Vec<_>>(), "failures {mask:#b}");
        }
        let one = ChunkResults::one(9).fold(Vec::new(), |mut got, r| {
            got.push(r);
            got
        });
        assert_eq!(one, [Ok(9)]);

        // An ended iterator stays ended.
        let mut results = ChunkResults::new(vec![7], vec![failure(0)]);
        assert!(results.next().unwrap().is_err());
        assert_eq!(results.next().unwrap().unwrap(), 7);
        assert!(results.next().is_none());
        assert!(results.next().is_none());
    }
}
