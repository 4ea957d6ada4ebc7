//! Jobs of a remote executor: what is sent, and how its answer completes a
//! typed future.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::codec;
use super::message::{self, OUTCOME_ERR, OUTCOME_OK, RemoteError};
use super::tasks::TaskRef;
use crate::future::state::{AbortHandler, StartGate};
use crate::future::{Canceller, DeferredCallbacks};
use crate::map::ChunkResults;
use crate::trace::TaskSpan;
use crate::{Error, Promise};

/// The answer to a job: one outcome record per item (see
/// [`FromWorker::Done`](super::message::FromWorker::Done)), or a failure of the
/// whole job.
pub(crate) type Outcome<'a> = Result<&'a [u8], Error>;

/// The typed end of a job: gates, cancels and completes its future.
///
/// A job's future stays pending while the job is queued *and* while it
/// waits in a worker: its start is decided on the worker's ticket board,
/// through the gate installed when it is sent.
pub(crate) trait Sink: Send {
    /// The job's promise, seen without its value type.
    fn control(&self) -> &dyn Control;
    /// True while nothing has decided the job's fate (not cancelled, not
    /// started, not finished).
    fn is_pending(&self) -> bool {
        !self.control().is_done()
    }
    /// Marks a pending future running (for a transport where a sent job
    /// counts as started); false if it was cancelled: do not send it.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    fn start(&self) -> bool {
        self.control().set_running()
    }
    /// Cancels a pending future; false if it already runs.
    fn cancel(&self) -> bool {
        self.control().cancel()
    }
    /// Hands the job's start to its ticket, as it is sent, and installs
    /// what `Future::abort` calls while it runs (if given). False if the
    /// future is no longer pending (cancelled meanwhile): do not send it.
    fn set_gate(&self, gate: Box<dyn StartGate>, abort: Option<AbortHandler>) -> bool {
        self.control().set_gate(gate, abort)
    }
    /// The job came back unstarted from a dead worker. False if it was
    /// cancelled meanwhile.
    fn clear_gate(&self) -> bool {
        self.control().clear_gate()
    }
    /// A handle to cancel the job's future once the lock is released.
    fn canceller(&self) -> Canceller {
        self.control().canceller()
    }
    /// Decodes the answer and completes the future; its done callbacks are
    /// returned, to run off the calling (pool-internal) thread.
    fn complete(self: Box<Self>, outcome: Outcome<'_>) -> DeferredCallbacks;
    /// Completes the future with an error.
    fn fail(self: Box<Self>, error: Error) -> DeferredCallbacks {
        self.complete(Err(error))
    }
    /// The job's span, if it has one (the client's sinks do; a worker's
    /// forwarding sinks do not).
    #[cfg(feature = "tracing")]
    fn span(&self) -> Option<&TaskSpan> {
        None
    }
}

/// What the pool does to a job's promise whatever its value type, so that
/// every sink shares it.
pub(crate) trait Control {
    fn is_done(&self) -> bool;
    fn cancel(&self) -> bool;
    fn set_running(&self) -> bool;
    fn set_gate(&self, gate: Box<dyn StartGate>, abort: Option<AbortHandler>) -> bool;
    fn clear_gate(&self) -> bool;
    fn canceller(&self) -> Canceller;
    /// What `Future::abort` calls while the job runs (for a transport where
    /// a sent job counts as started).
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    fn set_abort_handler(&self, handler: AbortHandler);
}

impl<T: Send + 'static> Control for Promise<T> {
    fn is_done(&self) -> bool {
        Promise::is_done(self)
    }
    fn cancel(&self) -> bool {
        Promise::cancel(self)
    }
    fn set_running(&self) -> bool {
        Promise::set_running(self)
    }
    fn set_gate(&self, gate: Box<dyn StartGate>, abort: Option<AbortHandler>) -> bool {
        Promise::set_gate(self, gate, abort)
    }
    fn clear_gate(&self) -> bool {
        Promise::clear_gate(self)
    }
    fn canceller(&self) -> Canceller {
        Promise::canceller(self)
    }
    fn set_abort_handler(&self, handler: AbortHandler) {
        Promise::set_abort_handler(self, handler)
    }
}

