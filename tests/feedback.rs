//! The feedback loop (SPEC §3.3, §3.4, §3.5, §9 "events") on virtual time: acceptances
//! polled from the upstream's feed move the ramp; without feedback it holds and health
//! says why; a page is applied whole and once; a reply matched by account and prospect
//! returns its InMail credit once.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::*;
use sendgate::contract::events::{page_json, FeedEvent};
use sendgate::contract::jobfile::{EventRecord, ReplyTo};
use sendgate::contract::{Outcome, SendRequest};
use sendgate::engine::virtual_run::{Answer, VirtualRun};
use sendgate::engine::{Engine, EngineConfig, Event, FetchError};
use sendgate::policy::Health;
use sendgate::store::Settings;
use sendgate::upstream::sim::Feedback;

fn quiet_settings() -> Settings {
    Settings {
        fsync: false,
        ..Settings::default()
    }
}

fn engine_at(dir: &std::path::Path, now: DateTime<Utc>) -> VirtualRun {
    let store = open(dir, quiet_settings());
    let engine = Engine::new(store, EngineConfig::default(), now).expect("engine starts");
    VirtualRun::new(engine, now)
}

/// A new account on the ramp (start 10), open every day, with a long invite backlog.
fn ramping_account(run: &mut VirtualRun) {
    let account = r#"{"type":"account","id":"a1","tier":"sales_navigator_core","timezone":"UTC","window":{"days":["mon","tue","wed","thu","fri","sat","sun"],"start":"00:00","end":"23:59"},"caps":{"invites":80},"ramp_start":"2026-11-02"}"#;
    let actions: String = (0..1200)
        .map(|i| action_line(&format!("i{i:04}"), "c1", "a1", "invite") + "\n")
        .collect();
    let text = format!("{account}\n{}\n{actions}", campaign_line("c1", 200, ""));
    run.apply_text("f.jsonl", &text).expect("apply");
}

/// Sends everything; a share of invites (`per_ten` in ten, in turn; `late_per_ten`
/// from `switch` on) is accepted six hours later, reported on the upstream's feed.
struct Accepting {
    n: u64,
    per_ten: u64,
    late_per_ten: u64,
    switch: DateTime<Utc>,
}

impl Answer for Accepting {
    fn answer(&mut self, req: &SendRequest, now: DateTime<Utc>) -> (Outcome, Vec<Feedback>) {
        self.n += 1;
        let share = if now < self.switch {
            self.per_ten
        } else {
            self.late_per_ten
        };
        let fb = (self.n % 10 < share).then(|| Feedback {
            at: now + Duration::hours(6),
            event: EventRecord::InviteAccepted {
                account: req.account.clone(),
                prospect: req.prospect.clone(),
                at: None,
            },
        });
        (Outcome::Sent, fb.into_iter().collect())
    }
}

fn ramp_changes(run: &VirtualRun) -> Vec<(u32, u32, String)> {
    run.events("ramp_changed")
        .filter_map(|(_, e)| match e {
            Event::RampChanged { old, new, reason, .. } => Some((*old, *new, reason.clone())),
            _ => None,
        })
        .collect()
}

fn applied_from_feed(run: &VirtualRun) -> u32 {
    run.events("events_polled")
        .map(|(_, e)| match e {
            Event::EventsPolled { applied, .. } => *applied,
            _ => 0,
        })
        .sum()
}

const START: &str = "2026-11-02T00:00:00Z"; // a Monday

/// The ramping account from START for `days` less a minute, `per_ten` of ten invites
/// accepted until day `switch_day`, `late_per_ten` after.
fn ramp_run(
    dir: &std::path::Path,
    per_ten: u64,
    late_per_ten: u64,
    switch_day: i64,
    days: i64,
) -> VirtualRun {
    let start = utc(START);
    let mut run = engine_at(dir, start);
    ramping_account(&mut run);
    let mut up = Accepting {
        n: 0,
        per_ten,
        late_per_ten,
        switch: start + Duration::days(switch_day),
    };
    run.run_until(start + Duration::days(days) - Duration::minutes(1), &mut up)
        .expect("run");
    run
}

#[test]
fn polled_acceptances_at_40_percent_raise_the_ramp_10_15_22_over_three_weeks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = ramp_run(dir.path(), 4, 4, 0, 21);
    assert_eq!(
        ramp_changes(&run),
        vec![(10, 15, "advance".to_string()), (15, 22, "advance".to_string())]
    );
    // Every acceptance came through the feed's pages, none from a job file.
    assert!(applied_from_feed(&run) > 50, "{}", applied_from_feed(&run));
    assert_eq!(
        run.events("feedback_missing").count(),
        1,
        "only before the first page"
    );
    let a = run.engine.store().account("a1").expect("read").expect("a1");
    assert_eq!((a.ramp_ceiling, a.health), (22, Health::Healthy));
}

