//! The policies and the discrete-event simulator that runs them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use fulcrum_test_support::fastrand::Rng;

use crate::model::Workload;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Hash,
    Race,
    Exact,
    Dlb,
    DlbRescue,
    Stealing,
    Pooled,
}

impl Policy {
    pub const ALL: [Policy; 7] = [
        Policy::Hash,
        Policy::Race,
        Policy::Exact,
        Policy::Dlb,
        Policy::DlbRescue,
        Policy::Stealing,
        Policy::Pooled,
    ];

    /// The identifier used in sim.json.
    pub fn id(self) -> &'static str {
        match self {
            Policy::Hash => "hash",
            Policy::Race => "race",
            Policy::Exact => "exact",
            Policy::Dlb => "dlb",
            Policy::DlbRescue => "dlb_rescue",
            Policy::Stealing => "stealing",
            Policy::Pooled => "pooled",
        }
    }

    /// A human name, for the table and the chart.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Hash => "reuseport hash",
            Policy::Race => "accept race",
            Policy::Exact => "exact (Envoy)",
            Policy::Dlb => "DLB placement",
            Policy::DlbRescue => "DLB + rescue",
            Policy::Stealing => "work stealing",
            Policy::Pooled => "pooled M/G/c",
        }
    }

    fn is_dlb(self) -> bool {
        matches!(self, Policy::Dlb | Policy::DlbRescue)
    }
}

/// Knobs of the policies themselves.
#[derive(Clone, Copy, Debug)]
pub struct Knobs {
    pub lock_us: f64,
    pub rescue_us: f64,
    pub cq_depth: usize,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            lock_us: 2.0,
            rescue_us: 100.0,
            cq_depth: 8,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ev {
    /// The worker's running request completes.
    Done(u32),
    /// `exact`: the accept of this connection leaves the lock.
    Accept(u32),
    /// `exact`: this connection closes.
    Close(u32),
    /// `dlb_rescue`: a request queued at this worker may now be overdue.
    Rescue(u32),
}

pub const NONE: u32 = u32::MAX;

/// What one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub mean_resp: f64,
    pub mean_wait: f64,
    pub util_mean: f64,
    pub util_max: f64,
    pub measured: usize,
    pub completed: usize,
    pub total: usize,
    /// Requests found still queued anywhere after the run (should be 0).
    pub leftover: usize,
    /// Any request completed before arrival + cost (should be 0).
    pub impossible: usize,
    /// A hash of every completion time, for the determinism check.
    pub fingerprint: u64,
}

struct Sim<'a> {
    policy: Policy,
    knobs: Knobs,
    wl: &'a Workload,
    rng: Rng,
    now: f64,
    heap: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
    // Per worker.
    running: Vec<u32>,
    started: Vec<f64>,
    queue: Vec<VecDeque<u32>>,
    /// `dlb*`: connection events delivered to the worker's CQ, not yet adopted.
    cq: Vec<VecDeque<u32>>,
    open_conns: Vec<u32>,
    busy: Vec<f64>,
    /// Idle workers (nothing running, nothing queued) and their positions.
    idle: Vec<u32>,
    idle_pos: Vec<u32>,
    // Per connection.
    owner: Vec<u32>,
    buffered: Vec<Vec<u32>>,
    // Per request.
    ready: Vec<f64>,
    done: Vec<f64>,
    // Global.
    pooled: VecDeque<u32>,
    /// `dlb*`: accept events waiting in the DLB queue for an eligible worker.
    pending: VecDeque<u32>,
    lock_free: f64,
    rr: usize,
    completed: usize,
}

impl<'a> Sim<'a> {
    fn new(policy: Policy, knobs: Knobs, wl: &'a Workload, workers: usize, seed: u64) -> Self {
        let nc = wl.conn_at.len();
        let nr = wl.reqs.len();
        Sim {
            policy,
            knobs,
            wl,
            rng: fulcrum_test_support::rng(seed),
            now: 0.0,
            heap: BinaryHeap::new(),
            seq: 0,
            running: vec![NONE; workers],
            started: vec![0.0; workers],
            queue: vec![VecDeque::new(); workers],
            cq: vec![VecDeque::new(); workers],
            open_conns: vec![0; workers],
            busy: vec![0.0; workers],
            idle: (0..workers as u32).collect(),
            idle_pos: (0..workers as u32).collect(),
            owner: vec![NONE; nc],
            buffered: vec![Vec::new(); nc],
            ready: vec![f64::NAN; nr],
            done: vec![f64::NAN; nr],
            pooled: VecDeque::new(),
            pending: VecDeque::new(),
            lock_free: 0.0,
            rr: 0,
            completed: 0,
        }
    }

