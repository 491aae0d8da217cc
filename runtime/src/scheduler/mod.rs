//! The schedulers behind a [`Handle`](crate::Handle): multi-thread (DLB) and
//! current-thread.

pub(crate) mod current;
pub(crate) mod multi;
mod owned;
