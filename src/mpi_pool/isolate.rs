//! Task isolation on a worker rank: with `CONCURRENT_FUTURES_MPI=isolate`,
//! each worker rank runs its tasks in a child process of its own (a
//! one-process [`ProcessPoolExecutor`]), so that a task that crashes (abort,
//! segfault, `exit`) fails with [`Error::WorkerDied`](crate::Error::WorkerDied)
//! naming the rank and the child, instead of taking the MPI job down.
//!
//! Guarantees:
//! * every job gets exactly one answer; answers may overtake each other
//!   (rank 0 matches them by id);
//! * a job with a timeout (`TAG_RUN_TIMED`) runs under that deadline in the
//!   local pool, counted from when its child receives it: past it the child
//!   is killed and replaced and the answer is `TAG_STOPPED`; an abort
//!   (`TAG_ABORT`) of a job that runs does the same, of a job that waits
//!   cancels it;
//! * a child that dies fails the job it ran (every item of a chunk) and is
//!   replaced; the jobs queued behind it run in the new child;
//! * an initializer runs on the rank itself (its outcome is the answer rank
//!   0 checks) and then in every child before any later task; the child of
//!   the earlier initializer finishes its jobs meanwhile, and its jobs can
//!   still be aborted;
//! * every MPI call is made by the rank's main thread, which polls both MPI
//!   and the answers of its child (spinning, then yielding, then sleeping up
//!   to a millisecond).

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use serde_bytes::Bytes;

use super::wire::{self, TAG_ABORT, TAG_MESSAGE, TAG_RUN_TIMED, TAG_SHUTDOWN, TAG_STOPPED};
use crate::future::DeferredCallbacks;
use crate::process_pool::InitCall;
use crate::remote::job::{Control, Outcome, Payload, Sink};
use crate::remote::message::{self, ByteBuf, FromWorkerRef, RemoteError, ToWorkerRef};
use crate::remote::serve;
use crate::remote::tasks::{self, TaskRef};
use crate::{Error, Future, ProcessPoolExecutor, Promise, WorkerId};

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
        // Dropped unanswered (the local pool let go of it: cancelled by an
        // abort while it waited, or the pool failed): rank 0 still gets an
        // answer.
        let error = if self.promise.is_cancelled() {
            Error::Cancelled
        } else {
            Error::SpawnFailed("the worker rank's process pool dropped the job".into())
        };
        self.answer(Err(error));
    }
}

/// The worker loop of an isolating rank (after its hello).
pub(super) fn serve(world: &SimpleCommunicator, me: &WorkerId) -> Result<(), String> {
    let (answers, answered) = mpsc::channel();
    let mut rank = Isolating {
        root: world.process_at_rank(0),
        me,
        pool: local_pool(None)?,
        generation: 0,
        retired: Vec::new(),
        answers,
        answered,
        running: HashMap::new(),
        out: Vec::new(),
        results: Vec::new(),
    };
    let served = rank.serve();
    let pools = std::iter::once(&rank.pool).chain(rank.retired.iter().map(|(_, p)| p));
    if served.is_err() {
        // Exiting on an error (status 86): the child's tasks must not
        // hold the rank up.
        for pool in pools {
            pool.shutdown(false, true);
            pool.kill_workers();
        }
        return served;
    }
    // Let the jobs still in the children finish; rank 0 receives their
    // answers while it exits.
    for pool in pools {
        pool.shutdown(true, false);
    }
    rank.forward_answers()?;
    Ok(())
}

impl Isolating<'_> {
    /// Serves rank 0 until it says to stop.
    fn serve(&mut self) -> Result<(), String> {
        let rank = self;
        let mut idle = 0u32;
        loop {
            let mut progress = false;
            if let Some(message) = rank.root.immediate_matched_probe() {
                progress = true;
                let (body, status) = message.matched_receive_vec::<u8>();
                match status.tag() {
                    TAG_SHUTDOWN => break,
                    TAG_MESSAGE => {
                        if !rank.request(&body, None)? {
                            break;
                        }
                    }
                    TAG_RUN_TIMED => {
                        let (timeout, run) = wire::untimed(&body)?;
                        rank.request(run, Some(timeout))?;
                    }
                    TAG_ABORT => rank.abort(wire::read_id(&body)?),
                    tag => return Err(format!("unexpected MPI tag {tag}")),
                }
            }
            progress |= rank.forward_answers()?;
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
                if let Ok(answer) = rank.answered.recv_timeout(wait) {
                    rank.send_answer(answer)?;
                    idle = 0;
                }
            }
        }
        Ok(())
    }
}

