//! Upstream outages (SPEC §3 and §5 "not delivered", "Upstream down") on virtual time
//! with a scripted upstream: the circuit breaker, and slots given back for attempts that
//! never left.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::*;
use sendgate::contract::{Outcome, SendRequest};
use sendgate::engine::virtual_run::VirtualRun;
use sendgate::engine::{Engine, EngineConfig, Event};
use sendgate::store::{Attempt, ReserveResult, Settings, State};
use std::collections::BTreeMap;

const ACCOUNTS: [&str; 3] = ["a1", "a2", "a3"];
const CAP: u32 = 40;
/// A Wednesday; the accounts' window is 09:00–17:00 UTC.
const DAY: &str = "2026-11-25";

fn at(hms: &str) -> DateTime<Utc> {
    utc(&format!("{DAY}T{hms}Z"))
}

fn settings() -> Settings {
    Settings {
        fsync: false,
        ..Settings::default()
    }
}

/// Three accounts with an invite cap of 40 and three times that many invites queued,
/// started at 08:00 (the window opens at 09:00).
fn three_accounts(dir: &std::path::Path, settings: Settings) -> VirtualRun {
    let store = open(dir, settings);
    let engine = Engine::new(store, EngineConfig::default(), at("08:00:00")).expect("engine starts");
    let mut run = VirtualRun::new(engine, at("08:00:00"));
    let mut text = campaign_line("c1", 1000, "") + "\n";
    for a in ACCOUNTS {
        text += &format!(
            r#"{{"type":"account","id":"{a}","tier":"sales_navigator_core","timezone":"UTC","window":{{"days":["mon","tue","wed","thu","fri"],"start":"09:00","end":"17:00"}},"established":true,"caps":{{"invites":{CAP}}}}}"#
        );
        text.push('\n');
        for i in 0..3 * CAP {
            text += &action_line(&format!("{a}-{i:03}"), "c1", a, "invite");
            text.push('\n');
        }
    }
    run.apply_text("f.jsonl", &text).expect("apply");
    run
}

fn refused() -> Outcome {
    Outcome::NotDelivered {
        reason: "connection refused".into(),
    }
}

fn server_error() -> Outcome {
    Outcome::MaybeDelivered {
        reason: "HTTP 503".into(),
    }
}

/// The upstream is down with `down` from 09:00 to 12:00, then sends everything.
fn outage(down: Outcome) -> impl FnMut(&SendRequest, DateTime<Utc>) -> Outcome {
    move |_, t| {
        if t < at("12:00:00") {
            down.clone()
        } else {
            Outcome::Sent
        }
    }
}

fn reservations(run: &VirtualRun) -> Vec<(DateTime<Utc>, String)> {
    run.events("action_reserved")
        .filter_map(|(t, e)| match e {
            Event::ActionReserved { account, .. } => Some((*t, account.clone())),
            _ => None,
        })
        .collect()
}

fn sent_per_account(run: &VirtualRun) -> BTreeMap<String, u32> {
    let mut n = BTreeMap::new();
    for (_, e) in run.events("action_sent") {
        if let Event::ActionSent { account, .. } = e {
            *n.entry(account.clone()).or_default() += 1;
        }
    }
    n
}

fn up_events(run: &VirtualRun) -> Vec<(DateTime<Utc>, i64, u32)> {
    run.events("upstream_up")
        .filter_map(|(t, e)| match e {
            Event::UpstreamUp { down_s, probes, .. } => Some((*t, *down_s, *probes)),
            _ => None,
        })
        .collect()
}

fn count_state(run: &VirtualRun, s: State) -> usize {
    let store = run.engine.store();
    store
        .actions()
        .expect("actions")
        .iter()
        .filter(|a| a.state == s)
        .count()
}

fn assert_audit_clean(run: &VirtualRun) -> sendgate::store::AuditReport {
    let audit = run.engine.store().audit(None, None).expect("audit");
    assert!(audit.clean(), "{audit:?}");
    audit
}

/// Per account, consecutive reservations are at least `pacing.min_gap_s` apart.
fn assert_paced(run: &VirtualRun) {
    let mut last: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    for (t, a) in reservations(run) {
        if let Some(prev) = last.insert(a.clone(), t) {
            let gap = (t - prev).num_seconds();
            assert!(gap >= 45, "{a}: reservations {gap}s apart at {t}");
        }
    }
}

