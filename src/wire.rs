//! The wire protocol between a pool and the workers that run its tasks.
//!
//! Small, versioned and framed, so that the same protocol (and the same
//! [`registry`](crate::registry)) can serve workers on other machines:
//!
//! * A **frame** is a 4-byte little-endian length followed by that many bytes
//!   of body, at most [`MAX_FRAME`]. A truncated frame, an oversized length
//!   or a body that does not decode is an error, never a panic or a hang.
//! * A **body** is one message, [`ToWorker`] or [`FromWorker`], encoded with
//!   [`postcard`] (a maintained, compact serde format).
//! * A job's arguments travel as **records** (see [`records`]): one per
//!   call, each a 4-byte little-endian length and the postcard encoding of
//!   the arguments, so a batch of a `map` chunk is one message and one bad
//!   item fails alone. Results come back the same way, each record starting
//!   with [`OUTCOME_OK`] or [`OUTCOME_ERR`].
//! * The worker speaks first: [`FromWorker::Ready`] carries its
//!   [`PROTOCOL_VERSION`] and pid; the pool refuses any other version.
//! * Tasks are named by their stable registry name plus a fingerprint of
//!   their types, never by address.
//! * A user's `Serialize` or `Deserialize` that fails with
//!   `Error::custom(message)` is reported with that message (postcard keeps
//!   only a generic text; `wire/capture.rs` recovers it, only after a
//!   failure).

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
pub use serde_bytes::ByteBuf;

use crate::Error;

mod capture;

/// The version of this protocol, sent by the worker in its first message.
pub const PROTOCOL_VERSION: u32 = 2;

/// The largest frame body accepted, in bytes (1 GiB).
pub const MAX_FRAME: usize = 1 << 30;

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
    Ready { version: u32, pid: u32 },
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
    /// The first message of a worker.
    Ready {
        /// The worker's [`PROTOCOL_VERSION`].
        version: u32,
        /// The worker's process id.
        pid: u32,
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
    Serialization(String),
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
            RemoteError::Serialization(s) => Error::Serialization(s),
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
        }
    }
}

/// First byte of a result record holding a value.
pub const OUTCOME_OK: u8 = 0;
/// First byte of a result record holding a [`RemoteError`].
pub const OUTCOME_ERR: u8 = 1;

/// A postcard flavor that appends to a borrowed vector.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        extend_short(self.0, data);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// `out.extend_from_slice(data)`, for the short slices postcard writes per
/// value (a varint is at most 10 bytes). `extend_from_slice` calls libc's
/// `memcpy` for a length unknown at compile time, and that call was the
/// largest single cost of encoding a `map`'s items; two overlapping copies
/// of a fixed size compile to plain loads and stores instead.
#[inline]
fn extend_short(out: &mut Vec<u8>, data: &[u8]) {
    let n = data.len();
    let start = out.len();
    match n {
        0 => {}
        1 => out.push(data[0]),
        2..=3 => {
            out.extend_from_slice(&[data[0], data[1]]);
            out.push(data[n - 1]);
            out.truncate(start + n);
        }
        4..=7 => {
            out.extend_from_slice(&[0; 8]);
            out[start..start + 4].copy_from_slice(&data[..4]);
            out[start + n - 4..start + n].copy_from_slice(&data[n - 4..]);
            out.truncate(start + n);
        }
        8..=16 => {
            out.extend_from_slice(&[0; 16]);
            out[start..start + 8].copy_from_slice(&data[..8]);
            out[start + n - 8..start + n].copy_from_slice(&data[n - 8..]);
            out.truncate(start + n);
        }
        _ => out.extend_from_slice(data),
    }
}

/// Serializes `value` at the end of `out`; on failure `out` is unchanged.
/// [`explain_ser`] says why in the value's own words, if it gave any.
pub(crate) fn append<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> postcard::Result<()> {
    let start = out.len();
    let result = postcard::serialize_with_flavor(value, Append(out));
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Why [`append`] failed for `value`: the message of the value's own
/// `custom` error if it gave one, postcard's text otherwise. Cold and out
/// of line, so that the second run stays off the hot path; only the error's
/// message needs `value`, so the fast path keeps postcard's one-byte error.
#[cold]
#[inline(never)]
pub(crate) fn explain_ser<T: Serialize + ?Sized>(value: &T, e: postcard::Error) -> String {
    match e {
        postcard::Error::SerdeSerCustom => capture::serialize(value),
        _ => None,
    }
    .unwrap_or_else(|| e.to_string())
}

/// Appends one record to `out`: a 4-byte little-endian length, then what
/// `write` appends. If `write` fails, `out` is unchanged.
pub(crate) fn append_record<E>(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    match write(out) {
        Ok(()) => {
            let len = (out.len() - start - 4) as u32;
            out[start..start + 4].copy_from_slice(&len.to_le_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// The records packed in `bytes` (each a 4-byte little-endian length and
/// that many bytes). A record cut short is an error, never a panic.
pub fn records(bytes: &[u8]) -> impl Iterator<Item = Result<&[u8], Error>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some((header, tail)) = rest.split_first_chunk::<4>() else {
            rest = &[];
            return Some(Err(Error::Protocol("record header cut short".into())));
        };
        let len = u32::from_le_bytes(*header) as usize;
        if tail.len() < len {
            rest = &[];
            return Some(Err(Error::Protocol("record cut short".into())));
        }
        let (record, tail) = tail.split_at(len);
        rest = tail;
        Some(Ok(record))
    })
}

/// Decodes a whole postcard body; trailing bytes are an error.
/// [`explain_de`] says why in the words of the type's `Deserialize`, if it
/// gave any.
pub(crate) fn from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(postcard::Error::DeserializeBadEncoding)
    }
}

