//! Helpers shared by the core test files (futures, waits, the thread pool).
//!
//! Nothing here sleeps to synchronise: a [`Gate`] is opened explicitly, and
//! every blocking wait has a generous bound so that a bug fails a test instead
//! of hanging it.

#![allow(dead_code)]

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use concurrent_futures::{Error, Future, Promise};

/// The bound on every blocking wait that is expected to succeed.
pub const LONG: Duration = Duration::from_secs(30);

/// A one-shot gate: tasks block in [`Gate::wait`] until someone opens it.
#[derive(Clone, Default)]
pub struct Gate {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    pub fn open(&self) {
        let (lock, cond) = &*self.inner;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cond.notify_all();
    }

    pub fn is_open(&self) -> bool {
        *self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until the gate is open; panics after [`LONG`] (a bug).
    pub fn wait(&self) {
        let (lock, cond) = &*self.inner;
        let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = cond
            .wait_timeout_while(guard, LONG, |open| !*open)
            .unwrap_or_else(|p| p.into_inner());
        let open = *guard;
        drop(guard);
        assert!(open, "gate never opened");
    }
}

/// Runs `f` on its own thread and returns its result, failing the test if it
/// takes longer than [`LONG`] (a hang) and re-raising its panic if it panics.
pub fn bounded<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(LONG) {
        Ok(value) => {
            handle.join().unwrap();
            value
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(()) => unreachable!("sender dropped without sending"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} did not return within {LONG:?}"),
    }
}

/// A pending future (its promise must stay alive, or it is abandoned).
pub fn pending<T: Send + 'static>() -> (Promise<T>, Future<T>) {
    Promise::new()
}

/// A running future.
pub fn running<T: Send + 'static>() -> (Promise<T>, Future<T>) {
    let (p, f) = Promise::new();
    assert!(p.set_running());
    (p, f)
}

/// A cancelled future.
pub fn cancelled<T: Send + 'static>() -> Future<T> {
    let (p, f) = Promise::new();
    assert!(f.cancel());
    drop(p);
    f
}

/// A future finished with `value`.
pub fn finished<T: Send + 'static>(value: T) -> Future<T> {
    let (p, f) = Promise::new();
    p.set_result(value).unwrap();
    f
}

/// A future finished with an error.
pub fn failed<T: Send + 'static>(message: &str) -> Future<T> {
    let (p, f) = Promise::new();
    p.set_error(Error::InvalidArgument(message.to_owned()))
        .unwrap();
    f
}

/// A value that reports on a channel when it is dropped.
pub struct DropSignal {
    pub id: usize,
    tx: mpsc::Sender<usize>,
}

impl DropSignal {
    pub fn new(id: usize, tx: &mpsc::Sender<usize>) -> DropSignal {
        DropSignal { id, tx: tx.clone() }
    }
}

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.tx.send(self.id);
    }
}

/// True if `a` and `b` are the same object (for comparing `&dyn Waitable`s).
pub fn same<A: ?Sized, B: ?Sized>(a: &A, b: &B) -> bool {
    std::ptr::eq(a as *const A as *const (), b as *const B as *const ())
}
