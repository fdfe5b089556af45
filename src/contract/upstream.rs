//! What is sent upstream and what can come back (SPEC §5, §9).

use crate::policy::Kind;
use serde::{Deserialize, Serialize};

/// The JSON body of one attempt (SPEC §9). `proxy` is carried, never logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendRequest {
    pub id: String,
    pub account: String,
    pub proxy: Option<String>,
    pub campaign: String,
    pub kind: Kind,
    pub prospect: String,
    pub payload: serde_json::Value,
    pub attempt: u32,
}

/// The outcome of one attempt, after the protocol's answer is classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// `retry_after_s`: a `Retry-After` hint, which can only lengthen the hold.
    RateLimited {
        retry_after_s: Option<u64>,
    },
    OutOfNetwork,
    Restricted,
    NoCredits,
    Invalid {
        reason: String,
    },
    /// Certainly not delivered (connection refused, DNS failure).
    NotDelivered {
        reason: String,
    },
    /// May have been delivered (timeout, 5xx, reset, exec failure).
    MaybeDelivered {
        reason: String,
    },
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::RateLimited { .. } => "rate_limited",
            Outcome::OutOfNetwork => "out_of_network",
            Outcome::Restricted => "restricted",
            Outcome::NoCredits => "no_credits",
            Outcome::Invalid { .. } => "invalid",
            Outcome::NotDelivered { .. } => "not_delivered",
            Outcome::MaybeDelivered { .. } => "maybe_delivered",
        }
    }
}

/// Removes credentials from a proxy URL for display: `http://user:secret@host:3128`
/// becomes `http://***@host:3128`.
pub fn redact_proxy(proxy: &str) -> String {
    let (scheme, rest) = match proxy.find("://") {
        Some(i) => (&proxy[..i + 3], &proxy[i + 3..]),
        None => ("", proxy),
    };
    match rest.rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => proxy.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_lose_their_credentials() {
        assert_eq!(
            redact_proxy("http://user:secret@203.0.113.7:3128"),
            "http://***@203.0.113.7:3128"
        );
        assert_eq!(redact_proxy("socks5://a:b@c@h:1"), "socks5://***@h:1");
        assert_eq!(redact_proxy("http://203.0.113.7:3128"), "http://203.0.113.7:3128");
        assert_eq!(redact_proxy("u:p@h"), "***@h");
    }
}
