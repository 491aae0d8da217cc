//! The software queue's reference model (what `tests/model.rs` and the
//! fuzz target `fuzz/fuzz_targets/dlb_queue.rs` hold the queue to): a
//! domain shape, the operations of a scenario, and a sequential model that
//! checks the queue after every step. See `tests/model.rs` for what it
//! checks. Shared by `#[path]`, so it is not a test target of its own.

use std::collections::{BTreeSet, HashSet, VecDeque};

use fulcrum_dlb::{Backend, Domain, Event, Port, Sched};

/// One step of a scenario. Port numbers and release counts are raw and
/// reduced at run time (modulo the number of ports, or of the events owed).
#[derive(Clone, Debug)]
pub enum Op {
    /// Sends the events the port kept from a short send, then `batch` new
    /// unordered events to queue 0.
    Send { port: usize, batch: usize },
    /// Receives into a buffer of `buf` events.
    Recv { port: usize, buf: usize },
    /// Releases `raw % (owed + 1)` events, or, with `over`, more than owed.
    Release { port: usize, raw: u32, over: bool },
}

/// A domain shape: ports, CQ depth, credits, which ports are linked to
/// queue 0 (bit i: port i; at least one), and their link priorities.
#[derive(Clone, Debug)]
pub struct Shape {
    pub ports: usize,
    pub cq_depth: u32,
    pub credits: u32,
    pub linked: Vec<bool>,
    pub link_priority: Vec<u8>,
}

/// The reference model: what the queue must look like from outside.
pub struct Model {
    depth: u64,
    credits: u32,
    linked: Vec<bool>,
    /// Next payload; payloads are unique.
    next_id: u64,
    /// Per port: events a short send left with the caller, in order.
    kept: Vec<Vec<u64>>,
    /// Accepted by a send and not yet received.
    undelivered: BTreeSet<u64>,
    /// Every payload ever received.
    received: HashSet<u64>,
    /// Per port: received and not released, oldest first.
    owed: Vec<VecDeque<u64>>,
    /// Per port: the `owed` the arbiter sees. `release` publishes at once
    /// only when the port owed more than the CQ depth (it was ineligible);
    /// otherwise with the next `recv` (soft backend docs, *Releases*).
    published_owed: Vec<u64>,
    sent: Vec<u64>,
    recvd: Vec<u64>,
    released: Vec<u64>,
    credit_waits: Vec<u64>,
}

pub struct Sut {
    domain: Domain,
    ports: Vec<Port>,
}

impl Sut {
    pub fn new(s: &Shape) -> Sut {
        let mut b = Domain::builder()
            .backend(Backend::Software)
            .ignore_env()
            .ports(s.ports)
            .cq_depth(s.cq_depth)
            .credits(s.credits);
        for p in 0..s.ports {
            if s.linked[p] {
                b = b.link(p, 0, s.link_priority[p]);
            }
        }
        let domain = b.build().expect("a valid shape");
        let ports = (0..s.ports).map(|p| domain.port(p).unwrap()).collect();
        Sut { domain, ports }
    }

    fn available(&self) -> u32 {
        self.domain
            .credits_available()
            .expect("the software backend counts credits")
    }
}

impl Model {
    pub fn new(s: &Shape) -> Model {
        let n = s.ports;
        Model {
            depth: u64::from(s.cq_depth),
            credits: s.credits,
            linked: s.linked.clone(),
            next_id: 0,
            kept: vec![Vec::new(); n],
            undelivered: BTreeSet::new(),
            received: HashSet::new(),
            owed: vec![VecDeque::new(); n],
            published_owed: vec![0; n],
            sent: vec![0; n],
            recvd: vec![0; n],
            released: vec![0; n],
            credit_waits: vec![0; n],
        }
    }

    /// Events in port `p`'s CQ: its `in_flight` minus what it owes.
    fn cq(&self, sut: &Sut, p: usize) -> u64 {
        let in_flight = sut.ports[p].stats().in_flight;
        let owed = self.owed[p].len() as u64;
        assert!(
            in_flight >= owed,
            "port {p}: in_flight {in_flight} < owed {owed}"
        );
        in_flight - owed
    }

    fn eligible(&self, sut: &Sut, p: usize) -> bool {
        self.linked[p] && self.cq(sut, p) < self.depth && self.published_owed[p] <= self.depth
    }

