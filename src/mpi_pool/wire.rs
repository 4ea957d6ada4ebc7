//! The MPI envelope of the protocol: which tag carries what between rank 0
//! and a worker rank.
//!
//! The bodies of [`TAG_MESSAGE`] are the process pool's protocol messages
//! (see [`message`](crate::remote::message)), versioned by its
//! `PROTOCOL_VERSION`. The other tags carry the few things only MPI needs;
//! both ends are the same build (the handshake checks the build identity),
//! so they need no version of their own.
//!
//! | tag | way | body |
//! |-----|-----|------|
//! | [`TAG_MESSAGE`] | both | a protocol message (`Ready` first, from the worker) |
//! | [`TAG_READY_ISOLATED`] | worker → 0 | `Ready`, from a rank that isolates its tasks |
//! | [`TAG_SHUTDOWN`] | 0 → worker | empty: finish and exit |
//! | [`TAG_RUN_TIMED`] | 0 → isolating worker | the timeout (8 bytes, ns, LE), then a `Run` |
//! | [`TAG_ABORT`] | 0 → isolating worker | a job id (8 bytes, LE): stop it |
//! | [`TAG_STOPPED`] | isolating worker → 0 | a job id: its child was killed (timeout or abort) |
//!
//! Guarantees:
//! * a worker that does not isolate is never sent [`TAG_RUN_TIMED`] or
//!   [`TAG_ABORT`]; if it gets one anyway it exits with status 86 (never
//!   runs a job without its deadline);
//! * [`TAG_STOPPED`] is the one answer of its job (no `Done` follows).

use std::time::Duration;

/// A protocol message, both ways.
pub(super) const TAG_MESSAGE: i32 = 1;
/// The shutdown order: an empty body, understood by a worker of any build
/// or protocol version.
pub(super) const TAG_SHUTDOWN: i32 = 2;
/// The hello of a worker rank that runs its tasks in a child process (so it
/// can stop one: timeouts and `abort` work).
pub(super) const TAG_READY_ISOLATED: i32 = 3;
/// A job with a per-task timeout: [`timed`] encodes it.
pub(super) const TAG_RUN_TIMED: i32 = 4;
/// Stop a job that runs: its body is the job's id ([`id_body`]).
pub(super) const TAG_ABORT: i32 = 5;
/// A job was stopped (its deadline passed, or rank 0 aborted it): its id.
pub(super) const TAG_STOPPED: i32 = 6;

/// The body of a job id.
pub(super) fn id_body(id: u64) -> Vec<u8> {
    id.to_le_bytes().to_vec()
}

/// Reads the body of a job id.
pub(super) fn read_id(body: &[u8]) -> Result<u64, String> {
    let bytes: [u8; 8] = body
        .try_into()
        .map_err(|_| format!("a job id of {} bytes", body.len()))?;
    Ok(u64::from_le_bytes(bytes))
}

/// Prefixes the `Run` message `body` with its timeout.
pub(super) fn timed(timeout: Duration, body: &[u8]) -> Vec<u8> {
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&nanos.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits a [`TAG_RUN_TIMED`] body into its timeout and its `Run` message.
pub(super) fn untimed(body: &[u8]) -> Result<(Duration, &[u8]), String> {
    let Some((nanos, run)) = body.split_first_chunk::<8>() else {
        return Err(format!("a timed job of {} bytes", body.len()));
    };
    let nanos = u64::from_le_bytes(*nanos);
    if nanos == 0 {
        return Err("a timed job with a zero timeout".into());
    }
    Ok((Duration::from_nanos(nanos), run))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_timeouts_round_trip() {
        assert_eq!(read_id(&id_body(42)), Ok(42));
        assert!(read_id(b"short").is_err());
        let body = timed(Duration::from_millis(200), b"run");
        assert_eq!(
            untimed(&body),
            Ok((Duration::from_millis(200), &b"run"[..]))
        );
        assert!(untimed(&[1, 2]).is_err());
        assert!(untimed(&timed(Duration::ZERO, b"x")).is_err());
    }
}
