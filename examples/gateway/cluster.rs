//! Upstream clusters: endpoints, their health, and the load-balancing
//! policies (round robin, least request, Maglev).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::config::{ClusterSpec, HashKey, Policy};
use crate::maglev::Maglev;

/// One upstream endpoint.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub name: String,
    pub healthy: AtomicBool,
    /// Requests in flight (least request's load measure).
    pub active: AtomicUsize,
    /// Requests sent.
    pub requests: AtomicU64,
    /// Requests that failed to connect, were reset or timed out.
    pub failures: AtomicU64,
    /// Consecutive health-check passes and failures.
    pub passes: AtomicU32,
    pub fails: AtomicU32,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            name: addr.to_string(),
            healthy: AtomicBool::new(true),
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
        }
    }
}

/// Counts a request in flight on an endpoint until dropped.
pub struct InFlight(pub Arc<Endpoint>);

impl InFlight {
    pub fn new(e: Arc<Endpoint>) -> Self {
        e.active.fetch_add(1, Relaxed);
        e.requests.fetch_add(1, Relaxed);
        Self(e)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// A retry in flight within a cluster's budget; gives its place back when
/// dropped.
pub struct RetryInFlight<'a>(&'a Cluster);

impl Drop for RetryInFlight<'_> {
    fn drop(&mut self) {
        self.0.retries_active.fetch_sub(1, Relaxed);
    }
}

/// The Maglev table of the current healthy set.
struct MaglevState {
    generation: u64,
    healthy: Vec<usize>,
    table: Option<Arc<Maglev>>,
}

/// A cluster at run time.
pub struct Cluster {
    pub spec: ClusterSpec,
    pub endpoints: Vec<Arc<Endpoint>>,
    rr: AtomicUsize,
    /// Retries in flight (an attempt after the first, until it ends).
    pub retries_active: AtomicUsize,
    /// Retries made.
    pub retries: AtomicU64,
    /// Retries not made because the retry budget was spent.
    pub retries_over_budget: AtomicU64,
    /// Bumped whenever an endpoint's health flips.
    generation: AtomicU64,
    maglev: Mutex<MaglevState>,
}

/// A fast per-thread pseudo-random number (fastrand's thread-local
/// generator, seeded by the OS; not for secrets): the power-of-two choices
/// and request ids.
pub fn random() -> u64 {
    fastrand::u64(..)
}

impl Cluster {
    pub fn new(spec: ClusterSpec, addrs: Vec<SocketAddr>) -> Self {
        Self {
            spec,
            endpoints: addrs
                .into_iter()
                .map(|a| Arc::new(Endpoint::new(a)))
                .collect(),
            rr: AtomicUsize::new(0),
            retries_active: AtomicUsize::new(0),
            retries: AtomicU64::new(0),
            retries_over_budget: AtomicU64::new(0),
            generation: AtomicU64::new(1),
            maglev: Mutex::new(MaglevState {
                generation: 0,
                healthy: Vec::new(),
                table: None,
            }),
        }
    }

    /// Records a health-check result; returns the new health if it flipped.
    pub fn record_check(&self, e: &Endpoint, pass: bool) -> Option<bool> {
        let hc = self.spec.health.as_ref()?;
        let flipped = if pass {
            e.fails.store(0, Relaxed);
            let n = e.passes.fetch_add(1, Relaxed) + 1;
            n >= hc.healthy_threshold && !e.healthy.swap(true, Relaxed)
        } else {
            e.passes.store(0, Relaxed);
            let n = e.fails.fetch_add(1, Relaxed) + 1;
            n >= hc.unhealthy_threshold && e.healthy.swap(false, Relaxed)
        };
        if flipped {
            self.generation.fetch_add(1, Relaxed);
            return Some(pass);
        }
        None
    }

    fn healthy(&self) -> Vec<usize> {
        (0..self.endpoints.len())
            .filter(|&i| self.endpoints[i].healthy.load(Relaxed))
            .collect()
    }

