//! [`ProcessPoolExecutor`]: registered tasks in worker processes of this
//! program, for CPU-bound work and crash isolation.
//!
//! Tasks are plain functions marked [`#[task]`](crate::task); their
//! arguments and results cross the process boundary with serde (in the
//! crate's own compact format), in a small versioned protocol that names tasks by a stable name and
//! checks their types on both sides. Workers re-execute the current
//! program and enter worker mode before `main` (no set-up line is needed;
//! see [`run_if_worker`](crate::run_if_worker) for platforms without static
//! constructors).
//!
//! Better than Python's pool on every failure path:
//! * a worker that dies (abort, segfault, `exit`, SIGKILL, out of memory)
//!   fails only the task (or `map` chunk) it was running, with
//!   [`Error::WorkerDied`] naming its pid and exit code or signal; it is
//!   replaced and everything else completes;
//! * a per-task [`timeout`](ProcessPoolBuilder::timeout) kills and replaces
//!   the worker running a task that takes too long, and
//!   [`Future::abort`](crate::Future::abort) does the same for one task;
//! * a panic fails the task with its message, location and the worker-side
//!   backtrace, and the worker survives;
//! * a serialization failure on either side fails only that task; nothing
//!   hangs on a dead worker, a full pipe or a large payload.
//!
//! # `main` never runs in a worker
//!
//! A worker is this program started again, diverted into worker mode
//! before `main`. Whatever `main` sets up (a logger, a `tracing`
//! subscriber, environment read into a global, a `static` filled in) does
//! not exist in the workers: a task sees the statics' initial values.
//! Set up a worker with the pool's
//! [`initializer`](ProcessPoolBuilder::initializer), a `#[task]` that runs
//! once in every new worker (replacements included) before its first task.
//!
//! # Logging and tracing in workers
//!
//! With the `tracing` feature the pool's own spans and events (one span per
//! task, worker start, exit, death with its cause, timeout, replacement,
//! initializer failure) are emitted in the parent, where your subscriber
//! is. Events that tasks emit (and the library's messages from a worker)
//! are emitted in the worker, which has no subscriber until you install
//! one, in the initializer. Workers inherit the parent's stderr, so a
//! `fmt` subscriber writing to stderr interleaves with the parent's:
//!
//! ```
//! use concurrent_futures::{ProcessPoolBuilder, task};
//!
//! /// Runs in every new worker before its first task.
//! #[task]
//! fn init_logging() {
//!     // `try_init`: an error (a subscriber is already there) is not fatal.
//!     let _ = tracing_subscriber::fmt()
//!         .with_writer(std::io::stderr)
//!         .with_target(false)
//!         .try_init();
//! }
//!
//! #[task]
//! fn square(n: u64) -> u64 {
//!     // `tracing::info!(n, "squaring")` here goes to the worker's subscriber.
//!     n * n
//! }
//!
//! fn main() {
//!     // The parent's own subscriber: set up here, in `main`, as usual. It
//!     // sees the pool's task spans and worker events.
//!     let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).try_init();
//!     let pool = ProcessPoolBuilder::new()
//!         .max_workers(2)
//!         .initializer(init_logging, ())
//!         .build()
//!         .unwrap();
//!     assert_eq!(pool.submit(square, 7).unwrap().into_result(), Ok(49));
//! }
//! ```
//!
//! To tell workers apart, a worker's events can carry its pid
//! (`std::process::id()`), or each worker can log to a file of its own,
//! named after it, through the initializer's arguments (a directory, a
//! level).

pub(crate) mod board;
mod builder;
pub(crate) mod callbacks;
pub(crate) mod entry;
#[cfg(feature = "tracing")]
mod events;
mod process;
mod schedule;
mod shared;
mod slot;
mod supervisor;
mod timer;

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

#[cfg(feature = "mpi")]
pub(crate) use builder::init_call;
pub use builder::{InitializerOutput, ProcessPoolBuilder};
#[cfg(feature = "mpi")]
pub(crate) use shared::InitCall;

use crate::RegisteredTask;
use crate::error::TaskError;
use crate::map::{Map, MapOptions, MapUnordered};
use crate::remote::client;
use crate::{Error, Future};
use shared::Shared;

