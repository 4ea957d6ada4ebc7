//! [`Cause`]: the text of a failure, with the error that caused it.

use std::error::Error as StdError;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Why an executor-side step failed (starting a worker, encoding a value):
/// a message for people, and the underlying error, such as the
/// [`std::io::Error`] of a failed spawn or the serde error of a value that
/// does not encode, for programs.
///
/// It reads as the message: it dereferences to `str` and displays as the
/// message, so `cause.contains("..")` and `cause.to_string()` work, and two
/// causes are equal when their messages are. The underlying error is its
/// [`source`](StdError::source), which makes it the next link of the
/// chain of the [`Error`](crate::Error) that holds it.
///
/// ```
/// use std::error::Error as _;
/// use concurrent_futures::error::Cause;
///
/// let io = std::io::Error::from(std::io::ErrorKind::WouldBlock);
/// let cause = Cause::with_source("cannot start a thread", io);
/// assert!(cause.starts_with("cannot start"));
/// let source = cause.source().unwrap();
/// assert_eq!(
///     source.downcast_ref::<std::io::Error>().unwrap().kind(),
///     std::io::ErrorKind::WouldBlock
/// );
/// ```
#[derive(Clone)]
pub struct Cause {
    message: String,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

impl Cause {
    /// A cause with no underlying error.
    pub fn new(message: impl Into<String>) -> Cause {
        Cause {
            message: message.into(),
            source: None,
        }
    }

    /// A cause whose underlying error is `source`; `message` says what
    /// failed (and may repeat `source`'s text: chains are read one line at a
    /// time as often as whole).
    pub fn with_source(
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Cause {
        Cause {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl Deref for Cause {
    type Target = str;

    fn deref(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}

impl StdError for Cause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        self.message == other.message
    }
}

impl Eq for Cause {}

impl PartialEq<str> for Cause {
    fn eq(&self, other: &str) -> bool {
        self.message == other
    }
}

impl PartialEq<&str> for Cause {
    fn eq(&self, other: &&str) -> bool {
        self.message == *other
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Cause {
        Cause::new(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Cause {
        Cause::new(message)
    }
}
