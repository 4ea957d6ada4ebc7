//! The type-erased heart of every future: its state machine and the list of
//! everyone waiting on it.
//!
//! A future's value lives in [`Core`](super::Core); everything that does not
//! depend on the value's type lives here in [`Header`], so that `wait`,
//! `as_completed` and `&dyn Waitable` work over futures of any type.
//!
//! ## States
//!
//! ```text
//!            set_running            finish
//!  PENDING ─────────────▶ RUNNING ─────────▶ FINISHED (value or error)
//!     │                     │
//!     │ cancel              │ abort (only with an abort handler)
//!     ▼                     ▼
//!  CANCELLED ◀──────────────┘
//! ```
//!
//! Every transition happens under `Header::waiters`' lock, so a waiter that
//! registers under the same lock either sees the new state or is in the list
//! the transition takes. `mirror` repeats the state for lock-free reads: it is
//! stored (Release) after the value is written, so a reader that loads it
//! (Acquire) and sees `FINISHED` may read the value.
//!
//! `CALLBACKS` is set while done callbacks run: they borrow the value through
//! their own handle, so taking the value out waits until the flag clears.

use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::Error;
use crate::sync::{Arc, AtomicU8, Condvar, Mutex, Ordering, lock, wait_until};
use crate::wait::WaitSet;

pub(crate) const PENDING: u8 = 0;
pub(crate) const RUNNING: u8 = 1;
pub(crate) const CANCELLED: u8 = 2;
pub(crate) const FINISHED: u8 = 3;
const STATE: u8 = 0b0011;
/// Finished with an error (a panic, a remote failure...), not a value.
const FAILED: u8 = 0b0100;
/// Done callbacks are still running.
const CALLBACKS: u8 = 0b1000;

/// Polls of the state before a waiter blocks (spinning, then yielding).
#[cfg(not(loom))]
const WAIT_SPINS: u32 = 32;

/// A done callback, already bound to the future it reports on.
pub(crate) type Callback = Box<dyn FnOnce() + Send>;
/// What [`Header::abort`] calls to stop a running task.
pub(crate) type AbortHandler = Box<dyn FnOnce() + Send>;

/// State and waiters of one future, independent of its value type.
pub struct Header {
    mirror: AtomicU8,
    waiters: Mutex<Waiters>,
    /// Threads blocked in `result`/`wait` on this one future.
    cond: Condvar,
}

#[derive(Default)]
struct Waiters {
    state: u8,
    /// Threads blocked on `cond`; `notify_all` is a syscall, so skip it at 0.
    sleepers: usize,
    sets: Vec<(Arc<WaitSet>, usize)>,
    waker: Option<Waker>,
    callbacks: Vec<Callback>,
    abort: Option<AbortHandler>,
}

/// Everything a transition must notify, collected under the lock and
/// delivered after it is released.
struct Wakeups {
    failed: bool,
    sleepers: bool,
    sets: Vec<(Arc<WaitSet>, usize)>,
    waker: Option<Waker>,
    callbacks: Vec<Callback>,
}

impl Header {
    pub(crate) fn new() -> Header {
        Header {
            mirror: AtomicU8::new(PENDING),
            waiters: Mutex::new(Waiters::default()),
            cond: Condvar::new(),
        }
    }

    /// The current state (one of the four constants), read without locking.
    pub(crate) fn state(&self) -> u8 {
        self.mirror.load(Ordering::Acquire) & STATE
    }

    pub(crate) fn done(&self) -> bool {
        self.state() >= CANCELLED
    }

    /// Finished with an error rather than a value (cancelled is not failed).
    pub(crate) fn failed(&self) -> bool {
        self.mirror.load(Ordering::Acquire) & FAILED != 0
    }

    /// Done, and no done callback still borrows the value.
    pub(crate) fn settled(&self) -> bool {
        let m = self.mirror.load(Ordering::Acquire);
        m & STATE >= CANCELLED && m & CALLBACKS == 0
    }

    /// PENDING -> RUNNING. False if the future was cancelled (or is not
    /// pending), in which case the task must not run.
    pub(crate) fn set_running(&self) -> bool {
        let mut w = lock(&self.waiters);
        if w.state & STATE != PENDING {
            return false;
        }
        w.state = RUNNING;
        self.mirror.store(RUNNING, Ordering::Release);
        true
    }

    /// PENDING -> CANCELLED. True if the future is (now) cancelled.
    pub(crate) fn cancel(&self) -> bool {
        let w = lock(&self.waiters);
        match w.state & STATE {
            CANCELLED => true,
            PENDING => {
                self.transition(w, CANCELLED).deliver(self);
                true
            }
            _ => false,
        }
    }

