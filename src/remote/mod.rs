//! The remote layer: everything that runs a registered task somewhere else,
//! independent of how the bytes travel. Each executor brings only its
//! transport (the process pool: a socket pair per child process).
//!
//! * [`tasks`]: the `#[task]` registry, stable fingerprints, the build
//!   identity.
//! * [`message`]: the messages and the encoding of their bodies.
//! * [`codec`]: the encoding of task values (arguments, results, a call's
//!   error) inside a job's records.
//! * [`framing`]: length-prefixed frames, for transports that carry a byte
//!   stream.
//! * [`serve`]: the worker's dispatch core (find, call, answer).
//! * [`client`]: the encoding of `submit` and `map` arguments and the
//!   chunking of a `map`, over an executor's [`client::Dispatch`].
//! * [`job`]: a queued job, and how its answer completes its typed future.
//! * [`batch`]: how many queued jobs a worker is given at once.

pub(crate) mod batch;
pub(crate) mod client;
pub(crate) mod codec;
pub(crate) mod framing;
pub(crate) mod job;
pub(crate) mod message;
pub(crate) mod serve;
pub(crate) mod tasks;
