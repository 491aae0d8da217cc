//! Where the tasks a worker schedules go: its local queue, or a handoff
//! through the DLB queue (see the module docs of `multi` for when), and the
//! shedding of a backlogged worker's queue.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fulcrum_dlb::Event;

use super::worker::{Intent, Phase, Worker};
use super::TaskRef;
use crate::metrics::WorkerCounters;
use crate::task::Notified;

/// At most this many tasks are shed at once.
pub(super) const SHED_MAX: usize = 32;

impl Worker {
    /// Schedules a task spawned or woken on this worker.
    pub(super) fn schedule(&self, task: TaskRef, intent: Intent) {
        let shared = &*self.shared;
        if let (Some(deque), Some(st)) = (&self.deque, &shared.stealing) {
            return self.schedule_stealing(deque, st, task);
        }
        let any_idle = shared.sleepers.any_idle();
        match (self.phase.get(), intent) {
            // This worker is blocked (`block_in_place`): everything goes to
            // a peer, directed (unordered, a full set of peer CQs would
            // leave this worker the only eligible port).
            (Phase::Blocking(_), _) => self.hand_off_or_queue(task, self.next_peer()),
            // The rescue: a light task comes here, directed (the module docs
            // of `multi` say why not unordered). A heavy one comes here only
            // if this worker is calm and serves no connections, else it
            // stays with its busy owner: heavy work stays put, the light
            // work behind it moves.
            (Phase::Rescuing { from }, _) => {
                let target = if self.is_heavy(&task) && !self.can_take_heavy() {
                    from
                } else {
                    self.index
                };
                self.hand_off_or_queue(task, Some(target))
            }
            // A spawn during a poll: decided when the poll ends.
            (Phase::Polling(_), Intent::Spawn) if any_idle => self.pending.borrow_mut().push(task),
            // Wakes from this worker's own I/O and yields, outside a poll.
            (Phase::Dispatching { backlogged }, Intent::Wake) if any_idle => {
                self.place_wake(task, backlogged)
            }
            // A spawn outside a poll (from a drop, say) while a peer idles.
            (Phase::Between | Phase::Dispatching { .. }, Intent::Spawn) if any_idle => {
                self.hand_off_or_queue(task, None)
            }
            // Wakes stay here, where the woken task's sockets are
            // registered.
            _ => self.queue.borrow_mut().push_back(task),
        }
    }

    /// Where a task woken by this worker's own I/O (or a yield) goes while
    /// a peer idles. A light task leaves for a calm sleeping peer (one not
    /// running heavy work, directed: unordered, the arbiter could hand it
    /// straight back) if it would wait here behind heavy work (this worker
    /// runs heavy work, or a heavy task is queued ahead of it) or behind a
    /// backlog. A heavy task stays, unless another heavy task is already
    /// queued here and a sleeping peer is calm and serves no connections:
    /// then it goes there, so that heavy work spreads without landing on
    /// light work. Its sockets follow it there (`crate::io`).
    fn place_wake(&self, task: TaskRef, backlogged: bool) {
        let heavy = self.is_heavy(&task);
        let crowded = self.heavy_queued.get();
        let peer = match (heavy, crowded || backlogged || self.runs_heavy()) {
            (true, _) if crowded => self.shared.calm_sleeping_peer(self.index, true),
            (false, true) => self.shared.calm_sleeping_peer(self.index, false),
            _ => None,
        };
        match peer {
            Some(_) => self.hand_off_or_queue(task, peer),
            None => {
                if heavy {
                    self.heavy_queued.set(true);
                }
                self.queue.borrow_mut().push_back(task);
            }
        }
    }

    /// Hands `task` off (unordered, or directed to `target`); if the send
    /// comes up short, or during shutdown, queues it here.
    fn hand_off_or_queue(&self, task: TaskRef, target: Option<usize>) {
        if self.shared.shutdown.load(Relaxed) {
            self.queue.borrow_mut().push_back(task);
            return;
        }
        if let Err(task) = self.hand_off(task, target) {
            self.queue.borrow_mut().push_back(task);
        }
    }

