//! [`ThreadPoolExecutor`]: tasks on a pool of threads of this process, for
//! I/O-bound work and anything that must share memory.
//!
//! The pool is the crate's faster path: one allocation for the future, one
//! for the job, a lock-free queue, and no lock or syscall on `submit` while
//! every worker is busy (see the `sleep` module for the wake-up protocol).

mod builder;
mod gate;
mod headcount;
mod job;
mod main_loop;
mod scope;
mod shared;
mod sleep;

use std::fmt;
use std::sync::Arc;

pub use builder::ThreadPoolBuilder;
pub use scope::Scope;

use crate::error::TaskError;
use crate::future::HasCore;
use crate::map::{ChunkFuture, ChunkResults, ChunkSource, Map, MapOptions, MapUnordered};
use crate::trace::TaskSpan;
use crate::{Error, Future, TaskFn};
use job::{Flat, JobRef, Plain, TaskCell};
use shared::Shared;

/// The thread pool's synchronisation protocols, for the loom models in
/// `tests/loom_thread_pool.rs` only; not a public API.
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    pub use super::gate::{Entered, Gate};
    pub use super::headcount::Headcount;
    pub use super::main_loop::{Idle, JobQueue, next_job};
    pub use super::sleep::Sleep;
}

/// A pool of worker threads running submitted closures.
///
/// Python's `ThreadPoolExecutor`: threads start lazily, an idle thread is
/// reused before a new one starts, there are never more than `max_workers`,
/// and a panicking task fails only its own future. Threads live until
/// shutdown, unless an [`idle_timeout`](ThreadPoolBuilder::idle_timeout)
/// ends those left idle (they start again on demand).
///
/// Dropping the pool shuts it down and waits for the queued work to finish;
/// while the thread is panicking, the queued work is cancelled instead (only
/// running tasks are waited for).
///
/// Python's `ThreadPoolExecutor` example from its documentation, line for line:
///
/// ```
/// use concurrent_futures::ThreadPoolExecutor;
///
/// fn task(n: u64) -> u64 {
///     n * n
/// }
///
/// let executor = ThreadPoolExecutor::new(4).unwrap();
/// let futures: Vec<_> = (0..10).map(|i| executor.submit(move || task(i)).unwrap()).collect();
/// let results: Vec<u64> = futures.into_iter().map(|f| f.into_result().unwrap()).collect();
/// println!("{results:?}");
/// # assert_eq!(results, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
/// ```
pub struct ThreadPoolExecutor {
    shared: Arc<Shared>,
}

impl ThreadPoolExecutor {
    /// A pool of at most `max_workers` threads. Zero is an
    /// [`Error::InvalidArgument`].
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(4).unwrap();
    /// assert_eq!(pool.max_workers(), 4);
    /// assert!(matches!(ThreadPoolExecutor::new(0), Err(Error::InvalidArgument(_))));
    /// ```
    pub fn new(max_workers: usize) -> Result<ThreadPoolExecutor, Error> {
        ThreadPoolBuilder::new().max_workers(max_workers).build()
    }

