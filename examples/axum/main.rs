//! An axum service on Fulcrum: the one change from an axum application on
//! tokio is `fulcrum::http::serve(` for `axum::serve(` (and
//! `#[fulcrum::main]` for `#[tokio::main]`). Each accepted connection is
//! placed on a worker by the DLB queue.
//!
//! ```sh
//! cargo run --release --example axum --features axum        # 127.0.0.1:3000
//! curl -s localhost:3000/api/items
//! curl -s -XPOST localhost:3000/api/items -H 'content-type: application/json' -d '{"name":"widget"}'
//! curl -s --compressed localhost:3000/api/items/1
//! ```
//!
//! `RUST_LOG=tower_http=debug` shows the trace layer's events; ctrl-c
//! stops accepting and lets the requests in flight finish.

mod app;

use fulcrum::net::TcpListener;

#[fulcrum::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let listener = TcpListener::bind(&addr).await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    let app = app::router(app::AppState::with_items(3));
    fulcrum::http::serve(listener, app)
        .with_graceful_shutdown(async {
            if let Err(e) = fulcrum::signal::ctrl_c().await {
                tracing::error!("ctrl-c: {e}");
                std::future::pending::<()>().await;
            }
            tracing::info!("shutting down: finishing the requests in flight");
        })
        .await
}
