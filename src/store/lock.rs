//! Whether an open that found the store locked waits or fails (SPEC P5): the decision,
//! apart from the IO that looks at the holder (`identity::observe_holder`) and sled's
//! open (`Store::open_with`, `Store::close`).
//!
//! sled holds an exclusive `flock` on `db` while a handle is open. The kernel lets go of
//! it when the holder's last descriptor closes; after a `kill -9` that is at the end of
//! the process's teardown (unmapping its memory comes first), tens of milliseconds for
//! a worker of 60 MiB, while its pid already reads as a zombie or as exiting. A start in
//! that gap waits (bounded); a start while a live process holds the store fails at once
//! naming its pid, as it always did. Nothing here reads a file or the clock.

use std::time::Duration;

/// How long an open waits for a holder that is gone or going before it fails.
pub const OPEN_WAIT: Duration = Duration::from_secs(5);
/// How long `Store::close` waits for sled to let go of the lock of the handle it just
/// dropped (sled's background threads hold it a moment longer, more on a loaded machine).
pub const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// How long an open waits when no holder is listed: long enough for a lock that went
/// between the failed try and the look (the next try takes it), short enough that a
/// live holder the kernel lists under other device numbers (btrfs subvolumes, overlayfs)
/// or another pid namespace still fails at once, for an operator.
pub const UNLISTED_WAIT: Duration = Duration::from_millis(250);
/// The pause between two tries.
pub const POLL: Duration = Duration::from_millis(10);

/// `PF_EXITING` in the flags of `/proc/PID/stat`: the task has begun to exit.
const PF_EXITING: u64 = 0x4;
/// SIGKILL's bit in the pending masks of `/proc/PID/status`.
const SIGKILL_BIT: u64 = 1 << (9 - 1);

/// What was seen of the process holding the store's lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// No holder is listed: the lock went between the failed open and the look, or
    /// `/proc/locks` cannot tell (not Linux, or a holder in another pid namespace).
    Unlisted,
    /// The pid that took the lock no longer runs: a descriptor it passed on holds it.
    Gone(u32),
    /// The pid that took the lock is exiting: killed, or its threads being torn down
    /// while its main thread is already a zombie.
    Exiting(u32),
    /// A live process (this one included: a second handle in one process).
    Live(u32),
}

/// Who the caller waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Patience {
    /// An open (`run` and every command): waits while no live process holds the lock.
    Open,
    /// `Store::close` reopening the store it just dropped: the holder is its own
    /// handle, which is live until sled's threads let go, so it waits for any holder.
    Close,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Try again after [`POLL`].
    Retry,
    /// Report the store locked, with [`detail`].
    Fail,
}

/// After an open failed on the lock held by `holder`, `waited` after the first try.
pub fn step(holder: Holder, patience: Patience, waited: Duration) -> Step {
    debug_assert!(POLL < UNLISTED_WAIT && UNLISTED_WAIT < OPEN_WAIT && OPEN_WAIT <= CLOSE_WAIT);
    let (limit, waits) = match (patience, holder) {
        (Patience::Open, Holder::Unlisted) => (UNLISTED_WAIT, true),
        (Patience::Open, _) => (OPEN_WAIT, !matches!(holder, Holder::Live(_))),
        (Patience::Close, _) => (CLOSE_WAIT, true),
    };
    if waits && waited < limit {
        Step::Retry
    } else {
        Step::Fail
    }
}

/// The holder as the lock error shows it: `pid N` for a live one, as before this wait
/// existed, so that what operators and scripts match stays the same.
pub fn detail(holder: Holder) -> String {
    match holder {
        Holder::Live(pid) => format!("pid {pid}"),
        Holder::Exiting(pid) => format!("pid {pid}, still exiting"),
        Holder::Gone(pid) => {
            format!("pid {pid}, no longer running; a process it started may hold the store")
        }
        Holder::Unlisted => "pid unknown".into(),
    }
}

/// Whether a process is exiting, from the text of its `/proc/PID/stat` and
/// `/proc/PID/status`: a zombie or dead state, `PF_EXITING`, or a SIGKILL pending (sent,
/// not yet acted on). Text that does not parse counts as not exiting: a live holder
/// fails at once, the behaviour without this wait.
pub fn is_exiting(stat: &str, status: &str) -> bool {
    // "pid (comm) state ppid pgrp session tty_nr tpgid flags ..."; comm may hold spaces
    // and parentheses, so the fields are counted after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or_else(Vec::new, |(_, rest)| rest.split_whitespace().collect());
    let dead = matches!(fields.first().copied(), Some("Z" | "X" | "x"));
    let flags = fields.get(6).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let killed = status.lines().any(|l| {
        let Some((name, mask)) = l.split_once(':') else {
            return false;
        };
        matches!(name, "SigPnd" | "ShdPnd")
            && u64::from_str_radix(mask.trim(), 16).is_ok_and(|m| m & SIGKILL_BIT != 0)
    });
    dead || flags & PF_EXITING != 0 || killed
}

