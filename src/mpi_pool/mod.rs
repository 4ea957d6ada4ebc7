//! [`MpiPoolExecutor`]: registered tasks on the ranks of an MPI job, across
//! machines (feature `mpi`).
//!
//! The program is started by `mpirun` (or `srun`) on N ranks: rank 0 runs
//! `main` and makes the executor, ranks 1..N run the tasks. It is the same
//! [`#[task]`](crate::task) functions, the same protocol and the same
//! futures as the [process pool](crate::ProcessPoolExecutor); only the
//! transport differs (whole MPI messages instead of a socket pair).
//!
//! # Launching
//!
//! A program opts in with the environment variable
//! [`CONCURRENT_FUTURES_MPI=1`](OPT_IN_ENV) on its `mpirun` line:
//!
//! ```text
//! mpirun -x CONCURRENT_FUTURES_MPI=1 -n 4 ./app          # 1 main rank + 3 workers
//! mpirun -x CONCURRENT_FUTURES_MPI=1 --hostfile hosts ./app
//! CONCURRENT_FUTURES_MPI=1 srun --export=ALL -n 64 ./app # Slurm
//! ```
//!
//! **No set-up line is needed**: the crate's static constructor (the one
//! that diverts process-pool workers) runs before `main` on every rank,
//! reads the launcher's rank variable (`OMPI_COMM_WORLD_RANK`, `PMIX_RANK`,
//! `PMI_RANK` or `SLURM_PROCID`) and, with the opt-in, makes every rank but
//! 0 a worker that never returns to `main`. On rank 0 it registers an exit
//! hook that shuts the workers down and finalizes MPI when the program ends,
//! even if no executor was made. Where static constructors do not run, call
//! [`serve_if_worker`] as the first line of `main`.
//!
//! A program without the variable is left alone entirely: it may use MPI
//! for its own purposes (and then cannot use this executor, which owns MPI
//! on rank 0: it initializes MPI on its own thread, with
//! `MPI_THREAD_FUNNELED`). Outside an MPI job, without the opt-in or with a
//! single rank, [`MpiPoolExecutor::new`] fails with an error saying how to
//! launch the program; it never hangs.
//!
//! # Behaviour
//!
//! * Every worker's handshake is checked when the first executor is built:
//!   a rank that runs another build of the program (or another release of
//!   this crate) is refused, and the build fails naming its rank.
//! * Each worker rank holds up to [`window`](MpiPoolBuilder::window) jobs;
//!   the others wait in rank 0's queue, where they can be cancelled. A job
//!   sent to a rank counts as running (its future's
//!   [`running`](crate::Future::running) is true).
//! * A panic or an error of a task fails its own future, with its message;
//!   the worker goes on.
//! * The MPI thread is a process-wide singleton, started by the first
//!   executor and reused by every later one, also after earlier executors
//!   were shut down; the worker ranks serve all of them in turn and stop
//!   only when rank 0 exits.
//! * **A worker rank that dies** (abort, segfault, killed) takes the job
//!   with it: MPI has no isolation, so `mpirun` notices the dead rank and
//!   ends the whole job about a second later, printing which rank died and
//!   how. The program ends with that message (non-zero status), never
//!   hangs.
//! * **Task isolation**: with `CONCURRENT_FUTURES_MPI=isolate` instead of
//!   `1`, each worker rank runs its tasks in a child process of its own (a
//!   one-process [`ProcessPoolExecutor`](crate::ProcessPoolExecutor)): a
//!   task that crashes fails alone with [`Error::WorkerDied`] naming the
//!   rank, its host and the child's pid; the child is replaced (and runs
//!   the initializer again) and the job goes on. It costs a local hop per
//!   job (use chunks for short tasks).
//! * **Timeouts and abort need isolation**: with it, a per-task timeout
//!   ([`submit_timeout`](MpiPoolExecutor::submit_timeout),
//!   [`MpiPoolBuilder::timeout`]) or [`Future::abort`] of a running task
//!   makes its rank kill the child running it (and start another); the
//!   future fails with [`Error::TaskTimeout`] or ends cancelled, and the
//!   rank and the MPI job go on. Without isolation a running task cannot
//!   be stopped (MPI has no way to stop one rank but to end the job), so a
//!   timeout is refused with [`Error::InvalidArgument`] and `abort` of a
//!   running task returns `false`, as for a thread pool (a queued task is
//!   cancelled either way).
//! * Open MPI's blocking receive busy-polls: an idle worker rank uses a
//!   CPU. `mpirun --mca mpi_yield_when_idle 1` makes it yield instead.
//!   Rank 0's MPI thread blocks when nothing is in flight.
//!
//! Guarantees:
//! * tasks run only on worker ranks whose handshake matched this build;
//! * no user code runs on the MPI thread: done callbacks of the futures it
//!   completes run on the executor's callback threads;
//! * a queued job that is cancelled is never sent; every sent job completes
//!   its future (with its answer, or an error if the program exits first);
//! * a job goes to a least-loaded rank, in O(1) amortised whatever the
//!   number of ranks;
//! * a timeout is never accepted where it cannot be kept;
//! * nothing waits forever on a worker that never answers its handshake
//!   (one minute at most).

