//! The worker: how a process becomes one, its runners, its heartbeat, and
//! the reclaiming of tasks whose worker died.
//!
//! A worker has [`concurrency`](WorkerOptions::concurrency) runners, each a
//! thread with its own connection and its own consumer name in the queue's
//! group (`host/pid/runner`). A runner reads up to
//! [`prefetch`](WorkerOptions::prefetch) entries at a time, and for each:
//! validates it, takes the job's start on its state key (the
//! [`START`](super::layout::START) script: a cancelled job is skipped, a job
//! started by `max_deliveries` workers already is failed), runs it (in
//! this process, or in a local child process with
//! [`isolate`](WorkerOptions::isolate)), and answers in one transaction:
//! the reply pushed on the client's result list, the state key deleted,
//! the entry acknowledged and deleted.
//!
//! A heartbeat thread refreshes the worker's key and re-claims the entries
//! its runners hold (XCLAIM to themselves), so that their idle time stays
//! short however long a task runs. An idle runner reclaims (XAUTOCLAIM)
//! entries idle for five heartbeats: those of a worker that died.
//!
//! Guarantees:
//! * Garbage never panics a worker: an entry that names no client is
//!   acknowledged, deleted and logged; one that names a client but is
//!   malformed, of another protocol version or another build is answered
//!   with an error.
//! * Only registered tasks run, with the fingerprint they were registered
//!   with (see [`serve`](crate::remote::serve)).
//! * SIGTERM stops the worker gracefully: the tasks running finish and are
//!   answered, the entries read ahead and not started go back to the
//!   stream, no new entry is read, and its consumers leave the group.
//! * A killed worker's consumers leave the group too: a live worker sweeps
//!   every tenth heartbeat, and removes the consumers of workers whose key
//!   has expired once the entries they held were reclaimed.
//! * A lost connection is retried (with backoff) forever: workers outlive
//!   a restart of the server.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use redis::{Connection, Value};

use super::conn::{self, Entry, is_broken};
use super::layout::{self, Keys, Reply};
use crate::future::DeferredCallbacks;
use crate::remote::job::{Control, Outcome, Payload, Sink};
use crate::remote::message::{self, PROTOCOL_VERSION, RemoteError, ToWorkerRef};
use crate::remote::serve;
use crate::remote::tasks::{self, TaskRef, build_identity};
use crate::{Error, ProcessPoolExecutor, Promise, WorkerId};

/// The environment variable that makes a process of this program a Redis
/// worker before `main`: `redis://[user:password@]host:port[/db]/queue`,
/// with options as a query string: `concurrency=N`, `isolate=1`,
/// `timeout=SECONDS` (needs `isolate`), `heartbeat=SECONDS`, `prefetch=N`.
///
/// ```text
/// CONCURRENT_FUTURES_REDIS='redis://10.0.0.5:6379/jobs?concurrency=8' ./app
/// ```
pub const WORKER_ENV: &str = "CONCURRENT_FUTURES_REDIS";

/// Exit status of a worker that could not start (bad target, server
/// unreachable at start, wrong credentials).
const EXIT_FAILED: i32 = 2;

/// How long a runner blocks on the stream before it looks around.
const BLOCK: Duration = Duration::from_millis(500);

/// Set by SIGTERM: finish what runs, take nothing new.
static STOP: AtomicBool = AtomicBool::new(false);

/// The settings of a worker.
///
/// ```
/// use std::time::Duration;
/// use concurrent_futures::redis_pool::WorkerOptions;
///
/// let options = WorkerOptions::new()
///     .concurrency(4)
///     .isolate(true)
///     .timeout(Duration::from_secs(60));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct WorkerOptions {
    concurrency: usize,
    isolate: bool,
    timeout: Option<Duration>,
    heartbeat: Duration,
    prefetch: usize,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions::new()
    }
}

impl WorkerOptions {
    /// The defaults: one task at a time per CPU, in this process, no
    /// timeout, a heartbeat every second, one entry read at a time.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::redis_pool::WorkerOptions;
    ///
    /// let options = WorkerOptions::new();
    /// # let _ = options;
    /// ```
    pub fn new() -> WorkerOptions {
        WorkerOptions {
            concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            isolate: false,
            timeout: None,
            heartbeat: Duration::from_secs(1),
            prefetch: 1,
        }
    }

