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
//! ## Start gates
//!
//! An executor that hands a task to another process before the task begins
//! (a batch sent ahead to a worker) leaves the future `PENDING` and installs
//! a [`StartGate`]: the other side's own record of whether the task began.
//! While `GATED` is set, `cancel` asks the gate first (the gate's
//! compare-and-swap against the worker's decides who wins), and `state`
//! asks it whether the task began, turning `PENDING` into `RUNNING` when it
//! has. So a task that has not begun can always be cancelled, and `running`
//! means the task really started.
//!
//! ## Where done callbacks run
//!
//! In the completing thread, unless the completer defers them
//! ([`Header::finish_deferring`]): a pool's internal threads (which read
//! workers' answers) hand them to another thread, so that a callback that
//! blocks on its own pool cannot stall the thread that would complete what
//! it waits for.
//!
//! ## One atomic word
//!
//! `word` holds the state and a few flags, and every transition is a
//! compare-and-swap on it, so the common life of a task (submit, start,
//! finish, read) takes no lock at all. The lock guards only the waiter
//! lists, and completing takes it only when `WAITERS` says somebody is
//! registered:
//!
//! - A completer (finish, cancel, abort) first claims the future by setting
//!   `COMPLETING`; only the claimer writes the value. It then publishes the
//!   final state with a Release CAS, which fails if `WAITERS` appeared in the
//!   meantime; then it takes the lock, empties the lists and wakes them.
//! - A waiter registers under the lock and sets `WAITERS` with a CAS that
//!   fails if the future became done: either the completer sees the flag, or
//!   the waiter sees the final state. No wake-up is lost.
//! - `CALLBACKS` is set while done callbacks run: they borrow the value
//!   through their own handle, so taking the value out waits until it clears.

use std::task::{Context, Poll, Waker};
#[cfg(not(loom))]
use std::time::Duration;
use std::time::Instant;

use crate::Error;
use crate::sync::{Arc, AtomicU8, Condvar, Mutex, MutexGuard, Ordering, lock, wait_until};
use crate::wait::WaitSet;

pub(crate) const PENDING: u8 = 0;
pub(crate) const RUNNING: u8 = 1;
pub(crate) const CANCELLED: u8 = 2;
pub(crate) const FINISHED: u8 = 3;
const STATE: u8 = 0b11;
/// Finished with an error (a panic, a remote failure...), not a value.
const FAILED: u8 = 0b100;
/// Done callbacks are still running.
const CALLBACKS: u8 = 0b1000;
/// Something is registered in `waiters`: completing must take the lock.
const WAITERS: u8 = 0b1_0000;
/// A completer has claimed the future and is writing its outcome.
const COMPLETING: u8 = 0b10_0000;
/// A [`StartGate`] decides whether the pending task can still be cancelled.
const GATED: u8 = 0b100_0000;

/// How long a waiter spins before it blocks while the task has not started.
/// Longer than a worker's wake-up on an idle machine: a submitter that had
/// to wake the worker still sees the result while spinning and sends its
/// next job while that worker still searches (with shorter windows on both
/// sides, a serial submit-then-wait falls into blocking and stays there).
/// Short enough that a waiter sharing a CPU with the worker it waits for
/// holds it up only briefly. Spinning, not yielding: on a busy machine a
/// thread that yields waits behind every runnable process for a whole time
/// slice (milliseconds).
#[cfg(not(loom))]
const SPIN_PENDING: Duration = Duration::from_micros(10);
/// How long a waiter spins (from the start of its wait) while the task runs,
/// or has been handed to a worker process (gated): its worker is on a CPU,
/// and a short task ends within microseconds, much sooner than a futex
/// sleep and wake-up.
#[cfg(not(loom))]
const SPIN_RUNNING: Duration = Duration::from_micros(20);
/// Polls of the state between two reads of the clock.
#[cfg(not(loom))]
const POLLS_PER_CLOCK: u32 = 16;

/// A done callback, already bound to the future it reports on.
pub(crate) type Callback = Box<dyn FnOnce() + Send>;
/// What [`Header::abort`] calls to stop a running task.
pub(crate) type AbortHandler = Box<dyn FnOnce() + Send>;

/// Anything that holds a [`Header`], seen without its value type.
pub(crate) trait HasHeader: Send + Sync {
    fn header(&self) -> &Header;
}

