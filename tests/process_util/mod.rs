//! Helpers shared by the process-pool test suites: a `gate` task that
//! blocks until the test releases it, with no sleep anywhere.
#![allow(dead_code)]

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use concurrent_futures::task;

/// The bound on every blocking wait of these tests.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Announces itself to the test's control socket, then blocks until the
/// test releases it (or 60 s pass). Returns its pid.
#[task]
pub fn gate(ctl: String) -> u32 {
    let pid = std::process::id();
    let dir = Path::new(&ctl).parent().unwrap().to_owned();
    let mine = dir.join(format!("gate-{pid}-{}.sock", unique()));
    let socket = UnixDatagram::bind(&mine).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let note = format!("{pid} {}", mine.display());
    UnixDatagram::unbound()
        .unwrap()
        .send_to(note.as_bytes(), &ctl)
        .unwrap();
    let mut buf = [0u8; 16];
    let _ = socket.recv(&mut buf);
    pid
}

pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A control socket that gate tasks announce themselves to.
pub struct Gates {
    pub dir: PathBuf,
    ctl: UnixDatagram,
    pub path: String,
}

impl Gates {
    pub fn new() -> Gates {
        let dir = std::env::temp_dir().join(format!(
            "cf-process-test-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctl.sock");
        let ctl = UnixDatagram::bind(&path).unwrap();
        ctl.set_read_timeout(Some(LIMIT)).unwrap();
        Gates {
            dir,
            ctl,
            path: path.display().to_string(),
        }
    }

    /// Waits (bounded) for the next gate task to start: (pid, its socket).
    pub fn started(&self) -> (u32, String) {
        let mut buf = [0u8; 512];
        let n = self
            .ctl
            .recv(&mut buf)
            .expect("a gate task should have started");
        let note = std::str::from_utf8(&buf[..n]).unwrap();
        let (pid, path) = note.split_once(' ').unwrap();
        (pid.parse().unwrap(), path.to_owned())
    }

    /// True if another gate task starts within `d` (a bounded check).
    pub fn another_starts_within(&self, d: Duration) -> bool {
        self.ctl.set_read_timeout(Some(d)).unwrap();
        let mut buf = [0u8; 512];
        let got = self.ctl.recv(&mut buf).is_ok();
        self.ctl.set_read_timeout(Some(LIMIT)).unwrap();
        got
    }

    pub fn release(&self, socket: &str) {
        let _ = UnixDatagram::unbound().unwrap().send_to(b"go", socket);
    }
}

impl Drop for Gates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
