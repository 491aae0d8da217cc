#[fulcrum_macros::main(flavor = "current_thread", scheduler = "dlb")]
async fn main() {}