    /// A builder for the other settings: thread names, initializer.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::builder().max_workers(2).build().unwrap();
    /// assert_eq!(pool.max_workers(), 2);
    /// ```
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::new()
    }

    fn from_shared(shared: Shared) -> ThreadPoolExecutor {
        ThreadPoolExecutor {
            shared: Arc::new(shared),
        }
    }

    /// The most threads this pool will run.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(3).unwrap();
    /// assert_eq!(pool.max_workers(), 3);
    /// ```
    pub fn max_workers(&self) -> usize {
        self.shared.max_workers()
    }

    /// How many worker threads have been started so far. Without an
    /// [`idle_timeout`](ThreadPoolBuilder::idle_timeout) threads end only
    /// at shutdown, so this is also how many the pool has; with one, a
    /// thread started again after others left counts too (see
    /// [`live_threads`](Self::live_threads)).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(4).unwrap();
    /// assert_eq!(pool.threads_started(), 0); // threads start on demand
    /// pool.submit(|| ()).unwrap().wait();
    /// assert!((1..=4).contains(&pool.threads_started()));
    /// ```
    pub fn threads_started(&self) -> usize {
        self.shared.threads_started()
    }

    /// How many worker threads exist now: started, and not yet ended by
    /// shutdown or by the [`idle_timeout`](ThreadPoolBuilder::idle_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    /// use std::time::{Duration, Instant};
    ///
    /// let pool = ThreadPoolExecutor::builder()
    ///     .max_workers(2)
    ///     .idle_timeout(Duration::from_millis(20))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(pool.live_threads(), 0); // threads start on demand
    /// pool.submit(|| ()).unwrap().wait();
    /// // Idle for 20 ms, the worker ends.
    /// let start = Instant::now();
    /// while pool.live_threads() > 0 && start.elapsed() < Duration::from_secs(10) {
    ///     std::thread::sleep(Duration::from_millis(5));
    /// }
    /// assert_eq!(pool.live_threads(), 0);
    /// ```
    pub fn live_threads(&self) -> usize {
        self.shared.live_threads()
    }

    /// Schedules `task` and returns the future of its result.
    ///
    /// Fails with [`Error::ShutDown`] after [`shutdown`](Self::shutdown) and
    /// with [`Error::BrokenPool`] once an initializer has failed (a broken
    /// pool says so even after `shutdown`, as in Python). A panic in
    /// `task` fails its future with [`Error::Panicked`]; the worker survives.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let name = String::from("world");
    /// let greeting = pool.submit(move || format!("hello, {name}")).unwrap();
    /// assert_eq!(greeting.into_result().unwrap(), "hello, world");
    ///
    /// pool.shutdown(true, false);
    /// assert!(matches!(pool.submit(|| 1), Err(Error::ShutDown)));
    /// ```
    #[cfg_attr(feature = "tracing", track_caller)]
    pub fn submit<F, T>(&self, task: F) -> Result<Future<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        submit_to(&self.shared, task)
    }

    /// Like [`submit`](Self::submit), for a task that can fail with its own
    /// error: an `Err(e)` returned by `task` fails the future with
    /// [`Error::Failed`], which keeps `e` (as its
    /// [`source`](std::error::Error::source), downcastable), its type name
    /// and its text. The failure then counts as one everywhere: in
    /// [`wait`](crate::wait()) with
    /// [`FirstException`](crate::ReturnWhen::FirstException), in
    /// [`Future::exception`] and in [`as_completed`](crate::as_completed).
    ///
    /// [`submit`](Self::submit) of the same closure gives a
    /// `Future<Result<T, E>>` instead, whose `Err` is a value like any
    /// other; choose that when an `Err` is data rather than a failure.
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    /// use std::num::ParseIntError;
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let good = pool.submit_fallible(|| "42".parse::<u32>()).unwrap();
    /// let bad = pool.submit_fallible(|| "forty-two".parse::<u32>()).unwrap();
    /// assert_eq!(good.into_result(), Ok(42));
    /// match bad.into_result() {
    ///     Err(Error::Failed(e)) => {
    ///         assert_eq!(e.message(), "invalid digit found in string");
    ///         assert!(e.downcast_ref::<ParseIntError>().is_some());
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    #[cfg_attr(feature = "tracing", track_caller)]
    pub fn submit_fallible<F, T, E>(&self, task: F) -> Result<Future<T>, Error>
    where
        F: FnOnce() -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let task = move || task().map_err(|e| Error::Failed(TaskError::new(e)));
        push_cell(&self.shared, Arc::new(TaskCell::<_, T, Flat>::new(task)))
    }

    /// Python's `submit(fn, *args)`: schedules `f(args)`, where `args` is the
    /// single argument of a function of one, a tuple for several, and `()`
    /// for none.
    ///
    /// [`ProcessPoolExecutor`](crate::ProcessPoolExecutor) has the same
    /// method for functions registered with `#[task]`, so code written with
    /// `submit_with` moves between the pools by changing one word.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// fn add(a: i64, b: i64) -> i64 {
    ///     a + b
    /// }
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// assert_eq!(pool.submit_with(add, (40, 2)).unwrap().into_result(), Ok(42));
    /// ```
    #[cfg_attr(feature = "tracing", track_caller)]
    pub fn submit_with<F, A, M>(&self, f: F, args: A) -> Result<Future<F::Output>, Error>
    where
        F: TaskFn<A, M>,
        A: Send + 'static,
        F::Output: Send + 'static,
    {
        self.submit(move || f.call_with(args))
    }

    /// Runs `f` on every item and yields the results in input order, one
    /// `Result` per item. Everything is submitted before this returns (use
    /// [`map_with`](Self::map_with) and a buffersize for large or infinite
    /// inputs).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(4).unwrap();
    /// let lengths: Vec<usize> = pool
    ///     .map(|s: &str| s.len(), ["a", "bb", "ccc"])
    ///     .unwrap()
    ///     .collect::<Result<_, _>>()
    ///     .unwrap();
    /// assert_eq!(lengths, [1, 2, 3]);
    /// ```
    pub fn map<'a, I, F, T>(&self, f: F, items: I) -> Result<Map<'a, T>, Error>
    where
        I: IntoIterator,
        I::IntoIter: 'a,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> T + Send + Sync + 'static,
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
    /// use concurrent_futures::{Error, MapOptions, ThreadPoolExecutor};
    /// use std::time::Duration;
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let opts = MapOptions::new().chunksize(10).timeout(Duration::from_secs(60));
    /// let results: Vec<Result<u64, Error>> = pool
    ///     .map_with(|n: u64| 100 / n, [1, 0, 4], opts)
    ///     .unwrap()
    ///     .collect();
    /// // One failing item does not end the iteration.
    /// assert_eq!(results[0], Ok(100));
    /// assert!(matches!(results[1], Err(Error::Panicked { .. }))); // division by zero
    /// assert_eq!(results[2], Ok(25));
    /// ```
    pub fn map_with<'a, I, F, T>(
        &self,
        f: F,
        items: I,
        options: MapOptions,
    ) -> Result<Map<'a, T>, Error>
    where
        I: IntoIterator,
        I::IntoIter: 'a,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> T + Send + Sync + 'static,
        T: Send + 'static,
    {
        options.validate()?;
        Map::new(
            &options,
            self.chunk_source(f, items, options.get_chunksize()),
        )
    }

    /// Like [`map`](Self::map), but yields each result as soon as its chunk
    /// completes, paired with the position of its item in the input:
    /// `(position, Result)`. Everything is submitted before this returns;
    /// see [`map_unordered_with`](Self::map_unordered_with) for a
    /// buffersize, a chunksize and a timeout, and [`MapUnordered`] for the
    /// details.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(4).unwrap();
    /// let mut lengths = vec![0; 3];
    /// for (i, len) in pool.map_unordered(|s: &str| s.len(), ["a", "bb", "ccc"]).unwrap() {
    ///     lengths[i] = len.unwrap();
    /// }
    /// assert_eq!(lengths, [1, 2, 3]);
    /// ```
    pub fn map_unordered<'a, I, F, T>(&self, f: F, items: I) -> Result<MapUnordered<'a, T>, Error>
    where
        I: IntoIterator,
        I::IntoIter: 'a,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> T + Send + Sync + 'static,
        T: Send + 'static,
    {
        self.map_unordered_with(f, items, MapOptions::new())
    }

    /// [`map_unordered`](Self::map_unordered) with a timeout, a buffersize
    /// or a chunksize; see [`MapOptions`]. With a buffersize, a new chunk is
    /// submitted whenever the consumer takes up a completed one, so a slow
    /// chunk does not hold back the others.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{MapOptions, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let opts = MapOptions::new().buffersize(4).chunksize(8);
    /// let mut seen: Vec<usize> = pool
    ///     .map_unordered_with(|n: u64| n * 2, 0.., opts)
    ///     .unwrap()
    ///     .take(100)
    ///     .map(|(i, r)| {
    ///         assert_eq!(r, Ok(i as u64 * 2));
    ///         i
    ///     })
    ///     .collect();
    /// seen.sort_unstable();
    /// seen.dedup();
    /// assert_eq!(seen.len(), 100);
    /// ```
    pub fn map_unordered_with<'a, I, F, T>(
        &self,
        f: F,
        items: I,
        options: MapOptions,
    ) -> Result<MapUnordered<'a, T>, Error>
    where
        I: IntoIterator,
        I::IntoIter: 'a,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> T + Send + Sync + 'static,
        T: Send + 'static,
    {
        options.validate()?;
        MapUnordered::new(
            &options,
            self.chunk_source(f, items, options.get_chunksize()),
        )
    }

    /// The chunks of `map` and `map_unordered`: one task per `chunksize`
    /// items, each item's panic caught on its own.
    fn chunk_source<'a, I, F, T>(&self, f: F, items: I, chunksize: usize) -> ChunkSource<'a, T>
    where
        I: IntoIterator,
        I::IntoIter: 'a,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> T + Send + Sync + 'static,
        T: Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        chunk_source(items.into_iter(), f, chunksize, move |chunk| {
            let span = TaskSpan::thread_map(chunk.len());
            push_cell(
                &shared,
                Arc::new(TaskCell::<_, _, Plain>::with_span(
                    move || chunk.run(),
                    span,
                )),
            )
        })
    }

    /// Runs `body` with a [`Scope`] whose tasks may borrow from the caller's
    /// stack; every task submitted through it has finished (or was dropped
    /// unrun) before `scope` returns, even if `body` panics.
    ///
    /// Waiting inside a scope task for another task of the same pool can
    /// deadlock a pool with too few threads, exactly as in Python.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let words = vec!["scoped".to_string(), "tasks".to_string()];
    /// let total = pool.scope(|s| {
    ///     let futures: Vec<_> = words.iter().map(|w| s.submit(move || w.len()).unwrap()).collect();
    ///     futures.into_iter().map(|f| f.into_result().unwrap()).sum::<usize>()
    /// });
    /// assert_eq!(total, 11);
    /// ```
    pub fn scope<'env, F, R>(&self, body: F) -> R
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
    {
        scope::run(&self.shared, body)
    }

    /// Stops accepting work. Idempotent.
    ///
    /// Work queued before the call still runs, unless `cancel_futures`, which
    /// cancels every task that has not started. With `wait`, returns once
    /// every worker has exited (the calling thread is never joined, so a task
    /// may shut down its own pool).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, Promise, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(1).unwrap();
    /// // Keep the only worker busy until `gate` is set.
    /// let (gate, open) = Promise::<()>::new();
    /// let (started, has_started) = Promise::<()>::new();
    /// let busy = pool
    ///     .submit(move || {
    ///         started.set_result(()).unwrap();
    ///         open.wait()
    ///     })
    ///     .unwrap();
    /// let queued = pool.submit(|| 42).unwrap();
    /// has_started.wait(); // (not yet started, `busy` would be cancelled too)
    ///
    /// pool.shutdown(false, true); // stop accepting work, cancel what has not started
    /// assert_eq!(queued.result(), Err(Error::Cancelled));
    /// assert!(matches!(pool.submit(|| 0), Err(Error::ShutDown)));
    ///
    /// gate.set_result(()).unwrap();
    /// pool.shutdown(true, false); // now wait for the workers to exit
    /// assert!(busy.done());
    /// ```
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.shared.close();
        if cancel_futures {
            self.shared.cancel_queued();
        }
        if wait {
            self.shared.join_threads();
        }
    }
}

