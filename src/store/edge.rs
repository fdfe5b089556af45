//! The edge between the in-memory records (`records.rs`, which hold policy types such as
//! `Kind`, `Tier`, `Window`, `AccountDay`) and their wire types (`wire.rs`): the one place
//! that converts, as the [`Value`] of each record. Policy enums map to wire tags by
//! name, in one exhaustive table each (`enum_map!`), so reordering a policy enum changes
//! no stored byte, and a new policy variant does not compile until it is given a tag.
//! Reading a tag no table knows is an error naming the enum and the tag (the caller adds
//! the record and key, `codec::decode_at`), never a panic.

use super::codec::{self, Layout, Value};
use super::records::{
    Account, AccountCaps, AccountDayRec, Action, Campaign, FileReport, LedgerEntry, LedgerLimits,
    LedgerOutcome, LedgerOutcomes, LedgerRelease, LedgerReservations, PendingZone, State, StateCounts,
};
use super::wire::{
    AccountCapsW, AccountDayW, AccountReservedW, AccountV1W, AccountV2W, ActionBodyView, ActionBodyW,
    ActionStateW, ActionW, CampaignDayW, CampaignV2W, CampaignW, Day, FileReportW, HealthW, KindW,
    LedgerEntryW, LedgerLimitsW, LedgerOutcomeW, LedgerOutcomesW, LedgerReleaseW, LedgerReservationsW,
    PendingZoneW, StateCountsW, StateW, Tag, TierW, WindowW, WireEnum,
};
use crate::policy::caps::{AccountDay, CampaignDay};
use crate::policy::{Health, Kind, Tier, Window};
use std::borrow::Cow;

/// Both directions between an in-memory enum and its wire enum, variant by variant (the
/// same names on both sides); and its `Value` alone, as its tag (`store::golden`).
macro_rules! enum_map {
    ($mem:ident <-> $wire:ident { $($v:ident),+ $(,)? }) => {
        impl From<$mem> for $wire {
            fn from(m: $mem) -> $wire {
                match m {
                    $($mem::$v => $wire::$v,)+
                }
            }
        }

        impl From<$wire> for $mem {
            fn from(w: $wire) -> $mem {
                match w {
                    $($wire::$v => $mem::$v,)+
                }
            }
        }

        impl Value for $mem {
            fn to_stored(&self) -> Vec<u8> {
                codec::seal_v1(&Tag::of($wire::from(*self)))
            }

            fn from_stored(bytes: &[u8]) -> Result<$mem, String> {
                codec::open_v1::<Tag<$wire>>(bytes)?.get().map($mem::from)
            }
        }
    };
}

enum_map!(Tier <-> TierW {
    Free,
    PremiumCareer,
    PremiumBusiness,
    SalesNavigatorCore,
    SalesNavigatorAdvanced,
    RecruiterLite,
    Recruiter,
});
enum_map!(Health <-> HealthW { Healthy, Watch, AtRisk, Restricted });
enum_map!(Kind <-> KindW { Invite, Message, Inmail, ProfileView, Comment, Reaction });
enum_map!(State <-> StateW { Queued, Parked, Inflight, Sent, Failed, Unknown, Cancelled });

fn tag<M, W: WireEnum + From<M>>(m: M) -> Tag<W> {
    Tag::of(W::from(m))
}

fn untag<M: From<W>, W: WireEnum>(t: Tag<W>) -> Result<M, String> {
    t.get().map(M::from)
}

fn text(s: &str) -> Cow<'_, str> {
    Cow::Borrowed(s)
}

fn opt_text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(Cow::Borrowed)
}

fn opt_string(s: Option<Cow<'_, str>>) -> Option<String> {
    s.map(Cow::into_owned)
}

// ---- Accounts ----

fn window_w(w: &Window) -> WindowW {
    WindowW {
        days: w.days,
        start: w.start,
        end: w.end,
    }
}

fn window(w: WindowW) -> Window {
    Window {
        days: w.days,
        start: w.start,
        end: w.end,
    }
}

fn caps_w(c: &AccountCaps) -> AccountCapsW {
    AccountCapsW {
        invites: c.invites,
        messages: c.messages,
        inmails: c.inmails,
        engagement: c.engagement,
        weekly_invites: c.weekly_invites,
    }
}

