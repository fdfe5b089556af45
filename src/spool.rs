//! The spool directory (SPEC §6): the only code that moves job files.
//!
//! Writers rename finished files into `incoming/`; the worker claims one by renaming
//! it into `processing/`, reads it, and moves it to `done/` or `rejected/` (beside a
//! `<name>.error`). A rename is atomic, so a file is never read half-written and two
//! claimers never get the same file: the loser's rename fails with `ENOENT`.
//!
//! It never parses a file, never follows a symbolic link when reading, never reads
//! more than `spool.max_file_bytes` (+1 to notice), and never overwrites a file: every
//! move into `processing/`, `done/` or `rejected/` refuses to replace what is there.
//! Each move is followed by an fsync of the directories involved, so a claim (and its
//! end) survives a crash.
//!
//! It never goes quietly deaf: a subdirectory that vanished makes the move that needed
//! it fail naming the path (never "someone else claimed it"), and [`Spool::repair`]
//! recreates it. A derived name (`<name>.1`, `<name>.error`) that would exceed
//! [`NAME_MAX`] bytes is shortened (see [`derived_name`]) instead of failing.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The subdirectories of the spool, created by [`Spool::open`].
pub const SUBDIRS: [&str; 5] = ["tmp", "incoming", "processing", "done", "rejected"];
/// The subdirectories producers write into: created with [`DIR_MODE`] whatever the
/// umask (the unit's `UMask=0027` would otherwise shut the group out).
const PRODUCER_SUBDIRS: [&str; 2] = ["tmp", "incoming"];
/// The longest file name most Linux file systems take, in bytes (`NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// Hex digits of the name hash that keeps a shortened name unique.
const NAME_HASH_HEX: usize = 16;
/// How many `.1`, `.2`, … suffixes are tried when a name is taken in `done/` or
/// `rejected/` before giving up.
pub const MAX_NAME_SUFFIX: u32 = 1000;
/// The mode the spool directories are created with (before the umask). No setgid bit
/// here: Linux ignores it in `mkdir`, and a sandbox with `RestrictSUIDSGID=` refuses
/// a `mkdir` that asks for it.
const DIR_MODE: u32 = 0o770;
/// The mode of a `tmp/` or `incoming/` this module creates, whatever the umask: the
/// group can drop files, and setgid keeps them in the spool's group.
const PRODUCER_DIR_MODE: u32 = 0o2770;
/// The suffix of the file written beside a rejected file.
const ERROR_SUFFIX: &str = ".error";
/// A job file found in `processing/` at this many start-ups in a row without being
/// applied is quarantined (SPEC 6, poison files).
pub const QUARANTINE_AFTER_STARTS: u32 = 2;

/// What a start-up does with a file a crash left in `processing/` (SPEC §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leftover {
    /// Its commit is durable but its `file_applied` was never logged (the worker died
    /// in between): log `file_applied` with the counts the commit stored, move it to
    /// `done/`. Never a `file_duplicate`: nothing logged it before.
    Report,
    /// Found here at `QUARANTINE_AFTER_STARTS` start-ups in a row and never applied:
    /// it likely kills the worker; moved to `rejected/`.
    Quarantine,
    /// Taken like any claim: applied, rejected, or (its content applied and reported
    /// before: a second drop) `file_duplicate`.
    Take,
}

/// PURE: the [`Leftover`] verdict on a file found in `processing/` at `starts`
/// start-ups in a row, whose content is `applied` in the store (false when not looked
/// at or unreadable), and `unreported` (its commit's report is still stored).
pub fn leftover(starts: u32, applied: bool, unreported: bool) -> Leftover {
    debug_assert!(applied || !unreported, "a report is written by the commit");
    if unreported {
        Leftover::Report
    } else if starts >= QUARANTINE_AFTER_STARTS && !applied {
        Leftover::Quarantine
    } else {
        Leftover::Take
    }
}

/// A job-file spool rooted at `dir`.
#[derive(Clone, Debug)]
pub struct Spool {
    dir: PathBuf,
    max_file_bytes: u64,
}

/// A file this worker claimed: it now lies in `processing/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The file name for display and for the store's record of applied files;
    /// a name that is not UTF-8 is shown lossily (and [`Spool::read`] refuses it).
    pub name: String,
    /// Where it lies in `processing/`, with the real (OS) name.
    pub path: PathBuf,
}

impl Claimed {
    fn os_name(&self) -> &OsStr {
        // `path` is always `processing/<name>`, built by this module.
        self.path.file_name().unwrap_or_default()
    }
}

