//! Scoped submission: tasks that borrow from the caller's stack, all joined
//! before the scope returns (the model is `std::thread::scope`).

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

use super::job::{Job, JobRef, TaskCell};
use super::registry::Registry;
use crate::future::HasCore;
use crate::sync::{Condvar, Mutex, lock};
use crate::{Error, Future};

/// A scope to submit borrowing tasks to a [`ThreadPoolExecutor`]; see
/// [`ThreadPoolExecutor::scope`].
///
/// If the scope's body panics, its tasks that have not started are
/// cancelled; those already running are waited for, then the panic goes on.
///
/// [`ThreadPoolExecutor`]: super::ThreadPoolExecutor
/// [`ThreadPoolExecutor::scope`]: super::ThreadPoolExecutor::scope
pub struct Scope<'scope, 'env: 'scope> {
    registry: &'scope Arc<Registry>,
    outstanding: Arc<Outstanding>,
    /// Every job submitted, so that leaving the scope by panic can cancel
    /// those that have not started. Their lifetime is erased as in `submit`;
    /// the list goes with the scope, before `run` returns.
    jobs: Mutex<Vec<Arc<dyn Job>>>,
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
        let cell = Arc::new(TaskCell::new(task));
        let as_job: Arc<dyn Job + 'scope> = cell.clone();
        // SAFETY: only the object's lifetime bound changes; `jobs` is dropped
        // with the scope, inside `run`, so this reference to the cell never
        // outlives 'scope.
        let as_job: Arc<dyn Job> =
            unsafe { std::mem::transmute::<Arc<dyn Job + 'scope>, Arc<dyn Job>>(as_job) };
        lock(&self.jobs).push(as_job);
        let as_core: Arc<dyn HasCore<T> + 'scope> = cell.clone();
        // SAFETY: only the object's lifetime bound changes. The cell's
        // closure (the part that borrows for 'scope) is taken out and dropped
        // when the job is consumed, which `Guarded` makes happen before the
        // scope ends; after that the cell holds only the `T`, and `Future<T>`
        // keeps `T`'s own lifetime in its type.
        let as_core: Arc<dyn HasCore<T>> = unsafe {
            std::mem::transmute::<Arc<dyn HasCore<T> + 'scope>, Arc<dyn HasCore<T>>>(as_core)
        };
        let future = Future::from_cell(as_core);
        self.outstanding.add();
        let guarded: Arc<dyn Job + 'scope> = Arc::new(Guarded {
            job: Some(cell),
            outstanding: Arc::clone(&self.outstanding),
        });
        // SAFETY: the queue's type says 'static, but `run` below does not
        // return before `outstanding` is back to zero, and `Guarded` counts
        // itself out only in its `Drop`, after letting go of the job: the job
        // and what it borrows never outlive 'scope. `Guarded` is held by the
        // queue alone, so its `Drop` runs when the queue lets go of it.
        let guarded: Arc<dyn Job> =
            unsafe { std::mem::transmute::<Arc<dyn Job + 'scope>, Arc<dyn Job>>(guarded) };
        match self.registry.push(JobRef::new(guarded)) {
            Ok(()) => Ok(future),
            Err((error, job)) => {
                job.cancel();
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
        jobs: Mutex::new(Vec::new()),
        _scope: PhantomData,
        _env: PhantomData,
    };
    let result = catch_unwind(AssertUnwindSafe(|| body(&scope)));
    if result.is_err() {
        // Leaving by panic: what has not started is cancelled, not run
        // (CPython gh-130975). Running tasks are still waited for: they
        // borrow from the stack being unwound.
        for job in lock(&scope.jobs).iter() {
            job.cancel();
        }
    }
    scope.outstanding.wait_zero();
    match result {
        Ok(value) => value,
        Err(payload) => resume_unwind(payload),
    }
}

/// A job of a scope; dropping it checks it out of the scope.
struct Guarded<J: Job + ?Sized> {
    job: Option<Arc<J>>,
    outstanding: Arc<Outstanding>,
}

impl<J: Job + ?Sized> Job for Guarded<J> {
    fn run(&self, on_ran: &dyn Fn()) {
        if let Some(job) = &self.job {
            job.run(on_ran);
        }
    }

    fn cancel(&self) {
        if let Some(job) = &self.job {
            job.cancel();
        }
    }

    fn fail(&self, error: Error) {
        if let Some(job) = &self.job {
            job.fail(error);
        }
    }

    fn abandon(&self) {
        if let Some(job) = &self.job {
            job.abandon();
        }
    }
}

impl<J: Job + ?Sized> Drop for Guarded<J> {
    fn drop(&mut self) {
        // The job (and, if the future is gone too, its value) goes first.
        drop(self.job.take());
        self.outstanding.done();
    }
}

/// Counts the jobs of a scope that the queue has not let go of.
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