    /// How many tasks this worker runs at once (runner threads, and with
    /// [`isolate`](Self::isolate) child processes).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::redis_pool::WorkerOptions;
    ///
    /// let options = WorkerOptions::new().concurrency(16); // I/O-bound tasks
    /// # let _ = options;
    /// ```
    pub fn concurrency(mut self, tasks: usize) -> WorkerOptions {
        self.concurrency = tasks;
        self
    }

    /// Runs every task in a local child process (a
    /// [`ProcessPoolExecutor`] of `concurrency` processes): a task that
    /// crashes its process fails alone with
    /// [`Error::WorkerDied`](crate::Error::WorkerDied), and the worker goes
    /// on. Costs a local hop per task.
    ///
    /// For a graceful stop, send SIGTERM to the worker process alone (with
    /// systemd, `KillMode=mixed`): a SIGTERM to its whole process group or
    /// cgroup also reaches the task processes, and the tasks they run fail
    /// with `WorkerDied`.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::redis_pool::WorkerOptions;
    ///
    /// let options = WorkerOptions::new().isolate(true);
    /// # let _ = options;
    /// ```
    pub fn isolate(mut self, isolate: bool) -> WorkerOptions {
        self.isolate = isolate;
        self
    }

    /// A per-task timeout (needs [`isolate`](Self::isolate)): a task still
    /// running after `timeout` has its process killed, and its future fails
    /// with [`Error::TaskTimeout`](crate::Error::TaskTimeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::redis_pool::WorkerOptions;
    ///
    /// let options = WorkerOptions::new().isolate(true).timeout(Duration::from_secs(30));
    /// # let _ = options;
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> WorkerOptions {
        self.timeout = Some(timeout);
        self
    }

    /// How often the worker proves it is alive. A task held by a worker
    /// silent for five heartbeats is reclaimed by another worker; every
    /// worker of a queue should use the same heartbeat.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::redis_pool::WorkerOptions;
    ///
    /// // Tasks of a dead worker are reclaimed after 5 x 200 ms.
    /// let options = WorkerOptions::new().heartbeat(Duration::from_millis(200));
    /// # let _ = options;
    /// ```
    pub fn heartbeat(mut self, interval: Duration) -> WorkerOptions {
        self.heartbeat = interval;
        self
    }

    /// How many entries a runner reads at once (its next tasks are held,
    /// still cancellable, while it runs one). More saves round trips for
    /// short tasks; 1 balances long tasks best.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::redis_pool::WorkerOptions;
    ///
    /// let options = WorkerOptions::new().prefetch(32); // many tiny tasks
    /// # let _ = options;
    /// ```
    pub fn prefetch(mut self, entries: usize) -> WorkerOptions {
        self.prefetch = entries;
        self
    }

    /// Reads `key=value&...` options (see [`WORKER_ENV`]).
    fn parse(mut self, query: &str) -> Result<WorkerOptions, String> {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, "1"));
            let number = || {
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad {key}={value}"))
            };
            let seconds = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| format!("bad {key}={value} (seconds)"))
            };
            self = match key {
                "concurrency" => self.concurrency(number()?),
                "prefetch" => self.prefetch(number()?),
                "isolate" => self.isolate(!matches!(value, "0" | "false" | "no")),
                "timeout" => self.timeout(seconds()?),
                "heartbeat" => self.heartbeat(seconds()?),
                _ => return Err(format!("unknown worker option {key:?}")),
            };
        }
        Ok(self)
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |s: &str| Err(Error::InvalidArgument(s.into()));
        if self.concurrency == 0 {
            return invalid("concurrency must be at least 1");
        }
        if self.prefetch == 0 {
            return invalid("prefetch must be at least 1");
        }
        if self.heartbeat < Duration::from_millis(10) {
            return invalid("heartbeat must be at least 10 ms");
        }
        if self.timeout.is_some() && !self.isolate {
            return invalid("a per-task timeout needs isolate: a thread cannot be stopped");
        }
        if self.timeout == Some(Duration::ZERO) {
            return invalid("timeout must not be zero");
        }
        Ok(())
    }
}

