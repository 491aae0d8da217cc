//! `task::block_in_place`: while a worker blocks, the tasks queued on it
//! run elsewhere; on the current-thread runtime it panics as tokio's does;
//! outside a worker it just runs. And a sleeping task moved to another
//! worker takes its timer along.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulcrum_dlb::Backend;
use fulcrum_runtime::task::block_in_place;
use fulcrum_runtime::{spawn, Builder, Handle, Runtime, Scheduler};

fn multi(scheduler: Scheduler) -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .scheduler(scheduler)
        .dlb_backend(Backend::Software)
        .build()
        .expect("runtime")
}

/// A task on worker 0 queues 10 tasks behind itself, then blocks in
/// `block_in_place` until they have all run: they can only run on the
/// other worker. Without the handoff it would wait for its 5 s bound.
#[test]
fn queued_tasks_run_elsewhere_while_a_worker_blocks() {
    for scheduler in [Scheduler::Dlb, Scheduler::WorkStealing] {
        let rt = multi(scheduler);
        let (ran, waited, ran_on) = rt.block_on(async {
            Handle::current()
                .spawn_on_worker(0, async {
                    let ran = Arc::new(AtomicUsize::new(0));
                    let ran_on = Arc::new(AtomicUsize::new(0));
                    let me = Handle::current().current_worker();
                    for _ in 0..10 {
                        let (ran, ran_on) = (ran.clone(), ran_on.clone());
                        // Queued on this worker (the other is busy or not,
                        // the spawn may stay here: that is the point).
                        drop(spawn(async move {
                            if Handle::current().current_worker() != me {
                                ran_on.fetch_add(1, SeqCst);
                            }
                            ran.fetch_add(1, SeqCst);
                        }));
                    }
                    let t = Instant::now();
                    block_in_place(|| {
                        while ran.load(SeqCst) < 10 && t.elapsed() < Duration::from_secs(5) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    });
                    // Back on the worker it blocked.
                    assert_eq!(Handle::current().current_worker(), me);
                    (ran.load(SeqCst), t.elapsed(), ran_on.load(SeqCst))
                })
                .await
                .expect("task")
        });
        assert_eq!(ran, 10, "{scheduler:?}");
        assert!(waited < Duration::from_secs(5), "{scheduler:?}: {waited:?}");
        assert!(ran_on > 0, "{scheduler:?}: nothing ran on the other worker");
    }
}

/// Spawns made while the worker is blocked go elsewhere too.
#[test]
fn spawns_during_block_in_place_run_elsewhere() {
    let rt = multi(Scheduler::Dlb);
    let done = rt.block_on(async {
        Handle::current()
            .spawn_on_worker(0, async {
                let ran = Arc::new(AtomicUsize::new(0));
                let r2 = ran.clone();
                block_in_place(move || {
                    for _ in 0..10 {
                        let r = r2.clone();
                        drop(spawn(async move {
                            r.fetch_add(1, SeqCst);
                        }));
                    }
                    let t = Instant::now();
                    while r2.load(SeqCst) < 10 && t.elapsed() < Duration::from_secs(5) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                });
                ran.load(SeqCst)
            })
            .await
            .expect("task")
    });
    assert_eq!(done, 10);
}

#[test]
fn block_in_place_panics_on_the_current_thread_runtime() {
    let rt = Builder::new_current_thread().build().expect("runtime");
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async { block_in_place(|| 1) })
    }))
    .expect_err("must panic");
    let msg = err
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(msg.contains("multi-threaded runtime"), "{msg}");
}

#[test]
fn block_in_place_elsewhere_just_runs() {
    assert_eq!(block_in_place(|| 7), 7);
    let rt = multi(Scheduler::Dlb);
    // Inside `block_on` of a multi-thread runtime (not a worker).
    assert_eq!(rt.block_on(async { block_in_place(|| 8) }), 8);
    // On the blocking pool.
    let h = rt.spawn_blocking(|| block_in_place(|| 9));
    assert_eq!(rt.block_on(h).expect("blocking"), 9);
}

/// A task registers a 200 ms sleep on worker 0's timer wheel, is then
/// woken from worker 1 (so it runs there) and awaits the same sleep while
/// worker 0 blocks for a second: the sleep moved along with the task and
/// ends on time.
#[test]
fn a_moved_task_takes_its_timer_along() {
    use std::future::Future;
    use std::pin::pin;

    let rt = multi(Scheduler::Dlb);
    let took = rt.block_on(async {
        let start = Instant::now();
        let poker = Handle::current().spawn_on_worker(1, async {
            fulcrum_runtime::time::sleep(Duration::from_millis(40)).await;
        });
        let sleeper = Handle::current().spawn_on_worker(0, async move {
            assert_eq!(Handle::current().current_worker(), Some(0));
            let mut sleep = pin!(fulcrum_runtime::time::sleep(Duration::from_millis(200)));
            let mut poker = pin!(poker);
            // Registers the sleep here, on worker 0; the poker's completion
            // wakes this task from worker 1.
            std::future::poll_fn(|cx| {
                let _ = sleep.as_mut().poll(cx);
                poker.as_mut().poll(cx).map(|_| ())
            })
            .await;
            let moved = Handle::current().current_worker() == Some(1);
            sleep.await;
            moved
        });
        let blocker = Handle::current().spawn_on_worker(0, async {
            std::thread::sleep(Duration::from_millis(20));
            block_in_place(|| std::thread::sleep(Duration::from_secs(1)));
        });
        let moved = sleeper.await.expect("sleeper");
        let took = start.elapsed();
        blocker.await.expect("blocker");
        (moved, took)
    });
    let (moved, took) = took;
    assert!(
        moved,
        "the sleeper did not move to worker 1: nothing tested"
    );
    assert!(
        took < Duration::from_millis(700),
        "the 200 ms sleep ended after {took:?}: it waited for the blocked worker"
    );
}
