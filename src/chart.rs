//! Charts of invites per day against the invite cap and the ramp ceiling, as SVG
//! text. Pure: data in, text out (no IO, no clock). One module serves the dashboard
//! (`GET /`, one inline `<svg>` per account) and `sendgate simulate --svg` (one
//! standalone document with a panel per account).
//!
//! The y axis is scaled to the invites, the cap and the ramp of the days shown (sends of
//! other kinds, which can be ten times more, are in each bar's tooltip, not on the axis).
//! The cap is never above the ramp (SPEC §3.2), so the two lines often coincide: the
//! ramp is drawn as a wide pale band and the cap as a dashed line over it, so both stay
//! visible, and a legend names them. Dates run along the x axis.

use chrono::NaiveDate;
use std::fmt::Write as _;

/// One local day of one account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Day {
    pub day: NaiveDate,
    /// Invites reserved that day: the count the invite cap governs (a send confirmed
    /// after midnight still counts on the day it was reserved).
    pub invites: u32,
    /// Sends of every kind confirmed that day (shown in the tooltip).
    pub sends: u32,
    /// The effective invite cap of the day: min(caps.invites, tier ceiling, ramp).
    pub cap: u32,
    /// The ramp ceiling of the day.
    pub ramp: u32,
}

/// One account's chart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Panel {
    pub title: String,
    pub days: Vec<Day>,
}

pub const WIDTH: f64 = 900.0;
pub const PANEL_HEIGHT: f64 = 260.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 16.0;
/// The plot area inside a panel: from `PLOT_TOP` down to `PLOT_TOP + PLOT_HEIGHT`.
pub const PLOT_TOP: f64 = 50.0;
pub const PLOT_HEIGHT: f64 = 170.0;
/// At most this many date labels on the x axis.
const MAX_DATE_LABELS: usize = 16;

pub const BAR_COLOUR: &str = "#3465a4";
pub const CAP_COLOUR: &str = "#cc0000";
pub const RAMP_COLOUR: &str = "#4e9a06";

/// Escape text for HTML and XML (element content and quoted attributes).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The top of the y axis and the step between its ticks: a round step (1, 2 or 5 × a
/// power of ten) giving at most 5 ticks above zero, and a top at or above every value.
pub fn y_scale(max: u32) -> (u32, u32) {
    let max = max.max(1);
    let mut step = 1u32;
    loop {
        for m in [1u32, 2, 5] {
            let s = step.saturating_mul(m);
            if max.div_ceil(s) <= 5 {
                return (max.div_ceil(s) * s, s);
            }
        }
        step = step.saturating_mul(10);
    }
}

/// A standalone SVG document: one panel per account, stacked.
pub fn document(panels: &[Panel]) -> String {
    let height = PANEL_HEIGHT * panels.len().max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, p) in panels.iter().enumerate() {
        let _ = writeln!(s, r#"<g transform="translate(0 {})">"#, i as f64 * PANEL_HEIGHT);
        panel_body(&mut s, p);
        s.push_str("</g>\n");
    }
    s.push_str("</svg>\n");
    s
}

/// One panel as an `<svg>` element to place inside an HTML page (it scales to the
/// width of its container).
pub fn inline(panel: &Panel) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {PANEL_HEIGHT}" width="100%" role="img" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    panel_body(&mut s, panel);
    s.push_str("</svg>\n");
    s
}

