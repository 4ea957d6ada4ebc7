//! The worker side: how a process becomes a worker, and its loop.
//!
//! A pool starts a worker by re-executing the current program
//! ([`std::env::current_exe`]) with the environment variable
//! [`WORKER_ENV`] naming the file descriptor of its connection to the pool.
//!
//! **No set-up line is needed** on Linux, Android, the BSDs and macOS: the
//! library puts a static constructor in the program (an `.init_array` /
//! `__mod_init_func` entry) that runs before `main`. When it sees
//! [`WORKER_ENV`] it serves tasks and exits, so `main` (and any code of yours
//! before the pool is created) never runs in a worker; in a pool's parent it
//! only reads one environment variable. This works the same for an ordinary
//! binary, an example, an integration test and a doc test.
//!
//! What to know:
//! * A worker is the same executable, started without the parent's
//!   command-line arguments, so nothing needs them to reach the worker:
//!   the entry point comes before any of your code.
//! * Only functions registered with [`#[task]`](crate::task) can run, and
//!   static constructors of other crates still run in workers (they run
//!   before `main` in every process of the program).
//! * Workers inherit the parent's stdout and stderr (so `println!` in a task
//!   is visible) and the parent's environment; their stdin is empty.
//! * On a platform without static constructors, call
//!   [`run_if_worker`] as the first line of `main`.
//! * Unix only (the `process` feature does not build elsewhere); tested on
//!   Linux. On Linux a worker also dies with its pool's process
//!   (`PR_SET_PDEATHSIG`), so none is left behind even after a `kill -9`.
//! * A panic in a task is caught only with `panic = "unwind"` (the
//!   default); with `panic = "abort"` it kills the worker, which the pool
//!   reports as [`Error::WorkerDied`](crate::Error::WorkerDied) and replaces.
//! * Tasks that are known to be short (under half a millisecond) are sent
//!   in batches; if a worker dies during a batch, the rest of the batch is
//!   run again one task at a time, so only the task that kills a worker
//!   fails (a task that crashes its worker may therefore have started
//!   twice).

use std::io::{BufReader, BufWriter, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::catch_unwind;

use crate::registry;
use crate::wire::{self, FromWorkerRef, PROTOCOL_VERSION, RemoteError, ToWorkerRef};
use serde_bytes::Bytes;

/// The environment variable that makes a process of this program a worker;
/// its value is the file descriptor of the worker's connection to its pool.
pub const WORKER_ENV: &str = "CONCURRENT_FUTURES_WORKER_FD";

/// Exit code of a worker whose connection broke or carried garbage.
const EXIT_PROTOCOL: i32 = 86;

/// Turns this process into a worker if a pool started it as one, and never
/// returns in that case; otherwise returns at once.
///
/// Where the library's static constructor works (Linux, Android, the BSDs,
/// macOS) this is done before `main` already and calling it is a no-op.
/// Elsewhere, call it as the first line of `main`.
pub fn run_if_worker() {
    let Some(value) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    // SAFETY: this runs before `main` (from the static constructor) or as
    // the first line of `main`, when the program has no other thread that
    // could read the environment concurrently.
    unsafe { std::env::remove_var(WORKER_ENV) };
    let fd = value.to_str().and_then(|s| s.parse::<RawFd>().ok());
    let Some(fd) = fd.filter(|fd| *fd >= 0) else {
        eprintln!("concurrent_futures worker: bad {WORKER_ENV} value {value:?}");
        std::process::exit(EXIT_PROTOCOL);
    };
    // SAFETY: the pool passed us this descriptor, open and not CLOEXEC; it
    // is the worker's connection and nothing else in this process owns it.
    // Setting CLOEXEC keeps it out of processes that tasks may start (they
    // would otherwise hold the connection open after this worker died).
    let stream = unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        UnixStream::from_raw_fd(fd)
    };
    // What Rust's runtime does before `main`, which a worker never reaches:
    // a write to a closed pipe is an error, not a silent death.
    // SAFETY: setting a signal disposition to SIG_IGN installs no handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let code = serve(stream);
    std::process::exit(code);
}