#[test]
fn at_10_percent_the_ramp_holds_at_its_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = ramp_run(dir.path(), 1, 1, 0, 22);
    // Judged (feedback flows) and found low: at risk, and the ramp never rises; it
    // cannot step back below its start.
    assert!(
        ramp_changes(&run).iter().all(|(_, new, _)| *new <= 10),
        "{:?}",
        ramp_changes(&run)
    );
    let a = run.engine.store().account("a1").expect("read").expect("a1");
    assert_eq!((a.ramp_ceiling, a.health), (10, Health::AtRisk));
    let status = run.engine.store().status(run.now).expect("status");
    assert!(
        status.accounts[0].health_reason.starts_with("acceptance 0.1"),
        "{}",
        status.accounts[0].health_reason
    );
}

#[test]
fn a_fall_to_10_percent_after_the_ramp_rose_steps_it_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = ramp_run(dir.path(), 4, 1, 14, 36);
    let changes = ramp_changes(&run);
    let raised = changes.iter().position(|(o, n, _)| (*o, *n) == (15, 22));
    let stepped = changes.iter().position(|(_, _, r)| r == "step_back");
    assert!(
        matches!((raised, stepped), (Some(r), Some(s)) if r < s),
        "raised to 22 and then stepped back: {changes:?}"
    );
    let (old, new, _) = &changes[stepped.expect("checked")];
    assert!(new < old && *new >= 10, "{changes:?}");
}

#[test]
fn a_new_account_reads_watch_no_acceptance_feedback_from_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = utc(START);
    let mut run = engine_at(dir.path(), start);
    ramping_account(&mut run);
    // Not one tick yet: no day turn has judged it.
    let a = run.engine.store().account("a1").expect("read").expect("a1");
    assert_eq!(a.health, Health::Watch);
    let status = run.engine.store().status(start).expect("status");
    assert!(status.accounts[0]
        .health_reason
        .starts_with("no acceptance feedback"));
    assert_eq!(status.accounts[0].health, "watch");
}

// ---- pages: whole, once, with the cursor ----

fn accepted(id: &str, prospect: &str) -> FeedEvent {
    FeedEvent {
        id: id.into(),
        event: EventRecord::InviteAccepted {
            account: "a1".into(),
            prospect: format!("https://www.linkedin.com/in/{prospect}"),
            at: None,
        },
    }
}

/// Two invites sent on the first day, then pages with repeats, a bad page and a
/// cursor that goes back: each acceptance counts once, the bad page not at all.
#[test]
fn a_page_applies_whole_and_each_event_once_whatever_the_cursor_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T10:00:00Z");
    let mut run = engine_at(dir.path(), now);
    let text = format!(
        "{}\n{}\n{}\n{}\n",
        account_line("a1", ""),
        campaign_line("c1", 50, ""),
        action_line("p1", "c1", "a1", "invite"),
        action_line("p2", "c1", "a1", "invite")
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    run.run_until(
        now + Duration::hours(2),
        &mut |_: &SendRequest, _: DateTime<Utc>| Outcome::Sent,
    )
    .expect("run");
    let e = &mut run.engine;
    let day = now.date_naive();
    let accepted_today = |e: &Engine| e.store().account_day("a1", day).expect("day").invites_accepted;
    assert_eq!(accepted_today(e), 0);

    // A page whose second event names an unknown account: nothing of it applies.
    let mut bad = vec![accepted("e1", "p1"), accepted("e2", "p2")];
    bad[1].event = EventRecord::InviteAccepted {
        account: "nobody".into(),
        prospect: "x".into(),
        at: None,
    };
    let t = now + Duration::hours(3);
    let counts = e.feed_result(Ok(page_json(&bad, "c1")), t).expect("store ok");
    assert_eq!(counts.events, 0);
    assert_eq!(accepted_today(e), 0, "never half-applied");
    assert_eq!(
        e.store().events_cursor().expect("read"),
        None,
        "the cursor did not move"
    );
    let logged = e.drain_events().expect("settled");
    let reason = logged
        .iter()
        .find_map(|ev| match ev {
            Event::EventsPolled { error: Some(r), .. } => Some(r.clone()),
            _ => None,
        })
        .expect("the bad page is logged");
    assert!(
        reason.contains("events.1.account") && reason.contains("unknown account `nobody`"),
        "{reason}"
    );

    // The good page, with e1 twice in it: applied once.
    let good = vec![accepted("e1", "p1"), accepted("e1", "p1")];
    let counts = e.feed_result(Ok(page_json(&good, "c2")), t).expect("ok");
    assert_eq!((counts.applied, counts.duplicates, counts.ignored), (1, 1, 0));
    assert_eq!(accepted_today(e), 1);
    // The cursor goes back and the page comes again, with e2 new: only e2 applies.
    let again = vec![accepted("e1", "p1"), accepted("e2", "p2")];
    let counts = e.feed_result(Ok(page_json(&again, "c1")), t).expect("ok");
    assert_eq!((counts.applied, counts.duplicates), (1, 1));
    assert_eq!(accepted_today(e), 2);
    assert_eq!(e.store().events_cursor().expect("read").as_deref(), Some("c1"));
    // The same prospect accepted under a new id: an invite is accepted once.
    let counts = e
        .feed_result(Ok(page_json(&[accepted("e3", "p1")], "c3")), t)
        .expect("ok");
    assert_eq!((counts.applied, counts.ignored), (0, 1));
    assert_eq!(accepted_today(e), 2);
    // A 429 on the feed is no account signal: the account holds nothing.
    e.feed_result(Err(FetchError::RateLimited { retry_after_s: None }), t)
        .expect("ok");
    let a = e.store().account("a1").expect("read").expect("a1");
    assert_eq!(a.held_until_ms, None);
    assert_eq!(e.store().account_day("a1", day).expect("day").rate_limits, 0);
}

