//! The worker side: how a process becomes a worker, and its loop.
//!
//! A pool starts a worker by re-executing the current program (on Linux the
//! very file the parent runs, `/proc/self/exe`, even if it was rebuilt or
//! deleted since; elsewhere [`std::env::current_exe`]) with the environment
//! variable [`WORKER_ENV`]; its connection to the pool is its stdin (moved
//! away at once; tasks see an empty stdin).
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
//! * Tasks that are known to be short are sent ahead in small batches (about
//!   a millisecond of work). A job sent ahead stays pending, and
//!   cancellable, until this worker begins it: both sides share a ticket
//!   per job (see the pool's `board` module), and a job cancelled first is
//!   skipped, never run.
//! * **At most once for completed work.** If this worker dies, the job it
//!   was running fails with [`Error::WorkerDied`](crate::Error::WorkerDied);
//!   jobs it had not begun go back to the queue and may run in another
//!   worker; a job it completed is never run again. Its answer is kept: the
//!   worker writes answers still buffered before it dies of a crash
//!   (`abort`, a segfault, `exit`, a panic under `panic = "abort"`); only a
//!   death no process can react to (SIGKILL, the OOM killer) can lose
//!   answers, and then those jobs fail with `WorkerDied` saying that they
//!   completed and their result was lost.

use std::io::{BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::panic::catch_unwind;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicUsize, Ordering};

use crate::process_pool::board::Board;

use crate::WorkerId;
use crate::remote::framing;
use crate::remote::message::{self, FromWorkerRef, PROTOCOL_VERSION, RemoteError, ToWorkerRef};
use crate::remote::serve;
use crate::remote::tasks::build_identity;
use serde_bytes::Bytes;

/// The environment variable that makes a process of this program a worker;
/// its value is the pool's process id. The worker's connection to its pool
/// is its stdin, and the ticket board it shares with the pool comes as the
/// first message on it.
pub const WORKER_ENV: &str = "CONCURRENT_FUTURES_WORKER";

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
    let parent = value.to_str().and_then(|s| s.parse::<libc::pid_t>().ok());
    let Some(parent) = parent else {
        crate::trace::diag!(
            error,
            "concurrent_futures worker: bad {WORKER_ENV} value {value:?}"
        );
        std::process::exit(EXIT_PROTOCOL);
    };
    // Die with the pool's thread that started us, or with the whole pool;
    // if the pool is gone already, nobody will read our answers.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: prctl and getppid have no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            std::process::exit(EXIT_PROTOCOL);
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = parent;
    // The connection came as stdin: move it to a descriptor of its own,
    // close-on-exec (processes a task starts must not hold it open after
    // this worker died), and give tasks an empty stdin.
    // SAFETY: fd 0 is the connection the pool passed, owned by nothing
    // else in this process; F_DUPFD_CLOEXEC makes a new descriptor that we
    // own; /dev/null replaces fd 0 with dup2, which closes the original.
    let stream = unsafe {
        let fd = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3);
        if fd < 0 {
            std::process::exit(EXIT_PROTOCOL);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
        UnixStream::from_raw_fd(fd)
    };
    let board = match Board::receive(&stream) {
        Ok(board) => board,
        Err(e) => {
            crate::trace::diag!(
                error,
                "concurrent_futures worker: cannot map the ticket board: {e}"
            );
            std::process::exit(EXIT_PROTOCOL);
        }
    };
    // What Rust's runtime does before `main`, which a worker never reaches:
    // a write to a closed pipe is an error, not a silent death.
    // SAFETY: setting a signal disposition to SIG_IGN installs no handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let code = serve(stream, &board);
    std::process::exit(code);
}

