//! A raw HTTP/1.1 client on a blocking std socket: it sends exactly the
//! bytes it is given (malformed, truncated, slow) and reports what came
//! back, and whether the server closed, reset, or left it hanging.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fulcrum_test_support::status_code;

/// What the gateway did with one request.
#[derive(Debug)]
pub struct Answer {
    /// The status of the first response, 0 if there was none.
    pub status: u16,
    /// Everything read.
    pub bytes: Vec<u8>,
    /// Nothing ended the exchange (EOF or reset) within the limit.
    pub hung: bool,
    /// From the connect to the end of the exchange.
    pub elapsed: Duration,
}

impl Answer {
    /// The gateway closed (or reset) the connection without a response.
    pub fn closed_without_answer(&self) -> bool {
        self.status == 0 && !self.hung
    }

    /// The start of what was read, as text, for a failure message.
    pub fn text(&self) -> String {
        let s = String::from_utf8_lossy(&self.bytes);
        s.chars().take(300).collect()
    }
}

/// Sends `request` on a new connection (then half-closes if asked) and
/// reads until the gateway closes, resets, or `limit` passes.
pub fn exchange(addr: SocketAddr, request: &[u8], half_close: bool, limit: Duration) -> Answer {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect to the gateway");
    s.set_write_timeout(Some(limit)).unwrap();
    // The gateway may answer and close before reading everything: a failed
    // write is part of the exchange.
    let _ = s.write_all(request);
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    let mut hung = false;
    loop {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            hung = true;
            break;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                hung = true;
                break;
            }
            // Reset: the gateway closed with our bytes unread.
            Err(_) => break,
        }
    }
    Answer {
        status: status_code(&bytes).unwrap_or(0),
        bytes,
        hung,
        elapsed: start.elapsed(),
    }
}
