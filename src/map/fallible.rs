//! [`Fallible`]: `map` over a task that returns a `Result`, with the task's
//! `Err` as the item's failure.

use std::fmt;

use super::{Map, MapUnordered};
use crate::Error;
use crate::error::TaskError;

/// The iterator of [`Map::fallible`] and [`MapUnordered::fallible`]: the
/// same items, with each task's own `Err(e)` turned into the item's
/// `Err(Error::Failed(..))` (keeping `e`; see [`TaskError`]), so that an
/// item has one `Result` instead of two nested ones.
///
/// Like every failure in `map`, a failed item does not end the iteration.
///
/// ```
/// use concurrent_futures::{Error, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new(2).unwrap();
/// let parsed: Vec<Result<u8, Error>> =
///     pool.map(|s: &str| s.parse::<u8>(), ["1", "x", "3"]).unwrap().fallible().collect();
/// assert_eq!(parsed[0], Ok(1));
/// assert!(matches!(&parsed[1], Err(Error::Failed(e)) if e.message() == "invalid digit found in string"));
/// assert_eq!(parsed[2], Ok(3));
/// ```
#[must_use = "a Fallible yields its results only when iterated; dropping it cancels the items not yet started"]
pub struct Fallible<I> {
    inner: I,
}

/// `Ok(Err(e))` becomes `Err(Error::Failed(e))`.
fn flatten<T, E>(item: Result<Result<T, E>, Error>) -> Result<T, Error>
where
    E: std::error::Error + Send + Sync + 'static,
{
    item?.map_err(|e| Error::Failed(TaskError::new(e)))
}

impl<'a, T, E> Map<'a, Result<T, E>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    /// Yields one `Result<T, Error>` per item, in input order: a task's own
    /// `Err(e)` becomes the item's [`Error::Failed`], which keeps `e`
    /// (downcastable, see [`TaskError`]). The iteration goes on after it.
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    /// use std::num::ParseIntError;
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let mut results = pool.map(|s: &str| s.parse::<u8>(), ["x", "2"]).unwrap().fallible();
    /// match results.next() {
    ///     Some(Err(Error::Failed(e))) => assert!(e.downcast_ref::<ParseIntError>().is_some()),
    ///     other => panic!("{other:?}"),
    /// }
    /// assert_eq!(results.next(), Some(Ok(2)));
    /// assert_eq!(results.next(), None);
    /// ```
    pub fn fallible(self) -> Fallible<Self> {
        Fallible { inner: self }
    }
}

impl<'a, T, E> MapUnordered<'a, Result<T, E>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    /// Yields one `(position, Result<T, Error>)` per item, in completion
    /// order: a task's own `Err(e)` becomes the item's [`Error::Failed`],
    /// which keeps `e` (downcastable, see [`TaskError`]). Positions are
    /// those of [`MapUnordered`].
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(2).unwrap();
    /// let mut results: Vec<(usize, Result<u8, Error>)> =
    ///     pool.map_unordered(|s: &str| s.parse::<u8>(), ["1", "x"]).unwrap().fallible().collect();
    /// results.sort_by_key(|(i, _)| *i);
    /// assert_eq!(results[0], (0, Ok(1)));
    /// assert!(matches!(&results[1], (1, Err(Error::Failed(_)))));
    /// ```
    pub fn fallible(self) -> Fallible<Self> {
        Fallible { inner: self }
    }
}

impl<T, E> Iterator for Fallible<Map<'_, Result<T, E>>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(flatten)
    }
}

impl<T, E> Iterator for Fallible<MapUnordered<'_, Result<T, E>>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    type Item = (usize, Result<T, Error>);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|(i, item)| (i, flatten(item)))
    }
}

impl<I> Fallible<I> {
    /// The iterator it wraps.
    #[cfg(feature = "progress")]
    pub(crate) fn inner(&self) -> &I {
        &self.inner
    }
}

impl<I: fmt::Debug> fmt::Debug for Fallible<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Fallible").field(&self.inner).finish()
    }
}
