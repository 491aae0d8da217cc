//! Compile-fail tests of the attributes' error messages: each file under
//! `tests/ui/` must fail to compile with exactly the `.stderr` beside it.
//!
//! The files use `fulcrum_macros::{main, test}` directly (the facade depends
//! on this crate, so it cannot be a dependency here) and fail during macro
//! expansion, so that no runtime path needs to resolve.
//!
//! After changing a message: `TRYBUILD=overwrite cargo test -p
//! fulcrum-macros --test compile_fail`, then read the new `.stderr` files.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