/// Why a claimed file cannot be read. All but `Io` are reasons to reject the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not a regular file; the text says what it is ("a symbolic link", …).
    #[error("not a regular file: it is {0}")]
    NotRegular(String),
    #[error("the file is {size} bytes, larger than spool.max_file_bytes = {max}")]
    TooLarge { size: u64, max: u64 },
    /// The name is not UTF-8, so it cannot be recorded or reported faithfully.
    #[error("file name is not UTF-8")]
    NameNotUtf8,
    #[error("cannot read the file: {0}")]
    Io(io::Error),
}

impl Spool {
    /// Opens the spool at `dir`, creating it and its [`SUBDIRS`] as needed (mode
    /// `0o770` less the umask; `0o2770` for `tmp/` and `incoming/`). Existing
    /// directories are left as they are. Errors name the path.
    pub fn open(dir: &Path, max_file_bytes: u64) -> io::Result<Spool> {
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_file_bytes,
        };
        spool.repair()?;
        Ok(spool)
    }

    /// Recreates the spool directory and those of its [`SUBDIRS`] that are missing (an
    /// operator or a clean-up job removed them under the running worker), as
    /// [`Spool::open`] creates them. Returns the directories it created, so that the
    /// caller can say so; empty when the layout was whole. Errors name the path.
    pub fn repair(&self) -> io::Result<Vec<PathBuf>> {
        let mut created = Vec::new();
        if !is_dir(&self.dir)? {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(&self.dir)
                .map_err(|e| at(&self.dir, e))?;
            created.push(self.dir.clone());
        }
        for sub in SUBDIRS {
            let path = self.sub(sub);
            // Look first: `mkdir` on what exists can fail with something else than
            // `EEXIST` (a read-only or sandboxed file system). A file in its place is
            // not repaired here: every move through it then fails naming the path.
            if exists(&path).map_err(|e| at(&path, e))? {
                continue;
            }
            match fs::DirBuilder::new().mode(DIR_MODE).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(at(&path, e)),
            }
            if PRODUCER_SUBDIRS.contains(&sub) {
                open_to_group(&path).map_err(|e| at(&path, e))?;
            }
            created.push(path);
        }
        if !created.is_empty() {
            sync_dir(&self.dir).map_err(|e| at(&self.dir, e))?;
        }
        Ok(created)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn incoming_dir(&self) -> PathBuf {
        self.sub("incoming")
    }

    pub fn done_dir(&self) -> PathBuf {
        self.sub("done")
    }

    /// How many files `done/` holds (applied job files; unreadable counts as none).
    pub fn done_count(&self) -> usize {
        fs::read_dir(self.done_dir())
            .map(|entries| entries.flatten().filter(|e| e.path().is_file()).count())
            .unwrap_or(0)
    }

    fn sub(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Files left in `processing/` by a crash, in byte order of their names. They are
    /// already claimed: read them and finish them like any other claim.
    pub fn leftovers(&self) -> io::Result<Vec<Claimed>> {
        let processing = self.sub("processing");
        let names = sorted_names(&processing, |_| true).map_err(|e| at(&processing, e))?;
        Ok(names.into_iter().map(|n| claimed(&processing, n)).collect())
    }

    /// Claims the entry of `incoming/` with the smallest name in byte order (names
    /// starting with `.` or ending in `.tmp` are ignored), by renaming it into
    /// `processing/`. Any kind of entry is claimed (links, directories, fifos) so that
    /// it can be rejected. `None` when there is nothing to claim.
    ///
    /// An entry another process took first is skipped, and so is one whose name is
    /// already in `processing/` (it waits there until that file is finished). A
    /// missing `incoming/` or `processing/` is an error naming it, never "nothing to
    /// claim".
    pub fn claim_next(&self) -> io::Result<Option<Claimed>> {
        let incoming = self.incoming_dir();
        let processing = self.sub("processing");
        for name in sorted_names(&incoming, is_job_name).map_err(|e| at(&incoming, e))? {
            match rename_noreplace(&incoming.join(&name), &processing.join(&name)) {
                Ok(()) => {
                    sync_dir(&processing).map_err(|e| at(&processing, e))?;
                    sync_dir(&incoming).map_err(|e| at(&incoming, e))?;
                    return Ok(Some(claimed(&processing, name)));
                }
                // A namesake is being processed: try the next one.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                // Taken by another claimer since the scan, unless a directory of the
                // move is gone (then every later claim would fail the same way).
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    for d in [&processing, &incoming] {
                        if !is_dir(d).map_err(|e| at(d, e))? {
                            return Err(missing(d));
                        }
                    }
                }
                Err(e) => return Err(at(&incoming.join(&name), e)),
            }
        }
        Ok(None)
    }

    /// The names waiting in `incoming/`, sorted and filtered as [`Spool::claim_next`]
    /// sees them (names shown lossily).
    pub fn incoming_names(&self) -> io::Result<Vec<String>> {
        let incoming = self.incoming_dir();
        let names = sorted_names(&incoming, is_job_name).map_err(|e| at(&incoming, e))?;
        Ok(names.iter().map(|n| n.to_string_lossy().into_owned()).collect())
    }

    /// Opens a claimed file for reading: the file and its size. Refuses what is not a
    /// regular file (without following a symbolic link or blocking on a fifo), a file
    /// larger than `max_file_bytes`, and a name that is not UTF-8.
    fn open_claimed(&self, c: &Claimed) -> Result<(fs::File, u64), ReadError> {
        if std::str::from_utf8(c.os_name().as_bytes()).is_err() {
            return Err(ReadError::NameNotUtf8);
        }
        // Look before opening, so that a device or fifo is never even opened.
        let meta = fs::symlink_metadata(&c.path).map_err(ReadError::Io)?;
        if !meta.file_type().is_file() {
            return Err(ReadError::NotRegular(describe(meta.file_type()).into()));
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&c.path)
            .map_err(|e| match e.raw_os_error() {
                // It was swapped for a link between the look and the open.
                Some(libc::ELOOP) => ReadError::NotRegular("a symbolic link".into()),
                _ => ReadError::Io(e),
            })?;
        let meta = file.metadata().map_err(ReadError::Io)?;
        if !meta.file_type().is_file() {
            return Err(ReadError::NotRegular(describe(meta.file_type()).into()));
        }
        let max = self.max_file_bytes;
        if meta.len() > max {
            return Err(ReadError::TooLarge {
                size: meta.len(),
                max,
            });
        }
        Ok((file, meta.len()))
    }

    /// Reads a claimed file whole (`open_claimed`'s refusals; reading at most one byte
    /// more than `max_file_bytes`, in case it grew).
    pub fn read(&self, c: &Claimed) -> Result<Vec<u8>, ReadError> {
        let (file, len) = self.open_claimed(c)?;
        let max = self.max_file_bytes;
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(ReadError::Io)?;
        let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if size > max {
            return Err(ReadError::TooLarge { size, max });
        }
        Ok(bytes)
    }

    /// Reads a claimed JSON Lines file once, a block at a time (`store::scan`): its
    /// content hash and where its records are, and the open file to read them from
    /// again, a chunk at a time, while it is applied. It is never held whole.
    pub fn scan(&self, c: &Claimed) -> Result<crate::store::Scanned, ReadError> {
        let (file, _) = self.open_claimed(c)?;
        let scanned = crate::store::scan(&c.name, file).map_err(ReadError::Io)?;
        // It grew past the bound after the open's look.
        let max = self.max_file_bytes;
        let size = scanned.file.metadata().map_err(ReadError::Io)?.len();
        if size > max {
            return Err(ReadError::TooLarge { size, max });
        }
        Ok(scanned)
    }

    /// The content hash of a claimed file (`store::codec::content_hash`), read in small
    /// blocks: deciding about a file never needs it whole in memory (a poison file may
    /// be one too big to read at all).
    pub fn content_hash(&self, c: &Claimed) -> Result<u64, ReadError> {
        let (mut file, _) = self.open_claimed(c)?;
        let mut h = crate::store::codec::ContentHash::default();
        let mut block = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut block) {
                Ok(0) => return Ok(h.finish()),
                Ok(n) => h.update(&block[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// Moves a claimed file into `done/`, as `<name>`, or `<name>.1`, `<name>.2`, …
    /// when that is taken.
    pub fn done(&self, c: &Claimed) -> io::Result<()> {
        let done = self.sub("done");
        self.finish(c, &done, |_| Ok(false))?;
        Ok(())
    }

    /// Moves a claimed entry (of any kind) into `rejected/` under the same naming rule
    /// as [`Spool::done`], and writes `rejected/<final name>.error` holding `error`.
    pub fn reject(&self, c: &Claimed, error: &str) -> io::Result<()> {
        let rejected = self.sub("rejected");
        // A name is free only if its `.error` companion is free too, so that the
        // error of one file never overwrites another rejected file.
        let name = self.finish(c, &rejected, |candidate| {
            let path = rejected.join(derived_name("", candidate, ERROR_SUFFIX));
            exists(&path).map_err(|e| at(&path, e))
        })?;
        let error_name = derived_name("", &name, ERROR_SUFFIX);
        let tmp = rejected.join(derived_name(".", &error_name, ".tmp"));
        let written = write_synced(&tmp, format!("{error}\n").as_bytes())
            .and_then(|()| fs::rename(&tmp, rejected.join(&error_name)));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(|e| at(&rejected.join(&error_name), e))?;
        sync_dir(&rejected).map_err(|e| at(&rejected, e))
    }

    /// Moves `c` into `dest` under the first free name (`taken` can veto a name),
    /// syncs both directories, and returns the name it got.
    fn finish(
        &self,
        c: &Claimed,
        dest: &Path,
        taken: impl Fn(&OsStr) -> io::Result<bool>,
    ) -> io::Result<OsString> {
        let base = c.os_name().to_os_string();
        let processing = self.sub("processing");
        for n in 0..=MAX_NAME_SUFFIX {
            let candidate = if n == 0 {
                base.clone()
            } else {
                derived_name("", &base, &format!(".{n}"))
            };
            if taken(&candidate)? {
                continue;
            }
            match rename_noreplace(&c.path, &dest.join(&candidate)) {
                Ok(()) => {
                    sync_dir(dest).map_err(|e| at(dest, e))?;
                    sync_dir(&processing).map_err(|e| at(&processing, e))?;
                    return Ok(candidate);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                // Say which side is missing: the destination, or the claimed file.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !is_dir(dest).map_err(|e| at(dest, e))? {
                        return Err(missing(dest));
                    }
                    return Err(at(&c.path, e));
                }
                Err(e) => return Err(at(&dest.join(&candidate), e)),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{}: {} names taken in {}",
                c.name,
                MAX_NAME_SUFFIX + 1,
                dest.display()
            ),
        ))
    }
}

