//! Waiting on many futures at once: [`wait`] and [`as_completed`].
//!
//! Both take any mix of futures (different value types, different executors)
//! through the [`Waitable`] trait, count a future passed twice once, and never
//! hang on a cancelled future: cancelling is a completion like any other and
//! notifies waiters exactly as finishing does.
//!
//! Under the hood one `WaitSet` is registered with every unfinished future;
//! each future, when it completes, pushes its key into the set and wakes the
//! waiting thread. Waiters are removed again when the wait ends, so waiting
//! repeatedly on a long-lived future does not grow its waiter list.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::Error;
use crate::future::deadline;
use crate::future::sealed::HasHeader;
use crate::future::{Waitable, state::Header};
use crate::sync::{Arc, Condvar, Mutex, lock, wait_until};

/// When [`wait`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReturnWhen {
    /// As soon as any future is done (finished or cancelled).
    FirstCompleted,
    /// As soon as any future finishes with an error; if none does, when all
    /// are done. A cancelled future is not an error here.
    FirstException,
    /// When every future is done.
    AllCompleted,
}

/// The two halves returned by [`wait`], each in input order.
#[derive(Debug)]
pub struct Waited<W> {
    /// The futures that were done when `wait` returned.
    pub done: Vec<W>,
    /// The futures that were not.
    pub not_done: Vec<W>,
}

/// Waits until the futures meet `return_when`, or until `timeout` passes
/// (`None`: no limit), and splits them into done and not done.
///
/// A timeout is not an error: the unfinished futures are in `not_done`. A
/// future given twice appears once. Already-finished futures count at once:
/// with [`ReturnWhen::FirstCompleted`] or [`ReturnWhen::FirstException`] a
/// done (or failed) future makes `wait` return without blocking.
///
/// # Examples
///
/// ```
/// use concurrent_futures::{Promise, ReturnWhen, wait};
/// use std::time::Duration;
///
/// let (p1, f1) = Promise::new();
/// let (_p2, f2) = Promise::<String>::new();
/// p1.set_result(1).unwrap();
/// // Different value types mix through `&dyn Waitable`.
/// let all: Vec<&dyn concurrent_futures::Waitable> = vec![&f1, &f2];
/// let w = wait(all, Some(Duration::ZERO), ReturnWhen::AllCompleted);
/// assert_eq!((w.done.len(), w.not_done.len()), (1, 1));
/// ```
pub fn wait<I, W>(futures: I, timeout: Option<Duration>, return_when: ReturnWhen) -> Waited<W>
where
    I: IntoIterator<Item = W>,
    W: Waitable,
{
    let futures = dedup(futures);
    let deadline = timeout.and_then(deadline);
    // As in Python, `wait` returns once every future is done whatever
    // `return_when` says; this also makes an empty list return at once.
    let satisfied = |done: usize, failed: bool| match return_when {
        ReturnWhen::FirstCompleted => done > 0 || done == futures.len(),
        ReturnWhen::FirstException => failed || done == futures.len(),
        ReturnWhen::AllCompleted => done == futures.len(),
    };

    let done_now = futures.iter().filter(|f| f.header().done()).count();
    let failed_now = futures.iter().any(|f| f.header().failed());
    if !satisfied(done_now, failed_now) && timeout != Some(Duration::ZERO) {
        let set = WaitSet::new();
        let mut registered = Vec::new();
        for (key, f) in futures.iter().enumerate() {
            if f.header().register(&set, key) {
                registered.push(key);
            } else {
                set.notify(key, f.header().failed());
            }
        }
        // Every future is now counted in the set exactly once: those done
        // before registration by the loop above, the rest as they complete.
        set.wait(deadline, |s| satisfied(s.count, s.failed));
        for key in registered {
            futures[key].header().unregister(&set);
        }
    }

    let mut waited = Waited {
        done: Vec::new(),
        not_done: Vec::new(),
    };
    for f in futures {
        if f.header().done() {
            waited.done.push(f);
        } else {
            waited.not_done.push(f);
        }
    }
    waited
}

