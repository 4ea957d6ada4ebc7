//! [`Loads`]: which worker rank gets the next job, in O(1) amortised.
//!
//! The ranks are kept in buckets by their load (jobs sent and not
//! answered): `buckets[k]` holds the ranks with `k` jobs in flight, each
//! rank knowing its place in its bucket, so that moving a rank to the next
//! or previous bucket is a `swap_remove` and a `push`. The next job goes to
//! a least-loaded rank: the lowest bucket that is not empty, found from a
//! lower bound `min` that moves up one step per empty bucket it passes.
//!
//! Guarantees:
//! * [`least`](Loads::least), [`add`](Loads::add) and [`sub`](Loads::sub)
//!   cost O(1) amortised, whatever the number of ranks: `min` only drops by
//!   one per `sub`, so its climbs are paid for by the `sub`s and `add`s
//!   before them (plus the highest load, once);
//! * a rank given to a job always has the lowest load of the live ranks
//!   (jobs spread evenly, and a rank that answers gets the next job);
//! * a [`remove`](Loads::remove)d rank is never returned again.

/// The live ranks by load (see the module docs). Ranks are indices
/// `0..n` (into the MPI thread's list of workers).
pub(super) struct Loads {
    buckets: Vec<Vec<usize>>,
    /// Per rank: its load and its index in `buckets[load]`; `None` once
    /// removed.
    at: Vec<Option<(usize, usize)>>,
    /// No live rank has a load below this.
    min: usize,
}

impl Loads {
    /// `n` ranks, none loaded; the first jobs go to ranks 0, 1, 2...
    pub(super) fn new(n: usize) -> Loads {
        Loads {
            // `least` takes a bucket's last rank.
            buckets: vec![(0..n).rev().collect()],
            at: (0..n).map(|r| Some((0, n - 1 - r))).collect(),
            min: 0,
        }
    }

    /// A least-loaded live rank, and its load; `None` if no rank is live.
    pub(super) fn least(&mut self) -> Option<(usize, usize)> {
        while let Some(bucket) = self.buckets.get(self.min) {
            if let Some(&r) = bucket.last() {
                return Some((r, self.min));
            }
            self.min += 1;
        }
        None
    }

    /// The load of rank `r` (zero once removed).
    #[cfg(test)]
    pub(super) fn load(&self, r: usize) -> usize {
        self.at[r].map_or(0, |(load, _)| load)
    }

    /// Rank `r` was sent a job.
    pub(super) fn add(&mut self, r: usize) {
        if let Some((load, _)) = self.take(r) {
            self.put(r, load + 1);
        }
    }

    /// Rank `r` answered a job.
    pub(super) fn sub(&mut self, r: usize) {
        if let Some((load, _)) = self.take(r) {
            let load = load.saturating_sub(1);
            self.put(r, load);
            self.min = self.min.min(load);
        }
    }

    /// Rank `r` is gone: it gets no more jobs.
    pub(super) fn remove(&mut self, r: usize) {
        self.take(r);
    }

    /// Takes `r` out of its bucket, returning where it was.
    fn take(&mut self, r: usize) -> Option<(usize, usize)> {
        let (load, index) = self.at[r].take()?;
        let bucket = &mut self.buckets[load];
        bucket.swap_remove(index);
        if let Some(&moved) = bucket.get(index) {
            // The last rank of the bucket took `r`'s place.
            self.at[moved] = Some((load, index));
        }
        Some((load, index))
    }

    /// Puts `r` in the bucket of `load`.
    fn put(&mut self, r: usize, load: usize) {
        if self.buckets.len() <= load {
            self.buckets.resize_with(load + 1, Vec::new);
        }
        let bucket = &mut self.buckets[load];
        self.at[r] = Some((load, bucket.len()));
        bucket.push(r);
    }
}

#[cfg(test)]
mod tests {
    use super::Loads;

    /// The reference: a scan of every rank.
    fn scan(loads: &[Option<usize>]) -> Option<usize> {
        loads.iter().filter_map(|l| *l).min()
    }

    #[test]
    fn least_is_the_minimum_load() {
        let mut loads = Loads::new(5);
        let mut model: Vec<Option<usize>> = vec![Some(0); 5];
        // A fixed pseudo-random walk of sends, answers and removals.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for step in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = (x % 5) as usize;
            match (x >> 8) % 10 {
                0..=4 => {
                    if let Some((least, load)) = loads.least() {
                        assert_eq!(Some(load), scan(&model), "step {step}");
                        assert_eq!(model[least], Some(load));
                        loads.add(least);
                        model[least] = Some(load + 1);
                    }
                }
                5..=8 if model[r].is_some_and(|l| l > 0) => {
                    loads.sub(r);
                    model[r] = model[r].map(|l| l - 1);
                }
                _ if step % 997 == 0 => {
                    loads.remove(r);
                    model[r] = None;
                }
                _ => {}
            }
            for (i, m) in model.iter().enumerate() {
                assert_eq!(loads.load(i), m.unwrap_or(0));
            }
        }
        for r in 0..5 {
            loads.remove(r);
        }
        assert_eq!(loads.least(), None);
    }

    #[test]
    fn jobs_spread_evenly() {
        let mut loads = Loads::new(3);
        assert_eq!(loads.least(), Some((0, 0)), "rank 0 first");
        for _ in 0..9 {
            let (r, _) = loads.least().unwrap();
            loads.add(r);
        }
        assert_eq!((0..3).map(|r| loads.load(r)).collect::<Vec<_>>(), [3, 3, 3]);
        loads.sub(1);
        assert_eq!(loads.least(), Some((1, 2)));
    }
}