#[test]
fn refused_for_three_hours_then_every_account_still_reaches_its_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = three_accounts(dir.path(), settings());
    run.run_until(at("17:00:00"), &mut outage(refused()))
        .expect("run");
    let sent = sent_per_account(&run);
    for a in ACCOUNTS {
        assert_eq!(sent.get(a), Some(&CAP), "{a} reaches its cap: {sent:?}");
        let day = run
            .engine
            .store()
            .account_day(a, at("12:00:00").date_naive())
            .expect("day");
        assert_eq!(
            day.reserved.invites, CAP,
            "{a}: refused attempts gave their slots back"
        );
    }
    assert_eq!(count_state(&run, State::Failed), 0, "an outage fails nothing");
    assert_eq!(run.events("upstream_down").count(), 1);
    let up = up_events(&run);
    assert_eq!(up.len(), 1, "{up:?}");
    let (closed_at, down_s, probes) = up[0];
    assert!(
        closed_at >= at("12:00:00") && closed_at <= at("12:05:00"),
        "{closed_at}"
    );
    assert!(down_s >= 3 * 3600 - 120, "outage length {down_s}s");
    // The breaker held dispatch back: about one probe per `breaker_max_s`, not a send
    // per account per pacing gap (3 accounts · 3 h / 142 s ≈ 230).
    let during: usize = reservations(&run)
        .iter()
        .filter(|(t, _)| *t >= at("09:00:00") && *t < at("12:00:00"))
        .count();
    assert!(
        during <= 5 + probes as usize,
        "{during} attempts during the outage, {probes} probes"
    );
    assert!((20..=60).contains(&probes), "{probes} probes in three hours");
    let audit = assert_audit_clean(&run);
    assert_eq!(audit.releases as usize, during, "every refused attempt released");
    assert_paced(&run);
}

#[test]
fn a_5xx_storm_loses_at_most_breaker_failures_plus_the_probes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = three_accounts(dir.path(), settings());
    run.run_until(at("17:00:00"), &mut outage(server_error()))
        .expect("run");
    let up = up_events(&run);
    assert_eq!(up.len(), 1, "{up:?}");
    let probes = up[0].2 as usize;
    let unknown = count_state(&run, State::Unknown);
    assert!(unknown <= 5 + probes, "{unknown} unknown, {probes} probes");
    assert!(unknown >= 5, "5xx may have delivered: never retried ({unknown})");
    assert_eq!(count_state(&run, State::Failed), 0);
    // Maybe-delivered slots stay used; the rest of each cap is sent after noon.
    let sent = sent_per_account(&run);
    for a in ACCOUNTS {
        let day = run
            .engine
            .store()
            .account_day(a, at("12:00:00").date_naive())
            .expect("day");
        assert_eq!(day.reserved.invites, CAP, "{a}");
    }
    let total: u32 = sent.values().sum();
    assert_eq!(total as usize + unknown, ACCOUNTS.len() * CAP as usize);
    let audit = assert_audit_clean(&run);
    assert_eq!(
        audit.releases, 0,
        "a maybe-delivered attempt never returns a slot"
    );
}

/// The breaker closes on the first answer from the service, whatever it says.
fn check_closes_on(first: Outcome) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = three_accounts(dir.path(), settings());
    let mut answered_at: Option<DateTime<Utc>> = None;
    let mut upstream = |_: &SendRequest, t: DateTime<Utc>| {
        if t < at("10:00:00") {
            refused()
        } else if answered_at.is_none() {
            answered_at = Some(t);
            first.clone()
        } else {
            Outcome::Sent
        }
    };
    run.run_until(at("11:00:00"), &mut upstream).expect("run");
    let up = up_events(&run);
    assert_eq!(up.len(), 1, "{first:?}: {up:?}");
    assert_eq!(Some(up[0].0), answered_at, "{first:?} closes the breaker");
    assert_audit_clean(&run);
}

#[test]
fn the_breaker_closes_on_the_first_2xx_409_429_or_4xx() {
    // 2xx and 409 both read as `sent` (SPEC §9, upstream::http's tests).
    check_closes_on(Outcome::Sent);
    check_closes_on(Outcome::RateLimited { retry_after_s: None });
    check_closes_on(Outcome::Invalid {
        reason: "http 400".into(),
    });
    check_closes_on(Outcome::OutOfNetwork);
    check_closes_on(Outcome::Restricted);
}

#[test]
fn after_closing_accounts_resume_at_their_pace_not_in_a_burst() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = three_accounts(dir.path(), settings());
    run.run_until(at("17:00:00"), &mut outage(refused()))
        .expect("run");
    let (closed_at, _, _) = up_events(&run)[0];
    let next: Vec<DateTime<Utc>> = reservations(&run)
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| *t > closed_at)
        .take(3)
        .collect();
    // The probe that closed it was the last reservation at `closed_at`; every account
    // then waits one ordinary pacing gap (45–240 s).
    assert!(
        next.iter().all(|t| (*t - closed_at).num_seconds() >= 45),
        "{closed_at}: {next:?}"
    );
    assert_eq!(
        reservations(&run).iter().filter(|(t, _)| *t == closed_at).count(),
        1,
        "one probe closed it"
    );
    assert_paced(&run);
}

