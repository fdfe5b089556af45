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

    /// The same outcome with its reason passed through [`redact_reason`]: every reason
    /// that comes from outside (an exec program's `detail`, an HTTP error) goes through
    /// here before it reaches a log line or the store.
    pub fn redacted(self, proxy: Option<&str>) -> Outcome {
        let clean = |reason: String| redact_reason(&reason, proxy);
        match self {
            Outcome::Invalid { reason } => Outcome::Invalid {
                reason: clean(reason),
            },
            Outcome::NotDelivered { reason } => Outcome::NotDelivered {
                reason: clean(reason),
            },
            Outcome::MaybeDelivered { reason } => Outcome::MaybeDelivered {
                reason: clean(reason),
            },
            other => other,
        }
    }
}

/// The longest reason from outside that is kept, in characters.
pub const MAX_REASON_CHARS: usize = 200;

/// Makes a reason that came from outside safe to log and to store: the account's own
/// proxy (if given) and any URL credentials (`scheme://user:pass@host`, and the
/// schemeless `user:pass@host`) become `***`, control characters become spaces, and the
/// result is at most [`MAX_REASON_CHARS`] characters (cut on a character boundary).
///
/// It errs on the side of hiding: within a run of non-blank characters, everything
/// between `://` (or the run's start) and the run's last `@` goes, so a password
/// holding `/`, `@` or `:` goes with it. Credentials are removed before the cut, so a
/// cut can never leave half a password.
pub fn redact_reason(reason: &str, proxy: Option<&str>) -> String {
    let mut text = std::borrow::Cow::Borrowed(reason);
    if let Some(proxy) = proxy.filter(|p| !p.trim().is_empty()) {
        if text.contains(proxy) {
            // A proxy without `user:pass@` (`host:port:user:pass`, say) is hidden whole.
            let shown = if proxy.contains('@') {
                redact_proxy(proxy)
            } else {
                "***".to_string()
            };
            text = text.replace(proxy, &shown).into();
        }
        if let Some(password) = proxy_password(proxy).filter(|p| text.contains(p)) {
            text = text.replace(password, "***").into();
        }
    }
    let mut out = String::with_capacity(text.len().min(4 * MAX_REASON_CHARS));
    let mut rest: &str = &text;
    while !rest.is_empty() {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        out.push_str(&redact_run(&rest[..end]));
        let blank_end = rest[end..]
            .find(|c: char| !c.is_whitespace())
            .map_or(rest.len(), |j| end + j);
        out.push_str(&rest[end..blank_end]);
        rest = &rest[blank_end..];
    }
    let single_line: String = out
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let bounded: String = single_line.trim().chars().take(MAX_REASON_CHARS).collect();
    bounded.trim_end().to_string()
}

/// One run of characters without white space, with its URL credentials replaced (see
/// [`redact_reason`]).
fn redact_run(run: &str) -> std::borrow::Cow<'_, str> {
    if !run.contains('@') {
        return run.into();
    }
    // Right to left: each `@` ends a possible `user:password@`, and what precedes a
    // `scheme://` may itself hold one (`:pw@://x@`), so the head is looked at again.
    // A loop, not recursion: a hostile reason must not grow the stack.
    let mut pieces: Vec<String> = Vec::new();
    let mut head = run;
    while let Some(at) = head.rfind('@') {
        let before = &head[..at];
        match before.find("://") {
            // No scheme holds a `:`: a head like `:pw` (`:pw://@`, `u:pw://x@`) is
            // a password that happens to contain `://`, so all of it is hidden.
            Some(i) if head[..i].contains(':') && !head[..i].contains('@') => {
                pieces.push(format!("***{}", &head[at..]));
                head = "";
            }
            // `scheme://@host`: nothing between the scheme and the `@`.
            Some(i) if i + 3 == at => {
                pieces.push(head[i..].to_string());
                head = &head[..i];
            }
            Some(i) => {
                pieces.push(format!("://***{}", &head[at..]));
                head = &head[..i];
            }
            None if before.contains(':') => {
                pieces.push(format!("***{}", &head[at..]));
                head = "";
            }
            None => break,
        }
    }
    let mut out = head.to_string();
    out.extend(pieces.into_iter().rev());
    out.into()
}

/// The password of a proxy URL's `user:password@` part, when it is long enough to be
/// replaced on its own without eating ordinary words.
fn proxy_password(proxy: &str) -> Option<&str> {
    let rest = proxy.find("://").map_or(proxy, |i| &proxy[i + 3..]);
    let userinfo = &rest[..rest.rfind('@')?];
    let (_, password) = userinfo.split_once(':')?;
    (password.chars().count() >= 4).then_some(password)
}

