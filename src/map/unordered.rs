//! `map_unordered`: `map` that yields each chunk's results as soon as the
//! chunk completes, each paired with the position of its input item.
//!
//! Guarantees:
//! - Every submitted input position is yielded exactly once, with its own
//!   `Result`; a failing item (or a whole failed chunk: cancelled, worker
//!   died) yields its errors and the iteration goes on.
//! - Chunks come in completion order; the items of one chunk come together,
//!   in input order.
//! - With a buffersize, at most that many chunks are submitted and not yet
//!   taken up by the consumer. One new chunk is submitted each time the
//!   consumer takes up a completed one, whichever it is, so a slow chunk
//!   holds one slot and never stalls the others (unlike `map`, where the
//!   oldest chunk blocks the queue).
//! - A timeout (measured from the `map_unordered` call) yields one
//!   `(NO_POSITION, Err(Error::Timeout))`, cancels what has not started, and
//!   ends the iteration.
//! - Dropping the iterator after its first `next` cancels every submitted
//!   chunk that has not started; dropped before that, the work runs on, as
//!   with `map`.
//!
//! One `WaitSet` (the machinery of `as_completed`) is registered with every
//! chunk in flight, keyed by its slot, so waiting for "whichever chunk is
//! first" costs one wake-up per completion and no scan of the chunks.

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use super::{ChunkFuture, ChunkResults, ChunkSource, MapOptions};
use crate::Error;
use crate::future::deadline;
use crate::future::sealed::HasHeader;
use crate::sync::Arc;
use crate::wait::WaitSet;

/// The position [`MapUnordered`] pairs with an error that belongs to no input
/// item: the [`Error::Timeout`] that ends an iteration.
///
/// ```
/// use concurrent_futures::map::NO_POSITION;
///
/// assert_eq!(NO_POSITION, usize::MAX);
/// ```
pub const NO_POSITION: usize = usize::MAX;

/// A submitted chunk: where it starts in the input, and how many items.
struct InFlight<T> {
    start: usize,
    len: usize,
    future: ChunkFuture<T>,
}

/// The iterator returned by `map_unordered`: one `(position, Result)` per
/// input item, in completion order.
///
/// The position is the item's index in the input (counting from 0), so that
/// a result, and above all an error, can be told apart from the others even
/// though the order says nothing. Two errors belong to no single item: the
/// [`Error::Timeout`] that ends the iteration comes with [`NO_POSITION`];
/// an error that stopped submission part-way (the pool shut down under a
/// buffered map) comes last, with the position of the first item that was
/// never submitted (that item and all after it have no result).
///
/// ```
/// use concurrent_futures::ThreadPoolExecutor;
///
/// let pool = ThreadPoolExecutor::new(2).unwrap();
/// let mut squares: Vec<(usize, u64)> = pool
///     .map_unordered(|n: u64| n * n, [3, 1, 2])
///     .unwrap()
///     .map(|(i, r)| (i, r.unwrap()))
///     .collect();
/// squares.sort_unstable();
/// assert_eq!(squares, [(0, 9), (1, 1), (2, 4)]);
/// ```
pub struct MapUnordered<'a, T> {
    source: ChunkSource<'a, T>,
    set: Arc<WaitSet>,
    /// Chunks submitted and not known to be complete, by their key in `set`;
    /// `None` for a free key.
    pending: Vec<Option<InFlight<T>>>,
    /// Keys of `pending` to reuse. A key is freed only once its chunk's
    /// completion has been taken from `set`, so no stale key can arrive.
    free: Vec<usize>,
    in_pending: usize,
    /// Completed chunks, in completion order, not yet taken up.
    done: VecDeque<InFlight<T>>,
    /// The chunk being yielded: the position of its next item, its results.
    current: Option<(usize, ChunkResults<T>)>,
    /// A whole chunk failed: its error, the next position and the end.
    repeat: Option<(Error, usize, usize)>,
    /// Why the rest of the input could not be submitted, and where the
    /// unsubmitted part starts; yielded after every chunk in flight.
    tail_error: Option<(usize, Error)>,
    deadline: Option<Instant>,
    /// Whether taking up a chunk still submits one: a buffered map whose
    /// input has not run out (nor failed to submit).
    feeding: bool,
    /// Items submitted so far: also the position of the next chunk.
    submitted: usize,
    finished: bool,
    /// Whether `next` was ever called (see `Map`).
    started: bool,
}