    /// The invariants that hold between any two operations.
    pub fn check(&self, sut: &Sut, step: &str) {
        let n = self.linked.len();
        let mut in_cqs = 0;
        for p in 0..n {
            let cq = self.cq(sut, p);
            assert!(
                cq <= self.depth,
                "{step}: port {p} holds {cq} events in a CQ of {}",
                self.depth
            );
            if !self.linked[p] {
                assert_eq!(cq, 0, "{step}: unlinked port {p} got deliveries");
            }
            in_cqs += cq;
            let st = sut.ports[p].stats();
            assert_eq!(st.sent, self.sent[p], "{step}: port {p} sent");
            assert_eq!(st.received, self.recvd[p], "{step}: port {p} received");
            assert_eq!(st.released, self.released[p], "{step}: port {p} released");
            assert_eq!(
                st.credit_waits, self.credit_waits[p],
                "{step}: port {p} credit_waits"
            );
            let seen = sut.domain.port_stats(p).unwrap().in_flight;
            assert_eq!(
                seen,
                cq + self.published_owed[p],
                "{step}: port {p}: the arbiter's view of its load"
            );
        }
        let available = sut.available();
        assert!(available <= self.credits, "{step}: credits invented");
        let waiting = u64::from(self.credits - available);
        assert_eq!(
            in_cqs + waiting,
            self.undelivered.len() as u64,
            "{step}: conservation: {in_cqs} in CQs + {waiting} waiting (credits held) \
             != {} sent and not received",
            self.undelivered.len()
        );
        if waiting > 0 {
            for p in 0..n {
                assert!(
                    !self.eligible(sut, p),
                    "{step}: {waiting} events wait while linked port {p} is eligible \
                     (cq {}, published owed {})",
                    self.cq(sut, p),
                    self.published_owed[p]
                );
            }
        }
    }

    fn send(&mut self, sut: &mut Sut, p: usize, batch: usize) {
        let mut ids = std::mem::take(&mut self.kept[p]);
        for _ in 0..batch {
            ids.push(self.next_id);
            self.next_id += 1;
        }
        self.send_ids(sut, p, ids);
    }

    fn send_ids(&mut self, sut: &mut Sut, p: usize, ids: Vec<u64>) {
        let events: Vec<Event> = ids.iter().map(|&id| Event::unordered(0, id)).collect();
        let n = self.linked.len();
        let cq_before: Vec<u64> = (0..n).map(|q| self.cq(sut, q)).collect();
        let eligible_before: Vec<bool> = (0..n).map(|q| self.eligible(sut, q)).collect();
        let sent = sut.ports[p].send(&events).expect("valid events");
        assert!(sent <= events.len(), "sent {sent} of {}", events.len());
        if sent < events.len() {
            assert_eq!(
                sut.available(),
                0,
                "a send came up short ({sent} of {}) with credits left",
                events.len()
            );
        }
        for q in 0..n {
            let cq = self.cq(sut, q);
            if !eligible_before[q] {
                assert_eq!(
                    cq, cq_before[q],
                    "send: ineligible port {q} (cq {}, published owed {}) got a delivery",
                    cq_before[q], self.published_owed[q]
                );
            }
        }
        for &id in &ids[..sent] {
            assert!(self.undelivered.insert(id));
        }
        self.sent[p] += sent as u64;
        self.credit_waits[p] += (ids.len() - sent) as u64;
        // The rest stays with the caller, in order.
        self.kept[p] = ids[sent..].to_vec();
    }

    fn recv(&mut self, sut: &mut Sut, p: usize, buf: usize) -> usize {
        let cq_before = self.cq(sut, p);
        let mut out = vec![Event::default(); buf];
        let got = sut.ports[p].recv(&mut out).expect("soft recv");
        assert!(got <= buf, "recv returned {got} into a buffer of {buf}");
        assert!(
            got as u64 >= cq_before.min(buf as u64),
            "recv returned {got} while the CQ held {cq_before} (buffer {buf})"
        );
        if !self.linked[p] {
            assert_eq!(got, 0, "unlinked port {p} received");
        }
        for e in &out[..got] {
            assert_eq!((e.queue, e.sched), (0, Sched::Unordered), "{e:?}");
            assert!(
                self.undelivered.remove(&e.udata),
                "port {p} received {:#x}, which was never sent or was received before",
                e.udata
            );
            assert!(
                self.received.insert(e.udata),
                "{:#x} received twice",
                e.udata
            );
            self.owed[p].push_back(e.udata);
        }
        self.recvd[p] += got as u64;
        // A recv publishes every pending release with the new count.
        self.published_owed[p] = self.owed[p].len() as u64;
        got
    }

