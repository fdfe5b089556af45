//! `sendgate check` against the shipped examples and the malformed files in
//! `examples/bad/`, through the real binary.

use std::path::Path;
use std::process::Command;

fn sendgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sendgate"))
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

#[test]
fn examples_are_valid() {
    let mut files: Vec<_> = std::fs::read_dir(examples())
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("jsonl" | "json")))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "expected example job files, found {files:?}");
    let out = sendgate()
        .arg("check")
        .args(&files)
        .output()
        .expect("run sendgate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches(": ok,").count(), files.len(), "{stdout}");
}

/// One line per case: malformed file → (line, field) named in the output, exit 1.
fn check(file: &str, line: usize, field: &str) {
    let path = examples().join("bad").join(file);
    let out = sendgate().arg("check").arg(&path).output().expect("run sendgate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{file}: {stdout}");
    let expected = format!("{}:{line}: field `{field}`", path.display());
    assert!(
        stdout.contains(&expected),
        "{file}: expected `{expected}` in:\n{stdout}"
    );
}

#[test]
fn malformed_files_name_line_and_field() {
    check("bad-json.jsonl", 2, "record");
    check("unknown-field.jsonl", 2, "priorty");
    check("unknown-type.jsonl", 2, "type");
    check("bad-zone.jsonl", 2, "timezone");
    check("bad-kind.jsonl", 3, "kind");
    check("duplicate-key.jsonl", 2, "daily_limit");
    check("padded-action-id.jsonl", 4, "id");
}

/// Repeated keys at each level that matters, and action ids a server would read as
/// another key, through the binary: each names its line and field.
#[test]
fn repeated_keys_and_unsafe_action_ids_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let action = |id: &str| {
        format!(r#"{{"type":"action","id":"{id}","campaign":"c","kind":"invite","prospect":"p"}}"#)
    };
    let cases = [
        (
            r#"{"type":"campaign","id":"c","daily_limit":2,"daily_limit":40}"#.to_string(),
            "daily_limit",
        ),
        (
            r#"{"type":"account","id":"a","caps":{"invites":5,"invites":90}}"#.to_string(),
            "caps.invites",
        ),
        (
            r#"{"type":"account","id":"a","window":{"end":"17:00","end":"23:00"}}"#.to_string(),
            "window.end",
        ),
        (
            r#"{"type":"campaign","id":"c","daily_limit":2,"cap_split":{"invites":1,"invites":9}}"#
                .to_string(),
            "cap_split.invites",
        ),
        (action(" dup-key"), "id"),
        (action("dup-key "), "id"),
        (action("dup\\u0001key"), "id"),
        (action("jos\\u00e9/invite"), "id"),
    ];
    for (i, (record, field)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case-{i}.jsonl"));
        let text = format!("{{\"type\":\"campaign\",\"id\":\"ok\",\"daily_limit\":1}}\n{record}\n");
        std::fs::write(&path, text).expect("write");
        let out = sendgate().arg("check").arg(&path).output().expect("run sendgate");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{record}: {stdout}");
        let expected = format!("{}:2: field `{field}`", path.display());
        assert!(
            stdout.contains(&expected),
            "{record}: expected `{expected}` in {stdout}"
        );
    }
    // The same id without the padding is fine.
    let path = dir.path().join("ok.jsonl");
    std::fs::write(&path, action("dup-key")).expect("write");
    let out = sendgate().arg("check").arg(&path).output().expect("run sendgate");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Values that would overflow a time or size computation: exit 78 naming the key,
/// never a panic (abort, 134).
#[test]
fn absurd_config_values_exit_78_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!(
        "[store]\npath = \"{d}/store\"\n[spool]\ndir = \"{d}/spool\"\n[status]\npath = \"{d}/status.json\"\n",
        d = dir.path().display()
    );
    for (extra, key) in [
        ("[clock]\nspeed = 1e300\n", "clock.speed"),
        ("[clock]\nspeed = 1e-300\n", "clock.speed"),
        ("[pacing]\nmax_gap_s = 9223372036854775807\n", "pacing.max_gap_s"),
        (
            "[upstream]\nkind = \"sim\"\ntimeout_s = 9223372036854775807\n",
            "upstream.timeout_s",
        ),
        ("[store]\nretention_days = 4294967295\n", "store.retention_days"),
        ("[store]\nretention_days = 7\n", "store.retention_days"),
        ("[store]\ncache_mb = 18446744073709551615\n", "store.cache_mb"),
        ("[upstream]\nkind = \"exec\"\n", "upstream.command"),
    ] {
        // A table may not be opened twice, so the extra keys go in a second file
        // layout: the base without the table the case sets.
        let table = extra.lines().next().unwrap_or_default();
        let text = if base.contains(table) {
            base.replace(&format!("{table}\n"), extra)
        } else {
            format!("{base}{extra}")
        };
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, &text).expect("write");
        let out = sendgate()
            .args(["run", "--config"])
            .arg(&cfg)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{text}\n{stderr}");
        assert!(stderr.contains(key), "{text}: {stderr}");
    }
    assert!(
        !dir.path().join("store").exists(),
        "a config error creates nothing"
    );
}

#[test]
fn one_bad_file_among_good_ones_exits_1() {
    let out = sendgate()
        .arg("check")
        .arg(examples().join("02-campaigns.jsonl"))
        .arg(examples().join("bad/bad-zone.jsonl"))
        .output()
        .expect("run sendgate");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("02-campaigns.jsonl: ok"), "{stdout}");
}

#[test]
fn missing_file_and_usage_errors() {
    let out = sendgate()
        .args(["check", "/nonexistent/x.jsonl"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot read"));
    let out = sendgate().arg("check").output().expect("run");
    assert_eq!(out.status.code(), Some(2), "no files is a usage error");
    let out = sendgate().arg("frobnicate").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_lists_every_command() {
    let out = sendgate().arg("--help").output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "check", "status", "audit", "simulate"] {
        assert!(help.contains(cmd), "--help lacks {cmd}:\n{help}");
        let sub = sendgate().args([cmd, "--help"]).output().expect("run");
        assert_eq!(sub.status.code(), Some(0), "{cmd} --help");
    }
}

#[test]
fn config_with_unknown_key_exits_78_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[caps]\ninvites = 80\ninvitez = 3\n").expect("write");
    for cmd in ["run", "status", "audit"] {
        let out = sendgate()
            .arg(cmd)
            .arg("--config")
            .arg(&cfg)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(78), "{cmd}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("caps.invitez"), "{cmd}: {stderr}");
    }
}
