//! The `http` upstream (SPEC §9): one `POST {url}/v1/actions` per attempt, keyed by an
//! `Idempotency-Key`, and every answer — or the lack of one — classified into an
//! [`Outcome`].
//!
//! The line it must never blur is between "certainly not delivered" (the connection
//! never opened, so a retry is safe) and "may have been delivered" (the request may
//! have been written, so a retry could send twice). Only a connect error is the
//! former; everything that fails after the connection opened is the latter.
//!
//! It never logs, and the reasons it returns carry neither the proxy nor the payload.

use super::{SendFuture, Upstream};
use crate::contract::upstream::{idempotency_key_problem, redact_proxy};
use crate::contract::{Outcome, SendRequest};
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;
use std::time::Duration;

/// The path appended to `upstream.url`.
pub const ACTIONS_PATH: &str = "/v1/actions";
/// The most of an error response's body that is read; the bodies SPEC §9 defines are
/// a few dozen bytes, so anything longer is not one of them.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest hold a `Retry-After` can ask for (30 days). A longer one is clamped so
/// that the engine's time arithmetic cannot overflow; it is still far past "today".
pub const MAX_RETRY_AFTER_S: u64 = 30 * 24 * 3600;
/// The longest error code from a 4xx body that is quoted in a reason.
const MAX_ERROR_CODE_CHARS: usize = 64;
/// How deep an error's chain of causes is followed when describing it.
const MAX_ERROR_CHAIN: usize = 8;
/// Slack on top of reqwest's own whole-request timeout for the outer safety net,
/// which only fires if reqwest's timer somehow did not.
const GUARD_SLACK: Duration = Duration::from_secs(1);

/// The `http` upstream. Cheap to share: the client is reference-counted inside.
pub struct Http {
    client: reqwest::Client,
    /// The full endpoint, `{upstream.url}/v1/actions`.
    url: reqwest::Url,
    timeout: Duration,
}

impl Http {
    /// `url` is `upstream.url` (the endpoint path is appended); `timeout_s` bounds the
    /// whole request, from connecting to the last byte of the answer.
    pub fn new(url: &str, timeout_s: u64) -> Result<Http, String> {
        if timeout_s == 0 {
            return Err("upstream.timeout_s must be at least 1".into());
        }
        let parsed = endpoint(url, ACTIONS_PATH)?;
        let timeout = Duration::from_secs(timeout_s);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // Half the budget for connecting: a connection that never opens is then
            // reported as a connect error (certainly not delivered, safe to retry)
            // rather than as the whole-request timeout (may have been delivered).
            .connect_timeout(timeout / 2)
            // A redirect is an answer we do not understand, not a place to re-send to.
            .redirect(reqwest::redirect::Policy::none())
            // A fresh connection per attempt. Attempts are minutes apart (pacing), so a
            // pooled connection would mostly be one the server is about to close, and
            // a request written into a closing connection comes back "may have been
            // delivered" — an `unknown` action for nothing.
            .pool_max_idle_per_host(0)
            // The upstream is reached directly; the account's proxy is in the body for
            // the upstream to use, and an HTTP_PROXY in the environment must not divert
            // (and see) every request.
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Http {
            client,
            url: parsed,
            timeout,
        })
    }
}

/// `{upstream.url}{path}`, checked: a URL, http or https. Errors show the URL with its
/// credentials redacted.
pub(super) fn endpoint(url: &str, path: &str) -> Result<reqwest::Url, String> {
    let shown = redact_proxy(url);
    let endpoint = format!("{}{path}", url.trim_end_matches('/'));
    let parsed =
        reqwest::Url::parse(&endpoint).map_err(|e| format!("upstream.url `{shown}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "upstream.url `{shown}` must be an http:// or https:// URL"
        ));
    }
    Ok(parsed)
}

