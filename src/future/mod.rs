//! [`Future`]: the handle to a result that will exist later, and
//! [`Promise`]: the side that provides it.
//!
//! A future moves through the states of [`State`]; see the `state` module for
//! the machine and its guarantees. A future is also a
//! [`std::future::Future`], so `async` code can `.await` it.

mod guard;
mod promise;
pub(crate) mod state;

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub use guard::AbortOnDrop;
pub use promise::Promise;
pub(crate) use promise::{Canceller, DeferredCallbacks};
use state::{CANCELLED, FINISHED, Header, PENDING, RUNNING};

use crate::Error;
use std::sync::Arc;

/// Where a future is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Submitted, not started; [`Future::cancel`] still works.
    Pending,
    /// A worker is running it.
    Running,
    /// Cancelled before it ran (or aborted while it ran). Done.
    Cancelled,
    /// Ran to the end, with a value or an error. Done.
    Finished,
}

/// The shared block behind a future and its promise: the state machine and
/// the outcome.
pub(crate) struct Core<T> {
    header: Header,
    /// Written once, by the holder of the completion claim, before `FINISHED` is
    /// published; after that only read, until the one owning [`Future`]
    /// takes it out once the future is settled.
    value: UnsafeCell<Outcome<T>>,
}

/// The outcome of a finished future. The error is boxed: `Error` is large,
/// and every task carries one.
enum Outcome<T> {
    Empty,
    Value(T),
    Failed(Box<Error>),
}

// SAFETY: the value is moved in by the promise (so `T: Send`) and then only
// reached through the owning `Future`'s handle. The only other reader is a
// done callback, which `add_done_callback` allows only for `T: Sync`. The one
// write happens while the writer holds the header's completion claim, before
// the state that makes the value visible is published with Release ordering.
unsafe impl<T: Send> Send for Core<T> {}
// SAFETY: as above; `&Core<T>` exposes `&T` only through `Future<T>`, whose
// own `Sync` requires `T: Sync`.
unsafe impl<T: Send> Sync for Core<T> {}

/// Anything that holds a [`Core`]: the core alone (a [`Promise`]'s future)
/// or a pool's task cell, which keeps the task's closure in the same
/// allocation.
pub(crate) trait HasCore<T>: Send + Sync {
    fn core(&self) -> &Core<T>;
}

impl<T: Send> HasCore<T> for Core<T> {
    fn core(&self) -> &Core<T> {
        self
    }
}

impl<T: Send> state::HasHeader for Core<T> {
    fn header(&self) -> &Header {
        &self.header
    }
}

impl<T> Core<T> {
    pub(crate) fn new() -> Core<T> {
        Core {
            header: Header::new(),
            value: UnsafeCell::new(Outcome::Empty),
        }
    }

    /// Stores the outcome and finishes the future.
    pub(crate) fn complete(&self, outcome: Result<T, Error>) -> Result<(), Error> {
        let callbacks = self.complete_deferring(outcome)?;
        self.header.run_callbacks(callbacks);
        Ok(())
    }

    /// Stores the outcome and finishes the future, returning its done
    /// callbacks to run (see [`Header::run_callbacks`]).
    pub(crate) fn complete_deferring(
        &self,
        outcome: Result<T, Error>,
    ) -> Result<Vec<state::Callback>, Error> {
        let failed = outcome.is_err();
        self.header.finish(failed, || {
            let stored = match outcome {
                Ok(value) => Outcome::Value(value),
                Err(error) => Outcome::Failed(Box::new(error)),
            };
            // SAFETY: `finish` calls this only while this thread holds the
            // completion claim on a pending or running future, when nobody
            // else reads or writes the outcome.
            unsafe { *self.value.get() = stored }
        })
    }

    pub(crate) fn header(&self) -> &Header {
        &self.header
    }
}

/// The result of a task that runs (or will run) elsewhere.
///
/// Obtained from an executor's `submit`, from [`Promise::new`], or from a
/// scope. A `Future` is the one owner of its result: [`result`](Self::result)
/// borrows it, [`into_result`](Self::into_result) (or `.await`) takes it. To
/// share a future between threads, share a reference (`&Future`, `Arc<Future>`);
/// all its methods take `&self`.
///
/// Dropping a `Future` does not cancel the task; call [`cancel`](Self::cancel)
/// for that. So an unused future is warned about (`#[must_use]`): it is
/// most likely a forgotten wait, not a cancellation.
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// let pool = concurrent_futures::ThreadPoolExecutor::new(1).unwrap();
/// pool.submit(|| 1).unwrap(); // the future is dropped unused
/// ```
///
/// When only the side effect matters, say so with `drop(future)`.
#[must_use = "a Future does nothing unless waited on; dropping it does not cancel the task"]
pub struct Future<T> {
    cell: Arc<dyn HasCore<T>>,
    /// `Core<T>` is `Sync` for any `T: Send`; the handle must only be `Sync`
    /// when `T` is, because it hands out `&T`.
    _value: PhantomData<T>,
}

