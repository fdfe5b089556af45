//! The store's identity and the files that make it durable (SPEC P2, P5).
//!
//! sled decides nothing about what a directory *should* hold: an emptied `db`, or a
//! directory without `db` and `snap.*`, opens as a new, empty database. An empty store
//! would give every cap of the day out a second time, so a store that was ever created
//! carries an identity that lives outside the files sled may lose:
//! `sendgate-store.id` (format, store id, created-at, ledger high-water mark), written
//! and fsynced with its directory. The same store id is kept in the `meta` tree; open
//! refuses data that does not carry it, and data whose ledger is behind the mark.
//!
//! This module also tracks which of sled's files have been synced, so that
//! `Store::make_durable` syncs every file sled wrote (`db`, `conf`, `blobs/*`, `snap.*`)
//! and the directories whose entries changed, but only those.
//!
//! It never opens sled and never decides to create a store on its own: `Store::open`
//! does, from the [`Layout`] found here.

use super::{damaged, io, lock, StoreError};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The identity file, in the store directory.
pub const ID_FILE: &str = "sendgate-store.id";
/// The temporary it is written to before a rename.
const TMP_FILE: &str = "sendgate-store.id.tmp";
/// The format of the identity file this build writes and reads.
pub const ID_FORMAT: u32 = 1;
/// The store directory's mode: the store holds proxy credentials.
pub const DIR_MODE: u32 = 0o700;
/// The identity file's mode.
const ID_FILE_MODE: u32 = 0o600;
/// Bound on the identity file read (it is a few lines).
const ID_FILE_MAX_BYTES: u64 = 4096;

/// The contents of `sendgate-store.id`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub format: u32,
    pub store_id: String,
    pub created_at: String,
    /// One more than the highest ledger id known durable (0: none yet). The store's
    /// data must reach at least this far.
    pub ledger_mark: u64,
    /// `false` from the moment the identity is written for a new store until its data
    /// carries the store id: a crash in between leaves a directory that is created
    /// afresh, not one that is refused (nothing was accepted yet).
    #[serde(default = "complete_default")]
    pub complete: bool,
}

fn complete_default() -> bool {
    true
}

impl Identity {
    pub fn new(store_id: String) -> Identity {
        Identity {
            format: ID_FORMAT,
            store_id,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ledger_mark: 0,
            complete: false,
        }
    }
}

/// What a store path holds before sled touches it.
#[derive(Debug)]
pub enum Layout {
    /// Nothing at the path.
    Missing,
    /// An empty directory.
    Empty,
    /// A directory with an identity file.
    Identified(Identity),
    /// A directory with a sled `db` but no identity (a store of an earlier version).
    Legacy,
    /// A non-empty directory with neither an identity nor a `db`: damaged or foreign.
    Foreign(Vec<String>),
}

/// Look at `path` without changing anything.
pub fn inspect(path: &Path) -> Result<Layout, StoreError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        // A path under a regular file does not exist either; creating it will fail
        // naming the file.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Layout::Missing)
        }
        Err(e) => return Err(io("inspect the store path", path)(e)),
    };
    if !meta.is_dir() {
        return Err(damaged(path, "it is not a directory"));
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io("read the store directory", path))? {
        let entry = entry.map_err(io("read the store directory", path))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // A temporary left by a crash while the identity was written counts for nothing.
        if name != TMP_FILE {
            names.push(name);
        }
    }
    names.sort();
    if names.iter().any(|n| n == ID_FILE) {
        return Ok(Layout::Identified(read(path)?));
    }
    if names.is_empty() {
        Ok(Layout::Empty)
    } else if names.iter().any(|n| n == "db") {
        Ok(Layout::Legacy)
    } else {
        Ok(Layout::Foreign(names))
    }
}

/// Read and check the identity file of the store at `dir`.
pub fn read(dir: &Path) -> Result<Identity, StoreError> {
    let file = dir.join(ID_FILE);
    let mut text = String::new();
    File::open(&file)
        .and_then(|f| f.take(ID_FILE_MAX_BYTES).read_to_string(&mut text))
        .map_err(io("read the identity file", &file))?;
    let id: Identity =
        toml::from_str(&text).map_err(|e| damaged(&file, format!("unreadable identity: {e}")))?;
    if id.format > ID_FORMAT {
        return Err(StoreError::NewerFormat {
            path: file.display().to_string(),
            found: id.format,
            supported: ID_FORMAT,
        });
    }
    if id.store_id.is_empty() {
        return Err(damaged(&file, "the identity names no store id"));
    }
    Ok(id)
}

