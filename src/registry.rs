//! The task registry: functions that run outside this process, by stable name.
//!
//! A function marked [`#[task]`](crate::task) is registered at link time
//! (no life-before-main, no runtime initialisation) under the name
//! `module::path::fn_name`, with a fingerprint of its argument and result
//! types. Worker processes only ever run registered functions, found by that
//! name and checked against that fingerprint, so bytes read from a pipe or a
//! socket can never make a worker jump to an arbitrary address. Every backend
//! that runs tasks outside the process (today the
//! [`ProcessPoolExecutor`](crate::ProcessPoolExecutor)) shares this registry
//! and the [`wire`](crate::wire) protocol.
//!
//! Tasks are submitted by passing the function itself: the pool finds its
//! registration through the function's type. A function of one argument takes
//! that argument, a function of several takes a tuple, a function of none
//! takes `()`; see [`TaskFn`].

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::task_fn::TaskFn;
use crate::wire::RemoteError;

/// One registered task, as the `#[task]` macro writes it. Not for direct use.
#[doc(hidden)]
#[derive(Debug)]
pub struct TaskEntry {
    /// The stable name: `module::path::fn_name`.
    pub name: &'static str,
    /// The `TypeId` of the function item, how `submit(f, ..)` finds it.
    pub type_id: fn() -> TypeId,
    /// The fingerprint of the argument and result types.
    pub fingerprint: fn() -> u64,
    /// Decodes the arguments, calls the function and appends its encoded
    /// result to the vector (left unchanged on error).
    pub invoke: fn(&[u8], &mut Vec<u8>) -> Result<(), RemoteError>,
}

/// Every task registered in the program, gathered by the linker.
#[doc(hidden)]
#[linkme::distributed_slice]
#[linkme(crate = linkme)]
pub static TASKS: [TaskEntry];

struct Index {
    by_type: HashMap<TypeId, &'static TaskEntry>,
    by_name: HashMap<&'static str, &'static TaskEntry>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut by_type = HashMap::new();
        let mut by_name = HashMap::new();
        for entry in TASKS.iter() {
            by_type.insert((entry.type_id)(), entry);
            // Two tasks of one name (which needs two `#[task]` functions
            // of the same name in one module, e.g. inside function bodies):
            // the first wins; the fingerprint check catches a type mismatch.
            by_name.entry(entry.name).or_insert(entry);
        }
        Index { by_type, by_name }
    })
}

/// The names of every task registered in this program, sorted.
#[cfg_attr(not(test), allow(dead_code))]
pub fn task_names() -> Vec<&'static str> {
    let mut names: Vec<_> = index().by_name.keys().copied().collect();
    names.sort_unstable();
    names
}

/// Looks a task up by its stable name (what a worker does).
#[doc(hidden)]
pub fn lookup(name: &str) -> Option<&'static TaskEntry> {
    index().by_name.get(name).copied()
}

/// The fingerprint of a task taking `A` and returning `R`: a stable 64-bit
/// FNV-1a hash of the two type names.
#[doc(hidden)]
pub fn fingerprint<A: 'static, R: 'static>() -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let names = [
        std::any::type_name::<A>(),
        " -> ",
        std::any::type_name::<R>(),
    ];
    for byte in names.iter().flat_map(|s| s.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The `TypeId` of a value's type (of a function item, for the macro).
#[doc(hidden)]
pub fn type_id_of_val<T: 'static>(_: &T) -> TypeId {
    TypeId::of::<T>()
}

/// Decodes the arguments, runs `f`, appends the encoded result to `out`
/// (worker side).
#[doc(hidden)]
pub fn invoke<A, R, F>(bytes: &[u8], out: &mut Vec<u8>, f: F) -> Result<(), RemoteError>
where
    A: DeserializeOwned,
    R: Serialize,
    F: FnOnce(A) -> R,
{
    let args: A = crate::wire::from_bytes(bytes).map_err(|e| {
        let e = crate::wire::explain_de::<A>(bytes, e);
        RemoteError::Serialization(format!(
            "arguments failed to deserialize in the worker: {e}"
        ))
    })?;
    let result = f(args);
    crate::wire::append(&result, out).map_err(|e| {
        let e = crate::wire::explain_ser(&result, e);
        RemoteError::Serialization(format!("result failed to serialize in the worker: {e}"))
    })
}

/// A function registered with [`#[task]`](crate::task): what the process
/// pool takes, so that passing anything else fails to compile.
///
/// `#[task]` implements it; there is no reason to implement it by hand (an
/// implementation without a registration still fails, at submit time, with
/// [`Error::UnknownTask`]). `Args` and `Marker` are those of [`TaskFn`].
///
/// A plain function is not a task:
///
/// ```compile_fail
/// use concurrent_futures::ProcessPoolExecutor;
///
/// fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// fn main() {
///     let pool = ProcessPoolExecutor::new(1).unwrap();
///     let _ = pool.submit(square, 3);
/// }
/// ```
///
/// Nor is a closure, whose code and captured values cannot cross into
/// another process:
///
/// ```compile_fail
/// use concurrent_futures::ProcessPoolExecutor;
///
/// fn main() {
///     let pool = ProcessPoolExecutor::new(1).unwrap();
///     let _ = pool.submit(|n: u64| n * n, 3);
/// }
/// ```
///
/// The same function with `#[task]` is:
///
/// ```
/// use concurrent_futures::{ProcessPoolExecutor, task};
///
/// #[task]
/// fn square(n: u64) -> u64 {
///     n * n
/// }
///
/// fn main() {
///     let pool = ProcessPoolExecutor::new(1).unwrap();
///     assert_eq!(pool.submit(square, 3).unwrap().into_result(), Ok(9));
///     assert_eq!(square(4), 16); // still callable here
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `#[task]` function, so it cannot run in a worker process",
    label = "not registered with `#[task]`",
    note = "mark the function's definition with `#[concurrent_futures::task]`: worker processes run only registered functions, found by name",
    note = "a closure cannot be a task: its code and the values it captures cannot cross into another process; move its body into a `#[task]` function and pass the captures as arguments"
)]
pub trait RegisteredTask<Args, Marker>: TaskFn<Args, Marker> {}

/// The [`TaskFn`] marker of the functions `#[task]` registers (they are
/// unit structs, not function items, so they need their own). Not for
/// direct use.
#[doc(hidden)]
#[derive(Debug)]
pub enum Registered {}

/// What the pool sends to name a task: its stable name and fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskRef {
    pub(crate) name: &'static str,
    pub(crate) fingerprint: u64,
}

impl TaskRef {
    /// The registration of `F`, checked against the types the caller uses.
    pub(crate) fn of<F, Args, M>() -> Result<TaskRef, Error>
    where
        F: TaskFn<Args, M>,
        Args: 'static,
        F::Output: 'static,
    {
        let Some(entry) = index().by_type.get(&TypeId::of::<F>()) else {
            return Err(Error::UnknownTask(std::any::type_name::<F>().to_owned()));
        };
        let fingerprint = fingerprint::<Args, F::Output>();
        let registered = (entry.fingerprint)();
        if fingerprint != registered {
            return Err(Error::TaskTypeMismatch {
                task: entry.name.to_owned(),
                expected: registered,
                found: fingerprint,
            });
        }
        Ok(TaskRef {
            name: entry.name,
            fingerprint,
        })
    }
}
