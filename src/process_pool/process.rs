//! One worker process from the outside: starting it (re-executing this
//! program with its end of a socket pair), its handshake and initializer,
//! signalling it, reaping it, and turning its exit status into the cause text
//! of [`Error::WorkerDied`].
//!
//! Guarantees:
//! * the worker inherits exactly one descriptor from the pool, its end of the
//!   socket, as its stdin (it moves it and puts `/dev/null` there); the
//!   ticket board follows over the socket; nothing runs between fork and
//!   exec, so workers start with `posix_spawn`;
//! * on Linux every worker runs the very file the parent runs, even after
//!   that file was deleted or replaced on disk (a rebuild): it is executed
//!   through `/proc/self/exe`, so a pool neither breaks nor mixes two builds;
//!   its `argv[0]` is still the program's path;
//! * on Linux the worker dies with the thread that started it (its
//!   supervisor) or with the whole parent, so no worker outlives its pool
//!   (it sets `PR_SET_PDEATHSIG` itself, first thing, and exits if its
//!   parent is already gone);
//! * a worker that does not send its handshake within [`START_TIMEOUT`] is
//!   given up on, and an initializer gets the per-task timeout;
//! * a death is seen without polling: the reader of a worker's answers
//!   ([`Connection`]) waits on the socket and, once a read has waited for
//!   [`WATCH_AFTER`], on a pidfd of the process too (Linux), so a worker
//!   that dies while something else holds its socket open is still seen;
//! * [`Process::reap`] always returns, and reports the true cause: a process
//!   that closed its connection but lingers is killed after [`LINGER`] and
//!   reported as such, not as killed by a signal.
//!
//! Nothing here touches the pool's state: recording the pid and deciding what
//! a failure means is the supervisor's business.

use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use super::entry::WORKER_ENV;
use crate::Error;
use crate::error::Cause;
use crate::remote::framing;
use crate::remote::message::{self, FromWorkerRef, ToWorkerRef};

use super::board::Board;
use super::shared::{Config, InitCall};

/// How long a new worker may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a worker that closed its connection may take to exit before it
/// is killed. A worker closes its connection only by exiting, and exits
/// within microseconds of it.
pub(super) const LINGER: Duration = Duration::from_millis(200);

/// A started worker process: its handle and, on Linux, a pidfd that
/// becomes readable when it exits.
pub(super) struct Process {
    child: Child,
    pidfd: Option<OwnedFd>,
}

/// Starts a worker process, hands it the ticket board `board`, and returns
/// it with the pool's end of its socket.
///
/// The worker's end of the socket is its stdin (the worker moves it away
/// and puts `/dev/null` there), so that nothing needs to run in the child
/// between fork and exec: the standard library then starts it with
/// `posix_spawn`, which does not copy this process's page tables (a fork of
/// a parent with gigabytes of memory costs milliseconds, or fails under
/// strict overcommit).
///
/// Call it on the thread that supervises the worker: on Linux the worker
/// asks to be killed when that thread ends.
pub(super) fn spawn(board: &Board) -> Result<(Process, UnixStream), Cause> {
    let program = program()?;
    let (ours, theirs) = UnixStream::pair()
        .map_err(|e| Cause::with_source(format!("cannot create a socket pair: {e}"), e))?;
    let mut command = Command::new(&program.exec);
    command
        .arg0(&program.name)
        .env(WORKER_ENV, std::process::id().to_string())
        .stdin(Stdio::from(OwnedFd::from(theirs)));
    let child = command.spawn().map_err(|e| {
        Cause::with_source(format!("cannot start {}: {e}", program.name.display()), e)
    })?;
    // The child's copy of its end is its stdin now; ours went with the
    // command (dropped here), so that the worker's death shows as the end of
    // the stream.
    drop(command);
    let pidfd = pidfd_open(child.id());
    let process = Process { child, pidfd };
    if let Err(e) = board.send(&ours) {
        // Our child: kill and reap it rather than leave it waiting.
        let mut process = process;
        let _ = process.child.kill();
        let _ = process.child.wait();
        return Err(Cause::with_source(
            format!("cannot hand the ticket board to the worker: {e}"),
            e,
        ));
    }
    Ok((process, ours))
}

/// A pidfd of our child `pid` (Linux 5.3 and later), or `None`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open has no memory effects; `pid` is our unreaped child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative result is a new descriptor that we own (it is
    // close-on-exec by definition).
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn pidfd_open(_pid: u32) -> Option<OwnedFd> {
    None
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ended {
    pub(super) status: ExitStatus,
    /// It closed its connection but did not exit, so the pool killed it.
    pub(super) lingered: bool,
}

impl Process {
    pub(super) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a process that closed its connection (or died). It
    /// normally has exited already; one that is still alive after
    /// [`LINGER`] is killed.
    pub(super) fn reap(&mut self) -> Ended {
        let exited = match &self.pidfd {
            Some(pidfd) => poll_one(pidfd.as_raw_fd(), Some(LINGER)),
            None => self.poll_exit(),
        };
        if exited {
            if let Ok(status) = self.child.wait() {
                return Ended {
                    status,
                    lingered: false,
                };
            }
        }
        let _ = self.child.kill();
        Ended {
            status: self
                .child
                .wait()
                .unwrap_or_else(|_| ExitStatus::from_raw(0)),
            lingered: true,
        }
    }

    /// Ends a worker that failed to start (its handshake or initializer)
    /// and says how it ended: its own exit or death if it had ended
    /// already, else that the pool stopped it (reporting the pool's own
    /// SIGKILL as the worker's cause would mislead).
    pub(super) fn end_after_failed_start(&mut self) -> String {
        if let Ok(Some(status)) = self.child.try_wait() {
            return describe_status(status);
        }
        send_signal(self.id(), libc::SIGKILL);
        match self.child.wait() {
            Ok(status) if status.signal() != Some(libc::SIGKILL) => describe_status(status),
            _ => "stopped by the pool".to_owned(),
        }
    }

    /// Without a pidfd: polls for the exit, for at most [`LINGER`].
    fn poll_exit(&mut self) -> bool {
        let start = Instant::now();
        let mut pause = Duration::from_micros(20);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) if start.elapsed() < LINGER => {
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
                _ => return false,
            }
        }
    }

    /// The reader of this worker's answers on `stream` (see [`Connection`]).
    pub(super) fn connection(&self, stream: UnixStream) -> Connection {
        Connection {
            stream,
            pidfd: self.pidfd.as_ref().map(|fd| fd.as_raw_fd()),
        }
    }
}

