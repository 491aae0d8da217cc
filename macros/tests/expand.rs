//! The expansions, compiled and run against the real runtime.
//!
//! The facade does not exist for this crate (it depends on this one), so
//! this test crate plays its part: it names itself `fulcrum` and provides
//! the `__private` module that the generated code goes through, with the
//! items the facade provides there.

extern crate self as fulcrum;

#[doc(hidden)]
pub mod __private {
    pub use fulcrum_dlb::Backend;
    pub use fulcrum_runtime::{Builder, Scheduler};
}

/// A stand-in for a crate that re-exports the facade elsewhere, for
/// `crate = "..."`.
mod reexport {
    pub use crate as fulcrum;
}

use std::sync::atomic::{AtomicUsize, Ordering};

use fulcrum_runtime::{Handle, RuntimeMetrics};

fn metrics() -> RuntimeMetrics {
    Handle::current().metrics()
}

/// Spawns tasks from the `block_on` thread and waits for them; returns the
/// tasks received through the DLB queue, over all workers.
async fn spawn_some() -> u64 {
    let handles: Vec<_> = (0..64u64)
        .map(|i| fulcrum_runtime::spawn(async move { i }))
        .collect();
    let mut sum = 0;
    for h in handles {
        sum += h.await.expect("task panicked");
    }
    assert_eq!(sum, 63 * 64 / 2);
    metrics().workers.iter().map(|w| w.dlb_received).sum()
}

#[fulcrum_macros::test]
async fn test_default_is_dlb_with_two_workers() {
    assert!(!Handle::current().is_current_thread());
    assert_eq!(metrics().num_workers(), 2);
    assert!(spawn_some().await > 0, "tasks went through the DLB queue");
}

#[fulcrum_macros::test(workers = 3)]
async fn workers() {
    assert_eq!(metrics().num_workers(), 3);
}

#[fulcrum_macros::test(worker_threads = 1, flavor = "multi_thread")]
async fn tokio_spelling_multi_thread() {
    assert!(!Handle::current().is_current_thread());
    assert_eq!(metrics().num_workers(), 1);
}

#[fulcrum_macros::test(scheduler = "current")]
async fn current() {
    assert!(Handle::current().is_current_thread());
    assert_eq!(spawn_some().await, 0);
}

#[fulcrum_macros::test(flavor = "current_thread")]
async fn tokio_spelling_current_thread() {
    assert!(Handle::current().is_current_thread());
}

#[fulcrum_macros::test(scheduler = "stealing", workers = 2)]
async fn stealing() {
    assert!(!Handle::current().is_current_thread());
    assert_eq!(metrics().num_workers(), 2);
    assert_eq!(spawn_some().await, 0, "nothing goes through DLB");
}

#[fulcrum_macros::test(dlb = "soft")]
async fn soft_backend() {
    assert_eq!(metrics().num_workers(), 2);
}

#[fulcrum_macros::test(crate = "crate::reexport::fulcrum")]
async fn crate_path() {
    assert_eq!(metrics().num_workers(), 2);
}

#[fulcrum_macros::test(crate = crate::reexport::fulcrum)]
async fn crate_path_unquoted() {
    assert_eq!(metrics().num_workers(), 2);
}

#[fulcrum_macros::test]
async fn returns_result() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = "42".parse()?;
    assert_eq!(n, 42);
    Ok(())
}

#[fulcrum_macros::test]
#[should_panic(expected = "boom")]
async fn should_panic_stays() {
    panic!("boom");
}

#[fulcrum_macros::test(workers = 64)]
#[should_panic(expected = "failed to build the Fulcrum runtime: worker_threads(64)")]
async fn build_failure_panics() {}

/// Doc comments and inner attributes stay.
#[fulcrum_macros::test]
async fn inner_attributes() {
    #![allow(clippy::bool_assert_comparison)]
    assert_eq!(true, true);
}

#[fulcrum_macros::test]
async fn body_borrows_and_returns_early() {
    let v = [1, 2, 3];
    let total: i32 = v.iter().sum();
    if total == 6 {
        return;
    }
    unreachable!();
}

// `#[fulcrum::main]` on functions other than `main` (as tokio allows):
// they are plain functions that build a runtime and block on their body.

#[fulcrum_macros::main(workers = 2)]
async fn main_like() -> usize {
    metrics().num_workers()
}

#[fulcrum_macros::main]
async fn main_default() -> bool {
    Handle::current().is_current_thread()
}

#[fulcrum_macros::main(scheduler = "current")]
async fn main_current(counter: &AtomicUsize) -> Result<usize, std::num::ParseIntError> {
    counter.fetch_add(1, Ordering::Relaxed);
    let n: usize = "7".parse()?;
    Ok(n)
}

#[test]
fn main_expansions() {
    assert_eq!(main_like(), 2);
    assert!(!main_default());
    let counter = AtomicUsize::new(0);
    assert_eq!(main_current(&counter), Ok(7));
    assert_eq!(counter.load(Ordering::Relaxed), 1);
}

/// tokio's `start_paused`: a current-thread runtime whose clock is frozen,
/// so an hour-long sleep completes at once, in virtual time.
#[fulcrum_macros::test(start_paused = true)]
async fn start_paused_freezes_the_clock() {
    assert!(Handle::current().is_current_thread());
    let start = fulcrum_runtime::time::Instant::now();
    let real = std::time::Instant::now();
    fulcrum_runtime::time::sleep(std::time::Duration::from_secs(3600)).await;
    assert_eq!(start.elapsed(), std::time::Duration::from_secs(3600));
    assert!(real.elapsed() < std::time::Duration::from_secs(60));
}
