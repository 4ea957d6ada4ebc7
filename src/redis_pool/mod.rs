//! [`RedisExecutor`]: registered tasks on workers anywhere, queued in Redis
//! Streams (feature `redis`).
//!
//! Three parts, any number of each, on any machines that reach one Redis
//! server:
//! * **the server**: `redis-server` (6.2 or later; 7 tested), ideally with
//!   a password or an ACL user;
//! * **workers**: the same program (the same build) started with
//!   [`CONCURRENT_FUTURES_REDIS=redis://host:port/queue`](WORKER_ENV):
//!   the crate's static constructor makes it a worker before `main` (or
//!   call [`serve`] yourself, e.g. behind a `--worker` flag);
//! * **clients**: [`RedisExecutor::builder().url(..).queue(..).build()`](RedisBuilder),
//!   with the process pool's API and the crate's futures.
//!
//! # How it works
//!
//! * A task is an entry of the queue's stream (`cf:QUEUE:tasks`), read by
//!   the workers through one consumer group. Results go back on a list of
//!   the submitting client's own (`cf:QUEUE:results:CLIENT`), read by its
//!   result thread with a blocking pop; they expire after the client's
//!   [`result_ttl`](RedisBuilder::result_ttl), so a client that died
//!   leaves nothing behind for long. An answered entry is acknowledged
//!   and deleted: the stream does not grow.
//! * **Heartbeats and reclaim**: each worker refreshes a key with a TTL
//!   and re-claims the entries it holds every
//!   [`heartbeat`](WorkerOptions::heartbeat), so they never look idle
//!   while it lives. An entry idle for five heartbeats belongs to a dead
//!   worker: an idle worker claims it (XAUTOCLAIM) and runs it.
//! * **At least once**: a task whose worker died (or stalled past five
//!   heartbeats) runs again, so **tasks should be idempotent**. Its future
//!   still gets exactly one result (the first). After
//!   [`max_deliveries`](RedisBuilder::max_deliveries) workers took it,
//!   the future fails with [`Error::WorkerDied`] naming them.
//!   [`at_most_once`](RedisBuilder::at_most_once) never runs a task twice.
//! * **Cancellation**: each job has a state key. A worker must win it
//!   (atomically: not cancelled, not answered) before it runs the job; the
//!   future's [`cancel`](crate::Future::cancel) must win it before any
//!   worker: exactly one wins. A cancelled job never runs.
//! * **Isolation and timeouts**: with [`isolate`](WorkerOptions::isolate),
//!   a worker runs each task in a local child process; a crash fails that
//!   task alone, and a per-task [`timeout`](WorkerOptions::timeout) kills
//!   the process and fails the task with [`Error::TaskTimeout`].
//! * **SIGTERM** stops a worker gracefully: running tasks finish and are
//!   answered, nothing new is taken.
//! * **A lost server**: workers retry forever; a client fails its tasks in
//!   flight with [`Error::Unavailable`] if the server stays away for its
//!   [`server_timeout`](RedisBuilder::server_timeout), or comes back
//!   without the client's keys (restarted without persistence).
//!
//! # Security
//!
//! **Anyone who can write to the queue's stream can run any registered
//! task of the program, with arguments of their choice**, on every worker.
//! Protect the server: a password or an ACL user (in the URL:
//! `redis://user:password@host:port/`), a private network or TLS tunnel.
//! Workers validate every entry (protocol version, build identity, task
//! name and fingerprint) and never run anything but registered tasks;
//! garbage is logged and dropped (or answered with an error, when it
//! names a client), never a panic.
//!
//! Guarantees:
//! * every future completes once: with the first reply for its job, its
//!   cancellation, or an error if the server is lost;
//! * no user code runs on the result thread (done callbacks run on the
//!   executor's callback threads);
//! * no call blocks on the server without a bound.

mod builder;
mod conn;
mod layout;
mod shared;
pub(crate) mod worker;

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use builder::{DEFAULT_MAX_DELIVERIES, RedisBuilder};
pub use worker::{WORKER_ENV, WorkerOptions, serve};

use crate::error::TaskError;
use crate::map::{Map, MapOptions, MapUnordered};
use crate::remote::client;
use crate::{Error, Future, RegisteredTask};
use shared::Shared;