/// Called before `main` by the crate's static constructor: makes this
/// process a Redis worker if [`WORKER_ENV`] is set (never returning), and
/// does nothing otherwise.
pub(crate) fn divert() {
    let Some(value) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    // SAFETY: this runs before `main` (from the static constructor), when
    // the program has no other thread that could read the environment.
    unsafe { std::env::remove_var(WORKER_ENV) };
    let started = value
        .to_str()
        .ok_or_else(|| format!("{WORKER_ENV} is not UTF-8"))
        .and_then(layout::parse_target)
        .and_then(|t| Ok((WorkerOptions::new().parse(&t.options)?, t)));
    let code = match started {
        Err(e) => {
            crate::trace::diag!(error, "concurrent_futures Redis worker: {WORKER_ENV}: {e}");
            EXIT_FAILED
        }
        Ok((options, target)) => match serve(&target.url, &target.queue, &options) {
            Ok(()) => 0,
            Err(e) => {
                crate::trace::diag!(
                    error,
                    "concurrent_futures Redis worker {}: {e}",
                    std::process::id()
                );
                EXIT_FAILED
            }
        },
    };
    std::process::exit(code);
}

/// Serves the tasks of `queue` on the Redis server at `url` until SIGTERM
/// (then finishes the tasks running and returns `Ok`). For programs that
/// choose worker mode by a flag of their own rather than [`WORKER_ENV`].
///
/// Fails at once, without serving, if the options are invalid or the
/// server cannot be reached or refuses the credentials
/// ([`Error::Unavailable`]); later losses of the server are retried.
/// Installs a SIGTERM handler.
///
/// # Examples
///
/// ```no_run
/// use concurrent_futures::redis_pool::{self, WorkerOptions};
/// use concurrent_futures::task;
///
/// #[task]
/// fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// fn main() {
///     if std::env::args().any(|a| a == "--worker") {
///         let options = WorkerOptions::new().concurrency(8);
///         redis_pool::serve("redis://10.0.0.5:6379/", "jobs", &options).unwrap();
///         return;
///     }
///     // ... the client's side
/// }
/// ```
pub fn serve(url: &str, queue: &str, options: &WorkerOptions) -> Result<(), Error> {
    options.validate()?;
    let keys = Keys::new(queue);
    let mut first = conn::open(url)?;
    conn::ensure_group(&mut first, &keys.tasks).map_err(|e| conn::unavailable(url, &e))?;
    drop(first);
    crate::panic::install_hook_with_backtraces();
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe; `signal` installs it for this process.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let pool = if options.isolate {
        let mut builder = ProcessPoolExecutor::builder().max_workers(options.concurrency);
        if let Some(timeout) = options.timeout {
            builder = builder.timeout(timeout);
        }
        Some(builder.build()?)
    } else {
        None
    };
    let host = hostname();
    let pid = std::process::id();
    let worker = Arc::new(Worker {
        url: url.to_owned(),
        keys,
        me: WorkerId {
            pid,
            host: Some(host.clone()),
            rank: None,
        },
        consumers: (0..options.concurrency)
            .map(|i| layout::consumer_name(&host, pid, i))
            .collect(),
        held: (0..options.concurrency)
            .map(|_| Mutex::new(Vec::new()))
            .collect(),
        running: (0..options.concurrency).map(|_| Mutex::new(None)).collect(),
        options: options.clone(),
        pool,
        runners_done: AtomicBool::new(false),
    });
    crate::trace::event!(
        info,
        executor = "redis",
        %host,
        pid,
        queue,
        concurrency = options.concurrency,
        isolate = options.isolate,
        "worker started"
    );
    let heartbeat = {
        let worker = Arc::clone(&worker);
        std::thread::Builder::new()
            .name("redis-worker-heartbeat".into())
            .spawn(move || worker.heartbeat())
            .map_err(|e| Error::SpawnFailed(crate::error::Cause::with_source("heartbeat", e)))?
    };
    let runners: Vec<_> = (0..options.concurrency)
        .map(|i| {
            let worker = Arc::clone(&worker);
            std::thread::Builder::new()
                .name(format!("redis-worker-{i}"))
                .spawn(move || worker.run(i))
        })
        .collect();
    for runner in runners {
        match runner {
            Ok(handle) => {
                let _ = handle.join();
            }
            Err(e) => {
                STOP.store(true, Ordering::Release);
                crate::trace::diag!(
                    error,
                    "concurrent_futures Redis worker {pid}: cannot start a runner: {e}"
                );
            }
        }
    }
    worker.runners_done.store(true, Ordering::Release);
    let _ = heartbeat.join();
    if let Some(pool) = &worker.pool {
        pool.shutdown(true, false);
    }
    crate::trace::event!(info, executor = "redis", %host, pid, "worker exited");
    Ok(())
}

