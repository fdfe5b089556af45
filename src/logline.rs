//! What every log line carries beside its event (SPEC §11): `vtime`, the worker's own
//! time, under a virtual clock (`[clock]`); and, when standard error is the journal
//! (`JOURNAL_STREAM` names its device and inode), the line's syslog priority as a
//! `<N>` prefix, which journald strips and keeps as the priority (sd-daemon(3)), so
//! `journalctl -p warning` finds warnings and errors.
//!
//! A prefix on standard error, not `tracing-journald`: journald already takes the
//! worker's standard error under systemd, and the native protocol would be a second
//! path (its own socket, its own failure modes) for the same lines.

use crate::clock::Clock;
use std::io::Write;
use std::sync::{Arc, OnceLock};
use tracing::Level;

static VTIME: OnceLock<Arc<dyn Clock>> = OnceLock::new();
static JOURNAL: OnceLock<bool> = OnceLock::new();

/// Every line from now on carries `vtime` read from `clock` (set once, under `[clock]`).
pub fn set_vtime(clock: Arc<dyn Clock>) {
    let _ = VTIME.set(clock);
}

/// An RFC 3339 time with `Z`, the one spelling of times in logs and JSON.
pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// syslog priority of a level: err 3, warning 4, info 6, debug 7.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Whether `journal_stream` (`JOURNAL_STREAM`, "DEVICE:INODE") names `(dev, ino)`.
pub fn is_journal(journal_stream: Option<&str>, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.and_then(|s| s.split_once(':')) else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

fn stderr_is_journal() -> bool {
    *JOURNAL.get_or_init(|| {
        use std::os::fd::AsFd;
        let Ok(f) = std::io::stderr().as_fd().try_clone_to_owned() else {
            return false;
        };
        let Ok(meta) = std::fs::File::from(f).metadata() else {
            return false;
        };
        use std::os::unix::fs::MetadataExt;
        is_journal(
            std::env::var("JOURNAL_STREAM").ok().as_deref(),
            meta.dev(),
            meta.ino(),
        )
    })
}

/// Add the priority prefix and `vtime` to one formatted line.
pub fn decorate(line: &[u8], level: Level, json: bool, vtime: Option<&str>, journal: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 48);
    if journal {
        out.extend_from_slice(format!("<{}>", priority(level)).as_bytes());
    }
    match (vtime, json, line.first()) {
        (Some(v), true, Some(b'{')) => {
            out.extend_from_slice(format!("{{\"vtime\":\"{v}\",").as_bytes());
            out.extend_from_slice(&line[1..]);
        }
        (Some(v), false, _) => {
            out.extend_from_slice(format!("vtime={v} ").as_bytes());
            out.extend_from_slice(line);
        }
        _ => out.extend_from_slice(line),
    }
    out
}

/// The subscriber's writer: standard error, each line decorated.
pub struct MakeLine {
    pub json: bool,
}

pub struct LineWriter {
    level: Level,
    json: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MakeLine {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            level: Level::INFO,
            json: self.json,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineWriter {
        LineWriter {
            level: *meta.level(),
            json: self.json,
        }
    }
}

impl Write for LineWriter {
    /// The formatter writes each line whole in one call.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let vtime = VTIME.get().map(|c| rfc3339(c.now()));
        let line = decorate(buf, self.level, self.json, vtime.as_deref(), stderr_is_journal());
        std::io::stderr().lock().write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_get_vtime_and_the_journal_priority() {
        let line = br#"{"timestamp":"t","level":"WARN","event":"rate_limited"}"#;
        let out = decorate(line, Level::WARN, true, Some("2026-03-02T10:00:00Z"), true);
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.starts_with("<4>{\"vtime\":\"2026-03-02T10:00:00Z\",\"timestamp\""),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&text[3..]).expect("still JSON");
        assert_eq!(json["event"], "rate_limited");
        assert_eq!(decorate(line, Level::INFO, true, None, false), line.to_vec());
        let text = decorate(b"x\n", Level::ERROR, false, Some("v"), true);
        assert_eq!(text, b"<3>vtime=v x\n".to_vec());
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
    }

    #[test]
    fn the_journal_is_recognised_by_device_and_inode() {
        assert!(is_journal(Some("8:1234"), 8, 1234));
        assert!(!is_journal(Some("8:1234"), 8, 1235));
        assert!(!is_journal(Some("garbage"), 8, 1234));
        assert!(!is_journal(None, 8, 1234));
    }

    #[test]
    fn times_are_spelled_with_z() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-03-02T10:00:00+00:00")
            .expect("time")
            .with_timezone(&chrono::Utc);
        assert_eq!(rfc3339(t), "2026-03-02T10:00:00Z");
    }
}
