//! `#[fulcrum::main]`-style entry points and `#[fulcrum::test]` options,
//! through the facade: each option must select the scheduler and worker
//! count it names (checked through `Handle::metrics()`).

use fulcrum::runtime::Handle;

fn workers() -> usize {
    Handle::current().metrics().num_workers()
}

#[fulcrum::test]
async fn default_test_runtime_is_dlb_with_two_workers() {
    assert_eq!(workers(), 2);
    assert!(!Handle::current().is_current_thread());
    // Spawned from the test body (a remote thread): through the DLB queue.
    let hs: Vec<_> = (0..50).map(|i| fulcrum::spawn(async move { i })).collect();
    for h in hs {
        h.await.unwrap();
    }
    let m = Handle::current().metrics();
    let received: u64 = m.workers.iter().map(|w| w.dlb_received).sum();
    assert!(received >= 50, "{m:?}");
}

#[fulcrum::test(workers = 3)]
async fn workers_option() {
    assert_eq!(workers(), 3);
}

#[fulcrum::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokio_spelling_ports_by_renaming_the_path() {
    assert_eq!(workers(), 4);
}

#[fulcrum::test(scheduler = "current")]
async fn current_thread_option() {
    assert!(Handle::current().is_current_thread());
    assert_eq!(workers(), 1);
}

#[fulcrum::test(flavor = "current_thread")]
async fn tokio_current_thread_spelling() {
    assert!(Handle::current().is_current_thread());
}

#[fulcrum::test(scheduler = "stealing", workers = 2)]
async fn stealing_option() {
    let hs: Vec<_> = (0..50).map(|i| fulcrum::spawn(async move { i })).collect();
    for h in hs {
        h.await.unwrap();
    }
    let m = Handle::current().metrics();
    let dlb: u64 = m.workers.iter().map(|w| w.dlb_sent + w.dlb_received).sum();
    assert_eq!(
        dlb, 0,
        "the stealing scheduler must not use the DLB queue: {m:?}"
    );
}

#[fulcrum::test(dlb = "soft")]
async fn software_backend_option() {
    fulcrum::time::sleep(std::time::Duration::from_millis(1)).await;
    assert_eq!(workers(), 2);
}

#[fulcrum::test]
async fn tests_may_return_results() -> Result<(), std::io::Error> {
    fulcrum::time::timeout(std::time::Duration::from_secs(1), async {})
        .await
        .map_err(std::io::Error::from)
}
