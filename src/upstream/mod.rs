//! The upstream: the only code that talks to the integration service. `http` and
//! `exec` speak SPEC §9; `sim` is the built-in simulated LinkedIn.

pub mod exec;
pub mod http;
pub mod sim;

use crate::contract::{Outcome, SendRequest};
use std::future::Future;
use std::pin::Pin;

pub type SendFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One attempt of one action. Implementations classify every answer into an
/// [`Outcome`] and never panic; a failure to even try is `NotDelivered`.
pub trait Upstream: Send + Sync {
    fn send(&self, req: SendRequest) -> SendFuture;
}
