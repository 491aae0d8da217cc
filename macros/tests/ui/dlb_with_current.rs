#[fulcrum_macros::test(scheduler = "current", dlb = "soft")]
async fn dlb_with_current() {}

fn main() {}
