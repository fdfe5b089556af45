//! The README's install steps, followed word for word as far as a machine without
//! systemd allows: the unit's directories under a temporary root, its `ExecStartPre=`
//! lines run there, and the real binary started the way the unit starts it (its
//! `ExecStart=` arguments, `UMask=`, and the `$STATE_DIRECTORY` and
//! `$RUNTIME_DIRECTORY` that `StateDirectory=` and `RuntimeDirectory=` set). It must
//! start, apply a job file from the spool and write its status file, touching nothing
//! outside the directories the unit lets it write.

mod common;

use common::worker::{Worker, DEADLINE};
use sendgate::config::Config;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const UNIT: &str = include_str!("../systemd/sendgate@.service");
const README: &str = include_str!("../README.md");

/// The README's install block: the config it installs (source, destination) and the
/// instance it enables.
fn readme_install() -> (String, String, String) {
    let block = README
        .split("## Install and operate")
        .nth(1)
        .and_then(|s| s.split("```sh").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("an install block in the README");
    let config_line = block
        .lines()
        .find(|l| l.contains("/etc/sendgate/"))
        .expect("the README installs a config into /etc/sendgate/");
    let words: Vec<&str> = config_line.split_whitespace().collect();
    let (src, dest) = (words[words.len() - 2], words[words.len() - 1]);
    let enable = block
        .lines()
        .find(|l| l.contains("enable --now sendgate@"))
        .expect("the README enables an instance");
    let instance = enable.rsplit('@').next().expect("instance").trim();
    (src.to_string(), dest.to_string(), instance.to_string())
}

/// The unit's `Key=` values, in order, with `%i` and `%S` expanded.
fn unit_values(key: &str, instance: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.replace("%i", instance).replace("%S", "/var/lib"))
        .collect()
}

fn one(key: &str, instance: &str) -> String {
    let v = unit_values(key, instance);
    assert_eq!(v.len(), 1, "one {key}= in the unit: {v:?}");
    v[0].clone()
}

/// `path` (absolute) under `root`.
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Runs an `ExecStartPre=+/usr/bin/install -d …` line under `root`: owners are dropped
/// (CI has no `sendgate` user), modes and paths kept.
fn run_install_line(root: &Path, line: &str) {
    let words: Vec<&str> = line
        .trim_start_matches(['+', '-', '@', '!', ':'])
        .split_whitespace()
        .collect();
    assert!(
        words[0].ends_with("/install"),
        "an ExecStartPre= the test knows: {line}"
    );
    let mut args: Vec<String> = Vec::new();
    let mut rest = words[1..].iter();
    while let Some(w) = rest.next() {
        match *w {
            "-o" | "-g" => {
                rest.next();
            }
            w if w.starts_with('/') => args.push(under(root, w).display().to_string()),
            w => args.push(w.to_string()),
        }
    }
    let ok = Command::new("install").args(&args).status().expect("install");
    assert!(ok.success(), "install {args:?}");
}

/// Every path under `dir`, relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        out.push(path.strip_prefix(root).expect("under root").to_path_buf());
        if path.symlink_metadata().expect("stat").is_dir() {
            walk(root, &path, out);
        }
    }
}

