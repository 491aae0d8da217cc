//! [`ReleaseList`]: what keeps a reactor's raw-pointer tokens from
//! dangling.
//!
//! A registration's readiness state is named in epoll by its address. When
//! the registration goes away (or moves to another reactor), its fd leaves
//! the epoll set first, then its state is [`defer`](ReleaseList::defer)red
//! here rather than freed: the owning thread may be dispatching an event
//! that names it, and so may a helper inside the same epoll set (the
//! rescue). The owner [`release`](ReleaseList::release)s the list right
//! before its next `epoll_wait`, when its own earlier events are all
//! dispatched, unless a helper is inside; a helper brackets its wait and
//! dispatch with [`assist`](ReleaseList::assist).
//!
//! Why that is enough: a wait that starts after the fd left the set returns
//! no event naming it. The helper announces itself (`assisting += 1`, then
//! a `SeqCst` fence) before it waits; the owner, after deferring (a fence,
//! then reading `assisting`), frees only if no helper was announced. Either
//! the owner sees the helper and keeps the state, or the helper's wait
//! started after the removal and cannot name it. The loom model below
//! checks this with the epoll set as a flag.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use crate::loom::{fence, lock, AtomicUsize, Mutex};

/// Deferred releases of one reactor, and the helpers inside its epoll set.
#[derive(Debug)]
pub(crate) struct ReleaseList<T> {
    pending: Mutex<Vec<T>>,
    /// Helpers waiting on or dispatching from the owner's epoll set.
    assisting: AtomicUsize,
}

impl<T> ReleaseList<T> {
    pub(crate) fn new() -> Self {
        Self {
            pending: Mutex::new(Vec::new()),
            assisting: AtomicUsize::new(0),
        }
    }

    /// Keeps `item` until the owner's next [`release`](Self::release) that
    /// finds no helper inside. Call it after the fd left the epoll set.
    pub(crate) fn defer(&self, item: T) {
        lock(&self.pending).push(item);
    }

    /// Called by the owning thread right before it waits: drops what was
    /// deferred, unless a helper is inside the epoll set (it may hold an
    /// event naming it; the next release will try again). Returns how many
    /// items it dropped.
    pub(crate) fn release(&self) -> usize {
        let mut pending = lock(&self.pending);
        if pending.is_empty() {
            return 0;
        }
        fence(SeqCst);
        if self.assisting.load(Relaxed) > 0 {
            return 0;
        }
        let released = std::mem::take(&mut *pending);
        drop(pending);
        let n = released.len();
        drop(released);
        n
    }

    /// Runs `f` (a helper's wait on the owner's epoll set and its dispatch)
    /// with the helper announced, so that nothing deferred meanwhile is
    /// dropped under it.
    pub(crate) fn assist<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        self.assisting.fetch_add(1, SeqCst);
        fence(SeqCst);
        let _leave = Leave(&self.assisting);
        f()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use std::sync::atomic::Ordering::{Relaxed, SeqCst};

    use ::loom::sync::atomic::AtomicBool;
    use ::loom::sync::Arc;
    use ::loom::thread;

    use super::ReleaseList;

    /// A registration's state: records being dropped.
    struct State(Arc<AtomicBool>);

    impl Drop for State {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }

    /// The owner removes the fd from its epoll set (`in_set = false`),
    /// defers the state and releases before its next wait; a helper inside
    /// the set at the same time takes an event naming the state if the fd
    /// is still in the set, and uses it. The state is never dropped while
    /// the helper uses it.
    #[test]
    fn a_deferred_state_outlives_a_helper_that_can_name_it() {
        ::loom::model(|| {
            let dropped = Arc::new(AtomicBool::new(false));
            let in_set = Arc::new(AtomicBool::new(true));
            let list = Arc::new(ReleaseList::new());
            let state = State(dropped.clone());
            let helper = {
                let (list, in_set, dropped) = (list.clone(), in_set.clone(), dropped.clone());
                thread::spawn(move || {
                    list.assist(|| {
                        // epoll_wait: an event naming the state only if the
                        // fd is still in the set.
                        if in_set.load(Relaxed) {
                            thread::yield_now();
                            assert!(!dropped.load(SeqCst), "dispatched a freed state");
                        }
                    });
                })
            };
            // EPOLL_CTL_DEL, then defer, then the owner's next wait.
            in_set.store(false, Relaxed);
            list.defer(state);
            list.release();
            helper.join().unwrap();
            // After the helper left, the owner's next release frees it.
            list.release();
            assert!(dropped.load(SeqCst), "the state was never freed");
        });
    }
}