/// Why an action id cannot be the `Idempotency-Key` of SPEC §9, if it cannot. The key
/// must reach the upstream byte for byte and mean one action only, so an id is
/// visible ASCII (`!` to `~`) with single inner spaces allowed:
/// - no leading or trailing white space: HTTP trims it from a header value, so `" k"`,
///   `"k "` and `"k"` would be one key, and the later ones would be answered 409
///   ("already have it") and recorded `sent` without ever going out;
/// - no control characters: a header value cannot carry them;
/// - no non-ASCII: an HTTP header value is visible ASCII; an encoded form would be a
///   different key than the one the exec upstream sees.
pub fn idempotency_key_problem(id: &str) -> Option<&'static str> {
    if id.starts_with(|c: char| c.is_whitespace()) || id.ends_with(|c: char| c.is_whitespace()) {
        return Some("must not start or end with white space (it is the Idempotency-Key)");
    }
    if id.chars().any(|c| c.is_control()) {
        return Some("contains a control character (it is the Idempotency-Key)");
    }
    if !id.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Some("must be visible ASCII: it is sent as the Idempotency-Key header");
    }
    None
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

    /// One line per case: a reason from outside → what may be logged.
    fn check(reason: &str, proxy: Option<&str>, expected: &str) {
        assert_eq!(redact_reason(reason, proxy), expected, "{reason:?}");
    }

    #[test]
    fn reasons_lose_credentials_and_control_characters() {
        check(
            "bad proxy http://user:PW@host:8080",
            None,
            "bad proxy http://***@host:8080",
        );
        check(
            "bad proxy user:PW@host:8080 now",
            None,
            "bad proxy ***@host:8080 now",
        );
        check("socks5://u:p@ss/w@rd@h:1 x", None, "socks5://***@h:1 x");
        check("see http://host:8080/path", None, "see http://host:8080/path");
        check("mail jane@example.com", None, "mail jane@example.com");
        check("line\none\ttwo", None, "line one two");
        check(
            "proxy 203.0.113.7:3128:user:hunter22 refused",
            Some("203.0.113.7:3128:user:hunter22"),
            "proxy *** refused",
        );
        check(
            "login failed for hunter22",
            Some("http://user:hunter22@203.0.113.7:3128"),
            "login failed for ***",
        );
        assert_eq!(
            redact_reason(&"é".repeat(1000), None).chars().count(),
            MAX_REASON_CHARS
        );
    }

    #[test]
    fn outcomes_carry_redacted_reasons() {
        let o = Outcome::Invalid {
            reason: "bad proxy http://user:PW@host:8080".into(),
        };
        assert_eq!(
            o.redacted(None),
            Outcome::Invalid {
                reason: "bad proxy http://***@host:8080".into()
            }
        );
        assert_eq!(Outcome::Sent.redacted(None), Outcome::Sent);
    }

    #[test]
    fn idempotency_keys() {
        for ok in ["q4/jane/invite", "dup key", "a", "~!#$%&'*+-.^_`|"] {
            assert_eq!(idempotency_key_problem(ok), None, "{ok:?}");
        }
        for bad in [
            " dup-key",
            "dup-key ",
            "dup-key\t",
            "\u{a0}k",
            "k\u{7f}",
            "jos\u{e9}",
            "a\nb",
        ] {
            assert!(idempotency_key_problem(bad).is_some(), "{bad:?}");
        }
    }

    /// Found by `schemeless_passwords_never_survive`: credentials before an empty
    /// `scheme://@` authority were kept whole.
    #[test]
    fn credentials_before_an_empty_scheme_authority_are_hidden() {
        let out = redact_reason(":Za0[@://@", None);
        assert!(!out.contains("Za0["), "{out:?}");
        assert_eq!(redact_reason("x:Za0[@://@h y", None), "***@://@h y");
        assert_eq!(redact_reason("see http://@host", None), "see http://@host");
    }

    /// Found by `schemeless_passwords_never_survive`: credentials before a
    /// `scheme://` whose own authority is not empty were kept whole.
    #[test]
    fn credentials_before_a_scheme_with_an_authority_are_hidden() {
        let out = redact_reason(":ZA!a@://\0@", None);
        assert!(!out.contains("ZA!a"), "{out:?}");
        assert_eq!(redact_reason("u:pw@http://x:y@h z", None), "***@http://***@h z");
        assert_eq!(redact_reason("http://u:secret@host/p", None), "http://***@host/p");
        assert_eq!(
            redact_reason("mail jane@example.com", None),
            "mail jane@example.com"
        );
        assert_eq!(redact_reason(":Z://@", None), "***@");
        assert_eq!(redact_reason("u:Z://x@h", None), "***@h");
        let deep = "@://".repeat(20_000);
        assert!(redact_reason(&deep, None).chars().count() <= MAX_REASON_CHARS);
    }

    proptest::proptest! {
        #[test]
        fn url_passwords_never_survive(
            before in "[^Z]{0,300}",
            scheme in "[a-z][a-z0-9+.-]{0,8}",
            user in "[^Z\\s]{0,20}",
            password in "Z[!-Y\\[-~]{3,30}",
            after in "[^Z]{0,300}",
        ) {
            let reason = format!("{before}{scheme}://{user}:{password}@{after}");
            let out = redact_reason(&reason, None);
            proptest::prop_assert!(!out.contains(&password), "{reason:?} -> {out:?}");
            proptest::prop_assert!(out.chars().count() <= MAX_REASON_CHARS);
            proptest::prop_assert!(!out.chars().any(char::is_control));
        }

        #[test]
        fn schemeless_passwords_never_survive(
            before in "([^Z]{0,100} )?",
            user in "[^Z\\s]{0,20}",
            password in "Z[!-Y\\[-~]{3,30}",
            after in "[^Z]{0,100}",
        ) {
            let reason = format!("{before}{user}:{password}@{after}");
            let out = redact_reason(&reason, None);
            proptest::prop_assert!(!out.contains(&password), "{reason:?} -> {out:?}");
        }

        #[test]
        fn any_reason_is_bounded(reason in "\\PC{0,2000}", proxy in proptest::option::of("\\PC{0,40}")) {
            let out = redact_reason(&reason, proxy.as_deref());
            proptest::prop_assert!(out.chars().count() <= MAX_REASON_CHARS);
        }
    }
}
