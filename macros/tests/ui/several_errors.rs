// Every mistake is reported, not only the first.
#[fulcrum_macros::main(workers = 0, dlb = "fast")]
fn main() {}
