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
/// How long an open waits for another sendgate command (`status`, `list`, …: one that
/// opened the store because no worker ran) to finish: a worker started meanwhile failed
/// at once, and systemd's restarts could all fall inside one long `list`. Inside
/// systemd's default start timeout of 90 s, with the open itself.
pub const COMMAND_WAIT: Duration = Duration::from_secs(60);
/// The longest an open waits in all, whatever holders come and go.
pub const ALL_WAIT: Duration = Duration::from_secs(75);
/// The pause between two tries.
pub const POLL: Duration = Duration::from_millis(10);
/// The pause between two tries while a command holds the store.
pub const COMMAND_POLL: Duration = Duration::from_millis(100);

/// `PF_EXITING` in the flags of `/proc/PID/stat`: the task has begun to exit.
const PF_EXITING: u64 = 0x4;
/// `PF_DUMPCORE` in the same flags: the task is writing its core dump, then exits.
const PF_DUMPCORE: u64 = 0x200;
/// SIGKILL's bit in the pending masks of `/proc/PID/status`.
const SIGKILL_BIT: u64 = 1 << (9 - 1);
/// The name (`/proc/PID/comm`) a sendgate process runs under; a binary installed under
/// a longer name that begins with it (`sendgate-1.4`) counts too.
pub const SENDGATE_COMM: &str = "sendgate";

/// What was seen of the process holding the store's lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// No holder is listed: the lock went between the failed open and the look, or
    /// `/proc/locks` cannot tell (not Linux, or a holder in another pid namespace).
    Unlisted,
    /// The pid that took the lock no longer runs: a descriptor it passed on holds it.
    Gone(u32),
    /// The pid that took the lock is exiting: killed, dumping core, or its threads
    /// being torn down while its main thread is already a zombie.
    Exiting(u32, Name),
    /// A live process (this one included: a second handle in one process), or one
    /// that cannot be looked at (another user's, under `hidepid`).
    Live(u32, Name),
}

/// What the holder is, by its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Name {
    /// A worker (`sendgate run`), or a sendgate whose command line cannot be read.
    Sendgate,
    /// Another sendgate command (its subcommand: `status`, `list`, …), which holds the
    /// store only while it runs.
    Command(String),
    /// Another program (`python3`, `sqlite3`, a backup tool).
    Other(String),
    /// The name cannot be read (another user's process under `hidepid`).
    Unknown,
}

impl Name {
    /// From the text of `/proc/PID/comm`, if it could be read.
    pub fn from_comm(comm: Option<&str>) -> Name {
        match comm.map(str::trim_end).filter(|c| !c.is_empty()) {
            None => Name::Unknown,
            Some(c) if c.starts_with(SENDGATE_COMM) => Name::Sendgate,
            Some(c) => Name::Other(c.escape_debug().to_string()),
        }
    }
}

/// The operator commands (SPEC §8) that open the store while they run when no worker
/// does.
pub const COMMANDS: [&str; 8] = [
    "status", "list", "show", "pause", "resume", "cancel", "requeue", "audit",
];

/// The subcommand of a sendgate's `/proc/PID/cmdline` (arguments separated by NULs)
/// when it is one of [`COMMANDS`]: the first argument after the program that is not an
/// option. `None` for a worker (`run`) and anything else.
pub fn command_of(cmdline: &[u8]) -> Option<String> {
    let sub = cmdline
        .split(|&b| b == 0)
        .skip(1)
        .find(|a| !a.is_empty() && !a.starts_with(b"-"))?;
    COMMANDS
        .iter()
        .find(|c| c.as_bytes() == sub)
        .map(|c| c.to_string())
}

/// What reading one of the holder's `/proc` files gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Look {
    Text(String),
    /// Not found, or `ESRCH`: the process is gone (or, for `/proc/PID` itself, hidden
    /// from this user by `hidepid=2`: [`holder`] asks `kill(pid, 0)` then).
    Gone,
    /// Any other error (permission: another user's process under `hidepid=1`): the
    /// process is there, but cannot be looked at.
    Hidden,
}

