//! Which counters each kind draws from, and the admit/block decision (SPEC §3.1, §3.6).
//!
//! The check is TigerBeetle's: reject when `reserved + 1 > limit`. A reservation counts
//! as spent the moment it is taken; nothing here ever gives a slot back.

use super::Kind;
use serde::{Deserialize, Serialize};

/// A per-account counter (SPEC §3.1, plus the InMail credit balance of §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Counter {
    Invites,
    Messages,
    Inmails,
    Engagement,
    WeeklyInvites,
    InmailCredits,
}

impl Counter {
    pub fn as_str(self) -> &'static str {
        match self {
            Counter::Invites => "invites",
            Counter::Messages => "messages",
            Counter::Inmails => "inmails",
            Counter::Engagement => "engagement",
            Counter::WeeklyInvites => "weekly_invites",
            Counter::InmailCredits => "inmail_credits",
        }
    }
}

/// The action types a campaign caps per local day (SPEC §3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignType {
    Invites,
    Messages,
    Inmails,
}

impl CampaignType {
    pub fn of(kind: Kind) -> Option<CampaignType> {
        match kind {
            Kind::Invite => Some(CampaignType::Invites),
            Kind::Message => Some(CampaignType::Messages),
            Kind::Inmail => Some(CampaignType::Inmails),
            Kind::ProfileView | Kind::Comment | Kind::Reaction => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CampaignType::Invites => "invites",
            CampaignType::Messages => "messages",
            CampaignType::Inmails => "inmails",
        }
    }
}

/// The counter that stopped a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Blocker {
    Account(Counter),
    Campaign(CampaignType),
}

impl Blocker {
    /// A stable name for logs and parking reasons, e.g. `account.invites`.
    pub fn name(self) -> String {
        match self {
            Blocker::Account(c) => format!("account.{}", c.as_str()),
            Blocker::Campaign(t) => format!("campaign.{}", t.as_str()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Admit,
    Blocked(Blocker),
}

/// An account's configured daily caps (config `[caps]` merged with the account's override).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caps {
    pub invites: u32,
    pub messages: u32,
    pub inmails: u32,
    pub engagement: u32,
    pub weekly_invites: Option<u32>,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            invites: 80,
            messages: 80,
            inmails: 5,
            engagement: 100,
            weekly_invites: None,
        }
    }
}

/// Counters of one account on one local day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountDay {
    pub invites: u32,
    pub messages: u32,
    pub inmails: u32,
    pub engagement: u32,
}

/// Counters of one campaign on one local day of its zone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignDay {
    pub invites: u32,
    pub messages: u32,
    pub inmails: u32,
}

impl CampaignDay {
    pub fn get(&self, t: CampaignType) -> u32 {
        match t {
            CampaignType::Invites => self.invites,
            CampaignType::Messages => self.messages,
            CampaignType::Inmails => self.inmails,
        }
    }
}

/// The limits in force for one reservation: account caps already reduced by tier and
/// ramp (`invites` is the effective invite cap of SPEC §3.2), and the campaign's caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub invites: u32,
    pub messages: u32,
    pub inmails: u32,
    pub engagement: u32,
    pub weekly_invites: Option<u32>,
    pub campaign: CampaignLimits,
}

/// Per-type campaign caps: `cap_split.<type>` if set, else `daily_limit` (SPEC §3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignLimits {
    pub invites: u32,
    pub messages: u32,
    pub inmails: u32,
}

impl CampaignLimits {
    pub fn get(&self, t: CampaignType) -> u32 {
        match t {
            CampaignType::Invites => self.invites,
            CampaignType::Messages => self.messages,
            CampaignType::Inmails => self.inmails,
        }
    }
}

/// Everything one reservation is checked against: the limits and current usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub limits: Limits,
    pub day: AccountDay,
    /// Invites of the rolling 7 local days ending today (today included).
    pub week_invites: u32,
    pub credits: u32,
    pub campaign_day: CampaignDay,
}

