//! What sits in the queue: a task's closure, in the same allocation as the
//! future it completes.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use crate::Error;
use crate::future::{Core, HasCore};
use crate::trace::TaskSpan;

/// A unit of work, as the queue sees it.
pub(crate) trait Job: Send + Sync {
    /// Runs the task unless its future was cancelled. `on_ran` is called
    /// after the task's code and before its future is completed, so the
    /// worker can count itself idle before anyone sees the result.
    fn run(&self, on_ran: &dyn Fn());
    /// The task will never run: cancel its future.
    fn cancel(&self);
    /// The task will never run: fail its future with `error`.
    fn fail(&self, error: Error);
    /// The queue lets go of the job: fail its future with
    /// [`Error::Abandoned`] unless it is done (the usual case).
    fn abandon(&self);
}

/// The queue's (unique) reference to a job. A job dropped without being run,
/// cancelled or failed fails its future with [`Error::Abandoned`], so no
/// future waits for a job that no longer exists.
pub(crate) struct JobRef(Arc<dyn Job>);

impl JobRef {
    pub(crate) fn new(job: Arc<dyn Job>) -> JobRef {
        JobRef(job)
    }

    pub(crate) fn run(self, on_ran: &dyn Fn()) {
        self.0.run(on_ran);
    }

    pub(crate) fn cancel(self) {
        self.0.cancel();
    }

    pub(crate) fn fail(self, error: Error) {
        self.0.fail(error);
    }
}

impl Drop for JobRef {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

/// A closure and the core of its future, in one allocation: the future
/// holds the cell as `Arc<dyn HasCore<T>>`, the queue as `Arc<dyn Job>`.
///
/// `K` says what the closure returns: [`Plain`] the future's value, or
/// [`Flat`] a `Result` whose error fails the future (`submit_fallible`).
pub(crate) struct TaskCell<F, T, K = Plain> {
    core: Core<T>,
    /// Taken exactly once, by whoever consumes the job.
    func: Mutex<Option<F>>,
    kind: PhantomData<fn() -> K>,
    /// Its span (feature `tracing`; zero-sized without).
    span: TaskSpan,
}

/// The closure returns the future's value.
pub(crate) struct Plain;

/// The closure returns `Result<T, Error>`: its `Err` fails the future.
pub(crate) struct Flat;

impl<F, T, K> TaskCell<F, T, K> {
    /// A task submitted by the caller (whose location names its span).
    #[cfg_attr(feature = "tracing", track_caller)]
    pub(crate) fn new(func: F) -> TaskCell<F, T, K> {
        TaskCell::with_span(func, TaskSpan::thread(std::panic::Location::caller()))
    }

    pub(crate) fn with_span(func: F, span: TaskSpan) -> TaskCell<F, T, K> {
        TaskCell {
            core: Core::new(),
            func: Mutex::new(Some(func)),
            kind: PhantomData,
            span,
        }
    }

    fn take_func(&self) -> Option<F> {
        self.func.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Runs the closure through `call` unless the future was cancelled.
    fn run_with(&self, on_ran: &dyn Fn(), call: impl FnOnce(F) -> Result<T, Error>) {
        let Some(func) = self.take_func() else { return };
        if !self.core.header().set_running() {
            // Cancelled while queued.
            self.span.finished::<T>(&Err(Error::Cancelled));
            return;
        }
        let outcome = {
            // The task's span is the current one while it runs.
            let _entered = self.span.run();
            let outcome = call(func);
            self.span.finished(&outcome);
            outcome
        };
        on_ran();
        // Only a concurrent `abort` can have completed it meanwhile.
        let _ = self.core.complete(outcome);
    }

    fn cancel_cell(&self) {
        drop(self.take_func());
        self.span.finished::<T>(&Err(Error::Cancelled));
        self.core.header().cancel();
    }

    fn fail_cell(&self, error: Error) {
        drop(self.take_func());
        let outcome = Err(error);
        self.span.finished(&outcome);
        let _ = self.core.complete(outcome);
    }

    fn abandon_cell(&self) {
        if !self.core.header().done() {
            self.fail_cell(Error::Abandoned);
        }
    }
}

impl<F: Send, T: Send, K> HasCore<T> for TaskCell<F, T, K> {
    fn core(&self) -> &Core<T> {
        &self.core
    }
}

impl<F, T> Job for TaskCell<F, T, Plain>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    fn run(&self, on_ran: &dyn Fn()) {
        self.run_with(on_ran, crate::panic::catch);
    }
    fn cancel(&self) {
        self.cancel_cell();
    }
    fn fail(&self, error: Error) {
        self.fail_cell(error);
    }
    fn abandon(&self) {
        self.abandon_cell();
    }
}

impl<F, T> Job for TaskCell<F, T, Flat>
where
    F: FnOnce() -> Result<T, Error> + Send,
    T: Send,
{
    fn run(&self, on_ran: &dyn Fn()) {
        self.run_with(on_ran, |func| crate::panic::catch(func).and_then(|r| r));
    }
    fn cancel(&self) {
        self.cancel_cell();
    }
    fn fail(&self, error: Error) {
        self.fail_cell(error);
    }
    fn abandon(&self) {
        self.abandon_cell();
    }
}