/// What was read of the pid the kernel lists as the holder, in the order it is read:
/// `stat`, then `status`, `comm`, and `kill(pid, 0)` only when `stat` is gone (a pid
/// read gone cannot come back, so a later `kill` that finds it is a hidden process).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub pid: u32,
    pub stat: Look,
    pub status: Look,
    pub comm: Look,
    /// `kill(pid, 0)` succeeded or was refused (`EPERM`): the pid exists.
    pub exists: bool,
}

/// The holder, from what was read of it. Only a process known gone (`ENOENT`, `ESRCH`)
/// or known exiting is waited for; whatever cannot be read is taken for live, so that
/// another user's worker fails the open at once, naming its pid.
pub fn holder(seen: &Seen) -> Holder {
    let pid = seen.pid;
    let name = Name::from_comm(match &seen.comm {
        Look::Text(t) => Some(t),
        _ => None,
    });
    match (&seen.stat, &seen.status) {
        (Look::Gone, _) if seen.exists => Holder::Live(pid, Name::Unknown),
        (Look::Gone, _) => Holder::Gone(pid),
        (Look::Hidden, _) => Holder::Live(pid, name),
        // It exited between the two reads.
        (Look::Text(_), Look::Gone) => Holder::Exiting(pid, name),
        (Look::Text(stat), Look::Hidden) if is_exiting(stat, "") => Holder::Exiting(pid, name),
        (Look::Text(_), Look::Hidden) => Holder::Live(pid, name),
        (Look::Text(stat), Look::Text(status)) if is_exiting(stat, status) => Holder::Exiting(pid, name),
        (Look::Text(_), Look::Text(_)) => Holder::Live(pid, name),
    }
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
pub fn step(holder: &Holder, patience: Patience, waited: Duration) -> Step {
    debug_assert!(POLL < UNLISTED_WAIT && UNLISTED_WAIT < OPEN_WAIT && OPEN_WAIT <= CLOSE_WAIT);
    debug_assert!(CLOSE_WAIT < COMMAND_WAIT && COMMAND_WAIT + OPEN_WAIT < ALL_WAIT);
    let (limit, waits) = match (patience, holder) {
        (Patience::Open, Holder::Unlisted) => (UNLISTED_WAIT, true),
        (Patience::Open, Holder::Live(_, Name::Command(_))) => (COMMAND_WAIT, true),
        (Patience::Open, _) => (OPEN_WAIT, !matches!(holder, Holder::Live(..))),
        (Patience::Close, _) => (CLOSE_WAIT, true),
    };
    if waits && waited < limit {
        Step::Retry
    } else {
        Step::Fail
    }
}

/// What the lock error says after "locked by": a live sendgate reads `another sendgate
/// (pid N): is another worker running?`, as before the holder was named, so that what
/// operators and scripts match stays the same; another program is named by its pid and
/// `/proc/PID/comm`.
pub fn detail(holder: &Holder) -> String {
    const WORKER: &str = "is another worker running?";
    match holder {
        Holder::Live(pid, Name::Sendgate) => format!("another sendgate (pid {pid}): {WORKER}"),
        Holder::Live(pid, Name::Command(c)) => format!(
            "a `sendgate {c}` command (pid {pid}), still running after {} s: let it finish, or stop it",
            COMMAND_WAIT.as_secs()
        ),
        Holder::Live(pid, Name::Other(comm)) => format!(
            "process {pid} ({comm}), not a sendgate: stop it, or give this store to sendgate alone"
        ),
        Holder::Live(pid, Name::Unknown) => {
            format!("process {pid} (its name cannot be read: another user's?): {WORKER}")
        }
        Holder::Exiting(pid, Name::Other(comm)) => {
            format!("process {pid} ({comm}, still exiting), not a sendgate")
        }
        Holder::Exiting(pid, _) => format!("another sendgate (pid {pid}, still exiting): {WORKER}"),
        Holder::Gone(pid) => format!(
            "another sendgate (pid {pid}, no longer running; a process it started may hold the store): {WORKER}"
        ),
        Holder::Unlisted => format!("another sendgate (pid unknown): {WORKER}"),
    }
}

/// Whether a process is exiting, from the text of its `/proc/PID/stat` and
/// `/proc/PID/status`: a zombie or dead state, `PF_EXITING` or `PF_DUMPCORE`, or a SIGKILL pending (sent,
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
    dead || flags & (PF_EXITING | PF_DUMPCORE) != 0 || killed
}