    /// Picks an endpoint for a request, or `None` if none is healthy.
    /// `key` is the hash key for Maglev (`None`: round robin).
    pub fn pick(&self, key: Option<&[u8]>) -> Option<Arc<Endpoint>> {
        match self.spec.policy {
            Policy::Maglev => {
                if let Some(key) = key {
                    return self.pick_maglev(key);
                }
                self.pick_rr()
            }
            Policy::RoundRobin => self.pick_rr(),
            Policy::LeastRequest => {
                let healthy = self.healthy();
                match healthy.len() {
                    0 => None,
                    1 => Some(self.endpoints[healthy[0]].clone()),
                    n => {
                        // Power of two choices, as Envoy's least request.
                        let r = random();
                        let a = (r % n as u64) as usize;
                        let b = (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n;
                        let (ea, eb) = (&self.endpoints[healthy[a]], &self.endpoints[healthy[b]]);
                        let pick = if eb.active.load(Relaxed) < ea.active.load(Relaxed) {
                            eb
                        } else {
                            ea
                        };
                        Some(pick.clone())
                    }
                }
            }
        }
    }

    fn pick_rr(&self) -> Option<Arc<Endpoint>> {
        let healthy = self.healthy();
        if healthy.is_empty() {
            return None;
        }
        let i = self.rr.fetch_add(1, Relaxed) % healthy.len();
        Some(self.endpoints[healthy[i]].clone())
    }

    fn pick_maglev(&self, key: &[u8]) -> Option<Arc<Endpoint>> {
        let generation = self.generation.load(Relaxed);
        let (table, healthy) = {
            let mut st = self.maglev.lock().unwrap_or_else(|e| e.into_inner());
            if st.generation != generation {
                st.healthy = self.healthy();
                st.table = if st.healthy.is_empty() {
                    None
                } else {
                    let names: Vec<&str> = st
                        .healthy
                        .iter()
                        .map(|&i| self.endpoints[i].name.as_str())
                        .collect();
                    Some(Arc::new(Maglev::new(&names, self.spec.table_size)))
                };
                st.generation = generation;
            }
            (st.table.clone()?, st.healthy.clone())
        };
        Some(self.endpoints[healthy[table.pick(key)]].clone())
    }

    /// Picks an endpoint for a retry: a healthy one not in `tried`, or
    /// `None` if none is left. Least request compares two random ones of
    /// those left; the other policies take one at random (a retry has no
    /// place in the round-robin order, and the hashed endpoint failed).
    pub fn pick_retry(&self, tried: &[Arc<Endpoint>]) -> Option<Arc<Endpoint>> {
        let left: Vec<&Arc<Endpoint>> = self
            .endpoints
            .iter()
            .filter(|e| e.healthy.load(Relaxed) && !tried.iter().any(|t| Arc::ptr_eq(t, e)))
            .collect();
        let n = left.len() as u64;
        match n {
            0 => None,
            1 => Some(left[0].clone()),
            _ => {
                let r = random();
                let a = (r % n) as usize;
                if self.spec.policy != Policy::LeastRequest {
                    return Some(left[a].clone());
                }
                let b = (a + 1 + ((r >> 32) % (n - 1)) as usize) % n as usize;
                let pick = if left[b].active.load(Relaxed) < left[a].active.load(Relaxed) {
                    left[b]
                } else {
                    left[a]
                };
                Some(pick.clone())
            }
        }
    }

    /// Upstream requests in flight to the cluster: the sum of its
    /// endpoints' `active` counts (Envoy's `upstream_rq_active`, the base of
    /// its retry budget). Read only when a retry is considered, so the
    /// request path keeps no cluster-wide counter that every worker writes.
    pub fn active(&self) -> usize {
        self.endpoints.iter().map(|e| e.active.load(Relaxed)).sum()
    }

    /// The concurrent retries the budget allows now: the configured
    /// percentage of the upstream requests in flight, rounded down, but at
    /// least `retry_min_concurrency` (Envoy's `retry_budget`).
    pub fn retry_budget(&self) -> usize {
        let active = self.active() as f64;
        let share = (active * self.spec.retry_budget_percent / 100.0) as usize;
        share.max(self.spec.retry_min_concurrency as usize)
    }

    /// Takes a place for a retry within the budget, counting it in
    /// `retries`; `None` (counted in `retries_over_budget`) if the retries
    /// in flight already fill the budget.
    pub fn start_retry(&self) -> Option<RetryInFlight<'_>> {
        let budget = self.retry_budget();
        let mut now = self.retries_active.load(Relaxed);
        loop {
            if now >= budget {
                self.retries_over_budget.fetch_add(1, Relaxed);
                return None;
            }
            match self
                .retries_active
                .compare_exchange_weak(now, now + 1, Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(v) => now = v,
            }
        }
        self.retries.fetch_add(1, Relaxed);
        Some(RetryInFlight(self))
    }

    /// The hash key of a request for this cluster's policy.
    pub fn key<'a>(&self, headers: &'a hyper::HeaderMap, client: &'a [u8]) -> Option<&'a [u8]> {
        self.key_by(|name| headers.get(name).map(|v| v.as_bytes()), client)
    }

