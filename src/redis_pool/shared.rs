//! The client side: queueing jobs on the task stream, the result thread
//! that completes their futures, and the gate through which a future's
//! `cancel` reaches Redis.
//!
//! Guarantees:
//! * A job's future completes once: the first reply for its id wins, a
//!   second one (a job run twice after a reclaim) is ignored.
//! * Cancelling a job that has not started wins its state key (see
//!   [`CANCEL`](super::layout::CANCEL)): no worker starts it afterwards.
//!   A job that started cannot be cancelled; its future is then running.
//! * No user code runs on the result thread: done callbacks run on the
//!   executor's callback threads.
//! * Nothing waits forever on the server: if it cannot be reached for the
//!   executor's `server_timeout`, or it comes back without this client's
//!   keys (a restart without persistence), every job in flight fails with
//!   [`Error::Unavailable`] saying so.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use serde_bytes::Bytes;

use super::conn::{self, is_broken};
use super::layout::{self, Keys, Reply};
use crate::Error;
use crate::error::Cause;
use crate::future::Canceller;
use crate::future::state::StartGate;
use crate::process_pool::callbacks::Callbacks;
use crate::remote::client::Dispatch;
use crate::remote::job::{Payload, Sink};
use crate::remote::message::{self, PROTOCOL_VERSION, ToWorkerRef};
use crate::remote::tasks::build_identity;

/// How long the result thread blocks for a reply before it looks around.
const POLL: Duration = Duration::from_millis(100);
/// How often the result thread refreshes the client's key, at most: a
/// quarter of its TTL when that is shorter (the key set with the smallest
/// `result_ttl`, a second, expired between two refreshes a second apart,
/// and healthy tasks failed as lost).
const REFRESH: Duration = Duration::from_secs(1);
/// Replies taken at once after the first.
const BATCH: usize = 512;

/// The settings of an executor.
#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) url: String,
    pub(super) queue: String,
    pub(super) max_deliveries: u32,
    pub(super) result_ttl: Duration,
    pub(super) server_timeout: Duration,
}

impl Config {
    /// The bound on connecting and on each reply: [`conn::IO_TIMEOUT`], or
    /// less with a shorter `server_timeout` (a third of it, at least three
    /// result polls), so that a hung server is given up on in about that
    /// time.
    pub(super) fn io_bound(&self) -> Duration {
        conn::IO_TIMEOUT.min(self.server_timeout / 3).max(POLL * 3)
    }
}

pub(super) struct Shared {
    pub(super) config: Config,
    keys: Keys,
    /// This client's id (random), in its keys and entries.
    pub(super) client: String,
    results_key: String,
    /// Submits and cancels; `None` after it broke (reopened on next use).
    control: Mutex<Option<Connection>>,
    state: Mutex<State>,
    all_done: Condvar,
    next_id: AtomicU64,
    /// Tells the result thread to end once nothing is in flight.
    stopping: AtomicBool,
    pub(super) callbacks: Callbacks,
}

struct State {
    pending: HashMap<u64, Box<dyn Sink>>,
    /// The stream entry of each pending job the server took: how a server
    /// that came back without this client's key tells the jobs it lost
    /// from those sent to it since.
    entries: HashMap<u64, String>,
    shutdown: bool,
}

/// A job's say in its future: cancelling it takes the job's state key.
struct Gate {
    shared: Weak<Shared>,
    id: u64,
}

impl StartGate for Gate {
    fn try_cancel(&self) -> bool {
        self.shared.upgrade().is_some_and(|s| s.cancel_job(self.id))
    }

    fn started(&self) -> bool {
        self.shared
            .upgrade()
            .is_some_and(|s| s.job_started(self.id))
    }
}

