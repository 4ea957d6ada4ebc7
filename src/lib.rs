//! Python's `concurrent.futures`, in Rust, and better.
//!
//! One uniform model over threads and processes:
//!
//! - a [`Future`] is the result of a task that runs elsewhere: it can be
//!   waited on (with or without a timeout), cancelled while pending, given
//!   done callbacks, and `.await`ed from async code;
//! - [`wait()`] and [`as_completed`] wait on many futures at once, of any value
//!   types and from any executors;
//! - [`ThreadPoolExecutor`] runs closures on a pool of threads (I/O-bound
//!   work, shared memory); the process pool runs registered functions in
//!   worker processes (CPU-bound work, crash isolation);
//! - a [`Promise`] completes a future by hand, so anyone can write an
//!   executor.
//!
//! Python's thread-pool example, line for line:
//!
//! ```
//! use concurrent_futures::ThreadPoolExecutor;
//!
//! fn task(n: u64) -> u64 {
//!     n * n
//! }
//!
//! let executor = ThreadPoolExecutor::new(4).unwrap();
//! let futures: Vec<_> = (0..10).map(|i| executor.submit(move || task(i)).unwrap()).collect();
//! let results: Vec<u64> = futures.into_iter().map(|f| f.into_result().unwrap()).collect();
//! println!("{results:?}");
//! # assert_eq!(results, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
//! ```
//!
//! And Python's process-pool example (with the default `process` feature):
//!
//! ```
//! use concurrent_futures::{ProcessPoolExecutor, task};
//!
//! #[task]
//! fn task(n: u64) -> u64 {
//!     n * n
//! }
//!
//! fn main() {
//!     let results: Vec<u64> = {
//!         let executor = ProcessPoolExecutor::new(4).unwrap();
//!         executor.map(task, 0..10).unwrap().collect::<Result<_, _>>().unwrap()
//!     };
//!     println!("{results:?}");
//!     # assert_eq!(results, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
//! }
//! ```
//!
//! Where this crate goes beyond Python: a cancelled future never makes
//! `wait` or `as_completed` hang; one failing item does not end `map`;
//! leaving a pool's scope by panic cancels the queued work instead of running
//! it; scoped tasks may borrow from the stack; futures are awaitable; a
//! worker process that crashes fails only its own task and is replaced; a
//! per-task timeout stops a runaway process task.

#![warn(missing_docs)]
// docs.rs builds with `--cfg docsrs` (see Cargo.toml) on nightly, and marks
// the items that need a feature or a platform.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod error;
// Gates, deferred callbacks and cancellers of the futures' state machine
// serve only the process pool: unused without it.
#[cfg_attr(not(all(feature = "process", unix)), allow(dead_code, unused_imports))]
pub mod future;
pub mod map;
mod panic;
#[cfg(feature = "progress")]
#[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
pub mod progress;
mod sync;
mod task_fn;
pub mod thread_pool;
mod trace;
pub mod wait;

pub use error::{Backtrace, Error, Result, TaskError, WorkerId};
pub use future::{AbortOnDrop, Future, Promise, State, Waitable};
pub use map::{Map, MapOptions, MapUnordered};
pub use task_fn::TaskFn;
pub use thread_pool::{Scope, ThreadPoolBuilder, ThreadPoolExecutor};
pub use wait::{AsCompleted, ReturnWhen, Waited, as_completed, wait};

// ---- process pool (feature "process", Unix) ---------------------------------
// Absent elsewhere rather than a compile error, so that the default features
// build on every platform: the thread pool and the futures need no Unix.
#[cfg(all(feature = "process", unix))]
extern crate self as concurrent_futures;
#[cfg(all(feature = "process", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "process", unix))))]
pub mod process_pool;
// The remote layer (task registry, messages, the worker's dispatch core, the
// client side of submit and map) is internal: users see `#[task]`,
// `RegisteredTask` and `run_if_worker`.
#[cfg(all(feature = "process", unix))]
mod remote;
#[cfg(all(feature = "process", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "process", unix))))]
pub use concurrent_futures_macros::task;
#[cfg(all(feature = "process", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "process", unix))))]
pub use process_pool::entry::{WORKER_ENV, run_if_worker};
#[cfg(all(feature = "process", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "process", unix))))]
pub use process_pool::{InitializerOutput, ProcessPoolBuilder, ProcessPoolExecutor};
#[cfg(all(feature = "process", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "process", unix))))]
pub use remote::tasks::RegisteredTask;

// ---- MPI pool (feature "mpi", Unix) ------------------------------------------
#[cfg(all(feature = "mpi", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "mpi", unix))))]
pub mod mpi_pool;
#[cfg(all(feature = "mpi", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "mpi", unix))))]
pub use mpi_pool::{MpiPoolBuilder, MpiPoolExecutor};

// ---- Redis pool (feature "redis", Unix) --------------------------------------
#[cfg(all(feature = "redis", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "redis", unix))))]
pub mod redis_pool;
#[cfg(all(feature = "redis", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "redis", unix))))]
pub use redis_pool::{RedisBuilder, RedisExecutor};
/// What the `#[task]` macro expands to; not a public API.
#[cfg(all(feature = "process", unix))]
#[doc(hidden)]
pub mod __private {
    pub use crate::remote::serve::{Batch, run_batch};
    pub use crate::remote::tasks::{Registered, TASKS, TaskEntry, type_id_of, type_id_of_val};
    pub use linkme;
}

/// What most programs use, for a glob import.
///
/// `use concurrent_futures::*` would bring in this crate's [`Future`]
/// under the name of `std::future::Future` (and break an
/// `impl Future<Output = ..>` written for async code). The prelude leaves
/// that name alone: write `concurrent_futures::Future` where you need the
/// type, which type inference rarely makes you do.
///
/// ```
/// use concurrent_futures::prelude::*;
///
/// // `Future` is still std's here.
/// fn answer() -> impl Future<Output = u32> {
///     async { 42 }
/// }
///
/// let pool = ThreadPoolExecutor::new(2).unwrap();
/// let futures: Vec<_> = (0..3u32).map(|n| pool.submit(move || n * 2).unwrap()).collect();
/// let waited = wait(&futures, Some(std::time::Duration::from_secs(30)), ReturnWhen::AllCompleted);
/// assert_eq!(waited.done.len(), 3);
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// assert_eq!(rt.block_on(answer()), 42);
/// ```
pub mod prelude {
    pub use crate::{
        AbortOnDrop, AsCompleted, Error, MapOptions, Promise, ReturnWhen, ThreadPoolExecutor,
        Waitable, as_completed, wait,
    };
    #[cfg(all(feature = "process", unix))]
    pub use crate::{ProcessPoolExecutor, task};
    pub use std::future::Future;
}

/// The README's snippets, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
