#[fulcrum_macros::test(dlb = "hardware")]
async fn bad_dlb() {}

fn main() {}
