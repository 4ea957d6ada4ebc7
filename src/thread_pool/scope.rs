//! Scoped submission: tasks that borrow from the caller's stack, all joined
//! before the scope returns (the model is `std::thread::scope`).

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

use super::job::{Job, Task};
use super::registry::Registry;
use crate::sync::{Condvar, Mutex, lock};
use crate::{Error, Future, Promise};

/// A scope to submit borrowing tasks to a [`ThreadPoolExecutor`]; see
/// [`ThreadPoolExecutor::scope`].
///
/// [`ThreadPoolExecutor`]: super::ThreadPoolExecutor
/// [`ThreadPoolExecutor::scope`]: super::ThreadPoolExecutor::scope
pub struct Scope<'scope, 'env: 'scope> {
    registry: &'scope Arc<Registry>,
    outstanding: Arc<Outstanding>,
    /// Invariant in `'scope` and `'env`, as `std::thread::Scope` is.
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl<'scope> Scope<'scope, '_> {
    /// Submits a task that may borrow anything that outlives the scope.
    pub fn submit<F, T>(&'scope self, task: F) -> Result<Future<T>, Error>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let (promise, future) = Promise::new();
        let job: Box<dyn Job + 'scope> = Box::new(Task { func: task, promise });
        self.outstanding.add();
        let guarded = Box::new(Guarded {
            job: Some(job),
            outstanding: Arc::clone(&self.outstanding),
        });
        // SAFETY: the job borrows data that lives for 'scope. `run` below does
        // not return before `outstanding` is back to zero, and `Guarded`
        // decrements it only when the job has been consumed (run, cancelled,
        // failed or dropped), so the job never outlives 'scope even though
        // the queue's type says 'static.
        let guarded: Box<dyn Job + 'static> =
            unsafe { std::mem::transmute::<Box<dyn Job + 'scope>, Box<dyn Job + 'static>>(guarded) };
        match self.registry.push(guarded) {
            Ok(()) => Ok(future),
            Err((error, job)) => {
                drop(job);
                Err(error)
            }
        }
    }
}

pub(super) fn run<'env, F, R>(registry: &Arc<Registry>, body: F) -> R
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    let scope = Scope {
        registry,
        outstanding: Arc::new(Outstanding::new()),
        _scope: PhantomData,
        _env: PhantomData,
    };
    let result = catch_unwind(AssertUnwindSafe(|| body(&scope)));
    scope.outstanding.wait_zero();
    match result {
        Ok(value) => value,
        Err(payload) => resume_unwind(payload),
    }
}

/// A job of a scope; consuming or dropping it checks it out of the scope.
struct Guarded<'scope> {
    job: Option<Box<dyn Job + 'scope>>,
    outstanding: Arc<Outstanding>,
}

impl Job for Guarded<'_> {
    fn run(mut self: Box<Self>, on_ran: &dyn Fn()) {
        if let Some(job) = self.job.take() {
            job.run(on_ran);
        }
    }

    fn cancel(mut self: Box<Self>) {
        if let Some(job) = self.job.take() {
            job.cancel();
        }
    }

    fn fail(mut self: Box<Self>, error: Error) {
        if let Some(job) = self.job.take() {
            job.fail(error);
        }
    }
}

impl Drop for Guarded<'_> {
    fn drop(&mut self) {
        // The job (and everything it borrows) goes first.
        drop(self.job.take());
        self.outstanding.done();
    }
}

/// Counts the jobs of a scope that have not been consumed.
struct Outstanding {
    count: Mutex<usize>,
    zero: Condvar,
}

impl Outstanding {
    fn new() -> Outstanding {
        Outstanding {
            count: Mutex::new(0),
            zero: Condvar::new(),
        }
    }

    fn add(&self) {
        *lock(&self.count) += 1;
    }

    fn done(&self) {
        let mut count = lock(&self.count);
        *count -= 1;
        if *count == 0 {
            self.zero.notify_all();
        }
    }

    fn wait_zero(&self) {
        let mut count = lock(&self.count);
        while *count > 0 {
            count = self.zero.wait(count).unwrap_or_else(|p| p.into_inner());
        }
    }
}