#[test]
fn a_429_probe_closes_the_breaker_and_still_holds_its_account() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = three_accounts(dir.path(), settings());
    let mut limited: Option<(String, DateTime<Utc>)> = None;
    let mut upstream = |req: &SendRequest, t: DateTime<Utc>| {
        if t < at("10:00:00") {
            refused()
        } else if limited.is_none() {
            limited = Some((req.account.clone(), t));
            Outcome::RateLimited { retry_after_s: None }
        } else {
            Outcome::Sent
        }
    };
    run.run_until(at("17:00:00"), &mut upstream).expect("run");
    let (account, t) = limited.expect("a probe after 10:00");
    assert_eq!(up_events(&run).first().map(|u| u.0), Some(t));
    let after: Vec<_> = reservations(&run)
        .into_iter()
        .filter(|(r, a)| *a == account && *r > t)
        .collect();
    assert!(after.is_empty(), "{account} is held for the day (P7): {after:?}");
    let sent = sent_per_account(&run);
    for a in ACCOUNTS.iter().filter(|a| **a != account) {
        assert_eq!(sent.get(*a), Some(&CAP), "{a}: {sent:?}");
    }
    assert_audit_clean(&run);
}

#[test]
fn probes_do_not_count_against_max_attempts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(
        dir.path(),
        Settings {
            max_attempts: 2,
            ..settings()
        },
    );
    let mut now = at("10:00:00");
    let text = format!(
        "{}\n{}\n{}\n",
        account_line("a1", ""),
        campaign_line("c1", 100, ""),
        action_line("x", "c1", "a1", "message")
    );
    apply(&store, "f.jsonl", &text, now);
    for _ in 0..6 {
        let (results, _) = store.reserve(&["x".to_string()], now).expect("reserve");
        assert!(matches!(results[0], ReserveResult::Reserved(_)), "{results:?}");
        let probe = Attempt {
            action: "x".into(),
            outcome: refused(),
            backoff_s: 10,
            probe: true,
        };
        store.record_attempts(&[probe], now).expect("record");
        let a = store.action("x").expect("read").expect("exists");
        assert_eq!((a.state, a.retries), (State::Queued, 0), "{a:?}");
        now += Duration::seconds(11);
        store.promote_due(now).expect("promote");
    }
    // An ordinary attempt counts.
    for n in 1..=2 {
        store.reserve(&["x".to_string()], now).expect("reserve");
        store.record(&[("x".into(), refused(), 10)], now).expect("record");
        now += Duration::seconds(11);
        store.promote_due(now).expect("promote");
        let a = store.action("x").expect("read").expect("exists");
        assert_eq!(a.retries, n);
    }
    let a = store.action("x").expect("read").expect("exists");
    assert_eq!(a.state, State::Failed, "{a:?}");
    assert_eq!(a.attempts, 8);
    let audit = store.audit(None, None).expect("audit");
    assert!(audit.clean() && audit.releases == 8, "{audit:?}");
}

/// A not-delivered attempt gives back every slot it took, on the local day of the
/// reservation even when the answer comes after midnight; a maybe-delivered one none.
#[test]
fn a_refused_attempt_returns_its_slots_on_the_reservation_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), settings());
    let before = utc("2026-11-25T23:58:30Z"); // the window ends at 23:59
    let after = utc("2026-11-26T00:00:20Z");
    let text = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n",
        account_line("a1", r#","inmail_credits":4"#),
        campaign_line("c1", 100, ""),
        action_line("i", "c1", "a1", "invite"),
        action_line("m", "c1", "a1", "inmail"),
        action_line("g", "c1", "a1", "message"),
        action_line("u", "c1", "a1", "invite"),
    );
    apply(&store, "f.jsonl", &text, before);
    let ids: Vec<String> = ["i", "m", "g", "u"].iter().map(|s| s.to_string()).collect();
    let (results, _) = store.reserve(&ids, before).expect("reserve");
    assert!(
        results.iter().all(|r| matches!(r, ReserveResult::Reserved(_))),
        "{results:?}"
    );
    let d0 = before.date_naive();
    let day = store.account_day("a1", d0).expect("day").reserved;
    assert_eq!(
        (day.invites, day.inmails, day.messages, day.engagement),
        (2, 1, 1, 1)
    );
    let credits = |s: &sendgate::store::Store| s.account("a1").expect("read").expect("a1").credits;
    assert_eq!(credits(&store), 3);
    let outcomes: Vec<_> = ["i", "m", "g"]
        .iter()
        .map(|id| (id.to_string(), refused(), 60))
        .chain([("u".to_string(), server_error(), 60)])
        .collect();
    let (recorded, _) = store.record(&outcomes, after).expect("record");
    assert_eq!(
        recorded.iter().map(|r| r.released).collect::<Vec<_>>(),
        vec![true, true, true, false]
    );
    let day = store.account_day("a1", d0).expect("day").reserved;
    assert_eq!(
        (day.invites, day.inmails, day.messages, day.engagement),
        (1, 0, 0, 0),
        "only the maybe-delivered invite keeps its slot"
    );
    let next = store.account_day("a1", after.date_naive()).expect("day").reserved;
    assert_eq!(
        next,
        sendgate::policy::caps::AccountDay::default(),
        "nothing taken from the day of the answer"
    );
    assert_eq!(credits(&store), 4, "the InMail credit is back");
    let audit = store.audit(None, None).expect("audit");
    assert!(audit.clean(), "{audit:?}");
    assert_eq!((audit.entries, audit.releases), (4, 3));
}