/// A name `claim_next` takes: not hidden, not a writer's temporary file.
fn is_job_name(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    !bytes.starts_with(b".") && !bytes.ends_with(b".tmp")
}

/// The names in `dir` that pass `keep`, in byte order.
fn sorted_names(dir: &Path, keep: impl Fn(&OsStr) -> bool) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if keep(&name) {
            names.push(name);
        }
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn claimed(processing: &Path, name: OsString) -> Claimed {
    Claimed {
        name: name.to_string_lossy().into_owned(),
        path: processing.join(name),
    }
}

/// `prefix + name + suffix`, the name of a file derived from `name` (`<name>.1`,
/// `<name>.error`, `.<name>.tmp`). When that would be longer than [`NAME_MAX`] bytes, the
/// middle is `name` cut short (at a character boundary) followed by `~` and 16 hex
/// digits of a hash of the whole `name`: still unique, and its start still says
/// which file it came from.
pub fn derived_name(prefix: &str, name: &OsStr, suffix: &str) -> OsString {
    let bytes = name.as_bytes();
    let mut out = prefix.as_bytes().to_vec();
    if prefix.len() + bytes.len() + suffix.len() <= NAME_MAX {
        out.extend_from_slice(bytes);
    } else {
        let room = NAME_MAX.saturating_sub(prefix.len() + suffix.len() + 1 + NAME_HASH_HEX);
        let mut cut = room.min(bytes.len());
        if let Ok(text) = std::str::from_utf8(bytes) {
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
        }
        out.extend_from_slice(&bytes[..cut]);
        out.extend_from_slice(format!("~{:016x}", name_hash(bytes)).as_bytes());
    }
    out.extend_from_slice(suffix.as_bytes());
    debug_assert!(out.len() <= NAME_MAX, "derived name of {} bytes", out.len());
    OsString::from_vec(out)
}