/// An executor whose workers are processes anywhere that reach a Redis
/// server: the same program started in worker mode (see the
/// [module docs](self)).
///
/// Dropping the executor shuts it down and waits for the queued work
/// (which needs a worker to run it); while the thread is panicking, the
/// queued work is cancelled instead.
///
/// ```no_run
/// use concurrent_futures::{RedisExecutor, task};
///
/// #[task]
/// fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// fn main() {
///     // workers: CONCURRENT_FUTURES_REDIS=redis://127.0.0.1:6379/default ./app
///     let pool = RedisExecutor::builder().url("redis://127.0.0.1:6379/").build().unwrap();
///     let squares: Vec<u64> = pool.map(square, 0..10).unwrap().collect::<Result<_, _>>().unwrap();
///     assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
/// }
/// ```
pub struct RedisExecutor {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl RedisExecutor {
    /// A builder: the server's URL (required), the queue, the delivery
    /// settings.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::RedisExecutor;
    ///
    /// let pool = RedisExecutor::builder()
    ///     .url("redis://127.0.0.1:6379/")
    ///     .queue("jobs")
    ///     .build()
    ///     .unwrap();
    /// # drop(pool);
    /// ```
    pub fn builder() -> RedisBuilder {
        RedisBuilder::new()
    }

    /// The queue this executor submits to.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::RedisExecutor;
    ///
    /// let pool = RedisExecutor::builder().url("redis://127.0.0.1:6379/").queue("jobs").build().unwrap();
    /// assert_eq!(pool.queue(), "jobs");
    /// ```
    pub fn queue(&self) -> &str {
        &self.shared.config.queue
    }

    /// Schedules the registered function `task` on `args` and returns the
    /// future of its result.
    ///
    /// `args` is the argument of a function of one, a tuple for several, `()`
    /// for none. Fails at once with [`Error::Serialization`] if `args`
    /// cannot be serialized, [`Error::ShutDown`] after
    /// [`shutdown`](Self::shutdown) and [`Error::BrokenPool`] once an
    /// initializer failed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::{Error, RedisExecutor, task};
    ///
    /// #[task]
    /// fn fail(reason: String) -> u32 {
    ///     panic!("{reason}")
    /// }
    ///
    /// fn main() {
    ///     let pool = RedisExecutor::builder().url("redis://127.0.0.1:6379/").build().unwrap();
    ///     // A panic fails only its own task, with its message.
    ///     let outcome = pool.submit(fail, "bad input".to_string()).unwrap().into_result();
    ///     assert!(matches!(outcome, Err(Error::Panicked { message, .. }) if message == "bad input"));
    /// }
    /// ```
    pub fn submit<F, A, M>(&self, task: F, args: A) -> Result<Future<F::Output>, Error>
    where
        F: RegisteredTask<A, M>,
        A: Serialize + 'static,
        F::Output: DeserializeOwned + Send + 'static,
    {
        let _ = task;
        client::submit::<_, F, A, M, F::Output>(&self.shared, &args, None, Ok)
    }

    /// The same as [`submit`](Self::submit), under the name the thread pool
    /// gives its Python-style form, so that code moves between executors
    /// by changing one word.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::{RedisExecutor, task};
    ///
    /// #[task]
    /// fn add(a: i64, b: i64) -> i64 {
    ///     a + b
    /// }
    ///
    /// fn main() {
    ///     let pool = RedisExecutor::builder().url("redis://127.0.0.1:6379/").build().unwrap();
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

    /// Like [`submit`](Self::submit), for a task that returns a `Result`:
    /// an `Err(e)` fails the future with [`Error::Failed`], whose
    /// [`source`](std::error::Error::source) is `e` as decoded by the client
    /// (so it downcasts to `E`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::{Error, RedisExecutor, task};
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
    ///     let pool = RedisExecutor::builder().url("redis://127.0.0.1:6379/").build().unwrap();
    ///     assert_eq!(pool.submit_fallible(root, 49).unwrap().into_result(), Ok(7));
    ///     match pool.submit_fallible(root, -1).unwrap().into_result() {
    ///         Err(Error::Failed(e)) => assert_eq!(e.downcast_ref::<Negative>().unwrap().0, -1),
    ///         other => panic!("{other:?}"),
    ///     }
    /// }
    /// ```
    pub fn submit_fallible<F, A, M, T, E>(&self, task: F, args: A) -> Result<Future<T>, Error>
    where
        F: RegisteredTask<A, M, Output = Result<T, E>>,
        A: Serialize + 'static,
        T: DeserializeOwned + Send + 'static,
        E: Serialize + DeserializeOwned + std::error::Error + Send + Sync + 'static,
    {
        let _ = task;
        client::submit::<_, F, A, M, T>(&self.shared, &args, None, |result: Result<T, E>| {
            result.map_err(|e| Error::Failed(TaskError::new(e)))
        })
    }

