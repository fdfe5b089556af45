//! `sendgate check FILE...`: validate job files without a store (SPEC §8).

use crate::contract::jobfile::parse_file;
use crate::exit;
use std::path::PathBuf;

/// Prints one line per invalid file (`file:line: field `f`: reason`) and a summary.
pub fn run(files: &[PathBuf]) -> i32 {
    let mut bad = 0usize;
    for path in files {
        let name = path.display().to_string();
        let result = std::fs::read(path)
            .map_err(|e| format!("{name}: cannot read: {e}"))
            .and_then(|bytes| parse_file(&name, &bytes).map_err(|e| e.to_string()));
        match result {
            Ok(records) => println!("{name}: ok, {} records", records.len()),
            Err(e) => {
                bad += 1;
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
