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
