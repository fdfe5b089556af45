//! The store's lock at open (SPEC P5): a holder that is gone or going is waited for
//! (bounded), a live one fails the open at once with its pid.
//!
//! The holders are forked children that only make system calls (flock, fork,
//! nanosleep, close, _exit), safe after a fork of a process with threads.

mod common;

use common::*;
use sendgate::store::lock::Holder;
use sendgate::store::lock::Name;
use sendgate::store::{identity, OpenOptions, Settings, Store, StoreError};
use std::ffi::CStr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the lock outlives the process that took it, in the first test.
const HELD_AFTER_EXIT: Duration = Duration::from_millis(300);
/// The longest a live holder keeps the lock if the test never kills it.
const LIVE_HOLDER_MAX: Duration = Duration::from_secs(20);

/// A store in a new directory, created and closed: its `db` exists and no handle holds
/// it. `None` (the test is skipped, saying why) where the kernel lists no locks.
fn closed_store() -> Option<(tempfile::TempDir, PathBuf)> {
    if !Path::new("/proc/locks").exists() {
        eprintln!("skipped: no /proc/locks, the holder of a lock cannot be seen");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    open(dir.path(), Settings::default()).close().expect("close");
    let path = dir.path().join("store");
    Some((dir, path))
}

fn nanosleep(d: Duration) {
    let ts = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `ts` outlives the call; a null remainder is allowed.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

/// In a forked child: close every descriptor but `keep`, so that the child holds no
/// lock of another test running in this process.
fn close_all_but(keep: libc::c_int) {
    for fd in 3..4096 {
        if fd != keep {
            // SAFETY: close(2) on a descriptor this child owns or not: EBADF at worst.
            unsafe { libc::close(fd) };
        }
    }
}

/// Fork a child that takes the `flock` of `db`, then runs `then` (system calls only)
/// and `_exit`s with its result. The parent's copy of the descriptor is closed on
/// return: the lock belongs to the open file, so only the child's copies hold it.
fn fork_holder(db: &Path, then: fn() -> libc::c_int) -> libc::pid_t {
    fork_named_holder(db, None, then)
}

/// [`fork_holder`], the child first taking `name` as its process name (`/proc/PID/comm`).
fn fork_named_holder(db: &Path, name: Option<&CStr>, then: fn() -> libc::c_int) -> libc::pid_t {
    let file = std::fs::File::open(db).expect("open db");
    let fd = file.as_raw_fd();
    // SAFETY: the child makes system calls only and leaves by `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        close_all_but(fd);
        if let Some(name) = name {
            // SAFETY: prctl(2) reads the NUL-terminated name, which outlives the call.
            unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
        }
        // SAFETY: `fd` is open in the child; blocking until sled's threads of the
        // closed store let go.
        let code = if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
            then()
        } else {
            1
        };
        // SAFETY: leaves the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    drop(file);
    pid
}

/// Wait for `pid`, a child of this process: its exit code.
fn reap(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: `status` outlives the call; `pid` is our child.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    }
}

/// Whether some process holds the `flock` of `db` (tried without taking it for long:
/// a probe that gets it lets go at once).
fn held(db: &Path) -> bool {
    let file = std::fs::File::open(db).expect("open db");
    // SAFETY: `file` is open for the call.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
}

