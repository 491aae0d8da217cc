#[fulcrum_macros::main(scheduler = dlb)]
async fn main() {}
