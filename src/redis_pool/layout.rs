//! Where everything lives in Redis: the keys of a queue, the fields of a
//! task entry, the replies on a client's result list, and the two Lua
//! scripts that make a job's start and its cancellation exclusive.
//!
//! For a queue `q` (every key starts with `cf:q:`):
//!
//! | key                     | type   | what                                        |
//! |-------------------------|--------|---------------------------------------------|
//! | `cf:q:tasks`            | stream | task entries; consumer group [`GROUP`]       |
//! | `cf:q:job:C:N`          | string | job N of client C in flight: `cancelled`, or the workers that started it (`a,b`) |
//! | `cf:q:results:C`        | list   | replies to client C (expires: result TTL)   |
//! | `cf:q:client:C`         | string | client C is alive (and the server kept its keys) |
//! | `cf:q:worker:W`         | string | worker W's heartbeat (expires: 5 heartbeats) |
//!
//! A task entry's fields: [`F_VERSION`] (the protocol version), [`F_BUILD`]
//! (the build identity), [`F_CLIENT`], [`F_JOB`], [`F_DELIVERIES`] (the
//! client's `max_deliveries`), [`F_TTL`] (how long the client keeps its
//! results, ms) and [`F_BODY`] (a postcard
//! [`ToWorker::Run`](crate::remote::message::ToWorker::Run)).
//!
//! Guarantees:
//! * Parsing never panics: anything malformed is an `Err` with a reason.
//! * A job starts only through [`START`] and is cancelled only through
//!   [`CANCEL`]: both are atomic on the server, so exactly one of a start
//!   and a cancel wins, as with the process pool's tickets.

use serde::{Deserialize, Serialize};

use crate::remote::message::{self, PROTOCOL_VERSION, RemoteError};

/// The largest value Redis takes by default (`proto-max-bulk-len`, 512
/// MiB): a task entry's body or an answer over it would be refused with
/// the connection reset, so it is an error here first.
pub(super) const MAX_VALUE: usize = 512 << 20;

/// The consumer group of every queue's task stream.
pub(super) const GROUP: &str = "workers";

pub(super) const F_VERSION: &str = "v";
pub(super) const F_BUILD: &str = "b";
pub(super) const F_CLIENT: &str = "c";
pub(super) const F_JOB: &str = "j";
pub(super) const F_DELIVERIES: &str = "d";
pub(super) const F_TTL: &str = "r";
pub(super) const F_BODY: &str = "m";

/// The keys of one queue.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
    pub(super) tasks: String,
}

impl Keys {
    pub(super) fn new(queue: &str) -> Keys {
        let prefix = format!("cf:{queue}:");
        Keys {
            tasks: format!("{prefix}tasks"),
            prefix,
        }
    }
    pub(super) fn job(&self, client: &str, job: u64) -> String {
        format!("{}job:{client}:{job}", self.prefix)
    }
    pub(super) fn results(&self, client: &str) -> String {
        format!("{}results:{client}", self.prefix)
    }
    pub(super) fn client(&self, client: &str) -> String {
        format!("{}client:{client}", self.prefix)
    }
    pub(super) fn worker(&self, worker: &str) -> String {
        format!("{}worker:{worker}", self.prefix)
    }
}

/// A message on a client's result list, after the protocol version.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Reply<'a> {
    /// The job ran: one outcome record per item.
    Done {
        id: u64,
        #[serde(borrow)]
        results: &'a serde_bytes::Bytes,
    },
    /// The job was cancelled before it started (pushed by the cancel).
    Skipped { id: u64 },
    /// The whole job failed without running (or its process died).
    Failed { id: u64, error: RemoteError },
    /// The job ran past the worker's per-task timeout, in milliseconds.
    TimedOut { id: u64, after_ms: u64 },
}

impl Reply<'_> {
    /// The encoded reply: the protocol version, then the reply.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Neither a u32 nor a `Reply` (bytes, integers, a `RemoteError`)
        // can fail to encode.
        let _ = message::append(&PROTOCOL_VERSION, &mut out);
        let _ = message::append(self, &mut out);
        out
    }

    /// Decodes a reply, refusing another protocol version.
    pub(super) fn decode(bytes: &[u8]) -> Result<Reply<'_>, String> {
        let (version, rest) =
            postcard::take_from_bytes::<u32>(bytes).map_err(|e| format!("malformed reply: {e}"))?;
        if version != PROTOCOL_VERSION {
            return Err(format!(
                "a worker replied in protocol version {version}, not {PROTOCOL_VERSION} \
                 (another release of concurrent-futures)"
            ));
        }
        message::from_bytes(rest).map_err(|e| format!("malformed reply: {e}"))
    }
}

/// Takes a job's start (KEYS[1]: its state key, KEYS[2]: the task stream;
/// ARGV: the worker, the state's TTL in ms, the most deliveries, the
/// entry's id). Returns `{0, why}` if it was cancelled or answered already
/// (its entry is gone: do not run), `{2, workers}` if it was started by as
/// many workers as it may be (do not run: fail it), `{1, workers}` to run
/// it (the workers so far, this one last). The state key is deleted when
/// the job is answered: only jobs in flight (and cancelled ones, until
/// their TTL) keep one.
pub(super) const START: &str = r"
local v = redis.call('GET', KEYS[1])
if v == 'cancelled' then return {0, v} end
if #redis.call('XRANGE', KEYS[2], ARGV[4], ARGV[4]) == 0 then return {0, 'answered'} end
if v then
  local n = 0
  for _ in string.gmatch(v, '[^,]+') do n = n + 1 end
  if n >= tonumber(ARGV[3]) then return {2, v} end
  v = v .. ',' .. ARGV[1]
