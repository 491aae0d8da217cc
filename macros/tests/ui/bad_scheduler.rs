#[fulcrum_macros::main(scheduler = "work_stealing")]
async fn main() {}
