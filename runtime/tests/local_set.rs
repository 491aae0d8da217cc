//! `task::LocalSet` and `task::spawn_local`, against tokio's documented
//! behaviour: `!Send` tasks on the thread that drives the set.
#![cfg(not(loom))]

mod common;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use common::runtimes;
use fulcrum_runtime::task::{self, spawn_local, LocalSet};
use fulcrum_runtime::{Builder, Handle};

/// Completes on its second poll, after a wake from another thread.
struct RemoteWake(bool);

impl Future for RemoteWake {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        let waker = cx.waker().clone();
        std::thread::spawn(move || waker.wake());
        Poll::Pending
    }
}

#[test]
fn run_until_inside_block_on_on_every_runtime() {
    for (name, rt) in runtimes() {
        let local = LocalSet::new();
        let total = local.block_on(&rt, async {
            let counter = Rc::new(Cell::new(0u32)); // not `Send`
            let mut handles = Vec::new();
            for i in 0..10u32 {
                let counter = counter.clone();
                handles.push(spawn_local(async move {
                    fulcrum_runtime::yield_now().await;
                    fulcrum_runtime::time::sleep(Duration::from_millis(1)).await;
                    RemoteWake(false).await;
                    counter.set(counter.get() + i);
                    task::id()
                }));
            }
            for h in handles {
                let id = h.id();
                assert_eq!(
                    h.await.expect("local task"),
                    id,
                    "task::id inside a local task"
                );
            }
            // Send tasks still go to the runtime's workers meanwhile.
            let sent = fulcrum_runtime::spawn(async { 5 }).await.expect("task");
            counter.get() + sent
        });
        assert_eq!(total, 45 + 5, "{name}");
    }
}

#[test]
fn awaiting_the_set_runs_every_task_to_completion() {
    let rt = Builder::new_current_thread().build().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let local = LocalSet::new();
    for i in 0..3 {
        let log = log.clone();
        // Spawned before the set runs: they wait until it is driven.
        local.spawn_local(async move {
            fulcrum_runtime::time::sleep(Duration::from_millis(3 - i)).await;
            log.borrow_mut().push(i);
        });
    }
    assert!(log.borrow().is_empty());
    rt.block_on(local);
    let mut got = log.borrow().clone();
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2]);
}

#[test]
#[should_panic(expected = "`spawn_local` called from outside of a `task::LocalSet`")]
fn spawn_local_outside_a_set_panics() {
    let rt = Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        drop(spawn_local(async {}));
    });
}

#[test]
fn enter_makes_spawn_local_work_and_tasks_run_when_driven() {
    let rt = Builder::new_current_thread().build().unwrap();
    let local = LocalSet::new();
    let h = {
        let _guard = local.enter();
        spawn_local(async { Rc::new(3) })
    };
    let v = local.block_on(&rt, h).expect("task");
    assert_eq!(*v, 3);
}

#[test]
fn a_set_on_a_blocking_thread_with_handle_block_on() {
    // tokio's recipe for `!Send` work on a multi-thread runtime: drive a
    // set on a thread that is not a worker.
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let n = rt.block_on(async move {
        fulcrum_runtime::spawn_blocking(move || {
            let local = LocalSet::new();
            handle.block_on(local.run_until(async {
                let shared = Rc::new(RefCell::new(0));
                let s2 = shared.clone();
                spawn_local(async move {
                    fulcrum_runtime::time::sleep(Duration::from_millis(1)).await;
                    *s2.borrow_mut() += 20;
                })
                .await
                .expect("local task");
                let from_worker = fulcrum_runtime::spawn(async { 22 }).await.expect("task");
                let out = *shared.borrow() + from_worker;
                out
            }))
        })
        .await
        .expect("blocking call")
    });
    assert_eq!(n, 42);
}

#[test]
fn a_set_inside_a_local_task() {
    let rt = Builder::new_current_thread().build().unwrap();
    let outer = LocalSet::new();
    let r = outer.block_on(&rt, async {
        spawn_local(async {
            let inner = LocalSet::new();
            inner
                .run_until(async { spawn_local(async { Rc::new(9) }).await.expect("inner") })
                .await
        })
        .await
        .expect("outer")
    });
    assert_eq!(*r, 9);
}

#[test]
fn dropping_the_set_cancels_its_tasks_on_its_thread() {
    let rt = Builder::new_current_thread().build().unwrap();
    let dropped_on = Arc::new(Mutex::new(None));
    /// Records the thread it is dropped on; the `Rc` makes it `!Send`.
    struct OnDrop(
        Arc<Mutex<Option<std::thread::ThreadId>>>,
        #[allow(dead_code)] Rc<()>,
    );
    impl Drop for OnDrop {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = Some(std::thread::current().id());
        }
    }
    let local = LocalSet::new();
    let guard = OnDrop(dropped_on.clone(), Rc::new(()));
    let h = local.spawn_local(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    });
    // Driven once, so the task is parked in its `pending`.
    local.block_on(&rt, fulcrum_runtime::yield_now());
    let abort = h.abort_handle();
    drop(local);
    assert_eq!(
        *dropped_on.lock().unwrap(),
        Some(std::thread::current().id())
    );
    assert!(abort.is_finished());
    let err = rt.block_on(h).expect_err("cancelled");
    assert!(err.is_cancelled());
}

#[test]
fn abort_from_another_thread() {
    let rt = Builder::new_current_thread().build().unwrap();
    let local = LocalSet::new();
    local.block_on(&rt, async {
        let h = spawn_local(async {
            let _not_send = Rc::new(());
            std::future::pending::<()>().await;
        });
        let abort = h.abort_handle();
        std::thread::spawn(move || abort.abort()).join().unwrap();
        let err = h.await.expect_err("aborted");
        assert!(err.is_cancelled());
    });
}

#[test]
fn a_panicking_local_task_reports_it() {
    let rt = Builder::new_current_thread().build().unwrap();
    let local = LocalSet::new();
    local.block_on(&rt, async {
        let h = spawn_local(async { panic!("local boom") });
        let err = h.await.expect_err("panicked");
        assert!(err.is_panic());
        assert_eq!(spawn_local(async { 1 }).await.expect("next task"), 1);
    });
}

#[test]
fn a_multi_thread_runtime_keeps_running_beside_the_set() {
    for (name, rt) in runtimes() {
        let local = LocalSet::new();
        let handle: Handle = rt.handle().clone();
        local.block_on(&rt, async move {
            let local_task = spawn_local(async {
                let rc = Rc::new(1);
                fulcrum_runtime::time::sleep(Duration::from_millis(2)).await;
                *rc
            });
            let remote = handle.spawn(async { 2 });
            assert_eq!(
                local_task.await.expect("local") + remote.await.expect("task"),
                3,
                "{name}"
            );
        });
    }
}
