//! [`RedisBuilder`]: the settings of a Redis executor.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::RedisExecutor;
use super::shared::{self, Config, Shared};

use super::layout::{redact, valid_queue};
use crate::Error;
use crate::error::Cause;

/// The default [`max_deliveries`](RedisBuilder::max_deliveries).
pub const DEFAULT_MAX_DELIVERIES: u32 = 3;

/// Settings of a [`RedisExecutor`].
///
/// ```no_run
/// use std::time::Duration;
/// use concurrent_futures::RedisExecutor;
///
/// let pool = RedisExecutor::builder()
///     .url("redis://worker:secret@10.0.0.5:6379/")
///     .queue("jobs")
///     .max_deliveries(5)
///     .result_ttl(Duration::from_secs(600))
///     .build()
///     .unwrap();
/// # drop(pool);
/// ```
#[must_use]
#[derive(Clone)]
pub struct RedisBuilder {
    url: Option<String>,
    queue: String,
    max_deliveries: u32,
    result_ttl: Duration,
    server_timeout: Duration,
}

impl Default for RedisBuilder {
    fn default() -> Self {
        RedisBuilder::new()
    }
}

impl fmt::Debug for RedisBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBuilder")
            .field("url", &self.url.as_deref().map(redact))
            .field("queue", &self.queue)
            .field("max_deliveries", &self.max_deliveries)
            .field("result_ttl", &self.result_ttl)
            .field("server_timeout", &self.server_timeout)
            .finish()
    }
}

impl RedisBuilder {
    /// The defaults: no URL yet (it is required), queue `default`, at most
    /// [`DEFAULT_MAX_DELIVERIES`] deliveries, results kept an hour, the
    /// server given 30 seconds to come back.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::RedisBuilder;
    ///
    /// let pool = RedisBuilder::new().url("redis://127.0.0.1:6379/").build().unwrap();
    /// # drop(pool);
    /// ```
    pub fn new() -> RedisBuilder {
        RedisBuilder {
            url: None,
            queue: "default".into(),
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            result_ttl: Duration::from_secs(3600),
            server_timeout: Duration::from_secs(30),
        }
    }

    /// The server: `redis://[user:password@]host:port[/db]` (an ACL user
    /// and its password, or `:password` for `requirepass`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::RedisExecutor;
    ///
    /// // An ACL user and its password (or ":password" alone for requirepass).
    /// let pool = RedisExecutor::builder().url("redis://tasks:s3cret@10.0.0.5:6379/").build().unwrap();
    /// # drop(pool);
    /// ```
    pub fn url(mut self, url: impl Into<String>) -> RedisBuilder {
        self.url = Some(url.into());
        self
    }

    /// The queue's name: workers started on the same server and queue run
    /// this executor's tasks. Letters, digits, `-`, `_` and `.`.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, RedisExecutor};
    ///
    /// let bad = RedisExecutor::builder().url("redis://127.0.0.1:1/").queue("no spaces").build();
    /// assert!(matches!(bad, Err(Error::InvalidArgument(_))));
    /// ```
    pub fn queue(mut self, name: impl Into<String>) -> RedisBuilder {
        self.queue = name.into();
        self
    }

    /// How many workers may take a task, at most: a task whose worker died
    /// (its heartbeat lapsed) is run again by another worker until it was
    /// delivered this many times; then its future fails with
    /// [`Error::WorkerDied`] naming the workers. Delivery is at least once:
    /// a task may run more than once, but its future gets one result.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::RedisExecutor;
    ///
    /// let pool = RedisExecutor::builder().url("redis://127.0.0.1:6379/").max_deliveries(5).build().unwrap();
    /// # drop(pool);
    /// ```
    pub fn max_deliveries(mut self, n: u32) -> RedisBuilder {
        self.max_deliveries = n;
        self
    }

    /// At-most-once delivery: a task is never run again; if its worker
    /// dies, its future fails with [`Error::WorkerDied`]. The same as
    /// `max_deliveries(1)`, for tasks that must not run twice.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::RedisExecutor;
    ///
    /// // For tasks that must not run twice (a payment, an email).
    /// let pool = RedisExecutor::builder().url("redis://127.0.0.1:6379/").at_most_once().build().unwrap();
    /// # drop(pool);
    /// ```
    pub fn at_most_once(self) -> RedisBuilder {
        self.max_deliveries(1)
    }

