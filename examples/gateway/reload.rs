//! Hot reload: `SIGHUP` or `POST /reload` on the admin listener re-reads
//! the configuration file and, if it is valid and changes nothing that is
//! fixed at start, puts it in force for new connections.
//!
//! The configuration in force is an `Arc<Gateway>` behind a lock, read once
//! per accepted connection ([`Live::current`]): a connection keeps the
//! `Gateway` it was accepted under for its whole life, so requests in
//! flight, and later requests on the same keep-alive connection, finish on
//! the configuration they started with. An old `Gateway` (its clusters and
//! its upstream pool) is dropped when its last connection ends.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use fulcrum::net::Serving;
use fulcrum::task::JoinHandle;
use serde_json::json;

use crate::cluster::Cluster;
use crate::config::{self, Validated};
use crate::proxy::Gateway;
use crate::{demo, health};

/// The demo backends started for one cluster.
struct Demo {
    /// The cluster's name.
    cluster: String,
    servers: Vec<Serving>,
    /// The configurations that have sent requests to them (a backend
    /// reused over several reloads serves several).
    users: Vec<Weak<Gateway>>,
}

impl Demo {
    fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(Serving::local_addr).collect()
    }

    /// Whether a configuration that uses them is still alive.
    fn in_use(&mut self) -> bool {
        self.users.retain(|u| u.strong_count() > 0);
        !self.users.is_empty()
    }

    fn stop(&self) {
        for s in &self.servers {
            s.stop();
        }
    }
}

/// What a reload replaces besides the `Gateway`.
struct Running {
    /// The health checkers of the configuration in force.
    health: Vec<JoinHandle<()>>,
    /// The demo backends of the configuration in force.
    demos: Vec<Demo>,
    /// Demo backends the configuration in force does not use, kept until
    /// the last connection of every configuration that used them has
    /// ended (checked at each reload, and all stopped at exit).
    retired: Vec<Demo>,
    /// Set by [`Live::stop`]: the gateway is exiting, reloads are refused.
    stopped: bool,
}

/// The reload counters shown in `/stats`.
#[derive(Default)]
struct Counters {
    done: u64,
    failed: u64,
    /// Unix time (seconds) of the last successful reload.
    last_done: Option<u64>,
    /// Unix time (seconds) and reason of the last failed reload.
    last_failure: Option<(u64, String)>,
}