    fn release(&mut self, sut: &mut Sut, p: usize, ask: usize) {
        let owed = self.owed[p].len();
        let done = sut.ports[p].release(ask).expect("soft release");
        assert_eq!(
            done,
            ask.min(owed),
            "release({ask}) with {owed} owed released {done}"
        );
        for _ in 0..done {
            self.owed[p].pop_front();
        }
        self.released[p] += done as u64;
        if done > 0 && self.published_owed[p] > self.depth {
            self.published_owed[p] = self.owed[p].len() as u64;
        }
    }

    pub fn apply(&mut self, sut: &mut Sut, op: &Op) {
        let n = self.linked.len();
        match *op {
            Op::Send { port, batch } => self.send(sut, port % n, batch),
            Op::Recv { port, buf } => {
                self.recv(sut, port % n, buf);
            }
            Op::Release { port, raw, over } => {
                let p = port % n;
                let owed = self.owed[p].len();
                let ask = if over {
                    owed + 1 + raw as usize % 3
                } else {
                    raw as usize % (owed + 1)
                };
                self.release(sut, p, ask);
            }
        }
    }

    /// Receives and releases everything, sending what callers kept, until
    /// every event made has been received once; then the pool must be full.
    pub fn finish(&mut self, sut: &mut Sut) {
        let n = self.linked.len();
        let mut rounds = 0;
        while !self.undelivered.is_empty() || self.kept.iter().any(|k| !k.is_empty()) {
            rounds += 1;
            assert!(
                rounds < 10_000,
                "no progress: {} undelivered, kept {:?}",
                self.undelivered.len(),
                self.kept.iter().map(Vec::len).collect::<Vec<_>>()
            );
            for p in 0..n {
                if !self.kept[p].is_empty() {
                    let ids = std::mem::take(&mut self.kept[p]);
                    self.send_ids(sut, p, ids);
                    self.check(sut, "finish: send");
                }
            }
            for p in 0..n {
                loop {
                    // Release first: a port owing more than its CQ depth
                    // gets nothing until it does.
                    let owed = self.owed[p].len();
                    self.release(sut, p, owed);
                    self.check(sut, "finish: release");
                    if self.recv(sut, p, 64) == 0 {
                        break;
                    }
                    self.check(sut, "finish: recv");
                }
            }
        }
        for p in 0..n {
            let owed = self.owed[p].len();
            self.release(sut, p, owed);
            self.check(sut, "finish: last release");
            // A recv publishes the releases to the arbiter.
            assert_eq!(self.recv(sut, p, 1), 0);
        }
        self.check(sut, "finish");
        assert_eq!(sut.available(), self.credits, "credits back to full");
        assert_eq!(self.received.len() as u64, self.next_id, "every event once");
        assert!((0..self.next_id).all(|id| self.received.contains(&id)));
        for p in 0..n {
            assert_eq!(sut.ports[p].stats().in_flight, 0, "port {p} in flight");
            assert_eq!(sut.domain.port_stats(p).unwrap().in_flight, 0);
        }
        let sent: u64 = self.sent.iter().sum();
        let recvd: u64 = self.recvd.iter().sum();
        let released: u64 = self.released.iter().sum();
        assert_eq!(
            (sent, recvd, released),
            (self.next_id, self.next_id, self.next_id)
        );
    }
}

/// Runs one scenario: `ops` on a domain of `shape`, checked after every
/// step, then drained and checked for conservation and full credits.
/// Panics at the first disagreement with the model.
pub fn run(shape: &Shape, ops: &[Op]) {
    let mut sut = Sut::new(shape);
    let mut model = Model::new(shape);
    model.check(&sut, "start");
    for (i, op) in ops.iter().enumerate() {
        model.apply(&mut sut, op);
        model.check(&sut, &format!("step {i} {op:?}"));
    }
    model.finish(&mut sut);
}