extern "C" fn static_constructor() {
    // A panic must not unwind into the C runtime.
    if catch_unwind(run_if_worker).is_err() {
        std::process::exit(EXIT_PROTOCOL);
    }
}

#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
    target_os = "illumos",
    target_os = "solaris",
))]
#[used]
// SAFETY: `.init_array` holds `extern "C" fn()` pointers that the C runtime
// calls before `main`; this is one such pointer. It is in the unnumbered
// section, so it runs after the standard library's own initialisation.
#[unsafe(link_section = ".init_array")]
static WORKER_ENTRY: extern "C" fn() = static_constructor;

#[cfg(target_vendor = "apple")]
#[used]
// SAFETY: `__mod_init_func` holds initialiser pointers that dyld calls
// before `main`; this is one such pointer.
#[unsafe(link_section = "__DATA,__mod_init_func")]
static WORKER_ENTRY: extern "C" fn() = static_constructor;

/// Runs one call of a task into `out`, turning a panic into
/// [`RemoteError::Panicked`]; on error `out` is unchanged.
fn call(entry: &registry::TaskEntry, args: &[u8], out: &mut Vec<u8>) -> Result<(), RemoteError> {
    match crate::panic::catch(|| (entry.invoke)(args, out)) {
        Ok(outcome) => outcome,
        Err(crate::Error::Panicked {
            message,
            location,
            backtrace,
        }) => Err(RemoteError::Panicked {
            message,
            location,
            backtrace,
        }),
        Err(other) => Err(RemoteError::Panicked {
            message: other.to_string(),
            location: None,
            backtrace: None,
        }),
    }
}

/// Appends one outcome record: the result, or why it failed.
fn push_outcome(out: &mut Vec<u8>, run: impl FnOnce(&mut Vec<u8>) -> Result<(), RemoteError>) {
    let done = wire::append_record(out, |o| {
        o.push(wire::OUTCOME_OK);
        run(o)
    });
    if let Err(error) = done {
        push_error(out, &error);
    }
}

fn push_error(out: &mut Vec<u8>, error: &RemoteError) {
    let pushed = wire::append_record(out, |o| {
        o.push(wire::OUTCOME_ERR);
        wire::append(error, o)
    });
    debug_assert!(pushed.is_ok(), "a RemoteError always serializes");
}

/// Runs every item of a `Run` message, appending one outcome record per
/// item to `results`; false if the items are malformed.
fn run(task: &str, fingerprint: u64, items: &[u8], results: &mut Vec<u8>) -> bool {
    match find(task, fingerprint) {
        Ok(entry) => {
            for args in wire::records(items) {
                let Ok(args) = args else { return false };
                push_outcome(results, |o| call(entry, args, o));
            }
        }
        Err(e) => {
            for args in wire::records(items) {
                if args.is_err() {
                    return false;
                }
                push_error(results, &e);
            }
        }
    }
    true
}

fn find(task: &str, fingerprint: u64) -> Result<&'static registry::TaskEntry, RemoteError> {
    let entry = registry::lookup(task).ok_or_else(|| RemoteError::UnknownTask(task.to_owned()))?;
    let expected = (entry.fingerprint)();
    if expected != fingerprint {
        return Err(RemoteError::TypeMismatch {
            task: task.to_owned(),
            expected,
            found: fingerprint,
        });
    }
    Ok(entry)
}