#[test]
fn the_readme_install_steps_give_a_worker_that_starts() {
    let (src, dest, instance) = readme_install();
    assert!(
        dest.ends_with(&format!("/{instance}.toml")),
        "{dest} for {instance}"
    );
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));

    // `install -D … systemd/example.toml /etc/sendgate/NAME.toml`.
    let config_path = under(root, &dest);
    std::fs::create_dir_all(config_path.parent().expect("parent")).expect("mkdir");
    std::fs::copy(manifest.join(&src), &config_path).expect("install the config");

    // What systemd does before the first Exec line.
    let state = under(root, &format!("/var/lib/{}", one("StateDirectory", &instance)));
    let runtime = under(root, &format!("/run/{}", one("RuntimeDirectory", &instance)));
    for d in [&state, &runtime] {
        std::fs::create_dir_all(d).expect("unit directory");
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    }
    for line in unit_values("ExecStartPre", &instance) {
        run_install_line(root, &line);
    }
    // Where the sandbox (ProtectSystem=strict) lets the worker write, as the unit says.
    let mut writable: Vec<PathBuf> = vec![
        Path::new("/var/lib").join(one("StateDirectory", &instance)),
        Path::new("/run").join(one("RuntimeDirectory", &instance)),
    ];
    for v in unit_values("ReadWritePaths", &instance) {
        writable.extend(
            v.split_whitespace()
                .map(|p| PathBuf::from(p.trim_start_matches('-'))),
        );
    }

    // The config as the worker will see it: every path inside those directories.
    let text = std::fs::read_to_string(&config_path).expect("read config");
    let mut config = Config::parse(&dest, &text).expect("the example config is valid");
    let given: toml::Table = text.parse().expect("toml");
    let env = |name: &str| match name {
        "STATE_DIRECTORY" => Some(state.clone()),
        "RUNTIME_DIRECTORY" => Some(runtime.clone()),
        _ => None,
    };
    config.follow_systemd_dirs(&given, env);
    for (key, path) in [
        ("store.path", &config.store.path),
        ("spool.dir", &config.spool.dir),
        ("status.path", &config.status.path),
    ] {
        // As the unit sees it: a path under the temporary root came from the environment.
        let seen = match path.strip_prefix(root) {
            Ok(p) => Path::new("/").join(p),
            Err(_) => path.clone(),
        };
        assert!(
            writable.iter().any(|w| seen.starts_with(w)),
            "{key} = {} is outside {writable:?}, all the unit lets the worker write",
            seen.display()
        );
        assert!(
            path.starts_with(root),
            "{key} = {} is set in {src}: the example leaves paths to the unit",
            path.display()
        );
    }
    let spool = config.spool.dir.clone();
    for sub in ["tmp", "incoming"] {
        let mode = std::fs::metadata(spool.join(sub))
            .expect("made by ExecStartPre=")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o2770, "{sub}/ open to producers in the group");
    }

    // ExecStart=, with the unit's UMask= and environment.
    let exec = one("ExecStart", &instance);
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/sendgate"));
    let args: Vec<String> = words
        .map(|w| {
            if w.starts_with('/') {
                under(root, w).display().to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    let umask = u32::from_str_radix(&one("UMask", &instance), 8).expect("UMask= in octal");
    let before: Vec<PathBuf> = {
        let mut v = Vec::new();
        walk(root, root, &mut v);
        v
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendgate"));
    cmd.args(&args)
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("STATE_DIRECTORY", &state)
        .env("RUNTIME_DIRECTORY", &runtime);
    // SAFETY: `umask` is async-signal-safe and cannot fail.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(umask as libc::mode_t);
            Ok(())
        });
    }
    let w = Worker::start(&mut cmd);
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !f() {
            let log = w.log();
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // The README's walkthrough: write in tmp/, rename into incoming/.
    let job = "{\"type\":\"account\",\"id\":\"acct-1\",\"tier\":\"free\",\"timezone\":\"UTC\"}\n";
    std::fs::write(spool.join("tmp/batch-0042.jsonl"), job).expect("write job");
    std::fs::rename(
        spool.join("tmp/batch-0042.jsonl"),
        spool.join("incoming/batch-0042.jsonl"),
    )
    .expect("drop");
    let done = spool.join("done/batch-0042.jsonl");
    wait("the job file applied", &|| done.exists());
    let status = config.status.path.clone();
    wait("the status file", &|| status.exists());
    let (code, log) = w.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("\"event\":\"file_applied\""), "{log}");
    // Rewritten at the stop, so it already counts the account.
    let text = std::fs::read_to_string(&status).expect("the status file");
    assert!(text.contains("acct-1"), "{text}");

    // Nothing written outside the unit's directories.
    let mut after = Vec::new();
    walk(root, root, &mut after);
    let outside: Vec<&PathBuf> = after
        .iter()
        .filter(|p| !before.contains(p))
        .filter(|p| !writable.iter().any(|w| Path::new("/").join(p).starts_with(w)))
        .collect();
    assert!(
        outside.is_empty(),
        "written outside the unit's directories: {outside:?}"
    );
}
