//! [`ProcessPoolBuilder`]: the settings of a process pool.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ProcessPoolExecutor;
use super::shared::{Config, InitCall, Shared};
use crate::Error;
use crate::RegisteredTask;
use crate::remote::codec;
use crate::remote::message::{self, ByteBuf};
use crate::remote::tasks::TaskRef;

/// What an initializer may return: `()`, or a `Result` whose `Err` breaks
/// the pool like a panic does.
pub trait InitializerOutput: Serialize + DeserializeOwned + 'static {
    /// `Err(reason)` if the initializer failed.
    fn into_init_result(self) -> Result<(), String>;
}

impl InitializerOutput for () {
    fn into_init_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E> InitializerOutput for Result<(), E>
where
    E: fmt::Display + Serialize + DeserializeOwned + 'static,
{
    fn into_init_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

fn check_init<R: InitializerOutput>(bytes: &[u8]) -> Result<(), String> {
    match codec::from_bytes::<R>(bytes) {
        Ok(r) => r.into_init_result(),
        Err(e) => Err(format!("its result failed to deserialize: {e}")),
    }
}

/// The initializer `F` on `args`, encoded once for every worker (shared
/// with the MPI pool's builder).
pub(crate) fn init_call<F, A, M>(args: &A) -> Result<InitCall, Error>
where
    F: RegisteredTask<A, M>,
    A: Serialize + 'static,
    F::Output: InitializerOutput,
{
    let task = TaskRef::of::<F, A, M>()?;
    let mut bytes = Vec::new();
    codec::append(args, &mut bytes).map_err(|e| {
        message::serialization_error("initializer arguments failed to serialize", e.to_string())
    })?;
    Ok(InitCall {
        task,
        args: ByteBuf::from(bytes),
        check: check_init::<F::Output>,
    })
}

/// Settings of a [`ProcessPoolExecutor`] other than the worker count.
///
/// ```
/// use concurrent_futures::{ProcessPoolExecutor, task};
/// use std::time::Duration;
///
/// #[task]
/// fn setup(level: u8) {
///     let _ = level;
/// }
///
/// let pool = ProcessPoolExecutor::builder()
///     .max_workers(2)
///     .initializer(setup, 3)
///     .max_tasks_per_child(100)
///     .timeout(Duration::from_secs(60))
///     .build()
///     .unwrap();
/// # drop(pool);
/// ```
#[must_use]
pub struct ProcessPoolBuilder {
    max_workers: Option<usize>,
    max_tasks_per_child: Option<usize>,
    timeout: Option<Duration>,
    initializer: Option<Result<InitCall, Error>>,
    idle_timeout: Option<Duration>,
    max_worker_memory: Option<u64>,
}

impl Default for ProcessPoolBuilder {
    fn default() -> Self {
        ProcessPoolBuilder::new()
    }
}

impl fmt::Debug for ProcessPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPoolBuilder")
            .field("max_workers", &self.max_workers)
            .field("max_tasks_per_child", &self.max_tasks_per_child)
            .field("timeout", &self.timeout)
            .field("initializer", &self.initializer.is_some())
            .field("idle_timeout", &self.idle_timeout)
            .field("max_worker_memory", &self.max_worker_memory)
            .finish()
    }
}

impl ProcessPoolBuilder {
    /// The defaults: one worker per CPU, no initializer, workers never
    /// replaced (whatever their task count, memory or idle time), no
    /// per-task timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ProcessPoolBuilder;
    ///
    /// fn main() {
    ///     let pool = ProcessPoolBuilder::new().build().unwrap();
    ///     let cpus = std::thread::available_parallelism().unwrap().get();
    ///     assert_eq!(pool.max_workers(), cpus);
    /// }
    /// ```
    pub fn new() -> ProcessPoolBuilder {
        ProcessPoolBuilder {
            max_workers: None,
            max_tasks_per_child: None,
            timeout: None,
            initializer: None,
            idle_timeout: None,
            max_worker_memory: None,
        }
    }

    /// The most worker processes (default: the number of CPUs). Zero is an
    /// [`Error::InvalidArgument`] at [`build`](Self::build).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ProcessPoolBuilder};
    ///
    /// fn main() {
    ///     let pool = ProcessPoolBuilder::new().max_workers(2).build().unwrap();
    ///     assert_eq!(pool.max_workers(), 2);
    ///     let zero = ProcessPoolBuilder::new().max_workers(0).build();
    ///     assert!(matches!(zero, Err(Error::InvalidArgument(_))));
    /// }
    /// ```
    pub fn max_workers(mut self, n: usize) -> ProcessPoolBuilder {
        self.max_workers = Some(n);
        self
    }