impl Upstream for Http {
    fn send(&self, req: SendRequest) -> SendFuture {
        let client = self.client.clone();
        let url = self.url.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let outcome = match tokio::time::timeout(timeout + GUARD_SLACK, attempt(&client, url, &req)).await
            {
                Ok(outcome) => outcome,
                Err(_) => maybe(format!("timeout after {} s", timeout.as_secs())),
            };
            // Every reason is redacted and bounded before it can reach a log or the store.
            outcome.redacted(req.proxy.as_deref())
        })
    }
}

async fn attempt(client: &reqwest::Client, url: reqwest::Url, req: &SendRequest) -> Outcome {
    // Job files only accept ids that pass this rule; an id stored before the rule
    // existed is refused here rather than sent as a key the server would read as
    // another one (it trims white space), which could be answered 409 and so
    // recorded `sent` without going out.
    if let Some(problem) = idempotency_key_problem(&req.id) {
        return Outcome::Invalid {
            reason: format!("action id {problem}"),
        };
    }
    let Ok(key) = HeaderValue::from_str(&req.id) else {
        return Outcome::Invalid {
            reason: "the action id cannot be sent as an Idempotency-Key header".into(),
        };
    };
    let sent = client
        .post(url)
        .header("Idempotency-Key", key)
        .json(req)
        .send()
        .await;
    match sent {
        Ok(response) => classify_response(response, Utc::now()).await,
        Err(e) => classify_error(e),
    }
}

/// Classifies an answer that arrived (SPEC §9). `now` dates a `Retry-After` that is an
/// HTTP date; it is the real wall clock, like the server's.
async fn classify_response(response: reqwest::Response, now: DateTime<Utc>) -> Outcome {
    let status = response.status();
    if status.is_success() || status == StatusCode::CONFLICT {
        return Outcome::Sent;
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after_s = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now));
        return Outcome::RateLimited { retry_after_s };
    }
    if status.is_client_error() {
        return match read_bounded(response).await {
            Ok(body) => classify_client_error(status, &body),
            // The upstream refused the request either way; what it said is lost.
            Err(e) => Outcome::Invalid {
                reason: format!("http {} (body unreadable: {})", status.as_u16(), describe(e)),
            },
        };
    }
    if status.is_redirection() {
        return Outcome::Invalid {
            reason: format!("http {} (redirects are not followed)", status.as_u16()),
        };
    }
    // 5xx, and anything outside the standard classes: the upstream may have acted.
    maybe(format!("http {}", status.as_u16()))
}

/// A 4xx other than 409 and 429: the error code in the body decides (SPEC §9).
fn classify_client_error(status: StatusCode, body: &[u8]) -> Outcome {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let code = serde_json::from_slice::<ErrorBody>(body).ok().map(|b| b.error);
    match code.as_deref() {
        Some("out_of_network") => Outcome::OutOfNetwork,
        Some("restricted") => Outcome::Restricted,
        Some("no_credits") => Outcome::NoCredits,
        // Quote an unknown code only when it looks like a code, so a body that
        // echoes the request (payload, proxy) never reaches a reason or a log.
        Some(other) if is_error_code(other) => Outcome::Invalid {
            reason: format!("http {}: {other}", status.as_u16()),
        },
        _ => Outcome::Invalid {
            reason: format!("http {}", status.as_u16()),
        },
    }
}

fn is_error_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ERROR_CODE_CHARS
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Reads at most [`MAX_BODY_BYTES`] of a body; the rest is never read.
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_BODY_BYTES {
            break;
        }
    }
    Ok(body)
}

/// Classifies a failure without an answer.
fn classify_error(e: reqwest::Error) -> Outcome {
    if e.is_connect() {
        // Refused, unreachable, DNS failure, TLS handshake failure, or the connect
        // timeout: the request was never written (a connect timeout is also
        // `is_timeout`, which is why this test comes first).
        return Outcome::NotDelivered { reason: describe(e) };
    }
    if e.is_builder() {
        // The request could not even be built; trying again builds the same thing.
        return Outcome::Invalid { reason: describe(e) };
    }
    if e.is_timeout() {
        return maybe(format!("timeout: {}", describe(e)));
    }
    // Reset, closed mid-answer, malformed answer: the request may have gone out.
    maybe(describe(e))
}

