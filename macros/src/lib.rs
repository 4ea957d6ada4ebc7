//! Attribute macros for [`concurrent-futures`](https://docs.rs/concurrent-futures).
//!
//! Use them through the main crate: `use concurrent_futures::task;`.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{ToTokens, format_ident, quote};
use syn::{FnArg, ItemFn, ReturnType, parse_macro_input, spanned::Spanned};

/// Registers a plain function as a task that worker processes can run.
///
/// The attribute adds a registration, under the stable name
/// `module::path::fn_name`, that the process pool (and any other
/// out-of-process backend of `concurrent-futures`) looks up by name, together
/// with a fingerprint of its argument and result types.
///
/// The function's name becomes a unit struct (`Copy`, `Debug`) that
/// implements `concurrent_futures::RegisteredTask`: a function item's type
/// cannot be named, so no trait could be implemented for it, and the trait
/// is how the process pool refuses plain functions and closures at compile
/// time. The struct still calls like the function, `add(1, 2)`, and `*add`
/// is a plain function pointer, for APIs that take closures (an iterator's
/// or the thread pool's `map`). Being a unit struct, the name cannot be
/// reused for a local variable in its scope (`let add = ..` is a pattern
/// then, and fails to compile).
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
///     assert_eq!(add(1, 2), 3); // still called as a function
///     let sums: Vec<i32> = [(1, 2), (3, 4)].into_iter().map(|(a, b)| add(a, b)).collect();
///     assert_eq!(sums, [3, 7]);
///     let as_pointer: fn(i32, i32) -> i32 = *add;
///     assert_eq!(as_pointer(2, 2), 4);
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
    let inner = format_ident!("__concurrent_futures_task_{}", name);
    let krate = quote!(::concurrent_futures::__private);
    let vis = &func.vis;
    // The user's function keeps its body, signature and attributes under a
    // hidden name; `name` becomes a unit struct, because a trait can only be
    // implemented for a type one can name, and a function item's type has
    // no name. Its docs, and its `cfg`s (which must apply to every item made
    // here), go on the struct as well.
    let mut inner_fn = func.clone();
    inner_fn.sig.ident = inner.clone();
    inner_fn.vis = syn::Visibility::Inherited;
    let cfgs: Vec<_> = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .collect();
    let docs: Vec<_> = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .collect();
    let fn_ptr = quote!(fn(#(#types),*) -> #ret_ty);
    let fingerprint = fingerprint(&args_ty, &ret_ty);

    Ok(quote! {
        #(#docs)*
        #(#cfgs)*
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug)]
        #vis struct #name;

        #[doc(hidden)]
        #[allow(non_snake_case)]
        #inner_fn

        // Calls: `name(a, b)` auto-dereferences the struct to a function
        // pointer, so the task stays callable as an ordinary function.
        #(#cfgs)*
        impl ::core::ops::Deref for #name {
            type Target = #fn_ptr;
            fn deref(&self) -> &Self::Target {
                &(#inner as #fn_ptr)
            }
        }

        #(#cfgs)*
        impl ::concurrent_futures::TaskFn<#args_ty, #krate::Registered> for #name {
            type Output = #ret_ty;
            fn call_with(&self, #args_pat: #args_ty) -> #ret_ty {
                #inner(#(#idents),*)
            }
        }

        #(#cfgs)*
        impl ::concurrent_futures::RegisteredTask<#args_ty, #krate::Registered> for #name {}

        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #[#krate::linkme::distributed_slice(#krate::TASKS)]
        #[linkme(crate = #krate::linkme)]
        static #entry: #krate::TaskEntry = #krate::TaskEntry {
            name: ::core::concat!(::core::module_path!(), "::", #name_str),
            type_id: || #krate::type_id_of_val(&#name),
            fingerprint: #fingerprint,
            types: #krate::type_id_of::<(#args_ty, #ret_ty)>,
            run: |batch| {
                #krate::run_batch::<#args_ty, #ret_ty>(batch, |#args_pat| #inner(#(#idents),*))
            },
        };
    })
}

/// The wire fingerprint of a task's types: a 64-bit FNV-1a hash of the
/// argument and result types as written in the source, without whitespace.
/// Computed here, from the tokens, rather than from `std::any::type_name`,
/// whose output may change between compiler versions: two builds of the
/// same source agree, whatever compiled them.
fn fingerprint(args: &impl ToTokens, ret: &impl ToTokens) -> u64 {
    let text = format!("{} -> {}", args.to_token_stream(), ret.to_token_stream());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes().filter(|b| !b.is_ascii_whitespace()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
