//! Replays the committed cargo-fuzz corpus (`fuzz/corpus/*`, and `fuzz/artifacts/**` when
//! present) through the same logic as the fuzz targets, on stable Rust and without
//! libFuzzer, and adds property tests that throw random bytes, JSON-ish lines and TOML-ish
//! text at the job-file and config parsers. No input may panic: every call returns Ok or
//! Err. See `fuzz/README.md`.

#[path = "../fuzz/fuzz_targets/common.rs"]
mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

/// Fewer files than this means the corpus went missing, not that it is small.
const MIN_JOBFILE_FILES: usize = 40;
const MIN_CONFIG_FILES: usize = 20;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Every regular file under `dir`, recursively, sorted; none if `dir` does not exist.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("read a corpus directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Feeds every file of the target's corpus (and its crash artifacts) through `run`;
/// fails naming each file that panicked. Returns (files, how many parsed Ok).
fn replay(target: &str, run: fn(&[u8]) -> bool) -> (usize, usize) {
    let fuzz = fuzz_dir();
    let mut files = files_under(&fuzz.join("corpus").join(target));
    files.extend(files_under(&fuzz.join("artifacts").join(target)));
    let mut ok = 0;
    let mut panicked = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        match catch_unwind(AssertUnwindSafe(|| run(&data))) {
            Ok(true) => ok += 1,
            Ok(false) => {}
            Err(_) => panicked.push(path.display().to_string()),
        }
    }
    assert!(panicked.is_empty(), "{target}: these inputs panic: {panicked:#?}");
    (files.len(), ok)
}

#[test]
fn jobfile_corpus_replays_without_panic() {
    let (files, ok) = replay("jobfile", common::jobfile);
    assert!(
        files >= MIN_JOBFILE_FILES,
        "only {files} job-file corpus files under fuzz/corpus/jobfile (expected at least {MIN_JOBFILE_FILES})"
    );
    assert!(
        ok > 0,
        "no job-file corpus input parsed Ok: the corpus or the format selector is broken"
    );
    assert!(
        ok < files,
        "every job-file corpus input parsed Ok: the error paths are not covered"
    );
}

#[test]
fn config_corpus_replays_without_panic() {
    let (files, ok) = replay("config", common::config);
    assert!(
        files >= MIN_CONFIG_FILES,
        "only {files} config corpus files under fuzz/corpus/config (expected at least {MIN_CONFIG_FILES})"
    );
    assert!(ok > 0, "no config corpus input parsed Ok");
    assert!(
        ok < files,
        "every config corpus input parsed Ok: the error paths are not covered"
    );
}

#[test]
fn the_first_byte_selects_the_format() {
    assert_eq!(common::jobfile_name(b""), ("fuzz.jsonl", &b""[..]));
    assert_eq!(common::jobfile_name(b"0{}"), ("fuzz.jsonl", &b"{}"[..]));
    assert_eq!(common::jobfile_name(b"1{}"), ("fuzz.json", &b"{}"[..]));
    assert!(common::jobfile(b"1{\"records\":[]}"));
    assert!(!common::jobfile(b"0{\"records\":[]}"));
}

/// Pieces of job-file JSON: structure, the field names and values of SPEC §6, and
/// things that tend to break parsers.
const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "\n",
    "\r\n",
    " ",
    "\"type\"",
    "\"records\"",
    "\"id\"",
    "\"account\"",
    "\"campaign\"",
    "\"action\"",
    "\"event\"",
    "\"kind\"",
    "\"invite\"",
    "\"message\"",
    "\"inmail\"",
    "\"invite_accepted\"",
    "\"tier_changed\"",
    "\"cancel_action\"",
    "\"tier\"",
    "\"free\"",
    "\"recruiter\"",
    "\"timezone\"",
    "\"Europe/Berlin\"",
    "\"window\"",
    "\"days\"",
    "\"mon\"",
    "\"start\"",
    "\"end\"",
    "\"09:00\"",
    "\"24:00\"",
    "\"caps\"",
    "\"invites\"",
    "\"prospect\"",
    "\"payload\"",
    "\"not_before\"",
    "\"at\"",
    "\"2026-11-30T08:00:00Z\"",
    "\"ramp_start\"",
    "\"2026-02-30\"",
    "\"priority\"",
    "\"daily_limit\"",
    "\"cap_split\"",
    "\"status\"",
    "\"active\"",
    "0",
    "1",
    "-1",
    "20",
    "4294967296",
    "18446744073709551616",
    "1e400",
    "-0.5",
    "null",
    "true",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"é中😀\"",
];

