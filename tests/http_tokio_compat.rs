//! Feature `tokio-compat`: libraries that call tokio's runtime themselves
//! work inside Fulcrum tasks. reqwest (default features off) fetches from an
//! axum app served by `fulcrum::http::serve`, from a task on a worker and
//! from the blocking pool.

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use fulcrum::net::TcpListener;

async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/hello/{name}",
        get(
            |axum::extract::Path(name): axum::extract::Path<String>| async move {
                format!("hello {name}")
            },
        ),
    );
    drop(fulcrum::spawn(async move {
        fulcrum::http::serve(listener, app).await
    }));
    addr
}

#[fulcrum::test]
async fn reqwest_fetches_inside_a_fulcrum_task() {
    let addr = start().await;
    let task = fulcrum::spawn(async move {
        let client = reqwest::Client::new();
        let resp = client
            .get(format!("http://{addr}/hello/worker"))
            .send()
            .await
            .expect("reqwest send");
        assert_eq!(resp.status().as_u16(), 200);
        resp.text().await.expect("reqwest body")
    });
    assert_eq!(task.await.unwrap(), "hello worker");
    // The test's own future (on the block_on thread) can call it too.
    let body = reqwest::get(format!("http://{addr}/hello/main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "hello main");
}

#[fulcrum::test]
async fn tokio_context_on_every_fulcrum_thread() {
    assert!(
        tokio::runtime::Handle::try_current().is_ok(),
        "block_on thread"
    );
    let on_worker = fulcrum::spawn(async { tokio::runtime::Handle::try_current().is_ok() });
    assert!(on_worker.await.unwrap(), "worker thread");
    let on_blocking =
        fulcrum::task::spawn_blocking(|| tokio::runtime::Handle::try_current().is_ok());
    assert!(on_blocking.await.unwrap(), "blocking-pool thread");
    // tokio's timers work (on tokio's driver), and so does spawning on it.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let handle = fulcrum::tokio_compat::handle().unwrap();
    assert_eq!(handle.spawn(async { 7 }).await.unwrap(), 7);
    // The one tokio thread is the compat runtime's worker.
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "tokio-compat"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("tokio-runtime")),
        "{names:?}"
    );
}