/// Why [`from_bytes`] failed to decode `bytes` as a `T`; cold, like
/// [`explain_ser`]. It may run the type's `Deserialize` again, so call it
/// where a panic of that code is caught.
#[cold]
#[inline(never)]
pub(crate) fn explain_de<'a, T: Deserialize<'a>>(bytes: &'a [u8], e: postcard::Error) -> String {
    match e {
        postcard::Error::SerdeDeCustom => capture::deserialize::<T>(bytes),
        _ => None,
    }
    .unwrap_or_else(|| e.to_string())
}

/// Appends one frame holding `message` to `out`.
///
/// On failure `out` is left as it was, so frames can be appended to a buffer
/// that already holds others.
pub fn encode_frame<M: Serialize>(message: &M, out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    if let Err(e) = append(message, out) {
        out.truncate(start);
        return Err(Error::Serialization(e.to_string()));
    }
    let len = out.len() - start - 4;
    if len > MAX_FRAME {
        out.truncate(start);
        return Err(Error::Serialization(format!(
            "message of {len} bytes exceeds the frame limit of {MAX_FRAME} bytes"
        )));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Writes one frame holding `message` to `w` (unflushed).
pub fn write_frame<M: Serialize>(w: &mut impl Write, message: &M) -> Result<(), Error> {
    let mut buf = Vec::new();
    encode_frame(message, &mut buf)?;
    w.write_all(&buf).map_err(io_error)
}

fn io_error(e: io::Error) -> Error {
    Error::Protocol(format!("i/o error: {e}"))
}

/// Reads one frame body into `buf` (replacing its contents).
///
/// Returns `Ok(false)` at a clean end of stream (no byte of a new frame);
/// a stream that ends inside a frame, or an oversized length, is an error.
/// Memory grows with the bytes actually received, not with the length a
/// frame claims.
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a frame header",
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {MAX_FRAME} bytes"),
        ));
    }
    buf.clear();
    buf.reserve(len.min(1 << 24));
    let read = r.take(len as u64).read_to_end(buf)?;
    if read != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("stream ended inside a frame ({read} of {len} bytes)"),
        ));
    }
    Ok(true)
}

/// Decodes a frame body into a message.
pub fn decode<'a, M: Deserialize<'a>>(body: &'a [u8]) -> Result<M, Error> {
    from_bytes(body).map_err(|e| Error::Protocol(format!("malformed message: {e}")))
}