/// The account counters a kind draws from, in the order they are checked.
pub fn draws(kind: Kind) -> &'static [Counter] {
    match kind {
        Kind::Invite => &[Counter::Invites, Counter::WeeklyInvites],
        Kind::Message => &[Counter::Messages, Counter::Engagement],
        Kind::Inmail => &[Counter::Inmails, Counter::InmailCredits],
        Kind::ProfileView | Kind::Comment | Kind::Reaction => &[Counter::Engagement],
    }
}

impl Budget {
    fn used_and_limit(&self, c: Counter) -> (u32, Option<u32>) {
        let l = &self.limits;
        match c {
            Counter::Invites => (self.day.invites, Some(l.invites)),
            Counter::Messages => (self.day.messages, Some(l.messages)),
            Counter::Inmails => (self.day.inmails, Some(l.inmails)),
            Counter::Engagement => (self.day.engagement, Some(l.engagement)),
            Counter::WeeklyInvites => (self.week_invites, l.weekly_invites),
            // A credit balance is "room" of `credits`: used 0 of limit `credits`.
            Counter::InmailCredits => (0, Some(self.credits)),
        }
    }

    /// Admit only if every counter the kind draws from has room for one more.
    pub fn decide(&self, kind: Kind) -> Decision {
        for &c in draws(kind) {
            let (used, limit) = self.used_and_limit(c);
            if let Some(limit) = limit {
                if u64::from(used) + 1 > u64::from(limit) {
                    return Decision::Blocked(Blocker::Account(c));
                }
            }
        }
        if let Some(t) = CampaignType::of(kind) {
            if u64::from(self.campaign_day.get(t)) + 1 > u64::from(self.limits.campaign.get(t)) {
                return Decision::Blocked(Blocker::Campaign(t));
            }
        }
        Decision::Admit
    }

    /// Take one slot of every counter the kind draws from. Call only after `Admit`.
    pub fn take(&mut self, kind: Kind) {
        match kind {
            Kind::Invite => {
                self.day.invites += 1;
                self.week_invites += 1;
                self.campaign_day.invites += 1;
            }
            Kind::Message => {
                self.day.messages += 1;
                self.day.engagement += 1;
                self.campaign_day.messages += 1;
            }
            Kind::Inmail => {
                self.day.inmails += 1;
                self.credits -= 1;
                self.campaign_day.inmails += 1;
            }
            Kind::ProfileView | Kind::Comment | Kind::Reaction => self.day.engagement += 1,
        }
    }

    /// Decide, and take the slots when admitted.
    pub fn reserve(&mut self, kind: Kind) -> Decision {
        let d = self.decide(kind);
        if d == Decision::Admit {
            self.take(kind);
        }
        d
    }

    /// How many more actions of `kind` the account counters allow today (campaign caps
    /// aside); used to pick the account with the most remaining budget.
    pub fn remaining(&self, kind: Kind) -> u32 {
        draws(kind)
            .iter()
            .filter_map(|&c| {
                let (used, limit) = self.used_and_limit(c);
                limit.map(|l| l.saturating_sub(used))
            })
            .min()
            .unwrap_or(u32::MAX)
    }
}

/// Give back the slots `Budget::take` took for one `kind` from the day counters of the
/// reservation (SPEC §3: an attempt that was certainly never received). Returns `false`
/// and changes nothing if a counter holds no slot to give back (a broken store).
/// The rolling week is the sum of the day counters, so it follows; the InMail credit is
/// a balance (`credits::give_back`).
pub fn give_back(kind: Kind, day: &mut AccountDay, campaign_day: &mut CampaignDay) -> bool {
    let (mut d, mut c) = (*day, *campaign_day);
    let ok = match kind {
        Kind::Invite => dec(&mut d.invites) && dec(&mut c.invites),
        Kind::Message => dec(&mut d.messages) && dec(&mut d.engagement) && dec(&mut c.messages),
        Kind::Inmail => dec(&mut d.inmails) && dec(&mut c.inmails),
        Kind::ProfileView | Kind::Comment | Kind::Reaction => dec(&mut d.engagement),
    };
    if ok {
        (*day, *campaign_day) = (d, c);
    }
    ok
}

