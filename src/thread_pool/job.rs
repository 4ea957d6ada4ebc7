//! What sits in the queue: a task bound to the promise it completes.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::{Error, Promise};

/// A unit of work in a pool's queue.
pub(crate) trait Job: Send {
    /// Runs the task if its future was not cancelled. `on_ran` is called
    /// after the task's code and before its future is completed, so the
    /// worker can count itself idle before anyone sees the result.
    fn run(self: Box<Self>, on_ran: &dyn Fn());
    /// The job will never run: cancel its future (`shutdown(cancel_futures)`).
    fn cancel(self: Box<Self>);
    /// The job will never run because the pool broke.
    fn fail(self: Box<Self>, error: Error);
}

/// A closure and the promise of its result.
pub(crate) struct Task<F, T> {
    pub(crate) func: F,
    pub(crate) promise: Promise<T>,
}

impl<F, T> Job for Task<F, T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    fn run(self: Box<Self>, on_ran: &dyn Fn()) {
        let Task { func, promise } = *self;
        if !promise.set_running() {
            return;
        }
        let outcome = catch_unwind(AssertUnwindSafe(func)).map_err(Error::from_panic);
        on_ran();
        // Only a concurrent `abort` can have completed it meanwhile.
        let _ = promise.set_outcome(outcome);
    }

    fn cancel(self: Box<Self>) {
        self.promise.cancel();
    }

    fn fail(self: Box<Self>, error: Error) {
        let _ = self.promise.set_error(error);
    }
}
