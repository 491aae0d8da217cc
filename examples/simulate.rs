//! A deterministic discrete-event simulation of connection and request
//! balancing policies (docs/DESIGN.md, "Two levels of balancing").
//!
//! ```text
//! cargo run --release --example simulate -- [--load 0.7] [--seed N] [--requests N]
//!     [--workers 8,16,64,256] [--alpha 2.0] [--mean-us 50] [--life-alpha 1.5]
//!     [--conn-requests 20] [--conn-share 0.02] [--lock-us 2] [--rescue-us 100]
//!     [--cq-depth 8]
//! ```
//!
//! # Model
//!
//! * **Connections** arrive as a Poisson process. Each lives for a
//!   Pareto(`--life-alpha`) time whose mean is chosen so that a connection
//!   issues `--conn-requests` requests on average. The run starts in steady
//!   state: at t = 0 a Poisson number of connections is already open, with
//!   residual lifetimes drawn from the lifetime's equilibrium distribution;
//!   they are all accepted at t = 0, and the first two mean lifetimes are a
//!   warm-up that is simulated but not measured.
//! * **Requests** within a connection are an *open* Poisson process (think
//!   HTTP/2 or gRPC streams multiplexed on one connection) with rate
//!   `--conn-share` / mean cost, i.e. each connection offers 2% of one worker
//!   by default. Open loop keeps the offered load identical for every policy,
//!   so the policies are compared on exactly the same arrivals (common random
//!   numbers: one workload per worker count, replayed for each policy).
//!   Requests are independent, so any worker may run any request.
//! * **Costs** are Pareto(`--alpha`) with mean `--mean-us` (50 µs). The
//!   default α = 2.0 is heavy tailed (infinite variance, so M/G/1 mean waits
//!   diverge) yet its p99 and p99.9 settle within a run of a few million
//!   requests; at α = 1.5 the pinned policies' p99 is set by a handful of
//!   giant requests and swings several-fold between seeds. The connection
//!   arrival rate is set so that the offered load is `--load` × workers.
//! * **Workers** run one request at a time, FIFO from their local queue,
//!   never preempted. Response time = request arrival to completion,
//!   including any time its connection waited to be accepted or adopted.
//!   Utilisation is busy time over the measured window, per worker.
//!
//! # Policies
//!
//! * `hash`: `SO_REUSEPORT`: a uniformly random worker at accept, for life.
//! * `race`: a uniformly random currently idle worker (nothing running, empty
//!   queue) accepts; if none is idle, a uniformly random worker.
//! * `exact`: Envoy's exact balance: accepts are serialised by a global lock
//!   held for `--lock-us` each (FIFO); the holder picks the worker with the
//!   fewest open connections. A connection counts until its lifetime ends.
//! * `dlb`: the accept event goes through an unordered DLB queue. The arbiter
//!   delivers it to the least loaded eligible worker (load = queued + running
//!   items, where queued = ready requests + undelivered DLB events; a worker
//!   with `--cq-depth` items queued is ineligible, and the event waits in the
//!   queue until one is eligible). The worker adopts the connection at its
//!   next scheduling point (immediately if idle, else when its current
//!   request ends), then releases the event. Requests that arrived before
//!   adoption become ready at adoption.
//! * `dlb_rescue`: `dlb`, plus the runtime's request-level rescue: a ready
//!   request that has waited `--rescue-us` in a busy worker's queue is run by
//!   an idle worker (oldest overdue first). The connection stays put.
//! * `stealing`: connections placed as `hash`, but runnable requests are
//!   pooled: an idle worker immediately takes the oldest request of the
//!   longest queue (no stealing latency is modelled).
//! * `pooled`: the ideal reference, M/G/c: one shared FIFO of requests, any
//!   idle worker.
//!
//! Everything is driven by one xoshiro256** stream per workload and per
//! policy run, seeded from `--seed`, so a seed gives bit-identical results.
//!
//! Output: a markdown table on stdout, `target/bench/sim.json` and the chart
//! `target/bench/sim_p99.svg` (`$CARGO_TARGET_DIR/bench` if that is set).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

