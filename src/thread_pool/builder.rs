//! Settings of a [`ThreadPoolExecutor`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::ThreadPoolExecutor;
use super::shared::{Initializer, Shared};
use crate::Error;

/// Builds a [`ThreadPoolExecutor`].
///
/// ```
/// use concurrent_futures::ThreadPoolExecutor;
///
/// let pool = ThreadPoolExecutor::builder()
///     .max_workers(2)
///     .thread_name_prefix("fetcher")
///     .build()
///     .unwrap();
/// let name = pool.submit(|| std::thread::current().name().map(String::from)).unwrap();
/// assert_eq!(name.into_result().unwrap().as_deref(), Some("fetcher_0"));
/// ```
#[must_use]
pub struct ThreadPoolBuilder {
    max_workers: Option<usize>,
    thread_name_prefix: Option<String>,
    initializer: Option<Initializer>,
    idle_timeout: Option<Duration>,
}

impl Default for ThreadPoolBuilder {
    fn default() -> Self {
        ThreadPoolBuilder::new()
    }
}

impl ThreadPoolBuilder {
    /// Default settings: `min(32, cpus + 4)` workers, names
    /// `ThreadPoolExecutor-{pool}_{n}`, no initializer, threads kept until
    /// shutdown (no idle timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolBuilder;
    ///
    /// let pool = ThreadPoolBuilder::new().build().unwrap();
    /// assert!(pool.max_workers() >= 5); // min(32, cpus + 4)
    /// ```
    pub fn new() -> ThreadPoolBuilder {
        ThreadPoolBuilder {
            max_workers: None,
            thread_name_prefix: None,
            initializer: None,
            idle_timeout: None,
        }
    }