fn caps(c: AccountCapsW) -> AccountCaps {
    AccountCaps {
        invites: c.invites,
        messages: c.messages,
        inmails: c.inmails,
        engagement: c.engagement,
        weekly_invites: c.weekly_invites,
    }
}

fn account_w(a: &Account) -> AccountV2W<'_> {
    AccountV2W {
        layout1: AccountV1W {
            id: text(&a.id),
            tier: tag(a.tier),
            timezone: text(&a.timezone),
            window: window_w(&a.window),
            ramp_start: Day(a.ramp_start),
            established: a.established,
            proxy: opt_text(&a.proxy),
            caps: caps_w(&a.caps),
            credits: a.credits,
            refill_day: a.refill_day,
            last_refill_ms: a.last_refill_ms,
            ramp_ceiling: a.ramp_ceiling,
            ramp_history: a.ramp_history.iter().map(|&(d, n)| (Day(d), n)).collect(),
            last_reserved_ms: a.last_reserved_ms,
            ramp_steps: a.ramp_steps,
            health: tag(a.health),
            restricted: a.restricted,
            held_until_ms: a.held_until_ms,
            maintained_day: Day(a.maintained_day),
        },
        pending_zone: pending_zone_w(&a.pending_zone),
        summarised_day: a.summarised_day.map(Day),
    }
}

/// An account from layout 1, before zone changes and summaries were stored. Layout 2
/// sets both after.
fn account_v1(w: AccountV1W<'_>) -> Result<Account, String> {
    Ok(Account {
        id: w.id.into_owned(),
        tier: untag(w.tier)?,
        timezone: w.timezone.into_owned(),
        window: window(w.window),
        ramp_start: w.ramp_start.0,
        established: w.established,
        proxy: opt_string(w.proxy),
        caps: caps(w.caps),
        credits: w.credits,
        refill_day: w.refill_day,
        last_refill_ms: w.last_refill_ms,
        ramp_ceiling: w.ramp_ceiling,
        ramp_history: w.ramp_history.iter().map(|&(d, n)| (d.0, n)).collect(),
        last_reserved_ms: w.last_reserved_ms,
        ramp_steps: w.ramp_steps,
        health: untag(w.health)?,
        restricted: w.restricted,
        held_until_ms: w.held_until_ms,
        // Summaries up to the day before the last maintained one are taken as
        // emitted: an upgrade repeats at most one.
        summarised_day: w.maintained_day.0.pred_opt(),
        maintained_day: w.maintained_day.0,
        pending_zone: None,
    })
}

fn account_v2(w: AccountV2W<'_>) -> Result<Account, String> {
    Ok(Account {
        pending_zone: pending_zone(w.pending_zone),
        summarised_day: w.summarised_day.map(|d| d.0),
        ..account_v1(w.layout1)?
    })
}

/// Written as layout 2 (`Stored::V2`); layout 1 still reads.
impl Value for Account {
    fn to_stored(&self) -> Vec<u8> {
        codec::seal_v2(&account_w(self))
    }

    fn from_stored(bytes: &[u8]) -> Result<Account, String> {
        match codec::open_evolved::<AccountV1W<'static>, AccountV2W<'static>>(bytes)? {
            Layout::V1(w) => account_v1(w),
            Layout::V2(w) => account_v2(w),
        }
    }
}

// ---- Campaigns and actions ----

fn pending_zone_w(p: &Option<PendingZone>) -> Option<PendingZoneW<'_>> {
    p.as_ref().map(|p| PendingZoneW {
        timezone: text(&p.timezone),
        from_ms: p.from_ms,
        last_old_day: Day(p.last_old_day),
    })
}

fn pending_zone(p: Option<PendingZoneW<'_>>) -> Option<PendingZone> {
    p.map(|p| PendingZone {
        timezone: p.timezone.into_owned(),
        from_ms: p.from_ms,
        last_old_day: p.last_old_day.0,
    })
}