// ---------------------------------------------------------------------------
// Randomness

/// xoshiro256** seeded through splitmix64.
#[derive(Clone)]
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1].
    fn open(&mut self) -> f64 {
        1.0 - self.unit()
    }

    /// Uniform in 0..n.
    fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    fn exp(&mut self, mean: f64) -> f64 {
        -self.open().ln() * mean
    }

    /// Pareto with shape `alpha` (> 1) and the given mean.
    fn pareto(&mut self, mean: f64, alpha: f64) -> f64 {
        let xm = mean * (alpha - 1.0) / alpha;
        xm * self.open().powf(-1.0 / alpha)
    }

    /// The equilibrium (residual life) distribution of a Pareto(mean, alpha)
    /// lifetime: density P(L > x) / E[L]. Inverse CDF, piecewise.
    fn pareto_residual(&mut self, mean: f64, alpha: f64) -> f64 {
        let xm = mean * (alpha - 1.0) / alpha;
        let u = self.unit();
        let knee = (alpha - 1.0) / alpha;
        if u < knee {
            u * mean
        } else {
            xm * (alpha * (1.0 - u)).powf(-1.0 / (alpha - 1.0))
        }
    }
}

/// A request cost distribution.
#[derive(Clone, Copy, Debug)]
enum Dist {
    /// Exponential, for the closed-form checks.
    #[cfg(test)]
    Exp {
        mean: f64,
    },
    Pareto {
        mean: f64,
        alpha: f64,
    },
}

impl Dist {
    fn sample(self, rng: &mut Rng) -> f64 {
        match self {
            #[cfg(test)]
            Dist::Exp { mean } => rng.exp(mean),
            Dist::Pareto { mean, alpha } => rng.pareto(mean, alpha),
        }
    }
}

// ---------------------------------------------------------------------------
// Workload

#[derive(Clone, Copy, Debug)]
struct Req {
    /// Arrival time, µs.
    at: f64,
    /// Service cost, µs.
    cost: f64,
    /// Connection index.
    conn: u32,
}

/// Pre-generated arrivals, replayed identically for every policy.
struct Workload {
    /// Connection arrival times, sorted.
    conn_at: Vec<f64>,
    /// When each connection closes (for `exact`'s open-connection counts).
    conn_close: Vec<f64>,
    /// Requests sorted by arrival time.
    reqs: Vec<Req>,
    /// Measured window: requests arriving in it count, utilisation is over it.
    window: (f64, f64),
}

/// Parameters of the default workload (see the module docs).
#[derive(Clone, Debug)]
struct Shape {
    load: f64,
    mean_us: f64,
    alpha: f64,
    life_alpha: f64,
    conn_requests: f64,
    conn_share: f64,
}

impl Workload {
    /// The heavy-tailed connection workload for `workers` workers with about
    /// `requests` measured requests.
    fn connections(shape: &Shape, workers: usize, requests: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let cost = Dist::Pareto {
            mean: shape.mean_us,
            alpha: shape.alpha,
        };
        let lambda = shape.load * workers as f64 / shape.mean_us; // requests / µs
        let per_conn_rate = shape.conn_share / shape.mean_us;
        let mean_life = shape.conn_requests / per_conn_rate;
        let conn_rate = lambda / shape.conn_requests;
        let warm = 2.0 * mean_life;
        let end = warm + requests as f64 / lambda;

        // (arrival, lifetime): the stationary population open at t = 0, then
        // Poisson arrivals.
        let mut conns: Vec<(f64, f64)> = Vec::new();
        let open_at_zero = conn_rate * mean_life;
        let mut x = rng.exp(1.0);
        while x < open_at_zero {
            conns.push((0.0, rng.pareto_residual(mean_life, shape.life_alpha)));
            x += rng.exp(1.0);
        }
        let mut t = rng.exp(1.0 / conn_rate);
        while t < end {
            conns.push((t, rng.pareto(mean_life, shape.life_alpha)));
            t += rng.exp(1.0 / conn_rate);
        }

        let mut reqs = Vec::with_capacity(requests + requests / 4);
        let mut conn_at = Vec::with_capacity(conns.len());
        let mut conn_close = Vec::with_capacity(conns.len());
        for (k, &(at, life)) in conns.iter().enumerate() {
            let close = (at + life).min(end);
            conn_at.push(at);
            conn_close.push(close);
            let mut s = at + rng.exp(1.0 / per_conn_rate);
            while s < close {
                reqs.push(Req {
                    at: s,
                    cost: cost.sample(&mut rng),
                    conn: k as u32,
                });
                s += rng.exp(1.0 / per_conn_rate);
            }
        }
        // Stable: equal times keep generation order, so this is deterministic.
        reqs.sort_by(|a, b| a.at.total_cmp(&b.at));
        Workload {
            conn_at,
            conn_close,
            reqs,
            window: (warm, end),
        }
    }

