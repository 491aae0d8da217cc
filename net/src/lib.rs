//! Fulcrum's sockets.
//!
//! **Status: in progress.** Today: [`TcpListener`] and [`TcpStream`], which
//! implement tokio's `AsyncRead`/`AsyncWrite` (so tokio-util codecs,
//! `copy_bidirectional` and the other ecosystem helpers work on them), and
//! balanced serving ([`Server`]) with four modes ([`Balance`]). Still to
//! come: `TcpSocket`, UDP and Unix sockets, and the hyper integration.
//!
//! # Where a socket lives
//! A socket registers with the reactor of the worker that first polls it,
//! not the one that created it. An accepted stream handed to
//! [`spawn`](fulcrum_runtime::spawn) therefore belongs to the worker the
//! task lands on: in the DLB scheduler the spawn goes through the DLB queue
//! while another worker is idle, so the arbiter places the connection.

mod serve;
mod tcp;

pub use serve::{Balance, Server, Serving};
pub use tcp::{
    OwnedReadHalf, OwnedReadHalfRef, OwnedWriteHalf, OwnedWriteHalfRef, TcpListener, TcpStream,
};