impl<T> Unpin for Future<T> {}

impl<T> Future<T> {
    pub(crate) fn from_cell(cell: Arc<dyn HasCore<T>>) -> Future<T> {
        Future {
            cell,
            _value: PhantomData,
        }
    }

    fn core(&self) -> &Core<T> {
        self.cell.core()
    }

    fn header(&self) -> &Header {
        &self.core().header
    }

    /// The current state.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Promise, State};
    ///
    /// let (promise, future) = Promise::new();
    /// assert_eq!(future.state(), State::Pending);
    /// assert!(promise.set_running());
    /// assert_eq!(future.state(), State::Running);
    /// promise.set_result(42).unwrap();
    /// assert_eq!(future.state(), State::Finished);
    /// ```
    pub fn state(&self) -> State {
        match self.header().observed_state() {
            PENDING => State::Pending,
            RUNNING => State::Running,
            CANCELLED => State::Cancelled,
            _ => State::Finished,
        }
    }

    /// Cancels the task if it has not started.
    ///
    /// Returns `true` if the future is now cancelled (also when it already
    /// was), `false` if it is running or finished; a running task is never
    /// interrupted by `cancel` (see [`abort`](Self::abort)). Cancelling wakes
    /// every waiter and runs the done callbacks in this thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, Promise, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(1).unwrap();
    /// // Keep the only worker busy until `gate` is set.
    /// let (gate, open) = Promise::<()>::new();
    /// let busy = pool.submit(move || open.wait()).unwrap();
    /// let queued = pool.submit(|| 42).unwrap();
    /// assert!(queued.cancel()); // not started: cancelled, and it never runs
    /// assert_eq!(queued.result(), Err(Error::Cancelled));
    ///
    /// gate.set_result(()).unwrap();
    /// busy.wait();
    /// assert!(!busy.cancel()); // finished: too late to cancel
    /// ```
    pub fn cancel(&self) -> bool {
        self.header().cancel()
    }

    /// Like [`cancel`](Self::cancel), but a *running* task is stopped too if
    /// its executor can stop it (the process pool kills and replaces the
    /// worker running it; threads cannot be stopped, so a running thread-pool
    /// task returns `false`). Returns `true` if the future ended cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    ///
    /// let (promise, future) = Promise::<u32>::new();
    /// let stopped = Arc::new(AtomicBool::new(false));
    /// let flag = Arc::clone(&stopped);
    /// promise.set_abort_handler(move || flag.store(true, Ordering::SeqCst));
    /// assert!(promise.set_running());
    ///
    /// assert!(!future.cancel()); // `cancel` leaves a running task alone
    /// assert!(future.abort()); // `abort` stops it
    /// assert!(future.cancelled());
    /// assert!(stopped.load(Ordering::SeqCst));
    /// ```
    pub fn abort(&self) -> bool {
        self.header().abort()
    }

    /// Wraps the future so that dropping it before it settled stops the
    /// task ([`abort`](Self::abort)): for async code, where a dropped
    /// `.await` should not leave the work running. See [`AbortOnDrop`].
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    ///
    /// let (promise, future) = Promise::<u32>::new();
    /// let guarded = future.abort_on_drop();
    /// assert!(!guarded.done()); // it reads like the future itself
    /// drop(guarded); // dropped before it settled: the task is stopped
    /// assert!(promise.is_cancelled());
    /// ```
    pub fn abort_on_drop(self) -> AbortOnDrop<T> {
        AbortOnDrop::new(self)
    }

    /// True if the future was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    ///
    /// let (_promise, future) = Promise::<u32>::new();
    /// assert!(!future.cancelled());
    /// assert!(future.cancel());
    /// assert!(future.cancelled());
    /// ```
    pub fn cancelled(&self) -> bool {
        self.header().state() == CANCELLED
    }