/// Reads and decodes one message; `Ok(None)` at a clean end of stream.
#[cfg_attr(not(test), allow(dead_code))]
pub fn read_message<M: DeserializeOwned>(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
) -> Result<Option<M>, Error> {
    if read_frame(r, buf).map_err(io_error)? {
        decode(buf).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames<M: Serialize>(messages: &[M]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            encode_frame(m, &mut out).unwrap();
        }
        out
    }

    proptest! {
        #[test]
        fn extend_short_appends_like_extend_from_slice(
            before in proptest::collection::vec(any::<u8>(), 0..8),
            data in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut expected = before.clone();
            expected.extend_from_slice(&data);
            let mut out = before;
            extend_short(&mut out, &data);
            prop_assert_eq!(out, expected);
        }
    }

    fn decode_all(mut bytes: &[u8]) -> Result<Vec<ToWorker>, Error> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(m) = read_message(&mut bytes, &mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    fn arb_to_worker() -> impl Strategy<Value = ToWorker> {
        prop_oneof![
            (
                ".{0,20}",
                any::<u64>(),
                prop::collection::vec(any::<u8>(), 0..40)
            )
                .prop_map(|(task, fingerprint, args)| ToWorker::Init {
                    task,
                    fingerprint,
                    args: ByteBuf::from(args)
                }),
            (
                any::<u64>(),
                any::<u32>(),
                ".{0,20}",
                any::<u64>(),
                prop::collection::vec(any::<u8>(), 0..60)
            )
                .prop_map(|(id, ticket, task, fingerprint, items)| ToWorker::Run {
                    id,
                    ticket,
                    task,
                    fingerprint,
                    items: ByteBuf::from(items)
                }),
            Just(ToWorker::Shutdown),
        ]
    }

    #[test]
    fn round_trip_and_clean_eof() {
        let msgs = vec![
            ToWorker::Run {
                id: 7,
                ticket: 3,
                task: "a::b".into(),
                fingerprint: 3,
                items: ByteBuf::from(vec![1, 2]),
            },
            ToWorker::Shutdown,
        ];
        assert_eq!(decode_all(&frames(&msgs)).unwrap(), msgs);
        assert_eq!(decode_all(&[]).unwrap(), vec![]);
    }

    #[test]
    fn borrowed_messages_encode_like_owned_ones() {
        let items = vec![9; 300];
        let owned = ToWorker::Run {
            id: 1 << 40,
            ticket: 255,
            task: "x::y".into(),
            fingerprint: 99,
            items: ByteBuf::from(items.clone()),
        };
        let borrowed = ToWorkerRef::Run {
            id: 1 << 40,
            ticket: 255,
            task: "x::y",
            fingerprint: 99,
            items: serde_bytes::Bytes::new(&items),
        };
        assert_eq!(frames(&[owned]), frames(&[borrowed]));
        let owned = ToWorker::Init {
            task: "i".into(),
            fingerprint: 5,
            args: ByteBuf::from(vec![4, 5]),
        };
        let borrowed = ToWorkerRef::Init {
            task: "i",
            fingerprint: 5,
            args: serde_bytes::Bytes::new(&[4, 5]),
        };
        assert_eq!(frames(&[owned]), frames(&[borrowed]));
        assert_eq!(
            frames(&[ToWorker::Shutdown]),
            frames(&[ToWorkerRef::Shutdown])
        );
        let owned = [
            FromWorker::Ready { version: 1, pid: 2 },
            FromWorker::InitDone {
                outcome: Ok(ByteBuf::from(vec![1])),
            },
            FromWorker::InitDone {
                outcome: Err(RemoteError::UnknownTask("t".into())),
            },
            FromWorker::Done {
                id: 3,
                results: ByteBuf::from(vec![0, 1, 2]),
            },
            FromWorker::Skipped { id: 4 },
        ];
        let borrowed = [
            FromWorkerRef::Ready { version: 1, pid: 2 },
            FromWorkerRef::InitDone {
                outcome: Ok(serde_bytes::Bytes::new(&[1])),
            },
            FromWorkerRef::InitDone {
                outcome: Err(RemoteError::UnknownTask("t".into())),
            },
            FromWorkerRef::Done {
                id: 3,
                results: serde_bytes::Bytes::new(&[0, 1, 2]),
            },
            FromWorkerRef::Skipped { id: 4 },
        ];
        assert_eq!(frames(&owned), frames(&borrowed));
        let bytes = frames(&borrowed);
        let mut rest = &bytes[..];
        let mut buf = Vec::new();
        for expected in &borrowed {
            assert!(read_frame(&mut rest, &mut buf).unwrap());
            assert_eq!(&decode::<FromWorkerRef>(&buf).unwrap(), expected);
        }
    }

    #[test]
    fn oversized_length_is_an_error_without_allocating() {
        let bytes = u32::MAX.to_le_bytes();
        assert!(matches!(decode_all(&bytes), Err(Error::Protocol(_))));
        // A length under the limit but far more than what follows.
        let mut bytes = (MAX_FRAME as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(decode_all(&bytes), Err(Error::Protocol(_))));
    }

    #[test]
    fn records_round_trip() {
        let mut out = Vec::new();
        for v in [&[1u8, 2][..], &[], &[7; 70]] {
            append_record(&mut out, |o| append(serde_bytes::Bytes::new(v), o)).unwrap();
        }
        let failed: Result<(), ()> = append_record(&mut out, |o| {
            o.push(1);
            Err(())
        });
        assert!(failed.is_err());
        let got: Vec<Vec<u8>> = records(&out)
            .map(|r| from_bytes::<ByteBuf>(r.unwrap()).unwrap().into_vec())
            .collect();
        assert_eq!(got, vec![vec![1, 2], vec![], vec![7; 70]]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_all(&bytes);
            let mut buf = Vec::new();
            let _ = read_message::<FromWorker>(&mut &bytes[..], &mut buf);
            for record in records(&bytes).flatten() {
                let _ = from_bytes::<RemoteError>(record);
            }
        }

        #[test]
        fn round_trip(msgs in prop::collection::vec(arb_to_worker(), 0..6)) {
            prop_assert_eq!(decode_all(&frames(&msgs)).unwrap(), msgs);
        }

        #[test]
        fn truncated_stream_is_an_error(msgs in prop::collection::vec(arb_to_worker(), 1..4), cut in any::<prop::sample::Index>()) {
            let bytes = frames(&msgs);
            let cut = cut.index(bytes.len());
            // Cutting at a frame boundary is a clean, shorter stream.
            let result = decode_all(&bytes[..cut]);
            let mut boundary = 0;
            let mut boundaries = vec![0];
            for m in &msgs {
                boundary += frames(std::slice::from_ref(m)).len();
                boundaries.push(boundary);
            }
            if boundaries.contains(&cut) {
                prop_assert!(result.is_ok());
            } else {
                prop_assert!(result.is_err());
            }
        }

        #[test]
        fn corrupted_body_is_an_error_or_a_message(msgs in prop::collection::vec(arb_to_worker(), 1..4), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = frames(&msgs);
            let at = at.index(bytes.len());
            bytes[at] = byte;
            // Never a panic; either decodes to something or fails.
            let _ = decode_all(&bytes);
        }
    }
}