    /// Like [`cancel`](Self::cancel), and a running future with an abort
    /// handler is cancelled too; the handler then stops the work.
    pub(crate) fn abort(&self) -> bool {
        let mut w = lock(&self.waiters);
        match w.state & STATE {
            CANCELLED => true,
            PENDING => {
                self.transition(w, CANCELLED).deliver(self);
                true
            }
            RUNNING => match w.abort.take() {
                Some(handler) => {
                    self.transition(w, CANCELLED).deliver(self);
                    handler();
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    pub(crate) fn set_abort_handler(&self, handler: AbortHandler) {
        let mut w = lock(&self.waiters);
        if w.state & STATE < CANCELLED {
            w.abort = Some(handler);
        }
    }

    /// PENDING or RUNNING -> FINISHED. `write` stores the value; it runs
    /// under the lock, before anyone can see the new state, and only if the
    /// transition is allowed.
    pub(crate) fn finish(&self, failed: bool, write: impl FnOnce()) -> Result<(), Error> {
        let w = lock(&self.waiters);
        match w.state & STATE {
            PENDING | RUNNING => {
                write();
                let state = FINISHED | if failed { FAILED } else { 0 };
                self.transition(w, state).deliver(self);
                Ok(())
            }
            CANCELLED => Err(Error::InvalidState(
                "cannot complete a cancelled future".into(),
            )),
            _ => Err(Error::InvalidState("the future is already finished".into())),
        }
    }

    /// Moves to `state` (a done state) and takes everything to notify.
    fn transition(&self, mut w: crate::sync::MutexGuard<'_, Waiters>, state: u8) -> Wakeups {
        let callbacks = std::mem::take(&mut w.callbacks);
        let state = state | if callbacks.is_empty() { 0 } else { CALLBACKS };
        w.state = state;
        self.mirror.store(state, Ordering::Release);
        let wakeups = Wakeups {
            failed: state & FAILED != 0,
            sleepers: w.sleepers > 0,
            sets: std::mem::take(&mut w.sets),
            waker: w.waker.take(),
            callbacks,
        };
        let abort = w.abort.take();
        drop(w);
        drop(abort);
        wakeups
    }

    /// Blocks until done (or, with `settle`, until done callbacks have run
    /// too), or until `deadline`. Returns whether the condition holds.
    pub(crate) fn wait(&self, deadline: Option<Instant>, settle: bool) -> bool {
        let ready = |h: &Header| if settle { h.settled() } else { h.done() };
        if ready(self) {
            return true;
        }
        // The result is often a few microseconds away; a futex sleep and
        // wake-up costs more than that.
        #[cfg(not(loom))]
        if deadline.is_none_or(|d| d > Instant::now()) {
            let backoff = crossbeam_utils::Backoff::new();
            for _ in 0..WAIT_SPINS {
                backoff.snooze();
                if ready(self) {
                    return true;
                }
            }
        }
        let mut w = lock(&self.waiters);
        loop {
            if ready(self) {
                return true;
            }
            w.sleepers += 1;
            let (guard, timed_out) = wait_until(&self.cond, w, deadline);
            w = guard;
            w.sleepers -= 1;
            if timed_out {
                return ready(self);
            }
        }
    }

    /// Registers a done callback. If the future is already done the callback
    /// is handed back for the caller to run at once.
    pub(crate) fn add_callback(&self, callback: Callback) -> Option<Callback> {
        let mut w = lock(&self.waiters);
        if w.state & STATE >= CANCELLED {
            return Some(callback);
        }
        w.callbacks.push(callback);
        None
    }

    /// Adds `set` to the waiters, to be told `key` on completion. False if
    /// the future is already done (nothing was registered).
    pub(crate) fn register(&self, set: &Arc<WaitSet>, key: usize) -> bool {
        let mut w = lock(&self.waiters);
        if w.state & STATE >= CANCELLED {
            return false;
        }
        w.sets.push((Arc::clone(set), key));
        true
    }

    /// Removes `set` from the waiters (if it is still there).
    pub(crate) fn unregister(&self, set: &Arc<WaitSet>) {
        let mut w = lock(&self.waiters);
        w.sets.retain(|(s, _)| !Arc::ptr_eq(s, set));
    }

    /// Ready once settled; otherwise remembers the task's waker.
    pub(crate) fn poll_settled(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.settled() {
            return Poll::Ready(());
        }
        let mut w = lock(&self.waiters);
        if self.settled() {
            return Poll::Ready(());
        }
        match &mut w.waker {
            Some(old) if old.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Wakeups {
    fn deliver(self, header: &Header) {
        if self.sleepers {
            header.cond.notify_all();
        }
        for (set, key) in self.sets {
            set.notify(key, self.failed);
        }
        if let Some(waker) = self.waker {
            waker.wake();
        }
        if self.callbacks.is_empty() {
            return;
        }
        for callback in self.callbacks {
            run_callback(callback);
        }
        // The value is free to be taken now: tell whoever waits to take it.
        let mut w = lock(&header.waiters);
        w.state &= !CALLBACKS;
        header.mirror.store(w.state, Ordering::Release);
        let sleepers = w.sleepers > 0;
        let waker = w.waker.take();
        drop(w);
        if sleepers {
            header.cond.notify_all();
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Runs one done callback; a panic is reported and does not stop the others.
pub(crate) fn run_callback(callback: Callback) {
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(callback)) {
        eprintln!(
            "concurrent_futures: a done callback panicked: {}",
            crate::error::panic_message(payload.as_ref())
        );
    }
}
