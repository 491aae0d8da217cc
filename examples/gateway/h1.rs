//! The gateway's own HTTP/1.1 proxy path (`http1 = "native"`, the
//! default): request heads parsed in place with `httparse`, headers
//! forwarded as the bytes they came in (no `HeaderMap`), the upstream
//! exchange done in the client connection's own task on a pooled
//! connection of the worker it runs on, and each response head written with
//! the first body bytes in one vectored write. Buffers live as long as the
//! client connection, so a keep-alive connection allocates nothing per
//! request.
//!
//! It serves only the requests it fully understands: HTTP/1.1, origin-form,
//! one plain `Host`, no body or one sized by a single `Content-Length`, no
//! `Transfer-Encoding`, `Upgrade` or `Expect`, to a plain-TCP cluster. At
//! the first request it does not take (an upgrade, a chunked body, a head
//! `httparse` rejects or one over the limits, a TLS cluster...) it hands the
//! connection to hyper, with the bytes it has read and not yet served
//! ([`Rewind`]), and hyper serves the rest of the connection exactly as
//! with `http1 = "hyper"`. So every refusal, every bad-input answer and
//! every smuggling defence is hyper's, unchanged; what this path adds is
//! the common case, done cheaply.
//!
//! What an upstream sends is parsed here too: a response head over
//! `max_response_head_bytes`, a malformed one, an unsolicited `101` or an
//! invalid first chunk is a 502 and the connection is closed; a chunked
//! body is decoded and re-encoded ([`Chunked`]), so the client gets one
//! framing whatever the upstream sent; a body the upstream ends early
//! closes the client connection.

use std::fmt::Write as _;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use fulcrum::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use fulcrum::net::TcpStream;
use fulcrum::sync::watch;
use fulcrum::time::Instant as Deadline;
use hyper::StatusCode;

use crate::cluster::{Cluster, Endpoint, InFlight};
use crate::proxy::{
    deadline_after, failure_text, is_idempotent_method, new_request_id, retry_after, Failure,
    Gateway, UpstreamLog, FIRST_FRAME_WAIT,
};

/// Header lines a request or response head may have: hyper's limit, so
/// that a request over it goes to hyper and gets hyper's 431.
const MAX_HEADERS: usize = 100;

/// The longest request target served here; longer ones go to hyper (which
/// answers 414 past 65,534 bytes).
const MAX_TARGET: usize = 8 * 1024;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;

/// Bytes asked of an upstream per read while a body streams.
const BODY_CHUNK: usize = 64 * 1024;

/// Below this much spare capacity a buffer grows before a read.
const MIN_SPARE: usize = 1024;

/// Makes room in `buf` for a read of up to `want` bytes, growing it only
/// when less than [`MIN_SPARE`] is left: `BytesMut::reserve` alone would
/// double a buffer holding one byte of a slow client's head.
fn make_room(buf: &mut BytesMut, want: usize) {
    if buf.capacity() - buf.len() < MIN_SPARE.min(want) {
        buf.reserve(want);
    }
}

/// Chunk extensions one chunk may carry, and trailer bytes a body may
/// end with (both are read and dropped).
const MAX_CHUNK_EXT: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

/// The limits a client connection is served with.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time for each request head (from the connection's start for the
    /// first, from its first byte for the next ones).
    pub header_timeout: Duration,
    /// Largest request head.
    pub max_header: usize,
    /// Largest request body.
    pub max_body: usize,
    /// Time for a request body, once its head is in.
    pub body_timeout: Duration,
    /// Time an idle connection is kept once the drain starts.
    pub grace: Duration,
    /// `X-Forwarded-Proto: https`.
    pub https: bool,
}

/// How a connection served here ended.
pub enum Served<T> {
    /// Closed (by either side, or after `Connection: close`).
    Closed,
    /// Handed over: hyper serves the rest of the connection, starting with
    /// these bytes, already read from it.
    Hyper(T, Bytes),
}

/// A stream with bytes already read from it put back in front: what hyper
/// reads after a hand-over.
pub struct Rewind<T> {
    pre: Bytes,
    io: T,
}

impl<T> Rewind<T> {
    /// `io`, whose next bytes are `pre`.
    pub fn new(io: T, pre: Bytes) -> Self {
        Self { pre, io }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

/// Implements `AsyncWrite` for a wrapper whose field `io` does the writing
/// (the wrapper changes only how it reads).
macro_rules! write_through {
    ($($ty:tt)*) => {
        impl<T: fulcrum::io::AsyncWrite + Unpin> fulcrum::io::AsyncWrite for $($ty)* {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.io).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.io.is_write_vectored()
            }
        }
    };
}
pub(crate) use write_through;

write_through!(Rewind<T>);

// ---------------------------------------------------------------------------
// Heads, as ranges of the buffer they were read into.

/// `part` (a slice of `buf`) as a range of `buf`; an empty range for a
/// slice that is not inside it (the empty value of a header).
fn range_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    if start <= buf.len() && part.len() <= buf.len() - start {
        start..start + part.len()
    } else {
        0..0
    }
}

/// A header line: name and value.
type Line = (Range<usize>, Range<usize>);

/// A request head served here.
#[derive(Debug, Default)]
struct ReqHead {
    /// Bytes of the head, blank line included.
    len: usize,
    method: Range<usize>,
    target: Range<usize>,
    host: Range<usize>,
    lines: Vec<Line>,
    /// The lines not forwarded (bit `i` for `lines[i]`): hop-by-hop ones,
    /// and the ones the gateway sets itself.
    skip: u128,
    /// The body's length (`Content-Length`; 0 without one).
    body: u64,
    /// Whether the request had a `Content-Length` (the gateway writes it).
    sized: bool,
    /// `Connection: close`.
    close: bool,
    /// The first `X-Forwarded-For` value, when it is text.
    forwarded_for: Option<Range<usize>>,
    /// The client's `X-Request-Id`, when it is kept (exactly one, 1–128
    /// visible characters).
    request_id: Option<Range<usize>>,
}

/// What a buffer holds.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A head this path serves.
    Complete,
    /// The start of one.
    Partial,
    /// A head for hyper: not one this path takes, or not valid.
    Hyper,
}

/// A byte a request target served here may contain: RFC 3986's `pchar`s,
/// `/`, `?` and `%` (no fragment, nothing that needs escaping).
fn target_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

/// A byte of a `Host` served here: a registered name or an address, with a
/// port.
fn host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._:[]".contains(&b)
}