fn wait_for_holder(db: &Path, pid: libc::pid_t) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while identity::lock_holder(db) != Some(pid as u32) {
        assert!(Instant::now() < deadline, "pid {pid} never held {}", db.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The lock outlives the process that took it: a descriptor it passed on holds it a
/// moment longer, the way a killed worker's teardown does. Its pid, the one the kernel
/// lists, is gone; the open waits and succeeds. Before the wait, it failed at once.
#[test]
fn an_open_waits_while_the_lock_outlives_its_holder() {
    let Some((_dir, path)) = closed_store() else {
        return;
    };
    let db = path.join("db");
    // The child takes the lock, forks a grandchild that keeps it for HELD_AFTER_EXIT,
    // and exits at once.
    let locker = fork_holder(&db, || {
        // SAFETY: the grandchild makes system calls only and leaves by `_exit`.
        match unsafe { libc::fork() } {
            0 => {
                nanosleep(HELD_AFTER_EXIT);
                // SAFETY: as above.
                unsafe { libc::_exit(0) }
            }
            pid if pid > 0 => 0,
            _ => 1,
        }
    });
    assert_eq!(reap(locker), 0, "the holder could not lock or fork");
    assert!(held(&db), "the grandchild let go too early");
    // Listed under the pid that took it, which no longer exists.
    let seen = identity::observe_holder(&db);
    if seen == Holder::Unlisted {
        // The kernel lists the lock under other device numbers than `stat` gives (btrfs
        // subvolumes, overlayfs): an unlisted holder is waited for only briefly.
        eprintln!("skipped: this filesystem's locks are not found in /proc/locks by device and inode");
        nanosleep(HELD_AFTER_EXIT);
        return;
    }
    assert_eq!(seen, Holder::Gone(locker as u32));
    let store = Store::open(&path, Settings::default(), OpenOptions::default())
        .expect("the open waits for a lock whose holder is gone");
    assert!(store.state_counts().is_ok());
}

/// A live holder (another worker) fails the open at once, naming its pid: the open
/// returns while the holder still holds the lock. Once the holder is killed, the next
/// open succeeds without help, however far the kernel is with its teardown.
#[test]
fn a_live_holder_fails_the_open_at_once_and_a_killed_one_does_not() {
    let Some((_dir, path)) = closed_store() else {
        return;
    };
    let db = path.join("db");
    let holder = fork_named_holder(&db, Some(c"sendgate"), || {
        nanosleep(LIVE_HOLDER_MAX);
        0
    });
    wait_for_holder(&db, holder);
    assert_eq!(
        identity::observe_holder(&db),
        Holder::Live(holder as u32, Name::Sendgate)
    );
    let needle = format!("locked by another sendgate (pid {holder}): is another worker running?");
    fails_at_once(&path, holder, &needle, "");
    kill_and_open(&path, holder);
}

/// A holder that is not sendgate (here a process named `python3`) is named as what it
/// is, not called another sendgate. Before, every holder was "another sendgate".
#[test]
fn a_holder_that_is_not_sendgate_is_named_by_its_process_name() {
    let Some((_dir, path)) = closed_store() else {
        return;
    };
    let db = path.join("db");
    let holder = fork_named_holder(&db, Some(c"python3"), || {
        nanosleep(LIVE_HOLDER_MAX);
        0
    });
    wait_for_holder(&db, holder);
    assert_eq!(
        identity::observe_holder(&db),
        Holder::Live(holder as u32, Name::Other("python3".into()))
    );
    let needle = format!("locked by process {holder} (python3), not a sendgate");
    fails_at_once(&path, holder, &needle, "another sendgate");
    kill_and_open(&path, holder);
}

/// Every open of the store held by the live `holder` fails at once: a lock error whose
/// message holds `needle` and not `not` (unless empty), exit 74, the holder still
/// holding the lock.
fn fails_at_once(path: &Path, holder: libc::pid_t, needle: &str, not: &str) {
    let db = path.join("db");
    for open in [Store::open, Store::open_existing, Store::open_read_only] {
        match open(path, Settings::default(), OpenOptions::default()) {
            Err(e @ StoreError::Locked { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(needle), "`{needle}` in: {msg}");
                assert!(not.is_empty() || !msg.contains(not), "no `{not}` in: {msg}");
                assert!(msg.contains(&path.display().to_string()), "{msg}");
                assert_eq!(e.exit_code(), 74);
            }
            Err(e) => panic!("expected a lock error, got {e}"),
            Ok(_) => panic!("a held store opened"),
        }
        // The open did not wait for the lock to go: the holder still has it.
        assert_eq!(identity::lock_holder(&db), Some(holder as u32));
    }
}

/// Kill the live `holder`: the next open waits for its lock to go, and succeeds.
fn kill_and_open(path: &Path, holder: libc::pid_t) {
    // SAFETY: kill(2) takes no pointers; `holder` is our unreaped child.
    assert_eq!(unsafe { libc::kill(holder, libc::SIGKILL) }, 0);
    let store = Store::open(path, Settings::default(), OpenOptions::default())
        .expect("a killed holder's lock is waited for");
    drop(store);
    assert_eq!(
        reap(holder),
        -1,
        "the holder was killed, it did not exit by itself"
    );
}