/// An isolating rank's state.
struct Isolating<'a> {
    root: mpi::topology::Process<'a>,
    me: &'a WorkerId,
    /// The one-process pool the tasks run in.
    pool: ProcessPoolExecutor,
    /// Which initializer `pool` runs: one more at each `Init`.
    generation: u64,
    /// Pools of earlier initializers whose child still runs jobs, by
    /// generation: shut down (no new job), and dropped once their jobs are
    /// answered. Waiting for them at the `Init` held the rank up, deaf to
    /// aborts, for as long as their tasks ran (for good for one that never
    /// ends).
    retired: Vec<(u64, ProcessPoolExecutor)>,
    /// Where the jobs' sinks send their answers, and where they arrive.
    answers: Sender<Answer>,
    answered: Receiver<Answer>,
    /// The local futures of the jobs forwarded and not answered, by id,
    /// with the generation of the pool running them: `abort` stops one
    /// (killing the child if it runs).
    running: HashMap<u64, (Future<()>, u64)>,
    out: Vec<u8>,
    results: Vec<u8>,
}

impl Isolating<'_> {
    /// Serves one request of rank 0 (with its timeout, for a timed job);
    /// false if it says to stop.
    fn request(&mut self, body: &[u8], timeout: Option<Duration>) -> Result<bool, String> {
        let request = message::decode::<ToWorkerRef>(body).map_err(|e| e.to_string())?;
        if timeout.is_some() && !matches!(request, ToWorkerRef::Run { .. }) {
            return Err("a timed message that is not a job".into());
        }
        self.results.clear();
        match request {
            ToWorkerRef::Shutdown => return Ok(false),
            ToWorkerRef::Init {
                task,
                fingerprint,
                args,
            } => {
                let outcome = serve::init(task, fingerprint, args, &mut self.results);
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
                    let old = std::mem::replace(&mut self.pool, local_pool(Some(init))?);
                    old.shutdown(false, false);
                    self.retired.push((self.generation, old));
                    self.generation += 1;
                    self.drop_idle_pools();
                }
                let outcome = outcome.map(|()| Bytes::new(&self.results));
                send(
                    &self.root,
                    &FromWorkerRef::InitDone { outcome },
                    &mut self.out,
                )?;
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
                        serve::run(task, fingerprint, items, &mut self.results);
                        let done = FromWorkerRef::Done {
                            id,
                            results: Bytes::new(&self.results),
                        };
                        send(&self.root, &done, &mut self.out)?;
                    }
                    Some(entry) => {
                        let (promise, future) = Promise::new();
                        let sink = Forward {
                            promise,
                            id,
                            items: count,
                            answers: Some(self.answers.clone()),
                        };
                        let payload = Payload {
                            task: TaskRef {
                                name: entry.name,
                                fingerprint,
                            },
                            items: items.to_vec(),
                        };
                        self.running.insert(id, (future, self.generation));
                        if let Err(e) = self.pool.dispatch(payload, Box::new(sink), timeout) {
                            // The sink, dropped, answers with its own
                            // error; say why here.
                            crate::trace::diag!(
                                warn,
                                "concurrent_futures MPI worker {}: {e}",
                                self.me
                            );
                        }
                    }
                }
            }
        }
        Ok(true)
    }

    /// Rank 0 aborted job `id`: the local pool cancels it if it waits, or
    /// kills (and replaces) the child running it. Its answer follows.
    fn abort(&mut self, id: u64) {
        // Gone already: it was answered, and rank 0 ignores the answer.
        if let Some((future, _)) = self.running.get(&id) {
            future.abort();
        }
    }

    /// Drops the retired pools none of whose jobs waits for an answer (so
    /// that dropping, which waits for the child, is quick).
    fn drop_idle_pools(&mut self) {
        let running = &self.running;
        self.retired
            .retain(|(generation, _)| running.values().any(|(_, g)| g == generation));
    }

    /// Sends every answer that came back; true if there was one.
    fn forward_answers(&mut self) -> Result<bool, String> {
        let mut any = false;
        while let Ok(answer) = self.answered.try_recv() {
            self.send_answer(answer)?;
            any = true;
        }
        Ok(any)
    }

    fn send_answer(&mut self, answer: Answer) -> Result<(), String> {
        if let Some((_, generation)) = self.running.remove(&answer.id) {
            if generation != self.generation {
                self.drop_idle_pools();
            }
        }
        let results = match answer.outcome {
            Ok(results) => results,
            // Its child was killed: rank 0 knows the deadline it set (or
            // that it aborted the job).
            Err(Error::TaskTimeout(_) | Error::Cancelled) => {
                self.root
                    .send_with_tag(&wire::id_body(answer.id)[..], TAG_STOPPED);
                return Ok(());
            }
            Err(error) => {
                let error = RemoteError::from_child(error, self.me);
                let mut records = Vec::new();
                for _ in 0..answer.items {
                    serve::push_error(&mut records, &error);
                }
                records
            }
        };
        let done = FromWorkerRef::Done {
            id: answer.id,
            results: Bytes::new(&results),
        };
        send(&self.root, &done, &mut self.out)
    }
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

/// The rank's one-process pool, with the initializer if any.
fn local_pool(init: Option<InitCall>) -> Result<ProcessPoolExecutor, String> {
    let mut builder = ProcessPoolExecutor::builder().max_workers(1);
    if let Some(init) = init {
        builder = builder.initializer_call(init);
    }
    builder.build().map_err(|e| e.to_string())
}
