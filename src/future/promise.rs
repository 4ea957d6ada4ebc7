//! The completing side of a future.

use std::fmt;

use super::{Core, Future};
use crate::Error;
use crate::error::TaskError;
use std::sync::Arc;

/// The writing end of a [`Future`]: whoever holds it runs the task (or
/// obtains the value some other way) and completes the future.
///
/// This is what executors are made of, and it lets anyone complete a future by
/// hand (Python's `Future()` with `set_result`).
///
/// Completing twice, or completing a cancelled future, is an
/// [`Error::InvalidState`], never a silent overwrite. A promise dropped
/// without completing its future fails it with [`Error::Abandoned`], so no
/// waiter can hang on a task that will never run.
///
/// ```
/// use concurrent_futures::Promise;
///
/// let (promise, future) = Promise::new();
/// std::thread::spawn(move || {
///     if promise.set_running() {
///         promise.set_result(6 * 7).unwrap();
///     }
/// });
/// assert_eq!(future.result(), Ok(&42));
/// ```
pub struct Promise<T> {
    core: Arc<Core<T>>,
}

impl<T: Send + 'static> Promise<T> {
    /// A new pending future and the promise that completes it.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    ///
    /// let (promise, future) = Promise::new();
    /// assert!(!future.done());
    /// promise.set_result("hello").unwrap();
    /// assert_eq!(future.into_result(), Ok("hello"));
    /// ```
    #[allow(clippy::new_ret_no_self)]
    #[must_use = "the Future is how the value set on the Promise is read; a Promise dropped unused fails its Future"]
    pub fn new() -> (Promise<T>, Future<T>) {
        let core = Arc::new(Core::new());
        let future = Future::from_cell(Arc::clone(&core) as Arc<dyn super::HasCore<T>>);
        (Promise { core }, future)
    }
}

impl<T> Promise<T> {
    /// Marks the future running, just before the task starts. Returns `false`
    /// if the future was cancelled (or is no longer pending): then the task
    /// must not run. Python's `set_running_or_notify_cancel`.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    ///
    /// let (promise, future) = Promise::<u32>::new();
    /// assert!(promise.set_running()); // pending: the task may start
    /// assert!(future.running());
    ///
    /// let (promise, future) = Promise::<u32>::new();
    /// future.cancel();
    /// assert!(!promise.set_running()); // cancelled: the task must not run
    /// ```
    pub fn set_running(&self) -> bool {
        self.core.header().set_running()
    }

    /// Finishes the future with a value.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, Promise};
    ///
    /// let (promise, future) = Promise::new();
    /// promise.set_result(42).unwrap();
    /// assert_eq!(future.result(), Ok(&42));
    /// // A second completion is refused; the first value stays.
    /// assert!(matches!(promise.set_result(0), Err(Error::InvalidState(_))));
    /// assert_eq!(future.result(), Ok(&42));
    /// ```
    pub fn set_result(&self, value: T) -> Result<(), Error> {
        self.core.complete(Ok(value))
    }

    /// Finishes the future with an error.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, Promise};
    ///
    /// let (promise, future) = Promise::<u32>::new();
    /// promise.set_error(Error::InvalidArgument("no input".into())).unwrap();
    /// assert_eq!(future.result(), Err(Error::InvalidArgument("no input".into())));
    /// ```
    pub fn set_error(&self, error: Error) -> Result<(), Error> {
        self.core.complete(Err(error))
    }