    /// True while a worker runs the task: it has really begun. (A task that
    /// a process pool sent ahead to a worker stays pending, and cancellable,
    /// until the worker starts it.)
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    ///
    /// let (promise, future) = Promise::new();
    /// assert!(!future.running()); // pending
    /// assert!(promise.set_running());
    /// assert!(future.running());
    /// promise.set_result(()).unwrap();
    /// assert!(!future.running()); // finished
    /// ```
    pub fn running(&self) -> bool {
        self.header().observed_state() == RUNNING
    }

    /// True if the future is cancelled or finished.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    ///
    /// let (promise, future) = Promise::new();
    /// assert!(!future.done());
    /// promise.set_result("ready").unwrap();
    /// assert!(future.done());
    ///
    /// let (_promise, cancelled) = Promise::<u32>::new();
    /// cancelled.cancel();
    /// assert!(cancelled.done()); // cancelled counts as done
    /// ```
    pub fn done(&self) -> bool {
        self.header().done()
    }

    /// Blocks until the future is done.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(1).unwrap();
    /// let future = pool.submit(|| 6 * 7).unwrap();
    /// future.wait();
    /// assert!(future.done());
    /// assert_eq!(future.result(), Ok(&42));
    /// ```
    pub fn wait(&self) {
        self.header().wait(None, false);
    }

    /// Blocks until the future is done or `timeout` has passed; returns
    /// whether it is done.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    /// use std::time::Duration;
    ///
    /// let (promise, future) = Promise::new();
    /// assert!(!future.wait_timeout(Duration::ZERO)); // not done yet
    /// promise.set_result(1).unwrap();
    /// assert!(future.wait_timeout(Duration::from_secs(30)));
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.header().wait(deadline(timeout), false)
    }

    /// Blocks until the task has finished and returns its value, or its error:
    /// [`Error::Cancelled`] if cancelled, [`Error::Panicked`] if it panicked,
    /// and so on.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let ok = pool.submit(|| "done".to_string()).unwrap();
    /// assert_eq!(ok.result().map(String::as_str), Ok("done"));
    /// // The value stays in the future: `result` can be called again.
    /// assert_eq!(ok.result().unwrap().len(), 4);
    ///
    /// let failed = pool.submit(|| -> u32 { panic!("boom") }).unwrap();
    /// assert!(matches!(failed.result(), Err(Error::Panicked { message, .. }) if message == "boom"));
    /// ```
    pub fn result(&self) -> Result<&T, Error> {
        self.wait();
        self.read()
    }

    /// Like [`result`](Self::result), waiting at most `timeout`. On timeout it
    /// returns [`Error::Timeout`] and the future stays usable: call again
    /// later. A zero timeout polls.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    /// use std::time::Duration;
    ///
    /// let (promise, future) = Promise::new();
    /// let early = future.result_timeout(Duration::ZERO);
    /// assert!(early.unwrap_err().is_timeout());
    /// promise.set_result(3).unwrap();
    /// assert_eq!(future.result_timeout(Duration::from_secs(30)), Ok(&3));
    /// ```
    pub fn result_timeout(&self, timeout: Duration) -> Result<&T, Error> {
        if !self.wait_timeout(timeout) {
            return Err(Error::timeout(1, 1));
        }
        self.read()
    }

    /// Blocks until the task has finished and moves its value out.
    ///
    /// Called from one of this future's own done callbacks (through another
    /// handle to it), it returns [`Error::InvalidState`] instead: the value
    /// cannot move while the callbacks may borrow it, and waiting for them
    /// to end would never return.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(1).unwrap();
    /// let future = pool.submit(|| vec![1, 2, 3]).unwrap();
    /// let numbers: Vec<i32> = future.into_result().unwrap(); // moved out, not cloned
    /// assert_eq!(numbers, [1, 2, 3]);
    /// ```
    pub fn into_result(mut self) -> Result<T, Error> {
        if self.header().in_own_callback() {
            return Err(own_callback());
        }
        self.header().wait(None, true);
        self.take()
    }

    /// The task's error, if it failed, after waiting for it to finish:
    /// `Ok(None)` if it produced a value, `Ok(Some(error))` if it failed, and
    /// `Err(Error::Cancelled)` if it was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, Promise};
    ///
    /// let (promise, ok) = Promise::new();
    /// promise.set_result(1).unwrap();
    /// assert_eq!(ok.exception(), Ok(None));
    ///
    /// let (promise, failed) = Promise::<i32>::new();
    /// promise.set_error(Error::InvalidArgument("negative".into())).unwrap();
    /// assert_eq!(failed.exception(), Ok(Some(Error::InvalidArgument("negative".into()))));
    ///
    /// let (_promise, cancelled) = Promise::<i32>::new();
    /// cancelled.cancel();
    /// assert_eq!(cancelled.exception(), Err(Error::Cancelled));
    /// ```
    pub fn exception(&self) -> Result<Option<Error>, Error> {
        self.wait();
        self.read_exception()
    }

    /// Like [`exception`](Self::exception), waiting at most `timeout`
    /// ([`Error::Timeout`] otherwise).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, Promise};
    /// use std::time::Duration;
    ///
    /// let (promise, future) = Promise::<u32>::new();
    /// assert!(future.exception_timeout(Duration::ZERO).unwrap_err().is_timeout());
    /// drop(promise); // a promise dropped unfulfilled fails its future
    /// assert_eq!(future.exception_timeout(Duration::from_secs(30)), Ok(Some(Error::Abandoned)));
    /// ```
    pub fn exception_timeout(&self, timeout: Duration) -> Result<Option<Error>, Error> {
        if !self.wait_timeout(timeout) {
            return Err(Error::timeout(1, 1));
        }
        self.read_exception()
    }

    fn read(&self) -> Result<&T, Error> {
        if self.header().state() == CANCELLED {
            return Err(Error::Cancelled);
        }
        debug_assert_eq!(self.header().state(), FINISHED);
        // SAFETY: the future is finished (Acquire load above), so the outcome
        // was written and is only read until taken, which needs `&mut self`
        // or `self`.
        match unsafe { &*self.core().value.get() } {
            Outcome::Value(value) => Ok(value),
            Outcome::Failed(error) => Err((**error).clone()),
            Outcome::Empty => Err(taken()),
        }
    }

    fn read_exception(&self) -> Result<Option<Error>, Error> {
        match self.read() {
            Ok(_) => Ok(None),
            Err(Error::Cancelled) => Err(Error::Cancelled),
            Err(error) => Ok(Some(error)),
        }
    }

    /// Moves the outcome out of a settled future.
    fn take(&mut self) -> Result<T, Error> {
        debug_assert!(self.header().settled());
        if self.header().state() == CANCELLED {
            return Err(Error::Cancelled);
        }
        // SAFETY: settled means finished and no done callback still borrows
        // the value; `&mut self` excludes borrows through this handle, and no
        // other handle reads the value any more.
        match std::mem::replace(unsafe { &mut *self.core().value.get() }, Outcome::Empty) {
            Outcome::Value(value) => Ok(value),
            Outcome::Failed(error) => Err(*error),
            Outcome::Empty => Err(taken()),
        }
    }
}

