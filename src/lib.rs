//! Fulcrum: a multi-threaded async runtime whose workers hand work to each
//! other only through a load-balancing queue with the semantics of Intel
//! DLB's unordered queues, never by stealing.
//!
//! This facade re-exports the member crates. Today it carries the queue
//! itself, [`dlb`]; the runtime, sockets and macros land in their own crates
//! and are re-exported here as they do.

pub use fulcrum_dlb as dlb;
