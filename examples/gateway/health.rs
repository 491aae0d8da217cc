//! Active HTTP health checks: each endpoint of a cluster with a
//! `health_check` is probed every interval with `GET <path>`; a 2xx within
//! the timeout is a pass. Consecutive failures past the unhealthy threshold
//! eject the endpoint; consecutive passes past the healthy threshold put it
//! back. The probes of a cluster with `tls = true` go over TLS, verified
//! as the cluster's requests are.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fulcrum::net::hyper::HyperIo;
use fulcrum::net::TcpStream;
use fulcrum::task::JoinHandle;
use http_body_util::{BodyExt, Empty};
use hyper::Request;

use crate::cluster::{Cluster, Endpoint};

/// One probe: connect (and the TLS handshake if the cluster has TLS),
/// GET, read the whole answer.
async fn probe(cluster: &Cluster, endpoint: &Endpoint, path: &str) -> Result<bool, String> {
    let addr = endpoint.addr;
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    match &cluster.spec.tls {
        None => probe_on(HyperIo::new(stream), addr, path).await,
        Some(tls) => {
            let stream = crate::proxy::tls_handshake(cluster, tls, endpoint, stream)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            probe_on(HyperIo::new(stream), addr, path).await
        }
    }
}

/// The GET of a probe on a connected stream.
async fn probe_on<T>(io: T, addr: SocketAddr, path: &str) -> Result<bool, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let driver = fulcrum::spawn(conn);
    let req = Request::get(path)
        .header("host", addr.to_string())
        .header("user-agent", "fulcrum-gateway-health")
        .header("connection", "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let ok = resp.status().is_success();
    let _ = resp.into_body().collect().await;
    driver.abort();
    Ok(ok)
}

async fn check_loop(cluster: Arc<Cluster>, endpoint: Arc<Endpoint>) {
    let Some(hc) = cluster.spec.health.clone() else {
        return;
    };
    loop {
        let pass = match fulcrum::time::timeout(hc.timeout, probe(&cluster, &endpoint, &hc.path))
            .await
        {
            Ok(Ok(ok)) => ok,
            Ok(Err(e)) => {
                tracing::debug!(cluster = %cluster.spec.name, endpoint = %endpoint.name, "health check: {e}");
                false
            }
            Err(_) => false,
        };
        match cluster.record_check(&endpoint, pass) {
            Some(true) => {
                tracing::info!(cluster = %cluster.spec.name, endpoint = %endpoint.name, "endpoint healthy again: back in rotation")
            }
            Some(false) => {
                tracing::warn!(cluster = %cluster.spec.name, endpoint = %endpoint.name, "endpoint unhealthy: ejected")
            }
            None => {}
        }
        fulcrum::time::sleep(hc.interval.max(Duration::from_millis(1))).await;
    }
}

/// Starts the checks of every endpoint of every cluster that has one.
pub fn start(clusters: &[Arc<Cluster>]) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for c in clusters {
        if c.spec.health.is_none() {
            continue;
        }
        for e in &c.endpoints {
            tasks.push(fulcrum::spawn(check_loop(c.clone(), e.clone())));
        }
    }
    tasks
}
