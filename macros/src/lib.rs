//! Attribute macros for [`concurrent-futures`](https://docs.rs/concurrent-futures).
//!
//! Use them through the main crate: `use concurrent_futures::task;`.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{format_ident, quote};
use syn::{FnArg, ItemFn, ReturnType, parse_macro_input, spanned::Spanned};

/// Registers a plain function as a task that worker processes can run.
///
/// The function stays callable as before. The attribute adds a registration,
/// under the stable name `module::path::fn_name`, that the process pool (and
/// any other out-of-process backend of `concurrent-futures`) looks up by
/// name, together with a fingerprint of its argument and result types.
///
/// Arguments and the result must implement serde's `Serialize` and
/// `Deserialize`. A function of one argument is submitted with that
/// argument, a function of several with a tuple, and a function of none
/// with `()`:
///
/// ```
/// use concurrent_futures::{ProcessPoolExecutor, task};
///
/// #[task]
/// fn add(a: i32, b: i32) -> i32 {
///     a + b
/// }
///
/// fn main() {
///     let pool = ProcessPoolExecutor::new(1).unwrap();
///     assert_eq!(pool.submit(add, (1, 2)).unwrap().into_result(), Ok(3));
///     assert_eq!(add(1, 2), 3); // still an ordinary function
/// }
/// ```
///
/// Generic, `async`, `const`, `unsafe`, `extern` functions and methods cannot
/// be tasks; the macro rejects them with a compile error:
///
/// ```compile_fail
/// #[concurrent_futures::task]
/// async fn fetch(n: u32) -> u32 {
///     n
/// }
/// # fn main() {}
/// ```
///
/// ```compile_fail
/// #[concurrent_futures::task]
/// fn generic<T: serde::Serialize>(value: T) -> T {
///     value
/// }
/// # fn main() {}
/// ```
///
/// ```compile_fail
/// struct S;
/// impl S {
///     #[concurrent_futures::task]
///     fn method(&self) -> u32 {
///         1
///     }
/// }
/// # fn main() {}
/// ```
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = proc_macro2::TokenStream::from(attr);
        return syn::Error::new(attr.span(), "#[task] takes no arguments")
            .to_compile_error()
            .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    match expand(&func) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

fn expand(func: &ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &func.sig;
    let reject = |what: &str, span: Span| {
        Err(syn::Error::new(
            span,
            format!("#[task] cannot register {what} function"),
        ))
    };
    if sig.asyncness.is_some() {
        return reject("an async", sig.span());
    }
    if sig.constness.is_some() {
        return reject("a const", sig.span());
    }
    if sig.unsafety.is_some() {
        return reject("an unsafe", sig.span());
    }
    if sig.abi.is_some() {
        return reject("an extern", sig.span());
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return reject("a generic", sig.generics.span());
    }
    if sig.variadic.is_some() {
        return reject("a variadic", sig.span());
    }

    let mut types = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => return reject("a method (self)", r.span()),
            FnArg::Typed(pat) => {
                if let syn::Type::ImplTrait(_) = *pat.ty {
                    return reject("an `impl Trait` argument", pat.ty.span());
                }
                types.push((*pat.ty).clone());
            }
        }
    }
    let idents: Vec<_> = (0..types.len())
        .map(|i| format_ident!("__cf_arg{}", i))
        .collect();
    let (args_ty, args_pat) = match types.len() {
        0 => (quote!(()), quote!(())),
        1 => {
            let t = &types[0];
            let i = &idents[0];
            (quote!(#t), quote!(#i))
        }
        _ => (quote!((#(#types,)*)), quote!((#(#idents,)*))),
    };
    let ret_ty = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, t) => quote!(#t),
    };
    let name = &sig.ident;
    let name_str = name.to_string();
    let entry = format_ident!("__CONCURRENT_FUTURES_TASK_{}", name);
    let krate = quote!(::concurrent_futures::__private);

    Ok(quote! {
        #func

        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #[#krate::linkme::distributed_slice(#krate::TASKS)]
        #[linkme(crate = #krate::linkme)]
        static #entry: #krate::TaskEntry = #krate::TaskEntry {
            name: ::core::concat!(::core::module_path!(), "::", #name_str),
            type_id: || #krate::type_id_of_val(&#name),
            fingerprint: #krate::fingerprint::<#args_ty, #ret_ty>,
            invoke: |bytes, out| {
                #krate::invoke::<#args_ty, #ret_ty, _>(bytes, out, |#args_pat| #name(#(#idents),*))
            },
        };
    })
}