fn campaign_w(c: &Campaign) -> CampaignV2W<'_> {
    CampaignV2W {
        layout1: CampaignW {
            id: text(&c.id),
            timezone: text(&c.timezone),
            daily_limit: c.daily_limit,
            split_invites: c.split_invites,
            split_messages: c.split_messages,
            split_inmails: c.split_inmails,
            accounts: Cow::Borrowed(&c.accounts),
            paused: c.paused,
        },
        pending_zone: pending_zone_w(&c.pending_zone),
    }
}

/// A campaign from layout 1, before zone changes were held pending: none is.
fn campaign_v1(w: CampaignW<'_>) -> Campaign {
    Campaign {
        id: w.id.into_owned(),
        timezone: w.timezone.into_owned(),
        daily_limit: w.daily_limit,
        split_invites: w.split_invites,
        split_messages: w.split_messages,
        split_inmails: w.split_inmails,
        accounts: w.accounts.into_owned(),
        paused: w.paused,
        pending_zone: None,
    }
}

/// Written as layout 2 (`Stored::V2`); layout 1 still reads.
impl Value for Campaign {
    fn to_stored(&self) -> Vec<u8> {
        codec::seal_v2(&campaign_w(self))
    }

    fn from_stored(bytes: &[u8]) -> Result<Campaign, String> {
        match codec::open_evolved::<CampaignW<'static>, CampaignV2W<'static>>(bytes)? {
            Layout::V1(w) => Ok(campaign_v1(w)),
            Layout::V2(w) => Ok(Campaign {
                pending_zone: pending_zone(w.pending_zone),
                ..campaign_v1(w.layout1)
            }),
        }
    }
}

/// An `actions` (or `staged`) value as read: layout 1 (format 1 and 2 stores) holds the
/// whole action; layout 2 only its state, the rest being its body in `bodies`.
pub(super) enum StoredAction {
    Whole(Action),
    State(ActionStateW<'static>),
}

impl Action {
    /// The `actions` value: layout 2, the state alone (`ActionStateW`).
    pub(super) fn encode_state(&self) -> Vec<u8> {
        codec::seal_v2(&ActionStateW {
            state: tag(self.state),
            attempts: self.attempts,
            retries: self.retries,
            reason: opt_text(&self.reason),
            until_ms: self.until_ms,
            updated_ms: self.updated_ms,
            sent_day: self.sent_day.map(codec::day_num),
            accepted: self.accepted,
            refunded: self.refunded,
        })
    }

    /// The `bodies` value: what never changes after ingest (`ActionBodyW`).
    pub(super) fn encode_body(&self) -> Vec<u8> {
        codec::seal_v1(&ActionBodyW {
            campaign: text(&self.campaign),
            account: text(&self.account),
            kind: tag(self.kind),
            prospect: text(&self.prospect),
            payload: text(&self.payload),
            priority: self.priority,
            seq: self.seq,
        })
    }

    /// Layout 1, as format 1 and 2 stores hold it (never written by this build: tests
    /// make old stores with it).
    #[cfg(test)]
    pub(super) fn encode_layout1(&self) -> Vec<u8> {
        codec::seal_v1(&ActionW {
            id: text(&self.id),
            campaign: text(&self.campaign),
            account: text(&self.account),
            kind: tag(self.kind),
            prospect: text(&self.prospect),
            payload: text(&self.payload),
            priority: self.priority,
            seq: self.seq,
            state: tag(self.state),
            attempts: self.attempts,
            retries: self.retries,
            reason: opt_text(&self.reason),
            until_ms: self.until_ms,
            updated_ms: self.updated_ms,
            sent_day: self.sent_day.map(Day),
            accepted: self.accepted,
            refunded: self.refunded,
        })
    }

    /// An `actions` value in either layout (no context: the caller adds the key).
    pub(super) fn read_stored(bytes: &[u8]) -> Result<StoredAction, String> {
        match codec::open_evolved::<ActionW<'static>, ActionStateW<'static>>(bytes)? {
            Layout::V1(w) => Ok(StoredAction::Whole(Action {
                id: w.id.into_owned(),
                campaign: w.campaign.into_owned(),
                account: w.account.into_owned(),
                kind: untag(w.kind)?,
                prospect: w.prospect.into_owned(),
                payload: w.payload.into_owned(),
                priority: w.priority,
                seq: w.seq,
                state: untag(w.state)?,
                attempts: w.attempts,
                retries: w.retries,
                reason: opt_string(w.reason),
                until_ms: w.until_ms,
                updated_ms: w.updated_ms,
                sent_day: w.sent_day.map(|d| d.0),
                accepted: w.accepted,
                refunded: w.refunded,
            })),
            Layout::V2(s) => Ok(StoredAction::State(s)),
        }
    }

