//! The gateway example end to end: the real binary (`examples/gateway`)
//! runs as a child process with a configuration written by the test, real
//! upstream servers run on loopback (the gateway's built-in demo backends,
//! or hyper servers in this process), and a hyper client (and `curl`, where
//! it is installed) drives it.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fulcrum::net::hyper::{FulcrumTimer, HyperIo};
use fulcrum::net::{Server, Serving, TcpStream};
use fulcrum::runtime::{Builder, Runtime};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};

mod common;
use common::{gateway_binary, get, listener, raw, Gw};

fn header_of(addr: SocketAddr, path: &str, headers: &[(&str, &str)], name: &str) -> String {
    let mut extra = String::new();
    for (k, v) in headers {
        extra.push_str(&format!("{k}: {v}\r\n"));
    }
    let mut s = StdStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: test\r\n{extra}connection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
        .unwrap_or_default()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free loopback port with nothing listening on it.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn runtime() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime")
}

/// An upstream in this process that counts the connections it accepts and
/// answers every request with 200 and `x-upstream: <name>`.
async fn counting_upstream(addr: SocketAddr, name: &'static str, conns: Arc<AtomicU64>) -> Serving {
    Server::bind(addr)
        .serve(move |stream: TcpStream, _| {
            conns.fetch_add(1, Relaxed);
            async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                    r.headers_mut().insert("x-upstream", name.parse().unwrap());
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(FulcrumTimer::new())
                    .serve_connection(HyperIo::new(stream), svc)
                    .await;
            }
        })
        .await
        .expect("upstream")
}

const DEMO: &str = "\n[[clusters]]\nname = \"demo\"\ndemo_backends = 3\n";

#[test]
fn routes_and_the_status_codes_of_the_demo() {
    let gw = Gw::start(&format!(
        "{}
[[routes]]
host = \"api.example.com\"
prefix = \"/v1/\"
rewrite = \"/status/\"
cluster = \"demo\"
[[routes]]
prefix = \"/status\"
cluster = \"demo\"
[[routes]]
prefix = \"/delay\"
cluster = \"demo\"
{DEMO}",
        listener(2, "")
    ));
    assert_eq!(get(gw.addr, "/status/200", &[]).0, 200);
    assert_eq!(
        get(gw.addr, "/status/418", &[]).0,
        418,
        "upstream status passes through"
    );
    assert_eq!(get(gw.addr, "/headers", &[]).0, 404, "no route");
    assert_eq!(
        get(gw.addr, "/v1/201", &[]).0,
        404,
        "host route needs its host"
    );
    let (status, body) = raw(
        gw.addr,
        b"GET /v1/201 HTTP/1.1\r\nhost: api.example.com:8080\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(status, 201, "host route with prefix rewrite: {body}");
    // Round robin over the three demo backends.
    let backends: std::collections::HashSet<String> = (0..6)
        .map(|_| header_of(gw.addr, "/status/200", &[], "x-backend"))
        .collect();
    assert_eq!(backends.len(), 3, "{backends:?}");
}

#[test]
fn curl_gets_200_and_404() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("this test needs curl (`apt-get install curl`; `.ci/run` installs it)");
    }
    let gw = Gw::start(&format!(
        "{}[[routes]]\nprefix = \"/status\"\ncluster = \"demo\"\n{DEMO}",
        listener(2, "")
    ));
    let curl = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "-i", &format!("http://{}{path}", gw.addr)])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ok = curl("/status/200");
    assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
    let missing = curl("/headers");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}

