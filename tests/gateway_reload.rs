//! Hot reload of the gateway's configuration, through the binary: SIGHUP
//! and `POST /reload` put a rewritten file in force; a broken file, or one
//! that changes what needs a restart, is rejected with the reason and the
//! old configuration keeps serving; connections keep the configuration
//! they were accepted under; no request is lost while reloading under
//! load; old upstream pools close; SIGTERM still drains cleanly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{get, listener, Gw, KeepAlive};

/// A config: two workers, the demo cluster `demo` (two backends) behind
/// `/status`, then `routes` (TOML), then `clusters` (TOML).
fn config(extra_listener: &str, routes: &str, clusters: &str) -> String {
    format!(
        "{}\n[[routes]]\nprefix = \"/status\"\ncluster = \"demo\"\n{routes}\n\
         [[clusters]]\nname = \"demo\"\ndemo_backends = 2\n{clusters}\n",
        listener(2, extra_listener)
    )
}

/// A route `prefix` → `cluster`, rewritten to `rewrite`.
fn route(prefix: &str, cluster: &str, rewrite: &str) -> String {
    format!("[[routes]]\nprefix = \"{prefix}\"\ncluster = \"{cluster}\"\nrewrite = \"{rewrite}\"\n")
}

/// Polls `f` until it is true, for at most `limit`.
fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The endpoint addresses of every cluster in `/stats`.
fn endpoints(stats: &serde_json::Value) -> Vec<String> {
    let mut v = Vec::new();
    for c in stats["clusters"].as_array().unwrap() {
        for e in c["endpoints"].as_array().unwrap() {
            v.push(format!("{}={}", c["name"], e["address"]));
        }
    }
    v
}

#[test]
fn sighup_and_post_reload_put_the_rewritten_file_in_force() {
    let mut gw = Gw::start(&config("", "", ""));
    assert_eq!(get(gw.addr, "/status/200", &[]).0, 200);
    assert_eq!(get(gw.addr, "/new", &[]).0, 404);
    let demo_endpoints = endpoints(&gw.stats());
    assert_eq!(demo_endpoints.len(), 2);

    // SIGHUP: a new route answers as configured, within a bounded wait.
    gw.rewrite(&config("", &route("/new", "demo", "/status/203"), ""));
    gw.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the route added by SIGHUP", || {
        get(gw.addr, "/new", &[]).0 == 203
    });

    // POST /reload: in force when it answers 200.
    gw.rewrite(&config("", &route("/new", "demo", "/status/202"), ""));
    let (status, body) = gw.post_reload();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("reloaded"), "{body}");
    assert_eq!(get(gw.addr, "/new", &[]).0, 202);
    assert_eq!(get(gw.addr, "/status/200", &[]).0, 200);

    // /config shows the configuration in force.
    let (status, body) = get(gw.admin, "/config", &[]);
    assert_eq!(status, 200);
    assert!(body.contains("/status/202"), "{body}");
    assert!(!body.contains("/status/203"), "{body}");

    // /stats counts the reloads; the demo backends of a cluster of the
    // same name and count are the running ones.
    let stats = gw.stats();
    assert_eq!(stats["reload"]["done"], 2, "{stats:#}");
    assert_eq!(stats["reload"]["failed"], 0, "{stats:#}");
    assert!(stats["reload"]["last_failure"].is_null(), "{stats:#}");
    assert_eq!(endpoints(&stats), demo_endpoints);
    let requests: u64 = stats["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["requests"].as_u64().unwrap())
        .sum();
    // 2 before the reloads, at least 1 while waiting, 2 after.
    assert!(requests >= 5, "{stats:#}");

    // A cluster whose demo backend count changes gets new ones; a new
    // cluster gets its own.
    let two = format!(
        "{}\n[[routes]]\nprefix = \"/status\"\ncluster = \"demo\"\n{}\n\
         [[clusters]]\nname = \"demo\"\ndemo_backends = 3\n\
         [[clusters]]\nname = \"more\"\ndemo_backends = 1\n",
        listener(2, ""),
        route("/more", "more", "/status/201"),
    );
    gw.rewrite(&two);
    let (status, body) = gw.post_reload();
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(gw.addr, "/more", &[]).0, 201);
    assert_eq!(get(gw.addr, "/status/200", &[]).0, 200);
    let now = endpoints(&gw.stats());
    assert_eq!(now.len(), 4, "{now:?}");
    assert!(!now.iter().any(|e| demo_endpoints.contains(e)), "{now:?}");

    assert!(gw.terminate(Duration::from_secs(20)).success());
}