/// The worker loop: answer every message until the pool closes the
/// connection. Returns the exit code.
fn serve(stream: UnixStream) -> i32 {
    crate::panic::install_hook_with_backtraces();
    let Ok(read_half) = stream.try_clone() else {
        return EXIT_PROTOCOL;
    };
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let mut writer = BufWriter::with_capacity(64 * 1024, stream);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut results = Vec::new();
    let ready = FromWorkerRef::Ready {
        version: PROTOCOL_VERSION,
        pid: std::process::id(),
    };
    if wire::write_frame(&mut writer, &ready).is_err() || writer.flush().is_err() {
        return EXIT_PROTOCOL;
    }
    let fail = |what: &dyn std::fmt::Display| {
        eprintln!("concurrent_futures worker {}: {what}", std::process::id());
        EXIT_PROTOCOL
    };
    loop {
        // Answers are batched: flush only when no request is waiting.
        if reader.buffer().is_empty() && writer.flush().is_err() {
            return EXIT_PROTOCOL;
        }
        match wire::read_frame(&mut reader, &mut buf) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return fail(&e),
        }
        let message = match wire::decode::<ToWorkerRef>(&buf) {
            Ok(m) => m,
            Err(e) => return fail(&e),
        };
        out.clear();
        results.clear();
        let encoded = match message {
            ToWorkerRef::Shutdown => break,
            ToWorkerRef::Init {
                task,
                fingerprint,
                args,
            } => {
                let outcome = find(task, fingerprint)
                    .and_then(|entry| call(entry, args, &mut results))
                    .map(|()| Bytes::new(&results));
                wire::encode_frame(&FromWorkerRef::InitDone { outcome }, &mut out)
            }
            ToWorkerRef::Run {
                id,
                task,
                fingerprint,
                items,
            } => {
                if !run(task, fingerprint, items, &mut results) {
                    return fail(&"malformed items");
                }
                let answer = FromWorkerRef::Done {
                    id,
                    results: Bytes::new(&results),
                };
                wire::encode_frame(&answer, &mut out).or_else(|e| {
                    // Only results over the frame limit get here: answer
                    // with an error per item rather than dying.
                    let error = RemoteError::Serialization(format!("result too large: {e}"));
                    let mut errors = Vec::new();
                    for _ in wire::records(&results) {
                        push_error(&mut errors, &error);
                    }
                    out.clear();
                    let answer = FromWorkerRef::Done {
                        id,
                        results: Bytes::new(&errors),
                    };
                    wire::encode_frame(&answer, &mut out)
                })
            }
        };
        if encoded.is_err() || writer.write_all(&out).is_err() {
            return EXIT_PROTOCOL;
        }
    }
    if writer.flush().is_err() {
        return EXIT_PROTOCOL;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[crate::task]
    fn double(n: u32) -> u32 {
        n * 2
    }

    fn packed(items: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        for item in items {
            wire::append_record(&mut out, |o| wire::append(item, o)).unwrap();
        }
        out
    }

    fn outcomes(results: &[u8]) -> Vec<Result<u32, RemoteError>> {
        wire::records(results)
            .map(|r| match r.unwrap().split_first() {
                Some((&wire::OUTCOME_OK, v)) => Ok(wire::from_bytes(v).unwrap()),
                Some((&wire::OUTCOME_ERR, e)) => Err(wire::from_bytes(e).unwrap()),
                _ => panic!("bad record"),
            })
            .collect()
    }

    #[test]
    fn runs_registered_tasks_by_name_and_checks_fingerprints() {
        let name = concat!(module_path!(), "::double");
        assert!(crate::registry::task_names().contains(&name));
        let fingerprint = crate::registry::fingerprint::<u32, u32>();
        let mut results = Vec::new();
        assert!(run(name, fingerprint, &packed(&[1, 2, 3]), &mut results));
        assert_eq!(outcomes(&results), vec![Ok(2), Ok(4), Ok(6)]);

        results.clear();
        assert!(run(name, fingerprint ^ 1, &packed(&[1]), &mut results));
        assert!(matches!(
            outcomes(&results)[..],
            [Err(RemoteError::TypeMismatch { .. })]
        ));

        results.clear();
        assert!(run(
            "no::such::task",
            fingerprint,
            &packed(&[1, 2]),
            &mut results
        ));
        assert!(matches!(
            outcomes(&results)[..],
            [
                Err(RemoteError::UnknownTask(_)),
                Err(RemoteError::UnknownTask(_))
            ]
        ));

        // Arguments of the wrong type: an error for that item only.
        let mut items = packed(&[5]);
        wire::append_record(&mut items, |o| wire::append("text", o)).unwrap();
        results.clear();
        assert!(run(name, fingerprint, &items, &mut results));
        let got = outcomes(&results);
        assert_eq!(got[0], Ok(10));
        assert!(matches!(got[1], Err(RemoteError::Serialization(_))));

        // Truncated packing is malformed, not a panic.
        let items = packed(&[1, 2]);
        results.clear();
        assert!(!run(
            name,
            fingerprint,
            &items[..items.len() - 1],
            &mut results
        ));
    }
}
