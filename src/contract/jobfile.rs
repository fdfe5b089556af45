//! Job files (SPEC §6): JSON Lines (`.jsonl`) or a JSON document `{"records": [...]}`
//! (`.json`), parsed whole into typed records with exact line numbers. Any error names
//! the line and the field; unknown types, unknown fields and a key written twice in one
//! object (at any depth) are errors.
//!
//! References between records (unknown account or campaign) are resolved when the file
//! is applied to the store, since they may point at earlier files.

use super::upstream::idempotency_key_problem;
use crate::policy::window::DAY_NAMES;
use crate::policy::{Kind, Tier, Window};
use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Longest id, prospect or proxy string accepted; keys stay small and logs readable.
pub const MAX_ID_BYTES: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: field `{field}`: {reason}")]
pub struct FileError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub reason: String,
}

/// An error inside one record, before the file name is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

fn field_err(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// One record and the line it starts on.
#[derive(Clone, Debug, PartialEq)]
pub struct Line<T> {
    pub line: usize,
    pub record: T,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Account(AccountRecord),
    Campaign(CampaignRecord),
    Action(ActionRecord),
    Event(EventRecord),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsOverride {
    pub invites: Option<u32>,
    pub messages: Option<u32>,
    pub inmails: Option<u32>,
    pub engagement: Option<u32>,
    pub weekly_invites: Option<u32>,
}

/// The `window` of an account upsert: each part left out keeps its stored value (the
/// default for a new account), SPEC §6 "fields left out keep their value".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowPatch {
    /// Monday first.
    pub days: Option<[bool; 7]>,
    pub start: Option<NaiveTime>,
    pub end: Option<NaiveTime>,
}

impl WindowPatch {
    /// The stored window with this patch applied. The result must still be a window
    /// that does not cross midnight; the error names the field that breaks it.
    pub fn apply(&self, base: Window) -> Result<Window, FieldError> {
        let w = Window {
            days: self.days.unwrap_or(base.days),
            start: self.start.unwrap_or(base.start),
            end: self.end.unwrap_or(base.end),
        };
        if w.start >= w.end {
            let field = if self.end.is_some() {
                "window.end"
            } else {
                "window.start"
            };
            return Err(field_err(
                field,
                format!(
                    "window {}–{} is empty: window.end must be later than window.start (windows do not cross midnight)",
                    w.start.format("%H:%M"),
                    w.end.format("%H:%M")
                ),
            ));
        }
        Ok(w)
    }
}

/// An account upsert: `None` keeps the stored value (or the default for a new account).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccountRecord {
    pub id: String,
    pub tier: Option<Tier>,
    pub timezone: Option<Tz>,
    pub window: Option<WindowPatch>,
    pub ramp_start: Option<NaiveDate>,
    pub established: Option<bool>,
    pub proxy: Option<String>,
    pub caps: Option<CapsOverride>,
    pub inmail_credits: Option<u32>,
    pub inmail_refill_day: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    Active,
    Paused,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapSplit {
    pub invites: Option<u32>,
    pub messages: Option<u32>,
    pub inmails: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CampaignRecord {
    pub id: String,
    pub timezone: Option<Tz>,
    pub daily_limit: Option<u32>,
    pub cap_split: Option<CapSplit>,
    pub accounts: Option<Vec<String>>,
    pub status: Option<CampaignStatus>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ActionRecord {
    pub id: String,
    pub campaign: String,
    pub account: Option<String>,
    pub kind: Kind,
    pub prospect: String,
    pub payload: Value,
    pub not_before: Option<DateTime<Utc>>,
    pub priority: i32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum EventRecord {
    InviteAccepted {
        account: String,
        prospect: String,
        at: Option<DateTime<Utc>>,
    },
    ReplyReceived {
        to: ReplyTo,
        at: Option<DateTime<Utc>>,
    },
    AccountRestricted {
        account: String,
    },
    AccountResumed {
        account: String,
    },
    TierChanged {
        account: String,
        tier: Tier,
    },
    CampaignPaused {
        campaign: String,
    },
    CampaignResumed {
        campaign: String,
    },
    CancelAction {
        action: String,
    },
    RequeueAction {
        action: String,
    },
}

/// What a `reply_received` event answers: a named action, or the last InMail sent by
/// `account` to `prospect` (the form an integration service knows, SPEC §9).
#[derive(Clone, Debug, PartialEq)]
pub enum ReplyTo {
    Action(String),
    Prospect { account: String, prospect: String },
}

// ---- raw shapes, exactly as written in a file ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    days: Option<Vec<String>>,
    start: Option<String>,
    end: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    id: String,
    tier: Option<String>,
    timezone: Option<String>,
    window: Option<RawWindow>,
    ramp_start: Option<String>,
    established: Option<bool>,
    proxy: Option<String>,
    caps: Option<CapsOverride>,
    inmail_credits: Option<u32>,
    inmail_refill_day: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCampaign {
    id: String,
    timezone: Option<String>,
    daily_limit: Option<u32>,
    cap_split: Option<CapSplit>,
    accounts: Option<Vec<String>>,
    status: Option<CampaignStatus>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    id: String,
    campaign: String,
    account: Option<String>,
    kind: String,
    prospect: String,
    #[serde(default)]
    payload: Value,
    not_before: Option<String>,
    priority: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccountEvent {
    account: String,
    #[allow(dead_code)] // accepted for the record; the worker's clock decides
    at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccepted {
    account: String,
    prospect: String,
    at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActionEvent {
    action: String,
    at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReply {
    action: Option<String>,
    account: Option<String>,
    prospect: Option<String>,
    at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCampaignEvent {
    campaign: String,
    #[allow(dead_code)] // accepted for the record; the worker's clock decides
    at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTierChanged {
    account: String,
    tier: String,
    #[allow(dead_code)] // accepted for the record; the worker's clock decides
    at: Option<String>,
}

/// Deserialize a JSON object into `T`, naming the exact field on error.
fn typed<T: DeserializeOwned>(obj: Map<String, Value>, prefix: &str) -> Result<T, FieldError> {
    serde_path_to_error::deserialize::<_, T>(Value::Object(obj)).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.inner().to_string();
        // The path already ends in an unknown field; a missing one is named only in the
        // message: pull it out.
        let named = msg
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let mut field = prefix.to_string();
        for part in [Some(path.as_str()).filter(|p| *p != "."), named]
            .into_iter()
            .flatten()
        {
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(part);
        }
        if field.is_empty() {
            field.push_str("record");
        }
        field_err(field, msg)
    })
}

pub(crate) fn check_id(field: &str, s: &str) -> Result<(), FieldError> {
    if s.is_empty() {
        return Err(field_err(field, "must not be empty"));
    }
    if s.len() > MAX_ID_BYTES {
        return Err(field_err(field, format!("longer than {MAX_ID_BYTES} bytes")));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(field_err(field, "contains a control character"));
    }
    Ok(())
}

pub fn parse_tz(field: &str, s: &str) -> Result<Tz, FieldError> {
    s.parse::<Tz>()
        .map_err(|_| field_err(field, format!("`{s}` is not an IANA time zone")))
}

fn parse_time(field: &str, s: &str) -> Result<NaiveTime, FieldError> {
    NaiveTime::parse_from_str(s, "%H:%M").map_err(|_| field_err(field, format!("`{s}` is not a time HH:MM")))
}

fn parse_date(field: &str, s: &str) -> Result<NaiveDate, FieldError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| field_err(field, format!("`{s}` is not a date YYYY-MM-DD")))
}

/// An RFC 3339 instant before the year 9999: the window that opens after it (days
/// later at most) stays a time that RFC 3339, and `status`, can write.
fn parse_instant(field: &str, s: &str) -> Result<DateTime<Utc>, FieldError> {
    let t = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| field_err(field, format!("`{s}` is not an RFC 3339 time")))?;
    if t.year() > 9998 {
        return Err(field_err(field, format!("`{s}` is later than the year 9998")));
    }
    Ok(t)
}

/// A per-account cap, and the starting InMail balance, within the range the config
/// accepts for the same value (`config::INT_RANGES`, SPEC §7): a job file cannot set
/// what the config would refuse.
fn check_account_numbers(caps: Option<&CapsOverride>, credits: Option<u32>) -> Result<(), FieldError> {
    let c = caps.copied().unwrap_or_default();
    let fields = [
        ("caps.invites", "caps.invites", c.invites),
        ("caps.messages", "caps.messages", c.messages),
        ("caps.inmails", "caps.inmails", c.inmails),
        ("caps.engagement", "caps.engagement", c.engagement),
        ("caps.weekly_invites", "caps.weekly_invites", c.weekly_invites),
        ("inmail_credits", "tiers.*.inmail_credits", credits),
    ];
    for (field, key, value) in fields {
        let Some(v) = value.map(u64::from) else {
            continue;
        };
        let range = crate::config::INT_RANGES.iter().find(|(k, ..)| *k == key);
        if let Some(&(_, lo, hi)) = range.filter(|(_, lo, hi)| !(*lo..=*hi).contains(&v)) {
            return Err(field_err(
                field,
                format!("{v} is outside {lo}..={hi}, the range the config accepts for `{key}`"),
            ));
        }
    }
    Ok(())
}

fn parse_window(raw: RawWindow) -> Result<WindowPatch, FieldError> {
    let mut w = WindowPatch::default();
    if let Some(days) = raw.days {
        let mut set = [false; 7];
        for (i, d) in days.iter().enumerate() {
            let idx = DAY_NAMES
                .iter()
                .position(|n| n.eq_ignore_ascii_case(d))
                .ok_or_else(|| {
                    field_err(
                        format!("window.days.{i}"),
                        format!("`{d}` is not one of mon..sun"),
                    )
                })?;
            set[idx] = true;
        }
        if days.is_empty() {
            return Err(field_err("window.days", "needs at least one day"));
        }
        w.days = Some(set);
    }
    if let Some(s) = raw.start {
        w.start = Some(parse_time("window.start", &s)?);
    }
    if let Some(s) = raw.end {
        w.end = Some(parse_time("window.end", &s)?);
    }
    // With both ends given the window is known here; with one, only once it meets the
    // stored window (the store checks it then, naming the same field).
    if let (Some(start), Some(end)) = (w.start, w.end) {
        if start >= end {
            return Err(field_err(
                "window.end",
                "must be later than window.start (windows do not cross midnight)",
            ));
        }
    }
    Ok(w)
}

fn parse_account(obj: Map<String, Value>) -> Result<AccountRecord, FieldError> {
    let r: RawAccount = typed(obj, "")?;
    check_id("id", &r.id)?;
    if let Some(p) = &r.proxy {
        check_id("proxy", p)?;
    }
    if let Some(d) = r.inmail_refill_day {
        if !(1..=31).contains(&d) {
            return Err(field_err("inmail_refill_day", "must be 1..=31"));
        }
    }
    check_account_numbers(r.caps.as_ref(), r.inmail_credits)?;
    Ok(AccountRecord {
        tier: r
            .tier
            .map(|t| Tier::parse(&t).ok_or_else(|| field_err("tier", format!("unknown tier `{t}`"))))
            .transpose()?,
        timezone: r.timezone.map(|s| parse_tz("timezone", &s)).transpose()?,
        window: r.window.map(parse_window).transpose()?,
        ramp_start: r.ramp_start.map(|s| parse_date("ramp_start", &s)).transpose()?,
        established: r.established,
        proxy: r.proxy,
        caps: r.caps,
        inmail_credits: r.inmail_credits,
        inmail_refill_day: r.inmail_refill_day,
        id: r.id,
    })
}

fn parse_campaign(obj: Map<String, Value>) -> Result<CampaignRecord, FieldError> {
    let r: RawCampaign = typed(obj, "")?;
    check_id("id", &r.id)?;
    if let Some(list) = &r.accounts {
        for (i, a) in list.iter().enumerate() {
            check_id(&format!("accounts.{i}"), a)?;
        }
    }
    Ok(CampaignRecord {
        timezone: r.timezone.map(|s| parse_tz("timezone", &s)).transpose()?,
        daily_limit: r.daily_limit,
        cap_split: r.cap_split,
        accounts: r.accounts,
        status: r.status,
        id: r.id,
    })
}

fn parse_action(obj: Map<String, Value>) -> Result<ActionRecord, FieldError> {
    let r: RawAction = typed(obj, "")?;
    check_id("id", &r.id)?;
    if let Some(problem) = idempotency_key_problem(&r.id) {
        return Err(field_err("id", problem));
    }
    check_id("campaign", &r.campaign)?;
    check_id("prospect", &r.prospect)?;
    if let Some(a) = &r.account {
        check_id("account", a)?;
    }
    let kind = Kind::parse(&r.kind).ok_or_else(|| {
        field_err(
            "kind",
            format!(
                "unknown kind `{}` (expected invite, message, inmail, profile_view, comment, reaction)",
                r.kind
            ),
        )
    })?;
    Ok(ActionRecord {
        kind,
        not_before: r
            .not_before
            .map(|s| parse_instant("not_before", &s))
            .transpose()?,
        priority: r.priority.unwrap_or(0),
        id: r.id,
        campaign: r.campaign,
        account: r.account,
        prospect: r.prospect,
        payload: r.payload,
    })
}

pub(crate) fn parse_event(mut obj: Map<String, Value>) -> Result<EventRecord, FieldError> {
    let kind = match obj.remove("kind") {
        Some(Value::String(k)) => k,
        Some(_) => return Err(field_err("kind", "must be a string")),
        None => return Err(field_err("kind", "missing field `kind`")),
    };
    let at = |s: Option<String>| s.map(|s| parse_instant("at", &s)).transpose();
    let ev = match kind.as_str() {
        "invite_accepted" => {
            let r: RawAccepted = typed(obj, "")?;
            EventRecord::InviteAccepted {
                at: at(r.at)?,
                account: r.account,
                prospect: r.prospect,
            }
        }
        "reply_received" => {
            let r: RawReply = typed(obj, "")?;
            let to = match (r.action, r.account, r.prospect) {
                (Some(action), None, None) => ReplyTo::Action(action),
                (None, Some(account), Some(prospect)) => ReplyTo::Prospect { account, prospect },
                (Some(_), _, _) => {
                    return Err(field_err(
                        "action",
                        "name either `action` or `account` and `prospect`, not both",
                    ))
                }
                (None, None, _) => return Err(field_err("action", "missing field `action`")),
                (None, Some(_), None) => return Err(field_err("prospect", "missing field `prospect`")),
            };
            EventRecord::ReplyReceived { at: at(r.at)?, to }
        }
        "account_restricted" | "account_resumed" => {
            let r: RawAccountEvent = typed(obj, "")?;
            at(r.at)?;
            if kind == "account_restricted" {
                EventRecord::AccountRestricted { account: r.account }
            } else {
                EventRecord::AccountResumed { account: r.account }
            }
        }
        "tier_changed" => {
            let r: RawTierChanged = typed(obj, "")?;
            at(r.at)?;
            let tier = Tier::parse(&r.tier)
                .ok_or_else(|| field_err("tier", format!("unknown tier `{}`", r.tier)))?;
            EventRecord::TierChanged {
                account: r.account,
                tier,
            }
        }
        "campaign_paused" | "campaign_resumed" => {
            let r: RawCampaignEvent = typed(obj, "")?;
            at(r.at)?;
            if kind == "campaign_paused" {
                EventRecord::CampaignPaused { campaign: r.campaign }
            } else {
                EventRecord::CampaignResumed { campaign: r.campaign }
            }
        }
        "cancel_action" | "requeue_action" => {
            let r: RawActionEvent = typed(obj, "")?;
            at(r.at)?;
            if kind == "cancel_action" {
                EventRecord::CancelAction { action: r.action }
            } else {
                EventRecord::RequeueAction { action: r.action }
            }
        }
        other => return Err(field_err("kind", format!("unknown event kind `{other}`"))),
    };
    Ok(ev)
}

/// Parses JSON text into a `Value`, refusing an object that repeats a key, at any depth
/// (the payload included). serde_json alone keeps the last one silently, so
/// `"daily_limit":2,"daily_limit":40` would mean 40: a typo must never lift a cap.
pub(crate) fn parse_strict(text: &str) -> Result<Value, FieldError> {
    let mut path = Vec::new();
    let mut repeated = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = StrictValue {
        path: &mut path,
        repeated: &mut repeated,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| match repeated {
        Some((field, key)) => field_err(
            field,
            format!("duplicate key `{key}`: a key may appear only once in an object"),
        ),
        None => field_err("record", format!("bad JSON: {e}")),
    })
}

/// A JSON value that refuses repeated keys; `path` is where it lies in the record, and
/// `repeated` receives the dotted path and name of the first repeated key.
struct StrictValue<'a> {
    path: &'a mut Vec<String>,
    repeated: &'a mut Option<(String, String)>,
}

impl StrictValue<'_> {
    fn child(&mut self) -> StrictValue<'_> {
        StrictValue {
            path: &mut *self.path,
            repeated: &mut *self.repeated,
        }
    }
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // JSON has no NaN or infinity, so this is always a number.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            self.path.push(out.len().to_string());
            let next = seq.next_element_seed(self.child())?;
            self.path.pop();
            match next {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let mut field = self.path.join(".");
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(&key);
                *self.repeated = Some((field, key.clone()));
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            self.path.push(key.clone());
            let value = map.next_value_seed(self.child())?;
            self.path.pop();
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Parse one record from its JSON text.
pub fn parse_record(text: &str) -> Result<Record, FieldError> {
    let value = parse_strict(text)?;
    let Value::Object(mut obj) = value else {
        return Err(field_err("record", "a record must be a JSON object"));
    };
    let ty = match obj.remove("type") {
        Some(Value::String(t)) => t,
        Some(_) => return Err(field_err("type", "must be a string")),
        None => return Err(field_err("type", "missing field `type`")),
    };
    match ty.as_str() {
        "account" => parse_account(obj).map(Record::Account),
        "campaign" => parse_campaign(obj).map(Record::Campaign),
        "action" => parse_action(obj).map(Record::Action),
        "event" => parse_event(obj).map(Record::Event),
        other => Err(field_err(
            "type",
            format!("unknown type `{other}` (expected account, campaign, action, event)"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document<'a> {
    #[serde(borrow)]
    records: Vec<&'a RawValue>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Parse a whole job file. `name` decides the format (`.json` is a document, anything
/// else JSON Lines) and is used in error messages. Stops at the first error: a file is
/// applied whole or not at all.
pub fn parse_file(name: &str, bytes: &[u8]) -> Result<Vec<Line<Record>>, FileError> {
    split(name, bytes)?
        .into_iter()
        .map(|(line, r)| match r {
            Ok(record) => Ok(Line { line, record }),
            Err(e) => Err(file_err(name, line, e)),
        })
        .collect()
}

/// Errors `sendgate check` reports per file at most.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Every error in a file (at most `MAX_REPORTED_ERRORS`), for `sendgate check`; empty
/// when the file is valid.
pub fn check_file(name: &str, bytes: &[u8]) -> Vec<FileError> {
    match split(name, bytes) {
        Err(e) => vec![e],
        Ok(records) => records
            .into_iter()
            .filter_map(|(line, r)| r.err().map(|e| file_err(name, line, e)))
            .take(MAX_REPORTED_ERRORS)
            .collect(),
    }
}

fn file_err(name: &str, line: usize, e: FieldError) -> FileError {
    FileError {
        file: name.to_string(),
        line,
        field: e.field,
        reason: e.reason,
    }
}

/// A record's line and what parsing it gave.
type ParsedLine = (usize, Result<Record, FieldError>);

/// Split a file into its records, each parsed on its own. An error here (not UTF-8, a
/// broken document) spoils the whole file.
fn split(name: &str, bytes: &[u8]) -> Result<Vec<ParsedLine>, FileError> {
    let spans = record_spans(name, bytes)?;
    let text = text_of(bytes);
    Ok(spans
        .into_iter()
        .map(|s| (s.line, parse_record(&text[s.range])))
        .collect())
}

/// Where one record of a file is: the line it starts on and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub line: usize,
    pub range: std::ops::Range<usize>,
}

/// The text of a file `record_spans` accepted (valid UTF-8).
pub fn text_of(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// Whether a file named `name` is a JSON document (`.json`), parsed as one value, rather
/// than JSON Lines (anything else).
pub fn is_document(name: &str) -> bool {
    name.ends_with(".json")
}

/// Where every record of a file is, without parsing any: a big file is then parsed
/// one chunk at a time (`store::ingest`), never held parsed whole. An error here (not
/// UTF-8, a broken document) spoils the whole file.
pub fn record_spans(name: &str, bytes: &[u8]) -> Result<Vec<Span>, FileError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = line_of(
            &String::from_utf8_lossy(&bytes[..e.valid_up_to()]),
            e.valid_up_to(),
        );
        file_err(
            name,
            line,
            field_err("record", format!("not UTF-8 text (byte {})", e.valid_up_to())),
        )
    })?;
    // Windows editors often save one; serde would only say "expected value at column 1".
    if text.starts_with('\u{feff}') {
        return Err(file_err(
            name,
            1,
            field_err(
                "file",
                "starts with a byte order mark (U+FEFF): save it as UTF-8 without BOM".to_string(),
            ),
        ));
    }
    if is_document(name) {
        let doc: Document = serde_json::from_str(text).map_err(|e| {
            let msg = e.to_string();
            let field = if ["unknown field", "missing field", "duplicate field"]
                .iter()
                .any(|m| msg.contains(m))
            {
                "records"
            } else {
                "document"
            };
            file_err(
                name,
                e.line().max(1),
                field_err(field, format!("bad JSON document: {e}")),
            )
        })?;
        // Lines counted once, in order, not from the start for every record.
        let (mut line, mut at) = (1, 0);
        Ok(doc
            .records
            .into_iter()
            .map(|raw| {
                let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
                line += text.as_bytes()[at..start].iter().filter(|&&b| b == b'\n').count();
                at = start;
                Span {
                    line,
                    range: start..start + raw.get().len(),
                }
            })
            .collect())
    } else {
        let mut spans = Vec::new();
        let mut start = 0;
        for (i, l) in text.split('\n').enumerate() {
            let end = start + l.len();
            let body = l.strip_suffix('\r').unwrap_or(l);
            if !body.trim().is_empty() {
                spans.push(Span {
                    line: i + 1,
                    range: start..start + body.len(),
                });
            }
            start = end + 1;
        }
        Ok(spans)
    }
}

/// `record_spans` of a JSON Lines file fed a block at a time, so a big file is never
/// held whole: the same spans, and the same first error, as `record_spans` of the whole
/// text (not UTF-8 comes before a byte order mark, as there). Only the line being read
/// is kept. A `.json` document is parsed whole and has no such reader.
#[derive(Debug)]
pub struct LineSpans {
    name: String,
    spans: Vec<Span>,
    /// The bytes of the line not yet ended.
    pending: Vec<u8>,
    /// Its number and the offset of its first byte in the file.
    line: usize,
    start: usize,
    /// The file began with a byte order mark: refused once the rest is known UTF-8.
    bom: bool,
}

impl LineSpans {
    pub fn new(name: &str) -> LineSpans {
        LineSpans {
            name: name.to_string(),
            spans: Vec::new(),
            pending: Vec::new(),
            line: 1,
            start: 0,
            bom: false,
        }
    }

    /// The next bytes of the file.
    pub fn feed(&mut self, mut block: &[u8]) -> Result<(), FileError> {
        while let Some(i) = block.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&block[..i]);
            self.end_line()?;
            block = &block[i + 1..];
        }
        self.pending.extend_from_slice(block);
        Ok(())
    }

    /// The end of the file: every record's span.
    pub fn finish(mut self) -> Result<Vec<Span>, FileError> {
        self.end_line()?;
        if self.bom {
            return Err(file_err(
                &self.name,
                1,
                field_err(
                    "file",
                    "starts with a byte order mark (U+FEFF): save it as UTF-8 without BOM".to_string(),
                ),
            ));
        }
        Ok(self.spans)
    }

    fn end_line(&mut self) -> Result<(), FileError> {
        let text = std::str::from_utf8(&self.pending).map_err(|e| {
            let at = self.start + e.valid_up_to();
            file_err(
                &self.name,
                self.line,
                field_err("record", format!("not UTF-8 text (byte {at})")),
            )
        })?;
        if self.line == 1 && text.starts_with('\u{feff}') {
            self.bom = true;
        }
        let body = text.strip_suffix('\r').unwrap_or(text);
        if !body.trim().is_empty() {
            self.spans.push(Span {
                line: self.line,
                range: self.start..self.start + body.len(),
            });
        }
        self.start += self.pending.len() + 1;
        self.line += 1;
        self.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fed in blocks of any size, the line reader gives what `record_spans` gives for
    /// the whole text: the same spans, or the same first error.
    #[test]
    fn spans_read_a_block_at_a_time_are_those_of_the_whole_text() {
        let texts: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\n\n".to_vec(),
            b"{\"a\":1}".to_vec(),
            b"{\"a\":1}\r\n  \n\t\n{\"b\":2}\n".to_vec(),
            "{\"n\":\"é ü\"}\n\u{2003}\n{\"c\":3}\r".as_bytes().to_vec(),
            "\u{feff}{\"a\":1}\n".as_bytes().to_vec(),
            [b"\xef\xbb\xbf{}\n{}\n".as_slice(), &[0xff, b'\n']].concat(),
            [&b"{}\n{\"x\":\""[..], &[0xe2, 0x82], b"\"}\n"].concat(),
            [&b"{}\n{}"[..], &[0xe2]].concat(),
            [&b"{}\n"[..], &[0xe2], b"\n{}\n"].concat(),
            "{}\n\u{feff}{}\n".as_bytes().to_vec(),
        ];
        for text in &texts {
            let whole = record_spans("t.jsonl", text)
                .map(|s| s.into_iter().map(|s| (s.line, s.range)).collect::<Vec<_>>());
            for block in [1, 2, 3, 7, 64, 1 << 20] {
                let mut r = LineSpans::new("t.jsonl");
                let fed = text
                    .chunks(block.max(1))
                    .try_for_each(|b| r.feed(b))
                    .and_then(|()| r.finish())
                    .map(|s| s.into_iter().map(|s| (s.line, s.range)).collect::<Vec<_>>());
                assert_eq!(
                    fed,
                    whole,
                    "{:?} in blocks of {block}",
                    String::from_utf8_lossy(text)
                );
            }
        }
    }

    /// One line per case: file text → (line, field) of the first error.
    fn check(text: &str, line: usize, field: &str) {
        let e = parse_file("t.jsonl", text.as_bytes()).expect_err(text);
        assert_eq!((e.line, e.field.as_str()), (line, field), "{e}");
    }

    const CAMPAIGN: &str = r#"{"type":"campaign","id":"c","daily_limit":20}"#;

    /// A byte order mark is named as such, not as JSON that "expected value".
    #[test]
    fn a_byte_order_mark_is_named() {
        for name in ["t.jsonl", "t.json"] {
            let text = format!("\u{feff}{{\"records\":[{CAMPAIGN}]}}");
            let text = if name == "t.json" {
                text
            } else {
                format!("\u{feff}{CAMPAIGN}\n")
            };
            let e = parse_file(name, text.as_bytes()).expect_err(name);
            assert_eq!((e.line, e.field.as_str()), (1, "file"), "{e}");
            assert!(e.reason.contains("byte order mark"), "{e}");
            assert_eq!(check_file(name, text.as_bytes()).len(), 1, "{name}");
        }
        // Later in a file it is a character like any other: an error of that record.
        let later = format!("{CAMPAIGN}\n\u{feff}{CAMPAIGN}\n");
        assert_eq!(parse_file("t.jsonl", later.as_bytes()).expect_err("bom").line, 2);
    }

    /// SPEC §6 and §9: a reply names its action, or the account and the prospect.
    #[test]
    fn a_reply_names_an_action_or_an_account_and_a_prospect() {
        let ok = |text: &str| match parse_record(text).expect(text) {
            Record::Event(EventRecord::ReplyReceived { to, .. }) => to,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            ok(r#"{"type":"event","kind":"reply_received","action":"q/x"}"#),
            ReplyTo::Action("q/x".into())
        );
        assert_eq!(
            ok(r#"{"type":"event","kind":"reply_received","account":"a","prospect":"p"}"#),
            ReplyTo::Prospect {
                account: "a".into(),
                prospect: "p".into()
            }
        );
        check(r#"{"type":"event","kind":"reply_received"}"#, 1, "action");
        check(
            r#"{"type":"event","kind":"reply_received","account":"a"}"#,
            1,
            "prospect",
        );
        check(
            r#"{"type":"event","kind":"reply_received","action":"x","account":"a","prospect":"p"}"#,
            1,
            "action",
        );
    }

    #[test]
    fn errors_name_line_and_field() {
        check("{\"type\":\"account\",\"id\":\"a\"}\n{bad", 2, "record");
        check(
            &format!("{CAMPAIGN}\n{{\"type\":\"acount\",\"id\":\"a\"}}"),
            2,
            "type",
        );
        check(
            r#"{"type":"account","id":"a","timezone":"Europe/Berlinn"}"#,
            1,
            "timezone",
        );
        check(r#"{"type":"account","id":"a","tierr":"free"}"#, 1, "tierr");
        check(
            r#"{"type":"account","id":"a","caps":{"invitez":3}}"#,
            1,
            "caps.invitez",
        );
        check(
            r#"{"type":"account","id":"a","caps":{"invites":-3}}"#,
            1,
            "caps.invites",
        );
        // What the config refuses, a job file cannot set: it took up to 2^32 - 1.
        for (text, field) in [
            (
                r#"{"type":"account","id":"a","caps":{"messages":4294967295}}"#,
                "caps.messages",
            ),
            (
                r#"{"type":"account","id":"a","caps":{"invites":10001}}"#,
                "caps.invites",
            ),
            (
                r#"{"type":"account","id":"a","caps":{"weekly_invites":70001}}"#,
                "caps.weekly_invites",
            ),
            (
                r#"{"type":"account","id":"a","inmail_credits":10001}"#,
                "inmail_credits",
            ),
        ] {
            check(text, 1, field);
        }
        let edge = r#"{"type":"account","id":"a","caps":{"messages":10000,"weekly_invites":70000},"inmail_credits":10000}"#;
        assert!(
            parse_file("t.jsonl", edge.as_bytes()).is_ok(),
            "the edges are accepted"
        );
        // An instant whose next window RFC 3339 could not write (status printed
        // `+10000-…` for 9999-12-31).
        check(
            r#"{"type":"action","id":"x","campaign":"c","kind":"invite","prospect":"p","not_before":"9999-12-31T23:59:59Z"}"#,
            1,
            "not_before",
        );
        check(
            r#"{"type":"account","id":"a","window":{"start":"25:00"}}"#,
            1,
            "window.start",
        );
        check(
            r#"{"type":"account","id":"a","window":{"days":["mon","funday"]}}"#,
            1,
            "window.days.1",
        );
        check(
            r#"{"type":"account","id":"a","window":{"start":"17:00","end":"09:00"}}"#,
            1,
            "window.end",
        );
        check(
            r#"{"type":"account","id":"a","ramp_start":"2026-02-30"}"#,
            1,
            "ramp_start",
        );
        check(r#"{"type":"account","id":"a","tier":"gold"}"#, 1, "tier");
        check(r#"{"type":"account"}"#, 1, "id");
        check(r#"{"type":"campaign","id":"c","status":"stopped"}"#, 1, "status");
        check(
            r#"{"type":"action","id":"x","campaign":"c","kind":"invitation","prospect":"p"}"#,
            1,
            "kind",
        );
        check(
            r#"{"type":"action","id":"x","campaign":"c","kind":"invite","prospect":"p","priorty":1}"#,
            1,
            "priorty",
        );
        check(
            r#"{"type":"action","id":"x","campaign":"c","kind":"invite"}"#,
            1,
            "prospect",
        );
        check(
            r#"{"type":"action","id":"x","campaign":"c","kind":"invite","prospect":"p","not_before":"tomorrow"}"#,
            1,
            "not_before",
        );
        check(
            r#"{"type":"action","id":"","campaign":"c","kind":"invite","prospect":"p"}"#,
            1,
            "id",
        );
        check(
            r#"{"type":"event","kind":"invite_sent","account":"a"}"#,
            1,
            "kind",
        );
        check(
            r#"{"type":"event","kind":"tier_changed","account":"a"}"#,
            1,
            "tier",
        );
        check(
            r#"{"type":"event","kind":"cancel_action","action":"a","extra":1}"#,
            1,
            "extra",
        );
        check("[1,2]", 1, "record");
        check(r#"{"id":"a"}"#, 1, "type");
    }

    #[test]
    fn repeated_keys_are_errors_naming_the_key() {
        check(
            r#"{"type":"campaign","id":"c","daily_limit":2,"daily_limit":40}"#,
            1,
            "daily_limit",
        );
        check(
            &format!(
                "{CAMPAIGN}\n{{\"type\":\"account\",\"id\":\"a\",\"caps\":{{\"invites\":5,\"invites\":90}}}}"
            ),
            2,
            "caps.invites",
        );
        check(
            r#"{"type":"account","id":"a","window":{"start":"09:00","start":"01:00"}}"#,
            1,
            "window.start",
        );
        check(
            r#"{"type":"campaign","id":"c","daily_limit":2,"cap_split":{"invites":1,"invites":50}}"#,
            1,
            "cap_split.invites",
        );
        check(r#"{"type":"campaign","type":"account","id":"c"}"#, 1, "type");
        check(r#"{"type":"account","id":"a","id":"b"}"#, 1, "id");
        check(
            r#"{"type":"action","id":"x","campaign":"c","kind":"invite","prospect":"p","payload":{"a":[{"b":1,"b":2}]}}"#,
            1,
            "payload.a.0.b",
        );
        let e = parse_file(
            "t.jsonl",
            br#"{"type":"campaign","id":"c","daily_limit":2,"daily_limit":40}"#,
        )
        .expect_err("repeated key");
        assert!(e.reason.contains("duplicate key `daily_limit`"), "{e}");
        // In a document, both inside a record and at the top.
        let e = parse_file(
            "x.json",
            b"{\"records\": [\n{\"type\":\"campaign\",\"id\":\"c\",\"daily_limit\":2,\"daily_limit\":40}]}",
        )
        .expect_err("repeated key in a document");
        assert_eq!((e.line, e.field.as_str()), (2, "daily_limit"));
        let e = parse_file("x.json", b"{\"records\": [], \"records\": []}").expect_err("repeated records");
        assert_eq!(e.field, "records");
        // Same keys in different objects are fine.
        let ok = r#"{"type":"action","id":"x","campaign":"c","kind":"invite","prospect":"p","payload":{"id":1,"a":{"id":2},"b":[{"id":3},{"id":4}]}}"#;
        assert!(parse_file("t.jsonl", ok.as_bytes()).is_ok());
    }

    #[test]
    fn action_ids_are_safe_idempotency_keys() {
        let action = |id: &str| {
            format!(
                r#"{{"type":"action","id":{},"campaign":"c","kind":"invite","prospect":"p"}}"#,
                serde_json::Value::String(id.into())
            )
        };
        for bad in [
            " dup-key",
            "dup-key ",
            "dup-key\t",
            "dup\u{7f}key",
            "jos\u{e9}/invite",
            "\u{a0}k",
        ] {
            check(&action(bad), 1, "id");
        }
        for good in ["dup-key", "q4/jane/invite", "a b", "x:y@z#1"] {
            assert!(parse_file("t.jsonl", action(good).as_bytes()).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn a_window_patch_keeps_what_it_leaves_out() {
        let base = Window::default();
        let only_start = WindowPatch {
            start: Some(NaiveTime::from_hms_opt(7, 0, 0).expect("time")),
            ..WindowPatch::default()
        };
        let w = only_start.apply(base).expect("07:00-17:00");
        assert_eq!((w.days, w.end), (base.days, base.end));
        let late = WindowPatch {
            start: Some(NaiveTime::from_hms_opt(18, 0, 0).expect("time")),
            ..WindowPatch::default()
        };
        assert_eq!(
            late.apply(base).map_err(|e| e.field),
            Err("window.start".to_string())
        );
    }

    #[test]
    fn parses_every_record_type() {
        let text = r#"{"type":"account","id":"acct-1","tier":"sales_navigator_core","timezone":"Europe/Berlin","window":{"days":["mon","tue","wed","thu","fri"],"start":"09:00","end":"17:00"},"ramp_start":"2026-11-02","established":false,"proxy":"http://user:secret@203.0.113.7:3128","caps":{"invites":80,"messages":80,"inmails":5,"engagement":100},"inmail_credits":50}
{"type":"campaign","id":"q4-founders","timezone":"UTC","daily_limit":20,"cap_split":{"invites":30},"accounts":["acct-1"],"status":"active"}

{"type":"action","id":"q4/jane/invite","campaign":"q4-founders","account":"acct-1","kind":"invite","prospect":"https://www.linkedin.com/in/jane","payload":{"note":"Hi Jane"},"not_before":"2026-11-30T08:00:00Z","priority":0}
{"type":"event","kind":"invite_accepted","account":"acct-1","prospect":"https://www.linkedin.com/in/jane","at":"2026-12-01T10:00:00Z"}
{"type":"event","kind":"reply_received","action":"q4/jane/inmail","at":"2026-12-02T10:00:00Z"}
{"type":"event","kind":"account_restricted","account":"acct-1"}
{"type":"event","kind":"account_resumed","account":"acct-1"}
{"type":"event","kind":"tier_changed","account":"acct-1","tier":"recruiter"}
{"type":"event","kind":"campaign_paused","campaign":"q4-founders"}
{"type":"event","kind":"campaign_resumed","campaign":"q4-founders"}
{"type":"event","kind":"cancel_action","action":"q4/jane/invite"}
{"type":"event","kind":"requeue_action","action":"q4/jane/invite"}
"#;
        let recs = parse_file("spec.jsonl", text.as_bytes()).expect("the spec's own example parses");
        assert_eq!(recs.len(), 12);
        assert_eq!(recs[2].line, 4, "blank lines still count");
        let Record::Account(a) = &recs[0].record else {
            panic!("account")
        };
        assert_eq!(a.timezone, Some(chrono_tz::Europe::Berlin));
        assert_eq!(a.caps.and_then(|c| c.engagement), Some(100));
        let Record::Action(x) = &recs[2].record else {
            panic!("action")
        };
        assert_eq!(x.kind, Kind::Invite);
        assert_eq!(x.payload["note"], "Hi Jane");
    }

    #[test]
    fn json_documents_report_the_records_line() {
        let text = "{\n  \"records\": [\n    {\"type\":\"campaign\",\"id\":\"c\"},\n    {\"type\":\"campaign\",\n     \"id\":\"d\", \"zone\": 1}\n  ]\n}\n";
        let e = parse_file("x.json", text.as_bytes()).expect_err("unknown field");
        assert_eq!((e.line, e.field.as_str()), (4, "zone"));
        let e = parse_file("x.json", b"{\"records\": [], \"extra\": 1}").expect_err("extra key");
        assert_eq!(e.field, "records");
        assert_eq!(parse_file("x.json", b"{\"records\":[]}").map(|r| r.len()), Ok(0));
    }

    #[test]
    fn check_reports_every_bad_line() {
        let text = "{\"type\":\"acount\"}\n{\"type\":\"campaign\",\"id\":\"c\"}\n{bad\n";
        let errors = check_file("t.jsonl", text.as_bytes());
        let at: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(at, vec![(1, "type"), (3, "record")]);
        assert!(check_file("ok.jsonl", b"{\"type\":\"campaign\",\"id\":\"c\"}").is_empty());
    }

    #[test]
    fn binary_junk_is_rejected_with_a_line() {
        let e = parse_file(
            "junk.jsonl",
            b"{\"type\":\"campaign\",\"id\":\"c\"}\n\xff\xfe\x00",
        )
        .expect_err("junk");
        assert_eq!(e.line, 2);
    }
}
