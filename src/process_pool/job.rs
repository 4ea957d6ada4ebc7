//! Jobs of the process pool: what is sent, and how its answer completes a
//! typed future.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::registry::TaskRef;
use crate::wire::{self, OUTCOME_ERR, OUTCOME_OK, RemoteError};
use crate::{Error, Promise};

/// The answer to a job: one outcome record per item (see
/// [`FromWorker::Done`](crate::wire::FromWorker::Done)), or a failure of the
/// whole job.
pub(super) type Outcome<'a> = Result<&'a [u8], Error>;

/// The typed end of a job: starts, cancels and completes its future.
pub(super) trait Sink: Send {
    /// The job's promise, seen without its value type.
    fn control(&self) -> &dyn Control;
    /// Pending -> running; false if cancelled (then the job is dropped).
    fn start(&self) -> bool {
        self.control().set_running()
    }
    /// True if the future was cancelled (or aborted).
    fn is_cancelled(&self) -> bool {
        self.control().is_cancelled()
    }
    /// Cancels a pending future; false if it already runs.
    fn cancel(&self) -> bool {
        self.control().cancel()
    }
    /// What `Future::abort` calls while the job runs.
    fn set_abort_handler(&self, handler: Box<dyn FnOnce() + Send>) {
        self.control().set_abort_handler(handler);
    }
    /// Decodes the answer and completes the future.
    fn complete(self: Box<Self>, outcome: Outcome<'_>);
    /// Completes the future with an error.
    fn fail(self: Box<Self>, error: Error) {
        self.complete(Err(error));
    }
}

/// What the pool does to a job's promise whatever its value type, so that
/// every sink shares it.
pub(super) trait Control {
    fn set_running(&self) -> bool;
    fn is_cancelled(&self) -> bool;
    fn cancel(&self) -> bool;
    fn set_abort_handler(&self, handler: Box<dyn FnOnce() + Send>);
}

impl<T> Control for Promise<T> {
    fn set_running(&self) -> bool {
        Promise::set_running(self)
    }
    fn is_cancelled(&self) -> bool {
        Promise::is_cancelled(self)
    }
    fn cancel(&self) -> bool {
        Promise::cancel(self)
    }
    fn set_abort_handler(&self, handler: Box<dyn FnOnce() + Send>) {
        Promise::set_abort_handler(self, handler);
    }
}

/// What goes over the wire for a job.
pub(super) struct Payload {
    pub(super) task: TaskRef,
    /// The encoded arguments of each call, packed as records.
    pub(super) items: Vec<u8>,
}

/// One queued or running message: a single call or a chunk of calls.
pub(super) struct Job {
    pub(super) id: u64,
    pub(super) payload: Arc<Payload>,
    pub(super) sink: Box<dyn Sink>,
    /// `start` succeeded once (a job put back after its worker died).
    pub(super) started: bool,
    /// Run alone: the job shared a batch with a task that killed its worker,
    /// so it runs by itself to find out whether it is the culprit.
    pub(super) solo: bool,
}

/// Decodes one outcome record.
fn decode<R: DeserializeOwned>(record: Result<&[u8], Error>) -> Result<R, Error> {
    let value = match record?.split_first() {
        Some((&OUTCOME_OK, value)) => value,
        Some((&OUTCOME_ERR, error)) => {
            return Err(match wire::from_bytes::<RemoteError>(error) {
                Ok(remote) => remote.into(),
                Err(e) => Error::Protocol(format!("malformed error record: {e}")),
            });
        }
        _ => return Err(Error::Protocol("malformed result record".into())),
    };
    // A user's `Deserialize` may panic; it must not take the pool down.
    let decode = || wire::from_bytes::<R>(value).map_err(|e| wire::explain_de::<R>(value, e));
    match catch_unwind(AssertUnwindSafe(decode)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Error::Serialization(format!(
            "result failed to deserialize in the parent: {e}"
        ))),
        Err(payload) => Err(Error::Panicked {
            message: crate::error::panic_message(payload.as_ref()),
            location: None,
            backtrace: Some("in the result's Deserialize implementation".into()),
        }),
    }
}

/// The sink of `submit`: one call, one value.
pub(super) struct One<R> {
    pub(super) promise: Promise<R>,
}

impl<R: DeserializeOwned + Send + 'static> Sink for One<R> {
    fn control(&self) -> &dyn Control {
        &self.promise
    }
    fn complete(self: Box<Self>, outcome: Outcome<'_>) {
        let result = outcome.and_then(|results| {
            let mut records = wire::records(results);
            match (records.next(), records.next()) {
                (Some(record), None) => decode(record),
                _ => Err(Error::Protocol("expected exactly one result".into())),
            }
        });
        // Already cancelled or aborted: nothing to report.
        let _ = self.promise.set_outcome(result);
    }
}

/// The sink of a `map` chunk: one result per item, some of which may have
/// failed to serialize before anything was sent.
pub(super) struct Chunk<R> {
    pub(super) promise: Promise<Vec<Result<R, Error>>>,
    /// How many items the chunk has.
    pub(super) len: usize,
    /// The items that failed locally (and were not sent), by position.
    pub(super) failed: Vec<(usize, Error)>,
}

impl<R: DeserializeOwned + Send + 'static> Sink for Chunk<R> {
    fn control(&self) -> &dyn Control {
        &self.promise
    }
    fn complete(self: Box<Self>, outcome: Outcome<'_>) {
        let Chunk {
            promise,
            len,
            failed,
        } = *self;
        let result = outcome.and_then(|results| {
            let mut records = wire::records(results);
            let mut failed = failed.into_iter().peekable();
            let values: Vec<Result<R, Error>> = (0..len)
                .map(|i| match failed.next_if(|(at, _)| *at == i) {
                    Some((_, e)) => Err(e),
                    None => records
                        .next()
                        .map_or_else(|| Err(Error::Protocol("missing result".into())), decode),
                })
                .collect();
            if records.next().is_some() {
                return Err(Error::Protocol("more results than items".into()));
            }
            Ok(values)
        });
        let _ = promise.set_outcome(result);
    }
}
