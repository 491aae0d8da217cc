//! [`File`]: an open file, with tokio's buffering semantics.
//!
//! # State
//! A file is `Idle` (holding its buffer) or `Busy` (its buffer is with one
//! blocking-pool call: a read into it, a write out of it, or a seek). At
//! most one call is in flight, so the calls reach the OS in the order the
//! task made them.
//! - **Reads** ask the pool for up to `max_buf_size` bytes (what the
//!   caller's buffer can take), then hand them over; what the caller could
//!   not take stays in the buffer for the next read.
//! - **Writes** copy up to `max_buf_size` bytes into the buffer, start the
//!   blocking write and return at once (tokio's semantics); the next
//!   operation waits for it, and `flush` reports its error. An error found
//!   while waiting for something else (a read) is kept and returned by the
//!   next write or flush.
//! - **Seeks** and writes after a partial read first move the OS position
//!   back over the bytes read ahead into the buffer, so that the position
//!   is the one the caller sees.

use std::fmt;
use std::fs::{Metadata, Permissions};
use std::future::Future;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use fulcrum_runtime::JoinHandle;
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use super::{asyncify, join_error, spawn_blocking, OpenOptions};
use crate::buf::Buf;

/// tokio's default: the most a single read or write hands the pool.
const DEFAULT_MAX_BUF_SIZE: usize = 2 * 1024 * 1024;

/// An open file; tokio's `fs::File`. Implements tokio's `AsyncRead`,
/// `AsyncWrite` and `AsyncSeek`, each operation a call on the runtime's
/// blocking pool, with tokio's buffering (see the [`fs`](crate::fs) docs).
///
/// A write completes into the file's buffer: call
/// [`flush`](tokio::io::AsyncWriteExt::flush) (or
/// [`sync_all`](Self::sync_all)) before dropping the file to know that it
/// reached the OS, and to see its error. Dropping a file with a write in
/// flight lets the write finish on the pool.
///
/// ```
/// use fulcrum_net::fs::File;
/// use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
///
/// # let rt = fulcrum_runtime::Builder::new_current_thread().build()?;
/// # rt.block_on(async {
/// let path = std::env::temp_dir().join(format!("fulcrum-file-doc-{}", std::process::id()));
/// let mut file = File::options().read(true).write(true).create(true).truncate(true).open(&path).await?;
/// file.write_all(b"hello, world").await?;
/// file.flush().await?;
/// file.seek(std::io::SeekFrom::Start(7)).await?;
/// let mut word = String::new();
/// file.read_to_string(&mut word).await?;
/// assert_eq!(word, "world");
/// # fulcrum_net::fs::remove_file(&path).await?;
/// # Ok::<(), std::io::Error>(())
/// # })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct File {
    std: Arc<std::fs::File>,
    inner: Mutex<Inner>,
    max_buf_size: usize,
}

struct Inner {
    state: State,
    /// A write error seen while waiting for another operation, for the next
    /// write or flush.
    last_write_err: Option<io::Error>,
    /// The position the last seek reported (what `poll_complete` returns
    /// when no seek is in flight, as tokio's).
    pos: u64,
}

enum State {
    /// The buffer (`None` only while it is being handed over).
    Idle(Option<Buf>),
    Busy(JoinHandle<(Operation, Buf)>),
}

enum Operation {
    Read(io::Result<usize>),
    Write(io::Result<()>),
    Seek(io::Result<u64>),
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("fd", &self.std.as_raw_fd())
            .field("max_buf_size", &self.max_buf_size)
            .finish_non_exhaustive()
    }
}

impl File {
    /// Opens a file for reading (`std::fs::File::open`).
    ///
    /// # Errors
    /// As std's.
    pub async fn open(path: impl AsRef<Path>) -> io::Result<File> {
        let path = path.as_ref().to_owned();
        asyncify(move || std::fs::File::open(path))
            .await
            .map(File::from_std)
    }

    /// Creates (or truncates) a file for writing (`std::fs::File::create`).
    ///
    /// # Errors
    /// As std's.
    pub async fn create(path: impl AsRef<Path>) -> io::Result<File> {
        let path = path.as_ref().to_owned();
        asyncify(move || std::fs::File::create(path))
            .await
            .map(File::from_std)
    }

    /// Creates a new file for reading and writing; an error if it exists
    /// (`std::fs::File::create_new`).
    ///
    /// # Errors
    /// `AlreadyExists`, or as std's.
    pub async fn create_new(path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .await
    }