    /// Replace a worker after it ran `n` tasks (a `map` chunk counts as one).
    /// Zero is an [`Error::InvalidArgument`] at [`build`](Self::build).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{ProcessPoolBuilder, task};
    ///
    /// #[task]
    /// fn pid() -> u32 {
    ///     std::process::id()
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolBuilder::new()
    ///         .max_workers(1)
    ///         .max_tasks_per_child(1)
    ///         .build()
    ///         .unwrap();
    ///     let first = pool.submit(pid, ()).unwrap().into_result().unwrap();
    ///     let second = pool.submit(pid, ()).unwrap().into_result().unwrap();
    ///     assert_ne!(first, second); // each task had a fresh worker
    /// }
    /// ```
    pub fn max_tasks_per_child(mut self, n: usize) -> ProcessPoolBuilder {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// A per-task timeout: a worker still running a task (or a `map` chunk)
    /// after `timeout` is killed and replaced, and the task's future fails
    /// with [`Error::TaskTimeout`]. Tasks are then sent one at a time.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ProcessPoolBuilder, task};
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
    ///     let pool = ProcessPoolBuilder::new()
    ///         .max_workers(1)
    ///         .timeout(Duration::from_millis(250))
    ///         .build()
    ///         .unwrap();
    ///     let stuck = pool.submit(spin, ()).unwrap();
    ///     assert!(matches!(stuck.into_result(), Err(Error::TaskTimeout(_))));
    ///     // The worker was replaced; the pool goes on.
    ///     assert_eq!(pool.submit(double, 21).unwrap().into_result(), Ok(42));
    /// }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> ProcessPoolBuilder {
        self.timeout = Some(timeout);
        self
    }