/// Visible ASCII, spaces and tabs: what `HeaderValue::to_str` accepts.
fn is_text(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// A `Content-Length` value: 1 to 19 digits (so no `u64` overflow).
fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The comma-separated tokens of a header value, trimmed, empty ones left
/// out.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether `name` is one of the headers that describe one hop (RFC 9110
/// section 7.6.1); `Connection` itself is handled by the caller.
fn hop_by_hop(name: &[u8]) -> bool {
    ["keep-alive", "proxy-connection", "te", "trailer", "upgrade"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// Headers named in `Connection` (beyond `close`, `keep-alive` and
/// `upgrade`) are hop-by-hop too; at most this many are tracked, and a
/// head naming more goes to hyper (or, from an upstream, is a 502).
const MAX_NAMED: usize = 8;

/// Whether a `Connection` token names a header the request's framing,
/// routing or forwarding rests on: such requests are hyper's, whose path
/// strips the named header and then rebuilds what it needs.
fn names_a_framing_header(token: &[u8]) -> bool {
    [
        "content-length",
        "host",
        "transfer-encoding",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-request-id",
    ]
    .iter()
    .any(|h| token.eq_ignore_ascii_case(h.as_bytes()))
}

/// The headers a `Connection` value names (other than `close`,
/// `keep-alive` and `upgrade`), which are hop-by-hop too: ranges of the
/// head's buffer.
#[derive(Default)]
struct Named {
    list: [Range<usize>; MAX_NAMED],
    len: usize,
}

impl Named {
    /// Records `token`, a slice of `buf`; `false` if it is one too many.
    fn add(&mut self, buf: &[u8], token: &[u8]) -> bool {
        if self.len == MAX_NAMED {
            return false;
        }
        self.list[self.len] = range_in(buf, token);
        self.len += 1;
        true
    }

    /// Marks the lines whose names it lists as skipped.
    fn skip_in(&self, buf: &[u8], lines: &[Line], skip: &mut u128) {
        let named = &self.list[..self.len];
        if named.is_empty() {
            return;
        }
        for (i, (n, _)) in lines.iter().enumerate() {
            if named
                .iter()
                .any(|m| buf[n.clone()].eq_ignore_ascii_case(&buf[m.clone()]))
            {
                *skip |= 1 << i;
            }
        }
    }
}

/// Parses the request head at the start of `buf` into `head`.
fn parse_request(buf: &[u8], head: &mut ReqHead) -> Parsed {
    // Uninitialized: zeroing 100 header slots per parse shows in profiles.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Hyper,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Hyper;
    };
    if method == "CONNECT"
        || !target.starts_with('/')
        || target.len() > MAX_TARGET
        || !target.bytes().all(target_byte)
    {
        return Parsed::Hyper;
    }
    *head = ReqHead {
        len,
        method: range_in(buf, method.as_bytes()),
        target: range_in(buf, target.as_bytes()),
        lines: std::mem::take(&mut head.lines),
        ..ReqHead::default()
    };
    head.lines.clear();
    let (mut hosts, mut lengths, mut ids) = (0, 0, 0);
    let mut id = None;
    let mut named = Named::default();
    for (i, h) in req.headers.iter().enumerate() {
        let (name, value) = (h.name.as_bytes(), h.value);
        head.lines.push((range_in(buf, name), range_in(buf, value)));
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("host") {
            hosts += 1;
            head.host = range_in(buf, value);
        } else if is("content-length") {
            // Written by the gateway from the parsed length, so that no
            // other line (one named in `Connection`, say) can unframe it.
            head.skip |= 1 << i;
            lengths += 1;
            match content_length(value) {
                Some(n) => head.body = n,
                None => return Parsed::Hyper,
            }
        } else if is("transfer-encoding") || is("upgrade") || is("expect") {
            return Parsed::Hyper;
        } else if is("connection") {
            head.skip |= 1 << i;
            for t in tokens(value) {
                if t.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if t.eq_ignore_ascii_case(b"upgrade")
                    || names_a_framing_header(t)
                    || (!t.eq_ignore_ascii_case(b"keep-alive") && !named.add(buf, t))
                {
                    return Parsed::Hyper;
                }
            }
        } else if hop_by_hop(name) || is("x-forwarded-proto") {
            head.skip |= 1 << i;
        } else if is("x-forwarded-for") {
            head.skip |= 1 << i;
            if head.forwarded_for.is_none() && is_text(value) {
                head.forwarded_for = Some(range_in(buf, value));
            }
        } else if is("x-request-id") {
            head.skip |= 1 << i;
            ids += 1;
            id = Some(range_in(buf, value));
        }
    }
    let host = &buf[head.host.clone()];
    if hosts != 1
        || lengths > 1
        || host.is_empty()
        || !host.iter().all(|&b| host_byte(b))
        // What hyper's path refuses (`a:1:2`, an unclosed `[`) is hyper's.
        || hyper::http::uri::Authority::try_from(host).is_err()
    {
        return Parsed::Hyper;
    }
    head.sized = lengths == 1;
    if ids == 1 {
        head.request_id = id.filter(|r| {
            let v = &buf[r.clone()];
            !v.is_empty()
                && v.len() <= crate::proxy::MAX_REQUEST_ID
                && v.iter().all(u8::is_ascii_graphic)
        });
    }
    named.skip_in(buf, &head.lines, &mut head.skip);
    Parsed::Complete
}

/// How an upstream's response body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body (a `HEAD` request, 204, 304); the `Content-Length` (of the
    /// body a `GET` would get) is passed on if there was one.
    Empty(Option<u64>),
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the upstream closes (no framing header, or a coding other
    /// than `chunked` last).
    Close,
}

/// A response head from an upstream.
#[derive(Debug)]
struct RespHead {
    len: usize,
    code: u16,
    reason: Range<usize>,
    lines: Vec<Line>,
    skip: u128,
    framing: Framing,
    /// Whether the connection may carry another request afterwards.
    reusable: bool,
    has_date: bool,
}

impl Default for RespHead {
    fn default() -> Self {
        Self {
            len: 0,
            code: 0,
            reason: 0..0,
            lines: Vec::new(),
            skip: 0,
            framing: Framing::Empty(None),
            reusable: false,
            has_date: false,
        }
    }
}

/// What an upstream's bytes hold.
#[derive(Debug, PartialEq, Eq)]
enum RespParsed {
    /// A final response head.
    Complete,
    /// An informational (1xx) head of `n` bytes, to skip.
    Informational(usize),
    Partial,
    Bad(&'static str),
}

/// Parses the response head at the start of `buf` (the answer to a `HEAD`
/// request if `head_request`) into `head`.
fn parse_response(buf: &[u8], head_request: bool, head: &mut RespHead) -> RespParsed {
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut resp, buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return RespParsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return RespParsed::Bad("too many response headers")
        }
        Err(_) => return RespParsed::Bad("malformed response head"),
    };
    let (Some(version), Some(code)) = (resp.version, resp.code) else {
        return RespParsed::Bad("malformed response head");
    };
    match code {
        0..=99 => return RespParsed::Bad("a status code below 100"),
        101 => return RespParsed::Bad("a 101 the gateway did not ask for"),
        100..=199 => return RespParsed::Informational(len),
        _ => {}
    }
    *head = RespHead {
        len,
        code,
        reason: range_in(buf, resp.reason.unwrap_or("").as_bytes()),
        lines: std::mem::take(&mut head.lines),
        reusable: version == 1,
        ..RespHead::default()
    };
    head.lines.clear();
    let mut length: Option<u64> = None;
    let (mut coded, mut chunked_last) = (false, false);
    let mut named = Named::default();
    for (i, h) in resp.headers.iter().enumerate() {
        let (name, value) = (h.name.as_bytes(), h.value);
        head.lines.push((range_in(buf, name), range_in(buf, value)));
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("content-length") {
            head.skip |= 1 << i;
            match (content_length(value), length) {
                (None, _) => return RespParsed::Bad("bad Content-Length"),
                (Some(n), Some(m)) if n != m => {
                    return RespParsed::Bad("conflicting Content-Length")
                }
                (Some(n), _) => length = Some(n),
            }
        } else if is("transfer-encoding") {
            head.skip |= 1 << i;
            coded = true;
            chunked_last = tokens(value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if is("connection") {
            head.skip |= 1 << i;
            for t in tokens(value) {
                if t.eq_ignore_ascii_case(b"close") {
                    head.reusable = false;
                } else if !t.eq_ignore_ascii_case(b"keep-alive") && !named.add(buf, t) {
                    return RespParsed::Bad("too many headers named in Connection");
                }
            }
        } else if hop_by_hop(name) {
            head.skip |= 1 << i;
        } else if is("date") {
            head.has_date = true;
        }
    }
    named.skip_in(buf, &head.lines, &mut head.skip);
    head.framing = if head_request || code == 204 || code == 304 {
        Framing::Empty(length.filter(|_| code != 204))
    } else if coded {
        // RFC 9112 section 6.3: the coding wins over a length; a body
        // whose last coding is not chunked runs to the close.
        if length.is_some() || !chunked_last {
            head.reusable = false;
        }
        if chunked_last {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        head.reusable = false;
        Framing::Close
    };
    RespParsed::Complete
}

// ---------------------------------------------------------------------------
// Chunked bodies.

/// Where a chunked decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size,
    SizeSpace,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// A chunked body that is not valid (RFC 9112 section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk(&'static str);

impl std::fmt::Display for BadChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid chunked body: {}", self.0)
    }
}

impl std::error::Error for BadChunk {}

/// Decodes a chunked body as its bytes arrive: strict framing (hex sizes
/// of at most 16 digits, CRLF line ends), extensions and trailers bounded,
/// read and dropped.
#[derive(Debug)]
pub struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u32,
    ext: usize,
    trailers: usize,
    /// A whole size line has been read.
    begun: bool,
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunked {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self {
            state: ChunkState::Size,
            size: 0,
            digits: 0,
            ext: 0,
            trailers: 0,
            begun: false,
        }
    }

    /// Whether the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Whether the first chunk's size line has been read.
    pub fn has_begun(&self) -> bool {
        self.begun
    }

    /// Decodes from `input`, handing each piece of chunk data to `data`;
    /// returns the bytes consumed (all of them, unless the body ended
    /// within `input`).
    pub fn decode(&mut self, input: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, BadChunk> {
        use ChunkState::*;
        let mut at = 0;
        while at < input.len() && self.state != Done {
            if self.state == Data {
                let n = (input.len() - at).min(self.size.min(usize::MAX as u64) as usize);
                data(&input[at..at + n]);
                at += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = input[at];
            at += 1;
            self.state = match (self.state, b) {
                (Size, b) if b.is_ascii_hexdigit() => {
                    if self.digits == 16 {
                        return Err(BadChunk("chunk size too large"));
                    }
                    self.digits += 1;
                    let d = (b as char).to_digit(16).unwrap_or(0);
                    self.size = self.size << 4 | u64::from(d);
                    Size
                }
                (Size, _) if self.digits == 0 => return Err(BadChunk("no chunk size")),
                (Size | SizeSpace, b' ' | b'\t') => SizeSpace,
                (Size | SizeSpace, b';') => Ext,
                (Size | SizeSpace | Ext, b'\r') => SizeLf,
                (Ext, b'\n') => return Err(BadChunk("bare LF in a chunk extension")),
                (Ext, _) => {
                    self.ext += 1;
                    if self.ext > MAX_CHUNK_EXT {
                        return Err(BadChunk("chunk extensions too long"));
                    }
                    Ext
                }
                (SizeLf, b'\n') => {
                    self.begun = true;
                    self.ext = 0;
                    if self.size == 0 {
                        TrailerStart
                    } else {
                        Data
                    }
                }
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => {
                    self.digits = 0;
                    Size
                }
                (TrailerStart, b'\r') => EndLf,
                (TrailerStart | Trailer, b'\n') => return Err(BadChunk("bare LF in the trailers")),
                (Trailer, b'\r') => TrailerLf,
                (TrailerStart | Trailer, _) => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(BadChunk("trailers too long"));
                    }
                    Trailer
                }
                (TrailerLf, b'\n') => TrailerStart,
                (EndLf, b'\n') => Done,
                _ => return Err(BadChunk("bad chunk framing")),
            };
        }
        Ok(at)
    }
}

/// Appends `data` to `out` as one chunk.
fn put_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let _ = write!(Hex(out), "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// `fmt::Write` into a byte vector.
struct Hex<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Hex<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The last chunk, without trailers.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

// ---------------------------------------------------------------------------
// Writing.

/// Writes `a` then `b`, in vectored writes while both have bytes left.
async fn write_two<W: AsyncWrite + Unpin>(w: &mut W, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    while !a.is_empty() && !b.is_empty() {
        let n = w
            .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    w.write_all(a).await?;
    w.write_all(b).await
}

/// The `Date` value for now, formatted at most once a second per thread.
fn put_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const {
            std::cell::RefCell::new((u64::MAX, String::new()))
        };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(d.1.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// Appends `HTTP/1.1 <code> <reason>\r\n`.
fn put_status(out: &mut Vec<u8>, code: u16, reason: &[u8]) {
    let canonical = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason());
    let _ = write!(Hex(out), "HTTP/1.1 {code} ");
    match canonical {
        Some(r) => out.extend_from_slice(r.as_bytes()),
        None => out.extend_from_slice(reason),
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes an answer of the gateway's own (the text of `proxy::reply`).
async fn write_reply<W: AsyncWrite + Unpin>(
    w: &mut W,
    out: &mut Vec<u8>,
    status: StatusCode,
    text: &str,
    close: bool,
    head_request: bool,
) -> io::Result<()> {
    out.clear();
    put_status(out, status.as_u16(), b"");
    let _ = write!(
        Hex(out),
        "content-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
        text.len() + 1
    );
    put_date(out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
    }
    w.write_all(out).await?;
    w.flush().await
}

// ---------------------------------------------------------------------------
// Upstream connections.

/// An upstream connection of this path, with what it has read and not yet
/// used (empty whenever it is idle in the pool).
#[derive(Debug)]
pub struct UpConn {
    io: TcpStream,
    buf: BytesMut,
    head: RespHead,
}

impl UpConn {
    /// Whether an idle connection is still open and has sent nothing
    /// unasked (a peek that would block).
    pub fn is_usable(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Why an exchange with an upstream failed before a response head.
enum Exchange {
    /// The connection failed; `answered`: some response bytes had come.
    Io {
        err: io::Error,
        answered: bool,
    },
    Bad(&'static str),
}

/// Sends the request (`head` and `body`) on `conn` and reads the final
/// response head into `conn.head`, skipping 1xx heads. The response is read
/// while the request is still being written, as hyper does: an upstream
/// may answer early (a 413 before it reads the body, then a close), or
/// stream its answer as it reads (both socket buffers would otherwise fill
/// and stall the exchange). A response that comes before the whole request
/// went out is relayed, and the connection is not reused.
async fn exchange(
    conn: &mut UpConn,
    head: &[u8],
    body: &[u8],
    head_request: bool,
    max_head: usize,
) -> Result<(), Exchange> {
    conn.buf.clear();
    let UpConn {
        io,
        buf,
        head: resp,
    } = conn;
    let (read, written) = {
        let (mut rd, mut wr) = io.split();
        let mut write = std::pin::pin!(write_two(&mut wr, head, body));
        let mut read = std::pin::pin!(read_head(&mut rd, buf, resp, head_request, max_head));
        let mut written: Option<io::Result<()>> = None;
        loop {
            fulcrum::select! {
                w = write.as_mut(), if written.is_none() => written = Some(w),
                r = read.as_mut() => break (r, written),
            }
        }
    };
    match (read, written) {
        (Ok(()), Some(Ok(()))) => Ok(()),
        (Ok(()), _) => {
            // Answered before (or despite) the end of the request.
            resp.reusable = false;
            Ok(())
        }
        (
            Err(Exchange::Io {
                answered: false, ..
            }),
            Some(Err(err)),
        ) => Err(Exchange::Io {
            err,
            answered: false,
        }),
        (Err(e), _) => Err(e),
    }
}

/// Reads the final response head into `resp` (see [`exchange`]).
async fn read_head<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    resp: &mut RespHead,
    head_request: bool,
    max_head: usize,
) -> Result<(), Exchange> {
    let mut answered = false;
    loop {
        if !buf.is_empty() {
            match parse_response(buf, head_request, resp) {
                RespParsed::Complete if resp.len > max_head => {
                    return Err(Exchange::Bad("response head too large"))
                }
                RespParsed::Complete => return Ok(()),
                RespParsed::Informational(n) => {
                    buf.advance(n);
                    continue;
                }
                RespParsed::Bad(why) => return Err(Exchange::Bad(why)),
                RespParsed::Partial if buf.len() >= max_head => {
                    return Err(Exchange::Bad("response head too large"))
                }
                RespParsed::Partial => {}
            }
        }
        make_room(buf, READ_CHUNK);
        match rd.read_buf(buf).await {
            Ok(0) => {
                return Err(Exchange::Io {
                    err: io::ErrorKind::UnexpectedEof.into(),
                    answered,
                })
            }
            Ok(_) => answered = true,
            Err(err) => return Err(Exchange::Io { err, answered }),
        }
    }
}

/// How relaying a response went.
enum Relay {
    /// The whole body went to the client; the upstream connection may be
    /// pooled if `reusable`.
    Done { reusable: bool },
    /// Nothing was sent to the client: the attempt failed.
    Failed(Failure),
    /// The response was cut after its head went out (the upstream ended
    /// early or sent a bad chunk, or the client went away): the client's
    /// connection closes.
    Broken,
}

/// Writes the response whose head is in `conn.head` to the client, with
/// `Connection: close` if `close`.
async fn relay<W: AsyncWrite + Unpin>(
    client: &mut W,
    conn: &mut UpConn,
    out: &mut Vec<u8>,
    close: bool,
    deadline: Deadline,
) -> Relay {
    let head = &conn.head;
    out.clear();
    put_status(out, head.code, &conn.buf[head.reason.clone()]);
    for (i, (n, v)) in head.lines.iter().enumerate() {
        if head.skip & (1 << i) == 0 {
            out.extend_from_slice(&conn.buf[n.clone()]);
            out.extend_from_slice(b": ");
            out.extend_from_slice(&conn.buf[v.clone()]);
            out.extend_from_slice(b"\r\n");
        }
    }
    if !head.has_date {
        put_date(out);
    }
    let framing = head.framing;
    match framing {
        Framing::Empty(Some(n)) | Framing::Length(n) => {
            let _ = write!(Hex(out), "content-length: {n}\r\n");
        }
        Framing::Empty(None) => {}
        Framing::Chunked | Framing::Close => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n")
        }
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let mut reusable = head.reusable;
    let len = head.len;
    conn.buf.advance(len);
    let sent = match framing {
        Framing::Empty(_) => client.write_all(out).await.map(|()| conn.buf.is_empty()),
        Framing::Length(n) => relay_length(client, conn, out, n).await,
        Framing::Close => relay_until_close(client, conn, out).await,
        Framing::Chunked => {
            let mut dec = Chunked::new();
            // The first chunk's size line, before the head goes out: an
            // invalid one is a 502, as on the hyper path (which waits as
            // long for the first frame).
            let wait = (Deadline::now() + FIRST_FRAME_WAIT).min(deadline);
            loop {
                let took = dec.decode(&conn.buf, |d| put_chunk(out, d));
                match took {
                    Ok(n) => conn.buf.advance(n),
                    Err(e) => return Relay::Failed(Failure::Bad(e.0)),
                }
                if dec.has_begun() || dec.is_done() {
                    break;
                }
                make_room(&mut conn.buf, READ_CHUNK);
                match fulcrum::time::timeout_at(wait, conn.io.read_buf(&mut conn.buf)).await {
                    Ok(Ok(0)) => return Relay::Failed(Failure::Bad("response body ended early")),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        // The upstream answered: not a failure to retry.
                        tracing::debug!("a response body failed at its start: {e}");
                        return Relay::Failed(Failure::Bad("response body failed at its start"));
                    }
                    // Slow to start: the head goes now and the body streams.
                    Err(_) => break,
                }
            }
            relay_chunked(client, conn, out, dec).await
        }
    };
    match sent {
        Ok(clean) => {
            reusable &= clean;
            match client.flush().await {
                Ok(()) => Relay::Done { reusable },
                Err(_) => Relay::Broken,
            }
        }
        Err(e) => {
            tracing::debug!("relaying a response: {e}");
            Relay::Broken
        }
    }
}

/// Relays a body of `n` bytes after the head in `out`; `Ok(clean)`:
/// whether the upstream sent nothing past it.
async fn relay_length<W: AsyncWrite + Unpin>(
    client: &mut W,
    conn: &mut UpConn,
    out: &[u8],
    n: u64,
) -> io::Result<bool> {
    let first = conn.buf.len().min(n.min(usize::MAX as u64) as usize);
    write_two(client, out, &conn.buf[..first]).await?;
    conn.buf.advance(first);
    let mut left = n - first as u64;
    while left > 0 {
        make_room(&mut conn.buf, BODY_CHUNK);
        if conn.io.read_buf(&mut conn.buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the upstream ended the body early",
            ));
        }
        let k = conn.buf.len().min(left.min(usize::MAX as u64) as usize);
        client.write_all(&conn.buf[..k]).await?;
        conn.buf.advance(k);
        left -= k as u64;
    }
    Ok(conn.buf.is_empty())
}

/// Relays a chunked body (the decoder has taken what `conn.buf` held, into
/// `out` after the head) to its last chunk.
async fn relay_chunked<W: AsyncWrite + Unpin>(
    client: &mut W,
    conn: &mut UpConn,
    out: &mut Vec<u8>,
    mut dec: Chunked,
) -> io::Result<bool> {
    loop {
        if dec.is_done() {
            out.extend_from_slice(LAST_CHUNK);
        }
        client.write_all(out).await?;
        if dec.is_done() {
            return Ok(conn.buf.is_empty());
        }
        out.clear();
        make_room(&mut conn.buf, BODY_CHUNK);
        if conn.io.read_buf(&mut conn.buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the upstream ended a chunked body early",
            ));
        }
        let took = dec
            .decode(&conn.buf, |d| put_chunk(out, d))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        conn.buf.advance(took);
    }
}

/// Relays a body that runs until the upstream closes, as chunks.
async fn relay_until_close<W: AsyncWrite + Unpin>(
    client: &mut W,
    conn: &mut UpConn,
    out: &mut Vec<u8>,
) -> io::Result<bool> {
    loop {
        put_chunk(out, &conn.buf);
        conn.buf.clear();
        make_room(&mut conn.buf, BODY_CHUNK);
        let n = conn.io.read_buf(&mut conn.buf).await?;
        if n == 0 {
            out.extend_from_slice(LAST_CHUNK);
        }
        client.write_all(out).await?;
        out.clear();
        if n == 0 {
            return Ok(false);
        }
    }
}

// ---------------------------------------------------------------------------
// The client side.

/// A client connection's buffers, kept across its requests.
struct Conn {
    /// What has been read from the client and not yet served.
    buf: BytesMut,
    /// The request head being served.
    head: ReqHead,
    /// The upstream request head being built.
    up: Vec<u8>,
    /// What goes to the client next.
    out: Vec<u8>,
    /// The request's id.
    id: Vec<u8>,
    /// The client's address, as text (`X-Forwarded-For`, Maglev's key).
    ip: String,
}

/// Buffers above this capacity are given back after the request that grew
/// them, so that an idle keep-alive connection holds little memory.
const KEEP_CAPACITY: usize = 64 * 1024;

impl Conn {
    /// Drops buffers a large request or response grew.
    fn shrink(&mut self) {
        if self.buf.capacity() > KEEP_CAPACITY {
            let mut fresh = BytesMut::with_capacity(READ_CHUNK.max(self.buf.len()));
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
        }
        for v in [&mut self.up, &mut self.out] {
            if v.capacity() > KEEP_CAPACITY {
                *v = Vec::with_capacity(1024);
            }
        }
    }
}

/// What waiting for a request head ended with.
enum Next {
    Head,
    Close,
    Hyper,
}

/// Reads until `c.buf` starts with a complete request head (`Next::Head`,
/// parsed into `c.head`) or one for hyper. The head must be complete within
/// the header timeout, counted from the connection's start or from the end
/// of the previous response, so an idle keep-alive connection is closed
/// after it too (as hyper does since 1.12); once the drain starts, an idle
/// connection gets `grace` at most.
async fn next_head<T: AsyncRead + Unpin>(
    io: &mut T,
    c: &mut Conn,
    drain: &mut watch::Receiver<bool>,
    limits: &Limits,
) -> Next {
    let by_head = Deadline::now() + limits.header_timeout;
    let mut drain_by: Option<Deadline> = None;
    let mut drain_open = true;
    loop {
        if !c.buf.is_empty() {
            match parse_request(&c.buf, &mut c.head) {
                // Over the limit even though it came whole: hyper's 431.
                Parsed::Complete if c.head.len > limits.max_header => return Next::Hyper,
                Parsed::Complete => return Next::Head,
                Parsed::Hyper => return Next::Hyper,
                Parsed::Partial if c.buf.len() >= limits.max_header => return Next::Hyper,
                Parsed::Partial => {}
            }
        }
        let idle = c.buf.is_empty();
        let draining = *drain.borrow();
        if idle && draining && drain_by.is_none() {
            drain_by = Some(Deadline::now() + limits.grace);
        }
        let deadline = match drain_by.filter(|_| idle) {
            Some(d) => d.min(by_head),
            None => by_head,
        };
        let watch = idle && !draining && drain_open;
        make_room(&mut c.buf, READ_CHUNK);
        let stop = fulcrum::time::sleep_until(deadline);
        fulcrum::select! {
            r = io.read_buf(&mut c.buf) => match r {
                Ok(0) | Err(_) => return Next::Close,
                Ok(_) => {}
            },
            // A head not in time (hyper's behaviour: a close, no 408), or
            // an idle connection at the drain.
            () = stop => return Next::Close,
            r = drain.changed(), if watch => {
                if r.is_err() {
                    drain_open = false;
                }
            }
        }
    }
}

/// Serves HTTP/1.1 on a client connection until it closes or is handed to
/// hyper.
pub async fn serve<T: AsyncRead + AsyncWrite + Unpin>(
    mut io: T,
    gw: &Gateway,
    peer: SocketAddr,
    drain: &mut watch::Receiver<bool>,
    limits: Limits,
) -> Served<T> {
    let mut c = Conn {
        buf: BytesMut::with_capacity(READ_CHUNK),
        head: ReqHead::default(),
        up: Vec::with_capacity(1024),
        out: Vec::with_capacity(1024),
        id: Vec::with_capacity(64),
        ip: peer.ip().to_string(),
    };
    loop {
        match next_head(&mut io, &mut c, drain, &limits).await {
            Next::Head => {}
            Next::Close => break,
            // A copy: the buffer may have grown large, and hyper keeps
            // these bytes for the connection's life.
            Next::Hyper => return Served::Hyper(io, Bytes::copy_from_slice(&c.buf)),
        }
        match gw.serve_request(&mut io, &mut c, peer, &limits).await {
            After::Next => c.shrink(),
            After::Close => break,
            After::Hyper => return Served::Hyper(io, Bytes::copy_from_slice(&c.buf)),
        }
    }
    let _ = io.shutdown().await;
    Served::Closed
}

/// What follows a request.
enum After {
    /// The next request on the connection.
    Next,
    Close,
    /// The request is hyper's (it is still in the buffer).
    Hyper,
}

impl Gateway {
    /// Serves the request whose head is in `c.head`, and consumes it.
    async fn serve_request<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: &mut T,
        c: &mut Conn,
        peer: SocketAddr,
        limits: &Limits,
    ) -> After {
        let Conn {
            buf,
            head,
            up,
            out,
            id,
            ip: client_ip,
        } = c;
        let head_request = &buf[head.method.clone()] == b"HEAD";
        if head.body > limits.max_body as u64 {
            // hyper's path answers 413.
            return After::Hyper;
        }
        // Routing (hyper's path does the same with the same inputs): the
        // host lowercased, without its port.
        let (route, path_len) = {
            let target = std::str::from_utf8(&buf[head.target.clone()]).unwrap_or("/");
            let path = target.split_once('?').map_or(target, |(p, _)| p);
            let host = std::str::from_utf8(&buf[head.host.clone()]).unwrap_or("");
            let host = host
                .rsplit_once(':')
                .map_or(host, |(name, _)| name)
                .to_ascii_lowercase();
            (self.route(&host, path), path.len())
        };
        let cluster = route.map(|r| &self.clusters[r.cluster]);
        if cluster.is_some_and(|c| c.spec.tls.is_some()) {
            // TLS upstreams are hyper's.
            return After::Hyper;
        }
        let started = Instant::now();
        let worker = self.worker();
        self.workers[worker].requests.fetch_add(1, Relaxed);
        id.clear();
        match &head.request_id {
            Some(r) => id.extend_from_slice(&buf[r.clone()]),
            None => id.extend_from_slice(&new_request_id()),
        }
        let request_id = &id[..];
        let mut log = UpstreamLog::default();
        let mut upstream: Option<Arc<Endpoint>> = None;
        let close = head.close;

        // The body, within the body timeout.
        let total = head.len + head.body as usize;
        let body_by = Deadline::now() + limits.body_timeout;
        while buf.len() < total {
            make_room(buf, (total - buf.len()).min(BODY_CHUNK));
            match fulcrum::time::timeout_at(body_by, io.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                outcome => {
                    let (status, text) = match outcome {
                        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request body timeout"),
                        _ => (StatusCode::BAD_REQUEST, "bad request body"),
                    };
                    let _ = write_reply(io, out, status, text, true, head_request).await;
                    self.finish_native(
                        worker,
                        started,
                        peer,
                        buf,
                        head,
                        status.as_u16(),
                        request_id,
                        None,
                        &log,
                    );
                    return After::Close;
                }
            }
        }

        // `Connection: close` is decided as the answer's head is written
        // (a drain that starts while the upstream works still gets it), and
        // the connection closes after the answer exactly when it says so.
        let answer = match (route, cluster) {
            (Some(route), Some(cluster)) => {
                let key = cluster.key_by(
                    |name| {
                        head.lines
                            .iter()
                            .find(|(n, _)| buf[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
                            .map(|(_, v)| &buf[v.clone()])
                    },
                    client_ip.as_bytes(),
                );
                match cluster.pick(key) {
                    None => Err((
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no healthy upstream".into(),
                    )),
                    Some(endpoint) => {
                        // The upstream head: the path's prefix rewritten,
                        // hop-by-hop lines dropped, the forwarding headers
                        // set.
                        up.clear();
                        let target = &buf[head.target.clone()];
                        up.extend_from_slice(&buf[head.method.clone()]);
                        up.push(b' ');
                        let rest = &target[route.prefix.len()..path_len];
                        match &route.rewrite {
                            Some(rw) if rw.ends_with('/') && rest.starts_with(b"/") => {
                                up.extend_from_slice(rw.as_bytes());
                                up.extend_from_slice(&rest[1..]);
                            }
                            Some(rw) => {
                                up.extend_from_slice(rw.as_bytes());
                                up.extend_from_slice(rest);
                            }
                            None => up.extend_from_slice(&target[..path_len]),
                        }
                        up.extend_from_slice(&target[path_len..]);
                        up.extend_from_slice(b" HTTP/1.1\r\n");
                        for (i, (n, v)) in head.lines.iter().enumerate() {
                            if head.skip & (1 << i) == 0 {
                                up.extend_from_slice(&buf[n.clone()]);
                                up.extend_from_slice(b": ");
                                up.extend_from_slice(&buf[v.clone()]);
                                up.extend_from_slice(b"\r\n");
                            }
                        }
                        up.extend_from_slice(b"x-forwarded-for: ");
                        if let Some(prev) = &head.forwarded_for {
                            up.extend_from_slice(&buf[prev.clone()]);
                            up.extend_from_slice(b", ");
                        }
                        up.extend_from_slice(client_ip.as_bytes());
                        up.extend_from_slice(if limits.https {
                            b"\r\nx-forwarded-proto: https\r\nx-request-id: "
                        } else {
                            b"\r\nx-forwarded-proto: http\r\nx-request-id: "
                        });
                        up.extend_from_slice(request_id);
                        if head.sized {
                            let _ = write!(Hex(up), "\r\ncontent-length: {}", head.body);
                        }
                        up.extend_from_slice(b"\r\n\r\n");
                        let body = &buf[head.len..total];
                        let deadline =
                            deadline_after(route.timeout.unwrap_or(cluster.spec.request_timeout));
                        let method = &buf[head.method.clone()];
                        let r = self
                            .forward_native(
                                io,
                                cluster,
                                endpoint,
                                up,
                                body,
                                method,
                                head_request,
                                out,
                                close,
                                deadline,
                                &mut log,
                            )
                            .await;
                        upstream = Some(r.1);
                        r.0
                    }
                }
            }
            _ => Err((StatusCode::NOT_FOUND, "no route".into())),
        };
        let (status, after) = match answer {
            Ok((status, relayed, closed)) => (
                status,
                if relayed && !closed {
                    After::Next
                } else {
                    After::Close
                },
            ),
            Err((status, text)) => {
                let close = close || self.draining.load(Relaxed);
                let written = write_reply(io, out, status, &text, close, head_request).await;
                (
                    status.as_u16(),
                    if written.is_ok() && !close {
                        After::Next
                    } else {
                        After::Close
                    },
                )
            }
        };
        self.finish_native(
            worker,
            started,
            peer,
            buf,
            head,
            status,
            request_id,
            upstream.as_deref(),
            &log,
        );
        buf.advance(total);
        after
    }

    /// Counts and logs a request served on this path.
    #[allow(clippy::too_many_arguments)]
    fn finish_native(
        &self,
        worker: usize,
        started: Instant,
        peer: SocketAddr,
        buf: &[u8],
        head: &ReqHead,
        status: u16,
        request_id: &[u8],
        upstream: Option<&Endpoint>,
        log: &UpstreamLog,
    ) {
        let text = |r: &Range<usize>| std::str::from_utf8(&buf[r.clone()]).unwrap_or("-");
        self.finish(
            worker,
            started,
            peer,
            &text(&head.method),
            &text(&head.target),
            status,
            std::str::from_utf8(request_id).unwrap_or("-"),
            upstream,
            log,
        );
    }

    /// The attempts of one request (the first on `endpoint`, retries on
    /// others as on the hyper path), then the relay of the response.
    /// Returns the status sent, whether the whole response went out and
    /// whether it said `Connection: close` (`Ok`: `close` asked for it, or
    /// the drain had started), or the answer to make instead (nothing was
    /// sent), with the last endpoint tried.
    #[allow(clippy::too_many_arguments)]
    async fn forward_native<W: AsyncWrite + Unpin>(
        &self,
        client: &mut W,
        cluster: &Cluster,
        endpoint: Arc<Endpoint>,
        head: &[u8],
        body: &[u8],
        method: &[u8],
        head_request: bool,
        out: &mut Vec<u8>,
        close: bool,
        deadline: Deadline,
        log: &mut UpstreamLog,
    ) -> (
        Result<(u16, bool, bool), (StatusCode, String)>,
        Arc<Endpoint>,
    ) {
        let idempotent = is_idempotent_method(method);
        let mut endpoint = endpoint;
        let mut tried: Vec<Arc<Endpoint>> = Vec::new();
        let mut retry = None;
        loop {
            log.attempts += 1;
            let flight = InFlight::new(endpoint.clone());
            let failure = match self
                .attempt(
                    cluster,
                    &endpoint,
                    head,
                    body,
                    head_request,
                    idempotent,
                    deadline,
                    log,
                )
                .await
            {
                Ok(mut conn) => {
                    drop(flight);
                    let code = conn.head.code;
                    let close = close || self.draining.load(Relaxed);
                    match relay(client, &mut conn, out, close, deadline).await {
                        Relay::Done { reusable } => {
                            if reusable {
                                if conn.buf.capacity() > KEEP_CAPACITY {
                                    conn.buf = BytesMut::with_capacity(READ_CHUNK);
                                }
                                self.pool.put_native(
                                    self.worker(),
                                    endpoint.addr,
                                    conn,
                                    cluster.spec.max_idle,
                                );
                            }
                            return (Ok((code, true, close)), endpoint);
                        }
                        Relay::Broken => return (Ok((code, false, close)), endpoint),
                        Relay::Failed(f) => f,
                    }
                }
                Err(f) => {
                    drop(flight);
                    f
                }
            };
            let (at, n) = (&mut endpoint, log.attempts);
            if retry_after(
                cluster, at, &failure, idempotent, &mut tried, n, deadline, &mut retry,
            ) {
                continue;
            }
            let (status, text) = failure_text(&endpoint, failure);
            return (Err((status, text)), endpoint);
        }
    }

    /// One attempt on `endpoint`: a pooled connection (a fresh one instead
    /// if the pooled one turns out closed before answering anything, for an
    /// idempotent request) or a new one; the response head due by
    /// `deadline`.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        cluster: &Cluster,
        endpoint: &Endpoint,
        head: &[u8],
        body: &[u8],
        head_request: bool,
        idempotent: bool,
        deadline: Deadline,
        log: &mut UpstreamLog,
    ) -> Result<UpConn, Failure> {
        log.connect_micros = 0;
        log.upstream_micros = 0;
        let worker = self.worker();
        let mut pool_allowed = true;
        loop {
            let pooled = if pool_allowed {
                self.pool.take_native(worker, endpoint.addr)
            } else {
                None
            };
            let was_pooled = pooled.is_some();
            let mut conn = match pooled {
                Some(c) => c,
                None => {
                    let started = Instant::now();
                    let got = connect(cluster, endpoint, deadline).await;
                    log.connect_micros = started.elapsed().as_micros() as u64;
                    got?
                }
            };
            let sent_at = Instant::now();
            let max_head = cluster.spec.max_response_head;
            let got = fulcrum::time::timeout_at(
                deadline,
                exchange(&mut conn, head, body, head_request, max_head),
            )
            .await;
            log.upstream_micros = sent_at.elapsed().as_micros() as u64;
            return match got {
                Err(_) => Err(Failure::Timeout("response")),
                Ok(Ok(())) => Ok(conn),
                Ok(Err(Exchange::Bad(why))) => Err(Failure::Bad(why)),
                Ok(Err(Exchange::Io {
                    answered: false, ..
                })) if was_pooled && idempotent => {
                    // A keep-alive connection the upstream closed as the
                    // request went out.
                    pool_allowed = false;
                    continue;
                }
                Ok(Err(Exchange::Io { err, .. })) => Err(Failure::Io(err)),
            };
        }
    }
}

/// Opens a plain TCP connection to `endpoint`, within the cluster's
/// connect timeout and `deadline`.
async fn connect(
    cluster: &Cluster,
    endpoint: &Endpoint,
    deadline: Deadline,
) -> Result<UpConn, Failure> {
    let deadline = deadline_after(cluster.spec.connect_timeout).min(deadline);
    let io = match fulcrum::time::timeout_at(deadline, TcpStream::connect(endpoint.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Failure::Refused(e)),
        Err(_) => return Err(Failure::Timeout("connect")),
    };
    let _ = io.set_nodelay(true);
    Ok(UpConn {
        io,
        buf: BytesMut::with_capacity(READ_CHUNK),
        head: RespHead::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), BadChunk> {
        let mut dec = Chunked::new();
        let mut data = Vec::new();
        let n = dec.decode(input, |d| data.extend_from_slice(d))?;
        Ok((data, n, dec.is_done()))
    }

    #[test]
    fn chunked_bodies_decode_whole_and_split_at_every_byte() {
        let body =
            b"5;name=value\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nx-t: 1\r\ny: 2\r\n\r\nNEXT";
        let (data, n, done) = decode_all(body).unwrap();
        assert_eq!(data, b"hello world!");
        assert!(done);
        assert_eq!(&body[n..], b"NEXT");
        for cut in 0..body.len() {
            let mut dec = Chunked::new();
            let mut data = Vec::new();
            let a = dec
                .decode(&body[..cut], |d| data.extend_from_slice(d))
                .unwrap();
            assert_eq!(a, cut.min(n), "cut at {cut}");
            let b = dec
                .decode(&body[a..], |d| data.extend_from_slice(d))
                .unwrap();
            assert_eq!(data, b"hello world!", "cut at {cut}");
            assert_eq!(a + b, n, "cut at {cut}");
            assert!(dec.is_done());
        }
    }

    #[test]
    fn invalid_chunked_bodies_are_refused() {
        for bad in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"-5\r\nhello\r\n",
            b"fffffffffffffffff\r\n",
            b"5\r\nhelloXY0\r\n\r\n",
            b"5\rhello\r\n",
            b"5 5\r\nhello\r\n",
            b"5\nhello\r\n",
            b"\r\n",
            b"0\r\nbad\ntrailer\r\n\r\n",
        ] {
            assert!(
                decode_all(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Sixteen digits are allowed, a seventeenth is not.
        assert!(decode_all(b"000000000000000a\r\n").is_ok());
        let mut long_ext = b"1;".to_vec();
        long_ext.resize(MAX_CHUNK_EXT + 10, b'x');
        assert!(decode_all(&long_ext).is_err());
    }

    #[test]
    fn the_first_size_line_is_what_begins_a_body() {
        let mut dec = Chunked::new();
        dec.decode(b"5", |_| {}).unwrap();
        assert!(!dec.has_begun());
        dec.decode(b"\r\n", |_| {}).unwrap();
        assert!(dec.has_begun());
    }

    fn parse(req: &[u8]) -> (Parsed, ReqHead) {
        let mut head = ReqHead::default();
        (parse_request(req, &mut head), head)
    }

    #[test]
    fn plain_requests_are_served_here_and_the_rest_go_to_hyper() {
        let (p, h) = parse(b"GET /a?b=1 HTTP/1.1\r\nHost: x.example:8080\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\nX-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\nAccept: */*\r\n\r\nrest");
        assert_eq!(p, Parsed::Complete);
        assert!(!h.close);
        assert_eq!(h.body, 0);
        // Connection, x-hop and both X-Forwarded-For lines are not forwarded.
        let kept: Vec<usize> = (0..h.lines.len())
            .filter(|i| h.skip & (1 << i) == 0)
            .collect();
        assert_eq!(kept, vec![0, 5]);
        assert!(h.forwarded_for.is_some());
        let (p, h) = parse(
            b"POST /p HTTP/1.1\r\nhost: x\r\ncontent-length: 12\r\nconnection: close\r\n\r\n",
        );
        assert_eq!(p, Parsed::Complete);
        assert!(h.close);
        assert_eq!(h.body, 12);
        assert_eq!(parse(b"GET / HTTP/1.1\r\nhost: x\r\n").0, Parsed::Partial);

        for hyper in [
            &b"GET / HTTP/1.0\r\nhost: x\r\n\r\n"[..],
            b"GET http://x/ HTTP/1.1\r\nhost: x\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\nhost: x:443\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: a b\r\n\r\n",
            b"GET /{x} HTTP/1.1\r\nhost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: a\r\nx: b\x01c\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: a\r\nx: b\r\n c\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost : a\r\n\r\n",
        ] {
            assert_eq!(
                parse(hyper).0,
                Parsed::Hyper,
                "{:?}",
                String::from_utf8_lossy(hyper)
            );
        }
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert!(
            parse(b"GET / HTTP/1.1\r\nhost: a\r\nx-request-id: abc-1\r\n\r\n")
                .1
                .request_id
                .is_some()
        );
        for bad in [
            &b"GET / HTTP/1.1\r\nhost: a\r\nx-request-id: a\r\nx-request-id: b\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nhost: a\r\nx-request-id: a b\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: a\r\nx-request-id:\r\n\r\n",
        ] {
            let (p, h) = parse(bad);
            assert_eq!(p, Parsed::Complete);
            assert!(h.request_id.is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn response(bytes: &[u8], head_request: bool) -> (RespParsed, RespHead) {
        let mut head = RespHead::default();
        (parse_response(bytes, head_request, &mut head), head)
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let (p, h) = response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", false);
        assert_eq!(p, RespParsed::Complete);
        assert_eq!((h.framing, h.reusable), (Framing::Length(5), true));
        let (_, h) = response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!((h.framing, h.reusable), (Framing::Chunked, true));
        let (_, h) = response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
            false,
        );
        assert_eq!((h.framing, h.reusable), (Framing::Chunked, false));
        let (_, h) = response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false);
        assert_eq!((h.framing, h.reusable), (Framing::Close, false));
        let (_, h) = response(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((h.framing, h.reusable), (Framing::Close, false));
        let (_, h) = response(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n",
            false,
        );
        assert_eq!((h.framing, h.reusable), (Framing::Length(5), false));
        let (_, h) = response(b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n", false);
        assert!(!h.reusable);
        let (_, h) = response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true);
        assert_eq!(h.framing, Framing::Empty(Some(5)));
        let (_, h) = response(
            b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
            false,
        );
        assert_eq!(h.framing, Framing::Empty(None));
        let (_, h) = response(b"HTTP/1.1 304 Not Modified\r\n\r\n", false);
        assert_eq!(h.framing, Framing::Empty(None));
        assert_eq!(
            response(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", false).0,
            RespParsed::Informational(25)
        );
        for bad in [
            &b"HTTP/1.1 2x0 Nope\r\n\r\n"[..],
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        ] {
            assert!(
                matches!(response(bad, false).0, RespParsed::Bad(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
