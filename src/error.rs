//! The one error type of the crate.

use std::fmt;
use std::time::Duration;

mod cause;
mod task;
pub use cause::Cause;
pub use task::TaskError;

/// Everything that can go wrong with a future, a wait or an executor.
///
/// The enum is `#[non_exhaustive]`: match the variants you care about and
/// keep a `_` arm. Every variant is cheap to clone, so a finished future can
/// hand out its error as many times as it is asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The future was cancelled before it ran (or, with
    /// [`Future::abort`](crate::Future::abort), while it ran).
    #[error("the future was cancelled")]
    Cancelled,

    /// A wait ran out of time. `unfinished` of the `total` futures waited on
    /// were still not done; the futures themselves stay usable.
    #[error("{}", timeout_message(*unfinished, *total))]
    Timeout {
        /// How many of the futures were not done when the time ran out.
        unfinished: usize,
        /// How many futures the wait was for.
        total: usize,
    },

    /// The task panicked. The worker that ran it survives.
    #[error("task panicked{}: {message}", location.as_deref().map(|l| format!(" at {l}")).unwrap_or_default())]
    Panicked {
        /// The panic message (the payload, when it is a string).
        message: String,
        /// `file:line:column` of the panic, when known.
        location: Option<String>,
        /// The backtrace captured where the task panicked, when available
        /// (for a worker process, always). Its `Debug` is one line; print
        /// it with `{}` or `{:#?}` for the frames.
        backtrace: Option<Backtrace>,
    },

    /// The task failed with its own error (see [`TaskError`]): for
    /// example, a closure given to
    /// [`submit_fallible`](crate::ThreadPoolExecutor::submit_fallible)
    /// returned `Err`, or a future was failed with
    /// [`Promise::set_failure`](crate::Promise::set_failure).
    ///
    /// Displays as `task failed: {type name}: {message}`, and
    /// [`source`](std::error::Error::source) is the task's own error, when
    /// this process has it.
    ///
    /// ```
    /// use concurrent_futures::{Error, Promise};
    /// use std::error::Error as _;
    ///
    /// let (promise, future) = Promise::<u32>::new();
    /// promise.set_failure(std::fmt::Error).unwrap();
    /// let Some(Error::Failed(e)) = future.exception().unwrap() else { panic!() };
    /// assert_eq!(e.type_name(), "core::fmt::Error");
    /// let error = future.into_result().unwrap_err();
    /// assert!(error.to_string().starts_with("task failed: core::fmt::Error: "));
    /// assert!(error.source().unwrap().is::<std::fmt::Error>());
    /// ```
    // Transparent: the `TaskError` already says "task failed", and the
    // source of `Error` is then the user's error itself, one step down the
    // chain, not the `TaskError` wrapper.
    #[error(transparent)]
    Failed(TaskError),

    /// The pool can no longer run tasks, for example because a worker's
    /// initializer failed. The reason says why.
    #[error("the pool is broken: {0}")]
    BrokenPool(String),

    /// A worker (a thread, or a process and the thread that supervises it)
    /// could not be started, for example because the system is out of
    /// threads or processes. The pool is not broken: later submissions try
    /// again. The [`Cause`] holds the system's error (an
    /// [`std::io::Error`]), which is also this error's
    /// [`source`](std::error::Error::source).
    #[error("could not start a worker: {0}")]
    SpawnFailed(#[source] Cause),

    /// The executor was shut down before the task could be submitted.
    #[error("cannot submit: the executor has been shut down")]
    ShutDown,

    /// An argument was out of range (a zero size, for example).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The server a remote executor works through (a Redis server) could
    /// not be reached, refused the credentials or lost the executor's
    /// state. The [`Cause`] says which server and why; its source is the
    /// client library's error, when there is one.
    #[error("the executor's server is unavailable: {0}")]
    Unavailable(#[source] Cause),

    /// An operation did not fit the future's state, such as completing a
    /// future twice.
    #[error("invalid state: {0}")]
    InvalidState(String),

    /// The [`Promise`](crate::Promise) was dropped without completing its
    /// future, so no value will ever come.
    #[error("the promise was dropped without completing its future")]
    Abandoned,

    // ---- errors of tasks that run outside this process -------------------
    /// The task ran longer than the executor's per-task timeout; the worker
    /// running it was stopped.
    #[error("task exceeded its timeout of {0:?} and its worker was stopped")]
    TaskTimeout(Duration),

    /// The worker running the task died. `worker` says which (its process,
    /// and for remote workers its host and rank); `cause` names the exit
    /// code or the signal.
    #[error("{worker} died while running the task: {cause}")]
    WorkerDied {
        /// Which worker died.
        worker: WorkerId,
        /// How it ended, e.g. `exit code 3` or `signal 9 (SIGKILL)`.
        cause: String,
    },

    /// No task of this name is registered in the program.
    #[error("unknown task {0:?}: it is not registered in this program")]
    UnknownTask(String),

    /// Arguments or a result could not be serialized or deserialized. The
    /// message carries the value's own error text (from its
    /// `Serialize`/`Deserialize`); on the side where the failure happened,
    /// the serde error is also the [`Cause`]'s source.
    #[error("serialization failed: {0}")]
    Serialization(#[source] Cause),

    /// The bytes exchanged with a worker did not follow the wire protocol.
    #[error("protocol error: {0}")]
    Protocol(String),

    /// A registered task was named with argument or result types other than
    /// the ones it was registered with (their fingerprints differ).
    #[error(
        "task {task:?} was registered with other argument or result types \
         (fingerprint {expected:#018x}, used as {found:#018x})"
    )]
    TaskTypeMismatch {
        /// The task's stable name.
        task: String,
        /// The fingerprint of the registered function.
        expected: u64,
        /// The fingerprint of the types it was used with.
        found: u64,
    },
}

