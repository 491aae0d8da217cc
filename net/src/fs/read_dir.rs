//! [`read_dir`], [`ReadDir`] and [`DirEntry`].

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{FileType, Metadata};
use std::future::Future;
use std::io;
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use fulcrum_runtime::JoinHandle;

use super::{asyncify, join_error, spawn_blocking};

/// Entries read per blocking call (tokio's figure).
const CHUNK: usize = 32;

/// The entries of the directory `path` (`std::fs::read_dir`), as a
/// [`ReadDir`] stream.
///
/// # Errors
/// As std's: not a directory, no permission...
pub async fn read_dir(path: impl AsRef<Path>) -> io::Result<ReadDir> {
    let path = path.as_ref().to_owned();
    let std = asyncify(move || std::fs::read_dir(path)).await?;
    Ok(ReadDir(State::Idle(Some(Chunk {
        entries: VecDeque::new(),
        std,
        done: false,
    }))))
}

/// A stream of a directory's entries, from [`read_dir`]; tokio's
/// `fs::ReadDir`. Entries are read from the OS in batches of 32 on the
/// blocking pool.
#[derive(Debug)]
pub struct ReadDir(State);

#[derive(Debug)]
enum State {
    Idle(Option<Chunk>),
    Pending(JoinHandle<Chunk>),
}

#[derive(Debug)]
struct Chunk {
    entries: VecDeque<io::Result<DirEntry>>,
    std: std::fs::ReadDir,
    /// The OS stream is exhausted.
    done: bool,
}

impl Chunk {
    /// Reads the next batch (on the pool).
    fn fill(mut self) -> Chunk {
        for _ in 0..CHUNK {
            match self.std.next() {
                Some(Ok(entry)) => {
                    let file_type = entry.file_type().ok();
                    self.entries.push_back(Ok(DirEntry {
                        std: Arc::new(entry),
                        file_type,
                    }));
                }
                Some(Err(e)) => self.entries.push_back(Err(e)),
                None => {
                    self.done = true;
                    break;
                }
            }
        }
        self
    }
}

impl ReadDir {
    /// The next entry, or `None` at the end.
    ///
    /// # Errors
    /// An error reading the directory (the stream goes on after it).
    pub async fn next_entry(&mut self) -> io::Result<Option<DirEntry>> {
        std::future::poll_fn(|cx| self.poll_next_entry(cx)).await
    }

    /// Polls for the next entry; `Ready(Ok(None))` at the end.
    ///
    /// # Errors
    /// As [`next_entry`](Self::next_entry).
    pub fn poll_next_entry(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<DirEntry>>> {
        loop {
            match &mut self.0 {
                State::Idle(slot) => {
                    let Some(mut chunk) = slot.take() else {
                        return Poll::Ready(Ok(None));
                    };
                    if let Some(entry) = chunk.entries.pop_front() {
                        *slot = Some(chunk);
                        return Poll::Ready(entry.map(Some));
                    }
                    if chunk.done {
                        *slot = Some(chunk);
                        return Poll::Ready(Ok(None));
                    }
                    self.0 = State::Pending(spawn_blocking(move || chunk.fill())?);
                }
                State::Pending(rx) => match ready!(Pin::new(rx).poll(cx)) {
                    Ok(chunk) => self.0 = State::Idle(Some(chunk)),
                    Err(e) => {
                        // The OS stream went with the failed call: the end.
                        self.0 = State::Idle(None);
                        return Poll::Ready(Err(join_error(e)));
                    }
                },
            }
        }
    }
}

/// An entry of a directory, from [`ReadDir`]; tokio's `fs::DirEntry`.
#[derive(Debug, Clone)]
pub struct DirEntry {
    std: Arc<std::fs::DirEntry>,
    /// Read with the entry (from the directory itself, where the file
    /// system says it), so that `file_type` rarely needs a call.
    file_type: Option<FileType>,
}

impl DirEntry {
    /// The full path: the directory's path joined with the entry's name.
    pub fn path(&self) -> PathBuf {
        self.std.path()
    }

    /// The entry's name, without the directory.
    pub fn file_name(&self) -> OsString {
        self.std.file_name()
    }

    /// The entry's inode number.
    pub fn ino(&self) -> u64 {
        self.std.ino()
    }

    /// The entry's metadata, not following a symbolic link (the entry
    /// itself).
    ///
    /// # Errors
    /// As std's `DirEntry::metadata`.
    pub async fn metadata(&self) -> io::Result<Metadata> {
        let std = self.std.clone();
        asyncify(move || std.metadata()).await
    }

    /// The entry's file type, not following a symbolic link.
    ///
    /// # Errors
    /// As std's `DirEntry::file_type`.
    pub async fn file_type(&self) -> io::Result<FileType> {
        if let Some(ft) = self.file_type {
            return Ok(ft);
        }
        let std = self.std.clone();
        asyncify(move || std.file_type()).await
    }
}
