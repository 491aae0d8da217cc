#[fulcrum_macros::test]
async fn with_args(n: u32) {
    assert_eq!(n, 1);
}

fn main() {}
