//! Helpers shared by the net crate's integration tests.

use fulcrum_dlb::Backend;
use fulcrum_runtime::{Builder, Runtime, Scheduler};

/// One runtime of each scheduler: DLB with 2 and 4 workers, work stealing
/// with 2, and current-thread. The suites run against all of them.
#[allow(dead_code)] // not every test file needs it
pub fn runtimes() -> Vec<(&'static str, Runtime)> {
    let multi = |workers, scheduler| {
        Builder::new_multi_thread()
            .worker_threads(workers)
            .scheduler(scheduler)
            .dlb_backend(Backend::Software)
            .build()
            .expect("build runtime")
    };
    vec![
        ("dlb-2", multi(2, Scheduler::Dlb)),
        ("dlb-4", multi(4, Scheduler::Dlb)),
        ("stealing-2", multi(2, Scheduler::WorkStealing)),
        (
            "current",
            Builder::new_current_thread()
                .build()
                .expect("build runtime"),
        ),
    ]
}

/// Asserts that every socket of `rt` was deregistered.
#[allow(dead_code)] // not every test file needs it
pub fn assert_no_sockets_left(name: &str, rt: &Runtime) {
    let m = rt.handle().metrics();
    let live: u64 = m.workers.iter().map(|w| w.io_resources).sum();
    assert_eq!(live, 0, "{name}: sockets left registered: {m:?}");
}