/// Waits until `fd` is readable, or `timeout` passes. True if readable.
fn poll_one(fd: RawFd, timeout: Option<Duration>) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n >= 0 {
            return n > 0;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// How long a read of a worker's answers blocks on the socket alone before
/// it also watches the worker's pidfd. Answers usually come within
/// microseconds; a worker that dies while a child of it holds its socket
/// open is seen at most this late.
const WATCH_AFTER: Duration = Duration::from_millis(50);

/// The pool's end of a worker's socket, for reading answers. A read blocks
/// on the socket (for at most [`WATCH_AFTER`]), then on the socket and the
/// worker's pidfd together, and reads as the end of the stream once the
/// process has exited with nothing left to read (a child of the worker may
/// still hold the socket open). So the common read is one system call, and
/// no death goes unseen.
pub(super) struct Connection {
    stream: UnixStream,
    pidfd: Option<RawFd>,
}

impl Connection {
    /// Starts watching the pidfd (after the handshake, whose reads obey
    /// their own timeout).
    fn watch(&mut self, pidfd: Option<RawFd>) {
        self.pidfd = pidfd;
        if pidfd.is_some() {
            let _ = self.stream.set_read_timeout(Some(WATCH_AFTER));
        }
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(pidfd) = self.pidfd else {
            return self.stream.read(buf);
        };
        loop {
            match self.stream.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
            let mut fds = [
                libc::pollfd {
                    fd: self.stream.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: pidfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if fds[0].revents == 0 && fds[1].revents != 0 {
                return Ok(0); // exited, and its socket has nothing for us
            }
            // Data, end of stream or an error: the next read says which.
        }
    }
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
fn program() -> Result<&'static Program, Cause> {
    static PROGRAM: OnceLock<Result<Program, Cause>> = OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| {
                Cause::with_source(format!("cannot find the current executable: {e}"), e)
            })?;
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
    process: &Process,
    ours: &UnixStream,
    config: &Config,
) -> Result<BufReader<Connection>, String> {
    let reader = ours
        .try_clone()
        .map_err(|e| format!("cannot clone a socket: {e}"))?;
    let _ = ours.set_read_timeout(Some(START_TIMEOUT));
    // Without a pidfd, reads block on the socket and obey its timeout.
    let mut handshake_reader = BufReader::with_capacity(64 * 1024, process.connection(reader));
    handshake_reader.get_mut().pidfd = None;
    let mut reader = handshake_reader;
    let mut buf = Vec::new();
    match framing::read_frame(&mut reader, &mut buf) {
        Ok(true) => message::check_ready(&buf)?,
        Ok(false) | Err(_) => {
            return Err(
                "the worker process ended before its handshake (is the program's \
                        worker entry linked? see concurrent_futures::run_if_worker)"
                    .to_owned(),
            );
        }
    };
    let _ = ours.set_read_timeout(None);
    if let Some(init) = &config.initializer {
        let _ = ours.set_read_timeout(config.timeout);
        initialize(ours, &mut reader, &mut buf, init).inspect_err(|_reason| {
            #[cfg(feature = "tracing")]
            super::events::initializer_failed(process.id(), init.task.name, _reason);
        })?;
        let _ = ours.set_read_timeout(None);
    }
    reader
        .get_mut()
        .watch(process.pidfd.as_ref().map(|fd| fd.as_raw_fd()));
    Ok(reader)
}

/// Runs the initializer on a worker that sent its handshake.
fn initialize(
    ours: &UnixStream,
    reader: &mut BufReader<Connection>,
    buf: &mut Vec<u8>,
    init: &InitCall,
) -> Result<(), String> {
    let message = ToWorkerRef::Init {
        task: init.task.name,
        fingerprint: init.task.fingerprint,
        args: serde_bytes::Bytes::new(&init.args),
    };
    let mut out = Vec::new();
    let _ = framing::encode_frame(&message, &mut out);
    if (&*ours).write_all(&out).is_err() {
        return Err("the worker process ended before its initializer ran".into());
    }
    let outcome = match framing::read_frame(reader, buf) {
        Ok(true) => match message::decode::<FromWorkerRef>(buf) {
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

/// The resident memory (RSS) of process `pid`, in bytes, from
/// `/proc/<pid>/statm`; `None` where that cannot be read (other platforms).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(u64::try_from(page).ok()?))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) fn resident_bytes(_pid: u32) -> Option<u64> {
    None
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

/// `exit code 3`, `signal 9 (SIGKILL)`, or that it lingered.
pub(super) fn describe(ended: Ended) -> String {
    if ended.lingered {
        return format!(
            "it closed its connection but did not exit, and was killed after {} ms",
            LINGER.as_millis()
        );
    }
    describe_status(ended.status)
}

fn describe_status(status: ExitStatus) -> String {
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