impl Dispatch for Arc<Shared> {
    fn executor(&self) -> &'static str {
        "redis"
    }
    fn dispatch(
        &self,
        payload: Payload,
        sink: Box<dyn Sink>,
        _timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut body = Vec::with_capacity(payload.items.len() + 64);
        let run = ToWorkerRef::Run {
            id,
            ticket: 0,
            task: payload.task.name,
            fingerprint: payload.task.fingerprint,
            items: Bytes::new(&payload.items),
        };
        message::append(&run, &mut body)
            .map_err(|e| Error::Serialization(format!("the job failed to encode: {e}").into()))?;
        if body.len() > layout::MAX_VALUE {
            return Err(Error::Serialization(
                format!(
                    "a job of {} bytes exceeds Redis's limit of {} bytes for a value \
                     (proto-max-bulk-len)",
                    body.len(),
                    layout::MAX_VALUE
                )
                .into(),
            ));
        }
        let gate = Gate {
            shared: Arc::downgrade(self),
            id,
        };
        {
            let mut st = self.lock();
            if st.shutdown {
                return Err(Error::ShutDown);
            }
            // Gated before it can be seen: a cancel from now on goes to Redis.
            sink.set_gate(Box::new(gate), None);
            st.pending.insert(id, sink);
        }
        let mut entry = redis::cmd("XADD");
        entry
            .arg(&self.keys.tasks)
            .arg("*")
            .arg(layout::F_VERSION)
            .arg(PROTOCOL_VERSION)
            .arg(layout::F_BUILD)
            .arg(build_identity())
            .arg(layout::F_CLIENT)
            .arg(&self.client)
            .arg(layout::F_JOB)
            .arg(id)
            .arg(layout::F_DELIVERIES)
            .arg(self.config.max_deliveries)
            .arg(layout::F_TTL)
            .arg(self.config.result_ttl.as_millis() as u64)
            .arg(layout::F_BODY)
            .arg(body);
        // Sent again on a broken connection: at worst (the server took the
        // first and the connection broke before its answer) the job is
        // queued twice, runs twice and its future takes the first reply.
        // Not for at-most-once jobs.
        let retry = self.config.max_deliveries > 1;
        match self.control(retry, |c| entry.query::<String>(c)) {
            Ok(entry) => {
                let mut st = self.lock();
                if st.pending.contains_key(&id) {
                    st.entries.insert(id, entry);
                }
                Ok(())
            }
            Err(e) => {
                let sink = self.lock().pending.remove(&id);
                self.finished();
                drop(sink);
                Err(e)
            }
        }
    }
}