    /// `n` Poisson arrivals of rate `lambda`, one request per connection:
    /// the textbook M/G/c input, for checking against closed forms.
    #[cfg(test)]
    fn poisson(n: usize, lambda: f64, cost: Dist, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut t = 0.0;
        let (mut conn_at, mut reqs) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for k in 0..n {
            t += rng.exp(1.0 / lambda);
            conn_at.push(t);
            reqs.push(Req {
                at: t,
                cost: cost.sample(&mut rng),
                conn: k as u32,
            });
        }
        Workload {
            conn_close: conn_at.clone(),
            conn_at,
            reqs,
            window: (0.0, t),
        }
    }
}

// ---------------------------------------------------------------------------
// Policies and the simulator

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    Hash,
    Race,
    Exact,
    Dlb,
    DlbRescue,
    Stealing,
    Pooled,
}

impl Policy {
    const ALL: [Policy; 7] = [
        Policy::Hash,
        Policy::Race,
        Policy::Exact,
        Policy::Dlb,
        Policy::DlbRescue,
        Policy::Stealing,
        Policy::Pooled,
    ];

    /// The identifier used in sim.json.
    fn id(self) -> &'static str {
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
    fn name(self) -> &'static str {
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

    fn color(self) -> &'static str {
        match self {
            Policy::Hash => "#d62728",
            Policy::Race => "#ff7f0e",
            Policy::Exact => "#8c564b",
            Policy::Dlb => "#9467bd",
            Policy::DlbRescue => "#2ca02c",
            Policy::Stealing => "#1f77b4",
            Policy::Pooled => "#000000",
        }
    }

    fn is_dlb(self) -> bool {
        matches!(self, Policy::Dlb | Policy::DlbRescue)
    }
}