/// The executor's record of whether a pending task has begun, for tasks
/// that were handed to a worker ahead of time (see the module docs).
pub(crate) trait StartGate: Send {
    /// Makes sure the task never begins; false if it has begun already, or
    /// if the gate cannot tell now (then [`started`](Self::started) is
    /// false too, and the task stays pending). Exactly one of this and the
    /// worker's start succeeds.
    fn try_cancel(&self) -> bool;
    /// True once the task has begun.
    fn started(&self) -> bool;
}

/// State and waiters of one future, independent of its value type.
pub struct Header {
    word: AtomicU8,
    waiters: Mutex<Waiters>,
    /// Threads blocked in `result`/`wait` on this one future.
    cond: Condvar,
}

#[derive(Default)]
struct Waiters {
    /// Threads blocked on `cond`; `notify_all` is a syscall, so skip it at 0.
    sleepers: usize,
    /// Boxed: most futures never have anyone registered, and a small header
    /// keeps a task in one small allocation.
    lists: Option<Box<Lists>>,
}

#[derive(Default)]
struct Lists {
    sets: Vec<(Arc<WaitSet>, usize)>,
    waker: Option<Waker>,
    callbacks: Vec<Callback>,
    abort: Option<AbortHandler>,
    gate: Option<Box<dyn StartGate>>,
}

