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

/// Raises the soft `RLIMIT_NOFILE` to the hard limit if it is below `want`;
/// panics, saying why the test cannot run, if the hard limit is below it.
#[allow(dead_code)] // not every test file needs it
pub fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur >= want {
        return;
    }
    assert!(
        lim.rlim_max >= want,
        "this test needs {want} file descriptors; the hard limit is {}",
        lim.rlim_max
    );
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit reads the struct we pass.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

/// The number of open file descriptors of this process.
#[allow(dead_code)] // not every test file needs it
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}
