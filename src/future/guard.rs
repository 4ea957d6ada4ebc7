//! [`AbortOnDrop`]: a future that stops its task when it is dropped, for
//! async callers.

use std::fmt;
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::Future;
use crate::Error;

/// A [`Future`] that [aborts](Future::abort) its task when dropped before
/// it settled: a pending task is cancelled, and a running one is stopped
/// where its executor can stop it (a process pool kills the worker running
/// it; a running thread-pool task cannot be stopped and runs on).
///
/// Made by [`Future::abort_on_drop`]. This is what async code wants around
/// an awaited task: when the awaiting task is dropped (a `select!` branch
/// that lost, a `tokio::time::timeout` that expired), the work stops too.
/// Awaiting it, or reading it through `Deref`, is the same as for the
/// future itself; [`into_inner`](Self::into_inner) takes the future back
/// without stopping anything.
///
/// ```
/// use concurrent_futures::{Promise, ThreadPoolExecutor};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
///
/// let pool = ThreadPoolExecutor::new(1).unwrap();
/// let (gate, open) = Promise::<()>::new();
/// let busy = pool.submit(move || open.into_result().is_ok()).unwrap();
/// let ran = Arc::new(AtomicBool::new(false));
/// let flag = Arc::clone(&ran);
/// let queued = pool.submit(move || flag.store(true, Ordering::SeqCst)).unwrap();
/// let watched = queued.abort_on_drop();
/// drop(watched); // the queued task is cancelled
/// gate.set_result(()).unwrap();
/// assert_eq!(busy.into_result(), Ok(true));
/// pool.shutdown(true, false);
/// assert!(!ran.load(Ordering::SeqCst), "a cancelled task never runs");
/// ```
#[must_use = "dropping it at once stops the task at once"]
pub struct AbortOnDrop<T> {
    future: Option<Future<T>>,
}

impl<T> AbortOnDrop<T> {
    pub(super) fn new(future: Future<T>) -> AbortOnDrop<T> {
        AbortOnDrop {
            future: Some(future),
        }
    }

    /// The future back, no longer stopped on drop.
    pub fn into_inner(mut self) -> Future<T> {
        self.future.take().expect("present until dropped or taken")
    }
}

impl<T> Deref for AbortOnDrop<T> {
    type Target = Future<T>;

    fn deref(&self) -> &Future<T> {
        self.future
            .as_ref()
            .expect("present until dropped or taken")
    }
}

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let future = this.future.as_mut().expect("polled after completion");
        let ready = Pin::new(future).poll(cx);
        if ready.is_ready() {
            // Settled: nothing left to stop.
            this.future = None;
        }
        ready
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            if !future.done() {
                future.abort();
            }
        }
    }
}

impl<T> fmt::Debug for AbortOnDrop<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortOnDrop")
            .field("future", &self.future)
            .finish()
    }
}