/// SPEC §3.5 and §9: a reply named by account and prospect returns the credit of that
/// prospect's last sent InMail, once, never above the ceiling; from a job file too.
#[test]
fn a_reply_matched_by_account_and_prospect_refunds_the_last_inmail_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = utc("2026-11-25T10:00:00Z");
    let mut run = engine_at(dir.path(), now);
    let prospect = "https://www.linkedin.com/in/jane";
    let inmail = |id: &str| {
        format!(
            r#"{{"type":"action","id":"{id}","campaign":"c1","account":"a1","kind":"inmail","prospect":"{prospect}"}}"#
        )
    };
    let text = format!(
        "{}\n{}\n{}\n{}\n",
        account_line("a1", r#","inmail_credits":10"#),
        campaign_line("c1", 50, ""),
        inmail("m1"),
        inmail("m2")
    );
    run.apply_text("f.jsonl", &text).expect("apply");
    run.run_until(
        now + Duration::hours(2),
        &mut |_: &SendRequest, _: DateTime<Utc>| Outcome::Sent,
    )
    .expect("run");
    let credits = |run: &VirtualRun| {
        run.engine
            .store()
            .account("a1")
            .expect("read")
            .expect("a1")
            .credits
    };
    assert_eq!(credits(&run), 8);
    let reply = |id: &str| FeedEvent {
        id: id.into(),
        event: EventRecord::ReplyReceived {
            to: ReplyTo::Prospect {
                account: "a1".into(),
                prospect: prospect.into(),
            },
            at: None,
        },
    };
    let t = now + Duration::hours(3);
    let c = run
        .engine
        .feed_result(Ok(page_json(&[reply("r1")], "c1")), t)
        .expect("ok");
    assert_eq!((c.applied, c.ignored), (1, 0));
    assert_eq!(credits(&run), 9);
    // The last InMail sent to her was refunded: its action says so.
    let refunded: Vec<bool> = ["m1", "m2"]
        .iter()
        .map(|id| {
            run.engine
                .store()
                .action(id)
                .expect("read")
                .expect("action")
                .refunded
        })
        .collect();
    assert_eq!(refunded.iter().filter(|r| **r).count(), 1);
    // A second reply (new id) about the same InMail refunds nothing more.
    let c = run
        .engine
        .feed_result(Ok(page_json(&[reply("r2")], "c2")), t)
        .expect("ok");
    assert_eq!((c.applied, c.ignored), (0, 1));
    assert_eq!(credits(&run), 9);
    // The job-file form names account and prospect the same way.
    run.apply_text(
        "reply.jsonl",
        &format!(r#"{{"type":"event","kind":"reply_received","account":"a1","prospect":"{prospect}"}}"#),
    )
    .expect("apply");
    assert_eq!(credits(&run), 9, "already refunded: once per action");
    assert_eq!(run.events("file_applied").count(), 2);
}