    /// [`Cluster::key`] with the request's headers looked up by `header`
    /// (a lower-case name to the first value), for heads kept as bytes.
    pub fn key_by<'a>(
        &self,
        header: impl FnOnce(&str) -> Option<&'a [u8]>,
        client: &'a [u8],
    ) -> Option<&'a [u8]> {
        if self.spec.policy != Policy::Maglev {
            return None;
        }
        match &self.spec.hash_key {
            HashKey::ClientIp => Some(client),
            HashKey::Header(name) => header(name.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthSpec;
    use std::time::Duration;

    fn cluster(policy: Policy, n: usize) -> Cluster {
        let spec = ClusterSpec {
            name: "c".into(),
            endpoints: Vec::new(),
            demo_backends: 0,
            policy,
            hash_key: HashKey::Header("x-user".into()),
            table_size: 65_537,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            max_idle: 4,
            max_response_head: 60 * 1024,
            max_retries: 1,
            retry_budget_percent: 20.0,
            retry_min_concurrency: 3,
            health: Some(HealthSpec {
                path: "/".into(),
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                healthy_threshold: 2,
                unhealthy_threshold: 3,
            }),
            tls: None,
        };
        let addrs = (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)))
            .collect();
        Cluster::new(spec, addrs)
    }

    #[test]
    fn round_robin_cycles_over_healthy_endpoints() {
        let c = cluster(Policy::RoundRobin, 3);
        let picks: Vec<u16> = (0..6).map(|_| c.pick(None).unwrap().addr.port()).collect();
        assert_eq!(picks, [1000, 1001, 1002, 1000, 1001, 1002]);
        for _ in 0..3 {
            c.record_check(&c.endpoints[1], false);
        }
        assert!(!c.endpoints[1].healthy.load(Relaxed));
        for _ in 0..10 {
            assert_ne!(c.pick(None).unwrap().addr.port(), 1001);
        }
    }

    #[test]
    fn retries_pick_untried_healthy_endpoints() {
        let c = cluster(Policy::RoundRobin, 3);
        let first = c.endpoints[0].clone();
        for _ in 0..20 {
            let e = c.pick_retry(std::slice::from_ref(&first)).unwrap();
            assert!(!Arc::ptr_eq(&e, &first));
        }
        for _ in 0..3 {
            c.record_check(&c.endpoints[1], false);
        }
        let tried = [first.clone()];
        for _ in 0..20 {
            assert_eq!(c.pick_retry(&tried).unwrap().addr.port(), 1002);
        }
        let tried = [first, c.endpoints[2].clone()];
        assert!(c.pick_retry(&tried).is_none(), "nothing left to try");
    }

    #[test]
    fn the_retry_budget_is_a_share_of_active_requests_with_a_floor() {
        let mut c = cluster(Policy::RoundRobin, 2);
        c.spec.retry_min_concurrency = 1;
        c.spec.retry_budget_percent = 50.0;
        let reqs: Vec<InFlight> = (0..4)
            .map(|i| InFlight::new(c.endpoints[i % 2].clone()))
            .collect();
        assert_eq!(c.retry_budget(), 2, "50% of 4");
        let a = c.start_retry().expect("first retry");
        let b = c.start_retry().expect("second retry");
        assert!(c.start_retry().is_none(), "third is over budget");
        assert_eq!(c.retries_over_budget.load(Relaxed), 1);
        drop(a);
        assert!(c.start_retry().is_some(), "a place came back");
        drop(b);
        assert_eq!(c.retries.load(Relaxed), 3);
        drop(reqs);
        assert_eq!(c.retry_budget(), 1, "the floor with nothing in flight");
        c.spec.retry_min_concurrency = 0;
        assert!(c.start_retry().is_none(), "0% and no floor: no retry");
    }

    #[test]
    fn thresholds_eject_and_restore() {
        let c = cluster(Policy::RoundRobin, 1);
        let e = c.endpoints[0].clone();
        assert_eq!(c.record_check(&e, false), None);
        assert_eq!(c.record_check(&e, false), None);
        assert_eq!(c.record_check(&e, false), Some(false), "3rd failure ejects");
        assert!(c.pick(None).is_none(), "no healthy endpoint");
        assert_eq!(c.record_check(&e, true), None);
        assert_eq!(c.record_check(&e, true), Some(true), "2nd pass restores");
        assert!(c.pick(None).is_some());
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let c = cluster(Policy::LeastRequest, 2);
        let _busy: Vec<InFlight> = (0..5)
            .map(|_| InFlight::new(c.endpoints[0].clone()))
            .collect();
        for _ in 0..50 {
            assert_eq!(c.pick(None).unwrap().addr.port(), 1001);
        }
    }

    #[test]
    fn maglev_is_sticky_and_moves_off_an_ejected_endpoint() {
        let c = cluster(Policy::Maglev, 5);
        let first: Vec<u16> = (0..200)
            .map(|k| {
                c.pick(Some(format!("user{k}").as_bytes()))
                    .unwrap()
                    .addr
                    .port()
            })
            .collect();
        let again: Vec<u16> = (0..200)
            .map(|k| {
                c.pick(Some(format!("user{k}").as_bytes()))
                    .unwrap()
                    .addr
                    .port()
            })
            .collect();
        assert_eq!(first, again);
        for _ in 0..3 {
            c.record_check(&c.endpoints[2], false);
        }
        let after: Vec<u16> = (0..200)
            .map(|k| {
                c.pick(Some(format!("user{k}").as_bytes()))
                    .unwrap()
                    .addr
                    .port()
            })
            .collect();
        assert!(after.iter().all(|&p| p != 1002));
        let moved = first.iter().zip(&after).filter(|(a, b)| a != b).count();
        let owned = first.iter().filter(|&&p| p == 1002).count();
        assert!(
            moved <= owned + 200 / 20,
            "moved {moved}, owned by the ejected {owned}"
        );
    }
}