    /// A worker thread that has had nothing to do for `timeout` ends;
    /// threads start again, lazily, on the next submits. A program that
    /// keeps an idle pool then holds no thread for it, and one with a
    /// trickle of work keeps about as many threads as the trickle needs:
    /// work goes to the thread that went idle last, so the others reach
    /// their timeout. (tokio's `thread_keep_alive`, loky's reuse timeout.)
    ///
    /// Default: none, threads live until shutdown, as in Python.
    /// `Duration::MAX` means never; zero is an [`Error::InvalidArgument`] at
    /// [`build`](Self::build). Every new thread runs the
    /// [`initializer`](Self::initializer), replacements included.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolBuilder};
    /// use std::time::{Duration, Instant};
    ///
    /// let pool = ThreadPoolBuilder::new()
    ///     .max_workers(4)
    ///     .idle_timeout(Duration::from_millis(50))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(pool.submit(|| 6 * 7).unwrap().into_result(), Ok(42));
    /// // Once idle for 50 ms, the pool holds no thread...
    /// let start = Instant::now();
    /// while pool.live_threads() > 0 && start.elapsed() < Duration::from_secs(10) {
    ///     std::thread::sleep(Duration::from_millis(5));
    /// }
    /// assert_eq!(pool.live_threads(), 0);
    /// // ...and starts one again for the next task.
    /// assert_eq!(pool.submit(|| 2 + 2).unwrap().into_result(), Ok(4));
    ///
    /// let zero = ThreadPoolBuilder::new().idle_timeout(Duration::ZERO).build();
    /// assert!(matches!(zero, Err(Error::InvalidArgument(_))));
    /// ```
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The most threads the pool runs. Zero is an error at `build`.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolBuilder};
    ///
    /// let pool = ThreadPoolBuilder::new().max_workers(8).build().unwrap();
    /// assert_eq!(pool.max_workers(), 8);
    /// let zero = ThreadPoolBuilder::new().max_workers(0).build();
    /// assert!(matches!(zero, Err(Error::InvalidArgument(_))));
    /// ```
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// Worker threads are named `{prefix}_{n}`, `n` counting from 0. An
    /// empty prefix counts as none, as in Python (the default is
    /// `ThreadPoolExecutor-{pool}`); one with a NUL byte is an error at
    /// `build`.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolBuilder;
    ///
    /// let pool = ThreadPoolBuilder::new().max_workers(1).thread_name_prefix("io").build().unwrap();
    /// let name = pool.submit(|| std::thread::current().name().map(String::from)).unwrap();
    /// assert_eq!(name.into_result().unwrap().as_deref(), Some("io_0"));
    /// ```
    pub fn thread_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name_prefix = Some(prefix.into());
        self
    }

    /// Runs `init` at the start of each worker thread. If it panics, the pool
    /// is broken: queued and later tasks fail with [`Error::BrokenPool`].
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolBuilder;
    /// use std::cell::Cell;
    ///
    /// thread_local! {
    ///     static SCALE: Cell<u32> = const { Cell::new(1) };
    /// }
    ///
    /// let pool = ThreadPoolBuilder::new()
    ///     .max_workers(2)
    ///     .initializer(|| SCALE.with(|s| s.set(10)))
    ///     .build()
    ///     .unwrap();
    /// let scaled = pool.submit(|| SCALE.with(|s| s.get()) * 4).unwrap();
    /// assert_eq!(scaled.into_result(), Ok(40));
    /// ```
    pub fn initializer<F>(self, init: F) -> Self
    where
        F: Fn() + Send + Sync + 'static,
    {
        self.try_initializer(move || {
            init();
            Ok::<(), std::convert::Infallible>(())
        })
    }

    /// Like [`initializer`](Self::initializer), for an initializer that
    /// reports failure with an error instead of a panic.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolBuilder};
    ///
    /// let pool = ThreadPoolBuilder::new()
    ///     .max_workers(1)
    ///     .try_initializer(|| Err::<(), _>("no database"))
    ///     .build()
    ///     .unwrap();
    /// let task = pool.submit(|| 1).unwrap();
    /// assert!(matches!(task.into_result(), Err(Error::BrokenPool(reason)) if reason.contains("no database")));
    /// ```
    pub fn try_initializer<F, E>(mut self, init: F) -> Self
    where
        F: Fn() -> Result<(), E> + Send + Sync + 'static,
        E: std::fmt::Display,
    {
        self.initializer = Some(Box::new(move || init().map_err(|e| e.to_string())));
        self
    }

    /// Creates the pool. No thread starts until the first submit.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolBuilder};
    ///
    /// let pool = ThreadPoolBuilder::new().max_workers(2).build().unwrap();
    /// assert_eq!(pool.threads_started(), 0); // no thread yet
    /// assert_eq!(pool.submit(|| 2 + 2).unwrap().into_result(), Ok(4));
    ///
    /// let bad = ThreadPoolBuilder::new().thread_name_prefix("a\0b").build();
    /// assert!(matches!(bad, Err(Error::InvalidArgument(_))));
    /// ```
    pub fn build(self) -> Result<ThreadPoolExecutor, Error> {
        let max_workers = match self.max_workers {
            Some(0) => {
                return Err(Error::InvalidArgument(
                    "max_workers must be greater than 0".into(),
                ));
            }
            Some(n) => n,
            None => default_max_workers(),
        };
        if self
            .thread_name_prefix
            .as_ref()
            .is_some_and(|p| p.contains('\0'))
        {
            // `std::thread::Builder::name` would make every spawn panic.
            return Err(Error::InvalidArgument(
                "thread_name_prefix must not contain NUL bytes".into(),
            ));
        }
        let idle_timeout = match self.idle_timeout {
            Some(Duration::ZERO) => {
                return Err(Error::InvalidArgument(
                    "idle_timeout must not be zero".into(),
                ));
            }
            Some(Duration::MAX) => None,
            timeout => timeout,
        };
        crate::panic::install_hook();
        static POOLS: AtomicUsize = AtomicUsize::new(0);
        let prefix = self.thread_name_prefix.filter(|p| !p.is_empty());
        let prefix = prefix.unwrap_or_else(|| {
            format!(
                "ThreadPoolExecutor-{}",
                POOLS.fetch_add(1, Ordering::Relaxed)
            )
        });
        Ok(ThreadPoolExecutor::from_shared(Shared::new(
            max_workers,
            prefix,
            self.initializer,
            idle_timeout,
        )))
    }
}

/// Python's default: `min(32, cpus + 4)`.
pub(crate) fn default_max_workers() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus + 4).min(32)
}