/// FNV-1a (64 bits): stable across versions and platforms, which a shortened name
/// needs to stay traceable.
fn name_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `e` with the path it concerns in front of its text (its kind kept).
fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The error of a spool directory that is not there.
fn missing(dir: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: the spool directory is missing", dir.display()),
    )
}

/// Makes a producer directory group-writable, and setgid where allowed (a sandbox with
/// `RestrictSUIDSGID=` refuses setgid; producers then need group-readable files).
fn open_to_group(path: &Path) -> io::Result<()> {
    match fs::set_permissions(path, fs::Permissions::from_mode(PRODUCER_DIR_MODE)) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            fs::set_permissions(path, fs::Permissions::from_mode(PRODUCER_DIR_MODE & 0o777))
        }
        r => r,
    }
}

/// Whether `path` is a directory (or a link to one: an operator may link the spool).
fn is_dir(path: &Path) -> io::Result<bool> {
    match fs::metadata(path) {
        Ok(m) => Ok(m.is_dir()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn describe(t: fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a fifo"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes the entries of `dir` durable (a rename is durable once both directories are).
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `rename` that fails with `AlreadyExists` instead of replacing `to`.
#[cfg(target_os = "linux")]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    let c_from = CString::new(from.as_os_str().as_bytes())?;
    let c_to = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both pointers are to NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // The file system (or an old kernel) has no RENAME_NOREPLACE.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => rename_checked(from, to),
        _ => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    rename_checked(from, to)
}

/// The fallback: look, then rename. Racy only against another process creating `to`
/// in between, which no writer does in `processing/`, `done/` or `rejected/`.
fn rename_checked(from: &Path, to: &Path) -> io::Result<()> {
    if exists(to)? {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists", to.display()),
        ));
    }
    fs::rename(from, to)
}

impl fmt::Display for Claimed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::os::unix::fs::symlink;
    use std::sync::Arc;

    const MAX: u64 = 1024;

    fn spool() -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(&dir.path().join("spool"), MAX).expect("open");
        (dir, spool)
    }

    fn drop_file(spool: &Spool, name: &str, bytes: &[u8]) {
        fs::write(spool.incoming_dir().join(name), bytes).expect("write");
    }

    fn claim(spool: &Spool) -> Claimed {
        spool.claim_next().expect("claim").expect("something to claim")
    }

    fn names_in(spool: &Spool, sub: &str) -> Vec<String> {
        sorted_names(&spool.dir().join(sub), |_| true)
            .expect("list")
            .iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn open_creates_the_layout_and_can_reopen() {
        let (_tmp, spool) = spool();
        for sub in SUBDIRS {
            assert!(spool.dir().join(sub).is_dir(), "{sub}");
        }
        drop_file(&spool, "a.jsonl", b"x");
        let again = Spool::open(spool.dir(), MAX).expect("reopen");
        assert_eq!(again.incoming_names().expect("names"), ["a.jsonl"]);
    }

    #[test]
    fn files_are_claimed_in_byte_order() {
        let (_tmp, spool) = spool();
        for name in ["b.jsonl", "a.jsonl", "A.jsonl", "a.json", "_z", "10", "9"] {
            drop_file(&spool, name, b"{}");
        }
        let expected = ["10", "9", "A.jsonl", "_z", "a.json", "a.jsonl", "b.jsonl"];
        assert_eq!(spool.incoming_names().expect("names"), expected);
        let mut order = Vec::new();
        while let Some(c) = spool.claim_next().expect("claim") {
            assert_eq!(c.path, spool.dir().join("processing").join(&c.name));
            order.push(c.name.clone());
            spool.done(&c).expect("done");
        }
        assert_eq!(order, expected);
        assert_eq!(names_in(&spool, "done"), expected);
    }

    #[test]
    fn hidden_and_temporary_names_are_ignored() {
        let (_tmp, spool) = spool();
        for name in [".hidden.jsonl", "x.jsonl.tmp", ".tmp", "b.jsonl"] {
            drop_file(&spool, name, b"{}");
        }
        assert_eq!(spool.incoming_names().expect("names"), ["b.jsonl"]);
        assert_eq!(claim(&spool).name, "b.jsonl");
        assert_eq!(spool.claim_next().expect("claim"), None);
        assert_eq!(
            names_in(&spool, "incoming"),
            [".hidden.jsonl", ".tmp", "x.jsonl.tmp"]
        );
    }

    #[test]
    fn a_claim_reads_back_and_survives_as_a_leftover() {
        let (_tmp, spool) = spool();
        drop_file(&spool, "b.jsonl", b"second");
        drop_file(&spool, "a.jsonl", b"first");
        let a = claim(&spool);
        let b = claim(&spool);
        assert_eq!(spool.read(&a).expect("read"), b"first");
        // A crash now: a new instance finds both, in order.
        let after = Spool::open(spool.dir(), MAX).expect("reopen");
        assert_eq!(after.leftovers().expect("leftovers"), [a.clone(), b]);
        after.done(&a).expect("done");
        assert_eq!(after.leftovers().expect("leftovers").len(), 1);
    }

    #[test]
    fn a_symbolic_link_is_not_followed() {
        let (tmp, spool) = spool();
        let target = tmp.path().join("secret");
        fs::write(&target, b"{}").expect("target");
        symlink(&target, spool.incoming_dir().join("link.jsonl")).expect("symlink");
        let c = claim(&spool);
        match spool.read(&c) {
            Err(ReadError::NotRegular(what)) => assert_eq!(what, "a symbolic link"),
            other => panic!("expected NotRegular, got {other:?}"),
        }
        spool.reject(&c, "not a regular file").expect("reject");
        assert!(fs::symlink_metadata(spool.dir().join("rejected/link.jsonl"))
            .expect("moved")
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&target).expect("target intact"), b"{}");
    }

    #[test]
    fn a_dangling_symbolic_link_is_claimed_too() {
        let (tmp, spool) = spool();
        symlink(tmp.path().join("nowhere"), spool.incoming_dir().join("dangling")).expect("symlink");
        let c = claim(&spool);
        assert!(matches!(spool.read(&c), Err(ReadError::NotRegular(_))));
    }

    #[test]
    fn a_directory_and_a_fifo_are_not_regular_files() {
        let (_tmp, spool) = spool();
        fs::create_dir(spool.incoming_dir().join("d.jsonl")).expect("dir");
        let fifo = std::ffi::CString::new(spool.incoming_dir().join("f.jsonl").as_os_str().as_bytes())
            .expect("path");
        // SAFETY: a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let d = claim(&spool);
        match spool.read(&d) {
            Err(ReadError::NotRegular(what)) => assert_eq!(what, "a directory"),
            other => panic!("expected NotRegular, got {other:?}"),
        }
        let f = claim(&spool);
        match spool.read(&f) {
            Err(e @ ReadError::NotRegular(_)) => {
                assert_eq!(e.to_string(), "not a regular file: it is a fifo")
            }
            other => panic!("expected NotRegular, got {other:?}"),
        }
        spool.reject(&d, "a directory").expect("reject dir");
        spool.reject(&f, "a fifo").expect("reject fifo");
        assert!(spool.dir().join("rejected/d.jsonl").is_dir());
        assert_eq!(
            names_in(&spool, "rejected"),
            ["d.jsonl", "d.jsonl.error", "f.jsonl", "f.jsonl.error"]
        );
    }

    #[test]
    fn an_oversized_file_is_too_large() {
        let (_tmp, spool) = spool();
        drop_file(&spool, "big.jsonl", &vec![b'x'; 1025]);
        drop_file(&spool, "fits.jsonl", &vec![b'x'; 1024]);
        let big = claim(&spool);
        match spool.read(&big) {
            Err(ReadError::TooLarge { size, max }) => assert_eq!((size, max), (1025, MAX)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let fits = claim(&spool);
        assert_eq!(spool.read(&fits).expect("read").len(), 1024);
    }

    #[test]
    fn names_that_are_not_utf8_are_claimed_and_refused() {
        let (_tmp, spool) = spool();
        let name = OsString::from_vec(b"bad-\xff.jsonl".to_vec());
        fs::write(spool.incoming_dir().join(&name), b"{}").expect("write");
        let c = claim(&spool);
        assert_eq!(c.name, "bad-\u{fffd}.jsonl");
        assert!(matches!(spool.read(&c), Err(ReadError::NameNotUtf8)));
        spool.reject(&c, "file name is not UTF-8").expect("reject");
        assert!(spool.dir().join("rejected").join(&name).exists());
        let mut error_name = name.clone();
        error_name.push(".error");
        assert!(spool.dir().join("rejected").join(error_name).exists());
    }

    #[test]
    fn done_never_overwrites() {
        let (_tmp, spool) = spool();
        for round in 0..3 {
            drop_file(&spool, "a.jsonl", format!("round {round}").as_bytes());
            let c = claim(&spool);
            spool.done(&c).expect("done");
        }
        assert_eq!(names_in(&spool, "done"), ["a.jsonl", "a.jsonl.1", "a.jsonl.2"]);
        assert_eq!(
            fs::read(spool.dir().join("done/a.jsonl.2")).expect("read"),
            b"round 2"
        );
        assert!(names_in(&spool, "processing").is_empty());
    }

    #[test]
    fn reject_writes_the_error_beside_the_file() {
        let (_tmp, spool) = spool();
        drop_file(&spool, "a.jsonl", b"not json");
        let c = claim(&spool);
        spool.reject(&c, "line 1: expected value").expect("reject");
        let rejected = spool.dir().join("rejected");
        assert_eq!(fs::read(rejected.join("a.jsonl")).expect("file"), b"not json");
        assert_eq!(
            fs::read_to_string(rejected.join("a.jsonl.error")).expect("error"),
            "line 1: expected value\n"
        );
        // The same name again, and a file named like an error file: nothing is lost.
        drop_file(&spool, "a.jsonl", b"again");
        spool.reject(&claim(&spool), "second").expect("reject");
        drop_file(&spool, "a.jsonl.1.error", b"job");
        drop_file(&spool, "b", b"job");
        spool.reject(&claim(&spool), "third").expect("reject");
        assert_eq!(
            names_in(&spool, "rejected"),
            [
                "a.jsonl",
                "a.jsonl.1",
                "a.jsonl.1.error",
                "a.jsonl.1.error.1",
                "a.jsonl.1.error.1.error",
                "a.jsonl.error",
            ]
        );
        assert_eq!(
            fs::read_to_string(rejected.join("a.jsonl.1.error")).expect("error"),
            "second\n"
        );
        // `b` rejected beside the others.
        spool.reject(&claim(&spool), "fourth").expect("reject");
        assert_eq!(
            fs::read_to_string(rejected.join("b.error")).expect("error"),
            "fourth\n"
        );
    }

    #[test]
    fn a_namesake_of_a_file_in_processing_waits() {
        let (_tmp, spool) = spool();
        drop_file(&spool, "a.jsonl", b"one");
        let first = claim(&spool);
        drop_file(&spool, "a.jsonl", b"two");
        drop_file(&spool, "b.jsonl", b"three");
        // `a.jsonl` cannot be claimed over the one being processed; `b` goes first.
        assert_eq!(claim(&spool).name, "b.jsonl");
        assert_eq!(spool.read(&first).expect("read"), b"one");
        spool.done(&first).expect("done");
        let second = claim(&spool);
        assert_eq!(spool.read(&second).expect("read"), b"two");
    }

    #[test]
    fn racing_claimers_never_share_a_file() {
        let (_tmp, spool) = spool();
        let count = 100;
        for i in 0..count {
            drop_file(&spool, &format!("{i:03}.jsonl"), b"{}");
        }
        let dir = Arc::new(spool.dir().to_path_buf());
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let dir = Arc::clone(&dir);
                std::thread::spawn(move || {
                    let spool = Spool::open(&dir, MAX).expect("open");
                    let mut mine = Vec::new();
                    while let Some(c) = spool.claim_next().expect("claim") {
                        spool.read(&c).expect("read");
                        spool.done(&c).expect("done");
                        mine.push(c.name);
                    }
                    mine
                })
            })
            .collect();
        let claimed: Vec<Vec<String>> = workers.into_iter().map(|w| w.join().expect("worker")).collect();
        let a: BTreeSet<_> = claimed[0].iter().cloned().collect();
        let b: BTreeSet<_> = claimed[1].iter().cloned().collect();
        assert_eq!(a.len(), claimed[0].len(), "a claimer took a file twice");
        assert_eq!(b.len(), claimed[1].len(), "a claimer took a file twice");
        assert!(
            a.is_disjoint(&b),
            "both took {:?}",
            a.intersection(&b).collect::<Vec<_>>()
        );
        assert_eq!(a.len() + b.len(), count);
        assert_eq!(names_in(&spool, "done").len(), count, "no file was done twice");
    }

    /// A name of `len` bytes ending in `tag`, so that names of one length differ only
    /// in their last bytes.
    fn long_name(len: usize, tag: char) -> String {
        let mut name = "x".repeat(len - 8);
        name.push_str(&format!("-{tag}.jsonl"));
        assert_eq!(name.len(), len);
        name
    }

    #[test]
    fn names_of_251_to_255_bytes_are_rejected_and_done_again_and_again() {
        let (_tmp, spool) = spool();
        let mut expected_rejected = 0;
        for len in 251..=255 {
            for tag in ['a', 'b'] {
                let name = long_name(len, tag);
                for round in 0..3 {
                    drop_file(&spool, &name, format!("bad {round}").as_bytes());
                    let c = claim(&spool);
                    spool
                        .reject(&c, &format!("{name}: round {round}"))
                        .expect("reject");
                    drop_file(&spool, &name, format!("good {round}").as_bytes());
                    let c = claim(&spool);
                    spool.done(&c).expect("done");
                    expected_rejected += 2;
                }
                assert!(names_in(&spool, "processing").is_empty(), "{len} bytes: stuck");
                assert!(spool.incoming_names().expect("names").is_empty());
            }
        }
        let rejected = names_in(&spool, "rejected");
        assert_eq!(
            rejected.len(),
            expected_rejected,
            "every file and error kept apart"
        );
        assert_eq!(names_in(&spool, "done").len(), expected_rejected / 2);
        for sub in ["rejected", "done"] {
            for n in names_in(&spool, sub) {
                assert!(n.len() <= NAME_MAX, "{sub}/{n}: {} bytes", n.len());
            }
        }
        // Each file's error is found from its name and says which file it was.
        let rejected_dir = spool.dir().join("rejected");
        let name = long_name(255, 'b');
        let first = derived_name("", OsStr::new(&name), ERROR_SUFFIX);
        assert_eq!(
            fs::read_to_string(rejected_dir.join(&first)).expect("error of the first"),
            format!("{name}: round 0\n")
        );
        let second = derived_name("", &derived_name("", OsStr::new(&name), ".1"), ERROR_SUFFIX);
        assert_eq!(
            fs::read_to_string(rejected_dir.join(&second)).expect("error of the second"),
            format!("{name}: round 1\n")
        );
        assert_eq!(fs::read(rejected_dir.join(&name)).expect("first"), b"bad 0");
    }

    #[test]
    fn derived_names_fit_and_keep_their_start() {
        assert_eq!(derived_name("", OsStr::new("a.jsonl"), ".error"), "a.jsonl.error");
        assert_eq!(derived_name(".", OsStr::new("a.jsonl"), ".tmp"), ".a.jsonl.tmp");
        let long = long_name(255, 'a');
        let other = long_name(255, 'b');
        let d = derived_name("", OsStr::new(&long), ".error");
        assert_eq!(d.len(), NAME_MAX);
        assert!(d.as_bytes().starts_with(&long.as_bytes()[..200]));
        assert!(d.as_bytes().ends_with(b".error"));
        assert_ne!(d, derived_name("", OsStr::new(&other), ".error"));
        // Never cut inside a character.
        let wide = "é".repeat(127);
        let d = derived_name("", OsStr::new(&wide), ".1");
        assert!(d.to_str().is_some(), "still UTF-8");
        assert!(d.len() <= NAME_MAX);
    }

    #[test]
    fn a_vanished_directory_is_named_and_repaired() {
        let (_tmp, spool) = spool();
        assert!(spool.repair().expect("repair").is_empty(), "a whole layout");
        let processing = spool.dir().join("processing");
        fs::remove_dir(&processing).expect("remove processing/");
        drop_file(&spool, "a.jsonl", b"{}");
        let e = spool.claim_next().expect_err("a claim without processing/");
        assert!(e.to_string().contains(&*processing.to_string_lossy()), "{e}");
        assert_eq!(spool.repair().expect("repair"), [processing]);
        let c = claim(&spool);
        fs::remove_dir(spool.dir().join("done")).expect("remove done/");
        let e = spool.done(&c).expect_err("done without done/");
        assert!(e.to_string().contains("done"), "{e}");
        assert_eq!(spool.repair().expect("repair"), [spool.dir().join("done")]);
        spool.done(&c).expect("done");
        fs::remove_dir_all(spool.dir()).expect("remove the spool");
        assert!(spool.incoming_names().is_err());
        let created = spool.repair().expect("repair");
        assert_eq!(created.len(), 1 + SUBDIRS.len(), "{created:?}");
        for sub in PRODUCER_SUBDIRS {
            let mode = fs::metadata(spool.dir().join(sub))
                .expect("dir")
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, PRODUCER_DIR_MODE, "{sub}/ is open to producers");
        }
        drop_file(&spool, "b.jsonl", b"{}");
        assert_eq!(claim(&spool).name, "b.jsonl");
    }

    #[test]
    fn a_leftover_committed_but_not_reported_is_reported_whatever_its_starts() {
        for starts in [1, QUARANTINE_AFTER_STARTS, QUARANTINE_AFTER_STARTS + 5] {
            assert_eq!(leftover(starts, true, true), Leftover::Report, "{starts}");
            // Applied and reported before: a second drop, taken (`file_duplicate`).
            assert_eq!(leftover(starts, true, false), Leftover::Take, "{starts}");
        }
        assert_eq!(leftover(1, false, false), Leftover::Take);
        assert_eq!(
            leftover(QUARANTINE_AFTER_STARTS - 1, false, false),
            Leftover::Take
        );
        assert_eq!(
            leftover(QUARANTINE_AFTER_STARTS, false, false),
            Leftover::Quarantine
        );
    }

    #[test]
    fn read_errors_say_why() {
        assert_eq!(
            ReadError::TooLarge { size: 10, max: 5 }.to_string(),
            "the file is 10 bytes, larger than spool.max_file_bytes = 5"
        );
        assert_eq!(ReadError::NameNotUtf8.to_string(), "file name is not UTF-8");
    }
}