    /// The action `id` from its state (layout 2) and its body's bytes.
    pub(super) fn join(id: &str, s: ActionStateW<'static>, body: &[u8]) -> Result<Action, String> {
        let b: ActionBodyW<'static> = codec::open_v1(body).map_err(|e| format!("its body: {e}"))?;
        Ok(Action {
            id: id.to_string(),
            campaign: b.campaign.into_owned(),
            account: b.account.into_owned(),
            kind: untag(b.kind).map_err(|e| format!("its body: {e}"))?,
            prospect: b.prospect.into_owned(),
            payload: b.payload.into_owned(),
            priority: b.priority,
            seq: b.seq,
            state: untag(s.state)?,
            attempts: s.attempts,
            retries: s.retries,
            reason: opt_string(s.reason),
            until_ms: s.until_ms,
            updated_ms: s.updated_ms,
            sent_day: s.sent_day.map(codec::from_day_num),
            accepted: s.accepted,
            refunded: s.refunded,
        })
    }
}

/// Where publishing puts a staged action (layout 2) in the indexes: what `Tx::index`
/// reads of an action, without building one.
pub(super) struct Indexing {
    pub state: State,
    pub until_ms: Option<i64>,
    /// Its `ready` key (`codec::ready_key`), from the body.
    pub ready: Vec<u8>,
}

impl Indexing {
    /// From a state record and its body's bytes, the body's text read in place.
    pub(super) fn of(s: &ActionStateW<'_>, body: &[u8]) -> Result<Indexing, String> {
        let b: ActionBodyView<'_> = codec::open_v1_in(body).map_err(|e| format!("its body: {e}"))?;
        Ok(Indexing {
            state: untag(s.state)?,
            until_ms: s.until_ms,
            ready: codec::ready_key(b.account, b.campaign, b.priority, b.seq),
        })
    }
}

// ---- Day counters ----

/// The in-memory `sent_by_kind` (indexed by `Kind as usize`) by `KindW` tag.
fn sent_by_tag(by_kind: &[u32; 6]) -> [u32; 6] {
    let mut by_tag = [0; 6];
    for k in Kind::ALL {
        let t = KindW::from(k).tag() as usize;
        debug_assert!(t < by_tag.len() && (k as usize) < by_kind.len());
        if let (Some(slot), Some(n)) = (by_tag.get_mut(t), by_kind.get(k as usize)) {
            *slot = *n;
        }
    }
    by_tag
}

fn sent_by_kind(by_tag: &[u32; 6]) -> [u32; 6] {
    let mut by_kind = [0; 6];
    for k in Kind::ALL {
        let t = KindW::from(k).tag() as usize;
        if let (Some(slot), Some(n)) = (by_kind.get_mut(k as usize), by_tag.get(t)) {
            *slot = *n;
        }
    }
    by_kind
}

impl Value for AccountDayRec {
    fn to_stored(&self) -> Vec<u8> {
        let r = &self.reserved;
        codec::seal_v1(&AccountDayW {
            reserved: AccountReservedW {
                invites: r.invites,
                messages: r.messages,
                inmails: r.inmails,
                engagement: r.engagement,
            },
            invites_sent: self.invites_sent,
            invites_accepted: self.invites_accepted,
            rate_limits: self.rate_limits,
            sent_by_kind: sent_by_tag(&self.sent_by_kind),
        })
    }

