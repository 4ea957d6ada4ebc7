//! The messages between an executor and the workers that run its tasks,
//! whatever carries them (a socket pair, MPI, Redis): their types and the
//! encoding of their bodies. Byte-stream framing is apart, in
//! [`framing`](super::framing).
//!
//! * A **body** is one message, [`ToWorker`] or [`FromWorker`], encoded with
//!   [`postcard`] (a maintained, compact serde format), at most
//!   [`MAX_MESSAGE`] bytes.
//! * A job's arguments travel as **records** (see [`records`]): one per
//!   call, each a length (one byte below 255, else five) and the arguments in the
//!   [`codec`](super::codec) of task values, so a batch of a `map` chunk is
//!   one message and one bad item fails alone. Results come back the same
//!   way, each record starting with [`OUTCOME_OK`] or [`OUTCOME_ERR`].
//! * The worker speaks first: [`FromWorker::Ready`] carries its
//!   [`PROTOCOL_VERSION`], its build identity and who it is (a
//!   [`WorkerId`]: pid, host, rank). The executor reads the version before
//!   anything else ([`ready_version`]) and refuses any other version, then
//!   any other build.
//! * Tasks are named by their stable registry name plus a fingerprint of
//!   their types, never by address.
//! * A user's `Serialize` or `Deserialize` that fails with
//!   `Error::custom(message)` is reported with that message: the codec of
//!   task values keeps it (bodies hold no user types).

use serde::{Deserialize, Serialize};
pub use serde_bytes::ByteBuf;

use super::tasks::build_identity;
use crate::error::Cause;
use crate::{Error, WorkerId};

/// The version of this protocol, sent by the worker in its first message.
/// 3: `Ready` names the worker by [`WorkerId`] and carries the build
/// identity. 4: [`RemoteError`] gains `WorkerDied` and `Unavailable` (an
/// MPI rank that runs its tasks in a child process reports its death).
/// 5: records hold task values in the [`codec`](super::codec), not
/// postcard, after a length of one byte (five from 255 bytes on);
/// [`RemoteError`] gains `Incompatible`.
pub const PROTOCOL_VERSION: u32 = 5;

/// The largest message body accepted, in bytes (1 GiB).
pub const MAX_MESSAGE: usize = 1 << 30;

/// Messages from a pool to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// The owned form states the protocol; the pool and the worker use the
// borrowed one, and the tests check that both encode alike.
#[cfg_attr(not(test), allow(dead_code))]
pub enum ToWorker {
    /// Run the initializer once, before any task.
    Init {
        /// The registered name of the initializer task.
        task: String,
        /// The fingerprint of its argument and result types.
        fingerprint: u64,
        /// Its postcard-encoded arguments.
        args: ByteBuf,
    },
    /// Run a task on each item of a job, in order, and answer with one
    /// [`FromWorker::Done`] holding one outcome per item.
    Run {
        /// The pool's id of this job, echoed in the answer.
        id: u64,
        /// The job's ticket on the worker's shared board: the worker starts
        /// the job only if it can move the ticket from sent to started, and
        /// answers [`FromWorker::Skipped`] if the pool cancelled it first.
        ticket: u32,
        /// The registered name of the task.
        task: String,
        /// The fingerprint of its argument and result types.
        fingerprint: u64,
        /// The postcard-encoded arguments of each call, packed as
        /// [`records`].
        items: ByteBuf,
    },
    /// Finish and exit (closing the connection means the same).
    Shutdown,
}

/// [`ToWorker`] by reference: the same bytes on the wire, without copying
/// the payloads (what the pool sends and the worker reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ToWorkerRef<'a> {
    /// [`ToWorker::Init`].
    Init {
        task: &'a str,
        fingerprint: u64,
        #[serde(borrow)]
        args: &'a serde_bytes::Bytes,
    },
    /// [`ToWorker::Run`].
    Run {
        id: u64,
        ticket: u32,
        task: &'a str,
        fingerprint: u64,
        #[serde(borrow)]
        items: &'a serde_bytes::Bytes,
    },
    /// [`ToWorker::Shutdown`].
    Shutdown,
}

/// [`FromWorker`] by reference: the same bytes on the wire, without copying
/// the payloads (what the worker sends and the pool reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum FromWorkerRef<'a> {
    /// [`FromWorker::Ready`].
    Ready {
        version: u32,
        build: u64,
        worker: WorkerId,
    },
    /// [`FromWorker::InitDone`].
    InitDone {
        #[serde(borrow)]
        outcome: Result<&'a serde_bytes::Bytes, RemoteError>,
    },
    /// [`FromWorker::Done`].
    Done {
        id: u64,
        #[serde(borrow)]
        results: &'a serde_bytes::Bytes,
    },
    /// [`FromWorker::Skipped`].
    Skipped { id: u64 },
}

