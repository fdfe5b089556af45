//! Architecture invariant: the policy core does no IO and never reads the clock.
//! Greps every file under `crates/policy/src/` for the imports and calls that would break it.

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

#[test]
fn policy_core_does_no_io_and_never_reads_the_clock() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/policy/src");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("crates/policy/src exists") {
        let path = entry.expect("readable entry").path();
        let text = std::fs::read_to_string(&path).expect("readable source");
        files += 1;
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for bad in FORBIDDEN {
                assert!(
                    !code.contains(bad),
                    "{}:{}: the policy core must not use `{bad}`: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
    }
    assert!(files >= 7, "expected the policy modules under {}", dir.display());
}
