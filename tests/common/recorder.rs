//! An HTTP/1.1 upstream that records exactly the requests a proxy in
//! front of it forwards, and flags any whose framing is ambiguous.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the upstream read it.
#[derive(Clone, Debug)]
pub struct Forwarded {
    /// The request line, without its CRLF.
    pub request_line: String,
    /// The header lines: names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, decoded from its framing.
    pub body: Vec<u8>,
}

/// A raw HTTP/1.1 upstream on a std listener: parses each request strictly
/// (one framing, exact lengths), records it and answers 200 `ok`; anything
/// off (both CL and TE, a TE other than `chunked`, several CL lines, a body
/// shorter or longer than declared, bytes that are not a request) goes to
/// `problems`.
pub struct Recorder {
    /// Where it listens.
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Forwarded>>>,
    problems: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    /// Listens on a loopback port and serves each connection on a thread
    /// of its own.
    pub fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the recorder");
        let addr = l.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let problems = Arc::new(Mutex::new(Vec::new()));
        let (g, p) = (got.clone(), problems.clone());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let (g, p) = (g.clone(), p.clone());
                std::thread::spawn(move || {
                    if let Err(e) = serve_recorded(s, &g) {
                        p.lock().unwrap().push(e);
                    }
                });
            }
        });
        Recorder {
            addr,
            got,
            problems,
        }
    }

    /// The requests recorded since the last call.
    pub fn take(&self) -> Vec<Forwarded> {
        std::mem::take(&mut *self.got.lock().unwrap())
    }

    /// What it found off so far, one line each.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }

    /// Panics, listing them, if it found anything off.
    pub fn assert_no_problem(&self) {
        let p = self.problems.lock().unwrap();
        assert!(p.is_empty(), "the upstream saw ambiguous framing: {p:#?}");
    }
}

fn read_line(r: &mut impl BufRead) -> Result<Option<Vec<u8>>, String> {
    let mut line = Vec::new();
    match r.read_until(b'\n', &mut line) {
        Ok(0) => Ok(None),
        Ok(_) if line.ends_with(b"\r\n") => {
            line.truncate(line.len() - 2);
            Ok(Some(line))
        }
        Ok(_) => Err(format!(
            "a line without CRLF: {:?}",
            String::from_utf8_lossy(&line)
        )),
        Err(e) => Err(format!("reading: {e}")),
    }
}

fn read_exact(r: &mut impl Read, n: usize) -> Result<Vec<u8>, String> {
    let mut body = vec![0; n];
    r.read_exact(&mut body)
        .map_err(|e| format!("a body shorter than its framing ({n} bytes): {e}"))?;
    Ok(body)
}

fn serve_recorded(s: TcpStream, got: &Mutex<Vec<Forwarded>>) -> Result<(), String> {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        // The head; EOF between requests is the gateway closing a pooled
        // connection, EOF inside one is a problem.
        let Some(request_line) = read_line(&mut r)? else {
            return Ok(());
        };
        let request_line = String::from_utf8_lossy(&request_line).into_owned();
        let parts: Vec<&str> = request_line.split(' ').collect();
        if parts.len() != 3 || !parts[2].starts_with("HTTP/1.") {
            return Err(format!("not a request line: {request_line:?}"));
        }
        let mut headers = Vec::new();
        loop {
            let line = read_line(&mut r)?.ok_or("EOF inside a head")?;
            if line.is_empty() {
                break;
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| format!("a header line without a colon: {line:?}"))?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let values = |name: &str| -> Vec<String> {
            headers
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .collect()
        };
        let cl = values("content-length");
        let te = values("transfer-encoding");
        let what = format!("{request_line}: content-length {cl:?}, transfer-encoding {te:?}");
        if !cl.is_empty() && !te.is_empty() {
            return Err(format!("both framings: {what}"));
        }
        if cl.len() > 1 {
            return Err(format!("several Content-Length lines: {what}"));
        }
        let body = if !te.is_empty() {
            if te != ["chunked"] {
                return Err(format!("a transfer coding other than chunked: {what}"));
            }
            let mut body = Vec::new();
            loop {
                let line = read_line(&mut r)?.ok_or("EOF in a chunk size")?;
                let line = String::from_utf8_lossy(&line).into_owned();
                let size = usize::from_str_radix(&line, 16)
                    .map_err(|_| format!("a bad chunk size {line:?}: {what}"))?;
                if size == 0 {
                    let trailer = read_line(&mut r)?.ok_or("EOF after the last chunk")?;
                    if !trailer.is_empty() {
                        return Err(format!("trailers forwarded: {what}"));
                    }
                    break;
                }
                body.extend(read_exact(&mut r, size)?);
                if read_line(&mut r)? != Some(Vec::new()) {
                    return Err(format!("no CRLF after chunk data: {what}"));
                }
            }
            body
        } else if let Some(n) = cl.first() {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("a bad Content-Length: {what}"));
            }
            read_exact(&mut r, n.parse().map_err(|_| format!("huge: {what}"))?)?
        } else {
            Vec::new()
        };
        got.lock().unwrap().push(Forwarded {
            request_line,
            headers,
            body,
        });
        w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .map_err(|e| format!("answering: {e}"))?;
    }
}
