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

    /// The hash key of a request for this cluster's policy.
    pub fn key<'a>(&self, headers: &'a hyper::HeaderMap, client: &'a [u8]) -> Option<&'a [u8]> {
        if self.spec.policy != Policy::Maglev {
            return None;
        }
        match &self.spec.hash_key {
            HashKey::ClientIp => Some(client),
            HashKey::Header(name) => headers.get(name.as_str()).map(|v| v.as_bytes()),
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
