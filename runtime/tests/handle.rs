//! `Handle::block_on`, `task::{id, try_id}` and tokio's `RuntimeMetrics`
//! methods, against tokio's documented behaviour.
#![cfg(not(loom))]

mod common;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::runtimes;
use fulcrum_dlb::Backend;
use fulcrum_runtime::{task, Builder};

#[test]
fn handle_block_on_from_a_plain_thread() {
    for (name, rt) in runtimes() {
        let handle = rt.handle().clone();
        let is_current = handle.is_current_thread();
        let out = std::thread::spawn(move || {
            handle.block_on(async {
                // Timers and the runtime's context work in the future itself.
                fulcrum_runtime::time::sleep(Duration::from_millis(1)).await;
                if is_current {
                    // The current-thread runtime runs its tasks only inside
                    // `Runtime::block_on` (as in tokio): none runs here.
                    1
                } else {
                    fulcrum_runtime::spawn(async { 1 }).await.expect("task")
                }
            })
        });
        assert_eq!(out.join().expect("thread"), 1, "{name}");
    }
}

#[test]
fn handle_block_on_in_a_blocking_closure() {
    for (name, rt) in runtimes() {
        let out = rt.block_on(async {
            let handle = fulcrum_runtime::Handle::current();
            fulcrum_runtime::spawn_blocking(move || {
                handle.block_on(async { fulcrum_runtime::spawn(async { 6 * 7 }).await })
            })
            .await
        });
        assert_eq!(out.expect("blocking call").expect("task"), 42, "{name}");
    }
}

#[test]
fn handle_block_on_on_a_worker_panics_as_tokio() {
    for (name, rt) in runtimes() {
        let err = rt.block_on(async {
            fulcrum_runtime::spawn(async {
                fulcrum_runtime::Handle::current().block_on(async {});
            })
            .await
            .expect_err("panicked")
        });
        let msg = err.into_panic();
        let msg = msg
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| msg.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(
            msg.starts_with("Cannot start a runtime from within a runtime"),
            "{name}: {msg}"
        );
    }
}

#[test]
fn task_ids_as_tokio() {
    assert_eq!(task::try_id(), None, "outside a task");
    for (name, rt) in runtimes() {
        rt.block_on(async {
            assert_eq!(
                task::try_id(),
                None,
                "{name}: the block_on future is not a task"
            );
            let h = fulcrum_runtime::spawn(async {
                let before = task::id();
                fulcrum_runtime::yield_now().await;
                assert_eq!(task::id(), before);
                before
            });
            let other = fulcrum_runtime::spawn(async { task::id() });
            let id = h.id();
            assert_eq!(h.await.expect("task"), id, "{name}");
            assert_ne!(other.await.expect("task"), id, "{name}");
            let blocking = fulcrum_runtime::spawn_blocking(task::try_id);
            let _ = blocking.await.expect("blocking call");
        });
    }
}

#[test]
#[should_panic(expected = "can't get a task id when not inside a task")]
fn task_id_outside_a_task_panics() {
    task::id();
}

#[test]
fn metrics_with_tokio_names() {
    for (name, rt) in runtimes() {
        let handle = rt.handle().clone();
        let m = handle.metrics();
        assert_eq!(m.num_workers(), m.workers.len(), "{name}");
        let before_spawned = m.spawned_tasks_count();
        let polled_before: u64 = (0..m.num_workers()).map(|w| m.worker_poll_count(w)).sum();
        let gate = Arc::new(AtomicBool::new(false));
        rt.block_on(async {
            let handles: Vec<_> = (0..10)
                .map(|_| {
                    let gate = gate.clone();
                    fulcrum_runtime::spawn(async move {
                        // At least one sleep: every runtime parks meanwhile.
                        loop {
                            fulcrum_runtime::time::sleep(Duration::from_millis(1)).await;
                            if gate.load(SeqCst) {
                                break;
                            }
                        }
                    })
                })
                .collect();
            // The live counters: the same `RuntimeMetrics` sees them move.
            assert_eq!(m.num_alive_tasks(), 10, "{name}");
            assert_eq!(m.spawned_tasks_count(), before_spawned + 10, "{name}");
            gate.store(true, SeqCst);
            for h in handles {
                h.await.expect("task");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while m.num_alive_tasks() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(m.num_alive_tasks(), 0, "{name}");
        let polled: u64 = (0..m.num_workers()).map(|w| m.worker_poll_count(w)).sum();
        assert!(polled >= polled_before + 10, "{name}: {polled} polls");
        let parks: u64 = (0..m.num_workers()).map(|w| m.worker_park_count(w)).sum();
        assert!(parks > 0, "{name}: the workers slept at some point");
        assert_eq!(
            m.worker_park_unpark_count(0),
            2 * m.worker_park_count(0),
            "{name}"
        );
        let _ = m.global_queue_depth();
        let _ = m.worker_local_queue_depth(0);
        let _ = m.worker_steal_count(0);
        // The snapshot fields stay as they were.
        assert_eq!(m.alive_tasks, 0, "{name}");
    }
}

#[test]
fn current_thread_queue_depth_and_busy_time() {
    let rt = Builder::new_current_thread().build().unwrap();
    // Spawned from outside `block_on`: they wait in the runtime's queue.
    let handles: Vec<_> = (0..5).map(|_| rt.spawn(async {})).collect();
    let m = rt.handle().metrics();
    assert_eq!(m.worker_local_queue_depth(0), 5);
    assert_eq!(m.global_queue_depth(), 0);
    rt.block_on(async {
        for h in handles {
            h.await.expect("task");
        }
        // Some work, then a sleep, so that the busy time is recorded.
        let mut x = 0u64;
        for i in 0..100_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        fulcrum_runtime::time::sleep(Duration::from_millis(1)).await;
    });
    assert_eq!(m.worker_local_queue_depth(0), 0);
    assert!(m.worker_total_busy_duration(0) > Duration::ZERO);
    assert_eq!(m.workers.len(), 1);
}

#[test]
fn the_dlb_queue_is_the_global_queue() {
    // One worker held inside a long poll; tasks spawned from outside fill
    // its DLB consumer queue (8 deep), and the rest wait in the DLB queue.
    let rt = Builder::new_multi_thread()
        .worker_threads(1)
        .dlb_backend(Backend::Software)
        .build()
        .unwrap();
    let m = rt.handle().metrics();
    let release = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicBool::new(false));
    let (r2, g2) = (release.clone(), running.clone());
    let hold = rt.spawn(async move {
        g2.store(true, SeqCst);
        while !r2.load(SeqCst) {
            std::thread::yield_now();
        }
    });
    while !running.load(SeqCst) {
        std::thread::yield_now();
    }
    let handles: Vec<_> = (0..20).map(|_| rt.spawn(async {})).collect();
    let waiting = m.global_queue_depth();
    release.store(true, SeqCst);
    rt.block_on(async {
        hold.await.expect("task");
        for h in handles {
            h.await.expect("task");
        }
    });
    assert!(waiting >= 1, "tasks waited in the DLB queue: {waiting}");
    assert_eq!(m.global_queue_depth(), 0);
}

#[test]
#[should_panic(expected = "worker 5 does not exist")]
fn a_worker_out_of_range_panics() {
    let rt = Builder::new_current_thread().build().unwrap();
    rt.handle().metrics().worker_poll_count(5);
}
