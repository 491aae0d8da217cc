//! Fulcrum's sockets.
//!
//! What is here: [`TcpListener`], [`TcpStream`] (with
//! tokio's [`tcp`] halves) and [`TcpSocket`]; [`UdpSocket`]; Unix sockets
//! ([`UnixListener`], [`UnixStream`], [`UnixDatagram`]); host names
//! ([`lookup_host`], [`ToSocketAddrs`]: resolved on the blocking pool);
//! files ([`fs`]), child processes ([`process`]) and the standard streams
//! ([`stdin`], [`stdout`], [`stderr`]), with tokio's APIs; signals
//! ([`signal::ctrl_c`], [`signal::unix::signal`]); and balanced serving
//! ([`Server`]) with four modes ([`Balance`]). The streams implement tokio's
//! `AsyncRead`/`AsyncWrite` (so tokio-util codecs, `copy_bidirectional` and
//! the other ecosystem helpers work on them); with the `futures-io` feature
//! they also implement `futures_io::AsyncRead`/`AsyncWrite` (closing a
//! stream shuts down its write side). With the `hyper` feature, the `hyper`
//! module runs hyper 1.x on Fulcrum; with the `http` feature, the `http`
//! module serves axum, tonic and other tower services (HTTP/1.1 and
//! HTTP/2, connections placed by the DLB queue) and connects hyper-util's
//! client (feature `axum`: axum's `Router` and `ConnectInfo` on it).
//!
//! # Where a socket lives
//! A socket registers with the reactor of the worker that first polls it,
//! not the one that created it, and moves to the reactor of any other
//! worker that polls it later (at most once a millisecond): its readiness
//! is dispatched where its task runs. An accepted stream handed to
//! [`spawn`](fulcrum_runtime::spawn) therefore belongs to the worker the
//! task lands on (in the DLB scheduler the spawn goes through the DLB
//! queue while another worker is idle, so the arbiter places the
//! connection), and follows the task if it is later handed to another.

mod buf;
pub mod fs;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "hyper")]
pub mod hyper;
mod io;
pub mod process;
mod resolve;
mod serve;
pub mod signal;
mod socket;
mod stdio;
mod sys;
pub mod tcp;
mod udp;
pub mod unix;

#[cfg(feature = "resolver-hook")]
pub use resolve::hook as resolver_hook;
pub use resolve::{lookup_host, ToSocketAddrs};
pub use serve::{Balance, Server, Serving};
pub use socket::TcpSocket;
pub use stdio::{stderr, stdin, stdout, Stderr, Stdin, Stdout};
pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixDatagram, UnixListener, UnixStream};
