//! The work-stealing comparison mode (`Scheduler::WorkStealing`): a
//! competent tokio-like baseline on crossbeam-deque, with no DLB handoff.
//! Each worker has a FIFO deque and tokio's LIFO slot; remote spawns go to
//! a global injector; an idle worker steals half of a peer's deque, at most
//! half the workers searching at once.

use std::sync::atomic::Ordering::SeqCst;

use crossbeam_deque::{Injector, Steal, Stealer};

use super::worker::Worker;
use super::{Shared, TaskRef};
use crate::loom::AtomicUsize;
use crate::metrics::WorkerCounters;

/// Most tasks run from the LIFO slot in a row (tokio's value); then its
/// task goes to the deque, so that a ping-pong pair cannot starve the rest.
const MAX_LIFO_POLLS: u32 = 3;

/// The shared queues of the stealing mode.
pub(crate) struct Stealing {
    injector: Injector<TaskRef>,
    stealers: Box<[Stealer<TaskRef>]>,
    searching: AtomicUsize,
}

impl Stealing {
    pub(crate) fn new(stealers: Vec<Stealer<TaskRef>>) -> Self {
        Self {
            injector: Injector::new(),
            stealers: stealers.into_boxed_slice(),
            searching: AtomicUsize::new(0),
        }
    }

    /// A spawn or wake from outside the workers.
    pub(crate) fn push_remote(&self, task: TaskRef) {
        self.injector.push(task);
    }

    /// Whether any queue has work (checked after announcing idleness, so
    /// that a push that missed the announcement is seen here).
    pub(crate) fn has_work(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    /// Drops the injector's permissions (shutdown).
    pub(crate) fn clear(&self) {
        while let Some(task) = steal_until_done(|| self.injector.steal()) {
            drop(task);
        }
    }
}

fn steal_until_done<T>(mut f: impl FnMut() -> Steal<T>) -> Option<T> {
    loop {
        match f() {
            Steal::Success(t) => return Some(t),
            Steal::Empty => return None,
            Steal::Retry => std::hint::spin_loop(),
        }
    }
}

impl Shared {
    /// Work-stealing mode: whether any queue has work.
    pub(super) fn stealing_has_work(&self) -> bool {
        self.stealing.as_ref().is_some_and(Stealing::has_work)
    }
}

impl Worker {
    /// Work-stealing mode: schedules a task spawned or woken here. A task
    /// spawned or woken by the running task (not the running task itself:
    /// a yield) takes the LIFO slot and runs next, as in tokio; the slot's
    /// previous task goes to the deque.
    pub(super) fn schedule_stealing(
        &self,
        deque: &crossbeam_deque::Worker<TaskRef>,
        st: &Stealing,
        task: TaskRef,
    ) {
        let shared = &*self.shared;
        let task = match self.running() {
            Some(running) if shared.threads.lifo_slot && running != task.id() => {
                match self.lifo.borrow_mut().replace(task) {
                    Some(prev) => prev,
                    None => return,
                }
            }
            _ => task,
        };
        deque.push(task);
        // Wake a sleeper to steal it, unless someone already searches.
        if st.searching.load(SeqCst) == 0 {
            shared.notify_parked();
        }
    }

    /// Work-stealing mode: a batch from the injector into `deque`, and the
    /// first of it. If more than one came, a sleeping peer is woken to
    /// steal the rest, as tokio does: a peer woken for one of those tasks
    /// may have looked while they were in flight between the injector and
    /// this deque, found neither, and gone back to sleep (two tasks spawned
    /// back to back from outside then ran one after the other, the second
    /// waiting out the whole first poll).
    fn take_from_injector(
        &self,
        deque: &crossbeam_deque::Worker<TaskRef>,
        st: &Stealing,
    ) -> Option<TaskRef> {
        let t = steal_until_done(|| st.injector.steal_batch_and_pop(deque))?;
        if !deque.is_empty() {
            self.shared.notify_parked();
        }
        Some(t)
    }

    /// Work-stealing mode: the next task: the LIFO slot, the injector every
    /// maintenance interval, the own deque, the injector, then half of a
    /// peer's deque.
    pub(super) fn next_stolen(
        &self,
        deque: &crossbeam_deque::Worker<TaskRef>,
        st: &Stealing,
        tick: u32,
    ) -> Option<TaskRef> {
        if let Some(t) = self.lifo.borrow_mut().take() {
            if self.lifo_polls.get() < MAX_LIFO_POLLS {
                self.lifo_polls.set(self.lifo_polls.get() + 1);
                return Some(t);
            }
            deque.push(t);
        }
        self.lifo_polls.set(0);
        if tick % self.shared.threads.tuning.event_interval == 0 {
            if let Some(t) = self.take_from_injector(deque, st) {
                return Some(t);
            }
        }
        if let Some(t) = deque.pop() {
            return Some(t);
        }
        if let Some(t) = self.take_from_injector(deque, st) {
            return Some(t);
        }
        let n = st.stealers.len();
        if st.searching.load(SeqCst) * 2 >= n {
            return None;
        }
        st.searching.fetch_add(1, SeqCst);
        let mut found = None;
        for k in 1..n {
            let victim = (self.index + k) % n;
            if let Some(t) = steal_until_done(|| st.stealers[victim].steal_batch_and_pop(deque)) {
                WorkerCounters::add(&self.counters().steals, 1 + deque.len() as u64);
                tracing::debug!(worker = self.index, victim, "stole tasks");
                found = Some(t);
                break;
            }
        }
        st.searching.fetch_sub(1, SeqCst);
        if found.is_some() && !deque.is_empty() {
            // More stolen than needed: let another sleeper help.
            self.shared.notify_parked();
        }
        found
    }

    /// Work-stealing mode: drops the queued permissions (shutdown).
    pub(super) fn clear_stealing(&self) {
        self.lifo.borrow_mut().take();
        if let Some(deque) = &self.deque {
            while deque.pop().is_some() {}
        }
    }
}
