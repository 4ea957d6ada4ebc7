//! [`TaskError`]: a task's own error, carried by [`Error::Failed`].
//!
//! [`Error::Failed`]: crate::Error::Failed

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// The error a task failed with, in [`Error::Failed`](crate::Error::Failed).
///
/// It keeps the error's type name and its `Display` text, always, and the
/// error itself when this process has it (a closure's error, or a process
/// task's error once decoded in the parent): then
/// [`source`](StdError::source) returns it and
/// [`downcast_ref`](Self::downcast_ref) gets it back by type.
///
/// Two `TaskError`s are equal when their type names and messages are: the
/// error objects need not be comparable.
///
/// ```
/// use concurrent_futures::error::TaskError;
/// use std::error::Error as _;
/// use std::num::ParseIntError;
///
/// let parse_error = "x".parse::<u8>().unwrap_err();
/// let e = TaskError::new(parse_error.clone());
/// assert_eq!(e.type_name(), "core::num::error::ParseIntError");
/// assert_eq!(e.message(), parse_error.to_string());
/// assert_eq!(e.downcast_ref::<ParseIntError>(), Some(&parse_error));
/// assert!(e.source().unwrap().is::<ParseIntError>());
/// assert_eq!(e.to_string(), format!("task failed: core::num::error::ParseIntError: {parse_error}"));
/// ```
#[derive(Clone)]
pub struct TaskError {
    type_name: Cow<'static, str>,
    message: String,
    /// Shared, so that the error can be cloned as often as a future hands
    /// it out, whatever the user's type.
    error: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

impl TaskError {
    /// Wraps a task's error, keeping it (as the [`source`](StdError::source))
    /// with its type name and its `Display` text.
    ///
    /// ```
    /// use concurrent_futures::error::TaskError;
    ///
    /// let e = TaskError::new(std::fmt::Error);
    /// assert_eq!(e.type_name(), "core::fmt::Error");
    /// assert_eq!(e.message(), "an error occurred when formatting an argument");
    /// ```
    pub fn new<E: StdError + Send + Sync + 'static>(error: E) -> TaskError {
        TaskError {
            type_name: Cow::Borrowed(std::any::type_name::<E>()),
            // Taken now, so that the text survives a clone sent anywhere and
            // comparisons need not format.
            message: error.to_string(),
            error: Some(Arc::new(error)),
        }
    }

    /// The error's type, as [`std::any::type_name`] spells it (for example
    /// `core::num::error::ParseIntError`).
    ///
    /// ```
    /// use concurrent_futures::error::TaskError;
    ///
    /// assert_eq!(TaskError::new(std::fmt::Error).type_name(), "core::fmt::Error");
    /// ```
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The error's `Display` text.
    ///
    /// ```
    /// use concurrent_futures::error::TaskError;
    ///
    /// let e = TaskError::new(std::io::Error::other("disk on fire"));
    /// assert_eq!(e.message(), "disk on fire");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error itself, if it is an `E` and this process has it.
    ///
    /// ```
    /// use concurrent_futures::error::TaskError;
    ///
    /// let e = TaskError::new(std::fmt::Error);
    /// assert_eq!(e.downcast_ref::<std::fmt::Error>(), Some(&std::fmt::Error));
    /// assert!(e.downcast_ref::<std::io::Error>().is_none());
    /// ```
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.error.as_deref()?.downcast_ref::<E>()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task failed: {}: {}", self.type_name, self.message)
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskError")
            .field("type_name", &self.type_name)
            .field("message", &self.message)
            .field("error", &self.error)
            .finish()
    }
}

impl PartialEq for TaskError {
    fn eq(&self, other: &Self) -> bool {
        self.type_name == other.type_name && self.message == other.message
    }
}

impl Eq for TaskError {}

impl StdError for TaskError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.error
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}