    /// Runs `task` on every item and yields the results in input order, one
    /// `Result` per item. Everything is submitted before this returns, one
    /// message per item; see [`map_with`](Self::map_with) for chunks (far
    /// fewer messages for short tasks), a buffersize and a timeout.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::{RedisExecutor, task};
    ///
    /// #[task]
    /// fn words(text: String) -> usize {
    ///     text.split_whitespace().count()
    /// }
    ///
    /// fn main() {
    ///     let pool = RedisExecutor::builder().url("redis://127.0.0.1:6379/").build().unwrap();
    ///     let texts = vec!["a b c".to_string(), "d e".to_string()];
    ///     let counts: Vec<usize> =
    ///         pool.map(words, texts.iter()).unwrap().collect::<Result<_, _>>().unwrap();
    ///     assert_eq!(counts, [3, 2]);
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
    /// worker runs a chunk in one go), `buffersize` chunks submitted ahead of
    /// the consumer at most, and a `timeout` for the whole iteration.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::{MapOptions, RedisExecutor, task};
    ///
    /// #[task]
    /// fn halve(n: u32) -> u32 {
    ///     n / 2
    /// }
    ///
    /// fn main() {
    ///     let pool = RedisExecutor::builder().url("redis://127.0.0.1:6379/").build().unwrap();
    ///     let opts = MapOptions::new().chunksize(100).buffersize(4);
    ///     let halves: Vec<u32> =
    ///         pool.map_with(halve, 0..1000, opts).unwrap().collect::<Result<_, _>>().unwrap();
    ///     assert_eq!(halves[999], 499);
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
    /// completes, paired with the position of its item in the input.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::{RedisExecutor, task};
    ///
    /// #[task]
    /// fn cube(n: u64) -> u64 {
    ///     n * n * n
    /// }
    ///
    /// fn main() {
    ///     let pool = RedisExecutor::builder().url("redis://127.0.0.1:6379/").build().unwrap();
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
    /// [`map_with`](Self::map_with).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::{MapOptions, RedisExecutor, task};
    ///
    /// #[task]
    /// fn square(n: u64) -> u64 {
    ///     n * n
    /// }
    ///
    /// fn main() {
    ///     let pool = RedisExecutor::builder().url("redis://127.0.0.1:6379/").build().unwrap();
    ///     let opts = MapOptions::new().chunksize(10);
    ///     for (i, result) in pool.map_unordered_with(square, 0..50u64, opts).unwrap() {
    ///         assert_eq!(result, Ok((i * i) as u64));
    ///     }
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
    /// Queued tasks still run, unless `cancel_futures`, which cancels
    /// those no worker has started (they never run); started tasks run to
    /// the end. With `wait`, returns once every task of this executor is
    /// done and its done callbacks ran (a queued task needs a worker for
    /// that). The workers serve on, for other clients. Calling it again is
    /// harmless.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::{Error, RedisExecutor, task};
    ///
    /// #[task]
    /// fn double(n: u32) -> u32 {
    ///     n * 2
    /// }
    ///
    /// fn main() {
    ///     let pool = RedisExecutor::builder().url("redis://127.0.0.1:6379/").build().unwrap();
    ///     let queued = pool.submit(double, 21).unwrap();
    ///     pool.shutdown(true, false);
    ///     assert_eq!(queued.into_result(), Ok(42));
    ///     assert!(matches!(pool.submit(double, 1), Err(Error::ShutDown)));
    /// }
    /// ```
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.shared.shutdown(wait, cancel_futures);
    }
}

impl Drop for RedisExecutor {
    fn drop(&mut self) {
        // Leaving a scope by panic must not wait for the whole queue.
        let panicking = std::thread::panicking();
        self.shared.shutdown(true, panicking);
        self.shared.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for RedisExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisExecutor")
            .field("url", &layout::redact(&self.shared.config.url))
            .field("queue", &self.shared.config.queue)
            .field("client", &self.shared.client)
            .finish_non_exhaustive()
    }
}
