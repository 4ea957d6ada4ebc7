//! Task isolation on a worker rank: with `CONCURRENT_FUTURES_MPI=isolate`,
//! each worker rank runs its tasks in a child process of its own (a
//! one-process [`ProcessPoolExecutor`]), so that a task that crashes (abort,
//! segfault, `exit`) fails with [`Error::WorkerDied`](crate::Error::WorkerDied)
//! naming the rank and the child, instead of taking the MPI job down.
//!
//! Guarantees:
//! * every job gets exactly one answer; answers may overtake each other
//!   (rank 0 matches them by id);
//! * a child that dies fails the job it ran (every item of a chunk) and is
//!   replaced; the jobs queued behind it run in the new child;
//! * an initializer runs on the rank itself (its outcome is the answer rank
//!   0 checks) and then in every child before any later task;
//! * every MPI call is made by the rank's main thread, which polls both MPI
//!   and the answers of its child (spinning, then yielding, then sleeping up
//!   to a millisecond).

use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use serde_bytes::Bytes;

use super::entry::{TAG_MESSAGE, TAG_SHUTDOWN};
use crate::future::DeferredCallbacks;
use crate::process_pool::InitCall;
use crate::remote::job::{Control, Outcome, Payload, Sink};
use crate::remote::message::{self, ByteBuf, FromWorkerRef, RemoteError, ToWorkerRef};
use crate::remote::serve;
use crate::remote::tasks::{self, TaskRef};
use crate::{Error, ProcessPoolExecutor, Promise, WorkerId};

/// A job's answer from the child: its outcome records, or why the whole
/// job failed (with how many items it had).
struct Answer {
    id: u64,
    items: usize,
    outcome: Result<Vec<u8>, Error>,
}

/// The sink of a forwarded job: hands the answer to the rank's loop.
struct Forward {
    promise: Promise<()>,
    id: u64,
    items: usize,
    answers: Option<Sender<Answer>>,
}

impl Forward {
    fn answer(&mut self, outcome: Result<Vec<u8>, Error>) {
        if let Some(answers) = self.answers.take() {
            let _ = answers.send(Answer {
                id: self.id,
                items: self.items,
                outcome,
            });
        }
    }
}

impl Sink for Forward {
    fn control(&self) -> &dyn Control {
        &self.promise
    }
    fn complete(mut self: Box<Self>, outcome: Outcome<'_>) -> DeferredCallbacks {
        self.answer(outcome.map(<[u8]>::to_vec));
        let _ = self.promise.set_result(());
        DeferredCallbacks::none()
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        // Dropped unanswered (the local pool let go of it): rank 0 still
        // gets an answer.
        self.answer(Err(Error::SpawnFailed(
            "the worker rank's process pool dropped the job".into(),
        )));
    }
}

