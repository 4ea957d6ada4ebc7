//! `RedisExecutor` against real `redis-server`s (feature `redis`; needs
//! `redis-server` on the PATH).
//!
//! This test binary is its own worker program (`harness = false`): each
//! scenario starts a `redis-server` child on a free port of 127.0.0.1
//! (`--save '' --appendonly no`), and workers as children of this binary
//! with `CONCURRENT_FUTURES_REDIS=redis://127.0.0.1:PORT/QUEUE?...`, which
//! the crate's static constructor turns into workers before `main`. Every
//! child is killed when its scenario ends (also by a panic), every wait is
//! bounded, and a watchdog fails the run (killing every child) if it takes
//! longer than [`LIMIT`]. Coordination with tasks goes through Redis
//! itself (a task pushes its pid on a list when it starts; the test pops
//! it with a bounded blocking pop): no sleeps.
//!
//! Scenarios and what they cover (`cargo test --features redis --test
//! redis -- NAME` runs some):
//! * `basic`: results of `submit`, `submit_with`, `submit_fallible` (value,
//!   and the task's own error, downcast), a panic's message, `map` (items
//!   and chunks) in order, `map_unordered`, futures mixed with a thread
//!   pool's in `wait` and `as_completed`, `.await`, `shutdown` then
//!   `ShutDown`; answered entries are deleted (the stream is empty).
//! * `kill9`: a worker is killed (`kill -9`) in the middle of a task:
//!   another worker reclaims and completes it, and the future gets exactly
//!   one result (the other worker's); with `at_most_once`, the same loss
//!   fails the future with `WorkerDied` naming the dead worker, and the
//!   task never runs again.
//! * `timeout`: with isolation, a task that hangs past the worker's
//!   timeout fails with `TaskTimeout`, a task that aborts fails with
//!   `WorkerDied`, and the worker goes on with the next tasks.
//! * `restart`: the Redis server is killed and restarted (empty) during a
//!   run: every future completes, with its result or `Unavailable` saying
//!   the server lost the tasks; the workers reconnect and later tasks work.
//! * `many`: 10,000 tasks across 3 workers: every result right, every task
//!   run exactly once (a hash counts runs per task), nothing left in Redis
//!   (no entry, no job state).
//! * `garbage`: malformed entries (no client, a bad body, another build,
//!   another protocol version) are dropped or answered with an error; the
//!   worker survives and serves the next task.
//! * `auth`: a wrong password is a clear `Unavailable` error without the
//!   password; `requirepass` and an ACL user in the URL work for clients
//!   and workers.
//! * `cancel`: a queued task cancelled before any worker runs never runs
//!   (and its entry is removed); `shutdown(cancel_futures)` cancels the
//!   queue.
//! * `sigterm`: SIGTERM stops a worker after its running task, which is
//!   answered; it takes nothing new and exits 0.

use std::error::Error as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use concurrent_futures::{
    Error, MapOptions, RedisExecutor, ReturnWhen, ThreadPoolExecutor, Waitable, as_completed, task,
    wait,
};
use redis::Commands;
use serde::{Deserialize, Serialize};

/// The longest the whole run may take.
const LIMIT: Duration = Duration::from_secs(300);
/// The longest any one result may take.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- tasks

#[task]
fn square(n: u64) -> u64 {
    n * n
}

#[task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[derive(Debug, Serialize, Deserialize)]
struct ParseFailure(String);

impl std::fmt::Display for ParseFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot parse {:?}", self.0)
    }
}

impl std::error::Error for ParseFailure {}

#[task]
fn parse(text: String) -> Result<i64, ParseFailure> {
    text.parse().map_err(|_| ParseFailure(text))
}

#[task]
fn boom(message: String) -> u32 {
    panic!("{message}")
}

