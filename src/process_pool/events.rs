//! The process pool's worker events (feature `tracing`), kept here so that
//! the pool's code calls one function per event.
//!
//! Every event has `executor = "process"` and the worker's `pid`.

use std::time::Duration;

use super::process::{Ended, describe};
use super::slot::Stop;

/// A worker process is ready (handshake and initializer done).
pub(super) fn worker_started(pid: u32) {
    tracing::info!(executor = "process", pid, "worker started");
}

/// A worker that started never became ready.
pub(super) fn worker_start_failed(reason: &dyn std::fmt::Display) {
    tracing::error!(executor = "process", cause = %reason, "worker failed to start");
}

/// The initializer failed in worker `pid`: the pool breaks.
pub(super) fn initializer_failed(pid: u32, task: &str, reason: &str) {
    tracing::error!(
        executor = "process",
        pid,
        initializer = task,
        cause = reason,
        "initializer failed"
    );
}

/// A ready worker's process ended: an exit if it was asked to (shutdown,
/// `terminate_workers`, `kill_workers`), else a death, with its cause.
pub(super) fn worker_ended(
    pid: u32,
    ended: Ended,
    stopped: Option<&Stop>,
    protocol_error: Option<&str>,
) {
    let status = describe(ended);
    match (protocol_error, stopped) {
        (Some(e), _) => tracing::warn!(
            executor = "process",
            pid,
            cause = %format_args!("broke the protocol ({e}); killed: {status}"),
            "worker died"
        ),
        (None, Some(Stop::Pool)) => {
            tracing::info!(
                executor = "process",
                pid,
                status,
                "worker stopped by the pool"
            )
        }
        (None, Some(Stop::Timeout(_))) => tracing::warn!(
            executor = "process",
            pid,
            cause = %format_args!("killed: a task timed out ({status})"),
            "worker died"
        ),
        (None, Some(Stop::Broken)) => tracing::warn!(
            executor = "process",
            pid,
            cause = %format_args!("killed: the pool broke ({status})"),
            "worker died"
        ),
        (None, None) if ended.status.success() && !ended.lingered => {
            tracing::info!(executor = "process", pid, "worker exited")
        }
        (None, None) => tracing::warn!(executor = "process", pid, cause = status, "worker died"),
    }
}

/// A new worker (the pool's `worker`-th) starts in place of `pid`.
pub(super) fn worker_replaced(pid: u32, worker: u64) {
    tracing::info!(
        executor = "process",
        pid,
        replacement = worker,
        "worker replaced"
    );
}

/// Job `job` ran past its `timeout` in worker `pid`, which is killed.
pub(super) fn task_timed_out(pid: Option<u32>, job: u64, timeout: Option<Duration>) {
    tracing::warn!(
        executor = "process",
        pid,
        job,
        timeout = ?timeout,
        "task timed out; killing its worker"
    );
}