#[cfg(test)]
mod tests {
    use super::*;
    use Holder::*;
    use Name::*;
    use Patience::*;
    use Step::*;

    fn check(holder: Holder, patience: Patience, waited_ms: u64, expected: Step) {
        assert_eq!(
            step(&holder, patience, Duration::from_millis(waited_ms)),
            expected,
            "{holder:?} {patience:?} after {waited_ms} ms"
        );
    }

    fn other(comm: &str) -> Name {
        Name::Other(comm.into())
    }

    #[test]
    fn an_open_waits_only_for_a_holder_gone_or_going() {
        let open_ms = OPEN_WAIT.as_millis() as u64;
        let close_ms = CLOSE_WAIT.as_millis() as u64;
        check(Live(42, Sendgate), Open, 0, Fail);
        check(Live(42, other("python3")), Open, 0, Fail);
        check(Live(42, Unknown), Open, 0, Fail);
        check(Exiting(42, Sendgate), Open, 0, Retry);
        check(Exiting(42, Sendgate), Open, open_ms - 1, Retry);
        check(Exiting(42, Sendgate), Open, open_ms, Fail);
        check(Exiting(42, other("python3")), Open, 0, Retry);
        check(Gone(42), Open, 0, Retry);
        check(Gone(42), Open, open_ms, Fail);
        let unlisted_ms = UNLISTED_WAIT.as_millis() as u64;
        check(Unlisted, Open, 0, Retry);
        check(Unlisted, Open, unlisted_ms - 1, Retry);
        check(Unlisted, Open, unlisted_ms, Fail);
        check(Live(42, Sendgate), Close, 0, Retry);
        check(Live(42, Sendgate), Close, open_ms, Retry);
        check(Live(42, Sendgate), Close, close_ms, Fail);
        check(Unlisted, Close, close_ms - 1, Retry);
        check(Exiting(42, Sendgate), Close, close_ms, Fail);
    }

    /// A worker started while `sendgate status` (or a long `list`) had the store open,
    /// no worker running, failed at once (exit 74): it waits for the command now.
    #[test]
    fn an_open_waits_for_another_sendgate_command_but_not_for_a_worker() {
        let command_ms = COMMAND_WAIT.as_millis() as u64;
        let list = || Live(42, Command("list".into()));
        check(list(), Open, 0, Retry);
        check(list(), Open, command_ms - 1, Retry);
        check(list(), Open, command_ms, Fail);
        check(Live(42, Sendgate), Open, 0, Fail);
        let nul = |args: &[&str]| args.join("\0").into_bytes();
        assert_eq!(
            command_of(&nul(&["/usr/bin/sendgate", "run", "--config", "a.toml"])),
            None
        );
        assert_eq!(command_of(&nul(&["sendgate", "--verbose", "run"])), None);
        assert_eq!(
            command_of(&nul(&["sendgate", "status", "--json", ""])),
            Some("status".into())
        );
        assert_eq!(
            command_of(&nul(&["sendgate", "list", "--limit", "0"])),
            Some("list".into())
        );
        assert_eq!(command_of(&nul(&["sendgate"])), None);
        assert_eq!(
            command_of(&nul(&["./a-test", "a_test_name"])),
            None,
            "not a command"
        );
        assert_eq!(command_of(b""), None);
        let d = detail(&list());
        assert!(
            d.starts_with("a `sendgate list` command (pid 42), still running after 60 s"),
            "{d}"
        );
    }

