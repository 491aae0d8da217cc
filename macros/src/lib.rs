//! The `#[fulcrum::main]` and `#[fulcrum::test]` attributes. Use them
//! through the `fulcrum` crate, which re-exports them; this crate is not
//! meant to be a direct dependency.
//!
//! Both turn an `async fn` into a plain `fn` that builds a Fulcrum runtime
//! and blocks on the body. Their options, all optional, in any order,
//! separated by commas:
//!
//! | option | values | default |
//! | --- | --- | --- |
//! | `workers = N` (alias `worker_threads = N`) | an integer literal, at least 1 | `main`: the available parallelism; `test`: 2 |
//! | `scheduler = "..."` | `"dlb"`, `"stealing"`, `"current"` | `"dlb"` |
//! | `flavor = "..."` (tokio's spelling) | `"multi_thread"` (the `scheduler`'s choice, DLB by default), `"current_thread"` (same as `scheduler = "current"`) | `"multi_thread"` |
//! | `dlb = "..."` | `"auto"`, `"soft"` (the software queue), `"hw"` (DLB device 0) | `"auto"`, which `FULCRUM_DLB` overrides |
//! | `start_paused = true` | the runtime's clock starts paused (tokio's `test-util`; see `fulcrum::time::pause`); needs the current-thread scheduler, which it picks when no scheduler is given | `false` |
//! | `crate = "path"` | where the `fulcrum` crate is, for use through a re-export | `::fulcrum` |
//!
//! With tokio's spellings, `#[tokio::main(flavor = "multi_thread",
//! worker_threads = 4)]` ports by renaming the path alone. `flavor` and
//! `scheduler` may both be given if they agree (`flavor = "multi_thread",
//! scheduler = "stealing"`). Setting `workers` or `dlb` with the
//! current-thread scheduler, giving an option twice, `workers = 0`, an
//! unknown option or value, a function that is not `async`, and arguments
//! or generics on `main` or on a test are compile errors that point at the
//! offending token.
//!
//! # What the expansion names
//! The generated code reaches the runtime only through
//! `<crate>::__private::{Builder, Scheduler, Backend}`, where `<crate>` is
//! `::fulcrum` unless `crate = "..."` says otherwise; `fulcrum` keeps that
//! hidden module for this crate's use (`Builder` and `Scheduler` from
//! `fulcrum::runtime`, `Backend` from `fulcrum::dlb`), so that the paths
//! resolve wherever the facade is re-exported. For
//!
//! ```ignore
//! #[fulcrum::main(workers = 4)]
//! async fn main() {
//!     serve().await
//! }
//! ```
//!
//! the expansion is (tokio's shape):
//!
//! ```ignore
//! fn main() {
//!     let body = async { serve().await };
//!     #[allow(clippy::expect_used, clippy::diverging_sub_expression, clippy::needless_return)]
//!     {
//!         let rt = match ::fulcrum::__private::Builder::new_multi_thread()
//!             .scheduler(::fulcrum::__private::Scheduler::Dlb)
//!             .worker_threads(4usize)
//!             .enable_all()
//!             .build()
//!         {
//!             ::core::result::Result::Ok(rt) => rt,
//!             ::core::result::Result::Err(e) => {
//!                 ::core::panic!("failed to build the Fulcrum runtime: {}", e)
//!             }
//!         };
//!         return rt.block_on(body);
//!     }
//! }
//! ```
//!
//! On an error the function is still emitted (no longer `async`, its body
//! type-checked but never run, naming nothing of the runtime) beside the
//! error, so that the rest of the crate and IDEs still see it.

mod entry;

use proc_macro::TokenStream;

/// Runs an `async fn main` on a Fulcrum runtime.
///
/// By default the runtime is multi-threaded, with one worker per available
/// core, the DLB scheduler, and the DLB backend chosen automatically
/// (hardware if a device and `libdlb.so` are found, else the software
/// queue; the `FULCRUM_DLB` environment variable overrides it). A failure
/// to build the runtime panics with `failed to build the Fulcrum runtime:
/// {error}`.
///
/// `main` may return any type, such as `Result<(), Box<dyn Error>>`.
///
/// ```ignore
/// #[fulcrum::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let listener = fulcrum::net::TcpListener::bind("127.0.0.1:8080").await?;
///     // ...
///     Ok(())
/// }
/// ```
///
/// # Options
/// - `workers = N` (alias `worker_threads = N`): the number of worker
///   threads, at least 1. Not with the current-thread scheduler.
/// - `scheduler = "dlb" | "stealing" | "current"`: DLB handoffs (the
///   default), the work-stealing comparison baseline, or the
///   current-thread runtime (everything on the thread that calls `main`).
/// - `flavor = "multi_thread" | "current_thread"`: tokio's spelling;
///   `"current_thread"` is `scheduler = "current"`.
/// - `dlb = "auto" | "soft" | "hw"`: the DLB backend: chosen automatically
///   (the default), the software queue, or DLB device 0. Not with the
///   current-thread scheduler.
/// - `start_paused = true`: the runtime's clock starts paused, as tokio's
///   option (time moves only with `fulcrum::time::advance` or when the
///   runtime is idle). Needs the current-thread scheduler; with no
///   `scheduler`/`flavor` option it selects it.
/// - `crate = "path"`: where the `fulcrum` crate is, when it is used
///   through a re-export (default `::fulcrum`).
///
/// ```ignore
/// #[fulcrum::main(workers = 4, scheduler = "stealing")]
/// async fn main() {}
///
/// #[fulcrum::main(flavor = "current_thread")]
/// async fn main() {}
/// ```
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::expand(args.into(), item.into(), entry::Kind::Main).into()
}

/// Runs an `async fn` test on a Fulcrum runtime of its own.
///
/// **By default a test's runtime has the DLB scheduler and 2 workers**
/// (not one per core, and not a current-thread runtime, as tokio's default
/// is), so that every test exercises the real path: tasks handed from one
/// worker to another through the DLB queue. `workers = N` or
/// `scheduler = "current"` change that.
///
/// The test may return a `Result`. Other attributes stay on the function:
/// `#[should_panic]`, `#[ignore]` and the like work as on a plain `#[test]`
/// (do not add `#[test]` itself: this attribute already makes the function
/// a test).
///
/// ```ignore
/// #[fulcrum::test]
/// async fn handoff() {
///     let h = fulcrum::spawn(async { 6 * 7 });
///     assert_eq!(h.await.unwrap(), 42);
/// }
///
/// #[fulcrum::test(workers = 4, dlb = "soft")]
/// #[should_panic(expected = "boom")]
/// async fn panics() {
///     panic!("boom");
/// }
/// ```
///
/// # Options
/// The same as [`macro@main`]'s: `workers = N` (alias `worker_threads`),
/// `scheduler = "dlb" | "stealing" | "current"`, `flavor =
/// "multi_thread" | "current_thread"`, `dlb = "auto" | "soft" | "hw"`,
/// `start_paused = true | false`, `crate = "path"`.
///
/// `#[fulcrum::test(start_paused = true)]` runs on a current-thread
/// runtime whose clock starts paused, as tokio's
/// `#[tokio::test(start_paused = true)]` does:
///
/// ```ignore
/// #[fulcrum::test(start_paused = true)]
/// async fn an_hour_passes_at_once() {
///     let start = fulcrum::time::Instant::now();
///     fulcrum::time::sleep(std::time::Duration::from_secs(3600)).await;
///     assert_eq!(start.elapsed(), std::time::Duration::from_secs(3600));
/// }
/// ```
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::expand(args.into(), item.into(), entry::Kind::Test).into()
}
