//! The process's standard streams, tokio's `io::{stdin, stdout, stderr}`:
//! std's handles driven on the runtime's blocking pool.
//!
//! As in tokio, each operation is a blocking call on the pool, with the
//! [`fs::File`](crate::fs::File) buffering: a write copies into the
//! stream's buffer and returns, the pool writes it out, and `flush` waits
//! for it (and flushes std's own buffer: `Stdout` is line-buffered by std).
//! **Flush before exiting**, or what is still buffered is lost.
//!
//! Reading stdin blocks a pool thread until a line (or end-of-file)
//! arrives, and that read cannot be cancelled: a runtime shut down while
//! one is in flight waits for it (tokio's caveat too). For interactive
//! input, read stdin on a thread of its own and send the lines over a
//! channel.

use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use fulcrum_runtime::JoinHandle;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::buf::Buf;
use crate::fs::{join_error, spawn_blocking};

/// The most one call hands the pool (tokio's figure).
const MAX_BUF: usize = 2 * 1024 * 1024;

/// A std handle driven on the blocking pool: the handle travels with each
/// call and comes back with its result.
#[derive(Debug)]
struct Blocking<T> {
    /// The handle, while no call has it.
    inner: Option<T>,
    state: State<T>,
    /// Written to since the last flush.
    need_flush: bool,
}

#[derive(Debug)]
enum State<T> {
    Idle(Option<Buf>),
    Busy(JoinHandle<(io::Result<usize>, Buf, T)>),
}

impl<T: Send + 'static> Blocking<T> {
    fn new(inner: T) -> Self {
        Self {
            inner: Some(inner),
            state: State::Idle(Some(Buf::default())),
            need_flush: false,
        }
    }

    /// Waits for the call in flight; returns its result, and the buffer
    /// (the file is idle afterwards).
    fn poll_busy(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let State::Busy(rx) = &mut self.state else {
            return Poll::Ready(Ok(0));
        };
        match ready!(Pin::new(rx).poll(cx)) {
            Ok((res, buf, inner)) => {
                self.state = State::Idle(Some(buf));
                self.inner = Some(inner);
                Poll::Ready(res)
            }
            Err(e) => {
                // The handle went with the call; a std handle is a
                // stand-in for the process's stream, so the stream is
                // gone for this value only.
                self.state = State::Idle(Some(Buf::default()));
                Poll::Ready(Err(join_error(e)))
            }
        }
    }

    /// Starts `f` on the pool with the buffer and the handle.
    fn start(
        &mut self,
        buf: Buf,
        f: impl FnOnce(&mut Buf, &mut T) -> io::Result<usize> + Send + 'static,
    ) -> io::Result<()> {
        let Some(mut inner) = self.inner.take() else {
            self.state = State::Idle(Some(buf));
            return Err(io::Error::other(
                "the standard stream was lost with a blocking call that did not complete",
            ));
        };
        let mut buf = buf;
        match spawn_blocking(move || {
            let res = f(&mut buf, &mut inner);
            (res, buf, inner)
        }) {
            Ok(rx) => {
                self.state = State::Busy(rx);
                Ok(())
            }
            Err(e) => {
                self.state = State::Idle(Some(Buf::default()));
                Err(e)
            }
        }
    }

    fn take_buf(&mut self) -> Buf {
        match &mut self.state {
            State::Idle(buf) => buf.take().unwrap_or_default(),
            State::Busy(_) => Buf::default(),
        }
    }
}

impl<T: Read + Send + 'static> Blocking<T> {
    fn poll_read(&mut self, cx: &mut Context<'_>, dst: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if let State::Busy(_) = self.state {
                // The read in flight: what it got (nothing at end-of-file)
                // is the answer.
                ready!(self.poll_busy(cx))?;
                let mut buf = self.take_buf();
                buf.copy_to(dst);
                self.state = State::Idle(Some(buf));
                return Poll::Ready(Ok(()));
            }
            let mut buf = self.take_buf();
            if !buf.is_empty() || dst.remaining() == 0 {
                buf.copy_to(dst);
                self.state = State::Idle(Some(buf));
                return Poll::Ready(Ok(()));
            }
            let want = dst.remaining().min(MAX_BUF);
            self.start(buf, move |buf, inner| buf.read_from(inner, want))?;
        }
    }
}