/// Knobs of the policies themselves.
#[derive(Clone, Copy, Debug)]
struct Knobs {
    lock_us: f64,
    rescue_us: f64,
    cq_depth: usize,
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
enum Ev {
    /// The worker's running request completes.
    Done(u32),
    /// `exact`: the accept of this connection leaves the lock.
    Accept(u32),
    /// `exact`: this connection closes.
    Close(u32),
    /// `dlb_rescue`: a request queued at this worker may now be overdue.
    Rescue(u32),
}

const NONE: u32 = u32::MAX;

/// What one run measured.
#[derive(Clone, Debug, PartialEq)]
struct Stats {
    p50: f64,
    p99: f64,
    p999: f64,
    mean_resp: f64,
    mean_wait: f64,
    util_mean: f64,
    util_max: f64,
    measured: usize,
    completed: usize,
    total: usize,
    /// Requests found still queued anywhere after the run (should be 0).
    leftover: usize,
    /// Any request completed before arrival + cost (should be 0).
    impossible: usize,
    /// A hash of every completion time, for the determinism check.
    fingerprint: u64,
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
            rng: Rng::new(seed),
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
        let w = self.idle[self.rng.below(self.idle.len())] as usize;
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
                let w = self.rng.below(c);
                self.adopt(k, w);
            }
            Policy::Race => {
                let w = if self.idle.is_empty() {
                    self.rng.below(c)
                } else {
                    self.idle[self.rng.below(self.idle.len())] as usize
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
fn simulate(policy: Policy, knobs: Knobs, wl: &Workload, workers: usize, seed: u64) -> Stats {
    Sim::new(policy, knobs, wl, workers, seed).run()
}

/// A per-run seed from the global seed and the run's coordinates.
fn mix(seed: u64, a: u64, b: u64) -> u64 {
    Rng::new(seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.rotate_left(32)).next_u64()
}

// ---------------------------------------------------------------------------
// Command line and reports

struct Args {
    seed: u64,
    requests: usize,
    workers: Vec<usize>,
    shape: Shape,
    knobs: Knobs,
}

const USAGE: &str = "usage: simulate [--load 0.7] [--seed N] [--requests N] \
[--workers 8,16,64,256] [--alpha 2.0] [--mean-us 50] [--life-alpha 1.5] \
[--conn-requests 20] [--conn-share 0.02] [--lock-us 2] [--rescue-us 100] [--cq-depth 8]";

fn parse_args() -> Result<Args, String> {
    fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        let v = v.ok_or(format!("{flag} needs a value"))?;
        v.parse().map_err(|e| format!("{flag} {v:?}: {e}"))
    }
    let mut a = Args {
        seed: 1,
        requests: 5_000_000,
        workers: vec![8, 16, 64, 256],
        shape: Shape {
            load: 0.7,
            mean_us: 50.0,
            alpha: 2.0,
            life_alpha: 1.5,
            conn_requests: 20.0,
            conn_share: 0.02,
        },
        knobs: Knobs::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let f = flag.as_str();
        match f {
            "--load" => a.shape.load = num(f, it.next())?,
            "--seed" => a.seed = num(f, it.next())?,
            "--requests" => a.requests = num(f, it.next())?,
            "--workers" => {
                let v: String = num(f, it.next())?;
                a.workers = v
                    .split(',')
                    .map(|s| num(f, Some(s.trim().to_string())))
                    .collect::<Result<_, _>>()?;
            }
            "--alpha" => a.shape.alpha = num(f, it.next())?,
            "--mean-us" => a.shape.mean_us = num(f, it.next())?,
            "--life-alpha" => a.shape.life_alpha = num(f, it.next())?,
            "--conn-requests" => a.shape.conn_requests = num(f, it.next())?,
            "--conn-share" => a.shape.conn_share = num(f, it.next())?,
            "--lock-us" => a.knobs.lock_us = num(f, it.next())?,
            "--rescue-us" => a.knobs.rescue_us = num(f, it.next())?,
            "--cq-depth" => a.knobs.cq_depth = num(f, it.next())?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let s = &a.shape;
    if !(s.load > 0.0 && s.load < 1.0) {
        return Err("--load must be in (0, 1)".into());
    }
    if !(s.alpha > 1.0 && s.life_alpha > 1.0) {
        return Err("--alpha and --life-alpha must be > 1 (finite mean)".into());
    }
    if !(s.mean_us > 0.0 && s.conn_requests > 0.0 && s.conn_share > 0.0) {
        return Err("--mean-us, --conn-requests and --conn-share must be > 0".into());
    }
    if a.workers.is_empty() || a.workers.contains(&0) || a.requests == 0 {
        return Err("--workers and --requests must be positive".into());
    }
    if a.knobs.cq_depth == 0 || a.knobs.lock_us < 0.0 || a.knobs.rescue_us < 0.0 {
        return Err("--cq-depth must be > 0, --lock-us and --rescue-us >= 0".into());
    }
    Ok(a)
}

struct Row {
    policy: Policy,
    workers: usize,
    stats: Stats,
    vs_pooled: f64,
}

fn fmt_us(x: f64) -> String {
    if x >= 1000.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn markdown(args: &Args, rows: &[Row]) -> String {
    let s = &args.shape;
    let k = &args.knobs;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Simulated response time (load {}, seed {}, ~{} measured requests per run)\n\n\
         Pareto(α={}) request cost, mean {} µs; Poisson requests within connections, \
         {} per connection on average, each connection offering {}% of a worker; \
         Pareto(α={}) lifetimes. exact lock {} µs per accept; DLB CQ depth {}; \
         rescue after {} µs.\n",
        s.load,
        args.seed,
        args.requests,
        s.alpha,
        s.mean_us,
        s.conn_requests,
        s.conn_share * 100.0,
        s.life_alpha,
        k.lock_us,
        k.cq_depth,
        k.rescue_us,
    );
    out.push_str(
        "| policy | workers | p50 (µs) | p99 (µs) | p99.9 (µs) | util mean | util max/mean | p99 / pooled p99 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let st = &r.stats;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.3} | {:.2} | {:.2}× |",
            r.policy.name(),
            r.workers,
            fmt_us(st.p50),
            fmt_us(st.p99),
            fmt_us(st.p999),
            st.util_mean,
            st.util_max / st.util_mean,
            r.vs_pooled,
        );
    }
    out.push_str("\n## p99 as a multiple of the ideal pooled (M/G/c) p99\n\n| policy |");
    for w in &args.workers {
        let _ = write!(out, " {w} workers |");
    }
    out.push_str("\n|---|");
    for _ in &args.workers {
        out.push_str("---:|");
    }
    out.push('\n');
    for p in Policy::ALL {
        let _ = write!(out, "| {} |", p.name());
        for &w in &args.workers {
            match rows.iter().find(|r| r.policy == p && r.workers == w) {
                Some(r) => {
                    let _ = write!(out, " {:.2}× |", r.vs_pooled);
                }
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out
}

fn json(rows: &[Row]) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            let s = &r.stats;
            format!(
                "  {{\"policy\": \"{}\", \"workers\": {}, \"p50_us\": {:.3}, \"p99_us\": {:.3}, \
                 \"p999_us\": {:.3}, \"util_mean\": {:.5}, \"util_max\": {:.5}, \
                 \"p99_vs_pooled\": {:.4}}}",
                r.policy.id(),
                r.workers,
                s.p50,
                s.p99,
                s.p999,
                s.util_mean,
                s.util_max,
                r.vs_pooled
            )
        })
        .collect();
    format!("[\n{}\n]\n", items.join(",\n"))
}

/// A log-y line chart of p99 against worker count (x on a log2 scale).
fn svg(args: &Args, rows: &[Row]) -> String {
    let (w, h) = (820.0, 520.0);
    let (left, right, top, bottom) = (80.0, 190.0, 50.0, 60.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let p99s = rows.iter().map(|r| r.stats.p99).filter(|x| *x > 0.0);
    let lo = p99s.clone().fold(f64::INFINITY, f64::min);
    let hi = p99s.fold(0.0, f64::max);
    let (dlo, dhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let mut ws = args.workers.clone();
    ws.sort_unstable();
    ws.dedup();
    let (xlo, xhi) = (
        (ws[0] as f64).log2(),
        (ws[ws.len() - 1] as f64)
            .log2()
            .max((ws[0] as f64).log2() + 1.0),
    );
    let x_of = |n: usize| left + ((n as f64).log2() - xlo) / (xhi - xlo) * pw;
    let y_of = |v: f64| top + ph - (v.log10() - dlo) / (dhi - dlo) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"13\">"
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">Simulated p99 response \
         time, load {}, Pareto(α={}) costs (seed {})</text>",
        left + pw / 2.0,
        args.shape.load,
        args.shape.alpha,
        args.seed
    );
    // Y grid: decades, plus 2× and 5×.
    let mut d = dlo as i32;
    while d <= dhi as i32 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(d);
            if v.log10() > dhi + 1e-9 {
                continue;
            }
            let y = y_of(v);
            let major = m == 1.0;
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\"/>",
                left + pw,
                if major { "#bbb" } else { "#eee" }
            );
            let label = if v >= 1000.0 {
                format!("{} ms", v / 1000.0)
            } else {
                format!("{v} µs")
            };
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{}\">{label}</text>",
                left - 6.0,
                y + 4.0,
                if major { "#000" } else { "#888" }
            );
        }
        d += 1;
    }
    // X ticks.
    for &n in &ws {
        let x = x_of(n);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{n}</text>",
            top + ph,
            top + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" \
         stroke=\"#000\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">workers (log scale)</text>\n\
         <text transform=\"translate(20,{:.1}) rotate(-90)\" text-anchor=\"middle\">\
         p99 response time (log scale)</text>",
        left + pw / 2.0,
        h - 15.0,
        top + ph / 2.0
    );
    for (li, p) in Policy::ALL.iter().enumerate() {
        let pts: Vec<(f64, f64)> = ws
            .iter()
            .filter_map(|&n| {
                rows.iter()
                    .find(|r| r.policy == *p && r.workers == n)
                    .map(|r| (x_of(n), y_of(r.stats.p99)))
            })
            .collect();
        let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let dash = if *p == Policy::Pooled {
            " stroke-dasharray=\"6,4\""
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash}/>",
            path.join(" "),
            p.color()
        );
        for (x, y) in &pts {
            let _ = writeln!(
                s,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{}\"/>",
                p.color()
            );
        }
        let ly = top + 10.0 + li as f64 * 22.0;
        let lx = left + pw + 15.0;
        let _ = writeln!(
            s,
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{:.1}\" y2=\"{ly}\" stroke=\"{}\" \
             stroke-width=\"2\"{dash}/>\n<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx + 24.0,
            p.color(),
            lx + 30.0,
            ly + 4.0,
            p.name()
        );
    }
    s.push_str("</svg>\n");
    s
}