fn dec(n: &mut u32) -> bool {
    match n.checked_sub(1) {
        Some(v) => {
            *n = v;
            true
        }
        None => false,
    }
}

/// A configured cap in LinkedIn's red zone (SPEC §3.1): accepted, logged once as `red_zone`.
pub fn red_zone(counter: Counter, value: u32) -> bool {
    match counter {
        Counter::Invites | Counter::Messages => value > 90,
        Counter::Inmails => value > 15,
        Counter::Engagement => value > 100,
        Counter::WeeklyInvites | Counter::InmailCredits => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn budget(limits: [u32; 4], weekly: Option<u32>, credits: u32, camp: [u32; 3]) -> Budget {
        Budget {
            limits: Limits {
                invites: limits[0],
                messages: limits[1],
                inmails: limits[2],
                engagement: limits[3],
                weekly_invites: weekly,
                campaign: CampaignLimits {
                    invites: camp[0],
                    messages: camp[1],
                    inmails: camp[2],
                },
            },
            day: AccountDay::default(),
            week_invites: 0,
            credits,
            campaign_day: CampaignDay::default(),
        }
    }

    /// One line per case: (kind, budget) → expected decision.
    fn check(kind: Kind, b: &Budget, expected: Decision) {
        assert_eq!(b.decide(kind), expected, "kind {kind} budget {b:?}");
    }

    #[test]
    fn decision_table() {
        use Blocker::*;
        use Decision::*;
        let open = budget([1, 1, 1, 1], Some(1), 1, [1, 1, 1]);
        for k in Kind::ALL {
            check(k, &open, Admit);
        }
        check(
            Kind::Invite,
            &budget([0, 1, 1, 1], None, 1, [1, 1, 1]),
            Blocked(Account(Counter::Invites)),
        );
        check(
            Kind::Invite,
            &budget([1, 1, 1, 1], Some(0), 1, [1, 1, 1]),
            Blocked(Account(Counter::WeeklyInvites)),
        );
        check(
            Kind::Invite,
            &budget([1, 1, 1, 1], None, 1, [0, 1, 1]),
            Blocked(Campaign(CampaignType::Invites)),
        );
        check(
            Kind::Message,
            &budget([1, 0, 1, 1], None, 1, [1, 1, 1]),
            Blocked(Account(Counter::Messages)),
        );
        check(
            Kind::Message,
            &budget([1, 1, 1, 0], None, 1, [1, 1, 1]),
            Blocked(Account(Counter::Engagement)),
        );
        check(
            Kind::Message,
            &budget([1, 1, 1, 1], None, 1, [1, 0, 1]),
            Blocked(Campaign(CampaignType::Messages)),
        );
        check(
            Kind::Inmail,
            &budget([1, 1, 0, 1], None, 1, [1, 1, 1]),
            Blocked(Account(Counter::Inmails)),
        );
        check(
            Kind::Inmail,
            &budget([1, 1, 1, 1], None, 0, [1, 1, 1]),
            Blocked(Account(Counter::InmailCredits)),
        );
        check(
            Kind::Inmail,
            &budget([1, 1, 1, 1], None, 1, [1, 1, 0]),
            Blocked(Campaign(CampaignType::Inmails)),
        );
        check(
            Kind::ProfileView,
            &budget([1, 1, 1, 0], None, 1, [0, 0, 0]),
            Blocked(Account(Counter::Engagement)),
        );
        check(Kind::Comment, &budget([0, 0, 0, 1], Some(0), 0, [0, 0, 0]), Admit);
        check(
            Kind::Reaction,
            &budget([0, 0, 0, 1], Some(0), 0, [0, 0, 0]),
            Admit,
        );
    }

    #[test]
    fn engagement_is_one_shared_bucket() {
        let mut b = budget([80, 80, 5, 100], None, 0, [100, 100, 100]);
        for _ in 0..60 {
            assert_eq!(b.reserve(Kind::ProfileView), Decision::Admit);
        }
        let mut admitted = 0;
        for k in [Kind::Message, Kind::Comment, Kind::Reaction]
            .into_iter()
            .cycle()
            .take(100)
        {
            if b.reserve(k) == Decision::Admit {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 40);
    }

    #[test]
    fn red_zone_thresholds() {
        assert!(!red_zone(Counter::Invites, 90));
        assert!(red_zone(Counter::Invites, 91));
        assert!(red_zone(Counter::Messages, 91));
        assert!(!red_zone(Counter::Inmails, 15));
        assert!(red_zone(Counter::Inmails, 16));
        assert!(!red_zone(Counter::Engagement, 100));
        assert!(red_zone(Counter::Engagement, 101));
    }

    #[test]
    fn give_back_undoes_take_and_refuses_an_empty_counter() {
        for kind in Kind::ALL {
            let mut b = Budget {
                limits: Limits {
                    invites: 5,
                    messages: 5,
                    inmails: 5,
                    engagement: 5,
                    weekly_invites: None,
                    campaign: CampaignLimits {
                        invites: 5,
                        messages: 5,
                        inmails: 5,
                    },
                },
                day: AccountDay::default(),
                week_invites: 0,
                credits: 3,
                campaign_day: CampaignDay::default(),
            };
            let before = (b.day, b.campaign_day);
            assert_eq!(b.reserve(kind), Decision::Admit);
            assert!(give_back(kind, &mut b.day, &mut b.campaign_day), "{kind}");
            assert_eq!((b.day, b.campaign_day), before, "{kind}");
            assert!(
                !give_back(kind, &mut b.day, &mut b.campaign_day),
                "{kind}: nothing to give back"
            );
            assert_eq!((b.day, b.campaign_day), before, "{kind}: unchanged on refusal");
        }
    }

    fn kind_strategy() -> impl Strategy<Value = Kind> {
        prop::sample::select(Kind::ALL.to_vec())
    }

    proptest! {
        /// For random sequences over random caps, accounts and campaigns: never admit
        /// beyond any cap, and always admit when every counter drawn from has room.
        #[test]
        fn never_beyond_a_cap_always_admits_with_room(
            caps in prop::array::uniform4(0u32..12),
            weekly in prop::option::of(0u32..20),
            credits in 0u32..8,
            camp_caps in prop::collection::vec(prop::array::uniform3(0u32..10), 1..4),
            steps in prop::collection::vec((kind_strategy(), 0usize..4, 0usize..3), 0..200),
        ) {
            // Model: plain per-(account, campaign) tallies, checked independently.
            let n_acc = 2;
            let mut acc_day = vec![AccountDay::default(); n_acc];
            let mut acc_week = vec![0u32; n_acc];
            let mut acc_credits = vec![credits; n_acc];
            let mut camp_day = vec![CampaignDay::default(); camp_caps.len()];
            for (kind, c, a) in steps {
                let c = c % camp_caps.len();
                let a = a % n_acc;
                let cc = camp_caps[c];
                let mut b = Budget {
                    limits: Limits {
                        invites: caps[0], messages: caps[1], inmails: caps[2], engagement: caps[3],
                        weekly_invites: weekly,
                        campaign: CampaignLimits { invites: cc[0], messages: cc[1], inmails: cc[2] },
                    },
                    day: acc_day[a], week_invites: acc_week[a], credits: acc_credits[a],
                    campaign_day: camp_day[c],
                };
                let room = match kind {
                    Kind::Invite => acc_day[a].invites < caps[0]
                        && weekly.is_none_or(|w| acc_week[a] < w)
                        && camp_day[c].invites < cc[0],
                    Kind::Message => acc_day[a].messages < caps[1]
                        && acc_day[a].engagement < caps[3]
                        && camp_day[c].messages < cc[1],
                    Kind::Inmail => acc_day[a].inmails < caps[2]
                        && acc_credits[a] >= 1
                        && camp_day[c].inmails < cc[2],
                    _ => acc_day[a].engagement < caps[3],
                };
                let d = b.reserve(kind);
                prop_assert_eq!(d == Decision::Admit, room);
                acc_day[a] = b.day; acc_week[a] = b.week_invites; acc_credits[a] = b.credits;
                camp_day[c] = b.campaign_day;
                prop_assert!(b.day.invites <= caps[0]);
                prop_assert!(b.day.messages <= caps[1]);
                prop_assert!(b.day.inmails <= caps[2]);
                prop_assert!(b.day.engagement <= caps[3]);
                if let Some(w) = weekly { prop_assert!(b.week_invites <= w); }
                prop_assert!(b.campaign_day.invites <= cc[0]);
                prop_assert!(b.campaign_day.messages <= cc[1]);
                prop_assert!(b.campaign_day.inmails <= cc[2]);
                prop_assert!(b.credits <= credits);
            }
        }
    }

    /// Counter, campaign-type and blocker names are what logs, parking reasons and
    /// `status` print (SPEC §3, §8).
    #[test]
    fn names_are_the_contract_spelling() {
        let counters = [
            Counter::Invites,
            Counter::Messages,
            Counter::Inmails,
            Counter::Engagement,
            Counter::WeeklyInvites,
            Counter::InmailCredits,
        ]
        .map(Counter::as_str);
        assert_eq!(
            counters,
            [
                "invites",
                "messages",
                "inmails",
                "engagement",
                "weekly_invites",
                "inmail_credits"
            ]
        );
        let types = [
            CampaignType::Invites,
            CampaignType::Messages,
            CampaignType::Inmails,
        ]
        .map(CampaignType::as_str);
        assert_eq!(types, ["invites", "messages", "inmails"]);
        assert_eq!(
            Blocker::Account(Counter::WeeklyInvites).name(),
            "account.weekly_invites"
        );
        assert_eq!(
            Blocker::Campaign(CampaignType::Inmails).name(),
            "campaign.inmails"
        );
    }

    /// `take` moves exactly the counters the kind draws from, by one, and spends one
    /// InMail credit per InMail.
    #[test]
    fn take_moves_exactly_the_counters_the_kind_draws_from() {
        let mut start = budget([10, 10, 10, 10], Some(10), 5, [10, 10, 10]);
        start.day = AccountDay {
            invites: 2,
            messages: 2,
            inmails: 2,
            engagement: 2,
        };
        start.week_invites = 2;
        start.campaign_day = CampaignDay {
            invites: 2,
            messages: 2,
            inmails: 2,
        };
        for kind in Kind::ALL {
            let mut b = start;
            b.take(kind);
            let mut want = start;
            match kind {
                Kind::Invite => {
                    want.day.invites = 3;
                    want.week_invites = 3;
                    want.campaign_day.invites = 3;
                }
                Kind::Message => {
                    want.day.messages = 3;
                    want.day.engagement = 3;
                    want.campaign_day.messages = 3;
                }
                Kind::Inmail => {
                    want.day.inmails = 3;
                    want.credits = 4;
                    want.campaign_day.inmails = 3;
                }
                Kind::ProfileView | Kind::Comment | Kind::Reaction => want.day.engagement = 3,
            }
            assert_eq!(b, want, "{kind}");
        }
    }

    /// `remaining` is the smallest room left among the account counters drawn.
    #[test]
    fn remaining_is_the_smallest_room_among_the_counters_drawn() {
        let mut b = budget([10, 20, 5, 30], Some(12), 3, [1, 1, 1]);
        b.day = AccountDay {
            invites: 4,
            messages: 15,
            inmails: 1,
            engagement: 28,
        };
        b.week_invites = 9;
        assert_eq!(b.remaining(Kind::Invite), 3, "the weekly window is tighter");
        assert_eq!(b.remaining(Kind::Message), 2, "engagement is tighter");
        assert_eq!(b.remaining(Kind::Inmail), 3, "the credit balance is tighter");
        assert_eq!(b.remaining(Kind::Comment), 2);
        b.limits.weekly_invites = None;
        assert_eq!(b.remaining(Kind::Invite), 6, "no weekly cap: the daily one");
        b.day.invites = 12;
        assert_eq!(
            b.remaining(Kind::Invite),
            0,
            "over the cap is no room, not a wrap"
        );
    }
}
