//! What the web-stack tests (tests/http_*.rs) share: a hyper-util client on
//! Fulcrum's connector, and the check that no tokio runtime ever ran.

#![allow(dead_code)] // each test binary uses its own part

use std::sync::{Mutex, Once};

use bytes::Bytes;
use fulcrum::http::{Connector, FulcrumExecutor, FulcrumTimer};
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request, StatusCode, Version};
use hyper_util::client::legacy::Client;

/// hyper-util's legacy client on Fulcrum: HTTP/1.1, or HTTP/2 with prior
/// knowledge (h2c) when `h2`.
pub fn client(h2: bool) -> Client<Connector, Full<Bytes>> {
    watch_panics();
    Client::builder(FulcrumExecutor::new())
        .timer(FulcrumTimer::new())
        .pool_timer(FulcrumTimer::new())
        .http2_only(h2)
        .build(Connector::new())
}

/// What came back: status, headers, the whole body and the HTTP version.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: Version,
}

impl Got {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

/// Sends `req` and reads the whole response.
pub async fn send(client: &Client<Connector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Got {
    let resp = client.request(req).await.expect("request");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
        version: parts.version,
    }
}

/// GET `uri`.
pub async fn get(client: &Client<Connector, Full<Bytes>>, uri: &str) -> Got {
    let req = Request::get(uri).body(Full::default()).expect("request");
    send(client, req).await
}

static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records every panic message of the process (and still prints them), so
/// the tests can tell that none came from tokio's missing runtime.
pub fn watch_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            PANICS.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
            previous(info);
        }));
    });
}

/// The names of this process's threads.
pub fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

/// Without `tokio-compat`: no thread of a tokio runtime exists (tokio names
/// its workers `tokio-runtime-worker`, 15 bytes of which reach `comm`), and
/// nothing panicked with tokio's "no reactor running".
pub fn assert_no_tokio_runtime() {
    if cfg!(feature = "tokio-compat") {
        return;
    }
    let names = thread_names();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("tokio-runtime") || n == "tokio-compat"),
        "a tokio runtime thread runs: {names:?}"
    );
    let panics = PANICS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        !panics
            .iter()
            .any(|p| p.contains("no reactor running") || p.contains("Tokio")),
        "tokio's runtime was called: {panics:?}"
    );
}
