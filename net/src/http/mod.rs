//! The web stack on Fulcrum (feature `http`): [`serve`], axum's serving
//! loop, and [`Connector`], the connector of hyper-util's `Client`.
//!
//! axum, tower, tower-http, hyper-util, tonic (without its `transport`),
//! tokio-rustls and tokio-tungstenite run on any runtime except for the
//! serving loop, the client connector and hyper's executor and timer; this
//! module provides those, so none of them reaches for tokio's runtime:
//!
//! - [`serve`] has the shape of `axum::serve` (replacing `axum::serve(` by
//!   `fulcrum::http::serve(` ports an axum service; with feature `axum` it
//!   takes a `Router` and axum's `ConnectInfo`). It serves HTTP/1.1 and
//!   HTTP/2 (prior knowledge) on one port, with
//!   [`with_graceful_shutdown`](Serve::with_graceful_shutdown), and spawns
//!   every connection through the DLB queue, so the arbiter places it.
//! - [`serve_balanced`] does the same on a [`Server`](crate::Server), with
//!   a [`Balance`](crate::Balance) mode.
//! - [`Connector`] is a `tower::Service<Uri>` whose streams implement
//!   hyper-util's `Connection`, for hyper-util's `Client`, hyper-rustls
//!   and tonic's clients; [`FulcrumExecutor`] and [`FulcrumTimer`] are the
//!   executor and timer hyper and hyper-util's builders take.
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # async fn run() -> std::io::Result<()> {
//! use axum::{routing::get, Router};
//!
//! let app = Router::new().route("/", get(|| async { "hello" }));
//! let listener = fulcrum_net::TcpListener::bind("127.0.0.1:3000").await?;
//! fulcrum_net::http::serve(listener, app).await
//! # }
//! ```

#[cfg(feature = "axum")]
mod axum;
mod connector;
mod serve;

pub use crate::hyper::{FulcrumExecutor, FulcrumTimer, HyperIo};
pub use connector::{Connecting, Connector};
pub use serve::{
    serve, serve_balanced, BoxError, IncomingStream, Listener, RunningBalanced, Serve,
    ServeBalanced, ServeFuture, Shared, WithGracefulShutdown,
};