extern "C" fn on_sigterm(_: libc::c_int) {
    STOP.store(true, Ordering::Release);
}

fn stopping() -> bool {
    STOP.load(Ordering::Acquire)
}

/// This machine's name.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..len]).replace('/', "_");
    if ok && !name.is_empty() {
        name
    } else {
        "unknown-host".into()
    }
}

struct Worker {
    url: String,
    keys: Keys,
    me: WorkerId,
    /// Each runner's consumer name.
    consumers: Vec<String>,
    /// The entry ids each runner holds (read, not yet answered).
    held: Vec<Mutex<Vec<String>>>,
    /// The state key and TTL (ms) of the job each runner runs: the
    /// heartbeat keeps the key alive while the task runs, however long.
    /// (START set it for the TTL alone: a task that outlived it lost its
    /// deliveries and its started mark, so that an at-most-once task ran
    /// again after its worker died, and a running one could be cancelled.)
    running: Vec<Mutex<Option<(String, u64)>>>,
    options: WorkerOptions,
    pool: Option<ProcessPoolExecutor>,
    runners_done: AtomicBool,
}

/// What a runner decided about an entry.
enum Verdict<'a> {
    /// Answer the client (and acknowledge).
    Reply {
        client: &'a str,
        ttl: u64,
        state: Option<String>,
        reply: Vec<u8>,
    },
    /// Only acknowledge (garbage, or a job cancelled or done).
    Drop,
}

impl Worker {
    fn reclaim_idle(&self) -> Duration {
        self.options.heartbeat * 5
    }

    /// How long (ms) a running job's state key lives from now: its TTL,
    /// and at least the time it takes to reclaim the job's entry after this
    /// worker dies (its deliveries count then).
    fn state_ttl(&self, ttl: u64) -> u64 {
        ttl.max(2 * self.reclaim_idle().as_millis() as u64)
    }

    fn hold(&self, runner: usize) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.held[runner].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets (or clears) the job runner `runner` runs.
    fn set_running(&self, runner: usize, job: Option<(String, u64)>) {
        *self.running[runner]
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = job;
    }

