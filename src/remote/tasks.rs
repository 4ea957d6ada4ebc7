//! The task registry: functions that run outside this process, by stable name.
//!
//! A function marked [`#[task]`](crate::task) is registered at link time
//! (no life-before-main, no runtime initialisation) under the name
//! `module::path::fn_name`, with a fingerprint of its argument and result
//! types. Worker processes only ever run registered functions, found by that
//! name and checked against that fingerprint, so bytes read from a pipe, a
//! socket or a queue can never make a worker jump to an arbitrary address.
//! Every executor that runs tasks outside the process shares this registry
//! and the [messages](super::message).
//!
//! Guarantees:
//! * A fingerprint depends only on the source text of the task's argument
//!   and result types (the `#[task]` macro hashes their tokens), never on
//!   `std::any::type_name`, whose output may change between compilers.
//! * [`build_identity`] names this build of the program: a worker refuses a
//!   pool of another build (and the reverse) before any task's bytes are
//!   read, so two builds never misread each other's encodings.
//!
//! Tasks are submitted by passing the function itself: the pool finds its
//! registration through the function's type. A function of one argument takes
//! that argument, a function of several takes a tuple, a function of none
//! takes `()`; see [`TaskFn`].

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::OnceLock;

use super::serve::Batch;
#[cfg(doc)]
use super::serve::run_batch;
use crate::Error;
use crate::task_fn::TaskFn;

/// One registered task, as the `#[task]` macro writes it. Not for direct use.
#[doc(hidden)]
#[derive(Debug)]
pub struct TaskEntry {
    /// The stable name: `module::path::fn_name`.
    pub name: &'static str,
    /// The `TypeId` of the function item, how `submit(f, ..)` finds it.
    pub type_id: fn() -> TypeId,
    /// The fingerprint of the argument and result types, as written.
    pub fingerprint: u64,
    /// The `TypeId` of `(arguments, result)`: how a submit in this process
    /// checks the types it uses.
    pub types: fn() -> TypeId,
    /// Runs the function on every call of a batch: [`run_batch`] for its
    /// types.
    pub run: fn(&mut Batch<'_>) -> bool,
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

/// The `TypeId` of `T` (of a task's `(arguments, result)`, for the macro).
#[doc(hidden)]
pub fn type_id_of<T: 'static>() -> TypeId {
    TypeId::of::<T>()
}

/// The `TypeId` of a value's type (of a function item, for the macro).
#[doc(hidden)]
pub fn type_id_of_val<T: 'static>(_: &T) -> TypeId {
    TypeId::of::<T>()
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
        // `TaskFn` ties `Args` to `F`, so a mismatch here means a second
        // registration under the same function type, never a caller's slip;
        // checked all the same, as a worker does.
        if TypeId::of::<(Args, F::Output)>() != (entry.types)() {
            return Err(Error::TaskTypeMismatch {
                task: entry.name.to_owned(),
                expected: entry.fingerprint,
                found: 0,
            });
        }
        Ok(TaskRef {
            name: entry.name,
            fingerprint: entry.fingerprint,
        })
    }
}

