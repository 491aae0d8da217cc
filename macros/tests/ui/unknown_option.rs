#[fulcrum_macros::main(workers = 2, threads = 4)]
async fn main() {}
