//! The admin listener (loopback by default): `/stats` (JSON, or Prometheus
//! text with `?format=prometheus` or at `/stats/prometheus`), `/healthz`,
//! `/config` (the configuration in force) and `POST /reload`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use fulcrum::net::hyper::{FulcrumTimer, HyperIo};
use fulcrum::net::{Server, Serving, TcpStream};
use fulcrum::runtime::Handle;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use crate::reload::Live;

/// What the admin pages read.
pub struct State {
    /// The configuration in force, and its reloading.
    pub live: Arc<Live>,
    pub serving: Arc<Serving>,
    pub handle: Handle,
    pub draining: AtomicBool,
}

impl State {
    /// The statistics as JSON.
    pub fn stats_json(&self) -> serde_json::Value {
        let gateway = self.live.current();
        let metrics = self.handle.metrics();
        let open = self.serving.open_per_worker();
        let handled = self.serving.handled_per_worker();
        let workers: Vec<_> = metrics
            .workers
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let w = &gateway.workers[i];
                json!({
                    "worker": i,
                    "open_connections": open.get(i).copied().unwrap_or(0),
                    "connections": handled.get(i).copied().unwrap_or(0),
                    "requests": w.requests.load(Relaxed),
                    "responses_5xx": w.responses_5xx.load(Relaxed),
                    "tls_handshake_failures": w.tls_handshake_failures.load(Relaxed),
                    "upgrades": w.upgrades.load(Relaxed),
                    "tunnels_open": w.tunnels_open.load(Relaxed),
                    "tunnel_bytes_up": w.tunnel_bytes_up.load(Relaxed),
                    "tunnel_bytes_down": w.tunnel_bytes_down.load(Relaxed),
                    "dlb_handoffs_sent": m.dlb_sent,
                    "dlb_handoffs_received": m.dlb_received,
                    "dlb_fallbacks": m.fallbacks,
                    "io_rescued": m.io_rescued,
                    "tasks_polled": m.tasks_polled,
                })
            })
            .collect();
        let clusters: Vec<_> = gateway
            .clusters
            .iter()
            .map(|c| {
                let endpoints: Vec<_> = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        json!({
                            "address": e.name,
                            "healthy": e.healthy.load(Relaxed),
                            "requests": e.requests.load(Relaxed),
                            "active": e.active.load(Relaxed),
                            "failures": e.failures.load(Relaxed),
                        })
                    })
                    .collect();
                json!({
                    "name": c.spec.name,
                    "active": c.active(),
                    "retries": c.retries.load(Relaxed),
                    "retries_active": c.retries_active.load(Relaxed),
                    "retries_over_budget": c.retries_over_budget.load(Relaxed),
                    "endpoints": endpoints,
                })
            })
            .collect();
        // Over every slot, the one off the workers included.
        let total = |f: fn(&crate::proxy::WorkerStats) -> &std::sync::atomic::AtomicU64| {
            gateway
                .workers
                .iter()
                .map(|w| f(w).load(Relaxed))
                .sum::<u64>()
        };
        let tunnels = json!({
            "upgrades": total(|w| &w.upgrades),
            "open": total(|w| &w.tunnels_open),
            "bytes_up": total(|w| &w.tunnel_bytes_up),
            "bytes_down": total(|w| &w.tunnel_bytes_down),
        });
        json!({
            "dlb_backend": self.handle.dlb_backend().map(|b| b.to_string()),
            "balance": format!("{:?}", gateway.config.balance),
            "draining": self.draining.load(Relaxed),
            "remote_fallbacks": metrics.remote_fallbacks,
            "tunnels": tunnels,
            "workers": workers,
            "clusters": clusters,
            "reload": self.live.stats_json(),
        })
    }

    /// The statistics as Prometheus text.
    pub fn stats_prometheus(&self) -> String {
        let v = self.stats_json();
        let mut out = String::new();
        let worker_metrics = [
            (
                "open_connections",
                "gauge",
                "Client connections open on the worker.",
            ),
            (
                "connections",
                "counter",
                "Client connections the worker has handled.",
            ),
            ("requests", "counter", "Requests served on the worker."),
            (
                "responses_5xx",
                "counter",
                "5xx responses sent from the worker.",
            ),
            (
                "tls_handshake_failures",
                "counter",
                "Client connections closed because their TLS handshake failed or timed out.",
            ),
            (
                "upgrades",
                "counter",
                "Protocol upgrades (101 Switching Protocols) passed through on the worker.",
            ),
            (
                "tunnels_open",
                "gauge",
                "Upgraded connections (tunnels) open on the worker.",
            ),
            (
                "tunnel_bytes_up",
                "counter",
                "Bytes tunnelled from clients to upstreams on the worker.",
            ),
            (
                "tunnel_bytes_down",
                "counter",
                "Bytes tunnelled from upstreams to clients on the worker.",
            ),
            (
                "dlb_handoffs_sent",
                "counter",
                "Tasks and connections the worker sent through the DLB queue.",
            ),
            (
                "dlb_handoffs_received",
                "counter",
                "Tasks and connections the worker received from the DLB queue.",
            ),
            (
                "dlb_fallbacks",
                "counter",
                "DLB sends that came up short, handled locally instead.",
            ),
            (
                "io_rescued",
                "counter",
                "Ready I/O of a busy peer this worker rescued.",
            ),
        ];
        let empty = Vec::new();
        let workers = v["workers"].as_array().unwrap_or(&empty);
        for (name, kind, help) in worker_metrics {
            let _ = writeln!(out, "# HELP fulcrum_gateway_worker_{name} {help}");
            let _ = writeln!(out, "# TYPE fulcrum_gateway_worker_{name} {kind}");
            for w in workers {
                let _ = writeln!(
                    out,
                    "fulcrum_gateway_worker_{name}{{worker=\"{}\"}} {}",
                    w["worker"], w[name]
                );
            }
        }
        let endpoint_metrics = [
            ("healthy", "gauge", "1 if the endpoint is in rotation."),
            ("requests", "counter", "Requests sent to the endpoint."),
            ("active", "gauge", "Requests in flight to the endpoint."),
            (
                "failures",
                "counter",
                "Requests that failed to connect, were reset or timed out.",
            ),
        ];
        let clusters = v["clusters"].as_array().unwrap_or(&empty);
        let cluster_metrics = [
            (
                "active",
                "gauge",
                "Upstream requests in flight to the cluster (the retry budget's base).",
            ),
            (
                "retries",
                "counter",
                "Failed attempts retried on another endpoint.",
            ),
            ("retries_active", "gauge", "Retries in flight."),
            (
                "retries_over_budget",
                "counter",
                "Retries not made because the retry budget was spent.",
            ),
        ];
        for (name, kind, help) in cluster_metrics {
            let _ = writeln!(out, "# HELP fulcrum_gateway_cluster_{name} {help}");
            let _ = writeln!(out, "# TYPE fulcrum_gateway_cluster_{name} {kind}");
            for c in clusters {
                let _ = writeln!(
                    out,
                    "fulcrum_gateway_cluster_{name}{{cluster={}}} {}",
                    c["name"], c[name]
                );
            }
        }
        for (name, kind, help) in endpoint_metrics {
            let _ = writeln!(out, "# HELP fulcrum_gateway_endpoint_{name} {help}");
            let _ = writeln!(out, "# TYPE fulcrum_gateway_endpoint_{name} {kind}");
            for c in clusters {
                for e in c["endpoints"].as_array().unwrap_or(&empty) {
                    let value = match &e[name] {
                        serde_json::Value::Bool(b) => u64::from(*b).to_string(),
                        other => other.to_string(),
                    };
                    let _ = writeln!(
                        out,
                        "fulcrum_gateway_endpoint_{name}{{cluster={},endpoint={}}} {value}",
                        c["name"], e["address"]
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP fulcrum_gateway_reloads Configuration reloads, by outcome."
        );
        let _ = writeln!(out, "# TYPE fulcrum_gateway_reloads counter");
        for outcome in ["done", "failed"] {
            let _ = writeln!(
                out,
                "fulcrum_gateway_reloads{{outcome=\"{outcome}\"}} {}",
                v["reload"][outcome]
            );
        }
        out
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

fn page(state: &State, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let query = req.uri().query().unwrap_or("");
    let prometheus = query.split('&').any(|kv| kv == "format=prometheus");
    match req.uri().path() {
        "/healthz" if state.draining.load(Relaxed) => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".into(),
        ),
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/stats/prometheus" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.stats_prometheus(),
        ),
        "/stats" if prometheus => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.stats_prometheus(),
        ),
        "/stats" => respond(
            StatusCode::OK,
            "application/json",
            format!("{:#}\n", state.stats_json()),
        ),
        "/config" => match serde_json::to_string_pretty(&state.live.current().config.raw) {
            Ok(s) => respond(StatusCode::OK, "application/json", s + "\n"),
            Err(e) => respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin pages: /stats, /stats?format=prometheus, /healthz, /config, POST /reload\n"
                .into(),
        ),
    }
}

/// `POST /reload`: 200 with a summary when the file's configuration is in
/// force, 400 with the reason when it was rejected (the old one stays).
async fn reload(state: &State, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::POST {
        let mut resp = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "reload with POST /reload\n".into(),
        );
        resp.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("POST"),
        );
        return resp;
    }
    match state.live.reload().await {
        Ok(summary) => respond(
            StatusCode::OK,
            "text/plain",
            format!("reloaded {summary}\n"),
        ),
        Err(why) => respond(StatusCode::BAD_REQUEST, "text/plain", format!("{why}\n")),
    }
}

/// Starts the admin listener.
pub async fn start(addr: SocketAddr, state: Arc<State>) -> io::Result<Serving> {
    Server::bind(addr)
        .serve(move |stream: TcpStream, _peer| {
            let state = state.clone();
            async move {
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move {
                        let resp = if req.uri().path() == "/reload" {
                            reload(&state, &req).await
                        } else {
                            page(&state, &req)
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(FulcrumTimer::new())
                    .serve_connection(HyperIo::new(stream), svc)
                    .await;
            }
        })
        .await
}
