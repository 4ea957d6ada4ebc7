//! Catching a task's panic with its message, location and backtrace.
//!
//! The first pool built installs a panic hook that, on a thread inside
//! [`catch`], records where the panic happened (and the backtrace, when
//! `RUST_BACKTRACE` asks for one) instead of printing it: the panic is the
//! task's result, reported through its future, as Python stores a task's
//! exception. Panics anywhere else go to the previous hook unchanged.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Error;

use crate::error::panic_message;

/// Capture a backtrace for every task panic, whatever `RUST_BACKTRACE` says
/// (worker processes: the backtrace travels back to the pool with the error).
static ALWAYS_BACKTRACE: AtomicBool = AtomicBool::new(false);

thread_local! {
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    static LAST: RefCell<Option<Caught>> = const { RefCell::new(None) };
}

/// What the hook saw of the last panic on this thread.
struct Caught {
    location: Option<String>,
    backtrace: Option<String>,
}

/// Runs `f`, turning a panic into [`Error::Panicked`].
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Error> {
    let outer = CATCHING.with(|c| c.replace(true));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(outer));
    outcome.map_err(|payload| {
        let message = panic_message(payload.as_ref());
        // Dropping the payload may itself panic; the worker must survive.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
        let caught = LAST.with(|l| l.borrow_mut().take());
        Error::Panicked {
            message,
            location: caught.as_ref().and_then(|c| c.location.clone()),
            backtrace: caught
                .and_then(|c| c.backtrace)
                .map(crate::error::Backtrace::from),
        }
    })
}

/// Like [`install_hook`], and every task panic records its backtrace.
#[cfg(all(feature = "process", unix))]
pub(crate) fn install_hook_with_backtraces() {
    ALWAYS_BACKTRACE.store(true, Ordering::Relaxed);
    install_hook();
}

/// Installs the recording hook (once per process), chained to the current one.
pub(crate) fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CATCHING.try_with(Cell::get).unwrap_or(false) {
                return previous(info);
            }
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            let backtrace = if ALWAYS_BACKTRACE.load(Ordering::Relaxed) {
                Backtrace::force_capture()
            } else {
                Backtrace::capture()
            };
            let backtrace =
                (backtrace.status() == BacktraceStatus::Captured).then(|| backtrace.to_string());
            let _ = LAST.try_with(|l| {
                *l.borrow_mut() = Some(Caught {
                    location,
                    backtrace,
                })
            });
        }));
    });
}