fn main() -> std::io::Result<()> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("simulate: {msg}");
            std::process::exit(2);
        }
    };
    let mut rows = Vec::new();
    for &c in &args.workers {
        let t0 = Instant::now();
        let wl = Workload::connections(&args.shape, c, args.requests, mix(args.seed, c as u64, 0));
        eprintln!(
            "{c} workers: {} connections, {} requests (generated in {:.1?})",
            wl.conn_at.len(),
            wl.reqs.len(),
            t0.elapsed()
        );
        let mut runs = Vec::new();
        for (pi, p) in Policy::ALL.iter().enumerate() {
            let t = Instant::now();
            let st = simulate(
                *p,
                args.knobs,
                &wl,
                c,
                mix(args.seed, c as u64, pi as u64 + 1),
            );
            assert!(
                st.completed == st.total && st.leftover == 0 && st.impossible == 0,
                "{} lost work: {st:?}",
                p.id()
            );
            eprintln!(
                "  {:<15} p99 {:>10} µs  ({:.1?})",
                p.name(),
                fmt_us(st.p99),
                t.elapsed()
            );
            runs.push((*p, st));
        }
        let pooled = runs
            .iter()
            .find(|(p, _)| *p == Policy::Pooled)
            .map(|(_, s)| s.p99)
            .expect("pooled is simulated");
        for (policy, stats) in runs {
            rows.push(Row {
                policy,
                workers: c,
                vs_pooled: stats.p99 / pooled,
                stats,
            });
        }
    }
    print!("{}", markdown(&args, &rows));

    let dir = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
        .join("bench");
    std::fs::create_dir_all(&dir)?;
    let (jp, sp) = (dir.join("sim.json"), dir.join("sim_p99.svg"));
    std::fs::write(&jp, json(&rows))?;
    std::fs::write(&sp, svg(&args, &rows))?;
    println!("\nwrote {} and {}", jp.display(), sp.display());
    Ok(())
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut rng = Rng::new(1);
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
