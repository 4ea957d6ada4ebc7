//! Calling a function with its arguments packed as one value, the shape of
//! Python's `submit(fn, *args)`.

/// A function called with its arguments, Python-style: implemented for every
/// function (and closure) of up to 8 arguments.
///
/// [`ThreadPoolExecutor::submit_with`](crate::ThreadPoolExecutor::submit_with)
/// takes any such function. The process pool takes only functions registered
/// with `#[task]` (whose arguments and result are serde types): see
/// `RegisteredTask`; anything else does not compile.
///
/// `Args` is the single argument for a function of one, a tuple for a
/// function of several and `()` for a function of none. `Marker` only
/// tells the implementations apart; it is always inferred.
pub trait TaskFn<Args, Marker>: Send + Sync + 'static {
    /// What the function returns.
    type Output;

    /// Calls the function with its arguments (in this process).
    fn call_with(&self, args: Args) -> Self::Output;
}

impl<F, R> TaskFn<(), fn() -> R> for F
where
    F: Fn() -> R + Send + Sync + 'static,
{
    type Output = R;
    fn call_with(&self, _: ()) -> R {
        self()
    }
}

impl<F, A, R> TaskFn<A, fn(A) -> R> for F
where
    F: Fn(A) -> R + Send + Sync + 'static,
{
    type Output = R;
    fn call_with(&self, a: A) -> R {
        self(a)
    }
}

macro_rules! task_fn_tuple {
    ($($t:ident $v:ident),+) => {
        impl<Func, $($t,)+ R> TaskFn<($($t,)+), fn($($t),+) -> R> for Func
        where
            Func: Fn($($t),+) -> R + Send + Sync + 'static,
        {
            type Output = R;
            fn call_with(&self, ($($v,)+): ($($t,)+)) -> R {
                self($($v),+)
            }
        }
    };
}
task_fn_tuple!(A a, B b);
task_fn_tuple!(A a, B b, C c);
task_fn_tuple!(A a, B b, C c, D d);
task_fn_tuple!(A a, B b, C c, D d, E e);
task_fn_tuple!(A a, B b, C c, D d, E e, G g);
task_fn_tuple!(A a, B b, C c, D d, E e, G g, H h);
task_fn_tuple!(A a, B b, C c, D d, E e, G g, H h, I i);
