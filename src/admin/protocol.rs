//! The admin socket's protocol: a client writes one request line of JSON, the worker
//! answers with one reply line and closes the connection.
//!
//! ```json
//! {"cmd":"pause","scope":"all"}
//! {"reply":"pause","scope":"all","paused":true,"changed":true}
//! ```

use crate::store::{ActionRow, AuditReport, Filter, History, ListCursor, MoveReport, Scope, StatusReport};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// The longest request line accepted, newline included.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Ids one `cancel` / `requeue` request may name (a filter has no such bound).
pub const MAX_IDS: usize = 10_000;
/// `list`'s default `--limit` (SPEC §8).
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// The most rows one `list` reply carries: a longer listing (`--limit 0` over a million
/// actions) is asked for a page at a time, so neither the worker nor the client holds
/// it whole.
pub const LIST_PAGE: usize = 50_000;

fn default_limit() -> usize {
    DEFAULT_LIST_LIMIT
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status {
        #[serde(default)]
        account: Option<String>,
        #[serde(default)]
        campaign: Option<String>,
        /// Report as of this instant instead of the worker's clock.
        #[serde(default)]
        at: Option<DateTime<Utc>>,
    },
    List {
        #[serde(default)]
        filter: Filter,
        /// 0 means all. One reply carries at most `LIST_PAGE` rows.
        #[serde(default = "default_limit")]
        limit: usize,
        /// Where this page starts: after the last row of the page before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<ListCursor>,
    },
    Show {
        action: String,
    },
    Pause {
        scope: Scope,
    },
    Resume {
        scope: Scope,
    },
    Cancel {
        #[serde(default)]
        ids: Vec<String>,
        #[serde(default)]
        filter: Option<Filter>,
    },
    Requeue {
        #[serde(default)]
        ids: Vec<String>,
        #[serde(default)]
        filter: Option<Filter>,
    },
    Audit {
        #[serde(default)]
        from: Option<NaiveDate>,
        #[serde(default)]
        to: Option<NaiveDate>,
    },
}

impl Request {
    /// Whether the request changes the store (the engine then looks at its accounts
    /// again).
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            Request::Pause { .. } | Request::Resume { .. } | Request::Cancel { .. } | Request::Requeue { .. }
        )
    }

    /// The rules a well-formed request still has to meet (SPEC §8): a bulk move names
    /// ids or a filter, not both, and a filter names a state, an account or a campaign.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Request::Cancel { ids, filter } | Request::Requeue { ids, filter } => {
                match (ids.is_empty(), filter) {
                    (true, None) => Err("name action ids or a filter".into()),
                    (false, Some(_)) => Err("name action ids or a filter, not both".into()),
                    (true, Some(f)) if !f.is_narrow() => {
                        Err("a filter must name at least one of state, account, campaign".into())
                    }
                    (false, None) if ids.len() > MAX_IDS => {
                        Err(format!("at most {MAX_IDS} ids per request; use a filter"))
                    }
                    _ => Ok(()),
                }
            }
            Request::Show { action } if action.is_empty() => Err("an action id is empty".into()),
            // The years of RFC 3339, as `--at` takes them: a status walks local days back
            // from `at`, which at the edge of chrono's range would overflow.
            Request::Status { at: Some(t), .. } if !(0..=9999).contains(&t.year()) => {
                Err(format!("`at` {t} is not an RFC 3339 time (years 0000 to 9999)"))
            }
            _ => Ok(()),
        }
    }
}

/// One reply line. `error` carries the exit code the CLI ends with (SPEC §10).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Status(StatusReport),
    List {
        actions: Vec<ActionRow>,
        /// Set when the page is full and more may match: ask again `after` it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        more: Option<ListCursor>,
    },
    Show(History),
    Pause {
        scope: Scope,
        paused: bool,
        changed: bool,
    },
    Moved(MoveReport),
    Audit(AuditReport),
    Error {
        message: String,
        exit: i32,
    },
}

impl Reply {
    pub fn error(message: impl Into<String>, exit: i32) -> Reply {
        Reply::Error {
            message: message.into(),
            exit,
        }
    }
}

/// Parse one request line (without or with its newline). Pure: the server and the
/// tests call it alike.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    if line.len() > MAX_REQUEST_BYTES {
        return Err(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
    }
    let text = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_string())?;
    let req: Request = serde_json::from_str(text.trim_end()).map_err(|e| format!("bad request: {e}"))?;
    req.validate()?;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::State;

    fn ok(line: &str) -> Request {
        parse_request(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn err(line: &str) -> String {
        parse_request(line.as_bytes()).expect_err(line)
    }

    #[test]
    fn requests_parse() {
        assert_eq!(
            ok(r#"{"cmd":"pause","scope":"all"}"#),
            Request::Pause { scope: Scope::All }
        );
        assert_eq!(
            ok(r#"{"cmd":"resume","scope":{"account":"a1"}}"#),
            Request::Resume {
                scope: Scope::Account("a1".into())
            }
        );
        assert_eq!(
            ok("{\"cmd\":\"list\"}\n"),
            Request::List {
                filter: Filter::default(),
                limit: DEFAULT_LIST_LIMIT,
                after: None,
            }
        );
        match ok(r#"{"cmd":"requeue","filter":{"state":"failed","campaign":"q4"}}"#) {
            Request::Requeue { ids, filter: Some(f) } => {
                assert!(ids.is_empty());
                assert_eq!(f.state, Some(State::Failed));
                assert_eq!(f.campaign.as_deref(), Some("q4"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        assert!(err("garbage").starts_with("bad request"));
        assert!(err(r#"{"cmd":"explode"}"#).contains("explode"));
        assert!(err(r#"{"cmd":"status","acount":"a"}"#).contains("acount"));
        assert!(err(r#"{"cmd":"cancel"}"#).contains("ids or a filter"));
        assert!(err(r#"{"cmd":"cancel","filter":{"kind":"invite"}}"#).contains("at least one of"));
        assert!(err(r#"{"cmd":"cancel","ids":["a"],"filter":{"state":"queued"}}"#).contains("not both"));
        assert!(err(r#"{"cmd":"list","filter":{"state":"lost"}}"#).contains("lost"));
        // chrono's first day: a status of it would walk back past the calendar's start.
        assert!(err(r#"{"cmd":"status","at":"-262143-01-01T00:00:00Z"}"#).contains("years 0000 to 9999"));
        assert!(err(r#"{"cmd":"status","at":"+10000-01-01T00:00:00Z"}"#).contains("years 0000 to 9999"));
        assert!(matches!(
            ok(r#"{"cmd":"status","at":"0000-01-01T00:00:00Z"}"#),
            Request::Status { at: Some(_), .. }
        ));
        let huge = format!(r#"{{"cmd":"show","action":"{}"}}"#, "x".repeat(MAX_REQUEST_BYTES));
        assert!(err(&huge).contains("longer than"));
        assert!(parse_request(&[0xff, 0xfe]).expect_err("bytes").contains("UTF-8"));
    }

    #[test]
    fn replies_round_trip() {
        let r = Reply::Pause {
            scope: Scope::Campaign("q4".into()),
            paused: true,
            changed: false,
        };
        let text = serde_json::to_string(&r).expect("json");
        assert_eq!(serde_json::from_str::<Reply>(&text).expect("parse"), r);
        let e = Reply::error("no action `x`", 1);
        let text = serde_json::to_string(&e).expect("json");
        assert!(text.contains(r#""reply":"error""#), "{text}");
        assert_eq!(serde_json::from_str::<Reply>(&text).expect("parse"), e);
    }
}