/// Which worker ran a task: its process id, and for a worker on another
/// machine or in an MPI job, its host and rank. Displays as
/// `worker process 4242`, or `worker rank 3 (pid 4242 on node7)`.
///
/// ```
/// use concurrent_futures::WorkerId;
///
/// assert_eq!(WorkerId::process(4242).to_string(), "worker process 4242");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(
    all(feature = "process", unix),
    derive(serde::Serialize, serde::Deserialize)
)]
#[non_exhaustive]
pub struct WorkerId {
    /// The worker's process id (on its host).
    pub pid: u32,
    /// The worker's host name, for a worker on another machine.
    pub host: Option<String>,
    /// The worker's rank, in an MPI job.
    pub rank: Option<u32>,
}

impl WorkerId {
    /// A worker process of this machine.
    pub fn process(pid: u32) -> WorkerId {
        WorkerId {
            pid,
            host: None,
            rank: None,
        }
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.rank, &self.host) {
            (None, None) => write!(f, "worker process {}", self.pid),
            (None, Some(host)) => write!(f, "worker process {} on {host}", self.pid),
            (Some(rank), None) => write!(f, "worker rank {rank} (pid {})", self.pid),
            (Some(rank), Some(host)) => {
                write!(f, "worker rank {rank} (pid {} on {host})", self.pid)
            }
        }
    }
}

/// A backtrace captured where a task panicked (in this process or in a
/// worker process).
///
/// `Debug` stays one line, so that printing an error, or a `Vec` of `map`
/// results, does not run to pages; `Display` and `{:#?}` give the frames.
///
/// ```
/// use concurrent_futures::{Error, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new(1).unwrap();
/// let err = pool.submit(|| panic!("boom")).unwrap().into_result().unwrap_err();
/// let short = format!("{err:?}");
/// assert!(short.contains("boom") && short.lines().count() == 1, "{short}");
/// if let Some(trace) = err.backtrace() {
///     println!("{trace}"); // the frames, when RUST_BACKTRACE asked for them
/// }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Backtrace(String);

impl Backtrace {
    /// The frames, as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for Backtrace {
    fn from(text: String) -> Backtrace {
        Backtrace(text)
    }
}

impl std::ops::Deref for Backtrace {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Backtrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Backtrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            write!(f, "Backtrace(\n{}\n)", self.0)
        } else {
            write!(f, "Backtrace(<{} lines>)", self.0.lines().count())
        }
    }
}

impl Error {
    /// The backtrace of a panicked task ([`Error::Panicked`]), when one was
    /// captured.
    pub fn backtrace(&self) -> Option<&Backtrace> {
        match self {
            Error::Panicked { backtrace, .. } => backtrace.as_ref(),
            _ => None,
        }
    }

    /// True for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// True for [`Error::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled)
    }

    pub(crate) fn timeout(unfinished: usize, total: usize) -> Error {
        Error::Timeout { unfinished, total }
    }
}

/// Python's text (`"2 (of 4) futures unfinished"`), for one future too,
/// after what happened.
fn timeout_message(unfinished: usize, total: usize) -> String {
    format!("timed out: {unfinished} (of {total}) futures unfinished")
}

/// The text of a panic payload: the `&str` or `String` it carries.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