/// Wraps `task` with a promise and queues it.
#[cfg_attr(feature = "tracing", track_caller)]
fn submit_to<F, T>(shared: &Arc<Shared>, task: F) -> Result<Future<T>, Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    push_cell(shared, Arc::new(TaskCell::<_, T, Plain>::new(task)))
}

/// Queues `cell` and returns its future.
fn push_cell<C, T>(shared: &Arc<Shared>, cell: Arc<C>) -> Result<Future<T>, Error>
where
    C: job::Job + HasCore<T> + 'static,
    T: Send + 'static,
{
    let future = Future::from_cell(Arc::clone(&cell) as Arc<dyn HasCore<T>>);
    match shared.push(JobRef::new(cell)) {
        Ok(()) => Ok(future),
        Err((error, job)) => {
            job.cancel();
            Err(error)
        }
    }
}

impl Drop for ThreadPoolExecutor {
    /// `shutdown(wait = true)`, as at the end of Python's `with` block (even
    /// after an explicit `shutdown(wait = false)`); while panicking, queued
    /// work is cancelled first.
    fn drop(&mut self) {
        self.shutdown(true, std::thread::panicking());
    }
}

impl fmt::Debug for ThreadPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolExecutor")
            .field("max_workers", &self.max_workers())
            .field("threads_started", &self.threads_started())
            .field("live_threads", &self.live_threads())
            .finish_non_exhaustive()
    }
}