/// Write the identity file: a temporary beside it, fsynced, renamed over it, and the
/// directory fsynced, so that a crash leaves the old or the new file, never neither.
/// `sync = false` (only with `store.fsync = false`, for mark updates) skips the syncs.
/// A write that fails (a full disk) removes its temporary: the old file stays as it
/// was and nothing half-written is left beside it.
pub fn write(dir: &Path, id: &Identity, sync: bool) -> Result<(), StoreError> {
    let file = dir.join(ID_FILE);
    let tmp = dir.join(TMP_FILE);
    let body = toml::to_string(id).map_err(|e| damaged(&file, format!("cannot encode the identity: {e}")))?;
    let text = format!(
        "# sendgate store identity. Do not edit, copy or delete it: a store whose data\n\
         # does not match it (wiped, replaced, restored from an older copy) is refused.\n{body}"
    );
    let written = write_tmp(&tmp, text.as_bytes(), sync)
        .and_then(|()| std::fs::rename(&tmp, &file).map_err(io("rename the identity file", &file)));
    if let Err(e) = written {
        // Best effort: the error that matters is the write's.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

fn write_tmp(tmp: &Path, text: &[u8], sync: bool) -> Result<(), StoreError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(ID_FILE_MODE)
        .open(tmp)
        .map_err(io("create the identity file", tmp))?;
    f.write_all(text).map_err(io("write the identity file", tmp))?;
    if sync {
        f.sync_all().map_err(io("fsync the identity file", tmp))?;
    }
    Ok(())
}

pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync the directory", dir))
}

/// Create the store directory (mode 0700 whatever the umask), or give an existing empty
/// one that mode. Parents are created as needed with the default mode.
pub fn create_dir(path: &Path) -> Result<(), StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io("create the store's parent directory", parent))?;
    }
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("create the store directory", path)(e)),
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))
        .map_err(io("set the store directory's mode", path))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// A random store id: 128 bits from the kernel, in hex.
pub fn new_store_id(path: &Path) -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("read /dev/urandom to make a store id for", path))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Remove the snapshots sled left unfinished (`snap.<lsn>.generating`), if no process
/// holds the store.
///
/// sled 0.34 writes a snapshot each time it opens: to `snap.<lsn>.generating`, synced,
/// then renamed to `snap.<lsn>`, the rename being the commit. A kill during the write
/// leaves the `.generating` file behind, and sled's next open takes it for the newest
/// snapshot (its listing skips only `.in___motion` files): an empty or torn file fails
/// that open and every later one with "corrupted data", so a crash at that moment would
/// stop the worker for good. A file that was never renamed is a snapshot that never
/// existed; removing it leaves sled exactly where the rename would not have happened.
/// The store's `flock` (sled's own lock on `db`) is taken first, so a live worker's
/// snapshot in progress is never touched; if it is held, nothing is removed and sled's
/// open reports the lock.
pub fn clear_unfinished_snapshots(path: &Path) -> Result<(), StoreError> {
    let unfinished = |dir: &Path| -> Vec<OsString> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| is_unfinished_snapshot(&n.to_string_lossy()))
            .collect()
    };
    if unfinished(path).is_empty() {
        return Ok(());
    }
    let db = path.join("db");
    let Ok(file) = File::open(&db) else {
        // No data file: sled starts from nothing and reads no snapshot.
        return Ok(());
    };
    use std::os::fd::AsRawFd;
    // SAFETY: `file` is open for the whole call; flock has no other precondition.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Ok(());
    }
    for name in unfinished(path) {
        let p = path.join(name);
        std::fs::remove_file(&p).map_err(io("remove the unfinished sled snapshot", &p))?;
    }
    // Closing `file` afterwards lets go of the lock.
    sync_dir(path)
}