    /// Hands all of `tasks` off unordered with one send (the arbiter
    /// spreads a batch as it would spread its events one by one), leaving
    /// `tasks` empty. What the send does not take (no credits left), and
    /// everything during shutdown or while the port is in use further up
    /// this stack, queues here.
    fn hand_off_all(&self, tasks: &mut Vec<TaskRef>) {
        if self.shared.shutdown.load(Relaxed) {
            self.queue.borrow_mut().extend(tasks.drain(..));
            return;
        }
        let Ok(mut port) = self.port.try_borrow_mut() else {
            WorkerCounters::add(&self.counters().fallbacks, tasks.len() as u64);
            self.queue.borrow_mut().extend(tasks.drain(..));
            return;
        };
        let mut events = self.batch.take();
        events.clear();
        events.extend(tasks.drain(..).map(|t| Event::unordered(0, t.into_raw())));
        let sent = port.send(&events).unwrap_or(0);
        drop(port);
        WorkerCounters::add(&self.counters().dlb_sent, sent as u64);
        if sent < events.len() {
            WorkerCounters::add(&self.counters().fallbacks, (events.len() - sent) as u64);
            tracing::debug!(
                worker = self.index,
                kept = events.len() - sent,
                "dlb send short"
            );
            let mut queue = self.queue.borrow_mut();
            for event in &events[sent..] {
                // SAFETY: not sent: each payload is still ours, taken back
                // once.
                queue.push_back(unsafe { Notified::from_raw(event.udata) });
            }
        }
        tracing::debug!(worker = self.index, sent, "dlb send of spawned tasks");
        events.clear();
        self.batch.set(events);
    }

    /// As [`hand_off_or_queue`](Self::hand_off_or_queue), without the
    /// shutdown check (an explicit route of `Handle::spawn_on_worker` or
    /// `spawn_balanced`).
    pub(super) fn hand_off_or_keep(&self, task: TaskRef, target: Option<usize>) {
        if let Err(task) = self.hand_off(task, target) {
            self.queue.borrow_mut().push_back(task);
        }
    }

    /// Sends `task` through this worker's DLB port: unordered, or directed
    /// to `target`. Gives the task back if the send came up short (no
    /// credits, a full CQ) or the port is in use further up this stack;
    /// that counts as a fallback.
    pub(super) fn hand_off(&self, task: TaskRef, target: Option<usize>) -> Result<(), TaskRef> {
        let Ok(mut port) = self.port.try_borrow_mut() else {
            WorkerCounters::add(&self.counters().fallbacks, 1);
            return Err(task);
        };
        let id = task.id();
        let event = match target {
            Some(w) => Event::directed(w as u8, task.into_raw()),
            None => Event::unordered(0, task.into_raw()),
        };
        if port.send(&[event]).unwrap_or(0) == 1 {
            WorkerCounters::add(&self.counters().dlb_sent, 1);
            tracing::debug!(worker = self.index, task = %id, ?target, "dlb send task");
            return Ok(());
        }
        WorkerCounters::add(&self.counters().fallbacks, 1);
        tracing::debug!(worker = self.index, task = %id, "dlb send short; task kept");
        // SAFETY: not sent: the payload is still ours.
        Err(unsafe { Notified::from_raw(event.udata) })
    }

    /// The next peer of this worker, round robin (`None` if it has none).
    pub(super) fn next_peer(&self) -> Option<usize> {
        let n = self.shared.num_workers();
        if n < 2 {
            return None;
        }
        let k = self.peer_cursor.get() % (n - 1) + 1;
        self.peer_cursor.set(k);
        Some((self.index + k) % n)
    }

