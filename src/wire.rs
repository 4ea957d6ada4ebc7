//! The wire protocol between a pool and the workers that run its tasks.
//!
//! Small, versioned and framed, so that the same protocol (and the same
//! [`registry`](crate::registry)) can serve workers on other machines:
//!
//! * A **frame** is a 4-byte little-endian length followed by that many bytes
//!   of body, at most [`MAX_FRAME`]. A truncated frame, an oversized length
//!   or a body that does not decode is an error, never a panic or a hang.
//! * A **body** is one message, [`ToWorker`] or [`FromWorker`], encoded with
//!   [`postcard`] (a maintained, compact serde format). Task arguments and
//!   results are themselves postcard bytes inside the message.
//! * The worker speaks first: [`FromWorker::Ready`] carries its
//!   [`PROTOCOL_VERSION`] and pid; the pool refuses any other version.
//! * Tasks are named by their stable registry name plus a fingerprint of
//!   their types, never by address.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
pub use serde_bytes::ByteBuf;

use crate::Error;

/// The version of this protocol, sent by the worker in its first message.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame body accepted, in bytes (1 GiB).
pub const MAX_FRAME: usize = 1 << 30;

/// Messages from a pool to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Run a task on each item of a batch, in order, and answer with one
    /// [`FromWorker::Done`] holding one outcome per item.
    Run {
        /// The pool's id of this batch, echoed in the answer.
        id: u64,
        /// The registered name of the task.
        task: String,
        /// The fingerprint of its argument and result types.
        fingerprint: u64,
        /// The postcard-encoded arguments, one per call.
        items: Vec<ByteBuf>,
    },
    /// Finish and exit (closing the connection means the same).
    Shutdown,
}

/// [`ToWorker`] by reference: encodes to the same bytes without copying the
/// payloads first (what the pool sends).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) enum ToWorkerRef<'a> {
    /// [`ToWorker::Init`].
    Init {
        task: &'a str,
        fingerprint: u64,
        args: &'a serde_bytes::Bytes,
    },
    /// [`ToWorker::Run`].
    Run {
        id: u64,
        task: &'a str,
        fingerprint: u64,
        items: &'a [ByteBuf],
    },
}

/// Messages from a worker to its pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The outcomes of a [`ToWorker::Run`] batch, one per item, in order.
    Done {
        /// The id of the batch.
        id: u64,
        /// The encoded results, or why each failed.
        results: Vec<Result<ByteBuf, RemoteError>>,
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
                backtrace,
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

/// Decodes a whole postcard body; trailing bytes are an error.
pub(crate) fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(postcard::Error::DeserializeBadEncoding)
    }
}

/// Appends one frame holding `message` to `out`.
pub fn encode_frame<M: Serialize>(message: &M, out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let encoded = postcard::to_extend(message, std::mem::take(out));
    *out = encoded.map_err(|e| Error::Serialization(e.to_string()))?;
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
pub fn decode<M: DeserializeOwned>(body: &[u8]) -> Result<M, Error> {
    from_bytes(body).map_err(|e| Error::Protocol(format!("malformed message: {e}")))
}

/// Reads and decodes one message; `Ok(None)` at a clean end of stream.
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
            (".{0,20}", any::<u64>(), prop::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(task, fingerprint, args)| ToWorker::Init {
                    task,
                    fingerprint,
                    args: ByteBuf::from(args)
                }),
            (
                any::<u64>(),
                ".{0,20}",
                any::<u64>(),
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..5)
            )
                .prop_map(|(id, task, fingerprint, items)| ToWorker::Run {
                    id,
                    task,
                    fingerprint,
                    items: items.into_iter().map(ByteBuf::from).collect()
                }),
            Just(ToWorker::Shutdown),
        ]
    }

    #[test]
    fn round_trip_and_clean_eof() {
        let msgs = vec![
            ToWorker::Run {
                id: 7,
                task: "a::b".into(),
                fingerprint: 3,
                items: vec![ByteBuf::from(vec![1, 2]), ByteBuf::new()],
            },
            ToWorker::Shutdown,
        ];
        assert_eq!(decode_all(&frames(&msgs)).unwrap(), msgs);
        assert_eq!(decode_all(&[]).unwrap(), vec![]);
    }

    #[test]
    fn borrowed_messages_encode_like_owned_ones() {
        let items = vec![ByteBuf::from(vec![1, 2, 3]), ByteBuf::from(vec![9; 300])];
        let owned = ToWorker::Run {
            id: 1 << 40,
            task: "x::y".into(),
            fingerprint: 99,
            items: items.clone(),
        };
        let borrowed = ToWorkerRef::Run {
            id: 1 << 40,
            task: "x::y",
            fingerprint: 99,
            items: &items,
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

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_all(&bytes);
            let mut buf = Vec::new();
            let _ = read_message::<FromWorker>(&mut &bytes[..], &mut buf);
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