/// Whether nobody holds the store's `flock` (sled's lock on `db`): taken and let go
/// at once. A `db` that cannot be opened counts as free (the open says why).
pub fn lock_free(db: &Path) -> bool {
    let Ok(file) = File::open(db) else { return true };
    use std::os::fd::AsRawFd;
    // SAFETY: `file` is open for the whole call; flock has no other precondition.
    // Closing `file` lets go of the lock.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// `snap.<hex lsn>.generating`: a snapshot sled began and never renamed.
pub fn is_unfinished_snapshot(name: &str) -> bool {
    name.strip_prefix("snap.")
        .and_then(|r| r.strip_suffix(".generating"))
        .is_some_and(|lsn| !lsn.is_empty() && lsn.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The pid holding the `flock` on `file`, from `/proc/locks` (Linux), if it can be known.
pub fn lock_holder(file: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(file).ok()?;
    let dev = m.dev();
    let want = format!("{:02x}:{:02x}:{}", libc::major(dev), libc::minor(dev), m.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    // "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF"; lines of waiters carry "->".
    locks.lines().filter(|l| !l.contains("->")).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let at = f.iter().position(|x| *x == want)?;
        f.get(at.checked_sub(1)?)?.parse().ok().filter(|&pid| pid != 0)
    })
}

/// What can be seen of the process holding the `flock` on `file` (`lock::holder` reads
/// it, `lock::step` decides what to do about it).
pub fn observe_holder(file: &Path) -> lock::Holder {
    let Some(pid) = lock_holder(file) else {
        return lock::Holder::Unlisted;
    };
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let look = |name: &str| match std::fs::read_to_string(proc_dir.join(name)) {
        Ok(text) => lock::Look::Text(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            lock::Look::Gone
        }
        Err(_) => lock::Look::Hidden,
    };
    // In this order: a `stat` read gone is gone for good, so a `kill` after it that
    // finds the pid finds a process hidden from this user (`hidepid=2`).
    let stat = look("stat");
    let status = look("status");
    let comm = look("comm");
    let exists = stat == lock::Look::Gone && pid_exists(pid);
    let holder = lock::holder(&lock::Seen {
        pid,
        stat,
        status,
        comm,
        exists,
    });
    // A live sendgate that is not a worker: a command, waited for.
    match holder {
        lock::Holder::Live(pid, lock::Name::Sendgate) => {
            let command = std::fs::read(proc_dir.join("cmdline"))
                .ok()
                .and_then(|c| lock::command_of(&c));
            lock::Holder::Live(pid, command.map_or(lock::Name::Sendgate, lock::Name::Command))
        }
        other => other,
    }
}

/// Whether `kill(pid, 0)` finds the pid: it does when allowed to signal it, and when
/// refused (`EPERM`: another user's process).
fn pid_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with signal 0 sends nothing and takes no pointers.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Which of sled's files and directory entries are known durable, so that each new file
/// (a blob, a snapshot, `conf`) is synced once, and a directory only after its entries
/// changed. `db` itself is `fdatasync`ed at every call by the caller.
#[derive(Default)]
pub struct Synced {
    /// Per directory (the store's and `blobs/`): entry name → inode, as last synced.
    dirs: [BTreeMap<OsString, u64>; 2],
    /// Tells whether an entry may have changed since the last call, so that a durable
    /// commit lists the directories only then (two listings cost about a twentieth of
    /// a commit). Set up before the first listing; `None` where inotify is not to be
    /// had: then every call lists.
    watch: Option<DirWatch>,
    /// Listings made so far (none: the first call lists and sets up `watch`), and
    /// files synced (tests).
    listings: u64,
    files_synced: u64,
}

impl Synced {
    /// Sync every file of `root` and `root/blobs` not synced before, then each of the
    /// two directories whose entries changed since the last call.
    pub fn sync_new(&mut self, root: &Path) -> Result<(), StoreError> {
        let dirs: [PathBuf; 2] = [root.to_path_buf(), root.join("blobs")];
        if self.listings == 0 {
            // Before the listing: a change made while it runs is seen at the next call.
            self.watch = DirWatch::new(&dirs);
        } else if self.watch.as_ref().is_some_and(|w| !w.changed()) {
            return Ok(());
        }
        self.listings += 1;
        for (dir, known) in dirs.iter().zip(self.dirs.iter_mut()) {
            let mut seen = BTreeMap::new();
            let mut changed = false;
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                // sled creates `blobs/` at open; it is never removed while open.
                Err(e) => return Err(io("list the store directory", dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io("list the store directory", dir))?;
                let (name, ino) = (entry.file_name(), entry.ino());
                if known.get(&name) != Some(&ino) {
                    changed = true;
                    if name != "db" && entry.file_type().is_ok_and(|t| t.is_file()) {
                        sync_file(&entry.path())?;
                        self.files_synced += 1;
                    }
                }
                seen.insert(name, ino);
            }
            changed |= known.keys().any(|k| !seen.contains_key(k));
            if changed {
                sync_dir(dir)?;
            }
            *known = seen;
        }
        Ok(())
    }
}

/// Whether the entries of some directories may have changed since the last look:
/// inotify, watching entries made, removed and renamed. The kernel queues an event
/// inside the very call that changes an entry, so a change whose call returned before
/// `changed` runs (every file sled made before its flush returned) is always in the
/// queue: only an empty queue skips a listing.
struct DirWatch {
    queue: File,
}

const WATCHED: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

impl DirWatch {
    /// `None` when inotify cannot be had (not Linux, the per-user limit reached).
    fn new(dirs: &[PathBuf]) -> Option<DirWatch> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: no pointer is passed; a negative result is an error.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is a descriptor just opened, owned by nothing else.
        let queue = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        for dir in dirs {
            let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
            // SAFETY: `c` is a NUL-terminated path that outlives the call.
            let wd = unsafe { libc::inotify_add_watch(queue.as_raw_fd(), c.as_ptr(), WATCHED) };
            if wd < 0 {
                return None;
            }
        }
        Some(DirWatch { queue })
    }

    /// Drain the queue: whether anything was in it (an event, an overflow), or it
    /// could not be read (then the caller lists, as if something changed).
    fn changed(&self) -> bool {
        // Room for several events with names (at most 16 + 256 bytes each).
        let mut buf = [0u8; 4096];
        let mut any = false;
        loop {
            match (&self.queue).read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => any = true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return any,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }
}

fn sync_file(file: &Path) -> Result<(), StoreError> {
    match File::open(file) {
        Ok(f) => f.sync_all().map_err(io("fsync a store file", file)),
        // Removed by sled since it was listed (an old snapshot, a collected blob): the
        // directory sync that follows makes the removal durable.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("open a store file to fsync it", file)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> Identity {
        Identity {
            format: ID_FORMAT,
            store_id: "s-1".into(),
            created_at: "2026-11-30T00:00:00Z".into(),
            ledger_mark: n,
            complete: true,
        }
    }

    /// A write that fails leaves no temporary beside the store (a clean stop on a full
    /// disk left an empty `sendgate-store.id.tmp`).
    #[test]
    fn a_failed_write_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The rename fails: the identity's name is taken by a directory that is not empty.
        std::fs::create_dir_all(dir.path().join(ID_FILE).join("x")).expect("mkdir");
        let err = write(dir.path(), &id(1), true).expect_err("a rename over a directory fails");
        assert!(err.to_string().contains(ID_FILE), "names the path: {err}");
        assert!(!dir.path().join(TMP_FILE).exists(), "the temporary is removed");
    }

    /// A temporary that cannot be written leaves the identity as it was.
    #[test]
    fn a_write_that_cannot_create_its_temporary_leaves_the_old_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), &id(1), true).expect("first write");
        let before = std::fs::read(dir.path().join(ID_FILE)).expect("read");
        std::fs::create_dir_all(dir.path().join(TMP_FILE).join("x")).expect("mkdir");
        let err = write(dir.path(), &id(2), true).expect_err("the temporary is a directory");
        assert!(err.to_string().contains(TMP_FILE), "names the path: {err}");
        assert_eq!(std::fs::read(dir.path().join(ID_FILE)).expect("read"), before);
    }

    /// A durable commit lists the store's directories only when an entry changed since
    /// the last one, and every file made since is synced, in either directory; a
    /// removal or a rename is seen too. Without inotify every commit lists.
    #[test]
    fn a_new_file_is_synced_and_an_unchanged_directory_is_not_listed_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir(root.join("blobs")).expect("mkdir blobs");
        std::fs::write(root.join("db"), b"log").expect("db");
        std::fs::write(root.join("conf"), b"conf").expect("conf");
        let mut s = Synced::default();
        s.sync_new(root).expect("first");
        assert_eq!((s.listings, s.files_synced), (1, 1), "conf, not db");
        s.sync_new(root).expect("again");
        if s.watch.is_none() {
            eprintln!("skipped the unchanged case: inotify is not available here");
            return;
        }
        assert_eq!(s.listings, 1, "nothing changed: not listed");
        // Written to, not made: no entry changed (`db` is synced by the caller).
        std::fs::write(root.join("db"), b"more log").expect("db");
        s.sync_new(root).expect("db written");
        assert_eq!(s.listings, 1);
        std::fs::write(root.join("blobs").join("7"), b"blob").expect("blob");
        s.sync_new(root).expect("blob");
        assert_eq!((s.listings, s.files_synced), (2, 2), "the new blob is synced");
        assert!(s.dirs[1].contains_key(std::ffi::OsStr::new("7")));
        std::fs::write(root.join("snap.tmp"), b"snap").expect("snapshot");
        std::fs::rename(root.join("snap.tmp"), root.join("snap.1")).expect("rename");
        s.sync_new(root).expect("snapshot");
        assert_eq!(
            (s.listings, s.files_synced),
            (3, 3),
            "the renamed snapshot is synced"
        );
        std::fs::remove_file(root.join("blobs").join("7")).expect("rm");
        s.sync_new(root).expect("removed");
        assert_eq!(s.listings, 4, "a removal is listed (its directory synced)");
        s.sync_new(root).expect("quiet");
        assert_eq!(s.listings, 4);
    }
}
