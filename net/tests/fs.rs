//! `fulcrum_net::fs` against tokio's documented behaviour: std's calls on
//! the blocking pool, and `File`'s buffering (a write completes into a
//! buffer; `flush` waits for it and reports its error).

use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use fulcrum_net::fs::{self, DirBuilder, File, OpenOptions};
use fulcrum_runtime::Builder;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

mod common;
use common::runtimes;

/// A fresh directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("fulcrum-fs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn whole_file_helpers_on_every_runtime() {
    for (name, rt) in runtimes() {
        let dir = TempDir::new(&format!("helpers-{name}"));
        rt.block_on(async {
            let p = dir.join("a.txt");
            fs::write(&p, b"alpha").await.unwrap();
            assert_eq!(fs::read(&p).await.unwrap(), b"alpha");
            assert_eq!(fs::read_to_string(&p).await.unwrap(), "alpha");
            assert_eq!(fs::metadata(&p).await.unwrap().len(), 5);
            assert!(fs::try_exists(&p).await.unwrap());
            assert!(!fs::try_exists(dir.join("missing")).await.unwrap());

            assert_eq!(fs::copy(&p, dir.join("b.txt")).await.unwrap(), 5);
            fs::rename(dir.join("b.txt"), dir.join("c.txt"))
                .await
                .unwrap();
            fs::hard_link(dir.join("c.txt"), dir.join("d.txt"))
                .await
                .unwrap();
            fs::symlink(&p, dir.join("link")).await.unwrap();
            assert_eq!(fs::read_link(dir.join("link")).await.unwrap(), p);
            assert!(fs::symlink_metadata(dir.join("link"))
                .await
                .unwrap()
                .file_type()
                .is_symlink());
            assert!(fs::metadata(dir.join("link")).await.unwrap().is_file());
            let canon = fs::canonicalize(dir.join("link")).await.unwrap();
            assert_eq!(canon, fs::canonicalize(&p).await.unwrap());

            let mut perm = fs::metadata(&p).await.unwrap().permissions();
            perm.set_readonly(true);
            fs::set_permissions(&p, perm).await.unwrap();
            assert!(fs::metadata(&p).await.unwrap().permissions().readonly());

            fs::create_dir(dir.join("sub")).await.unwrap();
            assert_eq!(
                fs::create_dir(dir.join("sub")).await.unwrap_err().kind(),
                std::io::ErrorKind::AlreadyExists
            );
            fs::create_dir_all(dir.join("sub/x/y")).await.unwrap();
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir.join("sub/z/w"))
                .await
                .unwrap();
            assert!(DirBuilder::new()
                .create(dir.join("no/parent"))
                .await
                .is_err());
            fs::remove_dir(dir.join("sub/x/y")).await.unwrap();
            fs::remove_dir_all(dir.join("sub")).await.unwrap();
            fs::remove_file(dir.join("d.txt")).await.unwrap();
            let e = fs::read(dir.join("d.txt")).await.unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{name}");
        });
    }
}

#[test]
fn read_dir_lists_every_entry() {
    let dir = TempDir::new("read_dir");
    for i in 0..70 {
        std::fs::write(dir.join(&format!("f{i:02}")), [i as u8]).unwrap();
    }
    std::fs::create_dir(dir.join("subdir")).unwrap();
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut rd = fs::read_dir(&dir.0).await.unwrap();
        let mut names = Vec::new();
        let mut dirs = 0;
        while let Some(entry) = rd.next_entry().await.unwrap() {
            assert_eq!(entry.path(), dir.0.join(entry.file_name()));
            assert!(entry.ino() > 0);
            if entry.file_type().await.unwrap().is_dir() {
                dirs += 1;
                assert!(entry.metadata().await.unwrap().is_dir());
            }
            names.push(entry.file_name().into_string().unwrap());
        }
        assert!(rd.next_entry().await.unwrap().is_none(), "stays at the end");
        names.sort();
        assert_eq!(names.len(), 71);
        assert_eq!(names[0], "f00");
        assert_eq!(dirs, 1);
        assert!(
            fs::read_dir(dir.join("f00")).await.is_err(),
            "not a directory"
        );
    });
}

#[test]
fn a_write_completes_into_the_buffer_and_flush_waits_for_it() {
    // The pool's only thread is held: the write cannot reach the file, yet
    // `write` returns (tokio's semantics); `flush` waits for it.
    let dir = TempDir::new("buffering");
    let path = dir.join("buffered");
    let rt = Builder::new_current_thread()
        .max_blocking_threads(1)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut file = File::create(&path).await.unwrap();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (held_tx, held_rx) = mpsc::channel();
        let holder = fulcrum_runtime::spawn_blocking(move || {
            held_tx.send(()).unwrap();
            release_rx.recv_timeout(Duration::from_secs(10)).is_ok()
        });
        while held_rx.try_recv().is_err() {
            fulcrum_runtime::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(file.write(b"buffered").await.unwrap(), 8);
        assert!(std::fs::read(&path).unwrap().is_empty(), "not written yet");
        release_tx.send(()).unwrap();
        file.flush().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"buffered");
        assert!(
            holder.await.unwrap(),
            "the holder was released, not timed out"
        );
    });
}