fn panel_body(s: &mut String, p: &Panel) {
    let n = p.days.len().max(1);
    let max = p
        .days
        .iter()
        .map(|d| d.invites.max(d.cap).max(d.ramp))
        .max()
        .unwrap_or(0);
    let (top, step) = y_scale(max);
    let plot_w = WIDTH - LEFT - RIGHT;
    let slot = plot_w / n as f64;
    let x_left = |i: usize| LEFT + slot * i as f64;
    let y = |v: u32| PLOT_TOP + PLOT_HEIGHT * (1.0 - f64::from(v.min(top)) / f64::from(top));
    let base = y(0);
    let range = match (p.days.first(), p.days.last()) {
        (Some(a), Some(b)) => format!(", {} to {}", a.day, b.day),
        _ => String::new(),
    };
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="16" font-weight="bold">{}{range}</text>"#,
        escape(&p.title)
    );
    legend(s);
    // Grid and y axis labels.
    let mut v = 0;
    while v <= top {
        let yv = y(v);
        let _ = writeln!(
            s,
            r##"<line class="chart-grid" x1="{LEFT}" y1="{yv:.1}" x2="{:.1}" y2="{yv:.1}" stroke="#ddd"/>"##,
            WIDTH - RIGHT
        );
        let _ = writeln!(
            s,
            r#"<text class="chart-ytick" x="{:.1}" y="{:.1}" text-anchor="end">{v}</text>"#,
            LEFT - 6.0,
            yv + 4.0
        );
        v += step;
    }
    // Bars: invites sent.
    let bar_w = (slot * 0.6).max(1.0);
    for (i, d) in p.days.iter().enumerate() {
        let yi = y(d.invites);
        let _ = writeln!(
            s,
            r#"<rect class="chart-bar" x="{:.1}" y="{yi:.1}" width="{bar_w:.1}" height="{:.1}" fill="{BAR_COLOUR}"><title>{}: {} invites reserved ({} sends of every kind confirmed); invite cap {}, ramp {}</title></rect>"#,
            x_left(i) + (slot - bar_w) / 2.0,
            base - yi,
            d.day,
            d.invites,
            d.sends,
            d.cap,
            d.ramp
        );
    }
    // The ramp under the cap: a wide pale band, then the cap as a dashed line on top.
    let _ = writeln!(
        s,
        r#"<path class="chart-ramp" d="{}" fill="none" stroke="{RAMP_COLOUR}" stroke-width="8" stroke-opacity="0.4"/>"#,
        step_path(&p.days, |d| d.ramp, &x_left, slot, &y)
    );
    let _ = writeln!(
        s,
        r#"<path class="chart-cap" d="{}" fill="none" stroke="{CAP_COLOUR}" stroke-width="2" stroke-dasharray="6 4"/>"#,
        step_path(&p.days, |d| d.cap, &x_left, slot, &y)
    );
    // The x axis with dates.
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{base:.1}" x2="{:.1}" y2="{base:.1}" stroke="#333"/>"##,
        WIDTH - RIGHT
    );
    let every = n.div_ceil(MAX_DATE_LABELS);
    for (i, d) in p.days.iter().enumerate() {
        if i % every != 0 {
            continue;
        }
        let xc = x_left(i) + slot / 2.0;
        let _ = writeln!(
            s,
            r##"<line x1="{xc:.1}" y1="{base:.1}" x2="{xc:.1}" y2="{:.1}" stroke="#333"/>"##,
            base + 4.0
        );
        let _ = writeln!(
            s,
            r#"<text class="chart-date" x="{xc:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            base + 18.0,
            d.day.format("%m-%d")
        );
    }
}

fn legend(s: &mut String) {
    let y = 34.0;
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{:.1}" width="14" height="10" fill="{BAR_COLOUR}"/><text x="{:.1}" y="{y}">invites reserved</text>"#,
        y - 9.0,
        LEFT + 18.0
    );
    let x = LEFT + 120.0;
    let _ = writeln!(
        s,
        r#"<line x1="{x}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{RAMP_COLOUR}" stroke-width="8" stroke-opacity="0.4"/><text x="{:.1}" y="{y}">ramp ceiling</text>"#,
        y - 4.0,
        x + 22.0,
        y - 4.0,
        x + 28.0
    );
    let x = LEFT + 240.0;
    let _ = writeln!(
        s,
        r#"<line x1="{x}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{CAP_COLOUR}" stroke-width="2" stroke-dasharray="6 4"/><text x="{:.1}" y="{y}">invite cap</text>"#,
        y - 4.0,
        x + 22.0,
        y - 4.0,
        x + 28.0
    );
}