    /// Opens a connection, with backoff while the server is away; `None`
    /// once stopping.
    fn connect(&self, backoff: &mut Duration, said: &mut bool) -> Option<Connection> {
        loop {
            if stopping() {
                return None;
            }
            let opened = conn::open(&self.url).and_then(|mut c| {
                conn::ensure_group(&mut c, &self.keys.tasks)
                    .map(|()| c)
                    .map_err(|e| conn::unavailable(&self.url, &e))
            });
            match opened {
                Ok(c) => {
                    if *said {
                        crate::trace::diag!(
                            info,
                            "concurrent_futures Redis {}: reconnected",
                            self.me
                        );
                        *said = false;
                    }
                    *backoff = Duration::from_millis(10);
                    return Some(c);
                }
                Err(e) => {
                    if !*said {
                        crate::trace::diag!(
                            warn,
                            "concurrent_futures Redis {}: {e}; retrying",
                            self.me
                        );
                        *said = true;
                    }
                    std::thread::sleep(*backoff);
                    *backoff = (*backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// A runner's loop.
    fn run(&self, runner: usize) {
        let consumer = &self.consumers[runner];
        let mut conn: Option<Connection> = None;
        let mut buffer: VecDeque<Entry> = VecDeque::new();
        let mut last_reclaim: Option<Instant> = None;
        let mut backoff = Duration::from_millis(10);
        let mut said = false;
        let mut results = Vec::new();
        loop {
            if conn.is_none() {
                buffer.clear();
                self.hold(runner).clear();
                conn = self.connect(&mut backoff, &mut said);
            }
            let Some(c) = conn.as_mut() else { return };
            if stopping() {
                self.release(c, runner, &mut buffer);
                let _ = redis::cmd("EVAL")
                    .arg(layout::FORGET)
                    .arg(1)
                    .arg(&self.keys.tasks)
                    .arg(layout::GROUP)
                    .arg(consumer)
                    .query::<Value>(c);
                return;
            }
            let Some(entry) = buffer.pop_front() else {
                match self.read(c, consumer, &mut last_reclaim) {
                    Ok(entries) => {
                        self.hold(runner)
                            .extend(entries.iter().map(|e| e.id.clone()));
                        buffer.extend(entries);
                    }
                    Err(e) if is_broken(&e) => conn = None,
                    Err(e) if e.code() == Some("NOGROUP") => {
                        if conn::ensure_group(c, &self.keys.tasks).is_err() {
                            conn = None;
                        }
                    }
                    Err(e) => {
                        crate::trace::diag!(warn, "concurrent_futures Redis {}: {e}", self.me);
                        std::thread::sleep(BLOCK);
                    }
                }
                continue;
            };
            let handled = self.handle(c, runner, &entry, &mut results);
            self.hold(runner).retain(|id| *id != entry.id);
            if let Err(e) = handled {
                // The entry stays pending and unheld: once idle long
                // enough, a runner reclaims it.
                crate::trace::diag!(
                    warn,
                    "concurrent_futures Redis {}: entry {}: {e}",
                    self.me,
                    entry.id
                );
                if is_broken(&e) {
                    conn = None;
                }
            }
        }
    }

    /// Reads the next entries: reclaimed ones of a dead worker (at most
    /// once per heartbeat), else new ones.
    fn read(
        &self,
        c: &mut Connection,
        consumer: &str,
        last_reclaim: &mut Option<Instant>,
    ) -> redis::RedisResult<Vec<Entry>> {
        if last_reclaim.is_none_or(|t| t.elapsed() >= self.options.heartbeat) {
            *last_reclaim = Some(Instant::now());
            let claimed: Value = redis::cmd("XAUTOCLAIM")
                .arg(&self.keys.tasks)
                .arg(layout::GROUP)
                .arg(consumer)
                .arg(self.reclaim_idle().as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(self.options.prefetch)
                .query(c)?;
            let entries = conn::array(&claimed)
                .and_then(|a| a.get(1))
                .map(conn::entries)
                .unwrap_or_default();
            if !entries.is_empty() {
                return Ok(entries);
            }
        }
        let read: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(layout::GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(self.options.prefetch)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.tasks)
            .arg(">")
            .query(c)?;
        Ok(conn::read_entries(&read))
    }

    /// Puts the entries read ahead and not started back on the stream (at
    /// a graceful stop).
    fn release(&self, c: &mut Connection, runner: usize, buffer: &mut VecDeque<Entry>) {
        for entry in buffer.drain(..) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            if !entry.fields.is_empty() {
                let add = pipe.cmd("XADD").arg(&self.keys.tasks).arg("*");
                for (name, value) in &entry.fields {
                    add.arg(name).arg(value.as_slice());
                }
                add.ignore();
            }
            pipe.cmd("XACK")
                .arg(&self.keys.tasks)
                .arg(layout::GROUP)
                .arg(&entry.id)
                .ignore()
                .cmd("XDEL")
                .arg(&self.keys.tasks)
                .arg(&entry.id)
                .ignore();
            if let Err(e) = pipe.query::<()>(c) {
                crate::trace::diag!(
                    warn,
                    "concurrent_futures Redis {}: cannot release {}: {e}",
                    self.me,
                    entry.id
                );
            }
        }
        self.hold(runner).clear();
    }

    /// Validates, starts, runs and answers one entry.
    fn handle(
        &self,
        c: &mut Connection,
        runner: usize,
        entry: &Entry,
        results: &mut Vec<u8>,
    ) -> redis::RedisResult<()> {
        let verdict = self.judge(c, runner, entry, results)?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        match &verdict {
            Verdict::Reply {
                client,
                ttl,
                state,
                reply,
            } => {
                let key = self.keys.results(client);
                pipe.cmd("RPUSH").arg(&key).arg(reply.as_slice()).ignore();
                pipe.cmd("PEXPIRE").arg(&key).arg(*ttl).ignore();
                if let Some(state) = state {
                    // Answered: a copy still held elsewhere finds its
                    // entry gone (see START).
                    pipe.cmd("DEL").arg(state).ignore();
                }
            }
            Verdict::Drop => {}
        }
        pipe.cmd("XACK")
            .arg(&self.keys.tasks)
            .arg(layout::GROUP)
            .arg(&entry.id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.keys.tasks)
            .arg(&entry.id)
            .ignore();
        pipe.query::<()>(c)
    }

    /// What to do with an entry (running its task if it should run).
    fn judge<'e>(
        &self,
        c: &mut Connection,
        runner: usize,
        entry: &'e Entry,
        results: &mut Vec<u8>,
    ) -> redis::RedisResult<Verdict<'e>> {
        let consumer = &self.consumers[runner];
        let client = entry.text(layout::F_CLIENT).filter(|c| is_client_id(c));
        let job = entry
            .text(layout::F_JOB)
            .and_then(|j| j.parse::<u64>().ok());
        let (Some(client), Some(job)) = (client, job) else {
            crate::trace::diag!(
                warn,
                "concurrent_futures Redis {}: dropped entry {} of {}: it names no client and job",
                self.me,
                entry.id,
                self.keys.tasks
            );
            return Ok(Verdict::Drop);
        };
        let ttl = entry
            .text(layout::F_TTL)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(3_600_000)
            .clamp(1_000, 30 * 86_400_000);
        let fail = |error: RemoteError, state: Option<String>| {
            crate::trace::diag!(
                warn,
                "concurrent_futures Redis {}: entry {} (job {job} of client {client}): {error:?}",
                self.me,
                entry.id
            );
            Verdict::Reply {
                client,
                ttl,
                state,
                reply: Reply::Failed { id: job, error }.encode(),
            }
        };
        let version = entry
            .text(layout::F_VERSION)
            .and_then(|v| v.parse::<u32>().ok());
        if version != Some(PROTOCOL_VERSION) {
            return Ok(fail(
                RemoteError::Incompatible(format!(
                    "{} speaks protocol version {PROTOCOL_VERSION}, the task was queued in \
                     {version:?} (another release of concurrent-futures)",
                    self.me
                )),
                None,
            ));
        }
        let build = entry
            .text(layout::F_BUILD)
            .and_then(|b| b.parse::<u64>().ok());
        if build != Some(build_identity()) {
            return Ok(fail(
                RemoteError::Incompatible(format!(
                    "{} runs another build of the program (build identity differs): start \
                     every worker from the same executable as the client",
                    self.me
                )),
                None,
            ));
        }
        let body = entry.field(layout::F_BODY).unwrap_or(&[]);
        let (task, fingerprint, items) = match message::decode::<ToWorkerRef>(body) {
            Ok(ToWorkerRef::Run {
                id,
                task,
                fingerprint,
                items,
                ..
            }) if id == job => (task, fingerprint, items),
            Ok(_) => {
                return Ok(fail(
                    malformed("the body is not this job's Run message"),
                    None,
                ));
            }
            Err(e) => return Ok(fail(malformed(&e.to_string()), None)),
        };
        let max_deliveries = entry
            .text(layout::F_DELIVERIES)
            .and_then(|d| d.parse::<u32>().ok())
            .unwrap_or(1)
            .max(1);
        let state = self.keys.job(client, job);
        let started: Value = redis::cmd("EVAL")
            .arg(layout::START)
            .arg(2)
            .arg(&state)
            .arg(&self.keys.tasks)
            .arg(consumer)
            // Until the first heartbeat refreshes it (see `running`).
            .arg(self.state_ttl(ttl))
            .arg(max_deliveries)
            .arg(&entry.id)
            .query(c)?;
        let (code, workers) = match conn::array(&started) {
            Some([code, workers]) => (conn::int(code), conn::text(workers).unwrap_or("")),
            _ => (None, ""),
        };
        match code {
            Some(1) => {}
            Some(2) => {
                let names: Vec<&str> = workers.split(',').collect();
                let last = names.last().copied().unwrap_or("");
                let error = RemoteError::WorkerDied {
                    worker: layout::worker_of(last),
                    cause: format!(
                        "the task was delivered {} times (its executor's max_deliveries) and \
                         every worker that took it stopped before answering: {}",
                        names.len(),
                        names.join(", ")
                    ),
                };
                return Ok(fail(error, Some(state)));
            }
            // Cancelled, or answered by another worker.
            _ => return Ok(Verdict::Drop),
        }
        self.set_running(runner, Some((state.clone(), ttl)));
        results.clear();
        let reply = match &self.pool {
            Some(pool) if tasks::lookup(task).is_some() => {
                match run_isolated(pool, task, fingerprint, items) {
                    Ok(records) => {
                        *results = records;
                        Reply::Done {
                            id: job,
                            results: serde_bytes::Bytes::new(results),
                        }
                        .encode()
                    }
                    Err(Error::TaskTimeout(after)) => Reply::TimedOut {
                        id: job,
                        after_ms: after.as_millis() as u64,
                    }
                    .encode(),
                    Err(e) => Reply::Failed {
                        id: job,
                        error: RemoteError::from_child(e, &self.me),
                    }
                    .encode(),
                }
            }
            _ => {
                if serve::run(task, fingerprint, items, results) {
                    Reply::Done {
                        id: job,
                        results: serde_bytes::Bytes::new(results),
                    }
                    .encode()
                } else {
                    Reply::Failed {
                        id: job,
                        error: malformed("the items are not well-formed records"),
                    }
                    .encode()
                }
            }
        };
        self.set_running(runner, None);
        let reply = match reply.len() > layout::MAX_VALUE {
            false => reply,
            // Redis would reset the connection, and the task run again.
            true => Reply::Failed {
                id: job,
                error: RemoteError::Serialization {
                    what: "result too large".into(),
                    why: format!(
                        "an answer of {} bytes exceeds Redis's limit of {} bytes for a value \
                         (proto-max-bulk-len)",
                        reply.len(),
                        layout::MAX_VALUE
                    ),
                },
            }
            .encode(),
        };
        Ok(Verdict::Reply {
            client,
            ttl,
            state: Some(state),
            reply,
        })
    }

    /// The heartbeat: the worker's key, and its runners' entries kept
    /// fresh, until the runners are done.
    fn heartbeat(&self) {
        let key = self.keys.worker(&self.consumers[0]);
        let mut conn: Option<Connection> = None;
        let mut beats = 0u64;
        while !self.runners_done.load(Ordering::Acquire) {
            if conn.is_none() {
                conn = conn::open(&self.url).ok();
            }
            if let Some(c) = conn.as_mut() {
                let mut outcome = self.beat(c, &key);
                beats += 1;
                if outcome.is_ok() && beats % SWEEP_EVERY == 0 {
                    outcome = self.sweep(c);
                }
                if let Err(e) = outcome {
                    if is_broken(&e) {
                        conn = None;
                    }
                }
            }
            let next = Instant::now() + self.options.heartbeat;
            while Instant::now() < next && !self.runners_done.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(10).min(self.options.heartbeat));
            }
        }
        if let Some(c) = conn.as_mut() {
            let _ = redis::cmd("DEL").arg(&key).query::<Value>(c);
        }
    }

    /// Removes from the group the consumers of workers that died: the
    /// worker's key has expired (five heartbeats without one), the
    /// consumer has been idle as long, and it holds no entry any more
    /// (live workers reclaimed them). A worker stopped gracefully removes
    /// its own consumers; without this, every killed one stayed in the
    /// group for good. (The script checks again that nothing is held.)
    fn sweep(&self, c: &mut Connection) -> redis::RedisResult<()> {
        let listed: Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&self.keys.tasks)
            .arg(layout::GROUP)
            .query(c)?;
        let idle_enough = self.reclaim_idle().as_millis() as i64;
        for consumer in conn::consumers(&listed) {
            if consumer.pending > 0
                || consumer.idle_ms < idle_enough
                || self.consumers.contains(&consumer.name)
            {
                continue;
            }
            let Some(worker) = layout::worker_of_consumer(&consumer.name) else {
                continue;
            };
            let alive: bool = redis::cmd("EXISTS")
                .arg(self.keys.worker(&worker))
                .query(c)?;
            if !alive {
                redis::cmd("EVAL")
                    .arg(layout::FORGET)
                    .arg(1)
                    .arg(&self.keys.tasks)
                    .arg(layout::GROUP)
                    .arg(&consumer.name)
                    .query::<Value>(c)?;
            }
        }
        Ok(())
    }

