//! How idle workers look for work, fall asleep, and are woken.
//!
//! Guarantees:
//! - No lost wake-up: a job published before [`Sleep::wake_one`] is taken
//!   by a searching worker, seen by a worker about to sleep, or wakes a
//!   sleeper.
//! - A searching worker yields the CPU only when this pool's own threads
//!   outnumber the CPUs; otherwise it spins for a bounded *time*,
//!   [`SEARCH_TIME`], then sleeps until a submitter wakes it directly (or,
//!   with an idle timeout, until its deadline).
//! - A sleep reports a time-out only when no wake-up was handed to it: a
//!   submitter that woke a sleeper never counts on one that then leaves.
//! - A wake-up goes to the worker that fell asleep last, so that under a
//!   trickle of work the same worker takes every job and the others reach
//!   their idle timeout.
//!
//! A worker that runs out of work first *searches*: on a busy pool the next
//! job usually arrives within microseconds, and a futex sleep plus wake-up
//! costs more than that. While any worker searches, submitters do not wake
//! anyone: the searcher will find the job. Only when nobody searches and
//! someone sleeps does a submit pay for a wake-up.
//!
//! Why the search does not simply yield: on a machine busy with other
//! processes, a thread that yields waits behind every one of them for a
//! whole time slice (milliseconds), and the submitter, seeing it search,
//! wakes nobody meanwhile: a lone round trip took 1.4 ms instead of 15 us.
//! A sleeping thread that is woken is scheduled at once instead. So a
//! searcher spins (`spin_loop`, no syscall) for a few microseconds, enough
//! for a submitter that waits for each result to send the next job, then
//! sleeps. When the pool's awake threads (plus a submitter) outnumber the
//! CPUs, a yield most likely hands the CPU to one of them, which spinning
//! would keep from running: then the search polls with yields, as long as
//! it did before (tens of microseconds).
//!
//! The protocol (model-checked in `tests/loom_thread_pool.rs`): a submitter
//! pushes its job, then (after a SeqCst fence) reads `searching` and
//! `sleepers`. A worker going to sleep increments `sleepers` (under the
//! lock), only then stops searching (SeqCst, then a fence), and checks the
//! queue once more before it blocks.
//! Whichever order the two run in, either the submitter sees the searcher
//! or sleeper and wakes it, or the worker sees the job. Each sleeper waits
//! on a place of its own, on a stack under the lock; a wake-up takes the
//! top place off the stack and marks it, so that it is honoured even by a
//! sleeper whose deadline passes at the same moment.

#[cfg(not(loom))]
use std::time::Duration;
use std::time::Instant;

use crate::sync::{
    Arc, AtomicBool, AtomicUsize, Condvar, Mutex, MutexGuard, Ordering, fence, lock,
};

/// How long an idle worker spins before it sleeps when spinning keeps none
/// of the pool's own threads off a CPU: long enough for a submitter that
/// waits for each result to send the next job (well under a microsecond),
/// short enough that a worker sharing a CPU with that submitter holds it
/// up only briefly.
#[cfg(not(loom))]
const SEARCH_TIME: Duration = Duration::from_micros(2);

/// Polls of the queue between two reads of the clock.
#[cfg(not(loom))]
const POLLS_PER_CLOCK: u32 = 16;

/// Polls of a crowded search: `Backoff` spins for the first few and yields
/// the CPU for the rest, some tens of microseconds in all.
#[cfg(not(loom))]
const CROWDED_ROUNDS: u32 = 64;

/// Searching and sleeping workers, and how to wake them.
pub struct Sleep {
    searching: AtomicUsize,
    sleepers: AtomicUsize,
    state: Mutex<Sleepers>,
}

/// The workers asleep, under the lock.
#[derive(Default)]
struct Sleepers {
    /// Each sleeping worker's place, the latest to fall asleep last. A
    /// wake-up goes to the latest (last in, first out): under a trickle of
    /// work the same worker takes each job, and the others stay asleep
    /// long enough to reach their idle timeout. Woken in turn (as a shared
    /// condition variable does, oldest first), every worker ran a job now
    /// and then and the pool never shrank.
    stack: Vec<Arc<Place>>,
    /// Every worker is woken for good (`wake_all`).
    all: bool,
}

/// Where one worker sleeps.
#[derive(Default)]
struct Place {
    cond: Condvar,
    /// A waker took this place off the stack and woke it (written under
    /// the lock; atomic only to be shared).
    woken: AtomicBool,
}

/// A worker that searched and found nothing, still counted as searching:
/// submitters leave the next job to it. It stops counting when dropped, or
/// when it [sleeps](Sleep::sleep).
#[must_use = "a worker counts as searching until this is dropped"]
pub struct Searching<'a> {
    sleep: &'a Sleep,
}

impl Drop for Searching<'_> {
    fn drop(&mut self) {
        self.sleep.stop_searching();
    }
}

impl Default for Sleep {
    fn default() -> Self {
        Sleep::new()
    }
}

impl Sleep {
    /// No worker searching or asleep.
    pub fn new() -> Sleep {
        Sleep {
            searching: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            state: Mutex::new(Sleepers::default()),
        }
    }

    /// Makes sure some worker will look at the queue. Call after publishing
    /// work.
    pub fn wake_one(&self) {
        fence(Ordering::SeqCst);
        if self.searching.load(Ordering::SeqCst) > 0 {
            return;
        }
        if self.sleepers.load(Ordering::SeqCst) == 0 {
            return;
        }
        // The latest sleeper; none left means each sleeper counted above
        // has left its sleep already (under this lock), and looks at the
        // queue before it sleeps again.
        let place = lock(&self.state).stack.pop();
        if let Some(place) = place {
            place.woken.store(true, Ordering::Relaxed);
            place.cond.notify_one();
        }
    }