#[test]
fn a_write_error_shows_at_flush() {
    let dir = TempDir::new("write_error");
    let path = dir.join("ro");
    std::fs::write(&path, b"x").unwrap();
    let rt = Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut file = File::open(&path).await.unwrap(); // read-only
        assert_eq!(
            file.write(b"nope").await.unwrap(),
            4,
            "buffered: no error yet"
        );
        let e = file.flush().await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
        file.flush().await.unwrap();
    });
}

#[test]
fn reads_seeks_and_writes_agree_on_the_position() {
    for (name, rt) in runtimes() {
        let dir = TempDir::new(&format!("position-{name}"));
        let path = dir.join("f");
        rt.block_on(async {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .await
                .unwrap();
            file.write_all(b"hello world").await.unwrap();
            assert_eq!(file.seek(SeekFrom::Start(0)).await.unwrap(), 0);
            let mut five = [0u8; 5];
            file.read_exact(&mut five).await.unwrap();
            assert_eq!(&five, b"hello");
            // The read fetched more than it gave; the position is still 5.
            assert_eq!(file.stream_position().await.unwrap(), 5, "{name}");
            file.write_all(b"XX").await.unwrap();
            file.flush().await.unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"helloXXorld", "{name}");
            let mut rest = String::new();
            file.read_to_string(&mut rest).await.unwrap();
            assert_eq!(rest, "orld");
            assert_eq!(file.seek(SeekFrom::End(-2)).await.unwrap(), 9);
            file.set_len(4).await.unwrap();
            file.sync_all().await.unwrap();
            file.sync_data().await.unwrap();
            assert_eq!(file.metadata().await.unwrap().len(), 4);
            let mut all = String::new();
            file.seek(SeekFrom::Start(0)).await.unwrap();
            file.read_to_string(&mut all).await.unwrap();
            assert_eq!(all, "hell");
        });
    }
}

#[test]
fn std_conversions_clones_and_append() {
    let dir = TempDir::new("conversions");
    let path = dir.join("f");
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut file = File::create(&path).await.unwrap();
        file.write_all(b"one ").await.unwrap();
        let std_file = file.into_std().await;
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"one ",
            "into_std waits for the write"
        );
        let mut file = File::from_std(std_file);
        let mut clone = file.try_clone().await.unwrap();
        clone.write_all(b"two").await.unwrap();
        clone.flush().await.unwrap();
        file.write_all(b"!").await.unwrap();
        file.flush().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one two!");
        let file = file.try_into_std().expect("idle after flush");
        drop(file);

        let mut app = OpenOptions::new().append(true).open(&path).await.unwrap();
        app.write_all(b"?").await.unwrap();
        app.flush().await.unwrap();
        assert_eq!(fs::read_to_string(&path).await.unwrap(), "one two!?");
        let mut perm = app.metadata().await.unwrap().permissions();
        perm.set_readonly(true);
        app.set_permissions(perm).await.unwrap();
        assert!(std::fs::metadata(&path).unwrap().permissions().readonly());

        assert_eq!(
            File::create_new(&path).await.unwrap_err().kind(),
            std::io::ErrorKind::AlreadyExists
        );
    });
}

#[test]
fn large_files_cross_the_buffer_size() {
    let dir = TempDir::new("large");
    let path = dir.join("big");
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut file = File::create(&path).await.unwrap();
        file.write_all(&data).await.unwrap();
        file.flush().await.unwrap();
        let mut back = Vec::new();
        let mut file = File::open(&path).await.unwrap();
        file.set_max_buf_size(64 * 1024);
        file.read_to_end(&mut back).await.unwrap();
        assert!(back == data, "{} bytes read back", back.len());
    });
}

#[test]
fn outside_a_runtime_is_an_error_not_a_panic() {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: std::sync::Arc<Self>) {}
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Noop));
    let mut cx = std::task::Context::from_waker(&waker);
    let fut = std::pin::pin!(fs::read("/etc/hostname"));
    match std::future::Future::poll(fut, &mut cx) {
        std::task::Poll::Ready(Err(e)) => assert!(e.to_string().contains("Fulcrum runtime"), "{e}"),
        _ => panic!("expected an error at once"),
    }
}
