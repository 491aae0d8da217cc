#[fulcrum_macros::main(workers = 0)]
async fn main() {}