    /// Wakes every worker for good (shutdown or broken pool).
    pub fn wake_all(&self) {
        let mut state = lock(&self.state);
        state.all = true;
        for place in state.stack.drain(..) {
            place.woken.store(true, Ordering::Relaxed);
            place.cond.notify_one();
        }
    }

    /// Polls `find` for a short while (see the module header; `crowded`:
    /// the pool's awake threads outnumber the CPUs). Returns what it found;
    /// if nothing, the worker is still counted as searching, until it
    /// [sleeps](Self::sleep) or drops the [`Searching`].
    pub fn search<J>(
        &self,
        mut find: impl FnMut() -> Option<J>,
        crowded: bool,
    ) -> Result<J, Searching<'_>> {
        self.searching.fetch_add(1, Ordering::SeqCst);
        match poll_for_a_while(&mut find, crowded) {
            Some(job) => {
                self.stop_searching();
                Ok(job)
            }
            None => Err(Searching { sleep: self }),
        }
    }

    fn stop_searching(&self) {
        self.searching.fetch_sub(1, Ordering::SeqCst);
        // Pairs with `wake_one`'s fence: a job whose submitter saw us
        // searching (and so woke nobody) is visible to the caller's check
        // for more work, which then wakes another worker. Without it, on a
        // weakly ordered CPU, a burst's second job could wait for this
        // worker to finish the first.
        fence(Ordering::SeqCst);
    }

    /// Workers asleep or about to sleep (a relaxed read: an estimate).
    pub fn sleepers(&self) -> usize {
        self.sleepers.load(Ordering::Relaxed)
    }

    /// Workers searching, asleep or about to sleep (an estimate).
    pub fn idle(&self) -> usize {
        self.searching.load(Ordering::Relaxed) + self.sleepers.load(Ordering::Relaxed)
    }

    /// Sleeps until woken, unless `has_work` (checked after announcing the
    /// sleep) says there is something to do, or until `deadline` (`None`:
    /// never). Returns false only if the deadline passed without a wake-up:
    /// no submitter counted on this worker, which may then leave the pool
    /// (see the `headcount` module).
    ///
    /// The worker stops searching only once it counts as a sleeper, under
    /// the lock that a waker needs to find its place: there is no moment at
    /// which a submitter sees it neither searching nor asleep and wakes
    /// another worker for the job (on a busy machine, a worker preempted
    /// in that gap had the next job given to an older sleeper, and the pool
    /// kept two threads busy under a trickle that one could take).
    pub fn sleep(
        &self,
        searching: Searching<'_>,
        has_work: impl Fn() -> bool,
        deadline: Option<Instant>,
    ) -> bool {
        let mut state = lock(&self.state);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        drop(searching);
        let mut woken = true;
        if !state.all && !has_work() {
            let place = Arc::new(Place::default());
            state.stack.push(Arc::clone(&place));
            // The flag is written under the lock: a wake-up is either seen
            // here or given after this worker left the stack (then it goes
            // to another sleeper, or to nobody when none is left).
            while !place.woken.load(Ordering::Relaxed) {
                let timed_out;
                (state, timed_out) = wait(&place.cond, state, deadline);
                if timed_out && !place.woken.load(Ordering::Relaxed) {
                    state.stack.retain(|p| !Arc::ptr_eq(p, &place));
                    woken = false;
                    break;
                }
            }
        }
        // Still under the lock: a waker that counted this worker finds it
        // gone from the stack, and this worker looks at the queue next.
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        woken
    }
}

/// Waits on `cond` until notified or `deadline`; true if it passed.
#[cfg(not(loom))]
fn wait<'a>(
    cond: &Condvar,
    state: MutexGuard<'a, Sleepers>,
    deadline: Option<Instant>,
) -> (MutexGuard<'a, Sleepers>, bool) {
    crate::sync::wait_until(cond, state, deadline)
}

/// Under loom, time does not pass: a deadline has always passed already
/// (the worker times out unless a token is there), the most racy case for
/// a worker that then leaves the pool.
#[cfg(loom)]
fn wait<'a>(
    cond: &Condvar,
    state: MutexGuard<'a, Sleepers>,
    deadline: Option<Instant>,
) -> (MutexGuard<'a, Sleepers>, bool) {
    if deadline.is_some() {
        return (state, true);
    }
    match cond.wait(state) {
        Ok(t) => (t, false),
        Err(p) => (p.into_inner(), false),
    }
}

/// The search loop.
#[cfg(not(loom))]
fn poll_for_a_while<J>(find: &mut impl FnMut() -> Option<J>, crowded: bool) -> Option<J> {
    if crowded {
        let backoff = crossbeam_utils::Backoff::new();
        for _ in 0..CROWDED_ROUNDS {
            if let Some(job) = find() {
                return Some(job);
            }
            backoff.snooze();
        }
        return None;
    }
    let start = Instant::now();
    loop {
        for _ in 0..POLLS_PER_CLOCK {
            if let Some(job) = find() {
                return Some(job);
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SEARCH_TIME {
            return None;
        }
    }
}

/// Under loom, time does not pass: one poll stands for the whole search,
/// whose length changes no outcome, only how likely each one is.
#[cfg(loom)]
fn poll_for_a_while<J>(find: &mut impl FnMut() -> Option<J>, _crowded: bool) -> Option<J> {
    find()
}