/// Messages from a worker to its pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// The owned form states the protocol; the pool and the worker use the
// borrowed one, and the tests check that both encode alike.
#[cfg_attr(not(test), allow(dead_code))]
pub enum FromWorker {
    /// The first message of a worker. Its first field stays the version in
    /// every version of the protocol, so that [`ready_version`] can read it
    /// from any worker.
    Ready {
        /// The worker's [`PROTOCOL_VERSION`].
        version: u32,
        /// The worker's build identity: it must equal the executor's.
        build: u64,
        /// Who the worker is.
        worker: WorkerId,
    },
    /// The outcome of [`ToWorker::Init`]: the initializer's encoded result.
    InitDone {
        /// The encoded result, or why it failed.
        outcome: Result<ByteBuf, RemoteError>,
    },
    /// The outcomes of a [`ToWorker::Run`] job, one per item, in order.
    Done {
        /// The id of the job.
        id: u64,
        /// One outcome per item, packed as [`records`]: a record starts
        /// with [`OUTCOME_OK`] followed by the encoded result, or with
        /// [`OUTCOME_ERR`] followed by an encoded [`RemoteError`].
        results: ByteBuf,
    },
    /// The job was cancelled before it began and did not run.
    Skipped {
        /// The id of the job.
        id: u64,
    },
}

/// Why a task failed on the worker's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteError {
    /// The task panicked (the worker survives).
    Panicked {
        /// The panic message.
        message: String,
        /// `file:line:column` of the panic.
        location: Option<String>,
        /// The worker-side backtrace.
        backtrace: Option<String>,
    },
    /// Arguments did not decode or the result did not encode.
    Serialization {
        /// What failed, e.g. "result failed to serialize in the worker".
        what: String,
        /// Why: the value's own error text (or the encoder's).
        why: String,
    },
    /// The worker has no task of this name.
    UnknownTask(String),
    /// The worker's registration of the task has other types.
    TypeMismatch {
        /// The task's name.
        task: String,
        /// The worker's fingerprint.
        expected: u64,
        /// The fingerprint the pool sent.
        found: u64,
    },
    /// The process the worker ran the task in died (an MPI rank running
    /// its tasks in a child process).
    WorkerDied {
        /// The process that died.
        worker: WorkerId,
        /// How it ended.
        cause: String,
    },
    /// The worker could not start a process to run the task in.
    Unavailable(String),
    /// The worker cannot run tasks queued by this client: another protocol
    /// version or another build of the program.
    Incompatible(String),
}

#[cfg(any(feature = "mpi", feature = "redis"))]
impl RemoteError {
    /// The failure of a whole job that worker `me` ran in a local child
    /// process (task isolation), as its client will see it: a dead child is
    /// named by its pid and `me`'s host and rank. The inverse of
    /// `From<RemoteError> for Error`, for the errors a child can give.
    pub(crate) fn from_child(error: Error, me: &WorkerId) -> RemoteError {
        match error {
            Error::WorkerDied { worker, cause } => RemoteError::WorkerDied {
                worker: WorkerId {
                    pid: worker.pid,
                    host: me.host.clone(),
                    rank: me.rank,
                },
                cause: format!("{cause} (the task's process, a child of {me})"),
            },
            Error::Panicked {
                message,
                location,
                backtrace,
            } => RemoteError::Panicked {
                message,
                location,
                backtrace: backtrace.map(|b| b.as_str().to_owned()),
            },
            Error::Serialization(cause) => RemoteError::Serialization {
                what: format!("{me}"),
                why: cause.to_string(),
            },
            Error::UnknownTask(s) => RemoteError::UnknownTask(s),
            Error::TaskTypeMismatch {
                task,
                expected,
                found,
            } => RemoteError::TypeMismatch {
                task,
                expected,
                found,
            },
            other => RemoteError::Unavailable(format!("{me}: {other}")),
        }
    }
}

impl From<RemoteError> for Error {
    fn from(e: RemoteError) -> Error {
        match e {
            RemoteError::Panicked {
                message,
                location,
                backtrace,
            } => Error::Panicked {
                message,
                location,
                backtrace: backtrace.map(Into::into),
            },
            RemoteError::Serialization { what, why } => serialization_error(&what, why),
            RemoteError::UnknownTask(s) => Error::UnknownTask(s),
            RemoteError::TypeMismatch {
                task,
                expected,
                found,
            } => Error::TaskTypeMismatch {
                task,
                expected,
                found,
            },
            RemoteError::WorkerDied { worker, cause } => Error::WorkerDied { worker, cause },
            RemoteError::Unavailable(reason) => Error::SpawnFailed(reason.into()),
            RemoteError::Incompatible(reason) => Error::Protocol(reason),
        }
    }
}