    /// How long the server keeps this executor's results and job states
    /// after their last use: the results of a client that died expire then.
    /// At least a second.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use concurrent_futures::RedisExecutor;
    ///
    /// let pool = RedisExecutor::builder()
    ///     .url("redis://127.0.0.1:6379/")
    ///     .result_ttl(Duration::from_secs(600))
    ///     .build()
    ///     .unwrap();
    /// # drop(pool);
    /// ```
    pub fn result_ttl(mut self, ttl: Duration) -> RedisBuilder {
        self.result_ttl = ttl;
        self
    }

    /// How long the executor waits for a server it lost before it fails
    /// the tasks in flight with [`Error::Unavailable`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use concurrent_futures::RedisExecutor;
    ///
    /// let pool = RedisExecutor::builder()
    ///     .url("redis://127.0.0.1:6379/")
    ///     .server_timeout(Duration::from_secs(5))
    ///     .build()
    ///     .unwrap();
    /// # drop(pool);
    /// ```
    pub fn server_timeout(mut self, timeout: Duration) -> RedisBuilder {
        self.server_timeout = timeout;
        self
    }

    /// Connects to the server (checking the credentials), creates the
    /// queue's stream and consumer group if missing, and starts the result
    /// thread. Workers need not run yet: tasks wait in the stream.
    ///
    /// Fails with [`Error::InvalidArgument`] without a URL or with a bad
    /// setting, and with [`Error::Unavailable`] if the server cannot be
    /// reached or refuses the credentials (the message names the server,
    /// without the password).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, RedisExecutor};
    ///
    /// // Nothing listens on port 1: a clear error, at once.
    /// let refused = RedisExecutor::builder().url("redis://127.0.0.1:1/").build();
    /// assert!(matches!(refused, Err(Error::Unavailable(_))));
    /// ```
    pub fn build(self) -> Result<RedisExecutor, Error> {
        let invalid = |s: &str| Err(Error::InvalidArgument(s.into()));
        let Some(url) = self.url else {
            return invalid("a Redis executor needs a url (redis://host:port/)");
        };
        if !valid_queue(&self.queue) {
            return invalid("the queue name must be letters, digits, '-', '_' or '.'");
        }
        // A URL that cannot name a server is a wrong setting, not a server
        // away (a worker's target pasted here names its queue as the
        // database).
        if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "{} is not a Redis server's URL ({e}): redis://[user:password@]host:port[/db], \
                 the queue is set apart with .queue(...)",
                redact(&url)
            )));
        }
        if self.max_deliveries == 0 {
            return invalid("max_deliveries must be at least 1");
        }
        if self.result_ttl < Duration::from_secs(1) {
            return invalid("result_ttl must be at least a second");
        }
        let config = Config {
            url,
            queue: self.queue,
            max_deliveries: self.max_deliveries,
            result_ttl: self.result_ttl,
            server_timeout: self.server_timeout,
        };
        let shared = Arc::new(Shared::connect(config)?);
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("redis-pool-results".into())
                .spawn(move || shared::result_thread(shared))
                .map_err(|e| {
                    Error::SpawnFailed(Cause::with_source("cannot start the result thread", e))
                })?
        };
        Ok(RedisExecutor {
            shared,
            thread: Some(thread),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(url: &str) -> Result<RedisExecutor, Error> {
        RedisExecutor::builder().url(url).queue("q").build()
    }

    #[test]
    fn a_url_that_names_no_server_is_an_invalid_argument() {
        for url in [
            "not a url",
            "redis://127.0.0.1:1/jobs",
            "redis://:s3cret@127.0.0.1:1/jobs",
        ] {
            match built(url) {
                Err(Error::InvalidArgument(why)) => {
                    assert!(why.contains(".queue("), "{why}");
                    assert!(!why.contains("s3cret"), "{why}");
                }
                other => panic!("{url}: expected InvalidArgument, got {other:?}"),
            }
        }
        // A well-formed URL with nobody listening is the server away.
        assert!(matches!(
            built("redis://127.0.0.1:1/"),
            Err(Error::Unavailable(_))
        ));
    }
}
