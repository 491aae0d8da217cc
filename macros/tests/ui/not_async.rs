#[fulcrum_macros::main]
fn main() {}
