//! Helpers shared by the net crate's integration tests.

use fulcrum_dlb::Backend;
use fulcrum_runtime::{spawn, Builder, Runtime, Scheduler};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// One runtime of each scheduler: DLB with 2 and 4 workers, work stealing
/// with 2, and current-thread. The suites run against all of them.
#[allow(dead_code)] // not every test file needs it
pub fn runtimes() -> Vec<(&'static str, Runtime)> {
    let multi = |workers, scheduler| {
        Builder::new_multi_thread()
            .worker_threads(workers)
            .scheduler(scheduler)
            .dlb_backend(Backend::Software)
            .build()
            .expect("build runtime")
    };
    vec![
        ("dlb-2", multi(2, Scheduler::Dlb)),
        ("dlb-4", multi(4, Scheduler::Dlb)),
        ("stealing-2", multi(2, Scheduler::WorkStealing)),
        (
            "current",
            Builder::new_current_thread()
                .build()
                .expect("build runtime"),
        ),
    ]
}

/// Asserts that every socket of `rt` was deregistered.
#[allow(dead_code)] // not every test file needs it
pub fn assert_no_sockets_left(name: &str, rt: &Runtime) {
    let m = rt.handle().metrics();
    let live: u64 = m.workers.iter().map(|w| w.io_resources).sum();
    assert_eq!(live, 0, "{name}: sockets left registered: {m:?}");
}

/// Writes `data` to `w` in writes of 1 to `max_write` bytes, their sizes
/// drawn from the PRNG seeded with `seed`, then shuts `w` down.
#[allow(dead_code)] // not every test file needs it
pub async fn write_in_random_sizes(
    w: &mut (impl AsyncWrite + Unpin),
    data: &[u8],
    seed: u64,
    max_write: usize,
) {
    let mut rng = fulcrum_test_support::rng(seed);
    let mut at = 0;
    while at < data.len() {
        let n = rng.usize(1..=max_write).min(data.len() - at);
        w.write_all(&data[at..at + n]).await.unwrap();
        at += n;
    }
    w.shutdown().await.unwrap();
}

/// Sends `data` to an echo server through `w`, from a task of its own and
/// in random-sized writes ([`write_in_random_sizes`]), and returns what
/// `r` reads back up to EOF.
#[allow(dead_code)] // not every test file needs it
pub async fn echo_in_random_writes<R, W>(
    mut r: R,
    mut w: W,
    data: Vec<u8>,
    seed: u64,
    max_write: usize,
) -> Vec<u8>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut back = Vec::with_capacity(data.len());
    let writer = spawn(async move { write_in_random_sizes(&mut w, &data, seed, max_write).await });
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    back
}
