// tokio's spellings: the same mistake, reported under the name used.
#[fulcrum_macros::main(flavor = "current_thread", worker_threads = 4)]
async fn main() {}
