//! The gateway's request path: the input bytes are what a client sends on
//! one connection (then it half-closes), served exactly as the gateway
//! binary serves a connection: its own HTTP/1.1 path first (`h1.rs`),
//! then, from the first request that path hands over, hyper's HTTP/1.1
//! server with the gateway's timer, header timeout and head limit, and
//! `Gateway::handle` (the gateway example's own modules), forwarding to a
//! demo backend in the same runtime. The first input byte chooses the path
//! (even: native first; odd: hyper only). It must never panic or hang
//! (5 s), and whatever it sends back must be HTTP/1.x responses.

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fulcrum::net::hyper::{FulcrumTimer, HyperIo};
use fulcrum::net::Serving;
use fulcrum::runtime::{Builder, Runtime};
use fulcrum::sync::watch;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[allow(dead_code)]
#[path = "../../examples/gateway/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../../examples/gateway/config.rs"]
mod config;
#[allow(dead_code)]
#[path = "../../examples/gateway/demo.rs"]
mod demo;
#[allow(dead_code)]
#[path = "../../examples/gateway/h1.rs"]
mod h1;
#[allow(dead_code)]
#[path = "../../examples/gateway/maglev.rs"]
mod maglev;
#[allow(dead_code)]
#[path = "../../examples/gateway/proxy.rs"]
mod proxy;

const CONFIG: &str = r#"
[listener]
address = "127.0.0.1:0"
workers = 1
dlb_backend = "soft"
access_log = false
header_timeout_ms = 500
max_header_bytes = 16384
max_body_bytes = 65536
body_timeout_ms = 500
[admin]
address = "127.0.0.1:0"
[[routes]]
host = "b.example"
prefix = "/"
cluster = "demo"
[[routes]]
prefix = "/api"
rewrite = "/"
cluster = "demo"
[[routes]]
prefix = "/"
cluster = "demo"
[[clusters]]
name = "demo"
demo_backends = 1
request_timeout_ms = 2000
"#;

struct World {
    rt: Runtime,
    gateway: Arc<proxy::Gateway>,
    _backends: Vec<Serving>,
    /// Never sent on: no drain.
    drain: (watch::Sender<bool>, watch::Receiver<bool>),
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        // As the gateway binary runs: the multi-thread (DLB) runtime.
        let rt = Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("a one-worker runtime");
        let config = config::parse("fuzz.toml", CONFIG).expect("the fuzz configuration");
        let (gateway, backends) = rt.block_on(async {
            let backends = demo::start(1).await.expect("a demo backend");
            let addrs = backends.iter().map(Serving::local_addr).collect();
            let cluster = Arc::new(cluster::Cluster::new(config.clusters[0].clone(), addrs));
            (
                Arc::new(proxy::Gateway::new(config.clone(), vec![cluster], 1)),
                backends,
            )
        });
        World {
            rt,
            gateway,
            _backends: backends,
            drain: watch::channel(false),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let Some((&path, data)) = data.split_first() else {
        return;
    };
    let out = w.rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let gateway = w.gateway.clone();
        let conn = async move {
            let (io, rest) = if path % 2 == 0 {
                let limits = h1::Limits {
                    header_timeout: Duration::from_millis(500),
                    max_header: 16384,
                    max_body: 65536,
                    body_timeout: Duration::from_millis(500),
                    grace: Duration::from_millis(100),
                    https: false,
                };
                let mut drain = w.drain.1.clone();
                match h1::serve(server, &gateway, peer, &mut drain, limits).await {
                    h1::Served::Closed => return,
                    h1::Served::Hyper(io, rest) => (io, rest),
                }
            } else {
                (server, bytes::Bytes::new())
            };
            let svc = hyper::service::service_fn(move |req| gateway.clone().handle(req, peer));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(FulcrumTimer::new())
                .header_read_timeout(Duration::from_millis(500))
                .max_buf_size(16384)
                .serve_connection(HyperIo::new(h1::Rewind::new(io, rest)), svc)
                .await;
        };
        let talk = async move {
            // The server may stop reading and close first.
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let mut out = Vec::new();
            let _ = client.read_to_end(&mut out).await;
            out
        };
        let both = async {
            let (_, out) = fulcrum::join!(conn, talk);
            out
        };
        fulcrum::time::timeout(Duration::from_secs(5), both)
            .await
            .expect("the gateway hung on a half-closed connection")
    });
    // hyper answers an HTTP/1.0 request in HTTP/1.0.
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 "),
        "not an HTTP response: {:?}",
        String::from_utf8_lossy(&out[..out.len().min(200)])
    );
});
