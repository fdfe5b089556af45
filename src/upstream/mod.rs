//! The upstream: the only code that talks to the integration service. `http` and
//! `exec` speak SPEC §9; `sim` is the built-in simulated LinkedIn.

pub mod events;
pub mod exec;
pub mod http;
pub mod sim;

use crate::contract::events::FetchError;
use crate::contract::{Outcome, SendRequest};
use std::future::Future;
use std::pin::Pin;

pub type SendFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One attempt of one action. Implementations classify every answer into an
/// [`Outcome`] and never panic; a failure to even try is `NotDelivered`.
pub trait Upstream: Send + Sync {
    fn send(&self, req: SendRequest) -> SendFuture;
}

pub type FetchFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, FetchError>> + Send>>;

/// The upstream's event feed (SPEC §9 "events"): one page body after a cursor (none for
/// the first page). Implementations bound the body and the time, and never panic.
pub trait EventSource: Send + Sync {
    fn fetch(&self, after: Option<String>) -> FetchFuture;
}
