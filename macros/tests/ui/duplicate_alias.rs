#[fulcrum_macros::main(workers = 2, worker_threads = 4)]
async fn main() {}