/// P1 is judged on reservations minus releases: the audit still finds a real overshoot,
/// and a counter that disagrees with the ledger, when releases are in it.
#[test]
fn audit_with_releases_still_finds_an_overshoot_and_a_mismatch() {
    use sendgate::store::codec::{decode, encode};
    use sendgate::store::records::{AccountDayRec, LedgerReservations};
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T12:00:00Z");
    {
        let store = open(dir.path(), settings());
        let mut text = format!(
            "{}\n{}\n",
            account_line("a1", r#","caps":{"invites":3}"#),
            campaign_line("c1", 10, "")
        );
        for i in 0..4 {
            text += &action_line(&format!("x{i}"), "c1", "a1", "invite");
            text.push('\n');
        }
        apply(&store, "f.jsonl", &text, now);
        // Three reserved, one refused and given back, then the fourth fits the cap.
        let ids: Vec<String> = (0..3).map(|i| format!("x{i}")).collect();
        store.reserve(&ids, now).expect("reserve");
        store
            .record(&[("x0".into(), refused(), 600)], now)
            .expect("record");
        let (r, _) = store.reserve(&["x3".to_string()], now).expect("reserve");
        assert!(matches!(r[0], ReserveResult::Reserved(_)), "{r:?}");
        let audit = store.audit(None, None).expect("audit");
        assert!(
            audit.clean() && audit.entries == 4 && audit.releases == 1,
            "{audit:?}"
        );
    }
    // Without the release the fourth reservation overshoots: remove it behind the
    // store's back, and the audit must say so (and that the counter disagrees).
    {
        let db = raw_sled(&dir.path().join("store"));
        let ledger = db.open_tree("ledger").expect("ledger");
        let release: Vec<_> = ledger
            .iter()
            .keys()
            .map(|k| k.expect("key"))
            .filter(|k| sendgate::store::codec::is_release_key(k))
            .collect();
        assert_eq!(release.len(), 1);
        ledger.remove(&release[0]).expect("remove");
        db.flush().expect("flush");
    }
    let store = open(dir.path(), settings());
    let audit = store.audit(None, None).expect("audit");
    assert_eq!(audit.overshoots.len(), 1, "{audit:?}");
    let o = &audit.overshoots[0];
    assert_eq!((o.counter.as_str(), o.count, o.limit), ("invites", 4, 3));
    assert_eq!(
        audit.mismatches.len(),
        2,
        "account and campaign counters: {audit:?}"
    );
    drop(store);
    // A release of a slot never counted is a mismatch too.
    {
        let db = raw_sled(&dir.path().join("store"));
        let ledger = db.open_tree("ledger").expect("ledger");
        let days = db.open_tree("days").expect("days");
        let key = sendgate::store::codec::account_day_key("a1", now.date_naive());
        let mut d: AccountDayRec =
            decode("day", &days.get(&key).expect("read").expect("a day")).expect("decodes");
        d.reserved.invites = 3;
        days.insert(key, encode(&d)).expect("write");
        let (k, v) = ledger.first().expect("read").expect("an entry");
        let b: LedgerReservations = decode("ledger reservations", &v).expect("decodes");
        let e = b.entries.into_iter().next().expect("an entry");
        let bogus = sendgate::store::records::LedgerRelease {
            action: e.action,
            account: e.account,
            campaign: e.campaign,
            kind: e.kind,
            attempt: e.attempt,
            at_ms: e.at_ms,
            account_day: e.account_day + Duration::days(3),
            campaign_day: e.campaign_day,
            reservation: sendgate::store::codec::ledger_id(&k).expect("an id"),
        };
        ledger
            .insert(sendgate::store::codec::release_key(1 << 40), encode(&bogus))
            .expect("write");
        db.flush().expect("flush");
    }
    let store = open(dir.path(), settings());
    let audit = store.audit(None, None).expect("audit");
    assert!(
        audit.mismatches.iter().any(|m| m.contains("no such reservation")),
        "{audit:?}"
    );
}
