//! A page of the upstream's event feed (SPEC §9 "events"):
//! `{"events":[{"id":"e1","kind":"invite_accepted",...}],"cursor":"c2"}`, parsed whole
//! and checked whole, without IO. A page either parses into typed events, each with
//! the same fields as the job-file event of its kind, or fails with the one thing wrong
//! with it (`events.3.kind`): a bad page is never applied in part.
//!
//! References (an unknown account or action) are resolved when the page is applied to
//! the store, like those of a job file.

use super::jobfile::{check_id, parse_event, parse_strict, EventRecord, FieldError, ReplyTo};
use serde_json::Value;

/// Most events one page may carry; a longer page is refused whole (the service should
/// page its feed).
pub const MAX_PAGE_EVENTS: usize = 1_000;
/// Largest page body read, in bytes; the reader stops there and the page is refused.
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;
/// The event kinds the feed may carry (SPEC §9).
pub const FEED_KINDS: [&str; 3] = ["invite_accepted", "reply_received", "account_restricted"];

/// One event of a page: the service's id for it, and what it says.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedEvent {
    pub id: String,
    pub event: EventRecord,
}

/// A whole page: its events in order, and the cursor to ask after next time.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub events: Vec<FeedEvent>,
    pub cursor: String,
}

/// Why a page was refused: the field (`events.3.kind`, `cursor`, `page`) and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct PageError {
    pub field: String,
    pub reason: String,
}

/// Why a fetch brought no page (the body of a page that came is parsed here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// 429: back off, at least as long as `Retry-After` asks.
    RateLimited { retry_after_s: Option<u64> },
    /// Anything else: a 5xx or other status, a timeout, a connection error, a body
    /// larger than a page may be. The reason never carries credentials.
    Failed(String),
}

/// The JSON of a page, as the service serves it: what the `sim` upstream and tests
/// serve, and the inverse of [`parse_page`].
pub fn page_json(events: &[FeedEvent], cursor: &str) -> Vec<u8> {
    let list: Vec<Value> = events.iter().map(event_json).collect();
    serde_json::json!({ "events": list, "cursor": cursor })
        .to_string()
        .into_bytes()
}

fn event_json(e: &FeedEvent) -> Value {
    let at = |t: &Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339());
    let mut v = match &e.event {
        EventRecord::InviteAccepted {
            account,
            prospect,
            at: t,
        } => serde_json::json!({
            "kind": "invite_accepted", "account": account, "prospect": prospect, "at": at(t),
        }),
        EventRecord::ReplyReceived {
            to: ReplyTo::Action(a),
            at: t,
        } => serde_json::json!({
            "kind": "reply_received", "action": a, "at": at(t),
        }),
        EventRecord::ReplyReceived {
            to: ReplyTo::Prospect { account, prospect },
            at: t,
        } => serde_json::json!({
            "kind": "reply_received", "account": account, "prospect": prospect, "at": at(t),
        }),
        EventRecord::AccountRestricted { account } => serde_json::json!({
            "kind": "account_restricted", "account": account,
        }),
        // Not a feed kind: served as what it is, and refused by the parser.
        other => serde_json::json!({ "kind": format!("{other:?}") }),
    };
    if let Value::Object(m) = &mut v {
        m.retain(|_, x| !x.is_null());
        m.insert("id".into(), Value::String(e.id.clone()));
    }
    v
}