/// Yields the futures as they complete: those already done first, then each
/// one as it finishes or is cancelled, each exactly once.
///
/// With a `timeout` (measured from this call), the iterator yields one
/// [`Error::Timeout`] saying how many futures are unfinished (`"2 (of 4)
/// futures unfinished"`) when the time runs out, and then ends. The iterator
/// holds no reference to what it has already yielded.
///
/// # Examples
///
/// ```
/// use concurrent_futures::{ThreadPoolExecutor, as_completed};
///
/// let pool = ThreadPoolExecutor::new(2).unwrap();
/// let futures: Vec<_> = (1..=3u64).map(|n| pool.submit(move || n * n).unwrap()).collect();
/// let mut total = 0;
/// for f in as_completed(futures, None) {
///     total += f.unwrap().into_result().unwrap();
/// }
/// assert_eq!(total, 1 + 4 + 9);
/// ```
pub fn as_completed<I, W>(futures: I, timeout: Option<Duration>) -> AsCompleted<W>
where
    I: IntoIterator<Item = W>,
    W: Waitable,
{
    let futures = dedup(futures);
    let total = futures.len();
    let set = WaitSet::new();
    let mut ready = VecDeque::new();
    let mut pending: Vec<Option<W>> = Vec::with_capacity(total);
    for f in futures {
        if !f.header().done() {
            // Register now; a future finishing in between lands in the set.
            if f.header().register(&set, pending.len()) {
                pending.push(Some(f));
                continue;
            }
        }
        ready.push_back(f);
    }
    let remaining = pending.len();
    AsCompleted {
        ready,
        pending,
        remaining,
        total,
        set,
        deadline: timeout.map(|t| deadline(t).unwrap_or_else(far_future)),
        timed_out: false,
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(60 * 60 * 24 * 365 * 30)
}

/// Iterator returned by [`as_completed`].
#[must_use = "iterators are lazy: as_completed waits for nothing unless iterated"]
pub struct AsCompleted<W: Waitable> {
    ready: VecDeque<W>,
    /// Registered futures by key; `None` once moved to `ready`.
    pending: Vec<Option<W>>,
    remaining: usize,
    total: usize,
    set: Arc<WaitSet>,
    deadline: Option<Instant>,
    timed_out: bool,
}

impl<W: Waitable> AsCompleted<W> {
    /// Stops iterating and hands back every future not yielded yet: the
    /// finished ones first, then the unfinished ones. After a timeout this
    /// is how owned futures are recovered, to wait on them again or cancel
    /// them.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Promise, as_completed};
    /// use std::time::Duration;
    ///
    /// let (p1, f1) = Promise::new();
    /// let (_p2, f2) = Promise::new();
    /// p1.set_result(1).unwrap();
    /// let mut completed = as_completed(vec![f1, f2], Some(Duration::ZERO));
    /// assert_eq!(completed.next().unwrap().unwrap().into_result(), Ok(1));
    /// assert!(completed.next().unwrap().unwrap_err().is_timeout()); // the other is not done
    /// let rest = completed.into_remaining();
    /// assert_eq!(rest.len(), 1);
    /// assert!(rest[0].cancel()); // owned again: wait on it later, or cancel it
    /// ```
    pub fn into_remaining(mut self) -> Vec<W> {
        let mut remaining: Vec<W> = self.ready.drain(..).collect();
        for f in std::mem::take(&mut self.pending).into_iter().flatten() {
            f.header().unregister(&self.set);
            remaining.push(f);
        }
        remaining
    }

    /// How many futures it yields in all (each given future once).
    #[cfg(feature = "progress")]
    pub(crate) fn total(&self) -> usize {
        self.total
    }
}

impl<W: Waitable> Iterator for AsCompleted<W> {
    type Item = Result<W, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(f) = self.ready.pop_front() {
            return Some(Ok(f));
        }
        if self.remaining == 0 || self.timed_out {
            return None;
        }
        let keys = self.set.take_finished(self.deadline);
        if keys.is_empty() {
            self.timed_out = true;
            return Some(Err(Error::timeout(self.remaining, self.total)));
        }
        for key in keys {
            if let Some(f) = self.pending[key].take() {
                self.remaining -= 1;
                self.ready.push_back(f);
            }
        }
        self.ready.pop_front().map(Ok)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.ready.len() + self.remaining;
        (left.min(1), Some(left + 1))
    }
}