impl Waiters {
    fn lists(&mut self) -> &mut Lists {
        self.lists.get_or_insert_with(Box::default)
    }
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
            word: AtomicU8::new(PENDING),
            waiters: Mutex::new(Waiters::default()),
            cond: Condvar::new(),
        }
    }

    /// The current state (one of the four constants), read without locking.
    /// A gated pending future may have begun elsewhere: see
    /// [`observed_state`](Self::observed_state).
    pub(crate) fn state(&self) -> u8 {
        self.word.load(Ordering::Acquire) & STATE
    }

    /// The state as a user sees it: a gated pending future whose task has
    /// begun in its worker is moved to `RUNNING` first.
    pub(crate) fn observed_state(&self) -> u8 {
        let w = self.word.load(Ordering::Acquire);
        if w & (GATED | STATE) != (GATED | PENDING) {
            return w & STATE;
        }
        let mut waiters = lock(&self.waiters);
        let started = waiters
            .lists
            .as_ref()
            .and_then(|l| l.gate.as_ref())
            .is_some_and(|g| g.started());
        if started {
            self.start_gated(&mut waiters);
        }
        self.state()
    }

    /// Under the lock: a gated pending future's task began; PENDING ->
    /// RUNNING and the gate is dropped. Does nothing if a completer holds
    /// the claim or the future is no longer pending.
    fn start_gated(&self, waiters: &mut MutexGuard<'_, Waiters>) {
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            if w & (STATE | COMPLETING) != PENDING {
                return;
            }
            match self.word.compare_exchange_weak(
                w,
                (w & !(STATE | GATED)) | RUNNING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        if let Some(lists) = waiters.lists.as_mut() {
            lists.gate = None;
        }
    }

    /// Installs the gate of a pending task handed to a worker ahead of time,
    /// and with it (if given) the abort handler, under one lock. Ignored
    /// unless the future is pending. Returns whether it was installed.
    pub(crate) fn set_gate(&self, gate: Box<dyn StartGate>, abort: Option<AbortHandler>) -> bool {
        let mut waiters = lock(&self.waiters);
        if !self.register_locked(&mut waiters) {
            return false;
        }
        // GATED goes in by a CAS that fails once a completer (a cancel) has
        // claimed the future: either the claimer sees the flag and asks the
        // gate, or we see its claim and give up.
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            if w & (STATE | COMPLETING) != PENDING {
                return false;
            }
            match self
                .word
                .compare_exchange_weak(w, w | GATED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        let lists = waiters.lists();
        lists.gate = Some(gate);
        if abort.is_some() {
            lists.abort = abort;
        }
        true
    }

    /// Removes the gate (the task came back from a worker unstarted and is
    /// an ordinary pending task again). Returns whether the future is still
    /// pending.
    pub(crate) fn clear_gate(&self) -> bool {
        let mut waiters = lock(&self.waiters);
        self.word.fetch_and(!GATED, Ordering::AcqRel);
        if let Some(lists) = waiters.lists.as_mut() {
            lists.gate = None;
        }
        self.state() == PENDING
    }

    pub(crate) fn done(&self) -> bool {
        self.state() >= CANCELLED
    }

    /// Finished with an error rather than a value (cancelled is not failed).
    pub(crate) fn failed(&self) -> bool {
        self.word.load(Ordering::Acquire) & FAILED != 0
    }

    /// Cancelled, or finished with no done callback still borrowing the value.
    pub(crate) fn settled(&self) -> bool {
        let w = self.word.load(Ordering::Acquire);
        match w & STATE {
            CANCELLED => true,
            FINISHED => w & CALLBACKS == 0,
            _ => false,
        }
    }

    /// PENDING -> RUNNING. False if the future was cancelled (or is not
    /// pending), in which case the task must not run.
    pub(crate) fn set_running(&self) -> bool {
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            if w & (STATE | COMPLETING) != PENDING {
                return false;
            }
            match self.word.compare_exchange_weak(
                w,
                (w & !STATE) | RUNNING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
    }

    /// Waits out another completer's claim (it only has to store the
    /// outcome and publish it) and returns the word after it.
    fn settled_word(&self) -> u8 {
        loop {
            let w = self.word.load(Ordering::Acquire);
            if w & COMPLETING == 0 {
                return w;
            }
            crate::sync::yield_now();
        }
    }

    /// Claims the future for completion if `allowed(state)`. Returns the
    /// state it found when the claim is refused.
    fn claim(&self, allowed: impl Fn(u8) -> bool) -> Result<(), u8> {
        let mut w = self.settled_word();
        loop {
            if !allowed(w & STATE) {
                return Err(w & STATE);
            }
            match self.word.compare_exchange_weak(
                w,
                w | COMPLETING,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(now) if now & COMPLETING != 0 => w = self.settled_word(),
                Err(now) => w = now,
            }
        }
    }

    /// Publishes `state` (a done state) after a successful claim, wakes
    /// every waiter and returns the done callbacks, which the caller must
    /// run with [`run_callbacks`](Self::run_callbacks).
    #[must_use]
    fn publish(&self, state: u8) -> Vec<Callback> {
        let mut w = self.word.load(Ordering::Relaxed);
        loop {
            if w & WAITERS != 0 {
                let waiters = lock(&self.waiters);
                return self.settle(waiters, state).notify(self);
            }
            match self
                .word
                .compare_exchange_weak(w, state, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return Vec::new(),
                Err(now) => w = now,
            }
        }
    }

    /// Under the lock, with the claim held: stores the final state and takes
    /// everything to notify. Nobody else writes the word meanwhile: waiters
    /// need the lock, and every other transition respects the claim.
    fn settle(&self, mut waiters: MutexGuard<'_, Waiters>, state: u8) -> Wakeups {
        let lists = waiters.lists.take().map(|b| *b).unwrap_or_default();
        let callbacks_flag = if lists.callbacks.is_empty() {
            0
        } else {
            CALLBACKS
        };
        self.word.store(state | callbacks_flag, Ordering::Release);
        let sleepers = waiters.sleepers > 0;
        drop(waiters);
        drop(lists.abort);
        drop(lists.gate);
        Wakeups {
            failed: state & FAILED != 0,
            sleepers,
            sets: lists.sets,
            waker: lists.waker,
            callbacks: lists.callbacks,
        }
    }

    /// Under the lock: marks that someone waits, unless the future is done.
    /// Returns false (and registers nothing) if it is done.
    fn register_locked(&self, _waiters: &mut MutexGuard<'_, Waiters>) -> bool {
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            if w & STATE >= CANCELLED {
                return false;
            }
            if w & WAITERS != 0 {
                return true;
            }
            match self.word.compare_exchange_weak(
                w,
                w | WAITERS,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
    }

    /// PENDING -> CANCELLED. True if the future is (now) cancelled. A gated
    /// future is cancelled only if its gate stops the task from starting;
    /// otherwise it becomes RUNNING.
    pub(crate) fn cancel(&self) -> bool {
        match self.claim(|s| s == PENDING) {
            Ok(()) => {
                if self.word.load(Ordering::Acquire) & GATED != 0 {
                    return self.cancel_gated();
                }
                let callbacks = self.publish(CANCELLED);
                self.run_callbacks(callbacks);
                true
            }
            Err(state) => state == CANCELLED,
        }
    }

    /// With the claim held on a gated pending future: asks the gate.
    fn cancel_gated(&self) -> bool {
        let mut waiters = lock(&self.waiters);
        let gate = waiters.lists.as_mut().and_then(|l| l.gate.take());
        let Some(gate) = gate.filter(|g| !g.try_cancel()) else {
            self.settle(waiters, CANCELLED).deliver(self);
            return true;
        };
        if !gate.started() {
            // The gate could not tell (a Redis server away): the task is
            // still pending, gated, and may be cancelled later. The claim
            // is given back; a completer waiting on it goes on.
            if let Some(lists) = waiters.lists.as_mut() {
                lists.gate = Some(gate);
            }
            let w = self.word.load(Ordering::Acquire);
            self.word.store(w & !COMPLETING, Ordering::Release);
            drop(waiters);
            return false;
        }
        // The task began first: it is running, and stays cancellable only
        // by `abort`. Nobody else writes the word while we hold the claim
        // and the lock.
        let w = self.word.load(Ordering::Acquire);
        self.word.store(
            (w & !(STATE | GATED | COMPLETING)) | RUNNING,
            Ordering::Release,
        );
        drop(waiters);
        false
    }

    /// Like [`cancel`](Self::cancel), and a running future with an abort
    /// handler is cancelled too; the handler then stops the work.
    pub(crate) fn abort(&self) -> bool {
        if self.cancel() {
            return true;
        }
        let has_handler = |w: &Waiters| w.lists.as_ref().is_some_and(|l| l.abort.is_some());
        if !has_handler(&lock(&self.waiters)) {
            return false;
        }
        // Claim without the lock: a finisher holding the claim may need the
        // lock to publish. Once claimed, no other abort can get here.
        if let Err(state) = self.claim(|s| s == RUNNING) {
            return state == CANCELLED;
        }
        let mut waiters = lock(&self.waiters);
        match waiters.lists.as_mut().and_then(|l| l.abort.take()) {
            Some(handler) => {
                self.settle(waiters, CANCELLED).deliver(self);
                handler();
                true
            }
            None => {
                self.word.fetch_and(!COMPLETING, Ordering::Release);
                false
            }
        }
    }

    pub(crate) fn set_abort_handler(&self, handler: AbortHandler) {
        let mut waiters = lock(&self.waiters);
        if self.register_locked(&mut waiters) {
            waiters.lists().abort = Some(handler);
        }
    }

    /// PENDING or RUNNING -> FINISHED. `write` stores the value; it runs
    /// while this thread holds the claim, before anyone can see the new
    /// state, and only if the transition is allowed.
    ///
    /// Waiters are woken; the done callbacks are returned, and the caller
    /// must pass them to [`run_callbacks`](Self::run_callbacks), in this
    /// thread or another. Until then the value cannot be taken out.
    pub(crate) fn finish(
        &self,
        failed: bool,
        write: impl FnOnce(),
    ) -> Result<Vec<Callback>, Error> {
        match self.claim(|s| s < CANCELLED) {
            Ok(()) => {
                write();
                Ok(self.publish(FINISHED | if failed { FAILED } else { 0 }))
            }
            Err(CANCELLED) => Err(Error::InvalidState(
                "cannot complete a cancelled future".into(),
            )),
            Err(_) => Err(Error::InvalidState("the future is already finished".into())),
        }
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
            let start = Instant::now();
            loop {
                for _ in 0..POLLS_PER_CLOCK {
                    if ready(self) {
                        return true;
                    }
                    std::hint::spin_loop();
                }
                let w = self.word.load(Ordering::Relaxed);
                let spin = match w & STATE == RUNNING || w & GATED != 0 {
                    true => SPIN_RUNNING,
                    false => SPIN_PENDING,
                };
                let now = Instant::now();
                if now - start >= spin || deadline.is_some_and(|d| now >= d) {
                    break;
                }
            }
        }
        let mut waiters = lock(&self.waiters);
        loop {
            if ready(self) {
                return true;
            }
            // Not done: make the completer take the lock and notify us. Done
            // meanwhile (registration refused): look again; if only callbacks
            // are left, clearing `CALLBACKS` (under this lock) notifies us.
            if !self.register_locked(&mut waiters) && ready(self) {
                return true;
            }
            waiters.sleepers += 1;
            let (guard, timed_out) = wait_until(&self.cond, waiters, deadline);
            waiters = guard;
            waiters.sleepers -= 1;
            if timed_out {
                return ready(self);
            }
        }
    }

    /// Registers a done callback. If the future is already done the callback
    /// is handed back for the caller to run at once.
    pub(crate) fn add_callback(&self, callback: Callback) -> Option<Callback> {
        let mut waiters = lock(&self.waiters);
        if !self.register_locked(&mut waiters) {
            return Some(callback);
        }
        waiters.lists().callbacks.push(callback);
        None
    }

    /// Adds `set` to the waiters, to be told `key` on completion. False if
    /// the future is already done (nothing was registered).
    pub(crate) fn register(&self, set: &Arc<WaitSet>, key: usize) -> bool {
        let mut waiters = lock(&self.waiters);
        if !self.register_locked(&mut waiters) {
            return false;
        }
        waiters.lists().sets.push((Arc::clone(set), key));
        true
    }

    /// Removes `set` from the waiters (if it is still there).
    pub(crate) fn unregister(&self, set: &Arc<WaitSet>) {
        let mut waiters = lock(&self.waiters);
        if let Some(lists) = waiters.lists.as_mut() {
            lists.sets.retain(|(s, _)| !Arc::ptr_eq(s, set));
        }
    }

    /// Ready once settled; otherwise remembers the task's waker.
    pub(crate) fn poll_settled(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.settled() {
            return Poll::Ready(());
        }
        let mut waiters = lock(&self.waiters);
        if self.settled() {
            return Poll::Ready(());
        }
        // Not done: the completer will take the waker. Done but not settled:
        // clearing `CALLBACKS` (under this lock) will.
        if !self.register_locked(&mut waiters) && self.settled() {
            return Poll::Ready(());
        }
        match &mut waiters.lists().waker {
            Some(old) if old.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Header {
    /// Runs the done callbacks that a completion returned, in order, then
    /// lets the value be taken out. Every completion's callbacks must come
    /// through here exactly once (an empty list is free).
    pub(crate) fn run_callbacks(&self, callbacks: Vec<Callback>) {
        if callbacks.is_empty() {
            return;
        }
        OWN_CALLBACKS.with(|own| own.borrow_mut().push(self.address()));
        for callback in callbacks {
            run_callback(callback);
        }
        OWN_CALLBACKS.with(|own| own.borrow_mut().pop());
        // The value is free to be taken now: tell whoever waits to take it.
        let mut waiters = lock(&self.waiters);
        self.word.fetch_and(!CALLBACKS, Ordering::Release);
        let sleepers = waiters.sleepers > 0;
        let waker = waiters.lists.as_mut().and_then(|l| l.waker.take());
        drop(waiters);
        if sleepers {
            self.cond.notify_all();
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Runs a callback added to a future that is already done, at once, in
    /// this thread; it counts as one of the future's own callbacks.
    pub(crate) fn run_late_callback(&self, callback: Callback) {
        OWN_CALLBACKS.with(|own| own.borrow_mut().push(self.address()));
        run_callback(callback);
        OWN_CALLBACKS.with(|own| own.borrow_mut().pop());
    }

    /// True if this thread is running this future's done callbacks, where
    /// waiting for them to end (to take the value out) would never return.
    pub(crate) fn in_own_callback(&self) -> bool {
        let me = self.address();
        OWN_CALLBACKS.with(|own| own.borrow().contains(&me))
    }

    fn address(&self) -> usize {
        self as *const Header as usize
    }
}

// The futures whose done callbacks this thread is running, innermost last
// (a callback may complete another future, whose callbacks then run inside).
#[cfg(not(loom))]
std::thread_local! {
    static OWN_CALLBACKS: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}
#[cfg(loom)]
loom::thread_local! {
    static OWN_CALLBACKS: std::cell::RefCell<Vec<usize>> = std::cell::RefCell::new(Vec::new());
}

impl Wakeups {
    /// Wakes every waiter and returns the callbacks, still to run.
    fn notify(self, header: &Header) -> Vec<Callback> {
        if self.sleepers {
            header.cond.notify_all();
        }
        for (set, key) in self.sets {
            set.notify(key, self.failed);
        }
        if let Some(waker) = self.waker {
            waker.wake();
        }
        self.callbacks
    }

    fn deliver(self, header: &Header) {
        let callbacks = self.notify(header);
        header.run_callbacks(callbacks);
    }
}

/// Runs one done callback; a panic is reported and does not stop the others.
pub(crate) fn run_callback(callback: Callback) {
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(callback)) {
        crate::trace::diag!(
            error,
            "concurrent_futures: a done callback panicked: {}",
            crate::error::panic_message(payload.as_ref())
        );
    }
}

/// Loom models of the start gate: the races between a pool cancelling a
/// task it sent ahead and the worker starting it. Run with
/// `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_gate`.
#[cfg(all(test, loom))]
mod loom_gate {
    use super::*;
    use loom::sync::atomic::AtomicU64;

    const SENT: u64 = 0;
    const STARTED: u64 = 1;
    const CANCELLED: u64 = 2;

    /// A ticket as the worker's board holds it.
    struct Ticket(Arc<AtomicU64>);

    impl StartGate for Ticket {
        fn try_cancel(&self) -> bool {
            match self
                .0
                .compare_exchange(SENT, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => true,
                Err(now) => now == CANCELLED,
            }
        }
        fn started(&self) -> bool {
            self.0.load(Ordering::Acquire) == STARTED
        }
    }

    fn start(ticket: &AtomicU64) -> bool {
        ticket
            .compare_exchange(SENT, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = Some(3);
        }
        builder.check(f);
    }

    #[test]
    fn exactly_one_of_cancel_and_the_worker_start_wins() {
        model(|| {
            let header = Arc::new(Header::new());
            let ticket = Arc::new(AtomicU64::new(SENT));
            assert!(header.set_gate(Box::new(Ticket(Arc::clone(&ticket))), None));
            let worker = {
                let ticket = Arc::clone(&ticket);
                loom::thread::spawn(move || start(&ticket))
            };
            let cancelled = header.cancel();
            let started = worker.join().unwrap();
            assert!(cancelled != started, "exactly one wins");
            if cancelled {
                assert_eq!(header.state(), super::CANCELLED);
            } else {
                assert_eq!(header.observed_state(), RUNNING);
                assert!(!header.cancel(), "a started task stays uncancellable");
            }
        });
    }

    #[test]
    fn a_cancel_racing_the_gating_is_never_lost() {
        model(|| {
            let header = Arc::new(Header::new());
            let ticket = Arc::new(AtomicU64::new(SENT));
            let pool = {
                let (header, ticket) = (Arc::clone(&header), Arc::clone(&ticket));
                loom::thread::spawn(move || header.set_gate(Box::new(Ticket(ticket)), None))
            };
            let cancelled = header.cancel();
            let gated = pool.join().unwrap();
            // The job is sent only if gated; a sent job must then be skipped
            // by the worker if the future says cancelled.
            if gated && cancelled {
                assert!(!start(&ticket), "a cancelled job was started");
            }
            if !gated {
                assert!(cancelled, "an ungated job is withheld only once cancelled");
            }
            assert!(cancelled, "nothing had started: cancel wins either way");
        });
    }

    /// A gate that cannot tell the first time it is asked (a Redis server
    /// away), then answers.
    struct Away(Arc<AtomicU64>);

    impl StartGate for Away {
        fn try_cancel(&self) -> bool {
            self.0.fetch_add(1, Ordering::AcqRel) > 0
        }
        fn started(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_cancel_the_gate_cannot_answer_leaves_the_task_pending_and_completable() {
        model(|| {
            let header = Arc::new(Header::new());
            let asked = Arc::new(AtomicU64::new(0));
            assert!(header.set_gate(Box::new(Away(Arc::clone(&asked))), None));
            // The task's answer arrives while a cancel asks the gate.
            let completer = {
                let header = Arc::clone(&header);
                loom::thread::spawn(move || header.finish(false, || {}).map(drop).is_ok())
            };
            let first = header.cancel();
            let finished = completer.join().unwrap();
            assert!(!first, "the gate could not tell: not cancelled");
            assert!(finished, "the claim was given back: the answer lands");
            assert_eq!(header.state(), FINISHED);
            assert!(!header.cancel(), "finished stays finished");
        });
    }

    #[test]
    fn a_cancel_the_gate_cannot_answer_can_be_made_again() {
        model(|| {
            let header = Arc::new(Header::new());
            let asked = Arc::new(AtomicU64::new(0));
            assert!(header.set_gate(Box::new(Away(Arc::clone(&asked))), None));
            assert!(!header.cancel());
            assert_eq!(header.state(), PENDING, "still pending, not running");
            assert!(header.cancel(), "the gate answers now");
            assert_eq!(header.state(), super::CANCELLED);
        });
    }
}