impl<T: Send + Sync + 'static> Future<T> {
    /// Calls `callback` with this future once it is done (finished or
    /// cancelled).
    ///
    /// Callbacks run once each, in the order they were added, in the thread
    /// that completes the future; if the future is already done, `callback`
    /// runs at once in this thread. A panicking callback is reported on
    /// stderr and the remaining callbacks still run. Taking the value out
    /// ([`into_result`](Self::into_result), `.await`) waits until the
    /// callbacks have run, since they may borrow it.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    /// use std::sync::mpsc;
    ///
    /// let (promise, future) = Promise::new();
    /// let (tx, rx) = mpsc::channel();
    /// future.add_done_callback(move |f| tx.send(*f.result().unwrap() * 2).unwrap());
    /// assert!(rx.try_recv().is_err()); // not done: the callback waits
    /// promise.set_result(21).unwrap(); // runs the callback, in this thread
    /// assert_eq!(rx.try_recv(), Ok(42));
    /// ```
    pub fn add_done_callback<F>(&self, callback: F)
    where
        F: FnOnce(&Future<T>) + Send + 'static,
    {
        let handle = Future::from_cell(Arc::clone(&self.cell));
        let bound: state::Callback = Box::new(move || callback(&handle));
        if let Some(bound) = self.header().add_callback(bound) {
            self.header().run_late_callback(bound);
        }
    }
}

fn own_callback() -> Error {
    Error::InvalidState(
        "cannot take the value out of a future from its own done callback \
         (the callbacks may borrow it); use `result()` there"
            .into(),
    )
}

fn taken() -> Error {
    Error::InvalidState("the value was already taken out of the future".into())
}

pub(crate) fn deadline(timeout: Duration) -> Option<Instant> {
    // A timeout too large to represent is no deadline at all.
    Instant::now().checked_add(timeout)
}