#[test]
fn upstream_failures_map_to_502_503_504() {
    let refused = closed_port();
    let gw = Gw::start(&format!(
        "{}
[[routes]]
prefix = \"/refused\"
rewrite = \"/\"
cluster = \"refused\"
[[routes]]
prefix = \"/slow\"
rewrite = \"/delay/\"
cluster = \"slow\"
[[routes]]
prefix = \"/down\"
cluster = \"down\"
[[clusters]]
name = \"refused\"
endpoints = [\"{refused}\"]
[[clusters]]
name = \"slow\"
demo_backends = 1
request_timeout_ms = 300
[[clusters]]
name = \"down\"
endpoints = [\"{refused}\"]
[clusters.health_check]
path = \"/\"
interval_ms = 50
timeout_ms = 50
unhealthy_threshold = 1
",
        listener(2, "")
    ));
    assert_eq!(get(gw.addr, "/refused", &[]).0, 502);
    let t = Instant::now();
    assert_eq!(get(gw.addr, "/slow/2000", &[]).0, 504);
    assert!(
        t.elapsed() < Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(get(gw.addr, "/slow/10", &[]).0, 200, "within the timeout");
    wait_until(
        "the dead endpoint's ejection",
        Duration::from_secs(10),
        || get(gw.addr, "/down", &[]).0 == 503,
    );
    // Connection reset by the upstream: 502.
    let reset = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let reset_addr = reset.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in reset.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            // SO_LINGER 0: close with RST.
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt on a socket we own, with a valid linger
            // struct and its size.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
        }
    });
    // An upstream that half-closes: reads the request, shuts its write
    // side without answering, and keeps its read side open: 502.
    let half = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let half_addr = half.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in half.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.shutdown(std::net::Shutdown::Write);
                while let Ok(1..) = s.read(&mut buf) {}
            });
        }
    });
    drop(gw);
    let gw = Gw::start(&format!(
        "{}[[routes]]\nprefix = \"/half\"\ncluster = \"half\"\n[[routes]]\nprefix = \"/\"\ncluster = \"reset\"\n[[clusters]]\nname = \"reset\"\nendpoints = [\"{reset_addr}\"]\n[[clusters]]\nname = \"half\"\nendpoints = [\"{half_addr}\"]\n",
        listener(1, "")
    ));
    assert_eq!(get(gw.addr, "/anything", &[]).0, 502);
    assert_eq!(get(gw.addr, "/half", &[]).0, 502, "half-closed upstream");
    let stats = gw.stats();
    assert!(
        stats["clusters"][0]["endpoints"][0]["failures"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

#[test]
fn bad_requests_get_400_431_413_and_slowloris_is_cut() {
    let gw = Gw::start(&format!(
        "{}[[routes]]\nprefix = \"/\"\ncluster = \"demo\"\n{DEMO}",
        listener(
            2,
            "header_timeout_ms = 300\nmax_header_bytes = 8192\nmax_body_bytes = 1024\n"
        )
    ));
    assert_eq!(raw(gw.addr, b"GARBAGE\r\n\r\n").0, 400);
    assert_eq!(
        raw(gw.addr, b"GET / HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n").0,
        400
    );
    let big = format!(
        "GET /status/200 HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(raw(gw.addr, big.as_bytes()).0, 431);
    let body = "b".repeat(2_000);
    let post = format!(
        "POST /status/200 HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(
        raw(gw.addr, post.as_bytes()).0,
        413,
        "declared length over the limit"
    );
    let chunked = format!(
        "POST /status/200 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n7d0\r\n{body}\r\n0\r\n\r\n"
    );
    assert_eq!(
        raw(gw.addr, chunked.as_bytes()).0,
        413,
        "streamed body over the limit"
    );
    let small = "POST /status/200 HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
    assert_eq!(raw(gw.addr, small.as_bytes()).0, 200);

    // Slowloris: half a head, then nothing. The gateway answers 408 or
    // closes after the header timeout, not later.
    let t = Instant::now();
    let (status, _) = raw(gw.addr, b"GET /status/200 HTTP/1.1\r\nhost: x\r\n");
    let waited = t.elapsed();
    assert!(status == 408 || status == 0, "status {status}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // And the gateway still serves.
    assert_eq!(get(gw.addr, "/status/200", &[]).0, 200);
}

#[test]
fn keep_alive_on_both_sides() {
    let rt = runtime();
    let conns = Arc::new(AtomicU64::new(0));
    let upstream = rt.block_on(counting_upstream(
        "127.0.0.1:0".parse().unwrap(),
        "u",
        conns.clone(),
    ));
    let gw = Gw::start(&format!(
        "{}[[routes]]\nprefix = \"/\"\ncluster = \"u\"\n[[clusters]]\nname = \"u\"\nendpoints = [\"{}\"]\n",
        listener(2, ""),
        upstream.local_addr()
    ));
    const REQUESTS: usize = 200;
    rt.block_on(async {
        // One client connection, 200 requests on it.
        let stream = TcpStream::connect(gw.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(HyperIo::new(stream))
            .await
            .unwrap();
        fulcrum::spawn(conn);
        for _ in 0..REQUESTS {
            sender.ready().await.unwrap();
            let req = Request::get("/x")
                .header("host", "test")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()["x-upstream"], "u");
            resp.into_body().collect().await.unwrap();
        }
    });
    let opened = conns.load(Relaxed);
    // One pooled upstream connection per gateway worker at most.
    assert!(
        (1..=2).contains(&opened),
        "{REQUESTS} requests on one client connection opened {opened} upstream connections"
    );
    let stats = gw.stats();
    let handled: u64 = stats["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(handled, 1, "one client connection");
    drop(upstream);
}

#[test]
fn health_checks_eject_and_restore_an_endpoint() {
    let rt = runtime();
    let a_conns = Arc::new(AtomicU64::new(0));
    let b_conns = Arc::new(AtomicU64::new(0));
    let a = rt.block_on(counting_upstream(
        "127.0.0.1:0".parse().unwrap(),
        "a",
        a_conns.clone(),
    ));
    let b = rt.block_on(counting_upstream(
        "127.0.0.1:0".parse().unwrap(),
        "b",
        b_conns,
    ));
    let a_addr = a.local_addr();
    let gw = Gw::start(&format!(
        "{}[[routes]]\nprefix = \"/\"\ncluster = \"ab\"
[[clusters]]
name = \"ab\"
endpoints = [\"{a_addr}\", \"{}\"]
[clusters.health_check]
path = \"/health\"
interval_ms = 100
timeout_ms = 200
healthy_threshold = 2
unhealthy_threshold = 2
",
        listener(2, ""),
        b.local_addr()
    ));
    let healthy = |gw: &Gw| -> Vec<bool> {
        gw.stats()["clusters"][0]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["healthy"].as_bool().unwrap())
            .collect()
    };
    wait_until("checks of a", Duration::from_secs(10), || {
        a_conns.load(Relaxed) >= 2
    });
    assert_eq!(healthy(&gw), [true, true]);

    // Kill a: ejected, and every request goes to b.
    drop(a);
    rt.block_on(fulcrum::time::sleep(Duration::from_millis(50)));
    wait_until("a's ejection", Duration::from_secs(10), || {
        healthy(&gw) == [false, true]
    });
    for _ in 0..10 {
        assert_eq!(header_of(gw.addr, "/", &[], "x-upstream"), "b");
    }

    // Restart a on the same port: restored after two passes.
    let a = rt.block_on(counting_upstream(a_addr, "a", Arc::new(AtomicU64::new(0))));
    wait_until("a's restoration", Duration::from_secs(10), || {
        healthy(&gw) == [true, true]
    });
    let seen: std::collections::HashSet<String> = (0..10)
        .map(|_| header_of(gw.addr, "/", &[], "x-upstream"))
        .collect();
    assert!(seen.contains("a") && seen.contains("b"), "{seen:?}");
    drop(a);
    drop(b);
}

#[test]
fn maglev_keeps_each_key_on_one_backend() {
    let gw = Gw::start(&format!(
        "{}[[routes]]\nprefix = \"/\"\ncluster = \"m\"
[[clusters]]
name = \"m\"
demo_backends = 3
policy = \"maglev\"
hash_key = \"header:x-user\"
",
        listener(2, "")
    ));
    let mut owners = std::collections::HashMap::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let first = header_of(gw.addr, "/status/200", &[("x-user", &user)], "x-backend");
        assert!(!first.is_empty());
        for _ in 0..4 {
            let again = header_of(gw.addr, "/status/200", &[("x-user", &user)], "x-backend");
            assert_eq!(again, first, "{user} moved");
        }
        owners.insert(user, first);
    }
    let distinct: std::collections::HashSet<&String> = owners.values().collect();
    assert!(distinct.len() >= 2, "30 users all on {distinct:?}");
}

#[test]
fn drain_under_load_fails_no_request() {
    let gw = Gw::start(&format!(
        "{}[[routes]]\nprefix = \"/\"\ncluster = \"demo\"\n{DEMO}",
        listener(2, "drain_timeout_ms = 5000\n")
    ));
    let rt = runtime();
    let addr = gw.addr;
    const CLIENTS: usize = 32;
    let (ok, failed) = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            tasks.push(fulcrum::spawn(async move {
                // Each client: one keep-alive connection, requests until the
                // gateway says `connection: close`.
                let (mut ok, mut failed) = (0u64, 0u64);
                let stream = TcpStream::connect(addr).await.unwrap();
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(HyperIo::new(stream))
                        .await
                        .unwrap();
                fulcrum::spawn(conn);
                loop {
                    if sender.ready().await.is_err() {
                        break; // closed by the gateway between requests
                    }
                    let req = Request::get("/delay/20")
                        .header("host", "test")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    match sender.try_send_request(req).await {
                        Ok(resp) => {
                            let close = resp
                                .headers()
                                .get("connection")
                                .is_some_and(|v| v == "close");
                            let good =
                                resp.status() == 200 && resp.into_body().collect().await.is_ok();
                            if good {
                                ok += 1
                            } else {
                                failed += 1
                            }
                            if close {
                                break;
                            }
                        }
                        // Not sent: the connection was closed first. Not a
                        // failed request, but the client is done.
                        Err(mut e) => {
                            if e.take_message().is_none() {
                                failed += 1;
                            }
                            break;
                        }
                    }
                }
                (ok, failed)
            }));
        }
        fulcrum::time::sleep(Duration::from_millis(500)).await;
        gw.signal(libc::SIGTERM);
        let (mut ok, mut failed) = (0, 0);
        for t in tasks {
            let (o, f) = t.await.unwrap();
            ok += o;
            failed += f;
        }
        (ok, failed)
    });
    assert_eq!(failed, 0, "{ok} requests succeeded");
    assert!(ok >= CLIENTS as u64 * 5, "only {ok} requests under load");
    // The gateway exits by itself, and says how the drain went.
    let mut gw = gw;
    let mut drained = None;
    while let Ok(line) = gw.stdout.recv_timeout(Duration::from_secs(10)) {
        if line.contains("drained in") {
            drained = Some(line);
        }
    }
    let drained = drained.expect("a drain summary");
    assert!(drained.contains(" 0 connections cut"), "{drained}");
    let status = gw.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    println!("{ok} requests under load, 0 failed; {drained}");
}

#[test]
fn admin_serves_stats_prometheus_healthz_and_config() {
    let gw = Gw::start(&format!(
        "{}[[routes]]\nprefix = \"/status\"\ncluster = \"demo\"\n{DEMO}",
        listener(2, "")
    ));
    for _ in 0..20 {
        assert_eq!(get(gw.addr, "/status/200", &[]).0, 200);
    }
    let stats = gw.stats();
    assert_eq!(stats["dlb_backend"], "software");
    let workers = stats["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let requests: u64 = workers
        .iter()
        .map(|w| w["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 20);
    let conns: u64 = workers
        .iter()
        .map(|w| w["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(conns, 20);
    let sent: u64 = stats["clusters"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(sent, 20);
    for w in workers {
        assert!(w.get("dlb_handoffs_sent").is_some() && w.get("dlb_fallbacks").is_some());
    }

    let (status, prom) = get(gw.admin, "/stats?format=prometheus", &[]);
    assert_eq!(status, 200);
    assert!(
        prom.contains("# TYPE fulcrum_gateway_worker_requests counter"),
        "{prom}"
    );
    assert!(
        prom.contains("fulcrum_gateway_worker_open_connections{worker=\"0\"}"),
        "{prom}"
    );
    assert!(
        prom.contains("fulcrum_gateway_endpoint_healthy{cluster=\"demo\""),
        "{prom}"
    );
    assert_eq!(get(gw.admin, "/healthz", &[]), (200, "ok\n".to_owned()));
    let (status, config) = get(gw.admin, "/config", &[]);
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["routes"][0]["prefix"], "/status");
    assert_eq!(get(gw.admin, "/nope", &[]).0, 404);
}

#[test]
fn a_bad_config_fails_at_start_with_file_field_and_reason() {
    let path = std::env::temp_dir().join(format!("fulcrum-gw-bad-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[listener]\naddress = \"127.0.0.1:0\"\nbalance = \"fastest\"\n",
    )
    .unwrap();
    let out = Command::new(gateway_binary())
        .args(["--config".as_ref(), path.as_os_str()])
        .output()
        .expect("run the gateway");
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: listener.balance: unknown balance mode",
            path.display()
        )),
        "{err}"
    );
    let out = Command::new(gateway_binary())
        .args(["--config", "/nonexistent/gw.toml"])
        .output()
        .expect("run the gateway");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/gw.toml: No such file"));
}

/// What the upstream sees: X-Forwarded-For with the client's address
/// appended, X-Forwarded-Proto set to the scheme the client used (whatever
/// it claimed), and an X-Request-Id kept when the client sent one sane id,
/// generated (a UUID v4, new per request) otherwise.
#[test]
fn forwarding_headers_reach_the_upstream() {
    let rec = common::recorder::Recorder::start();
    let gw = Gw::start(&format!(
        "{}
[[routes]]
prefix = \"/\"
cluster = \"rec\"
[[clusters]]
name = \"rec\"
endpoints = [\"{}\"]
",
        listener(2, ""),
        rec.addr
    ));
    let header = |f: &common::recorder::Forwarded, name: &str| -> Vec<String> {
        f.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let is_uuid_v4 = |id: &str| {
        let parts: Vec<&str> = id.split('-').collect();
        parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
            && id.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
            && parts[2].starts_with('4')
            && parts[3].starts_with(['8', '9', 'a', 'b'])
    };

    assert_eq!(get(gw.addr, "/a", &[]).0, 200);
    assert_eq!(get(gw.addr, "/b", &[]).0, 200);
    assert_eq!(
        get(
            gw.addr,
            "/c",
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("x-request-id", "client-chosen-42"),
            ],
        )
        .0,
        200
    );
    let got = rec.take();
    assert_eq!(got.len(), 3, "{got:#?}");
    rec.assert_no_problem();
    let (a, b, c) = (&got[0], &got[1], &got[2]);
    for f in [a, b] {
        assert_eq!(header(f, "x-forwarded-for"), ["127.0.0.1"], "{f:#?}");
        assert_eq!(header(f, "x-forwarded-proto"), ["http"], "{f:#?}");
        let id = header(f, "x-request-id");
        assert!(id.len() == 1 && is_uuid_v4(&id[0]), "{f:#?}");
    }
    assert_ne!(header(a, "x-request-id"), header(b, "x-request-id"));
    assert_eq!(header(c, "x-forwarded-for"), ["203.0.113.7, 127.0.0.1"]);
    assert_eq!(header(c, "x-forwarded-proto"), ["http"]);
    assert_eq!(header(c, "x-request-id"), ["client-chosen-42"]);
}

/// `curl --http2-prior-knowledge` is served as HTTP/2 (h2c), routing and
/// status codes as over HTTP/1.1; with `http2 = false` it is not.
#[test]
fn curl_speaks_http2_with_prior_knowledge() {
    let config = |extra: &str| {
        format!(
            "{}[[routes]]\nprefix = \"/status\"\ncluster = \"demo\"\n{DEMO}",
            listener(2, extra)
        )
    };
    let curl = |gw: &Gw, path: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "--http2-prior-knowledge",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
                &format!("http://{}{path}", gw.addr),
            ])
            .output()
            .expect("curl (`apt-get install curl`; `.ci/run` installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let gw = Gw::start(&config(""));
    assert_eq!(curl(&gw, "/status/200"), "2 200");
    assert_eq!(curl(&gw, "/status/503"), "2 503");
    assert_eq!(curl(&gw, "/headers"), "2 404");
    // HTTP/1.1 on the same listener still works.
    assert_eq!(get(gw.addr, "/status/200", &[]).0, 200);
    drop(gw);
    let gw = Gw::start(&config("http2 = false\n"));
    assert_ne!(curl(&gw, "/status/200"), "2 200");
    assert_eq!(get(gw.addr, "/status/200", &[]).0, 200);
}

/// One HTTP/2 connection carries many concurrent streams; a client that
/// opens and resets streams in a loop (rapid reset, CVE-2023-44487) is cut
/// off after a bounded number of them, and other clients are served.
#[test]
fn http2_streams_are_concurrent_and_rapid_reset_is_cut_off() {
    let gw = Gw::start(&format!(
        "{}[[routes]]\nprefix = \"/\"\ncluster = \"demo\"\n{DEMO}",
        listener(2, "http2_max_concurrent_streams = 100\n")
    ));
    let addr = gw.addr;
    let rt = runtime();
    rt.block_on(async move {
        let request = |path: &str| {
            hyper::Request::get(format!("http://{addr}{path}"))
                .body(())
                .unwrap()
        };
        // 50 requests at once on one connection.
        let io = TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(io).await.expect("h2 handshake");
        fulcrum::spawn(async move {
            let _ = conn.await;
        });
        let mut responses = Vec::new();
        for i in 0..50 {
            let mut c = client.clone().ready().await.expect("ready");
            let (resp, _) = c
                .send_request(request(&format!("/status/{}", 200 + i % 2)), true)
                .expect("send");
            responses.push(fulcrum::spawn(resp));
        }
        for (i, r) in responses.into_iter().enumerate() {
            let resp = r.await.unwrap().expect("response");
            assert_eq!(resp.status().as_u16(), 200 + (i as u16) % 2);
        }

        // Rapid reset: open a stream and reset it at once, in a loop.
        let io = TcpStream::connect(addr).await.unwrap();
        let (mut client, conn) = h2::client::handshake(io).await.expect("h2 handshake");
        let conn = fulcrum::spawn(conn);
        let mut opened = 0;
        let cut_off = fulcrum::time::timeout(Duration::from_secs(20), async {
            for _ in 0..10_000 {
                client = match client.ready().await {
                    Ok(c) => c,
                    Err(_) => return true,
                };
                match client.send_request(request("/status/200"), false) {
                    Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
                    Err(_) => return true,
                }
                opened += 1;
            }
            false
        })
        .await
        .unwrap_or(false);
        assert!(cut_off, "still connected after {opened} reset streams");
        assert!(opened < 10_000, "{opened}");
        // The gateway ended the connection (GOAWAY), not the client.
        let end = fulcrum::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("the connection did not end")
            .unwrap();
        assert!(end.is_err(), "the connection ended cleanly: {end:?}");
        println!("rapid reset: cut off after {opened} streams: {end:?}");
    });
    // Everyone else is still served.
    assert_eq!(get(gw.addr, "/status/200", &[]).0, 200);
}
