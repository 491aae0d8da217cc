//! Loom models of the task state machine: wakes racing a poll, abort racing
//! completion, the `JoinHandle` dropped or polled while the task completes.
//! Each model checks that the output is delivered or dropped exactly once and
//! that the task is freed (no reference leaked, none dropped twice).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::SeqCst;
use std::task::{Context, Poll, Waker};

use ::loom::sync::atomic::AtomicUsize;
use ::loom::sync::{Arc, Mutex};
use ::loom::thread;

use super::{new_task, Notified, Schedule, Task};

#[derive(Clone)]
struct Mock {
    queue: Arc<Mutex<VecDeque<Notified<Mock>>>>,
}

impl Schedule for Mock {
    fn schedule(&self, task: Notified<Self>) {
        self.queue.lock().unwrap().push_back(task);
    }

    fn release(&self, _task: &Task<Self>) -> Option<Task<Self>> {
        None
    }
}

impl Mock {
    fn new() -> Self {
        Mock {
            queue: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    /// Runs queued tasks until the queue is empty; returns how many ran.
    fn drain(&self) -> usize {
        let mut ran = 0;
        loop {
            let next = self.queue.lock().unwrap().pop_front();
            match next {
                Some(task) => {
                    task.run(crate::clock::now_ns());
                    ran += 1;
                }
                None => return ran,
            }
        }
    }
}

/// Counts drops of the value it guards.
struct Tracked(Arc<AtomicUsize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// Returns `Pending` `pendings` times (handing its waker to `slot` each
/// time), then `Ready` with a tracked output.
struct Steps {
    pendings: usize,
    slot: Arc<Mutex<Option<Waker>>>,
    output_drops: Arc<AtomicUsize>,
    _alive: Tracked,
}

impl Future for Steps {
    type Output = Tracked;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Tracked> {
        *self.slot.lock().unwrap() = Some(cx.waker().clone());
        if self.pendings == 0 {
            Poll::Ready(Tracked(self.output_drops.clone()))
        } else {
            self.pendings -= 1;
            Poll::Pending
        }
    }
}

struct Probe {
    slot: Arc<Mutex<Option<Waker>>>,
    future_drops: Arc<AtomicUsize>,
    output_drops: Arc<AtomicUsize>,
}

fn steps(pendings: usize) -> (Steps, Probe) {
    let slot = Arc::new(Mutex::new(None));
    let future_drops = Arc::new(AtomicUsize::new(0));
    let output_drops = Arc::new(AtomicUsize::new(0));
    (
        Steps {
            pendings,
            slot: slot.clone(),
            output_drops: output_drops.clone(),
            _alive: Tracked(future_drops.clone()),
        },
        Probe {
            slot,
            future_drops,
            output_drops,
        },
    )
}

fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(futures_task::noop_waker_ref()))
}

#[test]
fn wake_while_running() {
    loom::model(|| {
        let mock = Mock::new();
        let (fut, probe) = steps(1);
        let (owned, notified, mut join) = new_task(fut, mock.clone());
        let slot = probe.slot.clone();
        let waker_thread = thread::spawn(move || {
            let waker = slot.lock().unwrap().take();
            if let Some(w) = waker {
                w.wake();
            }
        });
        notified.run(crate::clock::now_ns());
        waker_thread.join().unwrap();
        // If the other thread looked before the waker existed, wake now.
        let late = probe.slot.lock().unwrap().take();
        if let Some(w) = late {
            w.wake();
        }
        assert_eq!(mock.drain(), 1, "exactly one re-run");
        match poll_once(&mut join) {
            Poll::Ready(Ok(_output)) => {}
            other => panic!("unexpected {:?}", other.map(|r| r.map(|_| ()))),
        }
        assert_eq!(probe.future_drops.load(SeqCst), 1);
        assert_eq!(probe.output_drops.load(SeqCst), 1);
        drop(join);
        drop(owned);
        assert_eq!(Arc::strong_count(&probe.slot), 1, "task freed");
    });
}

#[test]
fn wake_after_completion_does_nothing() {
    loom::model(|| {
        let mock = Mock::new();
        let (fut, probe) = steps(0);
        let (owned, notified, join) = new_task(fut, mock.clone());
        let slot = probe.slot.clone();
        notified.run(crate::clock::now_ns());
        let waker = slot.lock().unwrap().take();
        drop(slot);
        let t = thread::spawn(move || {
            if let Some(w) = waker {
                w.wake();
            }
        });
        drop(join);
        t.join().unwrap();
        assert_eq!(mock.drain(), 0);
        assert_eq!(probe.output_drops.load(SeqCst), 1, "output dropped once");
        drop(owned);
        assert_eq!(Arc::strong_count(&probe.slot), 1, "task freed");
    });
}

#[test]
fn abort_races_completion() {
    loom::model(|| {
        let mock = Mock::new();
        let (fut, probe) = steps(1);
        let (owned, notified, mut join) = new_task(fut, mock.clone());
        let abort = join.abort_handle();
        let t = thread::spawn(move || abort.abort());
        notified.run(crate::clock::now_ns());
        // Wake the task for its second poll, racing the abort.
        let waker = probe.slot.lock().unwrap().take();
        if let Some(w) = waker {
            w.wake();
        }
        t.join().unwrap();
        mock.drain();
        let outcome = match poll_once(&mut join) {
            Poll::Ready(Ok(_)) => "ok",
            Poll::Ready(Err(e)) if e.is_cancelled() => "cancelled",
            Poll::Ready(Err(e)) => panic!("{e}"),
            Poll::Pending => panic!("task neither completed nor cancelled"),
        };
        assert_eq!(probe.future_drops.load(SeqCst), 1, "{outcome}");
        drop(join);
        assert_eq!(
            probe.output_drops.load(SeqCst),
            usize::from(outcome == "ok"),
            "output dropped once iff produced"
        );
        drop(owned);
        assert_eq!(Arc::strong_count(&probe.slot), 1, "task freed");
    });
}

#[test]
fn join_handle_dropped_racing_completion() {
    loom::model(|| {
        let mock = Mock::new();
        let (fut, probe) = steps(0);
        let (owned, notified, join) = new_task(fut, mock.clone());
        let t = thread::spawn(move || drop(join));
        notified.run(crate::clock::now_ns());
        t.join().unwrap();
        assert_eq!(probe.output_drops.load(SeqCst), 1, "output dropped once");
        assert_eq!(probe.future_drops.load(SeqCst), 1);
        drop(owned);
        assert_eq!(Arc::strong_count(&probe.slot), 1, "task freed");
    });
}

#[test]
fn join_waker_is_never_lost() {
    loom::model(|| {
        let mock = Mock::new();
        let (fut, probe) = steps(0);
        let (owned, notified, join) = new_task(fut, mock.clone());
        // The joiner blocks until the join waker fires: a lost join wake-up
        // is a loom deadlock.
        let joiner = thread::spawn(move || ::loom::future::block_on(join).is_ok());
        notified.run(crate::clock::now_ns());
        assert!(joiner.join().unwrap());
        assert_eq!(probe.output_drops.load(SeqCst), 1);
        drop(owned);
        assert_eq!(Arc::strong_count(&probe.slot), 1, "task freed");
    });
}

#[test]
fn shutdown_races_wake() {
    loom::model(|| {
        let mock = Mock::new();
        let (fut, probe) = steps(1);
        let (owned, notified, mut join) = new_task(fut, mock.clone());
        notified.run(crate::clock::now_ns());
        let waker = probe.slot.lock().unwrap().take();
        let t = thread::spawn(move || {
            if let Some(w) = waker {
                w.wake();
            }
        });
        owned.shutdown();
        t.join().unwrap();
        mock.drain();
        match poll_once(&mut join) {
            Poll::Ready(Err(e)) => assert!(e.is_cancelled()),
            Poll::Ready(Ok(_)) => {}
            Poll::Pending => panic!("shutdown left the task pending"),
        }
        assert_eq!(probe.future_drops.load(SeqCst), 1);
        drop(join);
        assert_eq!(Arc::strong_count(&probe.slot), 1, "task freed");
    });
}
