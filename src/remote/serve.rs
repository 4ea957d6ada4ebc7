//! The worker's dispatch core, shared by every transport's worker loop:
//! find a task by name and fingerprint, call it on each item under a panic
//! guard, and append one outcome record per item.
//!
//! Guarantees:
//! * Only registered tasks run, and only with the fingerprint they were
//!   registered with; anything else is an error record per item, never a
//!   call.
//! * A panic, or arguments that do not decode, fail their own item: the
//!   items after it still run, and the loop goes on.
//! * Bytes that are not well-formed records make [`run`] return false (the
//!   transport decides what that means); they never panic.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec;
use super::message::{self, OUTCOME_ERR, OUTCOME_OK, RemoteError};
use super::tasks::{self, TaskEntry};

/// Runs the initializer `task` on `args` (one call's encoded arguments),
/// its encoded result into `out`.
pub(crate) fn init(
    task: &str,
    fingerprint: u64,
    args: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), RemoteError> {
    let entry = find(task, fingerprint)?;
    let mut items = Vec::with_capacity(args.len() + 5);
    message::append_record(&mut items, |o| {
        o.extend_from_slice(args);
        Ok::<(), ()>(())
    })
    .expect("appending bytes cannot fail");
    let start = out.len();
    if !run_entry(entry, &items, out) {
        unreachable!("a record just packed is well formed");
    }
    // One outcome record: its header and outcome byte go, the value stays.
    let mut answer = &out[start..];
    let record = message::take_record(&mut answer).expect("run_entry wrote one record");
    let outcome = record[0];
    let value_at = out.len() - record.len() + 1;
    out.drain(start..value_at);
    match outcome {
        OUTCOME_OK => Ok(()),
        _ => {
            let error =
                codec::from_bytes(&out[start..]).unwrap_or_else(|e| RemoteError::Panicked {
                    message: format!("malformed error record: {e}"),
                    location: None,
                    backtrace: None,
                });
            out.truncate(start);
            Err(error)
        }
    }
}

/// One error record per item of `items`, each `error`.
pub(crate) fn fail_each(items: &[u8], error: &RemoteError) -> Vec<u8> {
    let mut errors = Vec::new();
    for _ in message::records(items) {
        push_error(&mut errors, error);
    }
    errors
}

fn panicked(error: crate::Error) -> RemoteError {
    match error {
        crate::Error::Panicked {
            message,
            location,
            backtrace,
        } => RemoteError::Panicked {
            message,
            location,
            backtrace: backtrace.map(|b| b.as_str().to_owned()),
        },
        other => RemoteError::Panicked {
            message: other.to_string(),
            location: None,
            backtrace: None,
        },
    }
}

/// Appends an error record holding `error`.
#[cold]
#[inline(never)]
pub(crate) fn push_error(out: &mut Vec<u8>, error: &RemoteError) {
    let pushed = message::append_record(out, |o| {
        o.push(OUTCOME_ERR);
        codec::append(error, o)
    });
    debug_assert!(pushed.is_ok(), "a RemoteError always serializes");
}

/// Runs every item of a `Run` message, appending one outcome record per
/// item to `results`; false if the items are malformed.
pub(crate) fn run(task: &str, fingerprint: u64, items: &[u8], results: &mut Vec<u8>) -> bool {
    match find(task, fingerprint) {
        Ok(entry) => run_entry(entry, items, results),
        Err(e) => {
            for args in message::records(items) {
                if args.is_err() {
                    return false;
                }
                push_error(results, &e);
            }
            true
        }
    }
}

/// [`run`] for a task found.
///
/// One panic guard covers a run of items rather than each item (it is most
/// of the per-item cost of a tiny task): a panic fails the item it came
/// from, and the items after it run under a new guard.
fn run_entry(entry: &TaskEntry, items: &[u8], results: &mut Vec<u8>) -> bool {
    let mut batch = Batch {
        rest: items,
        results,
        started: 0,
    };
    loop {
        let guarded = crate::panic::catch(|| (entry.run)(&mut batch));
        match guarded {
            Ok(well_formed) => return well_formed,
            Err(panic) => {
                // The item being run panicked: drop what it half wrote.
                batch.results.truncate(batch.started);
                push_error(batch.results, &panicked(panic));
            }
        }
    }
}

/// The calls of one job, as a task's registration runs them (see
/// [`run_batch`]): the argument records still to run, and the outcome
/// records written so far, one per call. Not for direct use.
#[doc(hidden)]
pub struct Batch<'a> {
    rest: &'a [u8],
    results: &'a mut Vec<u8>,
    /// Where the outcome record of the call being run starts: what a panic
    /// truncates the results to.
    started: usize,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("unread", &self.rest.len())
            .field("results", &self.results.len())
            .finish()
    }
}