/// The error of a value that failed to encode or decode here: `what`
/// failed, and `why` (the codec's error text, which is the value's own if
/// its `Serialize` or `Deserialize` gave one) is its source.
pub(crate) fn serialization_error(what: &str, why: String) -> Error {
    Error::Serialization(Cause::with_source(
        format!("{what}: {why}"),
        SerdeError(why),
    ))
}

/// The error a value's `Serialize` or `Deserialize` gave, as text (serde
/// keeps no more of it).
#[derive(Debug)]
struct SerdeError(String);

impl std::fmt::Display for SerdeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SerdeError {}

/// First byte of a result record holding a value.
pub const OUTCOME_OK: u8 = 0;
/// First byte of a result record holding a [`RemoteError`].
pub const OUTCOME_ERR: u8 = 1;

/// A postcard flavor that appends to a borrowed vector.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();
    #[inline(always)]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }
    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Serializes `value` at the end of `out`; on failure `out` is unchanged.
pub(crate) fn append<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> postcard::Result<()> {
    let start = out.len();
    let mut serializer = postcard::Serializer {
        output: Append(out),
    };
    let result = value.serialize(&mut serializer);
    if result.is_err() {
        serializer.output.0.truncate(start);
    }
    result
}

/// Appends one record to `out`: its length as a count (one byte below 255,
/// else 255 and a little-endian `u32`, as the codec writes counts), then
/// what `write` appends. If `write` fails, `out` is unchanged.
///
/// The length is known only once `write` is done: one byte is set aside
/// for it, and a record of 255 bytes or more is moved 4 bytes on to make
/// room for the long form, a copy that is small beside writing it.
#[inline]
pub(crate) fn append_record<E>(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    let start = out.len();
    out.push(0);
    match write(out) {
        Ok(()) => {
            let len = out.len() - start - 1;
            if len < usize::from(LONG_RECORD) {
                out[start] = len as u8;
            } else {
                long_record_header(out, start, len);
            }
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// The first byte of a record header followed by a `u32` length.
const LONG_RECORD: u8 = u8::MAX;

#[cold]
#[inline(never)]
fn long_record_header(out: &mut Vec<u8>, start: usize, len: usize) {
    // Longer than any frame can carry: the frame is refused later.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out[start] = LONG_RECORD;
    out.splice(start + 1..start + 1, len.to_le_bytes());
}

/// The records packed in `bytes` (each a length, as [`append_record`]
/// writes it, and that many bytes). A record cut short is an error, never
/// a panic.
pub fn records(bytes: &[u8]) -> impl Iterator<Item = Result<&[u8], Error>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let record = take_record(&mut rest);
        if record.is_none() {
            rest = &[];
        }
        Some(record.ok_or_else(|| Error::Protocol("record cut short".into())))
    })
}

/// Takes the first record off `rest`: `None` if `rest` does not start with
/// a whole record.
#[inline(always)]
pub(crate) fn take_record<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (&first, tail) = rest.split_first()?;
    let (len, tail) = match first {
        LONG_RECORD => {
            let (header, tail) = tail.split_first_chunk::<4>()?;
            (u32::from_le_bytes(*header) as usize, tail)
        }
        short => (usize::from(short), tail),
    };
    if tail.len() < len {
        return None;
    }
    let (record, tail) = tail.split_at(len);
    *rest = tail;
    Some(record)
}

/// Decodes a whole postcard body; trailing bytes are an error.
pub(crate) fn from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    let mut deserializer = postcard::Deserializer::from_bytes(bytes);
    let value = T::deserialize(&mut deserializer)?;
    if deserializer.finalize()?.is_empty() {
        Ok(value)
    } else {
        Err(postcard::Error::DeserializeBadEncoding)
    }
}

/// The protocol version of a worker's first message, read without
/// decoding the rest (whose shape may differ in another version): `None`
/// if `body` is not a `Ready` message at all.
pub(crate) fn ready_version(body: &[u8]) -> Option<u32> {
    // `Ready` is variant 0 in every version: its index, then the version,
    // both varints.
    let (variant, rest) = postcard::take_from_bytes::<u32>(body).ok()?;
    if variant != 0 {
        return None;
    }
    postcard::take_from_bytes::<u32>(rest).ok().map(|(v, _)| v)
}

