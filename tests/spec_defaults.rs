//! The defaults an empty configuration gives, as SPEC §3.1, §3.3, §3.4 and §4 write
//! them: literal numbers, never the code's own `Default` impls (a changed default must
//! fail here, not move the test along with it).

use sendgate::config::Config;

#[test]
fn an_empty_config_gives_the_spec_caps_80_80_5_100_and_no_weekly_cap() {
    let c = Config::parse("empty.toml", "").expect("an empty config is valid");
    let caps = c.policy().caps;
    assert_eq!(
        (caps.invites, caps.messages, caps.inmails, caps.engagement),
        (80, 80, 5, 100),
        "SPEC 3.1: invites 80, messages 80, inmails 5, engagement 100"
    );
    assert_eq!(caps.weekly_invites, None, "SPEC 3.1: weekly_invites unset");
}

#[test]
fn an_empty_config_gives_the_spec_ramp_health_and_pacing() {
    let c = Config::parse("empty.toml", "").expect("an empty config is valid");
    let p = c.policy();
    assert_eq!((p.ramp.start, p.ramp.weeks), (10, 6), "SPEC 3.3");
    let h = &p.health;
    assert_eq!(h.min_sample, 20, "SPEC 3.4");
    assert_eq!(
        (h.watch_acceptance, h.at_risk_acceptance),
        (0.25, 0.15),
        "SPEC 3.4"
    );
    assert_eq!((h.watch_rate_limits, h.at_risk_rate_limits), (1, 3), "SPEC 3.4");
    assert_eq!(
        (c.pacing.min_gap_s, c.pacing.max_gap_s),
        (45, 240),
        "SPEC 4: pacing gaps"
    );
}

#[test]
fn a_partial_caps_table_keeps_the_spec_defaults_of_the_rest() {
    let c = Config::parse("partial.toml", "[caps]\ninvites = 30\n").expect("valid");
    let caps = c.policy().caps;
    assert_eq!(
        (caps.invites, caps.messages, caps.inmails, caps.engagement),
        (30, 80, 5, 100)
    );
}
