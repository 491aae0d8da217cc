//! Timers: a per-worker hierarchical timing wheel.
//!
//! Each worker owns one timing wheel (`wheel::Wheel`), counts time in
//! milliseconds since it started, advances the wheel after every wake-up, and
//! sleeps in its `Poll` no longer than until the wheel's next deadline.

// Nothing in the runtime uses the wheel yet; the workers will (see
// DESIGN.md, "fulcrum-runtime"). Remove this allowance then.
#[allow(dead_code)]
pub(crate) mod wheel;