else
  v = ARGV[1]
end
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
return {1, v}
";

/// Cancels a job that has not started (KEYS[1]: its state key, KEYS[2]:
/// the client's result list; ARGV: the TTL in ms, the `Skipped` reply).
/// Returns 1 if it won (the reply is pushed, so that the client's result
/// thread accounts for the job), 0 if the job had started.
pub(super) const CANCEL: &str = r"
if redis.call('SET', KEYS[1], 'cancelled', 'NX', 'PX', ARGV[1]) then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
  return 1
end
return 0
";

/// Removes a consumer from the group if it holds no entry (KEYS[1]: the
/// stream; ARGV: the group, the consumer), so that workers that stopped
/// gracefully leave no consumer behind. Returns 1 if it was removed.
pub(super) const FORGET: &str = r"
local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #held == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
";

/// A worker's consumer name: `host/pid/runner`.
pub(super) fn consumer_name(host: &str, pid: u32, runner: usize) -> String {
    format!("{host}/{pid}/{runner}")
}

/// The name under which the worker that owns `consumer` keeps its
/// heartbeat key (its first runner's consumer name); `None` for a name
/// that is not a consumer name.
pub(super) fn worker_of_consumer(consumer: &str) -> Option<String> {
    let (worker, runner) = consumer.rsplit_once('/')?;
    runner.parse::<usize>().ok()?;
    Some(format!("{worker}/0"))
}

/// The worker a consumer name stands for, for error messages.
pub(super) fn worker_of(consumer: &str) -> crate::WorkerId {
    let mut parts = consumer.rsplitn(3, '/');
    let _runner = parts.next();
    let pid = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let mut worker = crate::WorkerId::process(pid);
    worker.host = parts.next().map(str::to_owned);
    worker
}

/// A worker target: `redis://[user:password@]host:port[/db]/queue[?options]`
/// split into the Redis URL, the queue and the options' text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) url: String,
    pub(super) queue: String,
    pub(super) options: String,
}

/// Whether `name` can name a queue: letters, digits, `-`, `_` and `.`
/// (the same rule for the executor and its workers).
pub(super) fn valid_queue(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Splits a worker target; its errors show the target without its
/// password.
pub(super) fn parse_target(text: &str) -> Result<Target, String> {
    let shown = redact(text);
    let (main, options) = text.split_once('?').unwrap_or((text, ""));
    let (scheme, rest) = main
        .split_once("://")
        .ok_or_else(|| format!("{shown:?} is not a redis:// URL"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let queue = segments
        .pop()
        .ok_or_else(|| format!("{shown:?} names no queue: add it as the last path segment"))?;
    if !valid_queue(queue) {
        return Err(format!(
            "{shown:?}: the queue name {queue:?} must be letters, digits, '-', '_' or '.'"
        ));
    }
    let url = match segments.as_slice() {
        [] => format!("{scheme}://{authority}/"),
        [db] => format!("{scheme}://{authority}/{db}"),
        _ => {
            return Err(format!(
                "{shown:?}: expected /queue or /db/queue after the host"
            ));
        }
    };
    Ok(Target {
        url,
        queue: queue.to_owned(),
        options: options.to_owned(),
    })
}

/// The URL without its password, for messages.
pub(super) fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (auth, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = auth.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_url_queue_and_options() {
        let t = parse_target("redis://h:1/q").unwrap();
        assert_eq!((t.url.as_str(), t.queue.as_str()), ("redis://h:1/", "q"));
        let t = parse_target("redis://u:p@h:1/2/q?concurrency=4").unwrap();
        assert_eq!(t.url, "redis://u:p@h:1/2");
        assert_eq!(t.options, "concurrency=4");
        assert!(parse_target("redis://h:1/").is_err());
        assert!(parse_target("h:1/q").is_err());
        assert!(parse_target("redis://h:1/bad queue").is_err());
        // Errors never show the password.
        for bad in [
            "redis://:s3cret@h:1/",
            "redis://u:s3cret@h:1/0/1/q",
            "redis://:s3cret@h:1/bad%20queue!",
        ] {
            let e = parse_target(bad).unwrap_err();
            assert!(!e.contains("s3cret") && e.contains("***"), "{e}");
        }
        assert_eq!(redact("redis://u:secret@h:1/"), "redis://u:***@h:1/");
    }

    #[test]
    fn replies_round_trip_and_garbage_is_an_error() {
        let bytes = Reply::Skipped { id: 7 }.encode();
        assert!(matches!(
            Reply::decode(&bytes),
            Ok(Reply::Skipped { id: 7 })
        ));
        assert!(Reply::decode(&[]).is_err());
        assert!(Reply::decode(&[3, 200, 1]).is_err());
        let w = worker_of("node-1/42/3");
        assert_eq!((w.pid, w.host.as_deref()), (42, Some("node-1")));
    }

    #[test]
    fn a_consumer_names_its_worker_key() {
        let name = consumer_name("node/1", 42, 3);
        assert_eq!(worker_of_consumer(&name).as_deref(), Some("node/1/42/0"));
        assert_eq!(
            worker_of_consumer(&consumer_name("h", 7, 0)).as_deref(),
            Some("h/7/0")
        );
        assert_eq!(worker_of_consumer("no-runner"), None);
        assert_eq!(worker_of_consumer("h/7/x"), None);
    }
}