/// Awaiting a future takes its value out, like
/// [`into_result`](Future::into_result), without blocking a thread; any
/// async runtime can drive it.
///
/// # Examples
///
/// ```
/// use concurrent_futures::ThreadPoolExecutor;
///
/// let pool = ThreadPoolExecutor::new(1).unwrap();
/// let future = pool.submit(|| 6 * 7).unwrap();
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// assert_eq!(rt.block_on(async { future.await }), Ok(42));
/// ```
impl<T> std::future::Future for Future<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.header().in_own_callback() {
            return Poll::Ready(Err(own_callback()));
        }
        match this.header().poll_settled(cx) {
            Poll::Ready(()) => Poll::Ready(this.take()),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Future")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl<T> Future<T> {
    /// The address of the shared cell: the future's identity. Thin, because
    /// two pointers to one object may carry different vtables.
    fn addr(&self) -> *const () {
        Arc::as_ptr(&self.cell).cast::<()>()
    }
}

/// Identity: a future equals only itself (two futures are never equal for
/// holding equal values), so futures can be keys of a map, as in Python's
/// `future_to_url = {executor.submit(load_url, url): url for url in urls}`.
///
/// ```
/// use concurrent_futures::{ThreadPoolExecutor, as_completed};
/// use std::collections::HashMap;
///
/// let pool = ThreadPoolExecutor::new(2).unwrap();
/// let names = ["a", "bb", "ccc"];
/// let future_to_name: HashMap<_, _> =
///     names.iter().map(|&n| (pool.submit(move || n.len()).unwrap(), n)).collect();
/// for f in as_completed(future_to_name.keys(), None) {
///     let f = f.unwrap();
///     assert_eq!(*f.result().unwrap(), future_to_name[f].len());
/// }
/// ```
impl<T> PartialEq for Future<T> {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.addr(), other.addr())
    }
}

impl<T> Eq for Future<T> {}

/// Hashes the identity (the address), consistently with [`PartialEq`].
impl<T> std::hash::Hash for Future<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.addr().hash(state);
    }
}

/// Anything `wait` and `as_completed` can wait on: a [`Future`] of any value
/// type, a reference to one, or a boxed or shared one. Mix futures of
/// different types through `&dyn Waitable`.
///
/// The trait is sealed: futures come from this crate (make your own with
/// [`Promise`]). Its methods have the names and meaning of [`Future`]'s.
///
/// ```
/// use concurrent_futures::{Promise, Waitable};
///
/// let (promise, number) = Promise::<u32>::new();
/// let (_keep, text) = Promise::<String>::new();
/// promise.set_result(1).unwrap();
/// let mixed: [&dyn Waitable; 2] = [&number, &text];
/// assert!(mixed[0].done());
/// assert!(mixed[1].cancel() && mixed[1].cancelled());
/// ```
pub trait Waitable: sealed::HasHeader {
    /// True if the future is cancelled or finished ([`Future::done`]).
    fn done(&self) -> bool {
        self.header().done()
    }

    /// True if the future was cancelled ([`Future::cancelled`]).
    fn cancelled(&self) -> bool {
        self.header().state() == CANCELLED
    }

    /// Cancels the future if it has not started ([`Future::cancel`]).
    fn cancel(&self) -> bool {
        self.header().cancel()
    }
}

pub(crate) mod sealed {
    use super::Header;

    /// Gives `wait` and `as_completed` the type-erased state of a future.
    pub trait HasHeader {
        #[doc(hidden)]
        fn header(&self) -> &Header;
    }
}

impl<T> sealed::HasHeader for Future<T> {
    fn header(&self) -> &Header {
        &self.core().header
    }
}
impl<T> Waitable for Future<T> {}

impl<W: Waitable + ?Sized> sealed::HasHeader for &W {
    fn header(&self) -> &Header {
        (**self).header()
    }
}
impl<W: Waitable + ?Sized> Waitable for &W {}

impl<W: Waitable + ?Sized> sealed::HasHeader for Box<W> {
    fn header(&self) -> &Header {
        (**self).header()
    }
}
impl<W: Waitable + ?Sized> Waitable for Box<W> {}

impl<W: Waitable + ?Sized> sealed::HasHeader for std::sync::Arc<W> {
    fn header(&self) -> &Header {
        (**self).header()
    }
}
impl<W: Waitable + ?Sized> Waitable for std::sync::Arc<W> {}