impl Shared {
    /// Connects, checks the credentials and the server, and announces the
    /// client (see [`super::RedisBuilder::build`]).
    pub(super) fn connect(config: Config) -> Result<Shared, Error> {
        let mut conn = conn::open_within(&config.url, config.io_bound())?;
        let keys = Keys::new(&config.queue);
        let client = random_id();
        conn::ensure_group(&mut conn, &keys.tasks)
            .map_err(|e| conn::unavailable(&config.url, &e))?;
        redis::cmd("SET")
            .arg(keys.client(&client))
            .arg(1)
            .arg("PX")
            .arg(config.result_ttl.as_millis() as u64)
            .query::<Value>(&mut conn)
            .map_err(|e| conn::unavailable(&config.url, &e))?;
        Ok(Shared {
            results_key: keys.results(&client),
            keys,
            client,
            config,
            control: Mutex::new(Some(conn)),
            state: Mutex::new(State {
                pending: HashMap::new(),
                entries: HashMap::new(),
                shutdown: false,
            }),
            all_done: Condvar::new(),
            next_id: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            callbacks: Callbacks::new("redis-pool-callbacks"),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code that can panic runs under the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `command` on the control connection, reopening it if it broke
    /// (a server that restarted since its last use). With `retry`, a
    /// command that failed on a broken connection is sent once more on a
    /// new one: only for commands that may run twice.
    fn control<T>(
        &self,
        retry: bool,
        mut command: impl FnMut(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, Error> {
        let mut slot = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let mut attempts = if retry { 2 } else { 1 };
        loop {
            attempts -= 1;
            if slot.is_none() {
                *slot = Some(conn::open_within(&self.config.url, self.config.io_bound())?);
            }
            let conn = slot.as_mut().expect("opened just above");
            match command(conn) {
                Ok(value) => return Ok(value),
                Err(e) if is_broken(&e) => {
                    *slot = None;
                    if attempts == 0 {
                        return Err(conn::unavailable(&self.config.url, &e));
                    }
                }
                Err(e) => return Err(conn::unavailable(&self.config.url, &e)),
            }
        }
    }

    /// One job fewer in flight.
    fn finished(&self) {
        let st = self.lock();
        if st.pending.is_empty() {
            self.all_done.notify_all();
        }
    }

    /// The cancel of a job's future: wins its state key, or finds it
    /// started (or the server unreachable: then it may run, so it is not
    /// cancelled).
    fn cancel_job(&self, id: u64) -> bool {
        let skipped = Reply::Skipped { id }.encode();
        let ttl = self.config.result_ttl.as_millis() as u64;
        let won = self.control(true, |c| {
            redis::cmd("EVAL")
                .arg(layout::CANCEL)
                .arg(2)
                .arg(self.keys.job(&self.client, id))
                .arg(&self.results_key)
                .arg(ttl)
                .arg(&skipped)
                .query::<i64>(c)
        });
        matches!(won, Ok(1))
    }

    /// Whether a worker has started job `id`.
    fn job_started(&self, id: u64) -> bool {
        let state = self.control(true, |c| {
            redis::cmd("GET")
                .arg(self.keys.job(&self.client, id))
                .query::<Option<String>>(c)
        });
        matches!(state, Ok(Some(s)) if s != "cancelled")
    }

    /// Stops accepting jobs; cancels the pending ones if asked; waits for
    /// every job and callback if asked.
    pub(super) fn shutdown(&self, wait: bool, cancel_futures: bool) {
        let cancellers: Vec<Canceller> = {
            let mut st = self.lock();
            st.shutdown = true;
            if cancel_futures {
                st.pending.values().map(|s| s.canceller()).collect()
            } else {
                Vec::new()
            }
        };
        for canceller in cancellers {
            // Callbacks of a cancel run in the cancelling thread; the job
            // leaves `pending` when its `Skipped` reply arrives.
            canceller.cancel();
        }
        if wait {
            let mut st = self.lock();
            while !st.pending.is_empty() {
                st = self.all_done.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            drop(st);
            self.callbacks.join();
        }
    }

    /// Asks the result thread to end once nothing is in flight.
    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Completes job `id` with `outcome` (on the result thread).
    fn settle(&self, id: u64, complete: impl FnOnce(Box<dyn Sink>)) {
        let sink = {
            let mut st = self.lock();
            st.entries.remove(&id);
            st.pending.remove(&id)
        };
        if let Some(sink) = sink {
            complete(sink);
            self.finished();
        }
    }

    /// Fails every job in flight (the server lost them, or is gone).
    fn fail_all(&self, error: Error) {
        let sinks: Vec<Box<dyn Sink>> = {
            let mut st = self.lock();
            st.entries.clear();
            st.pending.drain().map(|(_, s)| s).collect()
        };
        for sink in sinks {
            self.callbacks.run(sink.fail(error.clone()));
        }
        self.finished();
    }

    /// The server came back without this client's key: it lost what it
    /// held. Fails the jobs it does not know (neither their entry nor their
    /// state is there), after taking the answers given before the check;
    /// jobs sent to it since it came back go on. (Failing every job in
    /// flight failed as lost a job that the new server then ran.)
    fn fail_lost(&self, c: &mut Connection) -> redis::RedisResult<()> {
        let jobs: Vec<(u64, String)> = {
            let st = self.lock();
            // A job with no entry yet is being sent: its XADD's reply
            // says where it went.
            st.entries.iter().map(|(id, e)| (*id, e.clone())).collect()
        };
        let mut pipe = redis::pipe();
        for (id, entry) in &jobs {
            pipe.cmd("EXISTS").arg(self.keys.job(&self.client, *id));
            pipe.cmd("XRANGE")
                .arg(&self.keys.tasks)
                .arg(entry)
                .arg(entry);
        }
        let found: Vec<Value> = if jobs.is_empty() {
            Vec::new()
        } else {
            pipe.query(c)?
        };
        let unknown: Vec<u64> = jobs
            .iter()
            .zip(found.chunks(2))
            .filter(|(_, f)| {
                let state = matches!(f[0], Value::Int(n) if n > 0);
                let entry = conn::array(&f[1]).is_some_and(|a| !a.is_empty());
                !state && !entry
            })
            .map(|((id, _), _)| *id)
            .collect();
        // A job answered before the check has its reply waiting.
        loop {
            let rest = redis::cmd("LPOP")
                .arg(&self.results_key)
                .arg(BATCH)
                .query::<Value>(c)?;
            let replies = conn::array(&rest).unwrap_or(&[]);
            if replies.is_empty() {
                break;
            }
            for reply in replies {
                if let Some(bytes) = conn::bytes(reply) {
                    self.handle(bytes);
                }
            }
        }
        let lost = Error::Unavailable(Cause::new(
            "the Redis server lost this executor's tasks (it restarted without persistence, \
             or its keys were evicted); this task was unknown to it"
                .to_string(),
        ));
        for id in unknown {
            self.settle(id, |sink| self.callbacks.run(sink.fail(lost.clone())));
        }
        Ok(())
    }

    fn handle(&self, bytes: &[u8]) {
        match Reply::decode(bytes) {
            Ok(Reply::Done { id, results }) => {
                self.settle(id, |sink| self.callbacks.run(sink.complete(Ok(results))));
            }
            Ok(Reply::Skipped { id }) => self.settle(id, |sink| {
                // Cancelled by its gate already; were it not, say so.
                if sink.is_pending() {
                    self.callbacks.run(sink.fail(Error::Cancelled));
                }
            }),
            Ok(Reply::Failed { id, error }) => {
                let error = Error::from(error);
                #[cfg(feature = "tracing")]
                if let Error::WorkerDied { worker, cause } = &error {
                    crate::trace::event!(warn, executor = "redis", job = id, %worker, cause, "worker died");
                }
                self.settle(id, |sink| self.callbacks.run(sink.fail(error)));
            }
            Ok(Reply::TimedOut { id, after_ms }) => self.settle(id, |sink| {
                crate::trace::event!(
                    warn,
                    executor = "redis",
                    job = id,
                    after_ms,
                    "task timed out"
                );
                let error = Error::TaskTimeout(Duration::from_millis(after_ms));
                self.callbacks.run(sink.fail(error));
            }),
            Err(why) => crate::trace::diag!(
                warn,
                "concurrent_futures Redis client {}: {why}",
                self.client
            ),
        }
    }
}

/// The result thread: reads this client's replies until the executor is
/// dropped with nothing in flight.
pub(super) fn result_thread(shared: Arc<Shared>) {
    let mut conn: Option<Connection> = None;
    let mut down_since: Option<Instant> = None;
    let mut refreshed = Instant::now();
    let refresh = REFRESH.min(shared.config.result_ttl / 4);
    let mut backoff = Duration::from_millis(10);
    loop {
        if shared.stopping.load(Ordering::Acquire) && shared.lock().pending.is_empty() {
            return;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match conn::open_within(&shared.config.url, shared.config.io_bound()) {
                Ok(c) => {
                    backoff = Duration::from_millis(10);
                    conn.insert(c)
                }
                Err(e) => {
                    let since = *down_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= shared.config.server_timeout {
                        shared.fail_all(Error::Unavailable(Cause::new(format!(
                            "lost the Redis server for {:?}: {e}",
                            shared.config.server_timeout
                        ))));
                        down_since = Some(Instant::now());
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    continue;
                }
            },
        };
        if down_since.is_some() || refreshed.elapsed() >= refresh {
            // Still there, with our keys? A server that restarted without
            // persistence forgot every job in flight.
            let kept = redis::cmd("SET")
                .arg(shared.keys.client(&shared.client))
                .arg(1)
                .arg("PX")
                .arg(shared.config.result_ttl.as_millis() as u64)
                .arg("XX")
                .query::<Value>(c);
            match kept {
                Ok(Value::Nil) => {
                    // Checked before the key is set again: if the check
                    // breaks off, the next pass finds the key missing still.
                    if shared.fail_lost(c).is_err() {
                        conn = None;
                        down_since.get_or_insert_with(Instant::now);
                        continue;
                    }
                    let _ = redis::cmd("SET")
                        .arg(shared.keys.client(&shared.client))
                        .arg(1)
                        .arg("PX")
                        .arg(shared.config.result_ttl.as_millis() as u64)
                        .query::<Value>(c);
                    let _ = conn::ensure_group(c, &shared.keys.tasks);
                }
                Ok(_) => {}
                Err(_) => {
                    conn = None;
                    down_since.get_or_insert_with(Instant::now);
                    continue;
                }
            }
            refreshed = Instant::now();
            down_since = None;
        }
        let popped = redis::cmd("BLPOP")
            .arg(&shared.results_key)
            .arg(POLL.as_secs_f64())
            .query::<Value>(c);
        let first = match popped {
            Ok(v) => v,
            Err(e) => {
                if is_broken(&e) {
                    conn = None;
                    down_since.get_or_insert_with(Instant::now);
                }
                continue;
            }
        };
        let Some([_, reply]) = conn::array(&first).and_then(|a| <&[Value; 2]>::try_from(a).ok())
        else {
            continue;
        };
        if let Some(bytes) = conn::bytes(reply) {
            shared.handle(bytes);
        }
        let rest = redis::cmd("LPOP")
            .arg(&shared.results_key)
            .arg(BATCH)
            .query::<Value>(c);
        if let Ok(rest) = rest {
            for reply in conn::array(&rest).unwrap_or(&[]) {
                if let Some(bytes) = conn::bytes(reply) {
                    shared.handle(bytes);
                }
            }
        }
    }
}

/// A random id for a client: 64 bits from the standard library's
/// randomly seeded hasher, the clock and the process id.
pub(super) fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    format!("{:016x}", h.finish())
}