    #[test]
    fn a_live_sendgate_reads_as_before_and_another_program_is_named() {
        assert_eq!(
            detail(&Live(4242, Sendgate)),
            "another sendgate (pid 4242): is another worker running?"
        );
        assert_eq!(
            detail(&Unlisted),
            "another sendgate (pid unknown): is another worker running?"
        );
        assert!(detail(&Exiting(7, Sendgate)).starts_with("another sendgate (pid 7, still exiting)"));
        assert!(detail(&Gone(7)).starts_with("another sendgate (pid 7, no longer running"));
        let python = detail(&Live(4242, other("python3")));
        assert!(
            python.starts_with("process 4242 (python3), not a sendgate"),
            "{python}"
        );
        assert!(!python.contains("another sendgate"), "{python}");
        let exiting = detail(&Exiting(7, other("python3")));
        assert!(
            exiting.starts_with("process 7 (python3, still exiting)"),
            "{exiting}"
        );
        let unknown = detail(&Live(9, Unknown));
        assert!(
            unknown.starts_with("process 9 (its name cannot be read"),
            "{unknown}"
        );
    }

    #[test]
    fn the_name_comes_from_comm() {
        let cases = [
            (Some("sendgate\n"), Sendgate),
            (Some("sendgate-1.4\n"), Sendgate),
            (Some("python3\n"), other("python3")),
            (Some("store_lock-0a1b\n"), other("store_lock-0a1b")),
            // A name is shown escaped, never as raw control characters.
            (Some("a\x1b[2Jb\n"), other("a\\u{1b}[2Jb")),
            (Some("\n"), Unknown),
            (None, Unknown),
        ];
        for (comm, expected) in cases {
            assert_eq!(Name::from_comm(comm), expected, "{comm:?}");
        }
    }

    fn seen(stat: Look, status: Look, exists: bool) -> Seen {
        Seen {
            pid: 42,
            stat,
            status,
            comm: Look::Text("python3\n".into()),
            exists,
        }
    }

    #[test]
    fn only_a_holder_known_gone_or_exiting_is_waited_for() {
        let live = Look::Text(stat("python3", "S", 0x400040));
        let zombie = Look::Text(stat("python3", "Z", 0x400044));
        let quiet = Look::Text(status("0000000000000000", "0000000000000000"));
        let killed = Look::Text(status("0000000000000100", "0000000000000000"));
        let py = || other("python3");
        let cases = [
            (seen(live.clone(), quiet.clone(), true), Live(42, py())),
            (seen(live.clone(), killed.clone(), true), Exiting(42, py())),
            (seen(zombie.clone(), quiet.clone(), true), Exiting(42, py())),
            // Exited between the two reads.
            (seen(live.clone(), Look::Gone, true), Exiting(42, py())),
            // `status` refused (another user's process): live, unless `stat` says not.
            (seen(live.clone(), Look::Hidden, true), Live(42, py())),
            (seen(zombie.clone(), Look::Hidden, true), Exiting(42, py())),
            // `/proc/PID` refused (hidepid=1): live.
            (seen(Look::Hidden, Look::Hidden, true), Live(42, py())),
            // `/proc/PID` not there: gone, unless `kill(pid, 0)` finds it (hidepid=2).
            (seen(Look::Gone, Look::Gone, false), Gone(42)),
            (seen(Look::Gone, Look::Gone, true), Live(42, Unknown)),
        ];
        for (seen, expected) in cases {
            assert_eq!(holder(&seen), expected, "{seen:?}");
        }
        let mut unnamed = seen(live, quiet, true);
        unnamed.comm = Look::Hidden;
        assert_eq!(holder(&unnamed), Live(42, Unknown));
        unnamed.comm = Look::Text("sendgate\n".into());
        assert_eq!(holder(&unnamed), Live(42, Sendgate));
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
            // Writing its core dump (PF_DUMPCORE, PF_SIGNALED), not yet PF_EXITING.
            (stat("sendgate", "R", 0x400640), quiet.clone(), true),
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
