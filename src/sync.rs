//! The synchronisation primitives the crate is built on.
//!
//! Normally these are `std`'s. Under `--cfg loom` they are loom's models, so
//! that `tests/loom_future.rs` can explore every interleaving of the future's
//! state machine.

#[cfg(not(loom))]
pub(crate) use std::sync::{
    Arc, Condvar, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering, fence},
};

#[cfg(loom)]
pub(crate) use loom::sync::{
    Arc, Condvar, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering, fence},
};

/// Locks `mutex`, ignoring poison: no critical section of this crate runs
/// user code, so a poisoned lock still guards consistent data.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Waits on `cond`, with a deadline if one is given. Returns the guard and
/// whether the deadline has passed.
pub(crate) fn wait_until<'a, T>(
    cond: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<std::time::Instant>,
) -> (MutexGuard<'a, T>, bool) {
    match deadline {
        None => match cond.wait(guard) {
            Ok(g) => (g, false),
            Err(p) => (p.into_inner(), false),
        },
        Some(deadline) => {
            let now = std::time::Instant::now();
            if now >= deadline {
                return (guard, true);
            }
            match cond.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => (g, std::time::Instant::now() >= deadline),
                Err(p) => {
                    let (g, _) = p.into_inner();
                    (g, std::time::Instant::now() >= deadline)
                }
            }
        }
    }
}

/// Gives up the CPU (a loom scheduling point under loom).
pub(crate) fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}
