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

use std::cell::RefCell;
use std::io::{BufReader, BufWriter, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::registry;
use crate::wire::{self, ByteBuf, FromWorker, PROTOCOL_VERSION, RemoteError, ToWorker};

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

/// Where and how the last task panicked, recorded by the panic hook.
struct PanicInfo {
    location: Option<String>,
    backtrace: String,
}

thread_local! {
    static LAST_PANIC: RefCell<Option<PanicInfo>> = const { RefCell::new(None) };
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        let backtrace = std::backtrace::Backtrace::force_capture().to_string();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(PanicInfo { location, backtrace }));
    }));
}

/// Runs one call of a task, turning a panic into [`RemoteError::Panicked`].
fn call(entry: &registry::TaskEntry, args: &[u8]) -> Result<Vec<u8>, RemoteError> {
    match catch_unwind(AssertUnwindSafe(|| (entry.invoke)(args))) {
        Ok(outcome) => outcome,
        Err(payload) => {
            let message = crate::error::panic_message(payload.as_ref());
            // Dropping the payload may itself panic; keep the worker alive.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            let info = LAST_PANIC.with(|p| p.borrow_mut().take());
            Err(RemoteError::Panicked {
                message,
                location: info.as_ref().and_then(|i| i.location.clone()),
                backtrace: info.map(|i| i.backtrace),
            })
        }
    }
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
    install_panic_hook();
    let Ok(read_half) = stream.try_clone() else {
        return EXIT_PROTOCOL;
    };
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let mut writer = BufWriter::with_capacity(64 * 1024, stream);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let ready = FromWorker::Ready {
        version: PROTOCOL_VERSION,
        pid: std::process::id(),
    };
    if wire::write_frame(&mut writer, &ready).is_err() || writer.flush().is_err() {
        return EXIT_PROTOCOL;
    }
    loop {
        // Answers are batched: flush only when no request is waiting.
        if reader.buffer().is_empty() && writer.flush().is_err() {
            return EXIT_PROTOCOL;
        }
        let message = match wire::read_message::<ToWorker>(&mut reader, &mut buf) {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                eprintln!("concurrent_futures worker {}: {e}", std::process::id());
                return EXIT_PROTOCOL;
            }
        };
        out.clear();
        let answer = match message {
            ToWorker::Shutdown => break,
            ToWorker::Init {
                task,
                fingerprint,
                args,
            } => FromWorker::InitDone {
                outcome: find(&task, fingerprint)
                    .and_then(|entry| call(entry, &args))
                    .map(ByteBuf::from),
            },
            ToWorker::Run {
                id,
                task,
                fingerprint,
                items,
            } => {
                let results = match find(&task, fingerprint) {
                    Ok(entry) => items
                        .iter()
                        .map(|args| call(entry, args).map(ByteBuf::from))
                        .collect(),
                    Err(e) => vec![Err(e); items.len()],
                };
                FromWorker::Done { id, results }
            }
        };
        let encoded = wire::encode_frame(&answer, &mut out);
        if let Err(e) = encoded {
            // Cannot happen short of a result over the frame limit; answer
            // with an error per item rather than dying.
            let FromWorker::Done { id, results } = answer else {
                return EXIT_PROTOCOL;
            };
            let err = RemoteError::Serialization(format!("result too large: {e}"));
            out.clear();
            let fallback = FromWorker::Done {
                id,
                results: vec![Err(err); results.len()],
            };
            if wire::encode_frame(&fallback, &mut out).is_err() {
                return EXIT_PROTOCOL;
            }
        }
        if writer.write_all(&out).is_err() {
            return EXIT_PROTOCOL;
        }
    }
    if writer.flush().is_err() {
        return EXIT_PROTOCOL;
    }
    0
}