extern "C" fn static_constructor() {
    // A panic must not unwind into the C runtime.
    if catch_unwind(run_if_worker).is_err() {
        std::process::exit(EXIT_PROTOCOL);
    }
    // A rank of an MPI job that opted in becomes an MPI worker (or, on
    // rank 0, arranges for the workers to be shut down at exit). After the
    // process-pool check: a process-pool worker of an MPI rank inherits
    // the rank's environment.
    #[cfg(feature = "mpi")]
    if catch_unwind(crate::mpi_pool::entry::divert).is_err() {
        std::process::exit(EXIT_PROTOCOL);
    }
    // A process started with CONCURRENT_FUTURES_REDIS becomes a Redis
    // worker (after the process-pool check, like MPI: the children of an
    // isolating Redis worker are process-pool workers).
    #[cfg(feature = "redis")]
    if catch_unwind(crate::redis_pool::worker::divert).is_err() {
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

/// The worker loop: answer every message until the pool closes the
/// connection. Returns the exit code.
fn serve(stream: UnixStream, board: &Board) -> i32 {
    crate::panic::install_hook_with_backtraces();
    let Ok(read_half) = stream.try_clone() else {
        return EXIT_PROTOCOL;
    };
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let mut writer = &stream;
    let mut outbox = Outbox::new(&stream);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut results = Vec::new();
    let ready = FromWorkerRef::Ready {
        version: PROTOCOL_VERSION,
        build: build_identity(),
        worker: WorkerId::process(std::process::id()),
    };
    if framing::write_frame(&mut writer, &ready).is_err() {
        return EXIT_PROTOCOL;
    }
    let fail = |what: &dyn std::fmt::Display| {
        crate::trace::diag!(
            error,
            "concurrent_futures worker {}: {what}",
            std::process::id()
        );
        EXIT_PROTOCOL
    };
    loop {
        // Answers are batched: send them only when no request is waiting
        // (or they pile up).
        if (reader.buffer().is_empty() || outbox.len() >= OUTBOX_FLUSH) && outbox.flush().is_err() {
            return EXIT_PROTOCOL;
        }
        match framing::read_frame(&mut reader, &mut buf) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return fail(&e),
        }
        let message = match message::decode::<ToWorkerRef>(&buf) {
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
                let outcome = serve::init(task, fingerprint, args, &mut results)
                    .map(|()| Bytes::new(&results));
                framing::encode_frame(&FromWorkerRef::InitDone { outcome }, &mut out)
            }
            ToWorkerRef::Run {
                id,
                ticket,
                task,
                fingerprint,
                items,
            } => match board.start(ticket, id) {
                Err(found) => {
                    return fail(&format_args!(
                        "ticket {ticket} holds {found:#x}, not job {id}"
                    ));
                }
                Ok(false) => framing::encode_frame(&FromWorkerRef::Skipped { id }, &mut out),
                Ok(true) => {
                    // Should the task crash the process, the answers of the
                    // jobs before it still reach the pool.
                    let ran =
                        outbox.while_exposed(|| serve::run(task, fingerprint, items, &mut results));
                    if !ran {
                        return fail(&"malformed items");
                    }
                    board.finish(ticket, id);
                    // Straight into the outbox: answers can be large.
                    if encode_answer(id, &results, outbox.bytes_mut()).is_err() {
                        return EXIT_PROTOCOL;
                    }
                    continue;
                }
            },
        };
        if encoded.is_err() {
            return EXIT_PROTOCOL;
        }
        outbox.push(&out);
    }
    if outbox.flush().is_err() {
        return EXIT_PROTOCOL;
    }
    0
}

/// Appends the `Done` frame of job `id` to `out`; results over the frame
/// limit become an error per item rather than the worker's death. On
/// failure `out` is unchanged.
fn encode_answer(id: u64, results: &[u8], out: &mut Vec<u8>) -> Result<(), crate::Error> {
    let answer = FromWorkerRef::Done {
        id,
        results: Bytes::new(results),
    };
    framing::encode_frame(&answer, out).or_else(|e| {
        // The cause alone: the parent's error says "serialization failed".
        let why = match e {
            crate::Error::Serialization(cause) => cause.to_string(),
            other => other.to_string(),
        };
        let error = RemoteError::Serialization {
            what: "result too large".into(),
            why,
        };
        let errors = serve::fail_each(results, &error);
        let answer = FromWorkerRef::Done {
            id,
            results: Bytes::new(&errors),
        };
        framing::encode_frame(&answer, out)
    })
}

/// Answers are flushed once this many bytes are waiting.
const OUTBOX_FLUSH: usize = 64 * 1024;