thread_local! {
    static CONN: std::cell::RefCell<Option<redis::Connection>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` on this thread's connection to `url` (opened once).
fn with_redis<T>(url: &str, f: impl FnOnce(&mut redis::Connection) -> T) -> T {
    CONN.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(redis::Client::open(url).unwrap().get_connection().unwrap());
        }
        f(c.as_mut().unwrap())
    })
}

/// Says that it started (its pid on `list`), then works `ms`
/// milliseconds; returns its pid.
#[task]
fn announce_then_work(url: String, list: String, ms: u64) -> u32 {
    with_redis(&url, |c| {
        let _: () = c.rpush(&list, std::process::id()).unwrap();
    });
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(ms) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::process::id()
}

/// Counts its run of item `i` in the hash `runs`; returns `i * i`.
#[task]
fn counted(url: String, runs: String, i: u64) -> u64 {
    with_redis(&url, |c| {
        let _: () = c.hincr(&runs, i, 1).unwrap();
    });
    i * i
}

/// Sets `key` (a task that must never run).
#[task]
fn mark(url: String, key: String) {
    with_redis(&url, |c| {
        let _: () = c.set(&key, 1).unwrap();
    });
}

#[task]
fn text_of(n: usize) -> String {
    "x".repeat(n)
}

#[task]
fn length(text: String) -> usize {
    text.len()
}

#[task]
fn hang() {
    loop {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[task]
fn abort_now() {
    std::process::abort()
}

// ---------------------------------------------------------------- harness

/// Every child process alive, for the watchdog.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn kill_pid(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// A child killed (SIGKILL) and reaped when dropped.
struct Guard(Child);

impl Guard {
    fn spawn(command: &mut Command) -> Guard {
        let child = command.spawn().expect("cannot start a child process");
        CHILDREN.lock().unwrap().push(child.id());
        Guard(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits (bounded) for the child to exit; its status code.
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        CHILDREN.lock().unwrap().retain(|&p| p != self.0.id());
    }
}

/// A `redis-server` of our own.
struct Server {
    port: u16,
    password: Option<String>,
    child: Option<Guard>,
}

impl Server {
    fn start() -> Server {
        Server::start_with(None)
    }

    fn start_with(password: Option<&str>) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Server {
            port,
            password: password.map(str::to_owned),
            child: None,
        };
        server.restart();
        server
    }

    /// (Re)starts the server on its port, empty, and waits until it answers.
    fn restart(&mut self) {
        self.child = None;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null());
        if let Some(pw) = &self.password {
            command.args(["--requirepass", pw]);
        }
        self.child = Some(Guard::spawn(&mut command));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ping = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        self.child = None;
    }

    fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    fn conn(&self) -> redis::Connection {
        let c = redis::Client::open(self.url()).unwrap();
        let conn = c
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap();
        conn.set_read_timeout(Some(WAIT)).unwrap();
        conn
    }

    fn executor(&self, queue: &str) -> RedisExecutor {
        RedisExecutor::builder()
            .url(self.url())
            .queue(queue)
            .build()
            .unwrap()
    }

    /// A worker on `queue` with `options` (a query string).
    fn worker(&self, queue: &str, options: &str) -> Guard {
        worker_at(&format!("{}{queue}?{options}", self.url()))
    }
}

fn worker_at(target: &str) -> Guard {
    Guard::spawn(
        Command::new(me())
            .env("CONCURRENT_FUTURES_REDIS", target)
            .stdout(Stdio::null()),
    )
}

fn me() -> PathBuf {
    std::env::current_exe().unwrap()
}

/// Pops the next pid a task announced on `list` (bounded).
fn started(conn: &mut redis::Connection, list: &str) -> u32 {
    let popped: Option<(String, u32)> = redis::cmd("BLPOP")
        .arg(list)
        .arg(WAIT.as_secs())
        .query(conn)
        .unwrap();
    popped.expect("no task started in time").1
}

/// Waits (bounded) until the queue's stream is empty and nothing is
/// pending: every entry answered was deleted.
fn assert_drained(conn: &mut redis::Connection, queue: &str) {
    let stream = format!("cf:{queue}:tasks");
    let deadline = Instant::now() + WAIT;
    loop {
        let len: u64 = redis::cmd("XLEN").arg(&stream).query(conn).unwrap();
        if len == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{len} entries left in {stream}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The names of the consumers in the queue's group.
fn consumer_names(conn: &mut redis::Connection, queue: &str) -> Vec<String> {
    let listed: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(format!("cf:{queue}:tasks"))
        .arg("workers")
        .query(conn)
        .unwrap();
    listed
        .iter()
        .filter_map(|fields| {
            let at = fields
                .iter()
                .position(|f| matches!(f, redis::Value::BulkString(b) if b == b"name"))?;
            match fields.get(at + 1)? {
                redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            }
        })
        .collect()
}

// ---------------------------------------------------------------- scenarios

fn basic() {
    let server = Server::start();
    let _w1 = server.worker("basic", "concurrency=2&heartbeat=0.1");
    let _w2 = server.worker("basic", "concurrency=2&heartbeat=0.1");
    let pool = server.executor("basic");
    assert_eq!(pool.queue(), "basic");
    assert_eq!(
        pool.submit(square, 7).unwrap().result_timeout(WAIT),
        Ok(&49)
    );
    assert_eq!(
        pool.submit_with(add, (40, 2)).unwrap().result_timeout(WAIT),
        Ok(&42)
    );
    let parsed = pool.submit_fallible(parse, "12".to_string()).unwrap();
    assert_eq!(parsed.result_timeout(WAIT), Ok(&12));
    let failed = pool.submit_fallible(parse, "x".to_string()).unwrap();
    match failed.result_timeout(WAIT) {
        Err(Error::Failed(e)) => {
            assert_eq!(e.downcast_ref::<ParseFailure>().unwrap().0, "x");
            assert!(e.source().is_some() || e.to_string().contains("cannot parse"));
        }
        other => panic!("{other:?}"),
    }
    match pool
        .submit(boom, "bad input".into())
        .unwrap()
        .result_timeout(WAIT)
    {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "bad input"),
        other => panic!("{other:?}"),
    }
    let squares: Vec<u64> = pool
        .map(square, 0..20u64)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(squares, (0..20u64).map(|n| n * n).collect::<Vec<_>>());
    let options = MapOptions::new().chunksize(16).timeout(WAIT);
    let chunked: Vec<u64> = pool
        .map_with(square, 0..1000u64, options)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(chunked[999], 999 * 999);
    let mut cubes = [0u64; 10];
    for (i, r) in pool.map_unordered(square, 0..10u64).unwrap() {
        cubes[i] = r.unwrap();
    }
    assert_eq!(cubes[9], 81);

    // Mixed with a thread pool's futures.
    let threads = ThreadPoolExecutor::new(2).unwrap();
    let remote = pool.submit(square, 3).unwrap();
    let local = threads.submit(|| 9u64).unwrap();
    let waitables: [&dyn Waitable; 2] = [&remote, &local];
    let done = wait(waitables, Some(WAIT), ReturnWhen::AllCompleted);
    assert_eq!(done.done.len(), 2);
    let futures = vec![
        pool.submit(square, 4).unwrap(),
        pool.submit(square, 5).unwrap(),
    ];
    let mut got: Vec<u64> = as_completed(&futures, Some(WAIT))
        .map(|f| *f.unwrap().result().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, [16, 25]);
    let awaited = pool.submit(square, 6).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let value = rt.block_on(async {
        tokio::time::timeout(WAIT, awaited)
            .await
            .expect("await timed out")
    });
    assert_eq!(value, Ok(36));

    pool.shutdown(true, false);
    assert!(matches!(pool.submit(square, 1), Err(Error::ShutDown)));
    assert_drained(&mut server.conn(), "basic");
}

fn kill9() {
    let server = Server::start();
    let mut conn = server.conn();
    let url = server.url();
    let a = server.worker("kill9", "concurrency=1&heartbeat=0.1");
    let b = server.worker("kill9", "concurrency=1&heartbeat=0.1");
    let pool = server.executor("kill9");
    let job = pool
        .submit(
            announce_then_work,
            (url.clone(), "started".to_string(), 1000),
        )
        .unwrap();
    let first = started(&mut conn, "started");
    let (victim, survivor) = if first == a.pid() { (a, b) } else { (b, a) };
    assert_eq!(first, victim.pid());
    let victim_pid = victim.pid();
    kill_pid(victim.pid(), "KILL");
    drop(victim);
    // Reclaimed after five heartbeats by the survivor, which runs it again.
    assert_eq!(started(&mut conn, "started"), survivor.pid());
    assert_eq!(job.result_timeout(WAIT), Ok(&survivor.pid()));
    // Exactly one result: the reply list is empty and nothing else came.
    assert_drained(&mut conn, "kill9");
    // The dead worker's consumer leaves the group (swept by the survivor
    // once the dead one's key expired and nothing is held), the live
    // one's stays.
    let dead = victim_pid;
    let deadline = Instant::now() + WAIT;
    loop {
        let names = consumer_names(&mut conn, "kill9");
        assert!(
            names
                .iter()
                .any(|n| n.contains(&format!("/{}/", survivor.pid()))),
            "{names:?}"
        );
        if !names.iter().any(|n| n.contains(&format!("/{dead}/"))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a dead worker's consumer stayed: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(pool);

    // At most once: the loss fails the future, naming the dead worker.
    let once = RedisExecutor::builder()
        .url(&url)
        .queue("kill9")
        .at_most_once()
        .build()
        .unwrap();
    let victim = survivor;
    let job = once
        .submit(
            announce_then_work,
            (url.clone(), "started".to_string(), 1000),
        )
        .unwrap();
    assert_eq!(started(&mut conn, "started"), victim.pid());
    let _c = server.worker("kill9", "concurrency=1&heartbeat=0.1");
    kill_pid(victim.pid(), "KILL");
    match job.result_timeout(WAIT) {
        Err(Error::WorkerDied { worker, cause }) => {
            assert_eq!(worker.pid, victim.pid(), "{cause}");
            assert!(cause.contains("max_deliveries"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
    // It never ran again.
    let again: u64 = conn.llen("started").unwrap();
    assert_eq!(again, 0);
    assert_drained(&mut conn, "kill9");
}

fn timeout() {
    let server = Server::start();
    let _w = server.worker(
        "timeout",
        "concurrency=2&isolate=1&timeout=0.5&heartbeat=0.1",
    );
    let pool = server.executor("timeout");
    let stuck = pool.submit(hang, ()).unwrap();
    let crash = pool.submit(abort_now, ()).unwrap();
    match stuck.result_timeout(WAIT) {
        Err(Error::TaskTimeout(after)) => assert_eq!(after, Duration::from_millis(500)),
        other => panic!("{other:?}"),
    }
    match crash.result_timeout(WAIT) {
        Err(Error::WorkerDied { worker, cause }) => {
            assert!(worker.host.is_some(), "{worker}");
            assert!(cause.contains("child"), "{cause}");
        }
        other => panic!("{other:?}"),
    }
    // The worker goes on; panics are still caught in the child.
    assert_eq!(
        pool.submit(square, 8).unwrap().result_timeout(WAIT),
        Ok(&64)
    );
    assert!(matches!(
        pool.submit(boom, "in a child".into()).unwrap().result_timeout(WAIT),
        Err(Error::Panicked { message, .. }) if message == "in a child"
    ));
    assert_drained(&mut server.conn(), "timeout");
}

fn restart() {
    let mut server = Server::start();
    let url = server.url();
    let _w1 = server.worker("restart", "concurrency=2&heartbeat=0.1");
    let _w2 = server.worker("restart", "concurrency=2&heartbeat=0.1");
    let pool = RedisExecutor::builder()
        .url(&url)
        .queue("restart")
        .server_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut conn = server.conn();
    let jobs: Vec<_> = (0..20)
        .map(|_| {
            pool.submit(
                announce_then_work,
                (url.clone(), "started".to_string(), 300),
            )
            .unwrap()
        })
        .collect();
    started(&mut conn, "started");
    drop(conn);
    server.kill();
    // Away long enough that the result thread backs off, so that a submit
    // reaches the new server before that thread finds the loss.
    std::thread::sleep(Duration::from_millis(1_500));
    server.restart();
    let after = pool.submit(square, 12).unwrap();
    let start = Instant::now();
    let (mut ok, mut lost) = (0, 0);
    for job in &jobs {
        match job.result_timeout(WAIT) {
            Ok(_) => ok += 1,
            Err(Error::Unavailable(why)) => {
                assert!(why.contains("lost"), "{why}");
                lost += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ok + lost, 20);
    assert!(lost > 0, "the restart lost nothing?");
    assert!(start.elapsed() < WAIT);
    // Sent to the new server: it runs, and is not failed as lost.
    assert_eq!(after.result_timeout(WAIT), Ok(&144));
    // Workers and client carry on with the new server.
    assert_eq!(
        pool.submit(square, 9).unwrap().result_timeout(WAIT),
        Ok(&81)
    );
}

fn many() {
    let server = Server::start();
    let url = server.url();
    let _workers: Vec<Guard> = (0..3)
        .map(|_| server.worker("many", "concurrency=4&prefetch=8"))
        .collect();
    let pool = server.executor("many");
    let start = Instant::now();
    let futures: Vec<_> = (0..10_000u64)
        .map(|i| {
            pool.submit(counted, (url.clone(), "runs".to_string(), i))
                .unwrap()
        })
        .collect();
    for (i, f) in futures.iter().enumerate() {
        assert_eq!(f.result_timeout(WAIT), Ok(&(i as u64 * i as u64)));
    }
    let elapsed = start.elapsed();
    let mut conn = server.conn();
    let runs: std::collections::HashMap<u64, u64> = conn.hgetall("runs").unwrap();
    assert_eq!(runs.len(), 10_000);
    assert!(runs.values().all(|&n| n == 1), "a task ran twice");
    assert_drained(&mut conn, "many");
    // Answered jobs keep no state key.
    let states: Vec<String> = conn.keys("cf:many:job:*").unwrap();
    assert!(states.is_empty(), "{} job states left", states.len());
    println!(
        "    10,000 tasks over 3 workers: {:.0} tasks/s",
        10_000.0 / elapsed.as_secs_f64()
    );
}

fn garbage() {
    let server = Server::start();
    let mut conn = server.conn();
    let _w = server.worker("garbage", "concurrency=1");
    let pool = server.executor("garbage");
    let stream = "cf:garbage:tasks";
    let client = "00000000deadbeef";
    let push = |conn: &mut redis::Connection, fields: &[(&str, &[u8])]| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        let _: String = cmd.query(conn).unwrap();
    };
    let c = client.as_bytes();
    push(&mut conn, &[("hello", b"world".as_slice())]);
    push(&mut conn, &[("c", b"not a client".as_slice()), ("j", b"1")]);
    let bad_body: &[(&str, &[u8])] = &[
        ("v", b"4"),
        ("b", b"1"),
        ("c", c),
        ("j", b"1"),
        ("m", b"\xff\x00"),
    ];
    push(&mut conn, bad_body);
    let bad_version: &[(&str, &[u8])] = &[
        ("v", b"999"),
        ("b", b"1"),
        ("c", c),
        ("j", b"2"),
        ("m", b""),
    ];
    push(&mut conn, bad_version);
    let no_version: &[(&str, &[u8])] = &[("c", c), ("j", b"3"), ("m", &[0xff; 64])];
    push(&mut conn, no_version);
    // The worker survives and serves the next real task.
    assert_eq!(
        pool.submit(square, 11).unwrap().result_timeout(WAIT),
        Ok(&121)
    );
    // The three entries that name a client were answered with an error.
    let replies: u64 = conn.llen(format!("cf:garbage:results:{client}")).unwrap();
    assert_eq!(replies, 3);
    // Nobody reads them: they expire (the client's result TTL, here the
    // default of an hour, as the entries named none).
    let ttl: i64 = conn.pttl(format!("cf:garbage:results:{client}")).unwrap();
    assert!(ttl > 0 && ttl <= 3_600_000, "{ttl}");
    assert_drained(&mut conn, "garbage");
}

fn auth() {
    let server = Server::start_with(Some("s3cret"));
    let wrong = format!("redis://:wrong@127.0.0.1:{}/", server.port);
    match RedisExecutor::builder().url(&wrong).build() {
        Err(e @ Error::Unavailable(_)) => {
            let text = e.to_string();
            assert!(text.contains("refused the credentials"), "{text}");
            assert!(!text.contains("wrong@"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    let none = format!("redis://127.0.0.1:{}/", server.port);
    assert!(matches!(
        RedisExecutor::builder().url(&none).build(),
        Err(Error::Unavailable(_))
    ));
    // A worker with the wrong password exits with a clear message.
    let mut bad = worker_at(&format!("{wrong}auth"));
    assert_eq!(bad.wait_exit(WAIT), Some(2));

    let _w = server.worker("auth", "concurrency=1");
    let pool = server.executor("auth");
    assert_eq!(
        pool.submit(square, 12).unwrap().result_timeout(WAIT),
        Ok(&144)
    );

    // An ACL user.
    let mut conn = server.conn();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "tasks", "on", ">pw2", "~cf:*", "+@all"][..])
        .query(&mut conn)
        .unwrap();
    let acl = format!("redis://tasks:pw2@127.0.0.1:{}/", server.port);
    let _w2 = worker_at(&format!("{acl}acl?concurrency=1"));
    let pool = RedisExecutor::builder()
        .url(&acl)
        .queue("acl")
        .build()
        .unwrap();
    assert_eq!(
        pool.submit(square, 13).unwrap().result_timeout(WAIT),
        Ok(&169)
    );
}

fn cancel() {
    let server = Server::start();
    let url = server.url();
    let mut conn = server.conn();
    let pool = server.executor("cancel");
    // No worker yet: the task waits in the stream, and is cancelled there.
    let doomed = pool.submit(mark, (url.clone(), "ran".to_string())).unwrap();
    assert!(!doomed.running());
    assert!(doomed.cancel());
    assert!(doomed.cancelled());
    let after = pool.submit(square, 2).unwrap();
    let _w = server.worker("cancel", "concurrency=1");
    assert_eq!(after.result_timeout(WAIT), Ok(&4));
    assert!(matches!(doomed.result_timeout(WAIT), Err(Error::Cancelled)));
    let ran: Option<u32> = conn.get("ran").unwrap();
    assert_eq!(ran, None, "a cancelled task ran");
    assert_drained(&mut conn, "cancel");

    // A started task cannot be cancelled.
    let busy = pool
        .submit(
            announce_then_work,
            (url.clone(), "started".to_string(), 300),
        )
        .unwrap();
    started(&mut conn, "started");
    assert!(!busy.cancel());
    assert!(busy.running());
    assert!(busy.result_timeout(WAIT).is_ok());

    // shutdown(cancel_futures) cancels what no worker started.
    let blocker = pool
        .submit(
            announce_then_work,
            (url.clone(), "started".to_string(), 300),
        )
        .unwrap();
    started(&mut conn, "started");
    let queued: Vec<_> = (0..5)
        .map(|_| pool.submit(mark, (url.clone(), "ran".to_string())).unwrap())
        .collect();
    pool.shutdown(true, true);
    assert!(blocker.result_timeout(WAIT).is_ok());
    assert!(queued.iter().all(|f| f.cancelled()));
    let ran: Option<u32> = conn.get("ran").unwrap();
    assert_eq!(ran, None, "a cancelled task ran");
    assert_drained(&mut conn, "cancel");
}

/// A task that outlives its executor's `result_ttl` (here the smallest, a
/// second) keeps its job state, which the worker's heartbeat refreshes: it
/// stays running and uncancellable, its executor does not take it for
/// lost, and an at-most-once task whose worker is killed then fails rather
/// than running again. (Before: it failed as "lost" after a second; with a
/// longer TTL, it could be cancelled while running and ran twice.)
fn outlive() {
    let server = Server::start();
    let url = server.url();
    let mut conn = server.conn();
    let _a = server.worker("outlive", "concurrency=1&heartbeat=0.1");
    let pool = RedisExecutor::builder()
        .url(&url)
        .queue("outlive")
        .at_most_once()
        .result_ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    // Sleeps below are the point: the TTL must run out while tasks run.
    let long = pool
        .submit(
            announce_then_work,
            (url.clone(), "started".to_string(), 6_000),
        )
        .unwrap();
    started(&mut conn, "started");
    std::thread::sleep(Duration::from_millis(1_800));
    assert!(long.running(), "running past the TTL");
    assert!(!long.cancel(), "a running task cannot be cancelled");
    assert!(long.result_timeout(WAIT).is_ok(), "{:?}", long.result());

    // Killed past its TTL: an at-most-once task fails, and runs once.
    let _b = server.worker("outlive", "concurrency=1&heartbeat=0.1");
    let doomed = pool
        .submit(
            announce_then_work,
            (url.clone(), "started".to_string(), 6_000),
        )
        .unwrap();
    let pid = started(&mut conn, "started");
    std::thread::sleep(Duration::from_millis(1_800));
    kill_pid(pid, "KILL");
    match doomed.result_timeout(WAIT) {
        Err(Error::WorkerDied { .. }) => {}
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    let again: usize = conn.llen("started").unwrap();
    assert_eq!(again, 0, "an at-most-once task ran again");
}

/// A cancel while the server is away cannot tell whether a worker started
/// the task: it fails, and the task stays pending (not running), to be
/// cancelled once the server is back. (Before: it was marked running for
/// good.)
fn outage_cancel() {
    let mut server = Server::start();
    let url = server.url();
    let pool = RedisExecutor::builder()
        .url(&url)
        .queue("outage")
        .server_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // No worker: the task stays queued.
    let queued = pool.submit(mark, (url.clone(), "ran".to_string())).unwrap();
    server.kill();
    assert!(!queued.cancel(), "nobody can say it did not start");
    assert!(!queued.running(), "not marked running");
    assert!(!queued.done());
    server.restart();
    // Back without the task (no persistence): it fails as lost, or a
    // cancel now wins; either way it ends.
    let _ = queued.cancel();
    match queued.result_timeout(WAIT) {
        Err(Error::Cancelled) => {}
        Err(Error::Unavailable(why)) => assert!(why.contains("lost"), "{why}"),
        other => panic!("expected Cancelled or Unavailable, got {other:?}"),
    }
}

/// Values over what Redis takes (512 MiB by default) are errors that say
/// so: an argument before it is sent, a result in the worker (before: the
/// connection was reset, the task ran three times and failed as if its
/// worker had died).
fn oversize() {
    let server = Server::start();
    let _w = server.worker("oversize", "concurrency=1");
    let pool = server.executor("oversize");
    let over = (512 << 20) + 1;
    match pool.submit(length, "x".repeat(over)) {
        Err(Error::Serialization(why)) => {
            assert!(why.to_string().contains("proto-max-bulk-len"), "{why}")
        }
        other => panic!("expected a serialization error, got {other:?}"),
    }
    let big = pool.submit(text_of, over).unwrap();
    match big.result_timeout(WAIT) {
        Err(Error::Serialization(why)) => {
            assert!(why.to_string().contains("result too large"), "{why}")
        }
        other => panic!(
            "expected a serialization error, got {:?}",
            other.map(String::len)
        ),
    }
    // 100 MiB both ways still work.
    let f = pool.submit(length, "y".repeat(100 << 20)).unwrap();
    assert_eq!(f.result_timeout(WAIT), Ok(&(100 << 20)));
}

/// A server that hangs (stopped: it accepts connections and never
/// answers) fails the tasks in flight in about `server_timeout`, with an
/// error that says it did not answer. (Before: each connection attempt
/// waited five seconds, and a 2 s `server_timeout` took 15 s.)
fn hung() {
    let server = Server::start();
    let url = server.url();
    let _w = server.worker("hung", "concurrency=1");
    let pool = RedisExecutor::builder()
        .url(&url)
        .queue("hung")
        .server_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut conn = server.conn();
    let inflight = pool
        .submit(
            announce_then_work,
            (url.clone(), "started".to_string(), 60_000),
        )
        .unwrap();
    started(&mut conn, "started");
    let pid = server.child.as_ref().unwrap().pid();
    kill_pid(pid, "STOP");
    let start = Instant::now();
    let outcome = inflight.result_timeout(WAIT).map(drop);
    let took = start.elapsed();
    kill_pid(pid, "CONT");
    match outcome {
        Err(Error::Unavailable(why)) => {
            assert!(why.to_string().contains("in time"), "{why}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // About server_timeout, not several five-second waits (generous: a
    // loaded machine).
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

fn sigterm() {
    let server = Server::start();
    let url = server.url();
    let mut conn = server.conn();
    let mut worker = server.worker("sigterm", "concurrency=1&heartbeat=0.1");
    let pool = server.executor("sigterm");
    let running = pool
        .submit(
            announce_then_work,
            (url.clone(), "started".to_string(), 500),
        )
        .unwrap();
    assert_eq!(started(&mut conn, "started"), worker.pid());
    kill_pid(worker.pid(), "TERM");
    let waiting = pool.submit(square, 5).unwrap();
    assert_eq!(running.result_timeout(WAIT), Ok(&worker.pid()));
    assert_eq!(worker.wait_exit(WAIT), Some(0));
    assert!(!waiting.done(), "a stopping worker took a new task");
    // It left the consumer group: no consumer remains.
    let consumers: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg("cf:sigterm:tasks")
        .arg("workers")
        .query(&mut conn)
        .unwrap();
    assert!(consumers.is_empty(), "{consumers:?}");
    let _next = server.worker("sigterm", "concurrency=1");
    assert_eq!(waiting.result_timeout(WAIT), Ok(&25));
}

// ---------------------------------------------------------------- main

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    std::thread::spawn(|| {
        std::thread::sleep(LIMIT);
        eprintln!("redis tests: over {LIMIT:?}, giving up");
        for pid in CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            kill_pid(*pid, "KILL");
        }
        std::process::exit(1);
    });
    let scenarios: [(&str, fn()); 13] = [
        ("basic", basic),
        ("cancel", cancel),
        ("garbage", garbage),
        ("auth", auth),
        ("timeout", timeout),
        ("sigterm", sigterm),
        ("kill9", kill9),
        ("restart", restart),
        ("outlive", outlive),
        ("outage_cancel", outage_cancel),
        ("oversize", oversize),
        ("hung", hung),
        ("many", many),
    ];
    let mut failed = Vec::new();
    for (name, scenario) in scenarios {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let start = Instant::now();
        println!("redis scenario {name} ...");
        match std::panic::catch_unwind(scenario) {
            Ok(()) => println!("redis scenario {name} ok ({:.1?})", start.elapsed()),
            Err(_) => {
                println!("redis scenario {name} FAILED");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        eprintln!("failed: {failed:?}");
        std::process::exit(1);
    }
}
