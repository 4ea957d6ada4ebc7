//! The library's instrumentation, in one place (feature `tracing`).
//!
//! With the feature off everything here compiles to nothing: [`TaskSpan`] is
//! a zero-sized type whose methods are empty and inlined, [`event!`] expands
//! to nothing (its arguments are not evaluated), [`diag!`] is `eprintln!`.
//! Call sites that would cost something even empty (a virtual call) are
//! under `#[cfg(feature = "tracing")]` themselves.
//!
//! With it on: one span per task, named `task`, at `DEBUG`, created when
//! the task is submitted (so its parent is the submitter's current span),
//! entered while a thread-pool task runs; worker events at `INFO` (start,
//! exit, replacement), `WARN` (death, timeout) and `ERROR` (initializer
//! failure). Without an interested subscriber each callsite is a cached
//! interest check.

/// A `tracing` event when the feature is on; nothing (its arguments are not
/// evaluated) when it is off. Same syntax as `tracing::event!` after the
/// level, which is one of `trace`, `debug`, `info`, `warn`, `error`.
#[allow(unused_macros)] // used by the pools of other features
macro_rules! event {
    ($level:ident, $($rest:tt)+) => {
        #[cfg(feature = "tracing")]
        {
            ::tracing::$level!($($rest)+);
        }
    };
}
#[allow(unused_imports)]
pub(crate) use event;

/// The library's own diagnostics: a `tracing` event at `level` when the
/// feature is on and a subscriber is installed (global or scoped), else a
/// line on stderr, as without the feature: a worker process that installed
/// no subscriber still says why it exits.
macro_rules! diag {
    ($level:ident, $($fmt:tt)+) => {{
        #[cfg(feature = "tracing")]
        {
            if $crate::trace::has_subscriber() {
                ::tracing::$level!($($fmt)+);
            } else {
                eprintln!($($fmt)+);
            }
        }
        #[cfg(not(feature = "tracing"))]
        {
            eprintln!($($fmt)+);
        }
    }};
}
pub(crate) use diag;

/// A subscriber other than the no-op one is installed for this thread.
#[cfg(feature = "tracing")]
pub(crate) fn has_subscriber() -> bool {
    tracing::dispatcher::get_default(|d| !d.is::<tracing::subscriber::NoSubscriber>())
}

#[cfg(feature = "tracing")]
pub(crate) use on::TaskSpan;

#[cfg(not(feature = "tracing"))]
pub(crate) use off::TaskSpan;

#[cfg(feature = "tracing")]
mod on {
    use std::panic::Location;

    use tracing::field::Empty;

    use crate::Error;

    /// The target of task spans and their events (not this module's path).
    const TARGET: &str = "concurrent_futures::task";

    /// The span of one task, from its submission to its end.
    pub(crate) struct TaskSpan(tracing::Span);

    // The remote executors' part is unused without them.
    #[cfg_attr(not(all(feature = "process", unix)), allow(dead_code))]
    impl TaskSpan {
        /// A thread-pool task submitted at `at`.
        pub(crate) fn thread(at: &'static Location<'static>) -> TaskSpan {
            TaskSpan(tracing::debug_span!(
                target: TARGET,
                "task",
                executor = "thread",
                at = %at,
                thread = Empty,
            ))
        }

        /// A chunk of `items` items of a thread-pool `map`.
        pub(crate) fn thread_map(items: usize) -> TaskSpan {
            TaskSpan(tracing::debug_span!(
                target: TARGET,
                "task",
                executor = "thread",
                task = "map",
                items,
                thread = Empty,
            ))
        }

        /// A job of a remote executor: a call of `task` (or a `map` chunk
        /// of `items` calls).
        pub(crate) fn remote(executor: &'static str, task: &'static str, items: usize) -> TaskSpan {
            TaskSpan(tracing::debug_span!(
                target: TARGET,
                "task",
                executor,
                task,
                items,
                pid = Empty,
                rank = Empty,
            ))
        }

        /// The thread-pool task starts on this thread: the span is entered
        /// until the guard drops.
        pub(crate) fn run(&self) -> tracing::span::Entered<'_> {
            let entered = self.0.enter();
            if !self.0.is_disabled() {
                if let Some(name) = std::thread::current().name() {
                    self.0.record("thread", name);
                }
                tracing::debug!(target: TARGET, "task started");
            }
            entered
        }

        /// The job was sent to worker process `pid`.
        pub(crate) fn sent_to_pid(&self, pid: u32) {
            if !self.0.is_disabled() {
                self.0.record("pid", pid);
                tracing::debug!(target: TARGET, parent: &self.0, pid, "task sent");
            }
        }

        /// The job was sent to MPI rank `rank`.
        #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
        pub(crate) fn sent_to_rank(&self, rank: i32) {
            if !self.0.is_disabled() {
                self.0.record("rank", rank);
                tracing::debug!(target: TARGET, parent: &self.0, rank, "task sent");
            }
        }

        /// The task ended with `outcome`.
        pub(crate) fn finished<T>(&self, outcome: &Result<T, Error>) {
            if self.0.is_disabled() {
                return;
            }
            match outcome {
                Ok(_) => tracing::debug!(target: TARGET, parent: &self.0, "task finished"),
                Err(Error::Cancelled) => {
                    tracing::debug!(target: TARGET, parent: &self.0, "task cancelled")
                }
                Err(e) => {
                    tracing::debug!(target: TARGET, parent: &self.0, error = %e, "task failed")
                }
            }
        }
    }
}

#[cfg(not(feature = "tracing"))]
mod off {
    use std::panic::Location;

    use crate::Error;

    /// Nothing: the feature is off.
    pub(crate) struct TaskSpan;

    /// Nothing entered.
    pub(crate) struct Entered;

    #[allow(dead_code)]
    impl TaskSpan {
        #[inline(always)]
        pub(crate) fn thread(_: &'static Location<'static>) -> TaskSpan {
            TaskSpan
        }
        #[inline(always)]
        pub(crate) fn thread_map(_: usize) -> TaskSpan {
            TaskSpan
        }
        #[inline(always)]
        pub(crate) fn remote(_: &'static str, _: &'static str, _: usize) -> TaskSpan {
            TaskSpan
        }
        #[inline(always)]
        pub(crate) fn run(&self) -> Entered {
            Entered
        }
        #[inline(always)]
        pub(crate) fn sent_to_pid(&self, _: u32) {}
        #[inline(always)]
        pub(crate) fn sent_to_rank(&self, _: i32) {}
        #[inline(always)]
        pub(crate) fn finished<T>(&self, _: &Result<T, Error>) {}
    }
}