/// Checks a worker's first message: the same protocol version, then the
/// same build as this program. The worker's identity, or why it is refused.
pub(crate) fn check_ready(body: &[u8]) -> Result<WorkerId, String> {
    match ready_version(body) {
        Some(PROTOCOL_VERSION) => {}
        Some(version) => {
            return Err(format!(
                "the worker speaks protocol version {version}, not {PROTOCOL_VERSION} \
                 (another release of concurrent-futures)"
            ));
        }
        None => return Err("the worker's first message is not a handshake".into()),
    }
    match decode::<FromWorkerRef>(body) {
        Ok(FromWorkerRef::Ready { build, worker, .. }) if build == build_identity() => Ok(worker),
        Ok(FromWorkerRef::Ready { worker, .. }) => Err(format!(
            "{worker} runs another build of this program (build identity differs): \
             start every worker from the same executable"
        )),
        Ok(_) => Err("the worker's first message is not a handshake".into()),
        Err(e) => Err(format!("malformed handshake: {e}")),
    }
}

/// Decodes a message body.
pub fn decode<'a, M: Deserialize<'a>>(body: &'a [u8]) -> Result<M, Error> {
    from_bytes(body).map_err(|e| Error::Protocol(format!("malformed message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ready(version: u32, build: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let worker = WorkerId::process(42);
        append(
            &FromWorker::Ready {
                version,
                build,
                worker,
            },
            &mut out,
        )
        .unwrap();
        out
    }

    #[test]
    fn a_worker_of_another_version_or_build_is_refused() {
        assert_eq!(
            check_ready(&ready(PROTOCOL_VERSION, build_identity())),
            Ok(WorkerId::process(42))
        );
        let other_build = check_ready(&ready(PROTOCOL_VERSION, build_identity() ^ 1)).unwrap_err();
        assert!(other_build.contains("another build"), "{other_build}");
        // Version 2's `Ready` was `{ version, pid }`: still read as a version.
        let mut v2 = Vec::new();
        append(&(0u32, 2u32, 42u32), &mut v2).unwrap();
        let old = check_ready(&v2).unwrap_err();
        assert!(old.contains("protocol version 2"), "{old}");
        let mut skipped = Vec::new();
        append(&FromWorker::Skipped { id: 1 }, &mut skipped).unwrap();
        assert!(
            check_ready(&skipped)
                .unwrap_err()
                .contains("not a handshake")
        );
        assert!(check_ready(&[]).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_records_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            for record in records(&bytes).flatten() {
                let _ = super::super::codec::from_bytes::<RemoteError>(record);
            }
        }
    }

    /// A worker that cannot run a client's tasks (another build or
    /// protocol) is a protocol error, not a failure to start a worker.
    #[test]
    fn an_incompatible_worker_is_a_protocol_error() {
        let e = Error::from(RemoteError::Incompatible("another build".into()));
        assert_eq!(e, Error::Protocol("another build".into()));
        let e = Error::from(RemoteError::Unavailable("no fork".into()));
        assert!(matches!(e, Error::SpawnFailed(_)), "{e:?}");
    }

    /// Appends `bytes` as one record.
    fn append_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
        append_record(out, |o| {
            o.extend_from_slice(bytes);
            Ok::<(), ()>(())
        })
        .unwrap();
    }

    proptest! {
        #[test]
        fn records_round_trip_on_both_sides_of_the_long_header(
            sizes in prop::collection::vec(prop_oneof![0..300usize, 250..260usize], 0..8),
        ) {
            let items: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![n as u8; n]).collect();
            let mut out = Vec::new();
            for item in &items {
                append_bytes(&mut out, item);
            }
            let header = |n: usize| if n < 255 { 1 } else { 5 };
            prop_assert_eq!(out.len(), sizes.iter().map(|&n| n + header(n)).sum::<usize>());
            let got: Vec<&[u8]> = records(&out).map(Result::unwrap).collect();
            prop_assert_eq!(got, items.iter().map(Vec::as_slice).collect::<Vec<_>>());
            if !out.is_empty() {
                // One byte short: an error, or one record fewer.
                let cut: Result<Vec<&[u8]>, _> = records(&out[..out.len() - 1]).collect();
                prop_assert!(cut.map_or(true, |c| c.len() < items.len()));
            }
        }
    }

    #[test]
    fn a_failed_record_leaves_the_output_as_it_was() {
        let mut out = Vec::new();
        append_bytes(&mut out, &[1, 2]);
        let failed: Result<(), ()> = append_record(&mut out, |o| {
            o.extend_from_slice(&[9; 300]);
            Err(())
        });
        assert!(failed.is_err());
        assert_eq!(out, [2, 1, 2]);
        append_bytes(&mut out, &[7; 70_000]);
        let got: Vec<&[u8]> = records(&out).map(Result::unwrap).collect();
        assert_eq!(got, [&[1u8, 2][..], &[7; 70_000][..]]);
    }
}
