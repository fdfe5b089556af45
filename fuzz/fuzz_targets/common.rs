//! The input handling shared by the fuzz targets and by `tests/fuzz_corpus.rs`, which
//! includes this file with `#[path]` so the corpus is replayed through exactly the same
//! logic on stable Rust.

#![allow(dead_code)] // each includer uses only part of it

/// The file name a job-file input is parsed under: an odd first byte selects the JSON
/// document format (`.json`), an even one (or an empty input) JSON Lines (`.jsonl`).
/// The committed seeds start with `1` (document) or `0` (JSON Lines).
pub fn jobfile_name(data: &[u8]) -> (&'static str, &[u8]) {
    match data.split_first() {
        Some((&b, rest)) if b % 2 == 1 => ("fuzz.json", rest),
        Some((_, rest)) => ("fuzz.jsonl", rest),
        None => ("fuzz.jsonl", data),
    }
}

/// Parse one job-file input; the result may be Ok or Err, but it must not panic. Every
/// line number it reports (of a record or of the error) must lie inside the input.
pub fn jobfile(data: &[u8]) -> bool {
    let (name, bytes) = jobfile_name(data);
    let lines = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
    match sendgate::contract::jobfile::parse_file(name, bytes) {
        Ok(records) => {
            for r in &records {
                assert!((1..=lines).contains(&r.line), "record line {} of {lines}", r.line);
            }
            true
        }
        Err(e) => {
            assert!(
                (1..=lines).contains(&e.line),
                "error line {} of {lines}: {e}",
                e.line
            );
            false
        }
    }
}

/// Parse one config input (bytes taken as UTF-8, invalid sequences replaced); Ok or Err,
/// never a panic. A valid config also derives its policy.
pub fn config(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    match sendgate::config::Config::parse("fuzz.toml", &text) {
        Ok(config) => {
            let _ = config.policy();
            true
        }
        Err(e) => {
            let _ = e.to_string();
            false
        }
    }
}