    fn workers(&self) -> usize {
        self.running.len()
    }

    fn push(&mut self, at: f64, ev: Ev) {
        // Times are never negative, so the IEEE bits order like the values.
        debug_assert!(at >= 0.0);
        self.seq += 1;
        self.heap.push(Reverse((at.to_bits(), self.seq, ev)));
    }

    fn is_idle(&self, w: usize) -> bool {
        self.idle_pos[w] != NONE
    }

    fn add_idle(&mut self, w: usize) {
        debug_assert!(!self.is_idle(w));
        self.idle_pos[w] = self.idle.len() as u32;
        self.idle.push(w as u32);
    }

    fn remove_idle(&mut self, w: usize) {
        let pos = self.idle_pos[w] as usize;
        let last = self.idle.pop().expect("idle set is not empty");
        if last as usize != w {
            self.idle[pos] = last;
            self.idle_pos[last as usize] = pos as u32;
        }
        self.idle_pos[w] = NONE;
    }

    /// Takes a uniformly random idle worker, so that no worker is favoured.
    fn pop_idle(&mut self) -> Option<usize> {
        if self.idle.is_empty() {
            return None;
        }
        let w = self.idle[self.rng.usize(..self.idle.len())] as usize;
        self.remove_idle(w);
        Some(w)
    }

    /// Runs the whole workload.
    fn run(mut self) -> Stats {
        let wl = self.wl;
        let (mut ci, mut ri) = (0, 0);
        loop {
            let tc = wl.conn_at.get(ci).copied().unwrap_or(f64::INFINITY);
            let tr = wl.reqs.get(ri).map_or(f64::INFINITY, |r| r.at);
            let th = self
                .heap
                .peek()
                .map_or(f64::INFINITY, |Reverse((t, _, _))| f64::from_bits(*t));
            if th < tc && th < tr {
                let Reverse((_, _, ev)) = self.heap.pop().expect("peeked");
                self.now = th;
                match ev {
                    Ev::Done(w) => self.on_done(w as usize),
                    Ev::Accept(k) => self.on_accept(k as usize),
                    Ev::Close(k) => {
                        let w = self.owner[k as usize] as usize;
                        self.open_conns[w] -= 1;
                    }
                    Ev::Rescue(w) => self.on_rescue(w as usize),
                }
            } else if tc <= tr && tc.is_finite() {
                self.now = tc;
                self.on_conn(ci);
                ci += 1;
            } else if tr.is_finite() {
                self.now = tr;
                self.on_req(ri);
                ri += 1;
            } else {
                break;
            }
            if !self.pending.is_empty() {
                self.dlb_dispatch();
            }
        }
        self.stats()
    }

    fn on_conn(&mut self, k: usize) {
        let c = self.workers();
        match self.policy {
            Policy::Hash | Policy::Stealing => {
                let w = self.rng.usize(..c);
                self.adopt(k, w);
            }
            Policy::Race => {
                let w = if self.idle.is_empty() {
                    self.rng.usize(..c)
                } else {
                    self.idle[self.rng.usize(..self.idle.len())] as usize
                };
                self.adopt(k, w);
            }
            Policy::Exact => {
                self.lock_free = self.lock_free.max(self.now) + self.knobs.lock_us;
                self.push(self.lock_free, Ev::Accept(k as u32));
            }
            Policy::Dlb | Policy::DlbRescue => self.pending.push_back(k as u32),
            Policy::Pooled => {}
        }
    }

    fn on_accept(&mut self, k: usize) {
        // Fewest open connections; ties rotate.
        let c = self.workers();
        let mut best = self.rr % c;
        for j in 1..c {
            let w = (self.rr + j) % c;
            if self.open_conns[w] < self.open_conns[best] {
                best = w;
            }
        }
        self.rr = (self.rr + 1) % c;
        self.open_conns[best] += 1;
        self.adopt(k, best);
        let close = self.wl.conn_close[k].max(self.now);
        self.push(close, Ev::Close(k as u32));
    }

    /// The arbiter: delivers waiting accept events to the least loaded
    /// eligible workers.
    fn dlb_dispatch(&mut self) {
        let c = self.workers();
        while let Some(&k) = self.pending.front() {
            let mut best = NONE as usize;
            let mut best_load = usize::MAX;
            for j in 0..c {
                let w = (self.rr + j) % c;
                let queued = self.queue[w].len() + self.cq[w].len();
                if queued >= self.knobs.cq_depth {
                    continue;
                }
                let load = queued + usize::from(self.running[w] != NONE);
                if load < best_load {
                    best = w;
                    best_load = load;
                    if load == 0 {
                        break;
                    }
                }
            }
            if best_load == usize::MAX {
                return; // Nobody eligible: the event stays in the queue.
            }
            self.rr = (self.rr + 1) % c;
            self.pending.pop_front();
            self.cq[best].push_back(k);
            if self.is_idle(best) {
                self.remove_idle(best);
                self.next(best);
            }
        }
    }