/// Completes `promise`, leaving its callbacks to the caller; a future that
/// was cancelled or aborted meanwhile has nothing to report.
fn settle<T: Send + 'static>(promise: &Promise<T>, outcome: Result<T, Error>) -> DeferredCallbacks {
    promise
        .set_outcome_deferring(outcome)
        .unwrap_or_else(|_| DeferredCallbacks::none())
}

/// What goes over the wire for a job.
pub(crate) struct Payload {
    pub(crate) task: TaskRef,
    /// The encoded arguments of each call, packed as records.
    pub(crate) items: Vec<u8>,
}

/// One queued or sent request to run a payload: a single call or a chunk
/// of calls.
pub(crate) struct Request {
    pub(crate) id: u64,
    pub(crate) payload: Arc<Payload>,
    pub(crate) sink: Box<dyn Sink>,
    /// Its ticket on the board of the worker it was sent to.
    pub(crate) ticket: u32,
    /// Its abort handler is installed (on its first sending).
    pub(crate) abortable: bool,
    /// Its own per-task timeout, over the pool's.
    pub(crate) timeout: Option<Duration>,
}

impl Request {
    pub(crate) fn new(
        id: u64,
        payload: Payload,
        sink: Box<dyn Sink>,
        timeout: Option<Duration>,
    ) -> Request {
        Request {
            id,
            payload: Arc::new(payload),
            sink,
            ticket: 0,
            abortable: false,
            timeout,
        }
    }
}

/// Decodes one outcome record, under a panic guard of its own. Always
/// inlined, with every failure out of line.
#[inline(always)]
fn decode<R: DeserializeOwned>(record: &[u8]) -> Result<R, Error> {
    // A user's `Deserialize` may panic; it must not take the pool down.
    catch_unwind(AssertUnwindSafe(|| decode_unguarded(record)))
        .unwrap_or_else(|payload| Err(panicked_decoding_result(payload)))
}

/// Decodes one outcome record; a panic of the value's `Deserialize` is the
/// caller's to catch.
#[inline(always)]
fn decode_unguarded<R: DeserializeOwned>(record: &[u8]) -> Result<R, Error> {
    match record.split_first() {
        Some((&OUTCOME_OK, value)) => match codec::from_bytes::<R>(value) {
            Ok(value) => Ok(value),
            Err(e) => Err(undecodable_result(e)),
        },
        _ => Err(failure_record(record)),
    }
}

/// The error of a result record that did not decode as an `R`.
#[cold]
#[inline(never)]
fn undecodable_result(e: codec::Error) -> Error {
    message::serialization_error("result failed to deserialize in the parent", e.to_string())
}

/// The error of a result whose `Deserialize` panicked.
#[cold]
#[inline(never)]
fn panicked_decoding_result(payload: Box<dyn std::any::Any + Send>) -> Error {
    Error::Panicked {
        message: crate::error::panic_message(payload.as_ref()),
        location: None,
        backtrace: Some(String::from("in the result's Deserialize implementation").into()),
    }
}

/// The error a record that is not a value carries: the task's failure, or
/// a protocol error if the record is malformed.
#[cold]
#[inline(never)]
fn failure_record(record: &[u8]) -> Error {
    match record.split_first() {
        Some((&OUTCOME_ERR, error)) => match codec::from_bytes::<RemoteError>(error) {
            Ok(remote) => remote.into(),
            Err(e) => Error::Protocol(format!("malformed error record: {e}")),
        },
        _ => Error::Protocol("malformed result record".into()),
    }
}