/// One `map` chunk, ready to run: the items and the function to apply.
pub(super) struct Chunk<X, F> {
    f: Arc<F>,
    items: ChunkItems<X>,
}

/// A chunk's items. One item (`map`'s default chunksize) is held as is:
/// a vector of one was an allocation per item, freed on another thread.
enum ChunkItems<X> {
    One(X),
    Many(Vec<X>),
}

impl<X, F> Chunk<X, F> {
    /// How many items the chunk has.
    pub(super) fn len(&self) -> usize {
        match &self.items {
            ChunkItems::One(_) => 1,
            ChunkItems::Many(items) => items.len(),
        }
    }

    /// Runs `f` on every item: one result per item, a panic failing its
    /// item only.
    pub(super) fn run<T: Send + 'static>(self) -> ChunkResults<T>
    where
        F: Fn(X) -> T,
    {
        let f = &*self.f;
        let items = match self.items {
            ChunkItems::One(item) => {
                return match crate::panic::catch(|| f(item)) {
                    Ok(value) => ChunkResults::one(value),
                    Err(error) => ChunkResults::new(Vec::new(), vec![(0, error)]),
                };
            }
            ChunkItems::Many(items) => items,
        };
        let mut values = Vec::with_capacity(items.len());
        let mut failures = Vec::new();
        for (position, item) in items.into_iter().enumerate() {
            match crate::panic::catch(|| f(item)) {
                Ok(value) => values.push(value),
                Err(error) => failures.push((position, error)),
            }
        }
        ChunkResults::new(values, failures)
    }
}

/// The chunks of a thread-pool `map` (the pool's or a scope's): `chunksize`
/// items taken from `items` at a time, each handed to `submit` as a task.
pub(super) fn chunk_source<'a, X, F, T>(
    items: impl Iterator<Item = X> + 'a,
    f: F,
    chunksize: usize,
    mut submit: impl FnMut(Chunk<X, F>) -> Result<ChunkFuture<T>, Error> + 'a,
) -> ChunkSource<'a, T>
where
    F: 'a,
{
    let f = Arc::new(f);
    let mut items = items;
    Box::new(move || {
        let chunk = match chunksize {
            1 => ChunkItems::One(items.next()?),
            _ => {
                let chunk: Vec<X> = items.by_ref().take(chunksize).collect();
                if chunk.is_empty() {
                    return None;
                }
                ChunkItems::Many(chunk)
            }
        };
        let job = Chunk {
            f: Arc::clone(&f),
            items: chunk,
        };
        let n = job.len();
        Some(submit(job).map(|future| (n, future)))
    })
}