mod builder;
pub(crate) mod entry;
mod isolate;
mod loads;
mod shared;
mod thread;
mod wire;

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use builder::{DEFAULT_WINDOW, MpiPoolBuilder};
pub use entry::{OPT_IN_ENV, serve_if_worker};

use crate::error::TaskError;
use crate::map::{Map, MapOptions, MapUnordered};
use crate::remote::client;
use crate::{Error, Future, RegisteredTask, WorkerId};
use shared::Shared;

/// An executor whose workers are the other ranks of an MPI job.
///
/// Python's `mpi4py.futures.MPIPoolExecutor` in static mode: rank 0 runs
/// `main`, every other rank runs tasks. Dropping the executor shuts it down
/// and waits for the queued work; while the thread is panicking, the queued
/// work is cancelled instead. See the [module docs](self) for how to launch
/// the program.
///
/// ```no_run
/// use concurrent_futures::{MpiPoolExecutor, task};
///
/// #[task]
/// fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// fn main() {
///     // mpirun -x CONCURRENT_FUTURES_MPI=1 -n 3 ./app
///     let pool = MpiPoolExecutor::new().unwrap();
///     let squares: Vec<u64> = pool.map(square, 0..10).unwrap().collect::<Result<_, _>>().unwrap();
///     assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
/// }
/// ```
pub struct MpiPoolExecutor {
    shared: Arc<Shared>,
}

impl MpiPoolExecutor {
    /// An executor on every worker rank of the job, with the default
    /// settings (see [`MpiPoolBuilder::build`] for the errors).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::{MpiPoolExecutor, task};
    ///
    /// #[task]
    /// fn add(a: i64, b: i64) -> i64 {
    ///     a + b
    /// }
    ///
    /// fn main() {
    ///     let pool = MpiPoolExecutor::new().unwrap();
    ///     assert_eq!(pool.submit(add, (40, 2)).unwrap().into_result(), Ok(42));
    /// }
    /// ```
    pub fn new() -> Result<MpiPoolExecutor, Error> {
        MpiPoolBuilder::new().build()
    }

    /// A builder for the other settings: window, initializer.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::MpiPoolExecutor;
    ///
    /// let pool = MpiPoolExecutor::builder().window(2).build().unwrap();
    /// # drop(pool);
    /// ```
    pub fn builder() -> MpiPoolBuilder {
        MpiPoolBuilder::new()
    }

    /// The number of worker ranks (the job's size minus one).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::MpiPoolExecutor;
    ///
    /// // mpirun -x CONCURRENT_FUTURES_MPI=1 -n 3 ./app
    /// let pool = MpiPoolExecutor::new().unwrap();
    /// assert_eq!(pool.max_workers(), 2);
    /// ```
    pub fn max_workers(&self) -> usize {
        self.shared.thread.workers().len()
    }

    /// The worker ranks: each one's rank, process id and host (its MPI
    /// processor name).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::MpiPoolExecutor;
    ///
    /// let pool = MpiPoolExecutor::new().unwrap();
    /// for worker in pool.workers() {
    ///     println!("{worker}"); // worker rank 1 (pid 4242 on node7)
    /// }
    /// assert_eq!(pool.workers()[0].rank, Some(1));
    /// ```
    pub fn workers(&self) -> Vec<WorkerId> {
        self.shared.thread.workers().to_vec()
    }

