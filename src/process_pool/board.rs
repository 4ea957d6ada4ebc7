//! [`Board`]: a page of memory shared by the pool and one worker process,
//! holding one ticket per job in flight. It is how both sides agree, without
//! a message, on whether a job sent ahead has begun.
//!
//! A ticket is one atomic word, `job id << 2 | phase`:
//!
//! ```text
//!   pool posts        worker starts       worker ends
//!  ───────────▶ SENT ───────────────▶ STARTED ─────────▶ DONE
//!                 │
//!                 │ pool cancels (Future::cancel, shutdown, a dropped map)
//!                 ▼
//!             CANCELLED   (the worker skips the job)
//! ```
//!
//! Guarantees:
//! * `SENT -> STARTED` (the worker) and `SENT -> CANCELLED` (the pool) are
//!   compare-and-swaps on the same word, so exactly one of them wins: a job
//!   that was cancelled never runs, and a job that began is never reported
//!   cancelled;
//! * the phase survives the worker: after a crash the pool reads which job
//!   was running (`STARTED`), which ended (`DONE`) and which never began
//!   (`SENT`), so only the running one fails and only unstarted ones are
//!   retried;
//! * the word carries the job id, so a ticket index reused for a later job
//!   can never be confused with an earlier one.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// The byte that carries the board's descriptor to the worker.
const HANDOVER: u8 = 0xB0;

/// Control-message space for one descriptor, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Control([u8; Control::SPACE]);

impl Control {
    const SPACE: usize = 64;

    fn new() -> Control {
        Control([0; Control::SPACE])
    }

    fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        self.0.as_mut_ptr().cast()
    }
}

/// Tickets per worker: more than a worker ever has in flight.
pub(crate) const TICKETS: usize = 256;
const BYTES: usize = TICKETS * std::mem::size_of::<AtomicU64>();

const SENT: u64 = 0;
const STARTED: u64 = 1;
const DONE: u64 = 2;
const CANCELLED: u64 = 3;

/// Where a job stands, as its ticket says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Sent, not begun: it may still be cancelled, or retried elsewhere.
    Sent,
    /// The worker began it.
    Started,
    /// The worker finished it (its answer may not have arrived).
    Done,
    /// Cancelled before it began; the worker skips it.
    Cancelled,
}

/// The shared ticket page of one worker, mapped in this process.
pub(crate) struct Board {
    tickets: NonNull<AtomicU64>,
    fd: OwnedFd,
}

// SAFETY: the mapping is only accessed through atomics, from any thread;
// it stays mapped until the board is dropped.
unsafe impl Send for Board {}
// SAFETY: as above: `&Board` gives only atomic access.
unsafe impl Sync for Board {}

impl Board {
    /// A new zeroed board, for a worker about to start. Its descriptor is
    /// close-on-exec; the spawner passes it on explicitly.
    pub(crate) fn create() -> io::Result<Board> {
        let fd = shared_memory()?;
        // SAFETY: `fd` is an open descriptor we own; ftruncate only sizes
        // the (new, empty) memory object.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), BYTES as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Board::map(fd)
    }

    /// Maps the board whose descriptor the pool passed.
    fn attach(fd: OwnedFd) -> io::Result<Board> {
        // SAFETY: an all-zero `stat` is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open and `st` is a valid out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if (st.st_size as usize) < BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the ticket board is too small",
            ));
        }
        Board::map(fd)
    }

    fn map(fd: OwnedFd) -> io::Result<Board> {
        // SAFETY: a fresh shared mapping of `BYTES` bytes of a memory object
        // at least that large; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let tickets = NonNull::new(ptr.cast::<AtomicU64>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Board { tickets, fd })
    }

    /// Hands the board to the worker at the other end of `stream`, as the
    /// first byte on it with the board's descriptor attached (SCM_RIGHTS).
    pub(crate) fn send(&self, stream: &UnixStream) -> io::Result<()> {
        let mut byte = [HANDOVER];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut control = Control::new();
        // SAFETY: an all-zero msghdr is valid; the pointers set below outlive
        // the call, and the control buffer is sized and aligned for one
        // descriptor (see `Control`).
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr();
            // Exactly one control message: the kernel parses all of it.
            msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), self.fd.as_raw_fd());
            loop {
                if libc::sendmsg(stream.as_raw_fd(), &msg, 0) == 1 {
                    return Ok(());
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }

    /// The worker's side of [`send`](Self::send): receives the board from
    /// the pool and maps it.
    pub(crate) fn receive(stream: &UnixStream) -> io::Result<Board> {
        let mut byte = [0u8];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut control = Control::new();
        // SAFETY: as in `send`; recvmsg writes at most `msg_controllen` bytes
        // of control data, and a descriptor it passes is new and ours.
        let fd = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr();
            msg.msg_controllen = Control::SPACE as _;
            let n = loop {
                let n = libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
                if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    break n;
                }
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            let passed = n == 1
                && byte[0] == HANDOVER
                && !cmsg.is_null()
                && (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_RIGHTS;
            if !passed {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the pool did not hand over a ticket board",
                ));
            }
            OwnedFd::from_raw_fd(std::ptr::read_unaligned(
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
            ))
        };
        Board::attach(fd)
    }

    fn ticket(&self, index: u32) -> &AtomicU64 {
        let index = index as usize % TICKETS;
        // SAFETY: the mapping holds `TICKETS` page-aligned `AtomicU64`s
        // (mmap returns page-aligned memory) and lives as long as `self`.
        // Atomics on shared memory are address-free on every platform with
        // native 64-bit atomics, so the two processes synchronise through it.
        unsafe { &*self.tickets.as_ptr().add(index) }
    }

    // ---- the pool's side ---------------------------------------------------

    /// Posts job `id` on ticket `index`, before the job is written to the
    /// worker.
    pub(crate) fn post(&self, index: u32, id: u64) {
        self.ticket(index).store(id << 2 | SENT, Ordering::Release);
    }

    /// Stops job `id` from starting. False if it began first.
    pub(crate) fn cancel(&self, index: u32, id: u64) -> bool {
        match self.ticket(index).compare_exchange(
            id << 2 | SENT,
            id << 2 | CANCELLED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            Err(now) => now == id << 2 | CANCELLED,
        }
    }

    /// Where job `id` stands. A ticket that holds another job (the worker
    /// scribbled on it) reads as started, the phase that claims the least.
    pub(crate) fn phase(&self, index: u32, id: u64) -> Phase {
        let word = self.ticket(index).load(Ordering::Acquire);
        if word >> 2 != id {
            return Phase::Started;
        }
        match word & 0b11 {
            SENT => Phase::Sent,
            STARTED => Phase::Started,
            DONE => Phase::Done,
            _ => Phase::Cancelled,
        }
    }

    // ---- the worker's side -------------------------------------------------

    /// Claims job `id` for running. `Ok(false)`: it was cancelled, skip it.
    /// `Err`: the ticket holds something else, the pool broke the protocol.
    pub(crate) fn start(&self, index: u32, id: u64) -> Result<bool, u64> {
        match self.ticket(index).compare_exchange(
            id << 2 | SENT,
            id << 2 | STARTED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(true),
            Err(now) if now == id << 2 | CANCELLED => Ok(false),
            Err(now) => Err(now),
        }
    }

    /// Marks job `id` finished (its answer is about to be written).
    pub(crate) fn finish(&self, index: u32, id: u64) {
        self.ticket(index).store(id << 2 | DONE, Ordering::Release);
    }
}

