//! One worker process from the outside: starting it (re-executing this
//! program with its end of a socket pair), its handshake and initializer,
//! signalling it, reaping it, and turning its exit status into the cause text
//! of [`Error::WorkerDied`].
//!
//! Guarantees:
//! * the worker inherits exactly one descriptor from the pool, its end of the
//!   socket, named in [`WORKER_ENV`]; its stdin is null;
//! * on Linux every worker runs the very file the parent runs, even after
//!   that file was deleted or replaced on disk (a rebuild): it is executed
//!   through `/proc/self/exe`, so a pool neither breaks nor mixes two builds;
//!   its `argv[0]` is still the program's path;
//! * on Linux the worker dies with the thread that started it (its
//!   supervisor) or with the whole parent, so no worker outlives its pool;
//! * a worker that does not send its handshake within [`START_TIMEOUT`] is
//!   given up on, and an initializer gets the per-task timeout;
//! * [`reap`] always returns: a process that lingers after closing its
//!   connection is killed.
//!
//! Nothing here touches the pool's state: recording the pid and deciding what
//! a failure means is the supervisor's business.

use std::io::{BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::Error;
use crate::wire::{self, FromWorkerRef, PROTOCOL_VERSION, ToWorkerRef};
use crate::worker::WORKER_ENV;

use super::shared::{Config, Initializer};

/// How long a new worker may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts a worker process and returns it with the pool's end of its socket.
///
/// Call it on the thread that supervises the worker: on Linux the worker is
/// killed when that thread ends.
pub(super) fn spawn() -> Result<(Child, UnixStream), String> {
    let program = program()?;
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| format!("cannot create a socket pair: {e}"))?;
    let fd = theirs.as_raw_fd();
    let mut command = Command::new(&program.exec);
    command
        .arg0(&program.name)
        .env(WORKER_ENV, fd.to_string())
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the child between fork and exec; it
    // only makes async-signal-safe system calls: `fcntl` lets the
    // child's end of the socket survive the exec (std creates it
    // CLOEXEC), and on Linux `prctl` kills the worker if this thread (the
    // worker's supervisor, which outlives it) or the whole parent dies.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            #[cfg(any(target_os = "linux", target_os = "android"))]
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.name.display()))?;
    // The child has its own copy now; keeping ours would hold the worker's
    // end open, so that its death would never show as end of stream.
    drop(theirs);
    Ok((child, ours))
}

/// How workers are started: the file to execute and the `argv[0]` to give
/// them.
struct Program {
    exec: PathBuf,
    name: PathBuf,
}

/// This program, looked up once per process.
///
/// `current_exe` names a path, and a rebuild replaces the file at that path
/// (the kernel then reports the old one as `... (deleted)`): starting workers
/// from it would fail, or start a different build. `/proc/self/exe` names
/// the running file itself, whatever happened to its path; in the forked
/// child it is still the parent's file, since `fork` keeps it and the path is
/// resolved by `execve` before anything else changes.
fn program() -> Result<&'static Program, String> {
    static PROGRAM: OnceLock<Result<Program, String>> = OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            let exe = std::env::current_exe()
                .map_err(|e| format!("cannot find the current executable: {e}"))?;
            // Looked up after a rebuild already happened: keep the name sane.
            let name = match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
                Some(stripped) => PathBuf::from(stripped),
                None => exe.clone(),
            };
            let own = Path::new("/proc/self/exe");
            let exec = if cfg!(any(target_os = "linux", target_os = "android"))
                && own.metadata().is_ok()
            {
                own.to_path_buf()
            } else {
                exe
            };
            Ok(Program { exec, name })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Waits for the worker's handshake and runs the initializer, if any.
/// Returns the reader of the worker's answers, with no read timeout left.
pub(super) fn handshake(
    ours: &UnixStream,
    config: &Config,
) -> Result<BufReader<UnixStream>, String> {
    let reader = ours
        .try_clone()
        .map_err(|e| format!("cannot clone a socket: {e}"))?;
    let _ = ours.set_read_timeout(Some(START_TIMEOUT));
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut buf = Vec::new();
    let handshake = match wire::read_frame(&mut reader, &mut buf) {
        Ok(true) => wire::decode::<FromWorkerRef>(&buf).map_err(|e| e.to_string()),
        Ok(false) | Err(_) => Err("the worker process ended before its handshake (is the \
                                   program's worker entry linked? see concurrent_futures::worker)"
            .to_owned()),
    };
    match handshake {
        Ok(FromWorkerRef::Ready { version, .. }) if version == PROTOCOL_VERSION => {}
        Ok(FromWorkerRef::Ready { version, .. }) => {
            return Err(format!(
                "worker speaks protocol version {version}, not {PROTOCOL_VERSION}"
            ));
        }
        Ok(other) => return Err(format!("unexpected first message {other:?}")),
        Err(reason) => return Err(reason),
    }
    let _ = ours.set_read_timeout(None);
    if let Some(init) = &config.initializer {
        let _ = ours.set_read_timeout(config.timeout);
        initialize(ours, &mut reader, &mut buf, init)?;
        let _ = ours.set_read_timeout(None);
    }
    Ok(reader)
}

/// Runs the initializer on a worker that sent its handshake.
fn initialize(
    ours: &UnixStream,
    reader: &mut BufReader<UnixStream>,
    buf: &mut Vec<u8>,
    init: &Initializer,
) -> Result<(), String> {
    let message = ToWorkerRef::Init {
        task: init.task.name,
        fingerprint: init.task.fingerprint,
        args: serde_bytes::Bytes::new(&init.args),
    };
    let mut out = Vec::new();
    let _ = wire::encode_frame(&message, &mut out);
    if (&*ours).write_all(&out).is_err() {
        return Err("the worker process ended before its initializer ran".into());
    }
    let outcome = match wire::read_frame(reader, buf) {
        Ok(true) => match wire::decode::<FromWorkerRef>(buf) {
            Ok(FromWorkerRef::InitDone { outcome: Ok(bytes) }) => (init.check)(bytes),
            Ok(FromWorkerRef::InitDone {
                outcome: Err(remote),
            }) => Err(Error::from(remote).to_string()),
            Ok(other) => Err(format!("unexpected message {other:?}")),
            Err(e) => Err(e.to_string()),
        },
        Ok(false) | Err(_) => Err("the worker process died while running it".into()),
    };
    outcome.map_err(|reason| format!("initializer {} failed: {reason}", init.task.name))
}

/// Sends `signal` to a worker process.
///
/// Only for a child that has not been reaped: after the reap its pid may
/// belong to another process.
pub(super) fn send_signal(pid: u32, signal: i32) {
    // SAFETY: `kill` has no memory effects. `pid` is a child of this process
    // that has not been reaped (slots are marked `dying` before the reap),
    // so the pid cannot have been reused by another process.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Waits for a process that closed its connection. It normally exits at
/// once; one that does not within two seconds is killed.
pub(super) fn reap(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    let mut pause = Duration::from_micros(20);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if start.elapsed() < Duration::from_secs(2) => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                return child.wait().unwrap_or_else(|_| ExitStatus::from_raw(0));
            }
        }
    }
}

/// `exit code 3` or `signal 9 (SIGKILL)`.
pub(super) fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(signal) => {
            let name = match signal {
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGILL => " (SIGILL)",
                libc::SIGFPE => " (SIGFPE)",
                libc::SIGPIPE => " (SIGPIPE)",
                libc::SIGINT => " (SIGINT)",
                _ => "",
            };
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            format!("signal {signal}{name}{core}")
        }
        None => format!("{status}"),
    }
}
