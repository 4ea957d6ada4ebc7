//! Byte-stream framing of [messages](super::message), for transports that
//! carry a stream (the process pool's socket pair); MPI and Redis carry
//! whole messages and need none of this.
//!
//! A **frame** is a 4-byte little-endian length followed by that many bytes
//! of body, at most [`MAX_FRAME`]. A truncated frame, an oversized length or
//! a body that does not decode is an error, never a panic or a hang.

use std::io::{self, Read, Write};

use serde::Serialize;
#[cfg(test)]
use serde::de::DeserializeOwned;

use super::message::append;
#[cfg(test)]
use super::message::decode;
use crate::Error;
use crate::error::Cause;

/// The largest frame body accepted: the largest message.
pub(crate) const MAX_FRAME: usize = super::message::MAX_MESSAGE;

/// Appends one frame holding `message` to `out`.
///
/// On failure `out` is left as it was, so frames can be appended to a buffer
/// that already holds others.
pub(crate) fn encode_frame<M: Serialize>(message: &M, out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    if let Err(e) = append(message, out) {
        out.truncate(start);
        return Err(Error::Serialization(Cause::with_source(e.to_string(), e)));
    }
    let len = out.len() - start - 4;
    seal(out, start, len)
}

/// Writes `len` into the header of the frame that starts at `start`; a
/// frame over the limit is taken off `out` and is an error.
fn seal(out: &mut Vec<u8>, start: usize, len: usize) -> Result<(), Error> {
    if len > MAX_FRAME {
        out.truncate(start);
        return Err(Error::Serialization(
            format!("message of {len} bytes exceeds the frame limit of {MAX_FRAME} bytes").into(),
        ));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Appends the frame of `message` but for the bytes of its last field, a
/// byte string of `tail` bytes (which `message` must hold empty): the
/// frame's length counts them, and the caller writes them right after, from
/// where they are, rather than copying them into `out`.
///
/// This leans on postcard's layout: a message's last field comes last, and
/// a byte string is its length (a varint) and then its bytes. The tests
/// check that head and tail make the same frame as [`encode_frame`].
pub(crate) fn encode_frame_head<M: Serialize>(
    message: &M,
    tail: usize,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let start = out.len();
    encode_frame(message, out)?;
    // The empty byte string is its length, 0: one byte, replaced by `tail`.
    debug_assert_eq!(out.last(), Some(&0), "the last field must be empty");
    out.pop();
    let mut rest = tail as u64;
    loop {
        let byte = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    let len = out.len() - start - 4 + tail;
    seal(out, start, len)
}

/// `write_all` of `bufs` in order, with as few system calls as the stream
/// allows (`Write::write_all_vectored` is not stable).
pub(crate) fn write_all_vectored(
    mut w: impl Write,
    mut bufs: &mut [io::IoSlice<'_>],
) -> io::Result<()> {
    io::IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes one frame holding `message` to `w` (unflushed).
pub(crate) fn write_frame<M: Serialize>(w: &mut impl Write, message: &M) -> Result<(), Error> {
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
pub(crate) fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<bool> {
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

/// Reads and decodes one message; `Ok(None)` at a clean end of stream.
#[cfg(test)]
pub(crate) fn read_message<M: DeserializeOwned>(
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
    use crate::WorkerId;
    use crate::remote::message::{
        ByteBuf, FromWorker, FromWorkerRef, RemoteError, ToWorker, ToWorkerRef, decode,
        ready_version,
    };
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
            FromWorker::Ready {
                version: 1,
                build: 7,
                worker: WorkerId::process(2),
            },
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
            FromWorkerRef::Ready {
                version: 1,
                build: 7,
                worker: WorkerId::process(2),
            },
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
            let version = matches!(expected, FromWorkerRef::Ready { .. }).then_some(1);
            assert_eq!(ready_version(&buf), version);
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

    /// A stream that takes a few bytes per call, and is interrupted every
    /// other call.
    struct Trickle {
        out: Vec<u8>,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 2 == 0 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(3);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_vectored_write_survives_short_and_interrupted_writes() {
        let parts: [&[u8]; 4] = [b"head", b"", b"items of a job", b"x"];
        let mut slices = parts.map(io::IoSlice::new);
        let mut w = Trickle {
            out: Vec::new(),
            calls: 0,
        };
        write_all_vectored(&mut w, &mut slices).unwrap();
        assert_eq!(w.out, parts.concat());
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

        /// A head and its items, written one after the other, are the same
        /// frame as the whole message, whatever the sizes (the items'
        /// length takes one varint byte or several).
        #[test]
        fn a_head_then_its_items_is_the_whole_frame(
            id in any::<u64>(),
            ticket in any::<u32>(),
            task in ".{0,20}",
            fingerprint in any::<u64>(),
            len in prop_oneof![0usize..200, 200usize..70_000],
        ) {
            let items: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let run = |items: &[u8]| {
                let items = serde_bytes::Bytes::new(items);
                let m = ToWorkerRef::Run { id, ticket, task: &task, fingerprint, items };
                let mut out = vec![7u8]; // frames go after what a buffer holds
                encode_frame(&m, &mut out).map(|()| out)
            };
            let whole = run(&items).unwrap();
            let mut split = vec![7u8];
            let m = ToWorkerRef::Run {
                id, ticket, task: &task, fingerprint, items: serde_bytes::Bytes::new(&[]),
            };
            encode_frame_head(&m, items.len(), &mut split).unwrap();
            let mut written = Vec::new();
            let mut slices = [io::IoSlice::new(&split), io::IoSlice::new(&items)];
            write_all_vectored(&mut written, &mut slices).unwrap();
            prop_assert_eq!(written, whole);
        }
    }
}
