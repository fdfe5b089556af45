//! `sendgate simulate` twice with the same seed: identical output, a valid SVG, and an
//! audit with zero overshoot. And the zero-config `run` in an empty folder.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sendgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sendgate"))
}

#[test]
fn simulate_is_deterministic_draws_an_svg_and_audits_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |svg: &str| {
        let out = sendgate()
            .args([
                "simulate",
                "--days",
                "21",
                "--accounts",
                "3",
                "--seed",
                "7",
                "--svg",
                svg,
            ])
            .current_dir(dir.path())
            .output()
            .expect("simulate");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let a = run("a.svg");
    let b = run("b.svg");
    assert_eq!(a, b, "same seed, same output");
    assert!(
        a.contains("audit:") && a.contains("overshoots 0, counter mismatches 0"),
        "{a}"
    );
    for account in ["acct-01", "acct-02", "acct-03"] {
        assert!(a.contains(&format!("account {account}")), "{a}");
    }
    // Weekends are quiet: 2026-03-07 is a Saturday.
    let saturday = a
        .lines()
        .find(|l| l.starts_with("2026-03-07"))
        .expect("a Saturday row");
    assert!(
        saturday.split_whitespace().skip(1).take(6).all(|n| n == "0"),
        "{saturday}"
    );
    let svg_a = std::fs::read_to_string(dir.path().join("a.svg")).expect("svg");
    let svg_b = std::fs::read_to_string(dir.path().join("b.svg")).expect("svg");
    assert_eq!(svg_a, svg_b);
    assert!(svg_a.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg_a.trim_end().ends_with("</svg>"));
    for line in [r#"<path class="chart-cap""#, r#"<path class="chart-ramp""#] {
        assert_eq!(svg_a.matches(line).count(), 3, "{line} for 3 accounts");
    }
    assert!(svg_a.contains(r#"<text class="chart-date""#), "a date axis");
    let other = sendgate()
        .args(["simulate", "--days", "7", "--accounts", "2", "--seed", "8"])
        .output()
        .expect("simulate");
    assert_eq!(
        other.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let other = String::from_utf8(other.stdout).expect("utf-8");
    assert!(
        other.contains("account acct-02") && other.contains("overshoots 0, counter mismatches 0"),
        "another seed runs to its audit:\n{other}"
    );
    assert_ne!(other, a, "another seed, another run");
}

#[test]
fn simulate_refuses_nonsense_sizes() {
    let out = sendgate()
        .args(["simulate", "--days", "0"])
        .output()
        .expect("simulate");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn zero_config_run_starts_creates_its_data_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = sendgate()
        .arg("run")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run");
    let data = dir.path().join("sendgate-data");
    let start = Instant::now();
    while !(data.join("store/db").exists()
        && data.join("spool/incoming").is_dir()
        && data.join("status.json").exists())
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "./sendgate-data/ was not created"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    common::signal(&child, libc::SIGTERM);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

/// `sendgate simulate | head` (or `list | head`): a reader that stops early ends the
/// command quietly, as for any Unix tool, never with a panic or an abort.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let mut child = sendgate()
        .args(["simulate", "--days", "3", "--accounts", "1", "--seed", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run simulate");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("a first line");
    assert!(first.contains("sendgate simulate"), "{first}");
    drop(out); // the reader goes away, like `head -1`
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let status = output.status;
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE),
        "ends by SIGPIPE or cleanly, not {status:?}: {stderr}"
    );
}
