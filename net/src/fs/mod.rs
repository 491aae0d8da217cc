//! Files and directories, tokio's `fs` module: every call runs the
//! corresponding `std::fs` call on the runtime's blocking pool
//! ([`spawn_blocking`](fulcrum_runtime::spawn_blocking)), as tokio's does,
//! so a slow disk never stalls a worker.
//!
//! [`File`] follows tokio's buffering: a write completes into the file's
//! buffer and returns at once, the blocking pool writes it out, and
//! [`flush`](tokio::io::AsyncWriteExt::flush) waits for that (and reports
//! its error). **Call `flush` (or `sync_all`) before dropping a `File` you
//! wrote to**, or a write error goes unseen.
//!
//! Outside a Fulcrum runtime these calls return an error (tokio's panic):
//! there is no blocking pool to run them on.
//!
//! ```
//! # let rt = fulcrum_runtime::Builder::new_current_thread().build()?;
//! # rt.block_on(async {
//! let dir = std::env::temp_dir().join(format!("fulcrum-fs-doc-{}", std::process::id()));
//! fulcrum_net::fs::create_dir_all(&dir).await?;
//! let path = dir.join("hello.txt");
//! fulcrum_net::fs::write(&path, "hello").await?;
//! assert_eq!(fulcrum_net::fs::read_to_string(&path).await?, "hello");
//! fulcrum_net::fs::remove_dir_all(&dir).await?;
//! # Ok::<(), std::io::Error>(())
//! # })?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod dir_builder;
mod file;
mod open_options;
mod read_dir;

use std::io;
use std::path::{Path, PathBuf};

use fulcrum_runtime::{Handle, JoinHandle};

pub use dir_builder::DirBuilder;
pub use file::File;
pub use open_options::OpenOptions;
pub use read_dir::{read_dir, DirEntry, ReadDir};

/// Starts `f` on the current runtime's blocking pool.
pub(crate) fn spawn_blocking<F, T>(f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match Handle::try_current() {
        Ok(handle) => Ok(handle.spawn_blocking(f)),
        Err(_) => Err(io::Error::other(
            "file system calls need a Fulcrum runtime: they run on its blocking pool",
        )),
    }
}

/// The error of a blocking call that did not complete (its runtime shut
/// down, or it panicked).
pub(crate) fn join_error(e: fulcrum_runtime::JoinError) -> io::Error {
    io::Error::other(format!("background task failed: {e}"))
}

/// Runs `f` on the blocking pool and waits for it.
pub(crate) async fn asyncify<F, T>(f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match spawn_blocking(f)?.await {
        Ok(res) => res,
        Err(e) => Err(join_error(e)),
    }
}

/// The canonical, absolute form of `path` (`std::fs::canonicalize`).
///
/// # Errors
/// As std's: the path does not exist, a component is not a directory...
pub async fn canonicalize(path: impl AsRef<Path>) -> io::Result<PathBuf> {
    let path = path.as_ref().to_owned();
    asyncify(move || std::fs::canonicalize(path)).await
}

/// Copies the contents and permissions of `from` to `to`; returns the bytes
/// copied (`std::fs::copy`).
///
/// # Errors
/// As std's.
pub async fn copy(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<u64> {
    let (from, to) = (from.as_ref().to_owned(), to.as_ref().to_owned());
    asyncify(move || std::fs::copy(from, to)).await
}

/// Creates a directory (`std::fs::create_dir`).
///
/// # Errors
/// As std's: it exists already, the parent is missing...
pub async fn create_dir(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref().to_owned();
    asyncify(move || std::fs::create_dir(path)).await
}

/// Creates a directory and any missing parents (`std::fs::create_dir_all`).
///
/// # Errors
/// As std's.
pub async fn create_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref().to_owned();
    asyncify(move || std::fs::create_dir_all(path)).await
}

/// Creates a hard link `dst` to `src` (`std::fs::hard_link`).
///
/// # Errors
/// As std's.
pub async fn hard_link(src: impl AsRef<Path>, dst: impl AsRef<Path>) -> io::Result<()> {
    let (src, dst) = (src.as_ref().to_owned(), dst.as_ref().to_owned());
    asyncify(move || std::fs::hard_link(src, dst)).await
}

