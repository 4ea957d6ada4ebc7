//! What sits in the queue: a task's closure, in the same allocation as the
//! future it completes.

use std::sync::{Arc, Mutex};

use crate::Error;
use crate::future::{Core, HasCore};

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
pub(crate) struct TaskCell<F, T> {
    core: Core<T>,
    /// Taken exactly once, by whoever consumes the job.
    func: Mutex<Option<F>>,
}

impl<F, T> TaskCell<F, T> {
    pub(crate) fn new(func: F) -> TaskCell<F, T> {
        TaskCell {
            core: Core::new(),
            func: Mutex::new(Some(func)),
        }
    }

    fn take_func(&self) -> Option<F> {
        self.func.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl<F: Send, T: Send> HasCore<T> for TaskCell<F, T> {
    fn core(&self) -> &Core<T> {
        &self.core
    }
}

impl<F, T> Job for TaskCell<F, T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    fn run(&self, on_ran: &dyn Fn()) {
        let Some(func) = self.take_func() else { return };
        if !self.core.header().set_running() {
            return;
        }
        let outcome = crate::panic::catch(func);
        on_ran();
        // Only a concurrent `abort` can have completed it meanwhile.
        let _ = self.core.complete(outcome);
    }

    fn cancel(&self) {
        drop(self.take_func());
        self.core.header().cancel();
    }

    fn fail(&self, error: Error) {
        drop(self.take_func());
        let _ = self.core.complete(Err(error));
    }

    fn abandon(&self) {
        if !self.core.header().done() {
            self.fail(Error::Abandoned);
        }
    }
}