    /// An [`OpenOptions`] to open a file with.
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// Wraps a std file.
    pub fn from_std(std: std::fs::File) -> File {
        File {
            std: Arc::new(std),
            inner: Mutex::new(Inner {
                state: State::Idle(Some(Buf::default())),
                last_write_err: None,
                pos: 0,
            }),
            max_buf_size: DEFAULT_MAX_BUF_SIZE,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the operation in flight, if any (its write error is kept
    /// for the next write or flush, as when a read waits for it).
    async fn complete_inflight(&self) {
        std::future::poll_fn(|cx| self.lock().poll_complete_inflight(cx)).await
    }

    /// Flushes, then syncs data and metadata to the disk
    /// (`std::fs::File::sync_all`).
    ///
    /// # Errors
    /// The error of a write still in flight, or as std's.
    pub async fn sync_all(&self) -> io::Result<()> {
        self.flush_inflight().await?;
        let std = self.std.clone();
        asyncify(move || std.sync_all()).await
    }

    /// Flushes, then syncs the data (not necessarily the metadata) to the
    /// disk (`std::fs::File::sync_data`).
    ///
    /// # Errors
    /// The error of a write still in flight, or as std's.
    pub async fn sync_data(&self) -> io::Result<()> {
        self.flush_inflight().await?;
        let std = self.std.clone();
        asyncify(move || std.sync_data()).await
    }

    /// Waits for the operation in flight and returns a pending write error.
    async fn flush_inflight(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.lock().poll_flush(cx)).await
    }

    /// Truncates or extends the file to `size` bytes
    /// (`std::fs::File::set_len`); waits for the operation in flight first,
    /// and forgets what was read ahead (the position stays where the
    /// reader was).
    ///
    /// # Errors
    /// As std's.
    pub async fn set_len(&self, size: u64) -> io::Result<()> {
        self.complete_inflight().await;
        let back = {
            let mut inner = self.lock();
            match &mut inner.state {
                State::Idle(Some(buf)) if !buf.is_empty() => Some(buf.discard_read()),
                _ => None,
            }
        };
        let std = self.std.clone();
        asyncify(move || {
            if let Some(back) = back {
                (&*std).seek(SeekFrom::Current(back))?;
            }
            std.set_len(size)
        })
        .await
    }

    /// The file's metadata (`std::fs::File::metadata`).
    ///
    /// # Errors
    /// As std's.
    pub async fn metadata(&self) -> io::Result<Metadata> {
        let std = self.std.clone();
        asyncify(move || std.metadata()).await
    }

    /// A new `File` for the same open file (`std::fs::File::try_clone`):
    /// both share the position; each has its own buffer.
    ///
    /// # Errors
    /// As std's.
    pub async fn try_clone(&self) -> io::Result<File> {
        self.complete_inflight().await;
        let std = self.std.clone();
        asyncify(move || std.try_clone()).await.map(File::from_std)
    }

    /// Changes the file's permissions (`std::fs::File::set_permissions`).
    ///
    /// # Errors
    /// As std's.
    pub async fn set_permissions(&self, perm: Permissions) -> io::Result<()> {
        let std = self.std.clone();
        asyncify(move || std.set_permissions(perm)).await
    }

    /// The std file, once the operation in flight is done. Bytes read ahead
    /// into the buffer are lost (the std file's position is past them), as
    /// in tokio.
    pub async fn into_std(self) -> std::fs::File {
        self.complete_inflight().await;
        match Arc::try_unwrap(self.std) {
            Ok(std) => std,
            // Only blocking calls in flight share the file, and none is.
            Err(_) => unreachable!("into_std: the file is still shared with a blocking call"),
        }
    }

    /// The std file if no operation is in flight, else the file back.
    ///
    /// # Errors
    /// The `File` itself while an operation is in flight.
    pub fn try_into_std(mut self) -> Result<std::fs::File, Self> {
        let idle = matches!(self.inner.get_mut().map(|i| &i.state), Ok(State::Idle(_)));
        if !idle {
            return Err(self);
        }
        match Arc::try_unwrap(self.std) {
            Ok(std) => Ok(std),
            Err(std) => Err(File {
                std,
                inner: self.inner,
                max_buf_size: self.max_buf_size,
            }),
        }
    }

    /// Sets the most one read or write hands the blocking pool at once
    /// (default 2 MiB, tokio's).
    pub fn set_max_buf_size(&mut self, max_buf_size: usize) {
        self.max_buf_size = max_buf_size.max(1);
    }
}

impl Inner {
    /// Waits for the operation in flight; keeps a write error.
    fn poll_complete_inflight(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let State::Busy(rx) = &mut self.state else {
            return Poll::Ready(());
        };
        let (op, buf) = match ready!(Pin::new(rx).poll(cx)) {
            Ok(done) => done,
            Err(e) => {
                self.state = State::Idle(Some(Buf::default()));
                self.last_write_err.get_or_insert(join_error(e));
                return Poll::Ready(());
            }
        };
        self.state = State::Idle(Some(buf));
        match op {
            Operation::Write(Err(e)) => {
                self.last_write_err.get_or_insert(e);
            }
            Operation::Seek(Ok(pos)) => self.pos = pos,
            _ => {}
        }
        Poll::Ready(())
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_complete_inflight(cx));
        match self.last_write_err.take() {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }

    /// The buffer, for an idle file (waiting for the operation in flight
    /// first). Write errors are kept for the caller to look at.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Buf> {
        ready!(self.poll_complete_inflight(cx));
        match &mut self.state {
            State::Idle(buf) => Poll::Ready(buf.take().unwrap_or_default()),
            State::Busy(_) => unreachable!("poll_complete_inflight left the file idle"),
        }
    }
}

impl AsyncRead for File {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let max = me.max_buf_size;
        let inner = me.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        loop {
            match &mut inner.state {
                State::Idle(_) => {
                    let mut buf = ready!(inner.poll_idle(cx));
                    if !buf.is_empty() || dst.remaining() == 0 {
                        buf.copy_to(dst);
                        inner.state = State::Idle(Some(buf));
                        return Poll::Ready(Ok(()));
                    }
                    let std = me.std.clone();
                    let want = dst.remaining().min(max);
                    match spawn_blocking(move || {
                        let res = buf.read_from(&mut &*std, want);
                        (Operation::Read(res), buf)
                    }) {
                        Ok(rx) => inner.state = State::Busy(rx),
                        Err(e) => {
                            inner.state = State::Idle(Some(Buf::default()));
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                State::Busy(rx) => {
                    let (op, mut buf) = match ready!(Pin::new(rx).poll(cx)) {
                        Ok(done) => done,
                        Err(e) => {
                            inner.state = State::Idle(Some(Buf::default()));
                            return Poll::Ready(Err(join_error(e)));
                        }
                    };
                    match op {
                        Operation::Read(Ok(_)) => {
                            buf.copy_to(dst);
                            inner.state = State::Idle(Some(buf));
                            return Poll::Ready(Ok(()));
                        }
                        Operation::Read(Err(e)) => {
                            buf.clear();
                            inner.state = State::Idle(Some(buf));
                            return Poll::Ready(Err(e));
                        }
                        Operation::Write(res) => {
                            // A write that finished while we wait: keep its
                            // error for the next write or flush, then read.
                            if let Err(e) = res {
                                inner.last_write_err.get_or_insert(e);
                            }
                            inner.state = State::Idle(Some(buf));
                        }
                        Operation::Seek(res) => {
                            if let Ok(pos) = res {
                                inner.pos = pos;
                            }
                            inner.state = State::Idle(Some(buf));
                        }
                    }
                }
            }
        }
    }
}

impl AsyncWrite for File {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        src: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let max = me.max_buf_size;
        let inner = me.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        let mut buf = ready!(inner.poll_idle(cx));
        if let Some(e) = inner.last_write_err.take() {
            inner.state = State::Idle(Some(buf));
            return Poll::Ready(Err(e));
        }
        // Bytes read ahead: the OS position is past the reader's.
        let back = (!buf.is_empty()).then(|| buf.discard_read());
        let n = buf.copy_from(src, max);
        let std = me.std.clone();
        match spawn_blocking(move || {
            let res = match back {
                Some(back) => (&*std)
                    .seek(SeekFrom::Current(back))
                    .and_then(|_| buf.write_to(&mut &*std)),
                None => buf.write_to(&mut &*std),
            };
            (Operation::Write(res), buf)
        }) {
            Ok(rx) => {
                inner.state = State::Busy(rx);
                Poll::Ready(Ok(n))
            }
            Err(e) => {
                inner.state = State::Idle(Some(Buf::default()));
                Poll::Ready(Err(e))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let inner = self
            .get_mut()
            .inner
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl AsyncSeek for File {
    fn start_seek(self: Pin<&mut Self>, mut pos: SeekFrom) -> io::Result<()> {
        let me = self.get_mut();
        let inner = me.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        let mut buf = match &mut inner.state {
            State::Busy(_) => {
                return Err(io::Error::other(
                    "other file operation is pending, call poll_complete before start_seek",
                ))
            }
            State::Idle(buf) => buf.take().unwrap_or_default(),
        };
        if !buf.is_empty() {
            let back = buf.discard_read();
            if let SeekFrom::Current(offset) = &mut pos {
                *offset += back;
            }
        }
        let std = me.std.clone();
        match spawn_blocking(move || {
            let res = (&*std).seek(pos);
            (Operation::Seek(res), buf)
        }) {
            Ok(rx) => {
                inner.state = State::Busy(rx);
                Ok(())
            }
            Err(e) => {
                inner.state = State::Idle(Some(Buf::default()));
                Err(e)
            }
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let inner = self
            .get_mut()
            .inner
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            let State::Busy(rx) = &mut inner.state else {
                return Poll::Ready(Ok(inner.pos));
            };
            let (op, buf) = match ready!(Pin::new(rx).poll(cx)) {
                Ok(done) => done,
                Err(e) => {
                    inner.state = State::Idle(Some(Buf::default()));
                    return Poll::Ready(Err(join_error(e)));
                }
            };
            inner.state = State::Idle(Some(buf));
            match op {
                Operation::Seek(res) => {
                    if let Ok(pos) = &res {
                        inner.pos = *pos;
                    }
                    return Poll::Ready(res);
                }
                Operation::Write(Err(e)) => {
                    inner.last_write_err.get_or_insert(e);
                }
                Operation::Write(Ok(())) | Operation::Read(_) => {}
            }
        }
    }
}

impl From<std::fs::File> for File {
    fn from(std: std::fs::File) -> Self {
        File::from_std(std)
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.std.as_raw_fd()
    }
}

impl AsFd for File {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.std.as_fd()
    }
}
