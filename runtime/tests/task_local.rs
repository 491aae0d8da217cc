//! `task_local!` and `task::LocalKey`, against tokio's documented
//! behaviour: the value follows its task across `.await` points and across
//! moves between workers, and is seen by nothing else.
#![cfg(not(loom))]

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use common::runtimes;
use fulcrum_dlb::Backend;
use fulcrum_runtime::task::{AccessError, TaskLocalFuture};
use fulcrum_runtime::{Builder, Handle};

fulcrum_runtime::task_local! {
    static NUMBER: u32;
    /// A public key, with its docs (attributes are kept).
    pub static NAME: String;
}

/// Completes on its second poll, after a wake from a thread that is not a
/// worker: on a DLB runtime that wake goes through the DLB queue, and the
/// arbiter picks the worker that polls the task next.
struct RemoteWake(bool);

impl Future for RemoteWake {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        let waker = cx.waker().clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1));
            waker.wake();
        });
        Poll::Pending
    }
}

#[test]
fn scope_holds_across_await_on_every_runtime() {
    for (name, rt) in runtimes() {
        let got = rt.block_on(NUMBER.scope(7, async {
            let before = NUMBER.get();
            fulcrum_runtime::yield_now().await;
            fulcrum_runtime::time::sleep(Duration::from_millis(1)).await;
            RemoteWake(false).await;
            (before, NUMBER.get(), NUMBER.with(|n| n * 2))
        }));
        assert_eq!(got, (7, 7, 14), "{name}");
    }
}

#[test]
fn the_value_moves_with_its_task_between_workers() {
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .dlb_backend(Backend::Software)
        .build()
        .unwrap();
    let workers = rt.block_on(async { rt_task(rt.handle().clone()).await });
    assert_eq!(
        workers.len(),
        2,
        "the task ran on both workers: {workers:?}"
    );

    async fn rt_task(handle: Handle) -> HashSet<usize> {
        let task = handle.spawn_on_worker(
            0,
            NAME.scope("moving".to_string(), async {
                let mut seen = HashSet::new();
                for _ in 0..500 {
                    let worker = Handle::current().current_worker().expect("on a worker");
                    seen.insert(worker);
                    assert_eq!(NAME.get(), "moving", "on worker {worker}");
                    if seen.len() == 2 {
                        break;
                    }
                    RemoteWake(false).await;
                }
                seen
            }),
        );
        task.await.expect("task")
    }
}

#[test]
fn interleaved_tasks_see_only_their_own_values() {
    for (name, rt) in runtimes() {
        rt.block_on(async {
            let handles: Vec<_> = (0..32u32)
                .map(|i| {
                    fulcrum_runtime::spawn(NUMBER.scope(i, async move {
                        for _ in 0..20 {
                            assert_eq!(NUMBER.get(), i);
                            fulcrum_runtime::yield_now().await;
                        }
                        NUMBER.get()
                    }))
                })
                .collect();
            for (i, h) in handles.into_iter().enumerate() {
                assert_eq!(h.await.expect("task"), i as u32, "{name}");
            }
        });
    }
}

#[test]
fn spawned_tasks_do_not_inherit_and_outside_is_an_error() {
    let rt = Builder::new_current_thread().build().unwrap();
    rt.block_on(NUMBER.scope(1, async {
        let inner = fulcrum_runtime::spawn(async { NUMBER.try_with(|n| *n) });
        let inherited: Result<u32, AccessError> = inner.await.expect("task");
        assert!(
            inherited.is_err(),
            "a spawned task starts without the value"
        );
        assert_eq!(NUMBER.get(), 1, "the spawner still has it");
    }));
    assert!(NUMBER.try_with(|n| *n).is_err());
    let e = NAME.try_with(|n| n.len()).unwrap_err();
    assert_eq!(e.to_string(), "task-local value not set");
}

#[test]
#[should_panic(expected = "cannot access a task-local storage value without setting it first")]
fn get_outside_a_scope_panics() {
    NUMBER.get();
}

#[test]
fn sync_scope_and_nesting() {
    let r = NUMBER.sync_scope(3, || {
        let outer = NUMBER.get();
        let inner = NUMBER.sync_scope(4, || NUMBER.get());
        (outer, inner, NUMBER.get())
    });
    assert_eq!(r, (3, 4, 3));
    assert!(NUMBER.try_with(|_| ()).is_err(), "unset after the scope");

    let rt = Builder::new_current_thread().build().unwrap();
    let r = rt.block_on(NUMBER.scope(10, async {
        let inner = NUMBER
            .scope(20, async {
                fulcrum_runtime::yield_now().await;
                NUMBER.get()
            })
            .await;
        (inner, NUMBER.get())
    }));
    assert_eq!(r, (20, 10));
}

#[test]
fn the_inner_future_is_dropped_with_the_value_set() {
    struct ReadOnDrop(std::sync::Arc<std::sync::Mutex<Option<u32>>>);
    impl Drop for ReadOnDrop {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = NUMBER.try_with(|n| *n).ok();
        }
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let guard = ReadOnDrop(seen.clone());
    let fut = NUMBER.scope(42, async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    });
    let rt = Builder::new_current_thread().build().unwrap();
    let r = rt.block_on(fulcrum_runtime::time::timeout(
        Duration::from_millis(1),
        fut,
    ));
    assert!(r.is_err());
    assert_eq!(*seen.lock().unwrap(), Some(42));
}

#[test]
fn take_value_takes_it_out() {
    let rt = Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut fut: Pin<Box<TaskLocalFuture<u32, _>>> =
            Box::pin(NUMBER.scope(5, async { NUMBER.try_with(|n| *n).is_ok() }));
        assert_eq!(fut.as_mut().take_value(), Some(5));
        assert_eq!(fut.as_mut().take_value(), None);
        assert!(!fut.await, "the key is unset once its value is taken");
    });
}