/// The sink of `submit`: one call, one value. `convert` turns the decoded
/// result into the future's outcome: `Ok` for `submit`, and for
/// `submit_fallible` the split of a `Result` whose `Err` fails the future.
pub(crate) struct One<R, V = R> {
    pub(crate) promise: Promise<V>,
    pub(crate) convert: fn(R) -> Result<V, Error>,
    pub(crate) span: TaskSpan,
}

impl<R, V> Sink for One<R, V>
where
    R: DeserializeOwned + Send + 'static,
    V: Send + 'static,
{
    fn control(&self) -> &dyn Control {
        &self.promise
    }
    fn complete(self: Box<Self>, outcome: Outcome<'_>) -> DeferredCallbacks {
        let result = outcome.and_then(|results| {
            let mut records = message::records(results);
            match (records.next(), records.next()) {
                (Some(record), None) => record.and_then(decode),
                _ => Err(Error::Protocol("expected exactly one result".into())),
            }
        });
        let outcome = result.and_then(self.convert);
        self.span.finished(&outcome);
        settle(&self.promise, outcome)
    }
    #[cfg(feature = "tracing")]
    fn span(&self) -> Option<&TaskSpan> {
        Some(&self.span)
    }
}

/// The sink of a `map` chunk: one result per item, some of which may have
/// failed to serialize before anything was sent. The answer is decoded as
/// it arrives, on the thread that reads it (as `submit`'s is), in one
/// monomorphic loop: the `map` consumer then only takes values.
pub(crate) struct Chunk<R> {
    pub(crate) promise: Promise<ChunkResults<R>>,
    /// How many items the chunk has.
    pub(crate) len: usize,
    /// The items that failed locally (and were not sent), by position.
    pub(crate) failed: Vec<(usize, Error)>,
    pub(crate) span: TaskSpan,
}

impl<R: DeserializeOwned + Send + 'static> Sink for Chunk<R> {
    fn control(&self) -> &dyn Control {
        &self.promise
    }
    fn complete(self: Box<Self>, outcome: Outcome<'_>) -> DeferredCallbacks {
        let Chunk {
            promise,
            len,
            failed,
            span,
        } = *self;
        let result = outcome.map(|results| decode_chunk(results, len, failed));
        span.finished(&result);
        settle(&promise, result)
    }
    #[cfg(feature = "tracing")]
    fn span(&self) -> Option<&TaskSpan> {
        Some(&self.span)
    }
}

/// Decodes a chunk's answer: one result per item, each its own record or
/// its local failure (`failed`, by position). An answer with too few or
/// too many records fails every item: which result belongs to which item
/// is then unknown.
fn decode_chunk<R: DeserializeOwned + Send + 'static>(
    bytes: &[u8],
    len: usize,
    failed: Vec<(usize, Error)>,
) -> ChunkResults<R> {
    let sent = len - failed.len();
    let mut values = Vec::with_capacity(sent);
    let mut failures = Vec::with_capacity(failed.len());
    let mut failed = failed.into_iter().peekable();
    let mut rest = bytes;
    let mut answered = 0;
    let mut position = 0;
    // One panic guard covers a run of items, not each item: a guard per
    // item handed each result back through memory, and reading it back
    // stalled on the store (a failed store-to-load forward) at a cost
    // larger than the decoding. A panic fails the item it came from; the
    // items after it are decoded under a new guard.
    while position < len {
        let guarded = catch_unwind(AssertUnwindSafe(|| {
            while position < len {
                let at = position;
                position += 1;
                if failed.peek().is_some_and(|(p, _)| *p == at) {
                    failures.extend(failed.next());
                    continue;
                }
                let Some(record) = message::take_record(&mut rest) else {
                    return false;
                };
                answered += 1;
                match decode_unguarded(record) {
                    Ok(value) => values.push(value),
                    Err(error) => failures.push((at, error)),
                }
            }
            true
        }));
        match guarded {
            Ok(true) => {}
            Ok(false) => break,
            Err(payload) => failures.push((position - 1, panicked_decoding_result(payload))),
        }
    }
    if answered < sent || !rest.is_empty() {
        return miscounted(bytes, len, sent);
    }
    ChunkResults::new(values, failures)
}