impl<T: Write + Send + 'static> Blocking<T> {
    fn poll_write(&mut self, cx: &mut Context<'_>, src: &[u8]) -> Poll<io::Result<usize>> {
        // The previous write's error, as tokio's.
        ready!(self.poll_busy(cx))?;
        let mut buf = self.take_buf();
        buf.clear();
        let n = buf.copy_from(src, MAX_BUF);
        self.start(buf, move |buf, inner| buf.write_to(inner).map(|()| n))?;
        self.need_flush = true;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_busy(cx))?;
            if !self.need_flush {
                return Poll::Ready(Ok(()));
            }
            self.need_flush = false;
            let buf = self.take_buf();
            self.start(buf, |_, inner| inner.flush().map(|()| 0))?;
        }
    }
}

macro_rules! stream {
    ($(#[$doc:meta])* $name:ident($std:ty), $ctor:ident, $make:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            inner: Blocking<$std>,
        }

        #[doc = concat!("A handle to the process's ", stringify!($ctor), "; see [`", stringify!($name), "`].")]
        pub fn $ctor() -> $name {
            $name {
                inner: Blocking::new($make),
            }
        }
    };
}

stream!(
    /// The process's standard input, tokio's `io::Stdin`: `AsyncRead`,
    /// each read a blocking call on the pool. Such a read cannot be
    /// cancelled: a runtime shut down while one is in flight waits for it
    /// (tokio's caveat too); for interactive input, read stdin on a thread
    /// of its own and send the lines over a channel.
    Stdin(io::Stdin),
    stdin,
    io::stdin()
);

stream!(
    /// The process's standard output, tokio's `io::Stdout`: `AsyncWrite`,
    /// each write completing into a buffer that the pool writes out;
    /// `flush` waits for it and flushes std's line buffer. Flush before
    /// exiting, or what is still buffered is lost.
    Stdout(io::Stdout),
    stdout,
    io::stdout()
);

stream!(
    /// The process's standard error, tokio's `io::Stderr`: as
    /// [`Stdout`].
    Stderr(io::Stderr),
    stderr,
    io::stderr()
);

impl AsyncRead for Stdin {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().inner.poll_read(cx, buf)
    }
}

macro_rules! async_write {
    ($($name:ident),*) => {$(
        impl AsyncWrite for $name {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.get_mut().inner.poll_write(cx, buf)
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.get_mut().inner.poll_flush(cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.get_mut().inner.poll_flush(cx)
            }
        }
    )*};
}

async_write!(Stdout, Stderr);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The generic wrapper over in-memory streams: buffered writes, flush,
    /// reads that keep what the caller could not take.
    #[test]
    fn blocking_wrapper_reads_and_writes() {
        let rt = fulcrum_runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut r = Blocking::new(io::Cursor::new(b"abcdefgh".to_vec()));
            let mut small = [0u8; 3];
            let mut rb = ReadBuf::new(&mut small);
            std::future::poll_fn(|cx| r.poll_read(cx, &mut rb))
                .await
                .unwrap();
            assert_eq!(rb.filled(), b"abc");
            let mut rest = [0u8; 16];
            let mut rb = ReadBuf::new(&mut rest);
            std::future::poll_fn(|cx| r.poll_read(cx, &mut rb))
                .await
                .unwrap();
            assert_eq!(rb.filled(), b"defgh", "kept from the first read");

            let mut w = Blocking::new(Vec::<u8>::new());
            let n = std::future::poll_fn(|cx| w.poll_write(cx, b"hello"))
                .await
                .unwrap();
            assert_eq!(n, 5);
            std::future::poll_fn(|cx| w.poll_flush(cx)).await.unwrap();
            assert_eq!(w.inner.as_deref(), Some(&b"hello"[..]));
        });
        // The public handles work as tokio's.
        rt.block_on(async {
            let mut out = stdout();
            out.write_all(b"").await.unwrap();
            out.flush().await.unwrap();
            let mut err = stderr();
            err.flush().await.unwrap();
            let _ = stdin().read(&mut []).await.unwrap();
        });
    }
}
