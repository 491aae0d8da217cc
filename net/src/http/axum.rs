//! axum's types on [`serve`](super::serve) (feature `axum`): a `Router` or
//! `MethodRouter` is its own make-service, and `ConnectInfo` reads the
//! peer's address from the [`IncomingStream`].

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::routing::MethodRouter;
use axum::Router;
use tower_service::Service;

use super::serve::{IncomingStream, Listener};
use crate::{TcpListener, UnixListener};

/// `serve(listener, router)`: each connection gets a clone of the router.
impl<L: Listener> Service<IncomingStream<'_, L>> for Router<()> {
    type Response = Router<()>;
    type Error = Infallible;
    type Future = Ready<Result<Router<()>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _conn: IncomingStream<'_, L>) -> Self::Future {
        ready(Ok(self.clone()))
    }
}

/// `serve(listener, get(handler))`: each connection gets a clone of the
/// method router.
impl<L: Listener> Service<IncomingStream<'_, L>> for MethodRouter<(), Infallible> {
    type Response = MethodRouter<(), Infallible>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _conn: IncomingStream<'_, L>) -> Self::Future {
        ready(Ok(self.clone()))
    }
}

/// `ConnectInfo<SocketAddr>` of a TCP connection (through
/// `into_make_service_with_connect_info::<SocketAddr>()`).
impl Connected<IncomingStream<'_, TcpListener>> for SocketAddr {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        *stream.remote_addr()
    }
}

/// `ConnectInfo<std::os::unix::net::SocketAddr>` of a Unix connection.
impl Connected<IncomingStream<'_, UnixListener>> for std::os::unix::net::SocketAddr {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        stream.remote_addr().clone()
    }
}
