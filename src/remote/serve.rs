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

use super::message::{self, RemoteError};
use super::tasks::{self, TaskEntry};

/// Runs the initializer `task` on `args`, its encoded result into `out`.
pub(crate) fn init(
    task: &str,
    fingerprint: u64,
    args: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), RemoteError> {
    find(task, fingerprint).and_then(|entry| call(entry, args, out))
}

/// One error record per item of `items`, each `error`.
pub(crate) fn fail_each(items: &[u8], error: &RemoteError) -> Vec<u8> {
    let mut errors = Vec::new();
    for _ in message::records(items) {
        push_error(&mut errors, error);
    }
    errors
}

/// Runs one call of a task into `out`, turning a panic into
/// [`RemoteError::Panicked`]; on error `out` is unchanged.
fn call(entry: &TaskEntry, args: &[u8], out: &mut Vec<u8>) -> Result<(), RemoteError> {
    crate::panic::catch(|| (entry.invoke)(args, out)).unwrap_or_else(|e| Err(panicked(e)))
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

/// Appends one outcome record: the result, or why it failed.
fn push_outcome(out: &mut Vec<u8>, run: impl FnOnce(&mut Vec<u8>) -> Result<(), RemoteError>) {
    let done = message::append_record(out, |o| {
        o.push(message::OUTCOME_OK);
        run(o)
    });
    if let Err(error) = done {
        push_error(out, &error);
    }
}

fn push_error(out: &mut Vec<u8>, error: &RemoteError) {
    let pushed = message::append_record(out, |o| {
        o.push(message::OUTCOME_ERR);
        message::append(error, o)
    });
    debug_assert!(pushed.is_ok(), "a RemoteError always serializes");
}

/// Runs every item of a `Run` message, appending one outcome record per
/// item to `results`; false if the items are malformed.
///
/// One panic guard covers a run of items rather than each item (it is most
/// of the per-item cost of a tiny task): a panic fails the item it came
/// from, and the items after it run under a new guard.
pub(crate) fn run(task: &str, fingerprint: u64, items: &[u8], results: &mut Vec<u8>) -> bool {
    let entry = match find(task, fingerprint) {
        Ok(entry) => entry,
        Err(e) => {
            for args in message::records(items) {
                if args.is_err() {
                    return false;
                }
                push_error(results, &e);
            }
            return true;
        }
    };
    let mut records = message::records(items);
    loop {
        let mut started = results.len();
        let guarded = crate::panic::catch(|| {
            for args in records.by_ref() {
                let Ok(args) = args else { return false };
                started = results.len();
                push_outcome(results, |o| (entry.invoke)(args, o));
            }
            true
        });
        match guarded {
            Ok(well_formed) => return well_formed,
            Err(panic) => {
                // The item being run panicked: drop what it half wrote.
                results.truncate(started);
                push_error(results, &panicked(panic));
            }
        }
    }
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
            wire::append_record(&mut out, |o| wire::append(item, o)).unwrap();
        }
        out
    }

    fn outcomes(results: &[u8]) -> Vec<Result<u32, RemoteError>> {
        wire::records(results)
            .map(|r| match r.unwrap().split_first() {
                Some((&wire::OUTCOME_OK, v)) => Ok(wire::from_bytes(v).unwrap()),
                Some((&wire::OUTCOME_ERR, e)) => Err(wire::from_bytes(e).unwrap()),
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
        wire::append_record(&mut items, |o| wire::append("text", o)).unwrap();
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