/// Pieces of the config TOML: tables and keys of SPEC §7, values and syntax.
const TOML_TOKENS: &[&str] = &[
    "[store]",
    "[spool]",
    "[upstream]",
    "[caps]",
    "[tiers.free]",
    "[tiers.gold]",
    "[ramp]",
    "[health]",
    "[pacing]",
    "[log]",
    "[status]",
    "[clock]",
    "[[caps]]",
    "path",
    "fsync",
    "cache_mb",
    "retention_days",
    "dir",
    "max_file_bytes",
    "kind",
    "url",
    "command",
    "timeout_s",
    "max_attempts",
    "invites",
    "weekly_invites",
    "invite_ceiling",
    "start",
    "weeks",
    "watch_acceptance",
    "min_gap_s",
    "max_gap_s",
    "format",
    "every_s",
    "speed",
    " = ",
    "=",
    "\n",
    "\r\n",
    " ",
    ".",
    ",",
    "{",
    "}",
    "[",
    "]",
    "#",
    "\"",
    "'",
    "\"\"\"",
    "\"http\"",
    "\"exec\"",
    "\"sim\"",
    "\"json\"",
    "\"http://127.0.0.1:8700\"",
    "\"x\"",
    "[\"/bin/true\"]",
    "0",
    "1",
    "-1",
    "300",
    "4294967296",
    "18446744073709551616",
    "0.5",
    "1e400",
    "nan",
    "inf",
    "-inf",
    "true",
    "false",
    "1979-05-27T07:32:00Z",
    "\"2026-11-02T00:00:00Z\"",
    "é中😀",
];

fn token_soup(tokens: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(tokens), 0..max).prop_map(|t| t.concat())
}

/// A JSON value that is often of the right shape for some field.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(JSON_TOKENS).prop_filter("a value token", |t| {
        !matches!(
            *t,
            "{" | "}" | "[" | "]" | ":" | "," | "\"" | "\\" | "\n" | "\r\n" | " "
        )
    });
    leaf.prop_map(str::to_string).prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..4).prop_map(|kv| {
                let fields: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

const FIELDS: &[&str] = &[
    "id",
    "tier",
    "timezone",
    "window",
    "days",
    "start",
    "end",
    "ramp_start",
    "established",
    "proxy",
    "caps",
    "invites",
    "messages",
    "inmails",
    "engagement",
    "inmail_credits",
    "daily_limit",
    "cap_split",
    "accounts",
    "status",
    "campaign",
    "account",
    "kind",
    "prospect",
    "payload",
    "not_before",
    "priority",
    "at",
    "action",
    "note",
    "bogus",
];
const TYPES: &[&str] = &["account", "campaign", "action", "event", "acount"];

/// A record of a real type with real field names and plausible values.
fn json_record() -> impl Strategy<Value = String> {
    (
        prop::sample::select(TYPES),
        prop::collection::vec((prop::sample::select(FIELDS), json_value()), 0..6),
    )
        .prop_map(|(ty, kv)| {
            let mut fields = vec![format!("\"type\":\"{ty}\"")];
            fields.extend(kv.iter().map(|(k, v)| format!("\"{k}\":{v}")));
            format!("{{{}}}", fields.join(","))
        })
}

/// A whole job file, as JSON Lines or as a `{"records": [...]}` document.
fn json_file() -> impl Strategy<Value = (bool, String)> {
    (
        any::<bool>(),
        prop::collection::vec(prop_oneof![json_record(), token_soup(JSON_TOKENS, 12)], 0..5),
    )
        .prop_map(|(document, records)| {
            if document {
                (true, format!("{{\"records\":[\n{}\n]}}", records.join(",\n")))
            } else {
                (false, records.join("\n"))
            }
        })
}

/// Feeds a job file through the fuzz target's logic with the selector byte for its format.
fn jobfile_as(document: bool, text: &[u8]) {
    let mut data = vec![if document { b'1' } else { b'0' }];
    data.extend_from_slice(text);
    common::jobfile(&data);
}

fn toml_line() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(TOML_TOKENS).prop_map(|t| format!("{t}\n")),
        (
            prop::sample::select(TOML_TOKENS),
            prop::sample::select(TOML_TOKENS)
        )
            .prop_map(|(k, v)| format!("{k} = {v}\n")),
        token_soup(TOML_TOKENS, 8),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_jobfile_parser(data in prop::collection::vec(any::<u8>(), 0..512)) {
        common::jobfile(&data);
    }

    #[test]
    fn jsonish_files_never_panic_the_jobfile_parser((document, text) in json_file()) {
        jobfile_as(document, text.as_bytes());
    }

    #[test]
    fn token_soup_never_panics_the_jobfile_parser(document in any::<bool>(), text in token_soup(JSON_TOKENS, 64)) {
        jobfile_as(document, text.as_bytes());
    }

    #[test]
    fn random_bytes_never_panic_the_config_parser(data in prop::collection::vec(any::<u8>(), 0..512)) {
        common::config(&data);
    }

    #[test]
    fn tomlish_text_never_panics_the_config_parser(lines in prop::collection::vec(toml_line(), 0..16)) {
        common::config(lines.concat().as_bytes());
    }
}