/// `as_completed` for async code: the same futures in the same order, each
/// yielded as soon as it is done, without blocking a thread.
///
/// The timeout is checked each time the stream is polled, so on its own it
/// only fires when some future completes after it; for a deadline that
/// fires by itself, wrap the stream in your runtime's timeout.
///
/// ```
/// use concurrent_futures::{ThreadPoolExecutor, as_completed};
/// use futures_core::Stream;
/// use std::pin::Pin;
///
/// let pool = ThreadPoolExecutor::new(2).unwrap();
/// let futures: Vec<_> = (1..=3u64).map(|n| pool.submit(move || n * n).unwrap()).collect();
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let total = rt.block_on(async {
///     let mut stream = as_completed(futures, None);
///     let mut total = 0;
///     while let Some(f) =
///         std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await
///     {
///         total += f.unwrap().into_result().unwrap();
///     }
///     total
/// });
/// assert_eq!(total, 1 + 4 + 9);
/// ```
impl<W: Waitable + Unpin> futures_core::Stream for AsCompleted<W> {
    type Item = Result<W, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(f) = this.ready.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        if this.remaining == 0 || this.timed_out {
            return Poll::Ready(None);
        }
        let keys = this.set.poll_finished(cx);
        if keys.is_empty() {
            if this.deadline.is_some_and(|d| Instant::now() >= d) {
                this.timed_out = true;
                return Poll::Ready(Some(Err(Error::timeout(this.remaining, this.total))));
            }
            return Poll::Pending;
        }
        for key in keys {
            if let Some(f) = this.pending[key].take() {
                this.remaining -= 1;
                this.ready.push_back(f);
            }
        }
        Poll::Ready(this.ready.pop_front().map(Ok))
    }
}

impl<W: Waitable> Drop for AsCompleted<W> {
    fn drop(&mut self) {
        for f in self.pending.iter().flatten() {
            f.header().unregister(&self.set);
        }
    }
}

impl<W: Waitable> fmt::Debug for AsCompleted<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("ready", &self.ready.len())
            .field("unfinished", &self.remaining)
            .field("total", &self.total)
            .finish()
    }
}

/// Keeps the first of each future given more than once.
fn dedup<I, W>(futures: I) -> Vec<W>
where
    I: IntoIterator<Item = W>,
    W: Waitable,
{
    let mut seen = HashSet::new();
    futures
        .into_iter()
        .filter(|f| seen.insert(f.header() as *const Header))
        .collect()
}

/// One waiter registered with many futures: each completion records its key
/// and wakes the (single) waiting thread.
pub(crate) struct WaitSet {
    state: Mutex<SetState>,
    cond: Condvar,
}

struct SetState {
    finished: Vec<usize>,
    /// The task of an async consumer (`AsCompleted` as a `Stream`).
    waker: Option<Waker>,
    /// Keys already handed out by `take_finished` are gone from `finished`,
    /// so `wait` counts with this instead.
    count: usize,
    failed: bool,
}

impl WaitSet {
    pub(crate) fn new() -> Arc<WaitSet> {
        Arc::new(WaitSet {
            state: Mutex::new(SetState {
                finished: Vec::new(),
                waker: None,
                count: 0,
                failed: false,
            }),
            cond: Condvar::new(),
        })
    }

    /// Called by a future as it completes.
    pub(crate) fn notify(&self, key: usize, failed: bool) {
        let mut s = lock(&self.state);
        s.finished.push(key);
        s.count += 1;
        s.failed |= failed;
        let waker = s.waker.take();
        drop(s);
        self.cond.notify_one();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Takes the keys recorded so far; with none, remembers `cx`'s waker
    /// for the next completion and returns nothing.
    fn poll_finished(&self, cx: &mut Context<'_>) -> Vec<usize> {
        let mut s = lock(&self.state);
        if s.finished.is_empty() {
            match &mut s.waker {
                Some(old) if old.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
        }
        std::mem::take(&mut s.finished)
    }

    /// Blocks until `satisfied` holds or the deadline passes.
    fn wait(&self, deadline: Option<Instant>, satisfied: impl Fn(&SetState) -> bool) {
        let mut s = lock(&self.state);
        while !satisfied(&s) {
            let (guard, timed_out) = wait_until(&self.cond, s, deadline);
            s = guard;
            if timed_out {
                return;
            }
        }
    }

    /// Blocks until some keys are recorded (or the deadline passes) and
    /// takes them. Empty means the deadline passed.
    pub(crate) fn take_finished(&self, deadline: Option<Instant>) -> Vec<usize> {
        let mut s = lock(&self.state);
        while s.finished.is_empty() {
            let (guard, timed_out) = wait_until(&self.cond, s, deadline);
            s = guard;
            if timed_out {
                break;
            }
        }
        std::mem::take(&mut s.finished)
    }
}
