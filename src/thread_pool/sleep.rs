//! How idle workers look for work, fall asleep, and are woken.
//!
//! A worker that runs out of work first *searches*: it spins and yields for a
//! few microseconds, polling the queue, because on a busy pool the next job
//! usually arrives within that time and a futex sleep plus wake-up costs far
//! more. While any worker searches, submitters do not wake anyone: the
//! searcher will find the job. Only when nobody searches and someone sleeps
//! does a submit pay for a wake-up.
//!
//! No wake-up is lost. A submitter pushes its job, then (after a SeqCst
//! fence) reads `searching` and `sleepers`. A worker stops searching, then
//! increments `sleepers` (SeqCst) and checks the queue once more before it
//! blocks. Whichever order the two run in, either the submitter sees the
//! searcher or sleeper and wakes it, or the worker sees the job. A spare
//! wake-up token only causes one spurious wake-up.

use std::sync::atomic::fence;

use crossbeam_utils::Backoff;

use crate::sync::{AtomicUsize, Condvar, Mutex, Ordering, lock};

/// Polls of the queue before sleeping: `Backoff` spins for the first few
/// and yields the CPU for the rest, some tens of microseconds in all.
const SEARCH_ROUNDS: u32 = 64;

pub(crate) struct Sleep {
    searching: AtomicUsize,
    sleepers: AtomicUsize,
    tokens: Mutex<usize>,
    cond: Condvar,
}

impl Sleep {
    pub(crate) fn new() -> Sleep {
        Sleep {
            searching: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            tokens: Mutex::new(0),
            cond: Condvar::new(),
        }
    }

    /// Makes sure some worker will look at the queue. Call after publishing
    /// work.
    pub(crate) fn wake_one(&self) {
        fence(Ordering::SeqCst);
        if self.searching.load(Ordering::SeqCst) > 0 {
            return;
        }
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

    /// Polls `find` for a short while, spinning then yielding. Returns what it
    /// found, or `None` when the worker should go to sleep.
    pub(crate) fn search<J>(&self, mut find: impl FnMut() -> Option<J>) -> Option<J> {
        self.searching.fetch_add(1, Ordering::SeqCst);
        let backoff = Backoff::new();
        let mut found = None;
        for _ in 0..SEARCH_ROUNDS {
            if let Some(job) = find() {
                found = Some(job);
                break;
            }
            backoff.snooze();
        }
        self.searching.fetch_sub(1, Ordering::SeqCst);
        found
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
