//! Architecture invariant: the policy core and the rules do no IO and never read the
//! clock. Greps every file under `crates/policy/src/` and `src/rules/` for the imports
//! and calls that would break it; the rules also never see the store's transaction or
//! sled's types (they decide from values the store read).

use std::path::Path;

const FORBIDDEN: [&str; 9] = [
    "tokio",
    "sled",
    "std::fs",
    "std::net",
    "std::process",
    "now()",
    "SystemTime",
    "Instant::",
    "std::thread",
];

/// What the rules must not name on top: the store's transaction and handles.
const FORBIDDEN_IN_RULES: [&str; 5] = ["Tx", "TxResult", "store::tx", "Store", "IVec"];

/// Every `.rs` file under `dir`, in name order.
fn sources(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("readable entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn check(dir: &Path, forbidden: &[&str], what: &str) -> usize {
    let files = sources(dir);
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for bad in forbidden {
                assert!(
                    !code.contains(bad),
                    "{}:{}: {what} must not use `{bad}`: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
    }
    files.len()
}

#[test]
fn policy_core_does_no_io_and_never_reads_the_clock() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/policy/src");
    let files = check(&dir, &FORBIDDEN, "the policy core");
    assert!(files >= 7, "expected the policy modules under {}", dir.display());
}

#[test]
fn rules_do_no_io_never_read_the_clock_nor_see_the_store() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/rules");
    let all: Vec<&str> = FORBIDDEN.iter().chain(&FORBIDDEN_IN_RULES).copied().collect();
    let files = check(&dir, &all, "the rules");
    assert!(files >= 5, "expected the rule modules under {}", dir.display());
}