    /// Connection `k` now lives on worker `w`; what it buffered becomes ready.
    fn adopt(&mut self, k: usize, w: usize) {
        self.owner[k] = w as u32;
        for i in std::mem::take(&mut self.buffered[k]) {
            self.enqueue(w, i as usize);
        }
    }

    fn on_req(&mut self, i: usize) {
        if self.policy == Policy::Pooled {
            self.ready[i] = self.now;
            match self.pop_idle() {
                Some(w) => self.start(w, i),
                None => self.pooled.push_back(i as u32),
            }
            return;
        }
        let k = self.wl.reqs[i].conn as usize;
        match self.owner[k] {
            NONE => self.buffered[k].push(i as u32),
            w => self.enqueue(w as usize, i),
        }
    }

    /// Request `i` becomes ready at its connection's worker `w`.
    fn enqueue(&mut self, w: usize, i: usize) {
        self.ready[i] = self.now;
        if self.is_idle(w) {
            self.remove_idle(w);
            self.start(w, i);
            return;
        }
        if self.policy == Policy::Stealing {
            // An idle worker exists only when every queue is empty, so the
            // oldest request of the longest queue is this one.
            if let Some(v) = self.pop_idle() {
                self.start(v, i);
                return;
            }
        }
        self.queue[w].push_back(i as u32);
        if self.policy == Policy::DlbRescue {
            self.push(self.now + self.knobs.rescue_us, Ev::Rescue(w as u32));
        }
    }

    fn start(&mut self, w: usize, i: usize) {
        debug_assert_eq!(self.running[w], NONE);
        self.running[w] = i as u32;
        self.started[w] = self.now;
        self.push(self.now + self.wl.reqs[i].cost, Ev::Done(w as u32));
    }

    fn on_done(&mut self, w: usize) {
        let i = self.running[w] as usize;
        self.running[w] = NONE;
        self.done[i] = self.now;
        self.completed += 1;
        let (a, b) = (
            self.started[w].max(self.wl.window.0),
            self.now.min(self.wl.window.1),
        );
        if b > a {
            self.busy[w] += b - a;
        }
        self.next(w);
    }

    /// Worker `w` (not running, not in the idle set) picks its next item.
    fn next(&mut self, w: usize) {
        if self.policy.is_dlb() {
            while let Some(k) = self.cq[w].pop_front() {
                self.adopt(k as usize, w);
            }
        }
        if let Some(i) = self.queue[w].pop_front() {
            self.start(w, i as usize);
            return;
        }
        let found = match self.policy {
            Policy::Stealing => self.longest_queue().and_then(|v| self.queue[v].pop_front()),
            Policy::DlbRescue => self
                .oldest_overdue()
                .and_then(|v| self.queue[v].pop_front()),
            Policy::Pooled => self.pooled.pop_front(),
            _ => None,
        };
        match found {
            Some(i) => self.start(w, i as usize),
            None => self.add_idle(w),
        }
    }

    fn longest_queue(&self) -> Option<usize> {
        let mut best = None;
        let mut len = 0;
        for (v, q) in self.queue.iter().enumerate() {
            if q.len() > len {
                len = q.len();
                best = Some(v);
            }
        }
        best
    }

    /// The worker whose queue head is overdue for rescue and oldest.
    fn oldest_overdue(&self) -> Option<usize> {
        let mut best = None;
        let mut oldest = f64::INFINITY;
        for (v, q) in self.queue.iter().enumerate() {
            if let Some(&h) = q.front() {
                let r = self.ready[h as usize];
                if r + self.knobs.rescue_us <= self.now && r < oldest {
                    oldest = r;
                    best = Some(v);
                }
            }
        }
        best
    }

    /// Idle workers take worker `w`'s overdue requests, oldest first.
    fn on_rescue(&mut self, w: usize) {
        while !self.idle.is_empty() {
            match self.queue[w].front() {
                Some(&h) if self.ready[h as usize] + self.knobs.rescue_us <= self.now => {
                    self.queue[w].pop_front();
                    let v = self.pop_idle().expect("not empty");
                    self.start(v, h as usize);
                }
                _ => break,
            }
        }
    }