    fn from_stored(bytes: &[u8]) -> Result<AccountDayRec, String> {
        let w: AccountDayW = codec::open_v1(bytes)?;
        Ok(AccountDayRec {
            reserved: AccountDay {
                invites: w.reserved.invites,
                messages: w.reserved.messages,
                inmails: w.reserved.inmails,
                engagement: w.reserved.engagement,
            },
            invites_sent: w.invites_sent,
            invites_accepted: w.invites_accepted,
            rate_limits: w.rate_limits,
            sent_by_kind: sent_by_kind(&w.sent_by_kind),
        })
    }
}

/// `CampaignDayRec`.
impl Value for CampaignDay {
    fn to_stored(&self) -> Vec<u8> {
        codec::seal_v1(&CampaignDayW {
            invites: self.invites,
            messages: self.messages,
            inmails: self.inmails,
        })
    }

    fn from_stored(bytes: &[u8]) -> Result<CampaignDay, String> {
        let w: CampaignDayW = codec::open_v1(bytes)?;
        Ok(CampaignDay {
            invites: w.invites,
            messages: w.messages,
            inmails: w.inmails,
        })
    }
}

/// Indexed by `State::index` in memory, by `StateW` tag on disk.
impl Value for StateCounts {
    fn to_stored(&self) -> Vec<u8> {
        let mut by_tag = [0; 7];
        for s in State::ALL {
            if let (Some(slot), Some(n)) = (
                by_tag.get_mut(StateW::from(s).tag() as usize),
                self.0.get(s.index()),
            ) {
                *slot = *n;
            }
        }
        codec::seal_v1(&StateCountsW(by_tag))
    }

    fn from_stored(bytes: &[u8]) -> Result<StateCounts, String> {
        let w: StateCountsW = codec::open_v1(bytes)?;
        let mut counts = [0; 7];
        for s in State::ALL {
            if let (Some(slot), Some(n)) =
                (counts.get_mut(s.index()), w.0.get(StateW::from(s).tag() as usize))
            {
                *slot = *n;
            }
        }
        Ok(StateCounts(counts))
    }
}

impl Value for FileReport {
    fn to_stored(&self) -> Vec<u8> {
        codec::seal_v1(&FileReportW {
            name: text(&self.name),
            hash: self.hash,
            accounts: self.accounts,
            campaigns: self.campaigns,
            actions: self.actions,
            duplicates: self.duplicates,
            events: self.events,
        })
    }

    fn from_stored(bytes: &[u8]) -> Result<FileReport, String> {
        let w: FileReportW<'static> = codec::open_v1(bytes)?;
        Ok(FileReport {
            name: w.name.into_owned(),
            hash: w.hash,
            accounts: w.accounts,
            campaigns: w.campaigns,
            actions: w.actions,
            duplicates: w.duplicates,
            events: w.events,
        })
    }
}

// ---- Ledger ----

fn limits_w(l: &LedgerLimits) -> LedgerLimitsW {
    LedgerLimitsW {
        invites: l.invites,
        messages: l.messages,
        inmails: l.inmails,
        engagement: l.engagement,
        weekly_invites: l.weekly_invites,
        campaign: l.campaign,
    }
}

fn limits(l: LedgerLimitsW) -> LedgerLimits {
    LedgerLimits {
        invites: l.invites,
        messages: l.messages,
        inmails: l.inmails,
        engagement: l.engagement,
        weekly_invites: l.weekly_invites,
        campaign: l.campaign,
    }
}

fn entry_w(e: &LedgerEntry) -> LedgerEntryW<'_> {
    LedgerEntryW {
        action: text(&e.action),
        account: text(&e.account),
        campaign: text(&e.campaign),
        kind: tag(e.kind),
        attempt: e.attempt,
        at_ms: e.at_ms,
        account_day: Day(e.account_day),
        campaign_day: Day(e.campaign_day),
        limits: limits_w(&e.limits),
    }
}

fn entry(w: LedgerEntryW<'_>) -> Result<LedgerEntry, String> {
    Ok(LedgerEntry {
        action: w.action.into_owned(),
        account: w.account.into_owned(),
        campaign: w.campaign.into_owned(),
        kind: untag(w.kind)?,
        attempt: w.attempt,
        at_ms: w.at_ms,
        account_day: w.account_day.0,
        campaign_day: w.campaign_day.0,
        limits: limits(w.limits),
    })
}

/// A format-1 reservation, alone under its 8-byte key.
impl Value for LedgerEntry {
    fn to_stored(&self) -> Vec<u8> {
        codec::seal_v1(&entry_w(self))
    }