/// This build of the program, as a 64-bit identity: the hash of the
/// executable's GNU build-id (which the linker derives from the linked
/// bytes) where there is one, else of the executable file. Computed once.
/// A pool and a worker of different identities refuse each other.
pub(crate) fn build_identity() -> u64 {
    static IDENTITY: OnceLock<u64> = OnceLock::new();
    *IDENTITY.get_or_init(|| {
        if let Some(id) = gnu_build_id() {
            return fnv1a(&id);
        }
        match std::env::current_exe().and_then(std::fs::read) {
            Ok(bytes) => fnv1a(&bytes),
            // Nothing to tell builds apart: the task fingerprints still
            // refuse tasks whose types differ.
            Err(_) => fnv1a(env!("CARGO_PKG_VERSION").as_bytes()),
        }
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The GNU build-id note of the main program, read from its loaded
/// program headers.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn gnu_build_id() -> Option<Vec<u8>> {
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `dl_iterate_phdr` passes a valid `info` for the duration
        // of the call, and `data` is the `Option<Vec<u8>>` that
        // `gnu_build_id` lent it, borrowed by nothing else meanwhile.
        let (info, found) = unsafe { (&*info, &mut *data.cast::<Option<Vec<u8>>>()) };
        for i in 0..usize::from(info.dlpi_phnum) {
            // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers.
            let header = unsafe { &*info.dlpi_phdr.add(i) };
            if header.p_type != libc::PT_NOTE {
                continue;
            }
            let start = (info.dlpi_addr as usize).wrapping_add(header.p_vaddr as usize);
            // SAFETY: a PT_NOTE segment is loaded (it lies inside a PT_LOAD
            // segment) at `dlpi_addr + p_vaddr`, `p_memsz` bytes long, and
            // stays mapped while the program runs.
            let notes =
                unsafe { std::slice::from_raw_parts(start as *const u8, header.p_memsz as usize) };
            if let Some(id) = find_build_id(notes) {
                *found = Some(id.to_vec());
                break;
            }
        }
        1 // The first object is the main program: stop there.
    }
    let mut found: Option<Vec<u8>> = None;
    // SAFETY: `visit` only reads the headers it is given and writes through
    // `data`, which points to `found`, alive until this call returns.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut found).cast()) };
    found
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn gnu_build_id() -> Option<Vec<u8>> {
    None
}

/// The descriptor of the `NT_GNU_BUILD_ID` note among `notes` (each a
/// header of three native-endian `u32`s, then name and descriptor, each
/// padded to 4 bytes).
#[cfg_attr(
    not(any(target_os = "linux", target_os = "android", target_os = "freebsd")),
    allow(dead_code)
)]
fn find_build_id(mut notes: &[u8]) -> Option<&[u8]> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let word = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let padded = |n: u32| (n as usize).checked_add(3).map(|n| n & !3);
    while notes.len() >= 12 {
        let (name_size, desc_size, kind) = (word(notes, 0)?, word(notes, 4)?, word(notes, 8)?);
        let name_end = 12usize.checked_add(padded(name_size)?)?;
        let desc_end = name_end.checked_add(padded(desc_size)?)?;
        let name = notes.get(12..12 + name_size as usize)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
            return notes.get(name_end..name_end + desc_size as usize);
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[crate::task]
    fn add(a: i64, b: i64) -> i64 {
        a + b
    }

    #[test]
    fn fingerprints_hash_the_types_as_written() {
        let entry = lookup(concat!(module_path!(), "::add")).unwrap();
        // The source text of `(arguments) -> result`, without whitespace:
        // nothing a compiler version changes (the macro writes tuples with
        // a trailing comma).
        assert_eq!(entry.fingerprint, fnv1a(b"(i64,i64,)->i64"));
        assert_eq!((entry.types)(), TypeId::of::<((i64, i64), i64)>());
        let task = TaskRef::of::<add, (i64, i64), Registered>().unwrap();
        assert_eq!(task.fingerprint, entry.fingerprint);
    }

    #[test]
    fn the_build_identity_is_stable_and_read_from_the_build_id_note() {
        assert_eq!(build_identity(), build_identity());
        if cfg!(target_os = "linux") {
            // Debian's and most linkers' default: a GNU build-id note.
            let id = gnu_build_id().expect("a build-id note");
            assert!(id.len() >= 16, "{id:?}");
            assert_eq!(build_identity(), fnv1a(&id));
        }
    }

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(name.len() as u32).to_ne_bytes());
        out.extend_from_slice(&(desc.len() as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        for part in [name, desc] {
            out.extend_from_slice(part);
            out.resize(out.len().next_multiple_of(4), 0);
        }
        out
    }

    #[test]
    fn build_id_notes_are_parsed_and_garbage_is_not_a_panic() {
        let mut notes = note(b"GNU\0", 1, &[1, 2, 3, 4]);
        notes.extend(note(b"Other\0", 3, &[9; 5]));
        notes.extend(note(b"GNU\0", 3, &[7; 20]));
        assert_eq!(find_build_id(&notes), Some(&[7u8; 20][..]));
        assert_eq!(find_build_id(&notes[..notes.len() - 4]), None);
        assert_eq!(find_build_id(&note(b"GNU\0", 1, &[1])), None);
        let huge = [0xff; 12];
        assert_eq!(find_build_id(&huge), None);
        assert_eq!(find_build_id(&[]), None);
    }
}