#[cfg(test)]
mod tests {
    use super::*;
    use Holder::*;
    use Patience::*;
    use Step::*;

    fn check(holder: Holder, patience: Patience, waited_ms: u64, expected: Step) {
        assert_eq!(
            step(holder, patience, Duration::from_millis(waited_ms)),
            expected,
            "{holder:?} {patience:?} after {waited_ms} ms"
        );
    }

    #[test]
    fn an_open_waits_only_for_a_holder_gone_or_going() {
        let open_ms = OPEN_WAIT.as_millis() as u64;
        let close_ms = CLOSE_WAIT.as_millis() as u64;
        check(Live(42), Open, 0, Fail);
        check(Exiting(42), Open, 0, Retry);
        check(Exiting(42), Open, open_ms - 1, Retry);
        check(Exiting(42), Open, open_ms, Fail);
        check(Gone(42), Open, 0, Retry);
        check(Gone(42), Open, open_ms, Fail);
        let unlisted_ms = UNLISTED_WAIT.as_millis() as u64;
        check(Unlisted, Open, 0, Retry);
        check(Unlisted, Open, unlisted_ms - 1, Retry);
        check(Unlisted, Open, unlisted_ms, Fail);
        check(Live(42), Close, 0, Retry);
        check(Live(42), Close, open_ms, Retry);
        check(Live(42), Close, close_ms, Fail);
        check(Unlisted, Close, close_ms - 1, Retry);
        check(Exiting(42), Close, close_ms, Fail);
    }

    #[test]
    fn a_live_holder_reads_as_before() {
        assert_eq!(detail(Live(4242)), "pid 4242");
        assert_eq!(detail(Unlisted), "pid unknown");
        assert!(detail(Exiting(7)).starts_with("pid 7, "));
        assert!(detail(Gone(7)).starts_with("pid 7, "));
    }

    /// `/proc/PID/stat` up to the flags, then the rest of a real line.
    fn stat(comm: &str, state: &str, flags: u64) -> String {
        format!("4242 ({comm}) {state} 1 4242 4242 0 -1 {flags} 320 0 0 0 12 3 0 0 20 0 9 0")
    }

    fn status(sig_pnd: &str, shd_pnd: &str) -> String {
        format!("Name:\tsendgate\nState:\tS (sleeping)\nSigQ:\t0/31415\nSigPnd:\t{sig_pnd}\nShdPnd:\t{shd_pnd}\nSigBlk:\t0000000000000000\n")
    }

    #[test]
    fn exiting_is_read_from_state_flags_and_a_pending_kill() {
        let quiet = status("0000000000000000", "0000000000000000");
        let cases = [
            (stat("sendgate", "S", 0x400040), quiet.clone(), false),
            (stat("sendgate", "R", 0x400044), quiet.clone(), true),
            (stat("sendgate", "D", 0x4), quiet.clone(), true),
            (stat("sendgate", "Z", 0x400044), quiet.clone(), true),
            (stat("sendgate", "X", 0), quiet.clone(), true),
            // A comm with spaces and a parenthesis does not shift the fields.
            (stat("a) Z (b", "S", 0x40), quiet.clone(), false),
            (stat("a) S (b", "Z", 0x40), quiet.clone(), true),
            // SIGKILL sent, not yet acted on: per thread, or to the whole process.
            (
                stat("sendgate", "S", 0x40),
                status("0000000000000100", "0000000000000000"),
                true,
            ),
            (
                stat("sendgate", "S", 0x40),
                status("0000000000000000", "0000000000000100"),
                true,
            ),
            // SIGTERM pending is a request, not an exit.
            (
                stat("sendgate", "S", 0x40),
                status("0000000000004000", "0000000000000000"),
                false,
            ),
            // Unreadable text: not known to be exiting.
            (String::new(), String::new(), false),
            ("4242 (sendgate".to_string(), "SigPnd: zz".to_string(), false),
        ];
        for (stat, status, expected) in cases {
            assert_eq!(is_exiting(&stat, &status), expected, "{stat:?} {status:?}");
        }
    }
}