    fn from_stored(bytes: &[u8]) -> Result<LedgerEntry, String> {
        entry(codec::open_v1(bytes)?)
    }
}

impl Value for LedgerReservations {
    fn to_stored(&self) -> Vec<u8> {
        codec::seal_v1(&LedgerReservationsW {
            entries: self.entries.iter().map(entry_w).collect(),
        })
    }

    fn from_stored(bytes: &[u8]) -> Result<LedgerReservations, String> {
        let w: LedgerReservationsW<'static> = codec::open_v1(bytes)?;
        let entries = w
            .entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| entry(e).map_err(|why| format!("entry {i}: {why}")))
            .collect::<Result<_, _>>()?;
        Ok(LedgerReservations { entries })
    }
}

impl Value for LedgerRelease {
    fn to_stored(&self) -> Vec<u8> {
        codec::seal_v1(&LedgerReleaseW {
            action: text(&self.action),
            account: text(&self.account),
            campaign: text(&self.campaign),
            kind: tag(self.kind),
            attempt: self.attempt,
            at_ms: self.at_ms,
            account_day: Day(self.account_day),
            campaign_day: Day(self.campaign_day),
            reservation: self.reservation,
        })
    }

    fn from_stored(bytes: &[u8]) -> Result<LedgerRelease, String> {
        let w: LedgerReleaseW<'static> = codec::open_v1(bytes)?;
        Ok(LedgerRelease {
            action: w.action.into_owned(),
            account: w.account.into_owned(),
            campaign: w.campaign.into_owned(),
            kind: untag(w.kind)?,
            attempt: w.attempt,
            at_ms: w.at_ms,
            account_day: w.account_day.0,
            campaign_day: w.campaign_day.0,
            reservation: w.reservation,
        })
    }
}

impl Value for LedgerOutcomes {
    fn to_stored(&self) -> Vec<u8> {
        codec::seal_v1(&LedgerOutcomesW {
            at_ms: self.at_ms,
            outcomes: self
                .outcomes
                .iter()
                .map(|o| LedgerOutcomeW {
                    action: text(&o.action),
                    attempt: o.attempt,
                    outcome: text(&o.outcome),
                    state: tag(o.state),
                    reason: opt_text(&o.reason),
                    until_ms: o.until_ms,
                    released: o.released,
                })
                .collect(),
        })
    }