/// Answers not yet written to the pool.
///
/// While a task runs, the outbox is *exposed*: its address and length sit in
/// globals that a crash handler (a fatal signal, or `exit` called by the
/// task) reads to write them out before the process dies, so that jobs that
/// completed are not lost with their worker. The outbox is never changed
/// while exposed.
struct Outbox<'s> {
    stream: &'s UnixStream,
    bytes: Vec<u8>,
}

static CRASH_FD: AtomicI32 = AtomicI32::new(-1);
static CRASH_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static CRASH_LEN: AtomicUsize = AtomicUsize::new(0);

impl<'s> Outbox<'s> {
    fn new(stream: &'s UnixStream) -> Outbox<'s> {
        CRASH_FD.store(stream.as_raw_fd(), Ordering::SeqCst);
        install_crash_handlers();
        Outbox {
            stream,
            bytes: Vec::with_capacity(OUTBOX_FLUSH),
        }
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn push(&mut self, frame: &[u8]) {
        self.bytes.extend_from_slice(frame);
    }

    /// The unsent bytes, to append frames to (never while exposed).
    fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.bytes.is_empty() {
            return Ok(());
        }
        let mut w = self.stream;
        let written = w.write_all(&self.bytes);
        self.bytes.clear();
        written
    }

    /// Runs `f` (a task) with the outbox exposed to the crash handlers.
    fn while_exposed<R>(&mut self, f: impl FnOnce() -> R) -> R {
        if self.bytes.is_empty() {
            return f();
        }
        CRASH_PTR.store(self.bytes.as_mut_ptr(), Ordering::SeqCst);
        CRASH_LEN.store(self.bytes.len(), Ordering::SeqCst);
        let r = f();
        CRASH_LEN.store(0, Ordering::SeqCst);
        r
    }
}

/// Writes the exposed outbox, if any, and forgets it. Async-signal-safe:
/// atomics and `write` only.
fn flush_exposed() {
    let len = CRASH_LEN.swap(0, Ordering::SeqCst);
    let ptr = CRASH_PTR.load(Ordering::SeqCst);
    let fd = CRASH_FD.load(Ordering::SeqCst);
    if len == 0 || ptr.is_null() || fd < 0 {
        return;
    }
    let mut done = 0;
    while done < len {
        // SAFETY: `ptr..ptr + len` is the outbox's initialised bytes, which
        // are not changed or freed while exposed (see `Outbox`); `write` is
        // async-signal-safe.
        let n = unsafe { libc::write(fd, ptr.add(done).cast(), len - done) };
        if n > 0 {
            done += n as usize;
        } else if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {
            continue;
        } else {
            return;
        }
    }
}

extern "C" fn on_fatal_signal(signal: libc::c_int) {
    flush_exposed();
    // SAFETY: restoring the default disposition and re-raising are
    // async-signal-safe; the process then dies of the original signal, so
    // the pool reports the true cause.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

extern "C" fn on_exit() {
    flush_exposed();
}

/// Installs the crash handlers: fatal signals and `exit` write the exposed
/// outbox first. An alternate signal stack lets a stack overflow get here.
fn install_crash_handlers() {
    const ALT_STACK: usize = 64 * 1024;
    // SAFETY: the alternate stack is a fresh anonymous mapping that is never
    // freed (the process exits from this loop); `sigaction` installs a
    // handler that only makes async-signal-safe calls; `atexit` registers a
    // plain function.
    unsafe {
        let stack = libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        let mut flags = libc::SA_NODEFER | libc::SA_RESETHAND;
        if stack != libc::MAP_FAILED {
            let alt = libc::stack_t {
                ss_sp: stack,
                ss_flags: 0,
                ss_size: ALT_STACK,
            };
            if libc::sigaltstack(&alt, std::ptr::null_mut()) == 0 {
                flags |= libc::SA_ONSTACK;
            }
        }
        for signal in [
            libc::SIGABRT,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
            libc::SIGSYS,
            libc::SIGTRAP,
        ] {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fatal_signal as *const () as libc::sighandler_t;
            action.sa_flags = flags;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
        libc::atexit(on_exit);
    }
}
