#[fulcrum_macros::main(workers = "4")]
async fn main() {}
