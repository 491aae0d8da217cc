#[fulcrum_macros::main(scheduler = "current", workers = 2)]
async fn main() {}
