//! The `http` upstream's event feed (SPEC §9 "events"): `GET {url}/v1/events` with
//! `?after=<cursor>` once a cursor is known. It returns the page body, read up to
//! `contract::events::MAX_PAGE_BYTES`, within `upstream.timeout_s`; the engine parses
//! and applies it. A 429 or any other failure is a `FetchError`: never an outcome of
//! an action, never an account signal.
//!
//! It never logs, and its reasons carry no URL (it may hold credentials).

use super::http::{describe, endpoint, parse_retry_after};
use super::{EventSource, FetchFuture};
use crate::contract::events::{FetchError, MAX_PAGE_BYTES};
use reqwest::header::RETRY_AFTER;
use std::time::Duration;

/// The path appended to `upstream.url`.
pub const EVENTS_PATH: &str = "/v1/events";

pub struct HttpEvents {
    client: reqwest::Client,
    url: reqwest::Url,
    timeout: Duration,
}

impl HttpEvents {
    /// `url` is `upstream.url`; `timeout_s` bounds the whole request.
    pub fn new(url: &str, timeout_s: u64) -> Result<HttpEvents, String> {
        let parsed = endpoint(url, EVENTS_PATH)?;
        let timeout = Duration::from_secs(timeout_s.max(1));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout / 2)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(HttpEvents {
            client,
            url: parsed,
            timeout,
        })
    }
}

impl EventSource for HttpEvents {
    fn fetch(&self, after: Option<String>) -> FetchFuture {
        let client = self.client.clone();
        let mut url = self.url.clone();
        if let Some(c) = &after {
            url.query_pairs_mut().append_pair("after", c);
        }
        let timeout = self.timeout;
        Box::pin(async move {
            // reqwest's own timeout covers the whole request; this is the safety net
            // for a body that trickles in.
            match tokio::time::timeout(timeout + Duration::from_secs(1), get(&client, url)).await {
                Ok(r) => r,
                Err(_) => Err(FetchError::Failed(format!(
                    "timeout after {} s",
                    timeout.as_secs()
                ))),
            }
        })
    }
}

async fn get(client: &reqwest::Client, url: reqwest::Url) -> Result<Vec<u8>, FetchError> {
    let failed = |e: reqwest::Error| match e.is_timeout() {
        true => FetchError::Failed(format!("timeout: {}", describe(e))),
        false => FetchError::Failed(describe(e)),
    };
    let mut response = client.get(url).send().await.map_err(failed)?;
    let status = response.status();
    if status.as_u16() == 429 {
        let retry_after_s = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        return Err(FetchError::RateLimited { retry_after_s });
    }
    if !status.is_success() {
        return Err(FetchError::Failed(format!("HTTP {}", status.as_u16())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > MAX_PAGE_BYTES {
            return Err(FetchError::Failed(format!(
                "page larger than {MAX_PAGE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
