//! Scoped submission: tasks that borrow from the caller's stack, all joined
//! before the scope returns (the model is `std::thread::scope`).
//!
//! Guarantees:
//! - Every task submitted through a scope, by `submit` or `map`, has
//!   finished or been dropped unrun before `scope` returns.
//! - `Scope::map` is `ThreadPoolExecutor::map` with borrowing closures and
//!   items: same `MapOptions`, same per-item results, same cancellation on
//!   drop. Its iterator borrows the scope, so it cannot leave it.

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

use super::chunk_source;
use super::job::{Flat, Job, JobRef, Plain, TaskCell};
use super::shared::Shared;
use crate::error::TaskError;
use crate::future::HasCore;
use crate::map::{Map, MapOptions};
use crate::sync::{Condvar, Mutex, lock};
use crate::trace::TaskSpan;
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
    shared: &'scope Arc<Shared>,
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
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let text = "borrowed, not moved";
    /// let mut counts = [0usize; 2];
    /// pool.scope(|s| {
    ///     let [commas, spaces] = &mut counts;
    ///     let a = s.submit(move || *commas = text.matches(',').count()).unwrap();
    ///     let b = s.submit(move || *spaces = text.matches(' ').count()).unwrap();
    ///     drop((a, b)); // the scope waits for its tasks anyway
    /// });
    /// assert_eq!(counts, [1, 2]);
    /// ```
    #[cfg_attr(feature = "tracing", track_caller)]
    pub fn submit<F, T>(&'scope self, task: F) -> Result<Future<T>, Error>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        self.submit_cell(Arc::new(TaskCell::<_, T, Plain>::new(task)))
    }

    /// Like [`submit`](Self::submit), for a task that can fail with its own
    /// error: an `Err(e)` fails the future with [`Error::Failed`], as
    /// [`ThreadPoolExecutor::submit_fallible`](super::ThreadPoolExecutor::submit_fallible)
    /// does.
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let inputs = ["7", "seven"];
    /// let failed = pool.scope(|s| {
    ///     let futures: Vec<_> =
    ///         inputs.iter().map(|t| s.submit_fallible(move || t.parse::<u8>()).unwrap()).collect();
    ///     futures.iter().filter(|f| matches!(f.exception(), Ok(Some(Error::Failed(_))))).count()
    /// });
    /// assert_eq!(failed, 1);
    /// ```
    #[cfg_attr(feature = "tracing", track_caller)]
    pub fn submit_fallible<F, T, E>(&'scope self, task: F) -> Result<Future<T>, Error>
    where
        F: FnOnce() -> Result<T, E> + Send + 'scope,
        T: Send + 'scope,
        E: std::error::Error + Send + Sync + 'static,
    {
        let task = move || task().map_err(|e| Error::Failed(TaskError::new(e)));
        self.submit_cell(Arc::new(TaskCell::<_, T, Flat>::new(task)))
    }

    /// Queues `cell`, counted in the scope, and returns its future.
    fn submit_cell<F, T, K>(&'scope self, cell: Arc<TaskCell<F, T, K>>) -> Result<Future<T>, Error>
    where
        TaskCell<F, T, K>: Job + HasCore<T> + 'scope,
        T: Send + 'scope,
    {
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
        match self.shared.push(JobRef::new(guarded)) {
            Ok(()) => Ok(future),
            Err((error, job)) => {
                job.cancel();
                Err(error)
            }
        }
    }

    /// Runs `f` on every item and yields the results in input order, one
    /// `Result` per item, like [`ThreadPoolExecutor::map`], except that `f`
    /// and the items may borrow anything that outlives the scope. Everything
    /// is submitted before this returns.
    ///
    /// The results themselves must own their data (`T: 'static`): they
    /// travel in the chunk futures that `map` shares with the pools. A task
    /// that returns a borrow can use [`submit`](Self::submit).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let urls = vec!["https://a.example".to_string(), "https://bb.example".to_string()];
    /// let lengths: Vec<usize> = pool.scope(|s| {
    ///     s.map(|u: &String| u.len(), urls.iter())
    ///         .unwrap()
    ///         .collect::<Result<_, _>>()
    ///         .unwrap()
    /// });
    /// assert_eq!(lengths, [17, 18]);
    /// ```
    ///
    /// The iterator cannot leave the scope (its tasks borrow what the scope
    /// protects):
    ///
    /// ```compile_fail
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let words = vec!["a".to_string()];
    /// let escaped = pool.scope(|s| s.map(|w: &String| w.len(), words.iter()).unwrap());
    /// ```
    ///
    /// [`ThreadPoolExecutor::map`]: super::ThreadPoolExecutor::map
    pub fn map<I, F, T>(&'scope self, f: F, items: I) -> Result<Map<'scope, T>, Error>
    where
        I: IntoIterator,
        I::IntoIter: 'scope,
        I::Item: Send + 'scope,
        F: Fn(I::Item) -> T + Send + Sync + 'scope,
        T: Send + 'static,
    {
        self.map_with(f, items, MapOptions::new())
    }

    /// [`map`](Self::map) with a timeout, a buffersize or a chunksize; see
    /// [`MapOptions`].
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{MapOptions, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let data: Vec<u64> = (1..=100).collect();
    /// let offset = 1;
    /// let total: u64 = pool.scope(|s| {
    ///     let opts = MapOptions::new().chunksize(16).buffersize(2);
    ///     s.map_with(|n: &u64| n + offset, &data, opts).unwrap().map(Result::unwrap).sum()
    /// });
    /// assert_eq!(total, 5050 + 100);
    /// ```
    pub fn map_with<I, F, T>(
        &'scope self,
        f: F,
        items: I,
        options: MapOptions,
    ) -> Result<Map<'scope, T>, Error>
    where
        I: IntoIterator,
        I::IntoIter: 'scope,
        I::Item: Send + 'scope,
        F: Fn(I::Item) -> T + Send + Sync + 'scope,
        T: Send + 'static,
    {
        options.validate()?;
        // No new unsafe code: each chunk is an ordinary scoped task, so
        // `submit`'s SAFETY arguments cover the borrows of `f` and of the
        // items, and the iterator (holding `&'scope self`) cannot outlive
        // the scope that joins them.
        let source = chunk_source(
            items.into_iter(),
            f,
            options.get_chunksize(),
            move |chunk| {
                let span = TaskSpan::thread_map(chunk.len());
                self.submit_cell(Arc::new(TaskCell::<_, _, Plain>::with_span(
                    move || chunk.run(),
                    span,
                )))
            },
        );
        Map::new(&options, source)
    }
}

pub(super) fn run<'env, F, R>(shared: &Arc<Shared>, body: F) -> R
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    let scope = Scope {
        shared,
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