/// A step line: one horizontal segment across each day's slot at `value(day)`.
fn step_path(
    days: &[Day],
    value: impl Fn(&Day) -> u32,
    x_left: &impl Fn(usize) -> f64,
    slot: f64,
    y: &impl Fn(u32) -> f64,
) -> String {
    let mut d = String::new();
    for (i, day) in days.iter().enumerate() {
        let yv = y(value(day));
        let cmd = if i == 0 { 'M' } else { 'L' };
        let _ = write!(
            d,
            "{cmd}{:.1} {yv:.1} L{:.1} {yv:.1} ",
            x_left(i),
            x_left(i) + slot
        );
    }
    d.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(invites: &[u32], sends: u32, cap: u32, ramp: u32) -> Vec<Day> {
        let first = NaiveDate::from_ymd_opt(2026, 3, 2).expect("date");
        invites
            .iter()
            .enumerate()
            .map(|(i, &n)| Day {
                day: first + chrono::Duration::days(i as i64),
                invites: n,
                sends,
                cap,
                ramp,
            })
            .collect()
    }

    /// The heights of the bars, in pixels.
    fn bar_heights(svg: &str) -> Vec<f64> {
        svg.lines()
            .filter(|l| l.starts_with(r#"<rect class="chart-bar""#))
            .map(|l| {
                let h = l.split(" height=\"").nth(1).expect("height");
                h[..h.find('"').expect("quote")].parse().expect("number")
            })
            .collect()
    }

    fn path_of<'a>(svg: &'a str, class: &str) -> &'a str {
        let start = format!(r#"<path class="chart-{class}" d=""#);
        let l = svg.lines().find(|l| l.starts_with(&start)).expect("path");
        let rest = &l[start.len()..];
        &rest[..rest.find('"').expect("quote")]
    }

    #[test]
    fn y_scale_is_round_and_covers_the_maximum() {
        assert_eq!(y_scale(0), (1, 1));
        assert_eq!(y_scale(4), (4, 1));
        assert_eq!(y_scale(7), (8, 2));
        assert_eq!(y_scale(10), (10, 2));
        assert_eq!(y_scale(15), (15, 5));
        assert_eq!(y_scale(22), (25, 5));
        assert_eq!(y_scale(46), (50, 10));
        assert_eq!(y_scale(80), (80, 20));
        assert_eq!(y_scale(101), (150, 50));
        for max in 0..2000 {
            let (top, step) = y_scale(max);
            assert!(top >= max && top / step <= 5 && top % step == 0, "{max}");
        }
    }

    /// `simulate --svg` used to scale the axis to all sends, squeezing invites into
    /// the bottom 30 px: the tallest invite bar now fills most of the plot, however
    /// many other sends there were.
    #[test]
    fn invites_fill_the_plot_whatever_the_other_sends() {
        let p = Panel {
            title: "acct-01".into(),
            days: days(&[10, 15, 22, 22, 21], 180, 22, 22),
        };
        let svg = inline(&p);
        let heights = bar_heights(&svg);
        assert_eq!(heights.len(), 5);
        let tallest = heights.iter().copied().fold(0.0, f64::max);
        assert!(
            tallest >= 0.6 * PLOT_HEIGHT,
            "the tallest bar is {tallest} px of {PLOT_HEIGHT}"
        );
        // 22 on a 25-high axis.
        assert!((tallest - PLOT_HEIGHT * 22.0 / 25.0).abs() < 0.2, "{tallest}");
        assert!(svg.contains("180 sends of every kind confirmed"));
    }

    /// The cap and the ramp are both drawn, in different styles, even where they are
    /// equal, and the legend names both.
    #[test]
    fn cap_and_ramp_are_both_visible() {
        let p = Panel {
            title: "a".into(),
            days: days(&[5, 5, 5], 5, 15, 15),
        };
        let svg = inline(&p);
        let (cap, ramp) = (path_of(&svg, "cap"), path_of(&svg, "ramp"));
        assert_eq!(cap, ramp, "same values, same line");
        let cap_line = svg
            .lines()
            .find(|l| l.contains(r#"class="chart-cap""#))
            .expect("cap");
        let ramp_line = svg
            .lines()
            .find(|l| l.contains(r#"class="chart-ramp""#))
            .expect("ramp");
        assert!(cap_line.contains("stroke-dasharray"), "the cap is dashed");
        assert!(
            ramp_line.contains(r#"stroke-width="8""#),
            "the ramp is a wide band"
        );
        // The ramp band is drawn first, the cap over it.
        assert!(svg.find(r#"class="chart-ramp""#) < svg.find(r#"class="chart-cap""#));
        assert!(svg.contains(">invite cap</text>") && svg.contains(">ramp ceiling</text>"));

        // A cap below the ramp sits lower on the chart.
        let p = Panel {
            title: "a".into(),
            days: days(&[5, 5], 5, 10, 20),
        };
        let svg = inline(&p);
        let y_of = |path: &str| -> f64 { path.split(' ').nth(1).expect("y").parse().expect("y") };
        assert!(y_of(path_of(&svg, "cap")) > y_of(path_of(&svg, "ramp")));
        // 20 is the top of the axis (y = PLOT_TOP), 10 halfway down.
        assert!((y_of(path_of(&svg, "ramp")) - PLOT_TOP).abs() < 0.1);
        assert!((y_of(path_of(&svg, "cap")) - (PLOT_TOP + PLOT_HEIGHT / 2.0)).abs() < 0.1);
    }

    #[test]
    fn dates_and_ticks_are_labelled() {
        let p = Panel {
            title: "a".into(),
            days: days(&[1; 14], 1, 46, 46),
        };
        let svg = inline(&p);
        let dates: Vec<&str> = svg
            .lines()
            .filter(|l| l.starts_with(r#"<text class="chart-date""#))
            .collect();
        assert_eq!(dates.len(), 14);
        assert!(dates[0].ends_with(">03-02</text>") && dates[13].ends_with(">03-15</text>"));
        for tick in ["0", "10", "20", "30", "40", "50"] {
            assert!(svg.contains(&format!(">{tick}</text>")), "tick {tick}");
        }
        assert!(svg.contains("2026-03-02 to 2026-03-15"));
        // 42 days get at most 16 labels, evenly spaced.
        let p = Panel {
            title: "a".into(),
            days: days(&[1; 42], 1, 46, 46),
        };
        let n = inline(&p).matches(r#"<text class="chart-date""#).count();
        assert!((14..=16).contains(&n), "{n} labels");
    }

    #[test]
    fn text_is_escaped_and_documents_stack_panels() {
        let p = Panel {
            title: "<b>&\"x'".into(),
            days: days(&[1], 1, 1, 1),
        };
        let svg = inline(&p);
        assert!(svg.contains("&lt;b&gt;&amp;&quot;x&#39;"));
        assert!(!svg.contains("<b>"));
        let doc = document(&[p.clone(), p]);
        assert!(doc.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg""#));
        assert_eq!(doc.matches(r#"<g transform="translate(0 "#).count(), 2);
        assert!(doc.contains(&format!(r#"height="{}""#, 2.0 * PANEL_HEIGHT)));
        assert!(!inline(&Panel {
            title: "a".into(),
            days: Vec::new()
        })
        .contains("http"));
    }
}