/// The worker loop of an isolating rank (after its hello).
pub(super) fn serve(world: &SimpleCommunicator, me: &WorkerId) -> Result<(), String> {
    let root = world.process_at_rank(0);
    let (answers, answered) = mpsc::channel();
    let mut pool = local_pool(None)?;
    let mut out = Vec::new();
    let mut results = Vec::new();
    let mut outstanding = 0usize;
    let mut idle = 0u32;
    loop {
        let mut progress = false;
        if let Some(message) = root.immediate_matched_probe() {
            progress = true;
            let (body, status) = message.matched_receive_vec::<u8>();
            if status.tag() == TAG_SHUTDOWN {
                break;
            }
            let request = message::decode::<ToWorkerRef>(&body).map_err(|e| e.to_string())?;
            results.clear();
            out.clear();
            match request {
                ToWorkerRef::Shutdown => break,
                ToWorkerRef::Init {
                    task,
                    fingerprint,
                    args,
                } => {
                    let outcome = serve::init(task, fingerprint, args, &mut results);
                    if outcome.is_ok() {
                        // Every child runs it too, before any later task.
                        let entry = tasks::lookup(task).ok_or("the initializer vanished")?;
                        let init = InitCall {
                            task: TaskRef {
                                name: entry.name,
                                fingerprint,
                            },
                            args: ByteBuf::from(args.to_vec()),
                            check: |_| Ok(()),
                        };
                        pool.shutdown(true, false);
                        pool = local_pool(Some(init))?;
                    }
                    let outcome = outcome.map(|()| Bytes::new(&results));
                    send(&root, &FromWorkerRef::InitDone { outcome }, &mut out)?;
                }
                ToWorkerRef::Run {
                    id,
                    task,
                    fingerprint,
                    items,
                    ..
                } => {
                    let mut count = 0;
                    for record in message::records(items) {
                        record.map_err(|_| format!("malformed items in job {id}"))?;
                        count += 1;
                    }
                    match tasks::lookup(task) {
                        // Unknown here: answered at once with an error per
                        // item, no child needed.
                        None => {
                            serve::run(task, fingerprint, items, &mut results);
                            let done = FromWorkerRef::Done {
                                id,
                                results: Bytes::new(&results),
                            };
                            send(&root, &done, &mut out)?;
                        }
                        Some(entry) => {
                            let (promise, _future) = Promise::new();
                            let sink = Forward {
                                promise,
                                id,
                                items: count,
                                answers: Some(answers.clone()),
                            };
                            let payload = Payload {
                                task: TaskRef {
                                    name: entry.name,
                                    fingerprint,
                                },
                                items: items.to_vec(),
                            };
                            outstanding += 1;
                            if let Err(e) = pool.dispatch(payload, Box::new(sink)) {
                                // The sink, dropped, answers with its own
                                // error; say why here.
                                eprintln!("concurrent_futures MPI worker {me}: {e}");
                            }
                        }
                    }
                }
            }
        }
        progress |= forward_answers(&root, &answered, me, &mut outstanding, &mut out)?;
        if progress {
            idle = 0;
            continue;
        }
        idle = idle.saturating_add(1);
        if idle <= 200 {
            std::hint::spin_loop();
        } else if idle <= 250 {
            std::thread::yield_now();
        } else {
            let k = (idle - 250).min(10);
            let wait = Duration::from_micros(1 << k).min(Duration::from_millis(1));
            if let Ok(answer) = answered.recv_timeout(wait) {
                outstanding -= 1;
                send_answer(&root, answer, me, &mut out)?;
                idle = 0;
            }
        }
    }
    // Let the jobs still in the child finish; rank 0 receives their
    // answers while it exits.
    pool.shutdown(true, false);
    forward_answers(&root, &answered, me, &mut outstanding, &mut out)?;
    Ok(())
}

/// Sends every answer that came back; true if there was one.
fn forward_answers(
    root: &mpi::topology::Process<'_>,
    answered: &Receiver<Answer>,
    me: &WorkerId,
    outstanding: &mut usize,
    out: &mut Vec<u8>,
) -> Result<bool, String> {
    let mut any = false;
    while let Ok(answer) = answered.try_recv() {
        *outstanding -= 1;
        send_answer(root, answer, me, out)?;
        any = true;
    }
    Ok(any)
}

fn send_answer(
    root: &mpi::topology::Process<'_>,
    answer: Answer,
    me: &WorkerId,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let results = match answer.outcome {
        Ok(results) => results,
        Err(error) => {
            let error = remote_error(error, me);
            let mut records = Vec::new();
            for _ in 0..answer.items {
                message::append_record(&mut records, |o| {
                    o.push(message::OUTCOME_ERR);
                    message::append(&error, o)
                })
                .map_err(|e| e.to_string())?;
            }
            records
        }
    };
    let done = FromWorkerRef::Done {
        id: answer.id,
        results: Bytes::new(&results),
    };
    send(root, &done, out)
}

fn send(
    root: &mpi::topology::Process<'_>,
    answer: &FromWorkerRef<'_>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.clear();
    message::append(answer, out).map_err(|e| format!("an answer failed to encode: {e}"))?;
    root.send_with_tag(&out[..], TAG_MESSAGE);
    Ok(())
}

/// A whole-job failure of the local pool, as rank 0 will see it: a dead
/// child is named by its pid, this rank and host.
fn remote_error(error: Error, me: &WorkerId) -> RemoteError {
    match error {
        Error::WorkerDied { worker, cause } => RemoteError::WorkerDied {
            worker: WorkerId {
                pid: worker.pid,
                host: me.host.clone(),
                rank: me.rank,
            },
            cause: format!("{cause} (the task's process, a child of the rank)"),
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

/// The rank's one-process pool, with the initializer if any.
fn local_pool(init: Option<InitCall>) -> Result<ProcessPoolExecutor, String> {
    let mut builder = ProcessPoolExecutor::builder().max_workers(1);
    if let Some(init) = init {
        builder = builder.initializer_call(init);
    }
    builder.build().map_err(|e| e.to_string())
}