    fn stats(self) -> Stats {
        let (m0, m1) = self.wl.window;
        let mut resp = Vec::with_capacity(self.wl.reqs.len());
        let (mut wait_sum, mut resp_sum) = (0.0, 0.0);
        let mut fingerprint: u64 = 0xcbf2_9ce4_8422_2325;
        let mut impossible = 0;
        for (r, &d) in self.wl.reqs.iter().zip(&self.done) {
            fingerprint = (fingerprint ^ d.to_bits()).wrapping_mul(0x0100_0000_01b3);
            // Rounding is monotone, so start >= arrival gives this exactly.
            if d.is_nan() || d < r.at + r.cost {
                impossible += 1;
            }
            if r.at >= m0 {
                let x = d - r.at;
                resp.push(x);
                resp_sum += x;
                wait_sum += x - r.cost;
            }
        }
        resp.sort_unstable_by(f64::total_cmp);
        let n = resp.len();
        let pct = |p: f64| {
            if n == 0 {
                return f64::NAN;
            }
            resp[((p * n as f64).ceil() as usize).clamp(1, n) - 1]
        };
        let span = m1 - m0;
        let utils: Vec<f64> = self.busy.iter().map(|b| b / span).collect();
        let util_mean = utils.iter().sum::<f64>() / utils.len() as f64;
        let util_max = utils.iter().copied().fold(0.0, f64::max);
        let leftover = self.queue.iter().map(VecDeque::len).sum::<usize>()
            + self.cq.iter().map(VecDeque::len).sum::<usize>()
            + self.buffered.iter().map(Vec::len).sum::<usize>()
            + self.pooled.len()
            + self.pending.len()
            + self.running.iter().filter(|&&r| r != NONE).count();
        Stats {
            p50: pct(0.50),
            p99: pct(0.99),
            p999: pct(0.999),
            mean_resp: resp_sum / n.max(1) as f64,
            mean_wait: wait_sum / n.max(1) as f64,
            util_mean,
            util_max,
            measured: n,
            completed: self.completed,
            total: self.wl.reqs.len(),
            leftover,
            impossible,
            fingerprint,
        }
    }
}

/// Simulates `policy` with `workers` workers over `wl`.
pub fn simulate(policy: Policy, knobs: Knobs, wl: &Workload, workers: usize, seed: u64) -> Stats {
    Sim::new(policy, knobs, wl, workers, seed).run()
}

