//! Shutdown of a loaded runtime frees everything: `FULCRUM_TEST_CONNS`
//! (default 10,000) open Unix-socket connections, each registered by a task
//! waiting to read from it, plus twice as many tasks queued behind two
//! blocked workers, in the DLB rings and (the credit pool being small) in
//! the overflow queue, when the runtime is dropped. Every task's future is
//! dropped exactly once, and every descriptor the runtime's tasks held is
//! closed. The other ends of the connections live in child processes
//! (forked before the runtime exists, in batches), so that this process
//! needs one descriptor per connection, not two. Alone in its binary: it
//! counts every fd of the process. `.ci/run` also runs it under valgrind
//! with a small count.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use fulcrum_dlb::Backend;
use fulcrum_net::UnixStream;
use fulcrum_runtime::Builder;
use fulcrum_test_support::{open_fds, raise_fd_limit};
use tokio::io::AsyncReadExt;

/// What the process's fds point at (for a failure message).
fn fd_targets() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!("{}: {}", e.file_name().to_string_lossy(), target.display())
        })
        .collect()
}

/// Counts the drops of the futures it is part of.
struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// Child processes holding the far ends of the test's connections until
/// dropped.
struct FarEnds {
    /// Closing it tells the children to exit.
    go: Option<OwnedFd>,
    children: Vec<libc::pid_t>,
}

impl Drop for FarEnds {
    fn drop(&mut self) {
        drop(self.go.take());
        for &pid in &self.children {
            let mut status = 0;
            // SAFETY: waits for a child this test forked.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
}

/// Makes `n` connected Unix socket pairs; returns the near ends, and the
/// children that hold the far ones. Call it before any other thread of the
/// test's own exists (the children only close, read and exit).
fn connections(n: usize) -> (Vec<std::os::unix::net::UnixStream>, FarEnds) {
    const BATCH: usize = 1000;
    let mut pipe = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    let rc = unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both are new fds that nothing else owns.
    let (wait_end, go) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let mut near = Vec::with_capacity(n);
    let mut children = Vec::new();
    while near.len() < n {
        let batch: Vec<_> = (0..BATCH.min(n - near.len()))
            .map(|_| std::os::unix::net::UnixStream::pair().expect("socketpair"))
            .collect();
        // What the child closes: every near end (earlier batches' and this
        // one's) and the write end of the pipe; it keeps the far ends.
        let close: Vec<i32> = near
            .iter()
            .map(AsRawFd::as_raw_fd)
            .chain(batch.iter().map(|(a, _)| a.as_raw_fd()))
            .chain([go.as_raw_fd()])
            .collect();
        let wait_fd = wait_end.as_raw_fd();
        // SAFETY: the child calls only close, read and _exit, which are
        // async-signal-safe, on data prepared before the fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: as above; `close` and `wait_fd` were made before the
            // fork and are only read.
            unsafe {
                for &fd in &close {
                    libc::close(fd);
                }
                let mut b = 0u8;
                while libc::read(wait_fd, (&mut b as *mut u8).cast(), 1) != 0 {}
                libc::_exit(0);
            }
        }
        children.push(pid);
        near.extend(batch.into_iter().map(|(a, _far)| a));
    }
    drop(wait_end);
    (
        near,
        FarEnds {
            go: Some(go),
            children,
        },
    )
}

#[test]
fn shutdown_with_open_connections_and_queued_tasks_frees_every_task_and_fd() {
    let conns: usize = std::env::var("FULCRUM_TEST_CONNS")
        .ok()
        .map(|v| v.parse().expect("FULCRUM_TEST_CONNS: a count"))
        .unwrap_or(10_000);
    let queued = 2 * conns;
    let want = conns as u64 + 2_512;
    let soft = raise_fd_limit(want);
    assert!(
        soft >= want,
        "this test needs {want} file descriptors; the hard limit is {soft}"
    );
    let build = || {
        Builder::new_multi_thread()
            .worker_threads(2)
            .dlb_backend(Backend::Software)
            .dlb_credits(64)
            .build()
            .expect("build the runtime")
    };
    // Process-wide state created lazily by a first runtime is not a leak.
    drop(build());
    let baseline = open_fds();
    let (near, far) = connections(conns);

    let rt = build();
    let drops = Arc::new(AtomicUsize::new(0));
    let (registered_tx, registered) = mpsc::channel();
    for theirs in near {
        theirs.set_nonblocking(true).expect("nonblocking");
        let (guard, tx) = (Guard(drops.clone()), registered_tx.clone());
        drop(rt.spawn(async move {
            let _guard = guard;
            let mut s = UnixStream::from_std(theirs).expect("register the socket");
            let _ = tx.send(());
            // Nothing is ever written: the task waits here until shutdown.
            let mut byte = [0u8; 1];
            let _ = s.read(&mut byte).await;
        }));
    }
    drop(registered_tx);
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 0..conns {
        let left = deadline.saturating_duration_since(Instant::now());
        registered
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("{i} of {conns} connections registered: {e}"));
    }
    // A socket moving between workers' reactors is counted on one side
    // only once the move is done: look again for a while.
    let live = |m: &fulcrum_runtime::RuntimeMetrics| -> u64 {
        m.workers.iter().map(|w| w.io_resources).sum()
    };
    let settled = Instant::now() + Duration::from_secs(10);
    let mut m = rt.handle().metrics();
    while live(&m) != conns as u64 && Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(10));
        m = rt.handle().metrics();
    }
    assert_eq!(live(&m), conns as u64, "registered sockets: {m:?}");
    drop(m);

    // Both workers blocked (one blocker placed on each: the arbiter cannot
    // know that a task's first poll will block, so unplaced, both could
    // land on one worker while the other sleeps), then the queued tasks
    // from outside: with 64 credits most of them overflow the DLB rings.
    let release = Arc::new(AtomicBool::new(false));
    let (blocked_tx, blocked) = mpsc::channel();
    for worker in 0..2 {
        let (flag, tx) = (release.clone(), blocked_tx.clone());
        drop(rt.handle().spawn_on_worker(worker, async move {
            let _ = tx.send(());
            while !flag.load(SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }));
        if let Err(e) = blocked.recv_timeout(Duration::from_secs(5)) {
            release.store(true, SeqCst);
            panic!(
                "a worker took its blocking task: {e}: {:?}",
                rt.handle().metrics()
            );
        }
    }
    for _ in 0..queued {
        let guard = Guard(drops.clone());
        drop(rt.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        }));
    }
    // (A metrics snapshot holds a handle, which keeps the runtime's
    // descriptors open: keep only the figure.)
    let overflowed = rt.handle().metrics().remote_fallbacks;
    assert!(overflowed > 0, "no task reached the overflow queue");

    // Shut down while the workers are still blocked: the releaser lets
    // them return once the shutdown has begun.
    let releaser = {
        let release = release.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            release.store(true, SeqCst);
        })
    };
    let started = Instant::now();
    drop(rt);
    releaser.join().expect("the releaser");
    assert_eq!(
        drops.load(SeqCst),
        conns + queued,
        "futures dropped at shutdown, of {conns} connection tasks and {queued} queued ones"
    );
    // The pipe to the children is the one fd left of the test's own.
    assert_eq!(
        open_fds(),
        baseline + 1,
        "fds after shutdown: every connection's fd must be closed: {:?}",
        fd_targets()
    );
    drop(far);
    assert_eq!(open_fds(), baseline, "fds after the children exited");
    println!(
        "shutdown of {conns} connections and {queued} queued tasks ({} remote spawns fell back to the overflow queue): {:?}",
        overflowed,
        started.elapsed()
    );
}