/// A pool of worker processes running registered tasks.
///
/// Python's `ProcessPoolExecutor`: workers start lazily, an idle worker is
/// reused before a new one starts, there are never more than `max_workers`.
/// A worker is replaced between tasks after
/// [`max_tasks_per_child`](ProcessPoolBuilder::max_tasks_per_child) tasks or
/// once over [`max_worker_memory`](ProcessPoolBuilder::max_worker_memory),
/// and ends when idle for an
/// [`idle_timeout`](ProcessPoolBuilder::idle_timeout) (workers start again
/// on demand). Dropping the pool shuts it down and waits for the queued
/// work; while the thread is panicking, the queued work is cancelled
/// instead.
///
/// Python's `ProcessPoolExecutor` example from its documentation, line for line:
///
/// ```
/// use concurrent_futures::{ProcessPoolExecutor, task};
///
/// #[task]
/// fn task(n: u64) -> u64 {
///     n * n
/// }
///
/// fn main() {
///     let results: Vec<u64> = {
///         let executor = ProcessPoolExecutor::new(4).unwrap();
///         executor.map(task, 0..10).unwrap().collect::<Result<_, _>>().unwrap()
///     };
///     println!("{results:?}");
///     # assert_eq!(results, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
/// }
/// ```
///
/// Functions of several arguments take a tuple, functions of none take `()`:
///
/// ```
/// use concurrent_futures::{ProcessPoolExecutor, task};
///
/// #[task]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// #[task]
/// fn pid() -> u32 {
///     std::process::id()
/// }
///
/// fn main() {
///     let pool = ProcessPoolExecutor::new(2).unwrap();
///     assert_eq!(pool.submit(add, (40, 2)).unwrap().into_result(), Ok(42));
///     let worker = pool.submit(pid, ()).unwrap().into_result().unwrap();
///     assert_ne!(worker, std::process::id());
/// }
/// ```
pub struct ProcessPoolExecutor {
    shared: Arc<Shared>,
}

