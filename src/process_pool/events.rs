//! The process pool's worker events (feature `tracing`), kept here so that
//! the pool's code calls one function per event.
//!
//! Every event has `executor = "process"` and the worker's `pid`, and the
//! target `concurrent_futures::process_pool` (whatever this module's path).

use std::time::Duration;

use tracing::{error, info, warn};

use super::process::{Ended, describe};
use super::slot::Stop;

const TARGET: &str = "concurrent_futures::process_pool";

/// A worker process is ready (handshake and initializer done).
pub(super) fn worker_started(pid: u32) {
    info!(target: TARGET, executor = "process", pid, "worker started");
}

/// A worker that started never became ready.
pub(super) fn worker_start_failed(reason: &dyn std::fmt::Display) {
    error!(target: TARGET, executor = "process", cause = %reason, "worker failed to start");
}

/// The initializer failed in worker `pid`: the pool breaks.
pub(super) fn initializer_failed(pid: u32, task: &str, reason: &str) {
    error!(
        target: TARGET,
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
    let cause = match (protocol_error, stopped) {
        (Some(e), _) => format!("it broke the protocol ({e}) and was killed: {status}"),
        (None, Some(Stop::Pool)) => {
            info!(target: TARGET, executor = "process", pid, status, "worker stopped by the pool");
            return;
        }
        (None, Some(Stop::Timeout(_))) => format!("killed, its task timed out: {status}"),
        (None, Some(Stop::Broken)) => format!("killed, the pool broke: {status}"),
        (None, None) if ended.status.success() && !ended.lingered => {
            info!(target: TARGET, executor = "process", pid, "worker exited");
            return;
        }
        (None, None) => status,
    };
    warn!(target: TARGET, executor = "process", pid, cause, "worker died");
}

/// The pool closes worker `pid` on purpose, between tasks: it was idle for
/// the pool's `idle_timeout`, its resident memory went over
/// `max_worker_memory`, or it ran `max_tasks_per_child` tasks (`reason`).
pub(super) fn worker_retired(pid: Option<u32>, reason: &str) {
    info!(target: TARGET, executor = "process", pid, reason, "worker retired");
}

/// A new worker starts in place of `pid`, which ended while work waited.
pub(super) fn worker_replaced(pid: u32) {
    info!(target: TARGET, executor = "process", pid, "worker replaced");
}

/// Job `job` ran past its `timeout` in worker `pid`, which is killed.
pub(super) fn task_timed_out(pid: Option<u32>, job: u64, timeout: Option<Duration>) {
    warn!(
        target: TARGET,
        executor = "process",
        pid,
        job,
        timeout_ms = timeout.map(|t| t.as_millis() as u64),
        "task timed out"
    );
}