#[test]
fn broken_or_restart_only_changes_are_rejected_and_the_old_config_serves() {
    let good = config("", &route("/new", "demo", "/status/203"), "");
    let gw = Gw::start(&good);
    let still_serving = || {
        assert_eq!(get(gw.addr, "/status/200", &[]).0, 200);
        assert_eq!(get(gw.addr, "/new", &[]).0, 203);
    };
    still_serving();

    let cases: [(String, &str); 5] = [
        ("[listener\naddress = ".into(), "line "),
        (
            config("", "", "policy = \"bogus\"\n"),
            "unknown policy \"bogus\"",
        ),
        (
            good.replace("127.0.0.1:0\"\nworkers", "127.0.0.1:1\"\nworkers"),
            "listen address changes need a restart",
        ),
        (
            good.replace("workers = 2", "workers = 3"),
            "worker count changes need a restart",
        ),
        (
            good.replace(
                "dlb_backend = \"soft\"",
                "dlb_backend = \"soft\"\nbalance = \"exact\"",
            ),
            "balance mode changes need a restart",
        ),
    ];
    for (i, (text, reason)) in cases.iter().enumerate() {
        gw.rewrite(text);
        let (status, body) = gw.post_reload();
        assert_eq!(status, 400, "case {i}: {body}");
        assert!(
            body.contains(reason),
            "case {i}: {reason:?} not in {body:?}"
        );
        still_serving();
        let stats = gw.stats();
        assert_eq!(stats["reload"]["failed"], i + 1, "{stats:#}");
        let last = stats["reload"]["last_failure"]["reason"].as_str().unwrap();
        assert!(last.contains(reason), "{last}");
        assert!(stats["reload"]["last_failure"]["unix"].as_u64().unwrap() > 0);
    }
    // A file that is gone is rejected too.
    std::fs::remove_file(gw.config_path()).unwrap();
    let (status, body) = gw.post_reload();
    assert_eq!(status, 400, "{body}");
    still_serving();
    // SIGHUP with a broken file: counted, nothing changes.
    gw.rewrite("garbage");
    gw.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the failed SIGHUP reload", || {
        gw.stats()["reload"]["failed"] == cases.len() + 2
    });
    still_serving();
    assert_eq!(gw.stats()["reload"]["done"], 0);
    // /reload takes POST only.
    assert_eq!(get(gw.admin, "/reload", &[]).0, 405);
    // The file fixed: it reloads.
    gw.rewrite(&config("", &route("/new", "demo", "/status/202"), ""));
    assert_eq!(gw.post_reload().0, 200);
    assert_eq!(get(gw.addr, "/new", &[]).0, 202);
}

#[test]
fn a_connection_keeps_the_configuration_it_was_accepted_under() {
    let mut gw = Gw::start(&config("", &route("/t", "demo", "/status/200"), ""));
    let mut old = KeepAlive::connect(gw.addr);
    assert_eq!(old.get("/t").unwrap().0, 200);

    gw.rewrite(&config("", &route("/t", "demo", "/status/202"), ""));
    let (status, body) = gw.post_reload();
    assert_eq!(status, 200, "{body}");

    // A new connection sees the new route; the old one keeps the old.
    assert_eq!(get(gw.addr, "/t", &[]).0, 202);
    let mut new = KeepAlive::connect(gw.addr);
    assert_eq!(new.get("/t").unwrap().0, 202);
    for _ in 0..3 {
        assert_eq!(old.get("/t").unwrap().0, 200);
        assert_eq!(new.get("/t").unwrap().0, 202);
    }

    // The drain reaches the connections of both configurations.
    let started = Instant::now();
    let status = gw.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "the drain waited for its timeout"
    );
    assert!(old.get("/t").is_err());
    assert!(new.get("/t").is_err());
}

/// An upstream on a std listener that answers every request with 200 and
/// keeps connections open; counts the connections open now.
struct Upstream {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl Upstream {
    fn start() -> Upstream {
        let l = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (o, a) = (open.clone(), accepted.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { break };
                o.fetch_add(1, Relaxed);
                a.fetch_add(1, Relaxed);
                let o = o.clone();
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut w = s.try_clone().unwrap();
                    let mut r = BufReader::new(s);
                    'conn: loop {
                        let mut length = 0;
                        loop {
                            let mut line = String::new();
                            match r.read_line(&mut line) {
                                Ok(0) | Err(_) => break 'conn,
                                Ok(_) => {}
                            }
                            let line = line.trim_end();
                            if line.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = line.split_once(':') {
                                if k.eq_ignore_ascii_case("content-length") {
                                    length = v.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0; length];
                        if r.read_exact(&mut body).is_err() {
                            break;
                        }
                        if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .is_err()
                        {
                            break;
                        }
                    }
                    o.fetch_sub(1, Relaxed);
                });
            }
        });
        Upstream {
            addr,
            open,
            accepted,
        }
    }
}