impl<'a> Batch<'a> {
    /// The next call's encoded arguments: `None` at the end, `Some(Err)`
    /// if the records are malformed.
    #[inline(always)]
    fn next_args(&mut self) -> Option<Result<&'a [u8], ()>> {
        if self.rest.is_empty() {
            return None;
        }
        self.started = self.results.len();
        Some(message::take_record(&mut self.rest).ok_or(()))
    }

    /// Appends the outcome record of a call that returned `value`.
    #[inline(always)]
    fn push_value<R: Serialize>(&mut self, value: &R) {
        let pushed = message::append_record(self.results, |o| {
            o.push(OUTCOME_OK);
            codec::append(value, o)
        });
        if let Err(e) = pushed {
            let error = unencodable_result(e);
            push_error(self.results, &error);
        }
    }
}

#[cold]
#[inline(never)]
fn unencodable_result(e: codec::Error) -> RemoteError {
    RemoteError::Serialization {
        what: "result failed to serialize in the worker".into(),
        why: e.to_string(),
    }
}

#[cold]
#[inline(never)]
fn undecodable_args(e: codec::Error) -> RemoteError {
    RemoteError::Serialization {
        what: "arguments failed to deserialize in the worker".into(),
        why: e.to_string(),
    }
}

/// Runs `f` on each call of `batch`: decodes its arguments, calls, appends
/// the encoded result; a call whose arguments do not decode, or whose result
/// does not encode, gets an error record instead. False if the records are
/// malformed. What `#[task]` registers, one copy per task, so that the loop
/// over a chunk's items is one monomorphic function. Not for direct use.
#[doc(hidden)]
#[inline]
pub fn run_batch<A, R>(batch: &mut Batch<'_>, f: impl Fn(A) -> R) -> bool
where
    A: DeserializeOwned,
    R: Serialize,
{
    while let Some(args) = batch.next_args() {
        let Ok(args) = args else { return false };
        match codec::from_bytes::<A>(args) {
            Ok(args) => {
                let result = f(args);
                batch.push_value(&result);
            }
            Err(e) => {
                let error = undecodable_args(e);
                push_error(batch.results, &error);
            }
        }
    }
    true
}

fn find(task: &str, fingerprint: u64) -> Result<&'static TaskEntry, RemoteError> {
    let entry = tasks::lookup(task).ok_or_else(|| RemoteError::UnknownTask(task.to_owned()))?;
    let expected = entry.fingerprint;
    if expected != fingerprint {
        return Err(RemoteError::TypeMismatch {
            task: task.to_owned(),
            expected,
            found: fingerprint,
        });
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::message::{self as wire};

    #[crate::task]
    fn double(n: u32) -> u32 {
        n * 2
    }

    fn packed(items: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        for item in items {
            wire::append_record(&mut out, |o| codec::append(item, o)).unwrap();
        }
        out
    }

    fn outcomes(results: &[u8]) -> Vec<Result<u32, RemoteError>> {
        wire::records(results)
            .map(|r| match r.unwrap().split_first() {
                Some((&wire::OUTCOME_OK, v)) => Ok(codec::from_bytes(v).unwrap()),
                Some((&wire::OUTCOME_ERR, e)) => Err(codec::from_bytes(e).unwrap()),
                _ => panic!("bad record"),
            })
            .collect()
    }

    #[test]
    fn runs_registered_tasks_by_name_and_checks_fingerprints() {
        let name = concat!(module_path!(), "::double");
        assert!(crate::remote::tasks::task_names().contains(&name));
        let fingerprint = tasks::lookup(name).unwrap().fingerprint;
        let mut results = Vec::new();
        assert!(run(name, fingerprint, &packed(&[1, 2, 3]), &mut results));
        assert_eq!(outcomes(&results), vec![Ok(2), Ok(4), Ok(6)]);

        results.clear();
        assert!(run(name, fingerprint ^ 1, &packed(&[1]), &mut results));
        assert!(matches!(
            outcomes(&results)[..],
            [Err(RemoteError::TypeMismatch { .. })]
        ));

        results.clear();
        assert!(run(
            "no::such::task",
            fingerprint,
            &packed(&[1, 2]),
            &mut results
        ));
        assert!(matches!(
            outcomes(&results)[..],
            [
                Err(RemoteError::UnknownTask(_)),
                Err(RemoteError::UnknownTask(_))
            ]
        ));

        // Arguments of the wrong type: an error for that item only.
        let mut items = packed(&[5]);
        wire::append_record(&mut items, |o| codec::append("text", o)).unwrap();
        results.clear();
        assert!(run(name, fingerprint, &items, &mut results));
        let got = outcomes(&results);
        assert_eq!(got[0], Ok(10));
        assert!(matches!(got[1], Err(RemoteError::Serialization { .. })));

        // Truncated packing is malformed, not a panic.
        let items = packed(&[1, 2]);
        results.clear();
        assert!(!run(
            name,
            fingerprint,
            &items[..items.len() - 1],
            &mut results
        ));
    }
}
