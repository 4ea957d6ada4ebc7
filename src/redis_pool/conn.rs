//! Connections: opening one with bounded waits, reading raw replies, and
//! turning the client library's errors into the crate's.
//!
//! Guarantees:
//! * No call here blocks without a bound: connecting, reading and writing
//!   all time out (a blocking read's own wait is added to the read bound).
//! * Reply parsing never panics: an unexpected shape is `None`.

use std::time::Duration;

use redis::{Connection, Value};

use super::layout::redact;
use crate::Error;
use crate::error::Cause;

/// How long connecting, and any one reply beyond a blocking command's own
/// wait, may take.
pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a connection to `url` (authenticating as its user, if any), with
/// [`IO_TIMEOUT`] as its bound.
pub(super) fn open(url: &str) -> Result<Connection, Error> {
    open_within(url, IO_TIMEOUT)
}

/// [`open`] with another bound on connecting and on each reply: an
/// executor's is shorter than [`IO_TIMEOUT`] when its `server_timeout`
/// is, so that a server that hangs (accepts but never answers) is given
/// up on in about that time, not in several times five seconds.
pub(super) fn open_within(url: &str, bound: Duration) -> Result<Connection, Error> {
    let client = redis::Client::open(url).map_err(|e| unavailable(url, &e))?;
    let conn = client
        .get_connection_with_timeout(bound)
        .map_err(|e| unavailable(url, &e))?;
    conn.set_read_timeout(Some(bound))
        .and_then(|()| conn.set_write_timeout(Some(bound)))
        .map_err(|e| unavailable(url, &e))?;
    Ok(conn)
}

/// The crate's error for a failure to talk to the server at `url`.
pub(super) fn unavailable(url: &str, e: &redis::RedisError) -> Error {
    let what = if e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.code()
            .is_some_and(|c| c == "WRONGPASS" || c == "NOAUTH" || c == "NOPERM")
    {
        "refused the credentials"
    } else if e.is_timeout() {
        "did not answer in time"
    } else {
        "cannot be used"
    };
    Error::Unavailable(Cause::with_source(
        format!("the Redis server at {} {what}: {e}", redact(url)),
        e.clone(),
    ))
}

/// True if `e` says the connection is unusable (reconnect), rather than a
/// command's own error.
pub(super) fn is_broken(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
}

/// Creates the consumer group of the task stream (and the stream), if
/// missing.
pub(super) fn ensure_group(conn: &mut Connection, stream: &str) -> redis::RedisResult<()> {
    let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(super::layout::GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query(conn);
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(e),
    }
}

/// The bytes of a string reply.
pub(super) fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

/// The text of a string reply.
pub(super) fn text(value: &Value) -> Option<&str> {
    bytes(value).and_then(|b| std::str::from_utf8(b).ok())
}

/// An integer reply (or a string holding one).
pub(super) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

/// The items of an array reply.
pub(super) fn array(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// One stream entry: its id and its fields, in order.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) id: String,
    pub(super) fields: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// The value of field `name`.
    pub(super) fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The value of field `name` as text.
    pub(super) fn text(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.field(name)?).ok()
    }
}

/// The entries of an `[id, [field, value, ...]]` list (what XRANGE and
/// XAUTOCLAIM return, and each stream of XREADGROUP). An entry whose
/// fields are missing (deleted meanwhile) keeps no fields; an entry whose
/// shape is wrong is skipped.
pub(super) fn entries(value: &Value) -> Vec<Entry> {
    let mut out = Vec::new();
    for item in array(value).unwrap_or(&[]) {
        let Some([id, fields]) = array(item).and_then(|a| <&[Value; 2]>::try_from(a).ok()) else {
            continue;
        };
        let Some(id) = text(id) else { continue };
        let mut parsed = Vec::new();
        if let Some(list) = array(fields) {
            for pair in list.chunks_exact(2) {
                if let (Some(name), Some(value)) = (text(&pair[0]), bytes(&pair[1])) {
                    parsed.push((name.to_owned(), value.to_vec()));
                }
            }
        }
        out.push(Entry {
            id: id.to_owned(),
            fields: parsed,
        });
    }
    out
}

/// The entries of an XREADGROUP reply (one stream read; RESP2 array of
/// `[stream, entries]`, or a RESP3 map).
pub(super) fn read_entries(value: &Value) -> Vec<Entry> {
    match value {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| array(s).and_then(|a| a.get(1)))
            .flat_map(entries)
            .collect(),
        Value::Map(streams) => streams.iter().flat_map(|(_, v)| entries(v)).collect(),
        _ => Vec::new(),
    }
}

/// One consumer of an XINFO CONSUMERS reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Consumer {
    pub(super) name: String,
    pub(super) pending: i64,
    pub(super) idle_ms: i64,
}

/// The consumers of an XINFO CONSUMERS reply: each a RESP2 array of
/// `name, value` pairs or a RESP3 map. One without a name is skipped; a
/// missing count reads as held (pending) or busy (idle), so that nothing
/// is removed on a reply it does not understand.
pub(super) fn consumers(value: &Value) -> Vec<Consumer> {
    let mut out = Vec::new();
    for item in array(value).unwrap_or(&[]) {
        let pairs: Vec<(&Value, &Value)> = match item {
            Value::Map(map) => map.iter().map(|(k, v)| (k, v)).collect(),
            other => array(other)
                .unwrap_or(&[])
                .chunks_exact(2)
                .map(|p| (&p[0], &p[1]))
                .collect(),
        };
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| text(k) == Some(name))
                .map(|p| p.1)
        };
        let Some(name) = field("name").and_then(text) else {
            continue;
        };
        out.push(Consumer {
            name: name.to_owned(),
            pending: field("pending").and_then(int).unwrap_or(i64::MAX),
            idle_ms: field("idle").and_then(int).unwrap_or(0),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn consumers_are_read_from_either_reply_shape() {
        let resp2 = Value::Array(vec![
            Value::Array(vec![
                bulk("name"),
                bulk("h/1/0"),
                bulk("pending"),
                Value::Int(0),
                bulk("idle"),
                Value::Int(900),
            ]),
            // No name: skipped.
            Value::Array(vec![bulk("pending"), Value::Int(0)]),
            // No counts: read as holding entries, and busy.
            Value::Array(vec![bulk("name"), bulk("h/2/0")]),
        ]);
        assert_eq!(
            consumers(&resp2),
            [
                Consumer {
                    name: "h/1/0".into(),
                    pending: 0,
                    idle_ms: 900
                },
                Consumer {
                    name: "h/2/0".into(),
                    pending: i64::MAX,
                    idle_ms: 0
                },
            ]
        );
        let resp3 = Value::Array(vec![Value::Map(vec![
            (bulk("name"), bulk("h/3/1")),
            (bulk("pending"), Value::Int(2)),
            (bulk("idle"), Value::Int(5)),
        ])]);
        assert_eq!(
            consumers(&resp3),
            [Consumer {
                name: "h/3/1".into(),
                pending: 2,
                idle_ms: 5
            }]
        );
        assert!(consumers(&Value::Nil).is_empty());
    }
}