#[test]
fn an_old_configurations_idle_upstream_connections_close() {
    let up = Upstream::start();
    let with = |rewrite: &str| {
        config(
            "",
            &route("/up", "up", rewrite),
            &format!(
                "[[clusters]]\nname = \"up\"\nendpoints = [\"{}\"]\n",
                up.addr
            ),
        )
    };
    let gw = Gw::start(&with("/a"));
    assert_eq!(get(gw.addr, "/up", &[]).0, 200);
    assert_eq!(get(gw.addr, "/up", &[]).0, 200);
    // Pooled: open, idle.
    wait_until(Duration::from_secs(5), "the pooled connection", || {
        up.open.load(Relaxed) >= 1
    });

    gw.rewrite(&with("/b"));
    assert_eq!(gw.post_reload().0, 200);
    // No client connection holds the old configuration: it is dropped,
    // and its pooled upstream connections close.
    wait_until(Duration::from_secs(10), "the old pool to close", || {
        up.open.load(Relaxed) == 0
    });
    let before = up.accepted.load(Relaxed);
    assert_eq!(get(gw.addr, "/up", &[]).0, 200);
    assert_eq!(up.accepted.load(Relaxed), before + 1);
}

#[test]
fn no_request_is_lost_while_reloading_under_load() {
    let variant = |n: usize| {
        if n % 2 == 0 {
            config("", &route("/t", "demo", "/status/200"), "")
        } else {
            // Another rewrite, policy and per-connection limits, and a
            // cluster with demo backends of its own that comes and goes.
            format!(
                "{}\n[[routes]]\nprefix = \"/status\"\ncluster = \"demo\"\n{}{}\n\
                 [[clusters]]\nname = \"demo\"\ndemo_backends = 2\npolicy = \"least_request\"\n\
                 [[clusters]]\nname = \"extra\"\ndemo_backends = 1\n",
                listener(2, "max_header_bytes = 32768\nhttp2 = false\n"),
                route("/t", "demo", "/delay/0"),
                route("/e", "extra", "/status/200"),
            )
        }
    };
    let mut gw = Gw::start(&variant(0));
    let addr = gw.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for t in 0..4 {
        let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
        clients.push(std::thread::spawn(move || {
            let mut mine = 0u64;
            let mut conn = (t % 2 == 0).then(|| KeepAlive::connect(addr));
            let mut n = 0;
            while !stop.load(Relaxed) {
                let path = if n % 2 == 0 { "/t" } else { "/status/200" };
                n += 1;
                // Keep-alive clients move to a new connection now and then,
                // so that they too cross the reloads.
                if t % 2 == 0 && n % 200 == 0 {
                    conn = Some(KeepAlive::connect(addr));
                }
                let got = match &mut conn {
                    Some(c) => c.get(path),
                    None => Ok(get(addr, path, &[])),
                };
                match got {
                    Ok((200, _)) => mine += 1,
                    Ok((s, body)) => {
                        errors.lock().unwrap().push(format!("{path}: {s} {body}"));
                    }
                    Err(e) => {
                        errors.lock().unwrap().push(format!("{path}: {e}"));
                        // Go on with a new connection.
                        conn = Some(KeepAlive::connect(addr));
                    }
                }
            }
            ok.fetch_add(mine, Relaxed);
            mine
        }));
    }

    let started = Instant::now();
    for n in 1..=10 {
        std::thread::sleep(Duration::from_millis(250));
        gw.rewrite(&variant(n));
        if n % 3 == 0 {
            gw.signal(libc::SIGHUP);
            wait_until(Duration::from_secs(10), "the SIGHUP reload", || {
                gw.stats()["reload"]["done"] == n
            });
        } else {
            let (status, body) = gw.post_reload();
            assert_eq!(status, 200, "reload {n}: {body}");
        }
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Relaxed);
    let per_client: Vec<u64> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let elapsed = started.elapsed();
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert!(per_client.iter().all(|&n| n > 0), "{per_client:?}");
    let total = ok.load(Relaxed);
    eprintln!(
        "{total} requests, all 200, over 10 reloads in {elapsed:?}: per client {per_client:?}"
    );

    let stats = gw.stats();
    assert_eq!(stats["reload"]["done"], 10, "{stats:#}");
    assert_eq!(stats["reload"]["failed"], 0, "{stats:#}");
    // The per-worker counters carried over the reloads.
    let requests: u64 = stats["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["requests"].as_u64().unwrap())
        .sum();
    assert!(requests >= total, "{requests} < {total}");
    // The last variant (10, even) has no `extra` cluster.
    assert_eq!(endpoints(&stats).len(), 2, "{stats:#}");

    let status = gw.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    // The drain summary sums the per-worker counters of every
    // configuration.
    let summary = std::iter::from_fn(|| gw.stdout.recv_timeout(Duration::from_secs(5)).ok())
        .find(|l| l.contains("requests served"))
        .expect("the drain summary");
    let served: u64 = summary
        .split(" requests served")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {summary:?}"));
    assert!(served >= requests, "{summary}");
}