impl<'a, T> MapUnordered<'a, T> {
    /// Validates `options` and submits the first chunks: all of them without
    /// a buffersize, `buffersize` of them with one. Executors build their
    /// `map_unordered` on this, with the same `source` as their `map`.
    pub(crate) fn new(options: &MapOptions, source: ChunkSource<'a, T>) -> Result<Self, Error> {
        options.validate()?;
        let mut map = MapUnordered {
            source,
            set: WaitSet::new(),
            pending: Vec::new(),
            free: Vec::new(),
            in_pending: 0,
            done: VecDeque::new(),
            current: None,
            repeat: None,
            tail_error: None,
            deadline: options.timeout.and_then(deadline),
            feeding: options.buffersize.is_some(),
            submitted: 0,
            finished: false,
            started: false,
        };
        let limit = options.buffersize.unwrap_or(usize::MAX);
        while map.in_pending + map.done.len() < limit {
            match map.submit_one() {
                None => {
                    map.feeding = false;
                    break;
                }
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    // As `Map::new`: the call fails and nothing it
                    // submitted runs (the drop below cancels it).
                    map.started = true;
                    return Err(e);
                }
            }
        }
        Ok(map)
    }

    /// Submits the next chunk and registers it with `set`. `None` once the
    /// input is exhausted.
    fn submit_one(&mut self) -> Option<Result<(), Error>> {
        let (len, future) = match (self.source)()? {
            Ok(chunk) => chunk,
            Err(e) => return Some(Err(e)),
        };
        let chunk = InFlight {
            start: self.submitted,
            len,
            future,
        };
        self.submitted += len;
        let key = self.free.last().copied().unwrap_or(self.pending.len());
        if chunk.future.header().register(&self.set, key) {
            if key == self.pending.len() {
                self.pending.push(Some(chunk));
            } else {
                self.free.pop();
                self.pending[key] = Some(chunk);
            }
            self.in_pending += 1;
        } else {
            // Already complete: it will never notify the set.
            self.done.push_back(chunk);
        }
        Some(Ok(()))
    }

    fn refill(&mut self) {
        if !self.feeding {
            return;
        }
        match self.submit_one() {
            Some(Ok(())) => {}
            None => self.feeding = false,
            // The pool went away under us: report it after the chunks in
            // flight, and submit nothing more.
            Some(Err(e)) => {
                self.tail_error = Some((self.submitted, e));
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

    /// Cancels every chunk not yet complete and ends the iteration.
    fn cancel_all(&mut self) {
        for chunk in self.pending.drain(..).flatten() {
            // Unregistered first: the cancellation need not wake anyone.
            chunk.future.header().unregister(&self.set);
            chunk.future.cancel();
        }
        self.in_pending = 0;
        self.free.clear();
        self.done.clear();
        self.finished = true;
    }
}

impl<T> Iterator for MapUnordered<'_, T> {
    type Item = (usize, Result<T, Error>);

    fn next(&mut self) -> Option<Self::Item> {
        self.started = true;
        loop {
            if let Some((position, results)) = &mut self.current {
                if let Some(item) = results.next() {
                    *position += 1;
                    return Some((*position - 1, item));
                }
                self.current = None;
            }
            if let Some((error, position, end)) = &mut self.repeat {
                let item = (*position, Err(error.clone()));
                *position += 1;
                if position == end {
                    self.repeat = None;
                }
                return Some(item);
            }
            if self.finished {
                return None;
            }
            if let Some(chunk) = self.done.pop_front() {
                self.refill();
                match chunk.future.into_result() {
                    Ok(results) => self.current = Some((chunk.start, results)),
                    Err(error) => {
                        self.repeat = Some((error, chunk.start, chunk.start + chunk.len));
                    }
                }
                continue;
            }
            if self.in_pending == 0 {
                self.finished = true;
                return self.tail_error.take().map(|(at, e)| (at, Err(e)));
            }
            let keys = self.set.take_finished(self.deadline);
            if keys.is_empty() {
                // The deadline passed with nothing complete.
                let unfinished = self.pending.iter().flatten().map(|c| c.len).sum();
                let error = Error::timeout(unfinished, self.submitted);
                self.cancel_all();
                return Some((NO_POSITION, Err(error)));
            }
            for key in keys {
                if let Some(chunk) = self.pending[key].take() {
                    self.in_pending -= 1;
                    self.free.push(key);
                    self.done.push_back(chunk);
                }
            }
        }
    }
}

impl<T> Drop for MapUnordered<'_, T> {
    fn drop(&mut self) {
        if self.started {
            self.cancel_all();
        } else {
            // Fire and forget: the work runs on, but the futures need not
            // keep the set alive.
            for chunk in self.pending.iter().flatten() {
                chunk.future.header().unregister(&self.set);
            }
        }
    }
}

impl<T> fmt::Debug for MapUnordered<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapUnordered")
            .field("chunks_in_flight", &(self.in_pending + self.done.len()))
            .field("submitted_items", &self.submitted)
            .finish_non_exhaustive()
    }
}