fn page_err(field: impl Into<String>, reason: impl Into<String>) -> PageError {
    PageError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Parse a page body. Every event is checked before any is returned.
pub fn parse_page(body: &[u8]) -> Result<Page, PageError> {
    if body.len() > MAX_PAGE_BYTES {
        return Err(page_err("page", format!("larger than {MAX_PAGE_BYTES} bytes")));
    }
    let text = std::str::from_utf8(body).map_err(|e| page_err("page", format!("not UTF-8: {e}")))?;
    // Strict: a key written twice is an error at any depth, as in job files.
    let value = parse_strict(text).map_err(|e| page_err(prefixed("", &e.field), e.reason))?;
    let Value::Object(mut obj) = value else {
        return Err(page_err("page", "a page must be a JSON object"));
    };
    let cursor = match obj.remove("cursor") {
        Some(Value::String(c)) => c,
        Some(_) => return Err(page_err("cursor", "must be a string")),
        None => return Err(page_err("cursor", "missing field `cursor`")),
    };
    check_id("cursor", &cursor).map_err(|e| page_err(e.field, e.reason))?;
    let list = match obj.remove("events") {
        Some(Value::Array(list)) => list,
        Some(_) => return Err(page_err("events", "must be an array")),
        None => return Err(page_err("events", "missing field `events`")),
    };
    if let Some(extra) = obj.keys().next() {
        return Err(page_err(extra.as_str(), format!("unknown field `{extra}`")));
    }
    if list.len() > MAX_PAGE_EVENTS {
        return Err(page_err(
            "events",
            format!("{} events; a page holds at most {MAX_PAGE_EVENTS}", list.len()),
        ));
    }
    let events = list
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            parse_one(v).map_err(|e| page_err(prefixed(&format!("events.{i}"), &e.field), e.reason))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page { events, cursor })
}

fn prefixed(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty() || field == "record") {
        (true, true) => "page".into(),
        (true, false) => field.into(),
        (false, true) => prefix.into(),
        (false, false) => format!("{prefix}.{field}"),
    }
}