/// The results of a chunk whose answer does not have one record per item
/// sent: every item fails.
#[cold]
#[inline(never)]
fn miscounted<R: Send + 'static>(bytes: &[u8], len: usize, sent: usize) -> ChunkResults<R> {
    let answered = message::records(bytes).count();
    let error = Error::Protocol(format!("{answered} results for {sent} items"));
    ChunkResults::new(Vec::new(), (0..len).map(|p| (p, error.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_record(out: &mut Vec<u8>, value: u32) {
        message::append_record(out, |o| {
            o.push(OUTCOME_OK);
            codec::append(&value, o)
        })
        .unwrap();
    }

    fn err_record(out: &mut Vec<u8>, what: &str) {
        let error = RemoteError::UnknownTask(what.into());
        message::append_record(out, |o| {
            o.push(OUTCOME_ERR);
            codec::append(&error, o)
        })
        .unwrap();
    }

    fn shown(results: ChunkResults<u32>) -> Vec<String> {
        results
            .map(|r| match r {
                Ok(v) => v.to_string(),
                Err(Error::UnknownTask(t) | Error::InvalidState(t)) => t,
                Err(e) => format!("other: {e}"),
            })
            .collect()
    }

    #[test]
    fn a_chunk_merges_its_records_with_its_local_failures_in_order() {
        let mut bytes = Vec::new();
        ok_record(&mut bytes, 10);
        err_record(&mut bytes, "remote");
        ok_record(&mut bytes, 30);
        let local = |p: usize| (p, Error::InvalidState(format!("local {p}")));
        let results = decode_chunk::<u32>(&bytes, 5, vec![local(0), local(3)]);
        assert_eq!(shown(results), ["local 0", "10", "remote", "local 3", "30"]);
    }

    /// A value whose `Deserialize` panics on 13.
    #[derive(Debug)]
    struct Touchy(u32);

    impl<'de> serde::Deserialize<'de> for Touchy {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Touchy, D::Error> {
            let n = u32::deserialize(d)?;
            assert_ne!(n, 13, "13 is unlucky");
            Ok(Touchy(n))
        }
    }

    #[test]
    fn a_panicking_deserialize_fails_its_own_item_and_decoding_goes_on() {
        let mut bytes = Vec::new();
        for n in [13, 1, 13, 13, 2, 13] {
            ok_record(&mut bytes, n);
        }
        let local = (3, Error::InvalidState("local".into()));
        let results: Vec<_> = decode_chunk::<Touchy>(&bytes, 7, vec![local])
            .map(|r| match r {
                Ok(Touchy(n)) => n.to_string(),
                Err(Error::Panicked { message, .. }) => message,
                Err(e) => e.to_string(),
            })
            .collect();
        let unlucky = |m: &String| m.contains("13 is unlucky");
        assert_eq!(results.len(), 7, "{results:?}");
        assert!(unlucky(&results[0]), "{results:?}");
        assert_eq!(results[1], "1");
        assert!(unlucky(&results[2]));
        assert!(results[3].contains("local"));
        assert!(unlucky(&results[4]));
        assert_eq!(results[5], "2");
        assert!(unlucky(&results[6]));
    }

    #[test]
    fn an_answer_with_too_few_or_too_many_records_fails_every_item() {
        let mut two = Vec::new();
        ok_record(&mut two, 1);
        ok_record(&mut two, 2);
        for (bytes, len) in [(&two, 3), (&two, 1), (&two[..two.len() - 1].to_vec(), 2)] {
            let results: Vec<_> = decode_chunk::<u32>(bytes, len, Vec::new()).collect();
            assert_eq!(results.len(), len);
            assert!(
                results
                    .iter()
                    .all(|r| matches!(r, Err(Error::Protocol(m)) if m.contains("results for"))),
                "{results:?}"
            );
        }
    }
}
