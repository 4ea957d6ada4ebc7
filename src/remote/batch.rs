//! The batching policy of remote executors: how many queued jobs one worker
//! is given at once. Transport-neutral; each executor applies it to its own
//! queue.
//!
//! Guarantees:
//! * a batch holds about [`BATCH_WORK`] of work by the worker's measured job
//!   time, at most [`MAX_BATCH`] jobs, and no more than a fair share of the
//!   queue among the workers, so that no worker hoards what others could
//!   run and cancellation of what was sent ahead stays cheap;
//! * one job at a time while the job time is unknown (the first job may be
//!   long) or under a per-task deadline (a deadline is per job).

use std::time::Duration;

/// Most jobs sent to a worker at once.
pub(crate) const MAX_BATCH: usize = 64;
/// About how much work one batch commits a worker to.
pub(crate) const BATCH_WORK: Duration = Duration::from_millis(1);

/// How many of `queued` jobs a worker gets next, given its measured time per
/// job (`None` until one job has been timed), the number of `workers`
/// sharing the queue, and whether a deadline applies.
pub(crate) fn batch_limit(
    job_time: Option<Duration>,
    queued: usize,
    workers: usize,
    timed: bool,
) -> usize {
    match (timed, job_time) {
        (true, _) | (false, None) => 1,
        (false, Some(t)) => {
            let fit = BATCH_WORK.as_nanos() / t.as_nanos().max(1);
            let fair = queued.div_ceil(workers.max(1));
            usize::try_from(fit)
                .unwrap_or(usize::MAX)
                .clamp(1, MAX_BATCH)
                .min(fair.max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_the_measured_job_time_and_the_fair_share() {
        let us = Duration::from_micros;
        assert_eq!(batch_limit(None, 1000, 2, false), 1);
        assert_eq!(batch_limit(Some(us(1)), 1000, 2, true), 1);
        // 1 ms of 100 us jobs: 10.
        assert_eq!(batch_limit(Some(us(100)), 1000, 2, false), 10);
        // Tiny jobs: capped.
        assert_eq!(
            batch_limit(Some(Duration::from_nanos(1)), 1000, 2, false),
            MAX_BATCH
        );
        // Long jobs: one.
        assert_eq!(batch_limit(Some(Duration::from_secs(1)), 1000, 2, false), 1);
        // Never more than a fair share: 7 queued over 4 workers is 2 each.
        assert_eq!(batch_limit(Some(Duration::from_nanos(1)), 7, 4, false), 2);
        assert_eq!(batch_limit(Some(Duration::from_nanos(1)), 0, 4, false), 1);
        assert_eq!(batch_limit(Some(Duration::ZERO), 5, 0, false), 5);
    }
}