/// A reason from an error and its causes, without the URL (it can hold credentials).
pub(super) fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut last = text.clone();
    let mut source = std::error::Error::source(&e);
    for _ in 0..MAX_ERROR_CHAIN {
        let Some(cause) = source else { break };
        let piece = cause.to_string();
        if piece != last {
            text.push_str(": ");
            text.push_str(&piece);
            last = piece;
        }
        source = cause.source();
    }
    text
}

fn maybe(reason: String) -> Outcome {
    Outcome::MaybeDelivered { reason }
}

/// A `Retry-After` value as seconds from `now`: delta-seconds, or an HTTP date
/// (RFC 2822 form, which covers the IMF-fixdate of RFC 9110). A date in the past,
/// or a value that is neither, gives `None` — no hint, since the hint can only
/// lengthen a hold. Clamped to [`MAX_RETRY_AFTER_S`].
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: only overflow can fail the parse, and that is "very long".
        return Some(value.parse::<u64>().unwrap_or(u64::MAX).min(MAX_RETRY_AFTER_S));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    let ahead_ms = (at.with_timezone(&Utc) - now).num_milliseconds();
    if ahead_ms <= 0 {
        return None;
    }
    let ahead_s = u64::try_from(ahead_ms).ok()?.div_ceil(1000);
    Some(ahead_s.min(MAX_RETRY_AFTER_S))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Kind;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    /// The most of a request the loopback server reads.
    const MAX_REQUEST_BYTES: usize = 1024 * 1024;

    /// What the loopback server does once it has read the request.
    enum Reply {
        /// Writes these bytes and closes.
        Bytes(Vec<u8>),
        /// Holds the connection open and never answers.
        Silent,
        /// Closes without a word.
        Close,
    }

    /// What the loopback server saw.
    struct Seen {
        head: String,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<String> {
            self.head.lines().find_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        }
    }

    fn response(status: &str, extra_headers: &str, body: &str) -> Reply {
        Reply::Bytes(
            format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }

    /// A one-connection HTTP server on 127.0.0.1:0; returns its base URL and what it saw.
    async fn serve(reply: Reply) -> (String, oneshot::Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                let n = conn.read(&mut chunk).await.expect("read");
                assert!(n > 0 && buf.len() < MAX_REQUEST_BYTES, "request ended early");
                buf.extend_from_slice(&chunk[..n]);
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let mut seen = Seen {
                head,
                body: Vec::new(),
            };
            let len: usize = seen
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while buf.len() < head_end + len {
                let n = conn.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "body ended early");
                buf.extend_from_slice(&chunk[..n]);
            }
            seen.body = buf[head_end..head_end + len].to_vec();
            let _ = tx.send(seen);
            match reply {
                Reply::Bytes(bytes) => {
                    let _ = conn.write_all(&bytes).await;
                    let _ = conn.shutdown().await;
                }
                Reply::Silent => tokio::time::sleep(Duration::from_secs(30)).await,
                Reply::Close => drop(conn),
            }
        });
        (url, rx)
    }

    fn request() -> SendRequest {
        SendRequest {
            id: "q4/jane/invite".into(),
            account: "acct-1".into(),
            proxy: Some("http://user:secret@203.0.113.7:3128".into()),
            campaign: "q4-founders".into(),
            kind: Kind::Invite,
            prospect: "https://www.linkedin.com/in/jane".into(),
            payload: serde_json::json!({"note": "Hi Jane"}),
            attempt: 1,
        }
    }

    async fn send_to(url: &str, timeout_s: u64) -> Outcome {
        Http::new(url, timeout_s).expect("client").send(request()).await
    }

    /// The decision table helper: one canned reply, one expected outcome.
    async fn check(reply: Reply, expected: Outcome) {
        let (url, _seen) = serve(reply).await;
        assert_eq!(send_to(&url, 5).await, expected);
    }

    fn invalid(reason: &str) -> Outcome {
        Outcome::Invalid {
            reason: reason.into(),
        }
    }

    #[tokio::test]
    async fn the_request_carries_the_key_and_all_eight_fields() {
        let (url, seen) = serve(response("200 OK", "", "{}")).await;
        assert_eq!(send_to(&url, 5).await, Outcome::Sent);
        let seen = seen.await.expect("the server saw a request");
        assert!(
            seen.head.starts_with("POST /v1/actions HTTP/1.1\r\n"),
            "{}",
            seen.head
        );
        assert_eq!(seen.header("idempotency-key").as_deref(), Some("q4/jane/invite"));
        assert_eq!(seen.header("content-type").as_deref(), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&seen.body).expect("json body");
        let mut keys: Vec<&str> = body
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["account", "attempt", "campaign", "id", "kind", "payload", "prospect", "proxy"]
        );
        assert_eq!(
            serde_json::from_value::<SendRequest>(body).expect("round trip"),
            request()
        );
    }

    #[tokio::test]
    async fn a_trailing_slash_on_the_url_is_fine() {
        let (url, seen) = serve(response("201 Created", "", "")).await;
        assert_eq!(send_to(&format!("{url}/"), 5).await, Outcome::Sent);
        assert!(seen.await.expect("seen").head.starts_with("POST /v1/actions "));
    }

    #[tokio::test]
    async fn success_and_conflict_are_sent() {
        check(response("200 OK", "", "{}"), Outcome::Sent).await;
        check(response("204 No Content", "", ""), Outcome::Sent).await;
        check(
            response("409 Conflict", "", "{\"error\":\"duplicate\"}"),
            Outcome::Sent,
        )
        .await;
    }

    #[tokio::test]
    async fn rate_limits_carry_retry_after() {
        check(
            response("429 Too Many Requests", "", ""),
            Outcome::RateLimited { retry_after_s: None },
        )
        .await;
        check(
            response(
                "429 Too Many Requests",
                "Retry-After: 120\r\n",
                "{\"error\":\"restricted\"}",
            ),
            Outcome::RateLimited {
                retry_after_s: Some(120),
            },
        )
        .await;
        let at = (Utc::now() + chrono::Duration::seconds(3600)).format("%a, %d %b %Y %H:%M:%S GMT");
        let (url, _seen) = serve(response(
            "429 Too Many Requests",
            &format!("Retry-After: {at}\r\n"),
            "",
        ))
        .await;
        match send_to(&url, 5).await {
            Outcome::RateLimited {
                retry_after_s: Some(s),
            } => assert!((3590..=3601).contains(&s), "{s}"),
            other => panic!("expected a rate limit with a hint, got {other:?}"),
        }
        check(
            response(
                "429 Too Many Requests",
                "Retry-After: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
                "",
            ),
            Outcome::RateLimited { retry_after_s: None },
        )
        .await;
    }

    #[tokio::test]
    async fn client_errors_are_classified_by_their_body() {
        check(
            response("400 Bad Request", "", "{\"error\":\"out_of_network\"}"),
            Outcome::OutOfNetwork,
        )
        .await;
        check(
            response("403 Forbidden", "", "{\"error\":\"restricted\"}"),
            Outcome::Restricted,
        )
        .await;
        check(
            response("402 Payment Required", "", "{\"error\":\"no_credits\",\"x\":1}"),
            Outcome::NoCredits,
        )
        .await;
        check(
            response("400 Bad Request", "", "{\"error\":\"bad_prospect\"}"),
            invalid("http 400: bad_prospect"),
        )
        .await;
        check(
            response("400 Bad Request", "", "{\"error\":\"has spaces: secret\"}"),
            invalid("http 400"),
        )
        .await;
        check(response("400 Bad Request", "", "not json"), invalid("http 400")).await;
        check(response("404 Not Found", "", ""), invalid("http 404")).await;
    }

    #[tokio::test]
    async fn an_oversized_error_body_is_cut_and_not_understood() {
        let pad = " ".repeat(MAX_BODY_BYTES);
        let body = format!("{pad}{{\"error\":\"restricted\"}}");
        check(response("400 Bad Request", "", &body), invalid("http 400")).await;
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed() {
        check(
            response("302 Found", "Location: http://127.0.0.1:9/elsewhere\r\n", ""),
            invalid("http 302 (redirects are not followed)"),
        )
        .await;
    }

    #[tokio::test]
    async fn server_errors_may_have_been_delivered() {
        check(
            response("503 Service Unavailable", "", ""),
            Outcome::MaybeDelivered {
                reason: "http 503".into(),
            },
        )
        .await;
        check(
            response("500 Internal Server Error", "", "{\"error\":\"restricted\"}"),
            Outcome::MaybeDelivered {
                reason: "http 500".into(),
            },
        )
        .await;
    }

    #[tokio::test]
    async fn a_silent_server_times_out_as_maybe_delivered() {
        let (url, _seen) = serve(Reply::Silent).await;
        let started = Instant::now();
        let outcome = send_to(&url, 1).await;
        assert!(matches!(outcome, Outcome::MaybeDelivered { .. }), "{outcome:?}");
        // The server stays silent for 30 s: well under that is the 1 s timeout, with
        // room for a loaded machine.
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_cut_answer_may_have_been_delivered() {
        for reply in [Reply::Close, Reply::Bytes(b"HTTP/1.1 20".to_vec())] {
            let (url, _seen) = serve(reply).await;
            let outcome = send_to(&url, 5).await;
            assert!(matches!(outcome, Outcome::MaybeDelivered { .. }), "{outcome:?}");
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_not_delivered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let outcome = send_to(&url, 5).await;
        assert!(matches!(outcome, Outcome::NotDelivered { .. }), "{outcome:?}");
    }

    #[tokio::test]
    async fn reasons_never_carry_credentials() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let outcome = send_to(&format!("http://user:hunter2@{addr}"), 5).await;
        assert!(!format!("{outcome:?}").contains("hunter2"), "{outcome:?}");
        assert!(!format!("{outcome:?}").contains("secret"), "{outcome:?}");
    }

    #[tokio::test]
    async fn ids_a_server_would_read_as_another_key_are_refused() {
        for id in [" dup-key", "dup-key ", "jos\u{e9}"] {
            let (url, _seen) = serve(response("200 OK", "", "{}")).await;
            let mut req = request();
            req.id = id.into();
            let outcome = Http::new(&url, 5).expect("client").send(req).await;
            assert!(matches!(outcome, Outcome::Invalid { .. }), "{id:?}: {outcome:?}");
        }
    }

    #[test]
    fn bad_urls_are_refused_at_construction() {
        assert!(Http::new("ftp://example.com", 5).is_err());
        assert!(Http::new("not a url", 5).is_err());
        assert!(Http::new("http://127.0.0.1:8700", 0).is_err());
        let err = Http::new("gopher://user:hunter2@host", 5).err().expect("refused");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn retry_after_values() {
        let now = DateTime::parse_from_rfc3339("2026-03-06T08:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let check = |v: &str, expected: Option<u64>| assert_eq!(parse_retry_after(v, now), expected, "{v}");
        check("120", Some(120));
        check(" 7 ", Some(7));
        check("0", Some(0));
        check("99999999999999999999999", Some(MAX_RETRY_AFTER_S));
        check("-5", None);
        check("1.5", None);
        check("", None);
        check("soon", None);
        check("Fri, 06 Mar 2026 08:01:00 GMT", Some(60));
        check("Fri, 06 Mar 2026 09:00:00 +0100", None);
        check("Fri, 06 Mar 2026 07:59:59 GMT", None);
        check("Fri, 06 Mar 2026 08:00:00 GMT", None);
        check("Sat, 06 Mar 2027 08:00:00 GMT", Some(MAX_RETRY_AFTER_S));
    }
}