    /// Hands every task queued here to the peers, directed, round robin
    /// (`block_in_place`): the
    /// spawns of the current poll, the local queue, and what was received
    /// from the DLB queue and not run yet (released here, since it will
    /// not run here). Directed, because unordered events could come back:
    /// when every peer's CQ is full, this worker is the only eligible port.
    /// A send that comes up short keeps its task queued here: it runs when
    /// this worker is back.
    pub(super) fn hand_off_queued(&self) {
        if let (Some(deque), Some(st)) = (&self.deque, &self.shared.stealing) {
            // Stealing mode: the deque is stealable already; the LIFO slot
            // is not.
            if let Some(t) = self.lifo.borrow_mut().take() {
                deque.push(t);
            }
            let _ = st;
            self.shared.notify_parked();
            return;
        }
        let mut tasks: Vec<TaskRef> = std::mem::take(&mut *self.pending.borrow_mut());
        tasks.extend(self.queue.borrow_mut().drain(..));
        let received: Vec<TaskRef> = self.received.borrow_mut().drain(..).collect();
        if !received.is_empty() {
            let _ = self.port.borrow_mut().release(received.len());
        }
        tasks.extend(received);
        for t in tasks {
            if let Err(t) = self.hand_off(t, self.next_peer()) {
                self.queue.borrow_mut().push_back(t);
            }
        }
    }

    /// After a task poll: hands off the tasks it spawned (while another
    /// worker was idle), except in the chain case. A task that spawned
    /// exactly one task and then completed leaves nothing else to do here,
    /// so its successor runs next on this worker instead of crossing to
    /// another core: what tokio's LIFO slot gives `chained_spawn` and
    /// `ping_pong`. A task still alive after its poll (an accept loop, say)
    /// hands everything it spawned to the arbiter, so connections and
    /// fan-outs stay balanced. The cost: a successor waits for the rest of
    /// its spawner's poll, not only until the spawn.
    pub(super) fn end_poll(&self, completed: bool) {
        if self.pending.borrow().is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut *self.pending.borrow_mut());
        if pending.len() == 1 && completed {
            if let Some(t) = pending.pop() {
                self.queue.borrow_mut().push_front(t);
            }
        } else if self.shared.sleepers.any_idle() {
            self.hand_off_all(&mut pending);
        } else {
            self.queue.borrow_mut().extend(pending.drain(..));
        }
        // Keep the allocation.
        *self.pending.borrow_mut() = pending;
    }

    /// Whether a task behind `tasks` others here would wait at least the
    /// handoff threshold (`Builder::handoff_wait`), at `mean` per poll.
    pub(super) fn waits_long(&self, tasks: usize, mean: Duration) -> bool {
        let tasks = u32::try_from(tasks).unwrap_or(u32::MAX);
        let limit = self.shared.threads.tuning.handoff_wait;
        mean.checked_mul(tasks).map_or(true, |wait| wait >= limit)
    }

    /// Sheds part of a long local queue to idle workers, if its tail would
    /// wait long here (`mean`: the recent mean poll time): half of it, at
    /// most [`SHED_MAX`], as unordered handoffs.
    pub(super) fn shed(&self, mean: Duration) {
        let shared = &*self.shared;
        let len = self.queue.borrow().len();
        if len <= shared.threads.tuning.shed_min
            || !self.waits_long(len, mean)
            || !shared.sleepers.any_idle()
        {
            return;
        }
        // Half the queue from its tail, at most `SHED_MAX`; heavy tasks
        // stay here.
        let take = (len / 2).min(SHED_MAX);
        let events: Vec<Event> = {
            let mut queue = self.queue.borrow_mut();
            let mut events = Vec::with_capacity(take);
            let mut kept = Vec::new();
            while events.len() < take {
                let Some(t) = queue.pop_back() else { break };
                if self.is_heavy(&t) {
                    kept.push(t);
                } else {
                    events.push(Event::unordered(0, t.into_raw()));
                }
            }
            queue.extend(kept.into_iter().rev());
            events
        };
        if events.is_empty() {
            return;
        }
        let sent = self.port.borrow_mut().send(&events).unwrap_or(0);
        if sent > 0 {
            WorkerCounters::add(&self.counters().dlb_sent, sent as u64);
            tracing::debug!(worker = self.index, tasks = sent, "dlb send shed tasks");
        }
        if sent < events.len() {
            WorkerCounters::add(&self.counters().fallbacks, (events.len() - sent) as u64);
            let mut queue = self.queue.borrow_mut();
            for ev in &events[sent..] {
                // SAFETY: not sent: the payloads are still ours.
                queue.push_back(unsafe { Notified::from_raw(ev.udata) });
            }
        }
    }
}