    /// A worker process that has had nothing to do for `timeout` exits (the
    /// pool closes its connection and reaps it); workers start again,
    /// lazily, when tasks come. A program that keeps an idle pool then
    /// holds no process and no thread for it. (loky's reuse timeout.)
    ///
    /// Default: none, workers live until shutdown, as in Python.
    /// `Duration::MAX` means never; zero is an [`Error::InvalidArgument`] at
    /// [`build`](Self::build). Every new worker runs the
    /// [`initializer`](Self::initializer), replacements included.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{ProcessPoolBuilder, task};
    /// use std::time::{Duration, Instant};
    ///
    /// #[task]
    /// fn pid() -> u32 {
    ///     std::process::id()
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolBuilder::new()
    ///         .max_workers(1)
    ///         .idle_timeout(Duration::from_millis(50))
    ///         .build()
    ///         .unwrap();
    ///     let first = pool.submit(pid, ()).unwrap().into_result().unwrap();
    ///     // Idle for 50 ms, the worker exits...
    ///     let start = Instant::now();
    ///     while !pool.worker_pids().is_empty() && start.elapsed() < Duration::from_secs(10) {
    ///         std::thread::sleep(Duration::from_millis(5));
    ///     }
    ///     assert!(pool.worker_pids().is_empty());
    ///     // ...and a new one runs the next task.
    ///     let second = pool.submit(pid, ()).unwrap().into_result().unwrap();
    ///     assert_ne!(first, second);
    /// }
    /// ```
    pub fn idle_timeout(mut self, timeout: Duration) -> ProcessPoolBuilder {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Replace a worker whose resident memory (RSS) exceeds `bytes`: it is
    /// checked each time the worker has answered everything it was sent,
    /// and a worker over the limit is closed (it exits, and is replaced
    /// when work waits), never stopped in the middle of a task. A worker
    /// always runs at least one batch, however large it starts. For tasks
    /// that leak, or a cache that grows. Zero is an
    /// [`Error::InvalidArgument`] at [`build`](Self::build).
    ///
    /// The size is read from `/proc/<pid>/statm` on Linux (and Android);
    /// on other platforms it is not checked. Short tasks are sent in
    /// batches (see [`ProcessPoolExecutor`]), so the tasks of one batch
    /// run on the same worker before the check.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{ProcessPoolBuilder, task};
    /// use std::sync::Mutex;
    ///
    /// static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    ///
    /// /// Keeps `mib` MiB allocated (and touched) in its worker.
    /// #[task]
    /// fn hoard(mib: usize) -> u32 {
    ///     HOARD.lock().unwrap().push(vec![1; mib << 20]);
    ///     std::process::id()
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolBuilder::new()
    ///         .max_workers(1)
    ///         .max_worker_memory(32 << 20)
    ///         .build()
    ///         .unwrap();
    ///     let first = pool.submit(hoard, 64).unwrap().into_result().unwrap();
    ///     let second = pool.submit(hoard, 0).unwrap().into_result().unwrap();
    ///     # #[cfg(target_os = "linux")]
    ///     assert_ne!(first, second); // over 32 MiB: replaced
    ///     # let _ = (first, second);
    /// }
    /// ```
    pub fn max_worker_memory(mut self, bytes: u64) -> ProcessPoolBuilder {
        self.max_worker_memory = Some(bytes);
        self
    }

    /// A registered task that runs in every new worker before any other.
    /// If it panics, returns `Err` or cannot run, the pool is broken: queued
    /// and later tasks fail with [`Error::BrokenPool`] naming the reason.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ProcessPoolBuilder, task};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// static LEVEL: AtomicU32 = AtomicU32::new(0);
    ///
    /// #[task]
    /// fn set_level(level: u32) {
    ///     LEVEL.store(level, Ordering::SeqCst);
    /// }
    ///
    /// #[task]
    /// fn current_level() -> u32 {
    ///     LEVEL.load(Ordering::SeqCst)
    /// }
    ///
    /// #[task]
    /// fn refuse() -> Result<(), String> {
    ///     Err("no licence".to_string())
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolBuilder::new()
    ///         .max_workers(1)
    ///         .initializer(set_level, 3)
    ///         .build()
    ///         .unwrap();
    ///     assert_eq!(pool.submit(current_level, ()).unwrap().into_result(), Ok(3));
    ///     assert_eq!(LEVEL.load(Ordering::SeqCst), 0); // it ran in the worker only
    ///
    ///     let broken = ProcessPoolBuilder::new()
    ///         .max_workers(1)
    ///         .initializer(refuse, ())
    ///         .build()
    ///         .unwrap();
    ///     let outcome = broken.submit(current_level, ()).and_then(|f| f.into_result());
    ///     assert!(matches!(outcome, Err(Error::BrokenPool(reason)) if reason.contains("no licence")));
    /// }
    /// ```
    pub fn initializer<F, A, M>(mut self, task: F, args: A) -> ProcessPoolBuilder
    where
        F: RegisteredTask<A, M>,
        A: Serialize + 'static,
        F::Output: InitializerOutput,
    {
        let _ = task;
        self.initializer = Some(init_call::<F, A, M>(&args));
        self
    }

    /// An already encoded initializer (see [`ProcessPoolExecutor::dispatch`]).
    #[cfg(feature = "mpi")]
    pub(crate) fn initializer_call(mut self, init: InitCall) -> ProcessPoolBuilder {
        self.initializer = Some(Ok(init));
        self
    }

    /// Checks the settings and makes the pool. No process starts until the
    /// first task is submitted.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ProcessPoolBuilder, task};
    ///
    /// #[task]
    /// fn double(n: u32) -> u32 {
    ///     n * 2
    /// }
    ///
    /// fn main() {
    ///     let pool = ProcessPoolBuilder::new().max_workers(2).build().unwrap();
    ///     assert!(pool.worker_pids().is_empty()); // no process yet
    ///     assert_eq!(pool.submit(double, 21).unwrap().into_result(), Ok(42));
    ///
    ///     let bad = ProcessPoolBuilder::new().max_tasks_per_child(0).build();
    ///     assert!(matches!(bad, Err(Error::InvalidArgument(_))));
    /// }
    /// ```
    pub fn build(self) -> Result<ProcessPoolExecutor, Error> {
        let max_workers = match self.max_workers {
            Some(0) => {
                return Err(Error::InvalidArgument(
                    "max_workers must be at least 1".into(),
                ));
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if self.max_tasks_per_child == Some(0) {
            return Err(Error::InvalidArgument(
                "max_tasks_per_child must be at least 1".into(),
            ));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::InvalidArgument("timeout must not be zero".into()));
        }
        if self.idle_timeout == Some(Duration::ZERO) {
            return Err(Error::InvalidArgument(
                "idle_timeout must not be zero".into(),
            ));
        }
        if self.max_worker_memory == Some(0) {
            return Err(Error::InvalidArgument(
                "max_worker_memory must be at least 1 byte".into(),
            ));
        }
        let initializer = self.initializer.transpose()?;
        let config = Config {
            max_workers,
            max_tasks_per_child: self.max_tasks_per_child,
            timeout: self.timeout,
            initializer,
            // `Duration::MAX`: never.
            idle_timeout: self.idle_timeout.filter(|t| *t != Duration::MAX),
            max_worker_memory: self.max_worker_memory,
        };
        Ok(ProcessPoolExecutor {
            shared: Arc::new(Shared::new(config)),
        })
    }
}
