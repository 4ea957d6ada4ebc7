//! The client side of every remote executor: how `submit` and `map` encode
//! their arguments, cut a `map` into chunks and hand each to the executor's
//! [`Dispatch`], whatever then carries the bytes.
//!
//! Guarantees:
//! * An unregistered task fails at once, before anything is queued.
//! * An argument that fails to serialize fails its own call (or, in a map,
//!   its own item) with [`Error::Serialization`] and the message of the
//!   value's own error; the other items of the chunk still run.
//! * No message exceeds [`MAX_MESSAGE`](super::message::MAX_MESSAGE): a call
//!   or a chunk over it is an error, never a worker's death.

use std::borrow::Borrow;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec;
use super::job::{Chunk, One, Payload, Sink};
use super::message::{self, MAX_MESSAGE};
use super::tasks::TaskRef;
use crate::map::{ChunkSource, Map, MapOptions, MapUnordered};
use crate::trace::TaskSpan;
use crate::{Error, Future, Promise, RegisteredTask};

/// What a remote executor does with a job: queue it for a worker. The
/// client functions build every `submit` and `map` on it.
pub(crate) trait Dispatch {
    /// The executor's name in spans and events: `process`, `mpi`, `redis`.
    fn executor(&self) -> &'static str;
    /// Queues `payload`, to be completed through `sink`; `timeout` is the
    /// job's own limit, over the executor's. Fails (without completing the
    /// sink) if the executor is broken or shut down.
    fn dispatch(
        &self,
        payload: Payload,
        sink: Box<dyn Sink>,
        timeout: Option<Duration>,
    ) -> Result<(), Error>;
}

/// Submits one call of `F` on `args`; `convert` makes the future's outcome
/// of its decoded result (see [`One`]).
pub(crate) fn submit<D, F, A, M, V>(
    dispatch: &D,
    args: &A,
    timeout: Option<Duration>,
    convert: fn(F::Output) -> Result<V, Error>,
) -> Result<Future<V>, Error>
where
    D: Dispatch + ?Sized,
    F: RegisteredTask<A, M>,
    A: Serialize + 'static,
    F::Output: DeserializeOwned + Send + 'static,
    V: Send + 'static,
{
    let task = TaskRef::of::<F, A, M>()?;
    let mut items = Vec::new();
    encode_into(args, &mut items)?;
    let (promise, future) = Promise::new();
    let span = TaskSpan::remote(dispatch.executor(), task.name, 1);
    let payload = Payload { task, items };
    let sink = One {
        promise,
        convert,
        span,
    };
    dispatch.dispatch(payload, Box::new(sink), timeout)?;
    Ok(future)
}

/// `map_with` of every remote executor: validates `options` (before
/// anything is submitted), then the results in input order.
pub(crate) fn map<'a, D, F, A, M, I>(
    dispatch: D,
    items: I,
    options: &MapOptions,
) -> Result<Map<'a, F::Output>, Error>
where
    D: Dispatch + 'a,
    F: RegisteredTask<A, M>,
    A: Serialize + 'static,
    F::Output: DeserializeOwned + Send + 'static,
    I: IntoIterator,
    I::Item: Borrow<A>,
    I::IntoIter: 'a,
{
    options.validate()?;
    let source = chunk_source::<D, F, A, M, I>(dispatch, items, options.get_chunksize())?;
    Map::new(options, source)
}

/// `map_unordered_with` of every remote executor: like [`map`], the results
/// as their chunks complete, with their input positions.
pub(crate) fn map_unordered<'a, D, F, A, M, I>(
    dispatch: D,
    items: I,
    options: &MapOptions,
) -> Result<MapUnordered<'a, F::Output>, Error>
where
    D: Dispatch + 'a,
    F: RegisteredTask<A, M>,
    A: Serialize + 'static,
    F::Output: DeserializeOwned + Send + 'static,
    I: IntoIterator,
    I::Item: Borrow<A>,
    I::IntoIter: 'a,
{
    options.validate()?;
    let source = chunk_source::<D, F, A, M, I>(dispatch, items, options.get_chunksize())?;
    MapUnordered::new(options, source)
}

/// The chunks of `map` and `map_unordered`: one job per `chunksize` items.
/// Fails at once if `F` is not registered.
pub(crate) fn chunk_source<'a, D, F, A, M, I>(
    dispatch: D,
    items: I,
    chunksize: usize,
) -> Result<ChunkSource<'a, F::Output>, Error>
where
    D: Dispatch + 'a,
    F: RegisteredTask<A, M>,
    A: Serialize + 'static,
    F::Output: DeserializeOwned + Send + 'static,
    I: IntoIterator,
    I::Item: Borrow<A>,
    I::IntoIter: 'a,
{
    let task = TaskRef::of::<F, A, M>()?;
    let mut items = items.into_iter();
    // Each chunk's buffer starts at the size of the last one, rather than
    // growing through a series of copies.
    let mut expected = 0;
    Ok(Box::new(move || {
        let mut len = 0;
        let mut failed = Vec::new();
        let mut packed = Vec::with_capacity(expected);
        for item in items.by_ref().take(chunksize) {
            if let Err(e) = encode_into(item.borrow(), &mut packed) {
                failed.push((len, e));
            }
            len += 1;
        }
        if len == 0 {
            return None;
        }
        expected = packed.len();
        let (promise, future) = Promise::new();
        let sink = Chunk {
            promise,
            len,
            failed,
            span: TaskSpan::remote(dispatch.executor(), task.name, len),
        };
        if packed.is_empty() {
            // Nothing to send: every item failed to serialize.
            Box::new(sink).complete(Ok(&[])).run();
            return Some(Ok((len, future)));
        }
        if packed.len() > MAX_MESSAGE - 4096 {
            return Some(Err(Error::Serialization(
                format!(
                    "a chunk of {} bytes exceeds the message limit",
                    packed.len()
                )
                .into(),
            )));
        }
        let payload = Payload {
            task,
            items: packed,
        };
        match dispatch.dispatch(payload, Box::new(sink), None) {
            Ok(()) => Some(Ok((len, future))),
            Err(e) => Some(Err(e)),
        }
    }))
}

/// Appends the encoded `args` to `items` as one record.
#[inline]
pub(crate) fn encode_into<A: Serialize + ?Sized>(
    args: &A,
    items: &mut Vec<u8>,
) -> Result<(), Error> {
    let start = items.len();
    if let Err(e) = message::append_record(items, |out| codec::append(args, out)) {
        return Err(unencodable_args(e));
    }
    let len = items.len() - start;
    if len > MAX_MESSAGE - 4096 {
        items.truncate(start);
        return Err(oversized_args(len));
    }
    Ok(())
}

#[cold]
#[inline(never)]
fn unencodable_args(e: codec::Error) -> Error {
    message::serialization_error("arguments failed to serialize", e.to_string())
}

#[cold]
#[inline(never)]
fn oversized_args(len: usize) -> Error {
    Error::Serialization(
        format!("arguments of {len} bytes exceed the message limit of {MAX_MESSAGE} bytes").into(),
    )
}