/// The configuration in force, and what reloading it needs.
pub struct Live {
    current: RwLock<Arc<Gateway>>,
    /// The file the gateway was started with; `None` for the embedded
    /// default (which a reload does not re-read: there is no file).
    path: Option<String>,
    /// The configuration at start, for the settings that cannot change.
    started: Validated,
    /// Held for the whole of a reload, so that reloads happen one at a
    /// time.
    running: fulcrum::sync::Mutex<Running>,
    counters: Mutex<Counters>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Resolves the endpoints of `config`'s clusters and gives each cluster
/// its demo backends: the running ones of a cluster of the same name and
/// count in `running`, else new ones. Returns the clusters and, per
/// cluster with demo backends, the index of the reused entry in `running`
/// or the newly started backends.
/// Resolves each cluster's configured endpoints, in order (blocking: host
/// names go to the system resolver).
fn resolve(endpoints: &[Vec<String>]) -> io::Result<Vec<Vec<SocketAddr>>> {
    endpoints
        .iter()
        .map(|list| {
            list.iter()
                .map(|e| {
                    std::net::ToSocketAddrs::to_socket_addrs(e.as_str())
                        .map_err(|err| io::Error::new(err.kind(), format!("{e}: {err}")))?
                        .next()
                        .ok_or_else(|| {
                            io::Error::new(io::ErrorKind::NotFound, format!("{e}: no address"))
                        })
                })
                .collect()
        })
        .collect()
}

/// [`resolve`] on the blocking pool, off the workers.
async fn resolve_off_workers(config: &Validated) -> io::Result<Vec<Vec<SocketAddr>>> {
    let endpoints: Vec<Vec<String>> = config
        .clusters
        .iter()
        .map(|c| c.endpoints.clone())
        .collect();
    fulcrum::task::spawn_blocking(move || resolve(&endpoints))
        .await
        .map_err(|e| io::Error::other(format!("resolving the endpoints: {e}")))?
}

async fn build(
    config: &Validated,
    running: &[Demo],
) -> io::Result<(Vec<Arc<Cluster>>, Vec<Result<usize, Demo>>)> {
    let resolved = resolve_off_workers(config).await?;
    let mut clusters = Vec::new();
    let mut demos: Vec<Result<usize, Demo>> = Vec::new();
    for (spec, mut addrs) in config.clusters.iter().zip(resolved) {
        if spec.demo_backends > 0 {
            let reuse = running
                .iter()
                .position(|d| d.cluster == spec.name && d.servers.len() == spec.demo_backends);
            match reuse {
                Some(i) => {
                    addrs.extend(running[i].addrs());
                    demos.push(Ok(i));
                }
                None => {
                    // On an error, those started for this attempt stop
                    // as they drop.
                    let d = Demo {
                        cluster: spec.name.clone(),
                        servers: demo::start(spec.demo_backends).await?,
                        users: Vec::new(),
                    };
                    addrs.extend(d.addrs());
                    demos.push(Err(d));
                }
            }
        }
        clusters.push(Arc::new(Cluster::new(spec.clone(), addrs)));
    }
    Ok((clusters, demos))
}

/// Why `new` cannot replace `old` without a restart, if it cannot.
fn fixed_changes(old: &Validated, new: &Validated) -> Option<String> {
    let mut why = Vec::new();
    if old.listen != new.listen {
        why.push(format!(
            "listener.address: listen address changes need a restart (running on {}, the file says {})",
            old.listen, new.listen
        ));
    }
    if old.admin != new.admin {
        why.push(format!(
            "admin.address: admin address changes need a restart (running on {}, the file says {})",
            old.admin, new.admin
        ));
    }
    if old.workers != new.workers {
        why.push(format!(
            "listener.workers: worker count changes need a restart (running {}, the file says {})",
            old.workers, new.workers
        ));
    }
    if old.balance != new.balance {
        why.push(format!(
            "listener.balance: balance mode changes need a restart (running {:?}, the file says {:?})",
            old.balance, new.balance
        ));
    }
    if old.tls.is_some() != new.tls.is_some() {
        let was = |tls: bool| if tls { "TLS" } else { "plain TCP" };
        why.push(format!(
            "listener.tls_cert: turning TLS on or off needs a restart (the listener speaks {}); \
             a reload may only change the certificate and key",
            was(old.tls.is_some())
        ));
    }
    if old.backend != new.backend {
        why.push(format!(
            "listener.dlb_backend: DLB backend changes need a restart (running {:?}, the file says {:?})",
            old.backend, new.backend
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

impl Live {
    /// Builds the first configuration's clusters, demo backends and
    /// health checkers.
    pub async fn start(
        config: Validated,
        path: Option<String>,
        workers: usize,
    ) -> io::Result<Self> {
        let (clusters, demos) = build(&config, &[]).await?;
        let health = health::start(&clusters);
        let gateway = Arc::new(Gateway::new(config.clone(), clusters, workers));
        let demos = demos
            .into_iter()
            .filter_map(Result::err)
            .map(|mut d| {
                d.users.push(Arc::downgrade(&gateway));
                d
            })
            .collect();
        Ok(Self {
            current: RwLock::new(gateway),
            path,
            started: config,
            running: fulcrum::sync::Mutex::new(Running {
                health,
                demos,
                retired: Vec::new(),
                stopped: false,
            }),
            counters: Mutex::new(Counters::default()),
        })
    }

    /// The configuration in force (one read of the shared pointer).
    pub fn current(&self) -> Arc<Gateway> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the configuration file and puts it in force; on error the
    /// configuration in force stays, and the reason is logged and
    /// returned. Ok carries a one-line summary.
    pub async fn reload(&self) -> Result<String, String> {
        let result = self.try_reload().await;
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(summary) => {
                c.done += 1;
                c.last_done = Some(now_unix());
                tracing::info!("configuration reloaded: {summary}");
            }
            Err(why) => {
                c.failed += 1;
                c.last_failure = Some((now_unix(), why.clone()));
                tracing::warn!("configuration reload rejected, the old one stays in force: {why}");
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<String, String> {
        let Some(path) = &self.path else {
            return Err(
                "the gateway runs the built-in configuration: there is no file to re-read \
                 (start it with --config FILE to reload)"
                    .into(),
            );
        };
        let mut running = self.running.lock().await;
        if running.stopped {
            return Err("the gateway is draining: no more reloads".into());
        }
        // Off the workers: the file system here, and the names the
        // endpoints resolve in `build`.
        let file = path.clone();
        let config = fulcrum::task::spawn_blocking(move || {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
            config::parse(&file, &text).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("{path}: reading the file: {e}"))??;
        if let Some(why) = fixed_changes(&self.started, &config) {
            return Err(format!("{path}: {why}"));
        }
        let (clusters, demos) = build(&config, &running.demos)
            .await
            .map_err(|e| format!("{path}: starting the clusters: {e}"))?;
        let summary = format!(
            "{path}: {} routes, {} clusters",
            config.routes.len(),
            config.clusters.len()
        );

        let old = self.current();
        let new = Arc::new(old.successor(config, clusters));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        // Its idle upstream connections go now; those its open client
        // connections still use go back to its pool, and go with it.
        old.close_idle();

        // The old checkers stop; the new clusters get theirs.
        for h in std::mem::replace(&mut running.health, health::start(&new.clusters)) {
            h.abort();
        }
        // Demo backends: reused ones stay, new ones join, the others
        // retire until the old configuration's connections are gone.
        let mut keep = vec![false; running.demos.len()];
        let mut fresh = Vec::new();
        for d in demos {
            match d {
                Ok(i) => keep[i] = true,
                Err(d) => fresh.push(d),
            }
        }
        let previous = std::mem::take(&mut running.demos);
        for (d, kept) in previous.into_iter().zip(keep) {
            if kept {
                running.demos.push(d);
            } else {
                running.retired.push(d);
            }
        }
        running.demos.extend(fresh);
        for d in &mut running.demos {
            d.users.retain(|u| u.strong_count() > 0);
            d.users.push(Arc::downgrade(&new));
        }
        drop(old);
        running.retired.retain_mut(|d| {
            let in_use = d.in_use();
            if !in_use {
                d.stop();
            }
            in_use
        });
        Ok(summary)
    }

    /// Stops the health checkers and every demo backend (at exit).
    pub async fn stop(&self) {
        let mut running = self.running.lock().await;
        running.stopped = true;
        for h in &running.health {
            h.abort();
        }
        for d in &running.demos {
            d.stop();
        }
        for d in &running.retired {
            d.stop();
        }
    }

    /// The reload counters, for `/stats`.
    pub fn stats_json(&self) -> serde_json::Value {
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        json!({
            "file": self.path,
            "done": c.done,
            "failed": c.failed,
            "last_done_unix": c.last_done,
            "last_failure": c.last_failure.as_ref().map(|(at, why)| json!({
                "unix": at,
                "reason": why,
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[listener]\naddress = \"127.0.0.1:8080\"\nworkers = 2\n\
                        [[routes]]\ncluster = \"c\"\n[[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:9\"]\n";

    fn changed(from: &str, to: &str) -> Option<String> {
        let old = config::parse("a.toml", BASE).unwrap();
        let new = config::parse("b.toml", &BASE.replace(from, to)).unwrap();
        fixed_changes(&old, &new)
    }

    #[test]
    fn only_restart_settings_are_fixed() {
        assert_eq!(changed("", ""), None);
        assert_eq!(
            changed("cluster = \"c\"", "cluster = \"c\"\nprefix = \"/x\""),
            None
        );
        assert_eq!(
            changed("workers = 2", "workers = 2\nmax_body_bytes = 10"),
            None
        );
        let why = changed(":8080", ":8081").unwrap();
        assert!(
            why.contains("listen address changes need a restart"),
            "{why}"
        );
        let why = changed("workers = 2", "workers = 4").unwrap();
        assert!(why.contains("worker count changes need a restart"), "{why}");
        let why = changed("workers = 2", "workers = 2\nbalance = \"exact\"").unwrap();
        assert!(why.contains("balance mode changes need a restart"), "{why}");
        let why = changed("workers = 2", "workers = 2\ndlb_backend = \"soft\"").unwrap();
        assert!(why.contains("DLB backend changes need a restart"), "{why}");
        let why = changed(
            "workers = 2\n",
            "workers = 2\n[admin]\naddress = \"127.0.0.1:9\"\n",
        )
        .unwrap();
        assert!(
            why.contains("admin address changes need a restart"),
            "{why}"
        );
    }
}