/// The metadata of `path`, following symbolic links (`std::fs::metadata`).
///
/// # Errors
/// As std's.
pub async fn metadata(path: impl AsRef<Path>) -> io::Result<std::fs::Metadata> {
    let path = path.as_ref().to_owned();
    asyncify(move || std::fs::metadata(path)).await
}

/// The whole contents of a file (`std::fs::read`), in one blocking call.
///
/// # Errors
/// As std's.
pub async fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let path = path.as_ref().to_owned();
    asyncify(move || std::fs::read(path)).await
}

/// Where a symbolic link points (`std::fs::read_link`).
///
/// # Errors
/// As std's: not a link...
pub async fn read_link(path: impl AsRef<Path>) -> io::Result<PathBuf> {
    let path = path.as_ref().to_owned();
    asyncify(move || std::fs::read_link(path)).await
}

/// The whole contents of a UTF-8 file (`std::fs::read_to_string`).
///
/// # Errors
/// As std's (`InvalidData` if it is not UTF-8).
pub async fn read_to_string(path: impl AsRef<Path>) -> io::Result<String> {
    let path = path.as_ref().to_owned();
    asyncify(move || std::fs::read_to_string(path)).await
}

/// Removes an empty directory (`std::fs::remove_dir`).
///
/// # Errors
/// As std's.
pub async fn remove_dir(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref().to_owned();
    asyncify(move || std::fs::remove_dir(path)).await
}

/// Removes a directory and everything in it (`std::fs::remove_dir_all`).
///
/// # Errors
/// As std's.
pub async fn remove_dir_all(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref().to_owned();
    asyncify(move || std::fs::remove_dir_all(path)).await
}

/// Removes a file (`std::fs::remove_file`).
///
/// # Errors
/// As std's.
pub async fn remove_file(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref().to_owned();
    asyncify(move || std::fs::remove_file(path)).await
}

/// Renames a file or directory, replacing `to` if it exists
/// (`std::fs::rename`).
///
/// # Errors
/// As std's.
pub async fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
    let (from, to) = (from.as_ref().to_owned(), to.as_ref().to_owned());
    asyncify(move || std::fs::rename(from, to)).await
}

/// Changes the permissions of `path` (`std::fs::set_permissions`).
///
/// # Errors
/// As std's.
pub async fn set_permissions(path: impl AsRef<Path>, perm: std::fs::Permissions) -> io::Result<()> {
    let path = path.as_ref().to_owned();
    asyncify(move || std::fs::set_permissions(path, perm)).await
}

/// Creates a symbolic link `dst` pointing at `src`
/// (`std::os::unix::fs::symlink`).
///
/// # Errors
/// As std's.
pub async fn symlink(src: impl AsRef<Path>, dst: impl AsRef<Path>) -> io::Result<()> {
    let (src, dst) = (src.as_ref().to_owned(), dst.as_ref().to_owned());
    asyncify(move || std::os::unix::fs::symlink(src, dst)).await
}

/// The metadata of `path` itself, not following a symbolic link
/// (`std::fs::symlink_metadata`).
///
/// # Errors
/// As std's.
pub async fn symlink_metadata(path: impl AsRef<Path>) -> io::Result<std::fs::Metadata> {
    let path = path.as_ref().to_owned();
    asyncify(move || std::fs::symlink_metadata(path)).await
}

/// Whether `path` exists; an error only if that cannot be told (no
/// permission to look, say), unlike `Path::exists` (`std::fs::exists`).
///
/// # Errors
/// As std's `Path::try_exists`.
pub async fn try_exists(path: impl AsRef<Path>) -> io::Result<bool> {
    let path = path.as_ref().to_owned();
    asyncify(move || path.try_exists()).await
}

/// Writes `contents` to a file, creating it or truncating it
/// (`std::fs::write`).
///
/// # Errors
/// As std's.
pub async fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
    let path = path.as_ref().to_owned();
    let contents = contents.as_ref().to_owned();
    asyncify(move || std::fs::write(path, contents)).await
}