/// A per-run seed from the global seed and the run's coordinates.
pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    fulcrum_test_support::rng(seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.rotate_left(32))
        .u64(..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Dist, Draw, Shape};

    fn rel_err(sim: f64, theory: f64) -> f64 {
        (sim - theory).abs() / theory
    }

    /// Erlang C: the probability that an arrival waits in M/M/c.
    fn erlang_c(c: usize, a: f64) -> f64 {
        let mut term = 1.0;
        let mut sum = 0.0;
        for k in 0..c {
            if k > 0 {
                term *= a / k as f64;
            }
            sum += term;
        }
        let top = term * a / c as f64 * c as f64 / (c as f64 - a);
        top / (sum + top)
    }

    #[test]
    fn mm1_mean_wait_matches_closed_form() {
        for (rho, n, seed) in [(0.5, 300_000, 11), (0.8, 1_000_000, 12)] {
            let mu = 1.0; // Mean service 1 time unit.
            let wl = Workload::poisson(n, rho * mu, Dist::Exp { mean: 1.0 / mu }, seed);
            let theory = rho / (mu - rho * mu);
            for p in [Policy::Pooled, Policy::Hash] {
                let st = simulate(p, Knobs::default(), &wl, 1, 1);
                let e = rel_err(st.mean_wait, theory);
                assert!(
                    e < 0.05,
                    "M/M/1 rho={rho} {p:?}: Wq {} vs {theory} ({:.1}% off)",
                    st.mean_wait,
                    e * 100.0
                );
                let u = rel_err(st.util_mean, rho);
                assert!(u < 0.02, "M/M/1 rho={rho}: utilisation {}", st.util_mean);
            }
        }
    }

    #[test]
    fn mmc_pooled_mean_wait_matches_erlang_c() {
        let (c, rho, mu) = (4, 0.7, 1.0);
        let lambda = rho * c as f64 * mu;
        let wl = Workload::poisson(1_000_000, lambda, Dist::Exp { mean: 1.0 / mu }, 21);
        let theory = erlang_c(c, lambda / mu) / (c as f64 * mu - lambda);
        let st = simulate(Policy::Pooled, Knobs::default(), &wl, c, 1);
        let e = rel_err(st.mean_wait, theory);
        assert!(
            e < 0.05,
            "M/M/4 rho=0.7: Wq {} vs Erlang C {theory} ({:.1}% off)",
            st.mean_wait,
            e * 100.0
        );
        // Work stealing with zero stealing latency is work-conserving, so
        // its mean wait is the same as M/M/c's.
        let st = simulate(Policy::Stealing, Knobs::default(), &wl, c, 1);
        assert!(rel_err(st.mean_wait, theory) < 0.05, "stealing: {st:?}");
    }

    #[test]
    fn erlang_c_formula() {
        // Textbook value: c = 2, a = 1 (rho = 0.5) waits with probability 1/3.
        assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
        assert!((erlang_c(1, 0.8) - 0.8).abs() < 1e-12);
    }

    fn small_shape() -> Shape {
        Shape {
            load: 0.7,
            mean_us: 50.0,
            alpha: 1.5,
            life_alpha: 1.5,
            conn_requests: 20.0,
            conn_share: 0.02,
        }
    }

    fn run_all(seed: u64, workers: usize, requests: usize) -> Vec<Stats> {
        let wl = Workload::connections(&small_shape(), workers, requests, mix(seed, 0, 0));
        Policy::ALL
            .iter()
            .enumerate()
            .map(|(i, p)| simulate(*p, Knobs::default(), &wl, workers, mix(seed, 1, i as u64)))
            .collect()
    }

    #[test]
    fn same_seed_same_results() {
        let a = run_all(7, 16, 30_000);
        let b = run_all(7, 16, 30_000);
        assert_eq!(a, b);
        let c = run_all(8, 16, 30_000);
        assert_ne!(a[0].fingerprint, c[0].fingerprint);
    }

    #[test]
    fn every_policy_completes_every_request() {
        for (workers, load) in [(8, 0.7), (64, 0.9)] {
            let shape = Shape {
                load,
                ..small_shape()
            };
            let wl = Workload::connections(&shape, workers, 40_000, 3);
            for p in Policy::ALL {
                let st = simulate(p, Knobs::default(), &wl, workers, 5);
                assert_eq!(st.completed, wl.reqs.len(), "{p:?} on {workers}");
                assert_eq!(st.leftover, 0, "{p:?} on {workers}");
                assert_eq!(st.impossible, 0, "{p:?} on {workers}");
                assert!(st.measured > 0 && st.p50 <= st.p99 && st.p99 <= st.p999);
                assert!(st.util_max <= 1.0 + 1e-9);
            }
        }
        // Saturated arbiter: CQ depth 1 and a slow lock still lose nothing.
        let wl = Workload::connections(&small_shape(), 8, 20_000, 4);
        let knobs = Knobs {
            lock_us: 40.0,
            rescue_us: 0.0,
            cq_depth: 1,
        };
        for p in Policy::ALL {
            let st = simulate(p, knobs, &wl, 8, 6);
            assert_eq!(
                (st.completed, st.leftover, st.impossible),
                (wl.reqs.len(), 0, 0),
                "{p:?}"
            );
        }
    }

    #[test]
    fn one_worker_fifo_policies_agree() {
        // With one worker, hash, race, stealing and pooled are all the same
        // FIFO single server.
        let wl = Workload::connections(&small_shape(), 1, 20_000, 9);
        let base = simulate(Policy::Pooled, Knobs::default(), &wl, 1, 1);
        for p in [Policy::Hash, Policy::Race, Policy::Stealing] {
            let st = simulate(p, Knobs::default(), &wl, 1, 2);
            assert_eq!(st.fingerprint, base.fingerprint, "{p:?}");
        }
    }

    #[test]
    fn pareto_and_residual_means() {
        let mut rng = fulcrum_test_support::rng(1);
        let n = 400_000;
        // alpha 2.5 has finite variance, so the sample mean converges.
        let m: f64 = (0..n).map(|_| rng.pareto(50.0, 2.5)).sum::<f64>() / n as f64;
        assert!(rel_err(m, 50.0) < 0.02, "pareto mean {m}");
        // Residual of Pareto(mean 1, alpha 3.5): E = E[L^2] / (2 E[L]).
        let (alpha, mean) = (3.5, 1.0);
        let xm = mean * (alpha - 1.0) / alpha;
        let el2 = alpha * xm * xm / (alpha - 2.0);
        let r: f64 = (0..n)
            .map(|_| rng.pareto_residual(mean, alpha))
            .sum::<f64>()
            / n as f64;
        assert!(rel_err(r, el2 / (2.0 * mean)) < 0.02, "residual mean {r}");
    }
}