    /// Fails the future with the task's own error: it finishes with
    /// [`Error::Failed`], which keeps `error` (as its
    /// [`source`](std::error::Error::source)), its type name and its text.
    /// Like every failure, it makes [`wait`](crate::wait()) with
    /// [`FirstException`](crate::ReturnWhen::FirstException) return.
    ///
    /// ```
    /// use concurrent_futures::{Error, Promise};
    ///
    /// let (promise, future) = Promise::<u32>::new();
    /// promise.set_failure(std::io::Error::other("no route")).unwrap();
    /// match future.into_result() {
    ///     Err(Error::Failed(e)) => {
    ///         assert_eq!(e.message(), "no route");
    ///         assert_eq!(e.downcast_ref::<std::io::Error>().unwrap().kind(), std::io::ErrorKind::Other);
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn set_failure<E>(&self, error: E) -> Result<(), Error>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        self.set_error(Error::Failed(TaskError::new(error)))
    }

    /// Finishes the future with a value or an error.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, Promise};
    ///
    /// fn parse(text: &str) -> Result<u32, Error> {
    ///     text.parse().map_err(|_| Error::InvalidArgument(format!("not a number: {text}")))
    /// }
    ///
    /// let (promise, future) = Promise::new();
    /// promise.set_outcome(parse("42")).unwrap();
    /// assert_eq!(future.into_result(), Ok(42));
    ///
    /// let (promise, future) = Promise::new();
    /// promise.set_outcome(parse("forty-two")).unwrap();
    /// assert!(matches!(future.into_result(), Err(Error::InvalidArgument(_))));
    /// ```
    pub fn set_outcome(&self, outcome: Result<T, Error>) -> Result<(), Error> {
        self.core.complete(outcome)
    }

    /// Finishes the future like [`set_outcome`](Self::set_outcome) and wakes
    /// its waiters, but leaves its done callbacks to the returned
    /// [`DeferredCallbacks`], to be run on another thread.
    pub(crate) fn set_outcome_deferring(
        &self,
        outcome: Result<T, Error>,
    ) -> Result<DeferredCallbacks, Error>
    where
        T: Send + 'static,
    {
        let callbacks = self.core.complete_deferring(outcome)?;
        if callbacks.is_empty() {
            return Ok(DeferredCallbacks(None));
        }
        let core = Arc::clone(&self.core);
        Ok(DeferredCallbacks(Some(Box::new(move || {
            core.header().run_callbacks(callbacks)
        }))))
    }

    /// Hands the task's start over to `gate` (see the state module): the
    /// future stays pending, and `cancel` succeeds only if the gate stops
    /// the task from starting.
    /// With it, `abort` (if given) becomes the future's abort handler (see
    /// [`set_abort_handler`](Self::set_abort_handler)). Returns false (and
    /// installs nothing) if the future is not pending.
    pub(crate) fn set_gate(
        &self,
        gate: Box<dyn super::state::StartGate>,
        abort: Option<Box<dyn FnOnce() + Send>>,
    ) -> bool {
        self.core.header().set_gate(gate, abort)
    }

    /// A handle that cancels this future from anywhere, whatever its type.
    pub(crate) fn canceller(&self) -> Canceller
    where
        T: Send + 'static,
    {
        Canceller(Arc::clone(&self.core) as Arc<dyn super::state::HasHeader>)
    }

    /// Takes the gate away again (the task came back unstarted). Returns
    /// whether the future is still pending.
    pub(crate) fn clear_gate(&self) -> bool {
        self.core.header().clear_gate()
    }

    /// Cancels the future if it is still pending (executors use this to
    /// cancel queued work). Same result as [`Future::cancel`].
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, Promise};
    ///
    /// let (promise, future) = Promise::<u32>::new();
    /// assert!(promise.cancel());
    /// assert_eq!(future.result(), Err(Error::Cancelled));
    /// ```
    pub fn cancel(&self) -> bool {
        self.core.header().cancel()
    }

    /// True if the future was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    ///
    /// let (promise, future) = Promise::<u32>::new();
    /// assert!(!promise.is_cancelled());
    /// future.cancel(); // the consumer gave up on the value
    /// assert!(promise.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.core.header().state() == super::state::CANCELLED
    }

    /// True if the future is finished or cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    ///
    /// let (promise, _future) = Promise::new();
    /// assert!(!promise.is_done());
    /// promise.set_result(1).unwrap();
    /// assert!(promise.is_done());
    /// ```
    pub fn is_done(&self) -> bool {
        self.core.header().done()
    }

    /// Installs what [`Future::abort`] does to a *running* future: the future
    /// is first marked cancelled (waking every waiter), then `handler` runs,
    /// and must stop the work. Ignored once the future is done.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, Promise};
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    ///
    /// let (promise, future) = Promise::<u32>::new();
    /// let stop = Arc::new(AtomicBool::new(false));
    /// let flag = Arc::clone(&stop);
    /// promise.set_abort_handler(move || flag.store(true, Ordering::SeqCst));
    ///
    /// assert!(promise.set_running());
    /// assert!(future.abort()); // marks the future cancelled, then runs the handler
    /// assert!(stop.load(Ordering::SeqCst)); // the work would check this flag and stop
    /// assert_eq!(future.result(), Err(Error::Cancelled));
    /// ```
    pub fn set_abort_handler(&self, handler: impl FnOnce() + Send + 'static) {
        self.core.header().set_abort_handler(Box::new(handler));
    }
}

impl<T> Drop for Promise<T> {
    fn drop(&mut self) {
        if !self.core.header().done() {
            // Another thread may finish or cancel it meanwhile; then this
            // fails with InvalidState, which is what we want.
            let _ = self.core.complete(Err(Error::Abandoned));
        }
    }
}

/// Cancels one future (see [`Promise::canceller`]).
pub(crate) struct Canceller(Arc<dyn super::state::HasHeader>);

impl Canceller {
    /// [`Future::cancel`]: runs the callbacks in this thread.
    pub(crate) fn cancel(&self) -> bool {
        self.0.header().cancel()
    }
}

/// Done callbacks of a completed future, still to run. Running them (or
/// dropping this, which runs them too) lets the value be taken out.
#[must_use = "the future's value cannot be taken out until its callbacks ran"]
pub(crate) struct DeferredCallbacks(Option<Box<dyn FnOnce() + Send>>);

impl DeferredCallbacks {
    /// Nothing to run.
    pub(crate) fn none() -> DeferredCallbacks {
        DeferredCallbacks(None)
    }

    /// True if there is nothing to run.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Runs the callbacks in this thread.
    pub(crate) fn run(mut self) {
        if let Some(run) = self.0.take() {
            run();
        }
    }
}

impl Drop for DeferredCallbacks {
    fn drop(&mut self) {
        if let Some(run) = self.0.take() {
            run();
        }
    }
}

impl<T> fmt::Debug for Promise<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Promise")
            .field("done", &self.is_done())
            .finish_non_exhaustive()
    }
}