    fn from_stored(bytes: &[u8]) -> Result<LedgerOutcomes, String> {
        let w: LedgerOutcomesW<'static> = codec::open_v1(bytes)?;
        let outcomes = w
            .outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                Ok(LedgerOutcome {
                    state: untag(o.state).map_err(|why| format!("outcome {i}: {why}"))?,
                    action: o.action.into_owned(),
                    attempt: o.attempt,
                    outcome: o.outcome.into_owned(),
                    reason: opt_string(o.reason),
                    until_ms: o.until_ms,
                    released: o.released,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(LedgerOutcomes {
            at_ms: w.at_ms,
            outcomes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Debug;

    /// Checks one enum's mapping against the pinned table of (variant name, tag): each
    /// in-memory value (in whatever order its own `ALL` lists them) goes to the tag
    /// pinned for its name, each pinned tag reads back to the value of that name, and
    /// the table covers every value. Names, not positions: a reordered policy enum
    /// passes and keeps its bytes; a wrong arm in `enum_map!` fails.
    fn check_tags<M: Copy + Debug + PartialEq>(
        all: &[M],
        to_tag: impl Fn(M) -> u32,
        from_tag: impl Fn(u32) -> Option<M>,
        pinned: &[(&str, u32)],
    ) -> Result<(), String> {
        if all.len() != pinned.len() {
            return Err(format!("{} values, {} pinned tags", all.len(), pinned.len()));
        }
        for &m in all {
            let name = format!("{m:?}");
            let Some(&(_, want)) = pinned.iter().find(|(n, _)| *n == name) else {
                return Err(format!("{name} has no pinned tag"));
            };
            let got = to_tag(m);
            if got != want {
                return Err(format!("{name} is written as tag {got}, pinned {want}"));
            }
            if from_tag(want) != Some(m) {
                return Err(format!("tag {want} does not read back as {name}"));
            }
        }
        Ok(())
    }

    fn wire_tag<M, W: WireEnum + From<M>>(m: M) -> u32 {
        W::from(m).tag()
    }

    fn from_wire_tag<M: From<W>, W: WireEnum>(t: u32) -> Option<M> {
        W::from_tag(t).map(M::from)
    }

    const TIER_TAGS: [(&str, u32); 7] = [
        ("Free", 0),
        ("PremiumCareer", 1),
        ("PremiumBusiness", 2),
        ("SalesNavigatorCore", 3),
        ("SalesNavigatorAdvanced", 4),
        ("RecruiterLite", 5),
        ("Recruiter", 6),
    ];
    const HEALTH_TAGS: [(&str, u32); 4] = [("Healthy", 0), ("Watch", 1), ("AtRisk", 2), ("Restricted", 3)];
    const KIND_TAGS: [(&str, u32); 6] = [
        ("Invite", 0),
        ("Message", 1),
        ("Inmail", 2),
        ("ProfileView", 3),
        ("Comment", 4),
        ("Reaction", 5),
    ];
    const STATE_TAGS: [(&str, u32); 7] = [
        ("Queued", 0),
        ("Parked", 1),
        ("Inflight", 2),
        ("Sent", 3),
        ("Failed", 4),
        ("Unknown", 5),
        ("Cancelled", 6),
    ];

    #[test]
    fn every_policy_value_maps_to_its_pinned_tag() {
        let tiers = [
            Tier::Free,
            Tier::PremiumCareer,
            Tier::PremiumBusiness,
            Tier::SalesNavigatorCore,
            Tier::SalesNavigatorAdvanced,
            Tier::RecruiterLite,
            Tier::Recruiter,
        ];
        let tier_tag = wire_tag::<Tier, TierW>;
        assert_eq!(
            check_tags(&tiers, tier_tag, from_wire_tag::<Tier, TierW>, &TIER_TAGS),
            Ok(())
        );
        let health = [Health::Healthy, Health::Watch, Health::AtRisk, Health::Restricted];
        assert_eq!(
            check_tags(
                &health,
                wire_tag::<Health, HealthW>,
                from_wire_tag::<Health, HealthW>,
                &HEALTH_TAGS
            ),
            Ok(())
        );
        assert_eq!(
            check_tags(
                &Kind::ALL,
                wire_tag::<Kind, KindW>,
                from_wire_tag::<Kind, KindW>,
                &KIND_TAGS
            ),
            Ok(())
        );
        assert_eq!(
            check_tags(
                &State::ALL,
                wire_tag::<State, StateW>,
                from_wire_tag::<State, StateW>,
                &STATE_TAGS
            ),
            Ok(())
        );
        // The tables are the wire enums' own: the same names, the same tags.
        for (name, t) in KIND_TAGS {
            assert_eq!(
                KindW::from_tag(t).map(|w| format!("{w:?}")).as_deref(),
                Some(name)
            );
        }
        for (name, t) in TIER_TAGS {
            assert_eq!(
                TierW::from_tag(t).map(|w| format!("{w:?}")).as_deref(),
                Some(name)
            );
        }
    }

    #[test]
    fn a_wrong_mapping_is_caught() {
        // As if an arm of `enum_map!` sent Invite and Message to each other's tags (or the
        // policy enum were reordered and the stored tag followed the position).
        let swapped = |k: Kind| match k {
            Kind::Invite => 1,
            Kind::Message => 0,
            other => wire_tag::<Kind, KindW>(other),
        };
        let e = check_tags(&Kind::ALL, swapped, from_wire_tag::<Kind, KindW>, &KIND_TAGS)
            .expect_err("a swapped mapping must fail");
        assert_eq!(e, "Invite is written as tag 1, pinned 0");
        let by_position = |s: State| 6 - s.index() as u32;
        assert!(check_tags(
            &State::ALL,
            by_position,
            from_wire_tag::<State, StateW>,
            &STATE_TAGS
        )
        .is_err());
        // A value left out of the table is caught too.
        assert!(check_tags(
            &Kind::ALL,
            wire_tag::<Kind, KindW>,
            from_wire_tag::<Kind, KindW>,
            &KIND_TAGS[..5]
        )
        .is_err());
    }

    #[test]
    fn per_kind_and_per_state_slots_follow_the_tags() {
        // In memory `sent_by_kind` is indexed by `Kind as usize`, on disk by tag.
        let mut by_kind = [0u32; 6];
        for k in Kind::ALL {
            by_kind[k as usize] = 10 + KindW::from(k).tag();
        }
        assert_eq!(sent_by_tag(&by_kind), [10, 11, 12, 13, 14, 15]);
        assert_eq!(sent_by_kind(&sent_by_tag(&by_kind)), by_kind);
        let mut counts = [0u64; 7];
        for s in State::ALL {
            counts[s.index()] = 100 + u64::from(StateW::from(s).tag());
        }
        let bytes = StateCounts(counts).to_stored();
        assert_eq!(bytes, [0, 100, 101, 102, 103, 104, 105, 106]);
        assert_eq!(StateCounts::from_stored(&bytes), Ok(StateCounts(counts)));
    }

    #[test]
    fn an_unknown_stored_tag_is_an_error_naming_record_key_and_tag() {
        let a = Action::fixture(Kind::Invite, State::Queued);
        let mut bytes = a.encode_layout1();
        // The kind's tag follows the envelope byte and three one-byte-length strings.
        let at = 1 + (1 + 7) + (1 + 2) + (1 + 6);
        assert_eq!(bytes[at], 0, "the kind tag of an invite");
        bytes[at] = 9;
        let e = Action::read_stored(&bytes).err().expect("tag 9 is no kind");
        assert_eq!(e, "unknown kind tag 9");
        // The body (format 3): the kind's tag follows the envelope and two strings.
        let mut body = a.encode_body();
        let at = 1 + (1 + 2) + (1 + 6);
        assert_eq!(body[at], 0, "the kind tag of an invite");
        body[at] = 9;
        let StoredAction::State(s) = Action::read_stored(&a.encode_state()).expect("reads") else {
            panic!("a state record reads as layout 2");
        };
        let e = Action::join("q4/jane", s, &body).expect_err("tag 9 is no kind");
        assert_eq!(e, "its body: unknown kind tag 9");
    }

    /// Publishing reads a body through `ActionBodyView` (text borrowed) instead of
    /// `ActionBodyW`: both must read the same bytes the same way, or a published
    /// action would be indexed under another key than the one it is moved by later.
    #[test]
    fn the_body_view_indexes_as_the_whole_action_does() {
        let mut a = Action::fixture(Kind::Inmail, State::Queued);
        a.campaign = "q4 \u{e9}t\u{e9}".into();
        a.account = "acct-\u{1f600}".into();
        a.priority = -7;
        a.seq = 1 << 40;
        a.payload = "{\"note\":\"a longer payload, past one length byte\"}".repeat(4);
        for (state, until) in [(State::Queued, None), (State::Queued, Some(1_764_403_200_000))] {
            a.state = state;
            a.until_ms = until;
            let StoredAction::State(s) = Action::read_stored(&a.encode_state()).expect("reads") else {
                panic!("a state record reads as layout 2");
            };
            let ix = Indexing::of(&s, &a.encode_body()).expect("the body reads");
            assert_eq!(ix.state, a.state);
            assert_eq!(ix.until_ms, a.until_ms);
            assert_eq!(
                ix.ready,
                codec::ready_key(&a.account, &a.campaign, a.priority, a.seq)
            );
            let whole = Action::join(&a.id, s, &a.encode_body()).expect("joins");
            assert_eq!(whole, a, "the same bytes read whole");
        }
        // A body cut short is an error, never a key made of part of it.
        let body = a.encode_body();
        let StoredAction::State(s) = Action::read_stored(&a.encode_state()).expect("reads") else {
            panic!("a state record reads as layout 2");
        };
        let e = Indexing::of(&s, &body[..body.len() - 3])
            .err()
            .expect("a cut body");
        assert!(e.starts_with("its body: "), "{e}");
    }
}
