//! Operator control of the running worker (SPEC §8, P9): a Unix socket that speaks one
//! line of JSON each way per connection, and the operations it serves.
//!
//! - `protocol`: the requests and replies, and the bounded, pure request parser.
//! - `ops`: what each request does to a store; the engine thread runs it between
//!   ticks (it owns the store), and the CLI runs the same code on a store it opened
//!   itself when no worker runs, so both print the same thing.
//! - `server`: the listener on the worker's tokio runtime. Bounded: request size,
//!   concurrent clients, a timeout per request; a request reaches the engine through
//!   the engine's bounded inbox, so a slow or hostile client never stalls it.
//! - `client`: the CLI side.
//!
//! This module never touches sled (only `store` does) and never decides policy.

pub mod client;
pub mod ops;
pub mod protocol;
pub mod server;

pub use protocol::{parse_request, Reply, Request, LIST_PAGE};