    /// True if every worker rank runs its tasks in a child process
    /// (`CONCURRENT_FUTURES_MPI=isolate`): then a running task can be
    /// stopped, by a timeout ([`submit_timeout`](Self::submit_timeout),
    /// [`MpiPoolBuilder::timeout`]) or by [`Future::abort`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::MpiPoolExecutor;
    ///
    /// // mpirun -x CONCURRENT_FUTURES_MPI=isolate -n 3 ./app
    /// let pool = MpiPoolExecutor::new().unwrap();
    /// assert!(pool.isolated());
    /// ```
    pub fn isolated(&self) -> bool {
        self.shared.thread.isolated()
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
    /// use concurrent_futures::{Error, MpiPoolExecutor, task};
    ///
    /// #[task]
    /// fn fail(reason: String) -> u32 {
    ///     panic!("{reason}")
    /// }
    ///
    /// fn main() {
    ///     let pool = MpiPoolExecutor::new().unwrap();
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
    /// use concurrent_futures::{MpiPoolExecutor, task};
    ///
    /// #[task]
    /// fn add(a: i64, b: i64) -> i64 {
    ///     a + b
    /// }
    ///
    /// fn main() {
    ///     let pool = MpiPoolExecutor::new().unwrap();
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

    /// Like [`submit`](Self::submit), with a timeout for this task alone
    /// (over the executor's own [`timeout`](MpiPoolBuilder::timeout), if
    /// any): if the task still runs `timeout` after its rank's child
    /// process received it, the child is killed and replaced, the future
    /// fails with [`Error::TaskTimeout`], and the rank and the MPI job go
    /// on. The time it waits in rank 0's queue or behind other jobs of its
    /// rank does not count.
    ///
    /// It needs task isolation (`CONCURRENT_FUTURES_MPI=isolate`, see
    /// [`isolated`](Self::isolated)): without it the task would run on the
    /// rank itself, which cannot be stopped without ending the MPI job, so
    /// it fails at once with [`Error::InvalidArgument`] instead of
    /// promising a deadline it cannot keep. A zero timeout is an
    /// [`Error::InvalidArgument`] too.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::{Error, MpiPoolExecutor, task};
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
    ///     // mpirun -x CONCURRENT_FUTURES_MPI=isolate -n 3 ./app
    ///     let pool = MpiPoolExecutor::new().unwrap();
    ///     let stuck = pool.submit_timeout(spin, (), Duration::from_millis(200)).unwrap();
    ///     assert!(matches!(stuck.into_result(), Err(Error::TaskTimeout(_))));
    ///     // The rank replaced its child; the job goes on.
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
        self.shared.thread.check_isolated()?;
        let _ = task;
        client::submit::<_, F, A, M, F::Output>(&self.shared, &args, Some(timeout), Ok)
    }

    /// Like [`submit`](Self::submit), for a task that returns a `Result`:
    /// an `Err(e)` fails the future with [`Error::Failed`], whose
    /// [`source`](std::error::Error::source) is `e` as decoded on rank 0
    /// (so it downcasts to `E`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::{Error, MpiPoolExecutor, task};
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
    ///     let pool = MpiPoolExecutor::new().unwrap();
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
    /// use concurrent_futures::{MpiPoolExecutor, task};
    ///
    /// #[task]
    /// fn words(text: String) -> usize {
    ///     text.split_whitespace().count()
    /// }
    ///
    /// fn main() {
    ///     let pool = MpiPoolExecutor::new().unwrap();
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
    /// rank runs a chunk in one go), `buffersize` chunks submitted ahead of
    /// the consumer at most, and a `timeout` for the whole iteration.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::{MapOptions, MpiPoolExecutor, task};
    ///
    /// #[task]
    /// fn halve(n: u32) -> u32 {
    ///     n / 2
    /// }
    ///
    /// fn main() {
    ///     let pool = MpiPoolExecutor::new().unwrap();
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
    /// use concurrent_futures::{MpiPoolExecutor, task};
    ///
    /// #[task]
    /// fn cube(n: u64) -> u64 {
    ///     n * n * n
    /// }
    ///
    /// fn main() {
    ///     let pool = MpiPoolExecutor::new().unwrap();
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
    /// use concurrent_futures::{MapOptions, MpiPoolExecutor, task};
    ///
    /// #[task]
    /// fn square(n: u64) -> u64 {
    ///     n * n
    /// }
    ///
    /// fn main() {
    ///     let pool = MpiPoolExecutor::new().unwrap();
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

    /// Tests only (not part of the API): sends worker `rank` a message it
    /// cannot read, which makes it exit with status 86 (and `mpirun` end
    /// the job).
    #[doc(hidden)]
    pub fn __test_send_garbage(&self, rank: u32) {
        self.shared
            .thread
            .send(thread::Command::Garbage(rank as i32));
    }

    /// Stops accepting tasks: later submits fail with [`Error::ShutDown`].
    ///
    /// Queued tasks (not sent to a rank yet) still run, unless
    /// `cancel_futures`, which cancels them; tasks sent to a rank run to
    /// the end. With `wait`, returns once every task of this executor is
    /// done and its done callbacks ran. The worker ranks stay up for later
    /// executors, until rank 0 exits. Calling it again is harmless.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::{Error, MpiPoolExecutor, task};
    ///
    /// #[task]
    /// fn double(n: u32) -> u32 {
    ///     n * 2
    /// }
    ///
    /// fn main() {
    ///     let pool = MpiPoolExecutor::new().unwrap();
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

impl Drop for MpiPoolExecutor {
    fn drop(&mut self) {
        // Leaving a scope by panic must not wait for the whole queue.
        let panicking = std::thread::panicking();
        self.shared.shutdown(true, panicking);
    }
}

impl fmt::Debug for MpiPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpiPoolExecutor")
            .field("workers", &self.shared.thread.workers())
            .field("window", &self.shared.config.window)
            .finish_non_exhaustive()
    }
}