impl ProcessPoolExecutor {
    /// A pool of at most `max_workers` processes. Zero is an
    /// [`Error::InvalidArgument`].
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ProcessPoolExecutor, task};
    ///
    /// #[task]
    /// fn square(n: u64) -> u64 {
    ///     n * n
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolExecutor::new(2).unwrap();
    ///     assert_eq!(pool.submit(square, 7).unwrap().into_result(), Ok(49));
    ///     assert!(matches!(ProcessPoolExecutor::new(0), Err(Error::InvalidArgument(_))));
    /// }
    /// ```
    pub fn new(max_workers: usize) -> Result<ProcessPoolExecutor, Error> {
        ProcessPoolBuilder::new().max_workers(max_workers).build()
    }

    /// A builder for the other settings: initializer, max_tasks_per_child,
    /// per-task timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ProcessPoolExecutor;
    ///
    /// fn main() {
    ///     let pool = ProcessPoolExecutor::builder().max_workers(1).build().unwrap();
    ///     assert_eq!(pool.max_workers(), 1);
    /// }
    /// ```
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::new()
    }

    /// The most worker processes this pool runs.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ProcessPoolExecutor;
    ///
    /// fn main() {
    ///     let pool = ProcessPoolExecutor::new(3).unwrap();
    ///     assert_eq!(pool.max_workers(), 3);
    /// }
    /// ```
    pub fn max_workers(&self) -> usize {
        self.shared.config.max_workers
    }

    /// The process ids of the workers alive now.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{ProcessPoolExecutor, task};
    ///
    /// #[task]
    /// fn pid() -> u32 {
    ///     std::process::id()
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolExecutor::new(1).unwrap();
    ///     assert!(pool.worker_pids().is_empty()); // workers start on demand
    ///     let worker = pool.submit(pid, ()).unwrap().into_result().unwrap();
    ///     assert_eq!(pool.worker_pids(), [worker]);
    /// }
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared.pids()
    }

    /// Schedules the registered function `task` on `args` and returns the
    /// future of its result.
    ///
    /// `args` is the argument of a function of one, a tuple for several, `()`
    /// for none. `task` must be registered with [`#[task]`](crate::task)
    /// (anything else does not compile: see [`RegisteredTask`]). Fails at
    /// once with [`Error::Serialization`] if
    /// `args` cannot be serialized, [`Error::ShutDown`] after
    /// [`shutdown`](Self::shutdown) and [`Error::BrokenPool`] once an
    /// initializer failed.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ProcessPoolExecutor, task};
    ///
    /// #[task]
    /// fn add(a: i64, b: i64) -> i64 {
    ///     a + b
    /// }
    ///
    /// #[task]
    /// fn fail(reason: String) -> u32 {
    ///     panic!("{reason}")
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolExecutor::new(2).unwrap();
    ///     let sum = pool.submit(add, (40, 2)).unwrap();
    ///     assert_eq!(sum.into_result(), Ok(42));
    ///
    ///     // A panic fails only its own task, with its message.
    ///     let failed = pool.submit(fail, "bad input".to_string()).unwrap();
    ///     let outcome = failed.into_result();
    ///     assert!(matches!(outcome, Err(Error::Panicked { message, .. }) if message == "bad input"));
    /// }
    /// ```
    pub fn submit<F, A, M>(&self, task: F, args: A) -> Result<Future<F::Output>, Error>
    where
        F: RegisteredTask<A, M>,
        A: Serialize + 'static,
        F::Output: DeserializeOwned + Send + 'static,
    {
        self.submit_job(task, args, None, Ok)
    }

    /// Like [`submit`](Self::submit), for a task that returns a `Result`
    /// and can fail with its own error: an `Err(e)` fails the future with
    /// [`Error::Failed`], whose [`source`](std::error::Error::source) is `e`
    /// as decoded in this process (so it downcasts to `E`), with its type
    /// name and its text. The failure then counts as one everywhere: in
    /// [`wait`](crate::wait()) with
    /// [`FirstException`](crate::ReturnWhen::FirstException), in
    /// [`Future::exception`] and in [`as_completed`](crate::as_completed).
    ///
    /// [`submit`](Self::submit) of the same task gives a
    /// `Future<Result<T, E>>` instead, whose `Err` is a value like any other.
    ///
    /// ```
    /// use concurrent_futures::{Error, ProcessPoolExecutor, task};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Debug, Serialize, Deserialize)]
    /// struct Negative(i64);
    ///
    /// impl std::fmt::Display for Negative {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         write!(f, "{} is negative", self.0)
    ///     }
    /// }
    ///
    /// impl std::error::Error for Negative {}
    ///
    /// #[task]
    /// fn root(n: i64) -> Result<u32, Negative> {
    ///     if n < 0 { Err(Negative(n)) } else { Ok((n as f64).sqrt() as u32) }
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolExecutor::new(1).unwrap();
    ///     assert_eq!(pool.submit_fallible(root, 49).unwrap().into_result(), Ok(7));
    ///     match pool.submit_fallible(root, -1).unwrap().into_result() {
    ///         Err(Error::Failed(e)) => {
    ///             assert_eq!(e.message(), "-1 is negative");
    ///             assert_eq!(e.downcast_ref::<Negative>().unwrap().0, -1);
    ///         }
    ///         other => panic!("{other:?}"),
    ///     }
    ///     // The nested form: the `Err` is the task's value.
    ///     assert!(matches!(pool.submit(root, -1).unwrap().into_result(), Ok(Err(Negative(-1)))));
    /// }
    /// ```
    pub fn submit_fallible<F, A, M, T, E>(&self, task: F, args: A) -> Result<Future<T>, Error>
    where
        F: RegisteredTask<A, M, Output = Result<T, E>>,
        A: Serialize + 'static,
        T: DeserializeOwned + Send + 'static,
        E: Serialize + DeserializeOwned + std::error::Error + Send + Sync + 'static,
    {
        self.submit_job(task, args, None, |result: Result<T, E>| {
            result.map_err(|e| Error::Failed(TaskError::new(e)))
        })
    }

    /// Like [`submit`](Self::submit), with a timeout for this task alone
    /// (over the pool's own [`timeout`](ProcessPoolBuilder::timeout), if
    /// any), as pebble's `schedule(timeout=)`: if the task still runs
    /// `timeout` after its worker received it, the worker is killed and
    /// replaced, and the future fails with [`Error::TaskTimeout`]. The task
    /// is sent to its worker alone. A zero timeout is an
    /// [`Error::InvalidArgument`].
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ProcessPoolExecutor, task};
    /// use std::time::Duration;
    ///
    /// #[task]
    /// fn spin() {
    ///     loop {
    ///         std::hint::spin_loop();
    ///     }
    /// }
    ///
    /// #[task]
    /// fn double(n: u32) -> u32 {
    ///     n * 2
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolExecutor::new(1).unwrap();
    ///     let stuck = pool.submit_timeout(spin, (), Duration::from_millis(100)).unwrap();
    ///     assert!(matches!(stuck.into_result(), Err(Error::TaskTimeout(_))));
    ///     // Other tasks have no deadline, and the pool goes on.
    ///     assert_eq!(pool.submit(double, 21).unwrap().into_result(), Ok(42));
    /// }
    /// ```
    pub fn submit_timeout<F, A, M>(
        &self,
        task: F,
        args: A,
        timeout: Duration,
    ) -> Result<Future<F::Output>, Error>
    where
        F: RegisteredTask<A, M>,
        A: Serialize + 'static,
        F::Output: DeserializeOwned + Send + 'static,
    {
        if timeout.is_zero() {
            return Err(Error::InvalidArgument("timeout must not be zero".into()));
        }
        self.submit_job(task, args, Some(timeout), Ok)
    }

    /// Sends one call; `convert` makes the future's outcome of its decoded
    /// result (see the `One` sink).
    fn submit_job<F, A, M, V>(
        &self,
        task: F,
        args: A,
        timeout: Option<Duration>,
        convert: fn(F::Output) -> Result<V, Error>,
    ) -> Result<Future<V>, Error>
    where
        F: RegisteredTask<A, M>,
        A: Serialize + 'static,
        F::Output: DeserializeOwned + Send + 'static,
        V: Send + 'static,
    {
        let _ = task;
        client::submit::<_, F, A, M, V>(&self.shared, &args, timeout, convert)
    }

    /// The same as [`submit`](Self::submit), under the name the thread pool
    /// gives its Python-style form
    /// ([`ThreadPoolExecutor::submit_with`](crate::ThreadPoolExecutor::submit_with)),
    /// so that code using registered tasks moves from threads to processes
    /// by changing one word.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{ProcessPoolExecutor, task};
    ///
    /// #[task]
    /// fn add(a: i64, b: i64) -> i64 {
    ///     a + b
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolExecutor::new(1).unwrap();
    ///     assert_eq!(pool.submit_with(add, (40, 2)).unwrap().into_result(), Ok(42));
    /// }
    /// ```
    pub fn submit_with<F, A, M>(&self, task: F, args: A) -> Result<Future<F::Output>, Error>
    where
        F: RegisteredTask<A, M>,
        A: Serialize + 'static,
        F::Output: DeserializeOwned + Send + 'static,
    {
        self.submit(task, args)
    }

    /// Runs `task` on every item and yields the results in input order, one
    /// `Result` per item. Everything is submitted before this returns, one
    /// message per item; see [`map_with`](Self::map_with) for chunks,
    /// a buffersize and a timeout.
    ///
    /// Items may be the task's argument type or borrow it (`&A`, anything
    /// that is `Borrow<A>`): a borrowed item is serialized where it is,
    /// never cloned, so `pool.map(task, texts.iter())` works as it should.
    ///
    /// ```
    /// use concurrent_futures::{ProcessPoolExecutor, task};
    ///
    /// #[task]
    /// fn words(text: String) -> usize {
    ///     text.split_whitespace().count()
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolExecutor::new(2).unwrap();
    ///     let texts = vec!["a b c".to_string(), "d e".to_string()];
    ///     let counts: Vec<usize> = pool
    ///         .map(words, texts.iter()) // borrowed: no clone
    ///         .unwrap()
    ///         .collect::<Result<_, _>>()
    ///         .unwrap();
    ///     assert_eq!(counts, [3, 2]);
    ///     assert_eq!(texts.len(), 2, "the texts are still ours");
    /// }
    /// ```
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{ProcessPoolExecutor, task};
    ///
    /// #[task]
    /// fn word_len(word: String) -> usize {
    ///     word.len()
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolExecutor::new(2).unwrap();
    ///     let words = ["a", "bb", "ccc"].map(String::from);
    ///     let lengths: Vec<usize> = pool
    ///         .map(word_len, words)
    ///         .unwrap()
    ///         .collect::<Result<_, _>>()
    ///         .unwrap();
    ///     assert_eq!(lengths, [1, 2, 3]);
    /// }
    /// ```
    pub fn map<'a, F, A, M, I>(&self, task: F, items: I) -> Result<Map<'a, F::Output>, Error>
    where
        F: RegisteredTask<A, M>,
        A: Serialize + 'static,
        F::Output: DeserializeOwned + Send + 'static,
        I: IntoIterator,
        I::Item: Borrow<A>,
        I::IntoIter: 'a,
    {
        self.map_with(task, items, MapOptions::new())
    }

    /// [`map`](Self::map) with options: `chunksize` items per message (one
    /// worker runs a chunk in one go; a dead worker fails its chunk only),
    /// `buffersize` chunks submitted ahead of the consumer at most, and a
    /// `timeout` for the whole iteration.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, MapOptions, ProcessPoolExecutor, task};
    /// use std::time::Duration;
    ///
    /// #[task]
    /// fn halve(n: u32) -> u32 {
    ///     assert!(n % 2 == 0, "{n} is odd");
    ///     n / 2
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolExecutor::new(2).unwrap();
    ///     let opts = MapOptions::new()
    ///         .chunksize(25)
    ///         .buffersize(2)
    ///         .timeout(Duration::from_secs(60));
    ///     let results: Vec<Result<u32, Error>> = pool.map_with(halve, 0..100, opts).unwrap().collect();
    ///     assert_eq!(results.len(), 100);
    ///     assert_eq!(results[10], Ok(5));
    ///     // One failing item does not fail its chunk or end the iteration.
    ///     assert!(matches!(results[11], Err(Error::Panicked { .. })));
    ///     assert_eq!(results[12], Ok(6));
    /// }
    /// ```
    pub fn map_with<'a, F, A, M, I>(
        &self,
        task: F,
        items: I,
        options: MapOptions,
    ) -> Result<Map<'a, F::Output>, Error>
    where
        F: RegisteredTask<A, M>,
        A: Serialize + 'static,
        F::Output: DeserializeOwned + Send + 'static,
        I: IntoIterator,
        I::Item: Borrow<A>,
        I::IntoIter: 'a,
    {
        let _ = task;
        client::map::<_, F, A, M, I>(Arc::clone(&self.shared), items, &options)
    }

    /// Like [`map`](Self::map), but yields each result as soon as its chunk
    /// completes, paired with the position of its item in the input:
    /// `(position, Result)`; see [`MapUnordered`]. Everything is submitted
    /// before this returns, one message per item.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{ProcessPoolExecutor, task};
    ///
    /// #[task]
    /// fn cube(n: u64) -> u64 {
    ///     n * n * n
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolExecutor::new(2).unwrap();
    ///     let mut cubes = vec![0; 4];
    ///     for (i, r) in pool.map_unordered(cube, 0..4).unwrap() {
    ///         cubes[i] = r.unwrap();
    ///     }
    ///     assert_eq!(cubes, [0, 1, 8, 27]);
    /// }
    /// ```
    pub fn map_unordered<'a, F, A, M, I>(
        &self,
        task: F,
        items: I,
    ) -> Result<MapUnordered<'a, F::Output>, Error>
    where
        F: RegisteredTask<A, M>,
        A: Serialize + 'static,
        F::Output: DeserializeOwned + Send + 'static,
        I: IntoIterator,
        I::Item: Borrow<A>,
        I::IntoIter: 'a,
    {
        self.map_unordered_with(task, items, MapOptions::new())
    }

    /// [`map_unordered`](Self::map_unordered) with the options of
    /// [`map_with`](Self::map_with). With a buffersize, a new chunk is
    /// submitted whenever the consumer takes up a completed one, so a slow
    /// chunk does not hold back the others.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{MapOptions, ProcessPoolExecutor, task};
    ///
    /// #[task]
    /// fn square(n: u64) -> u64 {
    ///     n * n
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolExecutor::new(2).unwrap();
    ///     let opts = MapOptions::new().chunksize(10).buffersize(2);
    ///     let mut seen = 0;
    ///     for (i, result) in pool.map_unordered_with(square, 0..50u64, opts).unwrap() {
    ///         assert_eq!(result, Ok((i * i) as u64));
    ///         seen += 1;
    ///     }
    ///     assert_eq!(seen, 50);
    /// }
    /// ```
    pub fn map_unordered_with<'a, F, A, M, I>(
        &self,
        task: F,
        items: I,
        options: MapOptions,
    ) -> Result<MapUnordered<'a, F::Output>, Error>
    where
        F: RegisteredTask<A, M>,
        A: Serialize + 'static,
        F::Output: DeserializeOwned + Send + 'static,
        I: IntoIterator,
        I::Item: Borrow<A>,
        I::IntoIter: 'a,
    {
        let _ = task;
        client::map_unordered::<_, F, A, M, I>(Arc::clone(&self.shared), items, &options)
    }

    /// Stops accepting tasks: later submits fail with [`Error::ShutDown`].
    ///
    /// Queued tasks still run, unless `cancel_futures`, which cancels them.
    /// With `wait`, returns once every worker process has exited and been
    /// reaped. Calling it again is harmless (and waits, with `wait`).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ProcessPoolExecutor, task};
    ///
    /// #[task]
    /// fn double(n: u32) -> u32 {
    ///     n * 2
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolExecutor::new(1).unwrap();
    ///     let queued = pool.submit(double, 21).unwrap();
    ///     pool.shutdown(true, false); // queued work still runs; wait for the workers
    ///     assert_eq!(queued.into_result(), Ok(42));
    ///     assert!(pool.worker_pids().is_empty());
    ///     assert!(matches!(pool.submit(double, 1), Err(Error::ShutDown)));
    /// }
    /// ```
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.shared.shutdown(wait, cancel_futures);
    }

    /// Shuts down, cancelling the queue, and stops every worker with
    /// SIGTERM; the tasks they ran fail with [`Error::WorkerDied`]. Returns
    /// once every worker is reaped.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ProcessPoolExecutor, task};
    /// use std::time::{Duration, Instant};
    ///
    /// #[task]
    /// fn spin() {
    ///     loop {
    ///         std::hint::spin_loop();
    ///     }
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolExecutor::new(1).unwrap();
    ///     let stuck = pool.submit(spin, ()).unwrap();
    ///     let start = Instant::now();
    ///     while !stuck.running() {
    ///         assert!(start.elapsed() < Duration::from_secs(30), "the task never started");
    ///         std::thread::yield_now();
    ///     }
    ///     pool.terminate_workers();
    ///     assert!(matches!(stuck.into_result(), Err(Error::WorkerDied { .. })));
    ///     assert!(pool.worker_pids().is_empty());
    /// }
    /// ```
    pub fn terminate_workers(&self) {
        self.shared.signal_workers(libc::SIGTERM);
    }

    /// Like [`terminate_workers`](Self::terminate_workers) with SIGKILL,
    /// which a worker cannot ignore.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ProcessPoolExecutor, task};
    /// use std::time::{Duration, Instant};
    ///
    /// #[task]
    /// fn spin() {
    ///     loop {
    ///         std::hint::spin_loop();
    ///     }
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolExecutor::new(1).unwrap();
    ///     let stuck = pool.submit(spin, ()).unwrap();
    ///     let start = Instant::now();
    ///     while !stuck.running() {
    ///         assert!(start.elapsed() < Duration::from_secs(30), "the task never started");
    ///         std::thread::yield_now();
    ///     }
    ///     pool.kill_workers();
    ///     assert!(matches!(stuck.into_result(), Err(Error::WorkerDied { .. })));
    ///     assert!(matches!(pool.submit(spin, ()), Err(Error::ShutDown)));
    /// }
    /// ```
    pub fn kill_workers(&self) {
        self.shared.signal_workers(libc::SIGKILL);
    }
}

#[cfg(any(feature = "mpi", feature = "redis"))]
impl ProcessPoolExecutor {
    /// Queues an already encoded job, with its own timeout if any (an MPI
    /// rank or a Redis worker running its tasks in a child process forwards
    /// them so).
    pub(crate) fn dispatch(
        &self,
        payload: crate::remote::job::Payload,
        sink: Box<dyn crate::remote::job::Sink>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        use crate::remote::client::Dispatch;
        self.shared.dispatch(payload, sink, timeout)
    }
}

impl Drop for ProcessPoolExecutor {
    fn drop(&mut self) {
        // Leaving a scope by panic must not wait for the whole queue.
        let panicking = std::thread::panicking();
        self.shared.shutdown(true, panicking);
    }
}

impl fmt::Debug for ProcessPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPoolExecutor")
            .field("max_workers", &self.max_workers())
            .field("workers", &self.worker_pids())
            .finish_non_exhaustive()
    }
}