fn parse_one(v: Value) -> Result<FeedEvent, FieldError> {
    let err = |field: &str, reason: String| FieldError {
        field: field.into(),
        reason,
    };
    let Value::Object(mut obj) = v else {
        return Err(err("", "an event must be a JSON object".into()));
    };
    let id = match obj.remove("id") {
        Some(Value::String(id)) => id,
        Some(_) => return Err(err("id", "must be a string".into())),
        None => return Err(err("id", "missing field `id`".into())),
    };
    check_id("id", &id)?;
    match obj.get("kind") {
        Some(Value::String(k)) if !FEED_KINDS.contains(&k.as_str()) => {
            return Err(err(
                "kind",
                format!("unknown event kind `{k}` (expected {})", FEED_KINDS.join(", ")),
            ))
        }
        _ => {}
    }
    let event = parse_event(obj)?;
    // Ids end up in store keys and logs: the same bounds as in job files.
    match &event {
        EventRecord::InviteAccepted {
            account, prospect, ..
        } => {
            check_id("account", account)?;
            check_id("prospect", prospect)?;
        }
        EventRecord::ReplyReceived { to, .. } => match to {
            ReplyTo::Action(a) => check_id("action", a)?,
            ReplyTo::Prospect { account, prospect } => {
                check_id("account", account)?;
                check_id("prospect", prospect)?;
            }
        },
        EventRecord::AccountRestricted { account } => check_id("account", account)?,
        _ => return Err(err("kind", "not a feed event kind".into())),
    }
    Ok(FeedEvent { id, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> (String, String) {
        let e = parse_page(body.as_bytes()).expect_err("a bad page");
        (e.field, e.reason)
    }

    /// Every way a page can be bad names what is wrong with it.
    #[test]
    fn each_bad_page_names_what_is_wrong() {
        let cases: &[(&str, &str, &str)] = &[
            ("{", "page", "EOF"),
            ("[]", "page", "JSON object"),
            (r#"{"events":[]}"#, "cursor", "missing"),
            (r#"{"events":[],"cursor":7}"#, "cursor", "string"),
            (r#"{"events":[],"cursor":""}"#, "cursor", "empty"),
            (r#"{"cursor":"c"}"#, "events", "missing"),
            (r#"{"events":{},"cursor":"c"}"#, "events", "array"),
            (
                r#"{"events":[],"cursor":"c","more":true}"#,
                "more",
                "unknown field",
            ),
            (
                r#"{"events":[],"cursor":"c","cursor":"d"}"#,
                "cursor",
                "duplicate",
            ),
            (r#"{"events":[1],"cursor":"c"}"#, "events.0", "JSON object"),
            (
                r#"{"events":[{"kind":"account_restricted","account":"a"}],"cursor":"c"}"#,
                "events.0.id",
                "missing",
            ),
            (
                r#"{"events":[{"id":"e1","kind":"account_restricted","account":"a"},{"id":"e2","kind":"invite_sent","account":"a"}],"cursor":"c"}"#,
                "events.1.kind",
                "unknown event kind `invite_sent`",
            ),
            (
                r#"{"events":[{"id":"e1","kind":"account_resumed","account":"a"}],"cursor":"c"}"#,
                "events.0.kind",
                "unknown event kind",
            ),
            (
                r#"{"events":[{"id":"e1","kind":"invite_accepted","account":"a"}],"cursor":"c"}"#,
                "events.0.prospect",
                "missing",
            ),
            (
                r#"{"events":[{"id":"e1","kind":"invite_accepted","account":"a","prospect":"p","at":"yesterday"}],"cursor":"c"}"#,
                "events.0.at",
                "",
            ),
            (
                r#"{"events":[{"id":"e1","kind":"reply_received","account":"a"}],"cursor":"c"}"#,
                "events.0.prospect",
                "missing",
            ),
            (
                r#"{"events":[{"id":"e1","kind":"reply_received","action":"x","account":"a","prospect":"p"}],"cursor":"c"}"#,
                "events.0.action",
                "not both",
            ),
            (
                r#"{"events":[{"id":"","kind":"account_restricted","account":"a"}],"cursor":"c"}"#,
                "events.0.id",
                "empty",
            ),
            (
                r#"{"events":[{"id":"e1","kind":"account_restricted","account":"a","extra":1}],"cursor":"c"}"#,
                "events.0.extra",
                "unknown field",
            ),
        ];
        for (body, field, reason) in cases {
            let (f, r) = err(body);
            assert_eq!(&f, field, "{body}: {r}");
            assert!(r.contains(reason), "{body}: `{r}` lacks `{reason}`");
        }
    }

    #[test]
    fn a_page_too_long_or_too_large_is_refused_whole() {
        let one = r#"{"id":"eX","kind":"account_restricted","account":"a"}"#;
        let many = vec![one; MAX_PAGE_EVENTS + 1].join(",");
        let (f, r) = err(&format!(r#"{{"events":[{many}],"cursor":"c"}}"#));
        assert_eq!(f, "events");
        assert!(r.contains("at most"), "{r}");
        let big = vec![b' '; MAX_PAGE_BYTES + 1];
        let e = parse_page(&big).expect_err("too large");
        assert_eq!(e.field, "page");
    }

    #[test]
    fn a_good_page_keeps_order_ids_and_both_reply_forms() {
        let body = r#"{"events":[
            {"id":"e1","kind":"invite_accepted","account":"a","prospect":"p1","at":"2026-12-01T10:00:00Z"},
            {"id":"e2","kind":"reply_received","account":"a","prospect":"p2"},
            {"id":"e3","kind":"reply_received","action":"q/x"},
            {"id":"e4","kind":"account_restricted","account":"a"}],"cursor":"c9"}"#;
        let page = parse_page(body.as_bytes()).expect("valid");
        assert_eq!(page.cursor, "c9");
        let ids: Vec<&str> = page.events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["e1", "e2", "e3", "e4"]);
        assert!(matches!(
            &page.events[1].event,
            EventRecord::ReplyReceived { to: ReplyTo::Prospect { account, prospect }, .. }
                if account == "a" && prospect == "p2"
        ));
        assert!(matches!(
            &page.events[2].event,
            EventRecord::ReplyReceived { to: ReplyTo::Action(a), .. } if a == "q/x"
        ));
        let again = parse_page(&page_json(&page.events, "c9")).expect("served back");
        assert_eq!(again, page, "page_json is the inverse of parse_page");
        let empty = parse_page(br#"{"events":[],"cursor":"c1"}"#).expect("valid");
        assert!(empty.events.is_empty());
    }
}