    fn beat(&self, c: &mut Connection, key: &str) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(key)
            .arg(self.me.to_string())
            .arg("PX")
            .arg(self.reclaim_idle().as_millis() as u64)
            .ignore();
        for slot in &self.running {
            let job = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some((state, ttl)) = job {
                pipe.cmd("PEXPIRE")
                    .arg(state)
                    .arg(self.state_ttl(ttl))
                    .ignore();
            }
        }
        for (runner, consumer) in self.consumers.iter().enumerate() {
            let held = self.hold(runner).clone();
            if held.is_empty() {
                continue;
            }
            // Claimed again by their own runner: their idle time restarts,
            // so no other worker reclaims them while this one lives.
            pipe.cmd("XCLAIM")
                .arg(&self.keys.tasks)
                .arg(layout::GROUP)
                .arg(consumer)
                .arg(0)
                .arg(&held)
                .arg("JUSTID")
                .ignore();
        }
        pipe.query(c)
    }
}

/// Heartbeats between two sweeps of dead workers' consumers.
const SWEEP_EVERY: u64 = 10;

/// A client id is what [`super::shared::random_id`] makes: 16 hex digits.
fn is_client_id(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn malformed(why: &str) -> RemoteError {
    RemoteError::Serialization {
        what: "malformed task entry".into(),
        why: why.into(),
    }
}

/// The sink of a job run in the local pool: hands its answer back.
struct Forward {
    promise: Promise<()>,
    answer: Option<mpsc::Sender<Result<Vec<u8>, Error>>>,
}

impl Sink for Forward {
    fn control(&self) -> &dyn Control {
        &self.promise
    }
    fn complete(mut self: Box<Self>, outcome: Outcome<'_>) -> DeferredCallbacks {
        if let Some(answer) = self.answer.take() {
            let _ = answer.send(outcome.map(<[u8]>::to_vec));
        }
        let _ = self.promise.set_result(());
        DeferredCallbacks::none()
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            let _ = answer.send(Err(Error::BrokenPool(
                "the worker's process pool dropped the task".into(),
            )));
        }
    }
}

/// Runs a job in the local pool and waits for its outcome records.
fn run_isolated(
    pool: &ProcessPoolExecutor,
    task: &str,
    fingerprint: u64,
    items: &[u8],
) -> Result<Vec<u8>, Error> {
    let name = tasks::lookup(task)
        .map(|e| e.name)
        .ok_or_else(|| Error::UnknownTask(task.to_owned()))?;
    let (tx, rx) = mpsc::channel();
    let (promise, _future) = Promise::new();
    let sink = Forward {
        promise,
        answer: Some(tx),
    };
    let payload = Payload {
        task: TaskRef { name, fingerprint },
        items: items.to_vec(),
    };
    pool.dispatch(payload, Box::new(sink), None)?;
    rx.recv()
        .unwrap_or_else(|_| Err(Error::BrokenPool("the local pool vanished".into())))
}