/// A sent job's say in its future: cancelling it cancels its ticket, and it
/// has started once its ticket says so.
pub(crate) struct Gate {
    pub(crate) board: std::sync::Arc<Board>,
    pub(crate) ticket: u32,
    pub(crate) id: u64,
}

impl crate::future::state::StartGate for Gate {
    fn try_cancel(&self) -> bool {
        self.board.cancel(self.ticket, self.id)
    }

    fn started(&self) -> bool {
        matches!(
            self.board.phase(self.ticket, self.id),
            Phase::Started | Phase::Done
        )
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `map` with this size and nothing
        // borrows it past `self`.
        unsafe {
            libc::munmap(self.tickets.as_ptr().cast(), BYTES);
        }
    }
}

/// A new anonymous shared-memory object, close-on-exec.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn shared_memory() -> io::Result<OwnedFd> {
    // SAFETY: the name is a valid C string; the call has no memory effects.
    let fd = unsafe { libc::memfd_create(c"concurrent-futures-board".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new anonymous shared-memory object, close-on-exec: a POSIX object
/// unlinked at once, so that only descriptors keep it.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn shared_memory() -> io::Result<OwnedFd> {
    use std::sync::atomic::AtomicUsize;
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "/cf-board-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let name = std::ffi::CString::new(name).expect("no NUL in the name");
    // SAFETY: the name is a valid C string; the call has no memory effects.
    let fd = unsafe {
        libc::shm_open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; unlinking leaves our descriptor usable.
    unsafe { libc::shm_unlink(name.as_ptr()) };
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: setting a descriptor flag has no memory effects.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_of_start_and_cancel_wins() {
        let pool = Board::create().unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        pool.send(&ours).unwrap();
        let worker = Board::receive(&theirs).unwrap();
        pool.post(3, 7);
        assert_eq!(pool.phase(3, 7), Phase::Sent);
        assert_eq!(worker.start(3, 7), Ok(true));
        assert!(!pool.cancel(3, 7), "a started job cannot be cancelled");
        assert_eq!(pool.phase(3, 7), Phase::Started);
        worker.finish(3, 7);
        assert_eq!(pool.phase(3, 7), Phase::Done);

        // The same index, reused for a later job.
        pool.post(3 + TICKETS as u32, 8);
        assert!(pool.cancel(3, 8));
        assert!(pool.cancel(3, 8), "cancelling twice is still cancelled");
        assert_eq!(worker.start(3, 8), Ok(false), "a cancelled job is skipped");
        assert_eq!(pool.phase(3, 8), Phase::Cancelled);
        // A ticket of another job is a protocol error for the worker and the
        // least-claiming phase for the pool.
        assert!(worker.start(3, 9).is_err());
        assert_eq!(pool.phase(3, 9), Phase::Started);
    }

    #[test]
    fn start_and_cancel_race_from_two_threads() {
        let board = std::sync::Arc::new(Board::create().unwrap());
        for id in 1..2000u64 {
            let index = (id % TICKETS as u64) as u32;
            board.post(index, id);
            let b = std::sync::Arc::clone(&board);
            let worker = std::thread::spawn(move || b.start(index, id).unwrap());
            let cancelled = board.cancel(index, id);
            let started = worker.join().unwrap();
            assert!(cancelled != started, "job {id}: exactly one must win");
        }
    }
}
