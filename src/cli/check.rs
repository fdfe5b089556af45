//! `sendgate check FILE...`: validate job files without a store (SPEC §8).

use crate::contract::jobfile::{check_file, parse_file};
use crate::exit;
use std::path::PathBuf;

/// Prints every error (`file:line: field `f`: reason`) of every file, and a summary.
pub fn run(files: &[PathBuf]) -> i32 {
    let mut bad = 0usize;
    for path in files {
        let name = path.display().to_string();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                bad += 1;
                println!("{name}: cannot read: {e}");
                continue;
            }
        };
        let errors = check_file(&name, &bytes);
        if errors.is_empty() {
            let n = parse_file(&name, &bytes).map_or(0, |r| r.len());
            println!("{name}: ok, {n} records");
        } else {
            bad += 1;
            for e in &errors {
                println!("{e}");
            }
        }
    }
    if bad == 0 {
        exit::OK
    } else {
        eprintln!("{bad} of {} files invalid", files.len());
        exit::FAILURE
    }
}
