//! [`MpiPoolBuilder`]: the settings of an MPI executor.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::MpiPoolExecutor;
use super::shared::{Config, Shared};
use super::thread::{Command, MpiThread};
use crate::process_pool::{InitCall, init_call};
use crate::{Error, InitializerOutput, RegisteredTask};

/// The default [`window`](MpiPoolBuilder::window): jobs in flight per
/// worker rank.
pub const DEFAULT_WINDOW: usize = 8;

/// Settings of an [`MpiPoolExecutor`].
///
/// ```no_run
/// use concurrent_futures::{MpiPoolExecutor, task};
///
/// #[task]
/// fn setup(level: u8) {
///     let _ = level;
/// }
///
/// let pool = MpiPoolExecutor::builder()
///     .window(16)
///     .initializer(setup, 3)
///     .build()
///     .unwrap();
/// # drop(pool);
/// ```
#[must_use]
pub struct MpiPoolBuilder {
    window: usize,
    initializer: Option<Result<InitCall, Error>>,
    timeout: Option<Duration>,
}

impl Default for MpiPoolBuilder {
    fn default() -> Self {
        MpiPoolBuilder::new()
    }
}

impl fmt::Debug for MpiPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpiPoolBuilder")
            .field("window", &self.window)
            .field("initializer", &self.initializer.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl MpiPoolBuilder {
    /// The defaults: a window of [`DEFAULT_WINDOW`] jobs per worker rank,
    /// no initializer, no per-task timeout.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::MpiPoolBuilder;
    ///
    /// let pool = MpiPoolBuilder::new().build().unwrap();
    /// println!("{} worker ranks", pool.max_workers());
    /// ```
    pub fn new() -> MpiPoolBuilder {
        MpiPoolBuilder {
            window: DEFAULT_WINDOW,
            initializer: None,
            timeout: None,
        }
    }

    /// How many jobs (a `submit`, or a `map` chunk) each worker rank holds
    /// at once, running or waiting behind the one that runs. A wider window
    /// hides the network's latency for short tasks; a window of 1 sends a
    /// job only to a rank that is free, which balances long tasks best.
    /// Zero is an [`Error::InvalidArgument`] at [`build`](Self::build).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::MpiPoolBuilder;
    ///
    /// let pool = MpiPoolBuilder::new().window(1).build().unwrap();
    /// # drop(pool);
    /// ```
    pub fn window(mut self, jobs: usize) -> MpiPoolBuilder {
        self.window = jobs;
        self
    }

    /// A per-task timeout for every task (each `submit`, each `map`
    /// chunk): a task still running `timeout` after its rank's child
    /// process received it is stopped, the child is killed and replaced
    /// (it runs the initializer again), and the future fails with
    /// [`Error::TaskTimeout`]; the rank and the MPI job go on.
    ///
    /// It needs task isolation (`CONCURRENT_FUTURES_MPI=isolate`, see the
    /// [module docs](super)): without it a task runs on the rank itself,
    /// which MPI cannot stop without ending the whole job, so
    /// [`build`](Self::build) fails with [`Error::InvalidArgument`] rather
    /// than promise a deadline it cannot keep. A zero timeout is an
    /// [`Error::InvalidArgument`] too.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::{Error, MpiPoolBuilder, task};
    /// use std::time::Duration;
    ///
    /// #[task]
    /// fn spin() {
    ///     loop {
    ///         std::hint::spin_loop();
    ///     }
    /// }
    ///
    /// fn main() {
    ///     // mpirun -x CONCURRENT_FUTURES_MPI=isolate -n 3 ./app
    ///     let pool = MpiPoolBuilder::new().timeout(Duration::from_millis(200)).build().unwrap();
    ///     let stuck = pool.submit(spin, ()).unwrap();
    ///     assert!(matches!(stuck.into_result(), Err(Error::TaskTimeout(_))));
    /// }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> MpiPoolBuilder {
        self.timeout = Some(timeout);
        self
    }

    /// A registered task that runs once on every worker rank when the
    /// executor is built, before any of its tasks. If it panics, returns
    /// `Err` or cannot run, the executor is broken: queued and later tasks
    /// fail with [`Error::BrokenPool`] naming the rank and the reason.
    ///
    /// The worker ranks serve every executor of the program, so what the
    /// initializer sets up stays for the tasks of later executors too.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::{Error, MpiPoolBuilder, task};
    ///
    /// #[task]
    /// fn refuse() -> Result<(), String> {
    ///     Err("no licence".to_string())
    /// }
    ///
    /// #[task]
    /// fn double(n: u32) -> u32 {
    ///     n * 2
    /// }
    ///
    /// fn main() {
    ///     let broken = MpiPoolBuilder::new().initializer(refuse, ()).build().unwrap();
    ///     let outcome = broken.submit(double, 1).and_then(|f| f.into_result());
    ///     assert!(matches!(outcome, Err(Error::BrokenPool(reason)) if reason.contains("no licence")));
    /// }
    /// ```
    pub fn initializer<F, A, M>(mut self, task: F, args: A) -> MpiPoolBuilder
    where
        F: RegisteredTask<A, M>,
        A: Serialize + 'static,
        F::Output: InitializerOutput,
    {
        let _ = task;
        self.initializer = Some(init_call::<F, A, M>(&args));
        self
    }

    /// Checks the settings and makes the executor. The first executor of the
    /// program starts the MPI thread, which initializes MPI and checks every
    /// worker rank's handshake; later ones reuse it (MPI can be initialized
    /// only once per process), also after earlier ones were shut down.
    ///
    /// Fails with [`Error::InvalidArgument`] outside an MPI job that opted
    /// in (see the [module docs](super)) or with a single rank, and with
    /// [`Error::SpawnFailed`] naming the rank if a worker rank runs another
    /// build of the program or never answers; the message says how to
    /// launch the program. It never waits for more than a minute. A
    /// [`timeout`](Self::timeout) that is zero, or without task isolation,
    /// is an [`Error::InvalidArgument`].
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, MpiPoolBuilder};
    ///
    /// // Not launched by mpirun with CONCURRENT_FUTURES_MPI=1: a clear error.
    /// match MpiPoolBuilder::new().build() {
    ///     Err(Error::InvalidArgument(how)) => assert!(how.contains("mpirun")),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn build(self) -> Result<MpiPoolExecutor, Error> {
        if self.window == 0 {
            return Err(Error::InvalidArgument("window must be at least 1".into()));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::InvalidArgument("timeout must not be zero".into()));
        }
        let initializer = self.initializer.transpose()?;
        let thread = MpiThread::get()?;
        if self.timeout.is_some() {
            thread.check_isolated()?;
        }
        let config = Config {
            window: self.window,
            initializer,
            timeout: self.timeout,
        };
        let shared = Arc::new(Shared::new(config, thread));
        if !thread.send(Command::Attach(Arc::clone(&shared))) {
            return Err(Error::ShutDown);
        }
        Ok(MpiPoolExecutor { shared })
    }
}
