//! Helpers shared by the runtime's integration tests.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread;

use fulcrum_dlb::Backend;
use fulcrum_runtime::{Builder, Runtime, Scheduler};

/// A runtime builder of each scheduler: DLB with 2 and 4 workers, work
/// stealing with 2, and current-thread, for tests that configure more
/// before building.
#[allow(dead_code)] // not every test file needs it
pub fn builders() -> Vec<(&'static str, Builder)> {
    let multi = |workers, scheduler| {
        let mut b = Builder::new_multi_thread();
        b.worker_threads(workers)
            .scheduler(scheduler)
            .dlb_backend(Backend::Software);
        b
    };
    vec![
        ("dlb-2", multi(2, Scheduler::Dlb)),
        ("dlb-4", multi(4, Scheduler::Dlb)),
        ("stealing-2", multi(2, Scheduler::WorkStealing)),
        ("current", Builder::new_current_thread()),
    ]
}

/// One runtime of each scheduler, built from [`builders`]. The suites run
/// against all of them.
#[allow(dead_code)] // not every test file needs it
pub fn runtimes() -> Vec<(&'static str, Runtime)> {
    builders()
        .into_iter()
        .map(|(name, mut b)| (name, b.build().expect("build runtime")))
        .collect()
}

/// Polls a future to completion on this thread, without any runtime.
#[allow(dead_code)] // not every test file needs it
pub fn futures_block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl futures_task::ArcWake for Unpark {
        fn wake_by_ref(a: &Arc<Self>) {
            a.0.unpark();
        }
    }
    let waker = futures_task::waker(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}
