//! How idle workers sleep and how submitters wake them.
//!
//! The protocol avoids any lock or syscall on the submit path while every
//! worker is busy: a submitter pushes its job, then (after a SeqCst fence)
//! reads `sleepers`; a worker about to sleep first increments `sleepers`
//! (SeqCst), then checks the queue once more. Whichever order the two run in,
//! either the submitter sees the sleeper and posts a wake-up token, or the
//! worker sees the job. No wake-up is lost; a spare token only causes one
//! spurious wake-up.

use std::sync::atomic::fence;

use crate::sync::{AtomicUsize, Condvar, Mutex, Ordering, lock};

pub(crate) struct Sleep {
    sleepers: AtomicUsize,
    tokens: Mutex<usize>,
    cond: Condvar,
}

impl Sleep {
    pub(crate) fn new() -> Sleep {
        Sleep {
            sleepers: AtomicUsize::new(0),
            tokens: Mutex::new(0),
            cond: Condvar::new(),
        }
    }

    /// Wakes one sleeping worker, if any. Call after publishing work.
    pub(crate) fn wake_one(&self) {
        fence(Ordering::SeqCst);
        let sleepers = self.sleepers.load(Ordering::SeqCst);
        if sleepers == 0 {
            return;
        }
        let mut tokens = lock(&self.tokens);
        *tokens = (*tokens + 1).min(sleepers);
        drop(tokens);
        self.cond.notify_one();
    }

    /// Wakes every worker for good (shutdown or broken pool).
    pub(crate) fn wake_all(&self) {
        *lock(&self.tokens) = usize::MAX;
        self.cond.notify_all();
    }

    /// Sleeps until woken, unless `has_work` (checked after announcing the
    /// sleep) says there is something to do.
    pub(crate) fn sleep(&self, has_work: impl Fn() -> bool) {
        let mut tokens = lock(&self.tokens);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !has_work() {
            while *tokens == 0 {
                tokens = match self.cond.wait(tokens) {
                    Ok(t) => t,
                    Err(p) => p.into_inner(),
                };
            }
            if *tokens != usize::MAX {
                *tokens -= 1;
            }
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}
