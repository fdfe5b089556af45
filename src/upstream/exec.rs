//! The `exec` upstream (SPEC §9): runs `upstream.command` once per attempt, hands it the
//! request as one JSON line on standard input, and reads its verdict — one JSON line
//! `{"outcome": "...", "detail": "..."}` — from standard output.
//!
//! Anything short of a clean verdict (a non-zero exit, unparsable or oversized output,
//! an unknown outcome, the time limit) is "may have been delivered": the command may
//! have acted before it failed. Only a command that could not even be started is
//! "certainly not delivered".
//!
//! The command's standard error is discarded: it is not ours to log, and it could hold
//! the proxy or the payload. It never logs either.

use super::{SendFuture, Upstream};
use crate::contract::{Outcome, SendRequest};
use serde::Deserialize;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The most the command may print; more is a protocol violation (one line is expected),
/// and the command is killed rather than read any further.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// How long standard output is still read after the command exited. A command that
/// printed its verdict and exited is done, even when something it started (a helper,
/// a browser) inherited its standard output and keeps it open: what the command printed
/// by then is its verdict, not a timeout.
const AFTER_EXIT: Duration = Duration::from_millis(200);

/// The `exec` upstream.
pub struct Exec {
    /// Program and arguments; never empty.
    command: Vec<String>,
    timeout_s: u64,
}

impl Exec {
    /// `command` is `upstream.command` (program, then arguments); `timeout_s` bounds
    /// each run, from spawning to the exit. The configuration has checked both (a
    /// program is named, the limit is at least 1 s); an empty command would make
    /// every attempt `NotDelivered`.
    pub fn new(command: Vec<String>, timeout_s: u64) -> Exec {
        Exec { command, timeout_s }
    }
}

impl Upstream for Exec {
    fn send(&self, req: SendRequest) -> SendFuture {
        let command = self.command.clone();
        let timeout = Duration::from_secs(self.timeout_s);
        // Every reason from the command is redacted and bounded before it can reach a
        // log line or the store.
        Box::pin(async move { run(&command, timeout, &req).await.redacted(req.proxy.as_deref()) })
    }
}

/// How a run ended before a verdict could be read.
enum Failure {
    TooMuchOutput,
    Io(std::io::Error),
}

async fn run(command: &[String], timeout: Duration, req: &SendRequest) -> Outcome {
    let Some((program, args)) = command.split_first() else {
        return Outcome::NotDelivered {
            reason: "upstream.command is empty".into(),
        };
    };
    let mut input = match serde_json::to_vec(req) {
        Ok(input) => input,
        Err(e) => {
            return Outcome::Invalid {
                reason: format!("cannot encode the request: {e}"),
            }
        }
    };
    input.push(b'\n');
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        // Its own process group, so that on a timeout whatever it started (a curl, a
        // sleep) is killed with it instead of lingering and acting later.
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return Outcome::NotDelivered {
                reason: format!("cannot start `{program}`: {e}"),
            }
        }
    };
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let (exited_tx, exited_rx) = tokio::sync::oneshot::channel::<()>();
    let mut output = Vec::new();
    let talk = async {
        let reading = async {
            tokio::select! {
                read = read_bounded(stdout, &mut output) => read,
                // The command is gone: stop waiting for an end of output that something
                // it left behind may hold back.
                _ = async {
                    let _ = exited_rx.await;
                    tokio::time::sleep(AFTER_EXIT).await;
                } => Ok(()),
            }
        };
        let waiting = async {
            let status = child.wait().await.map_err(Failure::Io);
            let _ = exited_tx.send(());
            status
        };
        let ((), (), status) = tokio::try_join!(feed(stdin, &input), reading, waiting)?;
        Ok::<_, Failure>(status)
    };
    let result = tokio::time::timeout(timeout, talk).await;
    let failure = match result {
        Ok(Ok(status)) => return classify(status, &output),
        Ok(Err(Failure::TooMuchOutput)) => format!("the command printed more than {MAX_OUTPUT_BYTES} bytes"),
        Ok(Err(Failure::Io(e))) => format!("cannot talk to the command: {e}"),
        Err(_) => format!("timeout after {} s", timeout.as_secs()),
    };
    kill(&mut child).await;
    Outcome::MaybeDelivered { reason: failure }
}

/// Writes the request and closes standard input. A command that exits without reading
/// it (a broken pipe) is not an error here: its exit and output decide.
async fn feed(stdin: Option<ChildStdin>, input: &[u8]) -> Result<(), Failure> {
    if let Some(mut stdin) = stdin {
        let _ = stdin.write_all(input).await;
        // Dropping `stdin` closes it, so the command sees the end of its input.
    }
    Ok(())
}

/// Reads standard output to its end into `output`, but no more than [`MAX_OUTPUT_BYTES`].
async fn read_bounded(stdout: Option<ChildStdout>, output: &mut Vec<u8>) -> Result<(), Failure> {
    if let Some(stdout) = stdout {
        let limit = u64::try_from(MAX_OUTPUT_BYTES)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        stdout
            .take(limit)
            .read_to_end(output)
            .await
            .map_err(Failure::Io)?;
    }
    if output.len() > MAX_OUTPUT_BYTES {
        return Err(Failure::TooMuchOutput);
    }
    Ok(())
}

/// Kills the command's whole process group, then the command itself, and reaps it.
async fn kill(child: &mut Child) {
    // `id()` is `None` once the child has been reaped; until then its pid (and so its
    // process group id) cannot be reused, which makes the group kill safe.
    if let Some(pgid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; a
        // negative pid names the process group the child leads (`process_group(0)`).
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    let _ = child.kill().await;
}

/// The verdict line (SPEC §9). Unknown fields are ignored: the command speaks for
/// itself, and only `outcome` decides.
#[derive(Deserialize)]
struct Verdict {
    outcome: String,
    #[serde(default)]
    detail: Option<String>,
}

fn classify(status: ExitStatus, output: &[u8]) -> Outcome {
    let maybe = |reason: String| Outcome::MaybeDelivered { reason };
    if !status.success() {
        return maybe(format!("the command failed ({status})"));
    }
    let line = output.split(|&b| b == b'\n').next().unwrap_or_default();
    if line.iter().all(u8::is_ascii_whitespace) {
        return maybe("the command printed no verdict".into());
    }
    // The output is not quoted in the reason: it could echo the proxy or the payload.
    let Ok(verdict) = serde_json::from_slice::<Verdict>(line) else {
        return maybe("the command's output is not a verdict line".into());
    };
    // Quoted whole here: `Exec::send` redacts credentials and only then bounds the
    // length (a cut first could leave half a password behind).
    let detail = |fallback: &str| {
        verdict
            .detail
            .clone()
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| fallback.to_string())
    };
    match verdict.outcome.as_str() {
        "sent" => Outcome::Sent,
        "rate_limited" => Outcome::RateLimited { retry_after_s: None },
        "out_of_network" => Outcome::OutOfNetwork,
        "restricted" => Outcome::Restricted,
        "no_credits" => Outcome::NoCredits,
        "invalid" => Outcome::Invalid {
            reason: detail("invalid"),
        },
        "not_delivered" => Outcome::NotDelivered {
            reason: detail("not delivered"),
        },
        "maybe_delivered" => maybe(detail("may have been delivered")),
        other => maybe(format!("unknown outcome `{other}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::upstream::MAX_REASON_CHARS;
    use crate::policy::Kind;
    use std::time::Instant;

    fn request() -> SendRequest {
        SendRequest {
            id: "q4/jane/invite".into(),
            account: "acct-1".into(),
            proxy: Some("http://user:secret@203.0.113.7:3128".into()),
            campaign: "q4-founders".into(),
            kind: Kind::Invite,
            prospect: "https://www.linkedin.com/in/jane".into(),
            payload: serde_json::json!({"note": "Hi Jane"}),
            attempt: 2,
        }
    }

    fn sh(script: &str, timeout_s: u64) -> Exec {
        Exec::new(["sh", "-c", script].map(String::from).to_vec(), timeout_s)
    }

    async fn run_sh(script: &str, timeout_s: u64, req: SendRequest) -> Outcome {
        sh(script, timeout_s).send(req).await
    }

    /// The decision table helper: a script, the outcome it must give.
    async fn check(script: &str, expected: Outcome) {
        assert_eq!(run_sh(script, 10, request()).await, expected, "script: {script}");
    }

    fn answering(verdict: &str) -> String {
        format!("cat >/dev/null; echo '{verdict}'")
    }

    fn is_maybe(outcome: &Outcome) -> bool {
        matches!(outcome, Outcome::MaybeDelivered { .. })
    }

    #[tokio::test]
    async fn every_outcome_is_understood() {
        let rows = [
            (r#"{"outcome":"sent"}"#, Outcome::Sent),
            (r#"{"outcome":"sent","detail":"ok","extra":1}"#, Outcome::Sent),
            (
                r#"{"outcome":"rate_limited","detail":"slow down"}"#,
                Outcome::RateLimited { retry_after_s: None },
            ),
            (r#"{"outcome":"out_of_network"}"#, Outcome::OutOfNetwork),
            (r#"{"outcome":"restricted"}"#, Outcome::Restricted),
            (r#"{"outcome":"no_credits"}"#, Outcome::NoCredits),
            (
                r#"{"outcome":"invalid","detail":"bad prospect"}"#,
                Outcome::Invalid {
                    reason: "bad prospect".into(),
                },
            ),
            (
                r#"{"outcome":"invalid"}"#,
                Outcome::Invalid {
                    reason: "invalid".into(),
                },
            ),
            (
                r#"{"outcome":"not_delivered","detail":"proxy down"}"#,
                Outcome::NotDelivered {
                    reason: "proxy down".into(),
                },
            ),
            (
                r#"{"outcome":"maybe_delivered","detail":"gateway timeout"}"#,
                Outcome::MaybeDelivered {
                    reason: "gateway timeout".into(),
                },
            ),
            (
                r#"{"outcome":"delivered"}"#,
                Outcome::MaybeDelivered {
                    reason: "unknown outcome `delivered`".into(),
                },
            ),
        ];
        for (verdict, expected) in rows {
            check(&answering(verdict), expected).await;
        }
    }

    /// A command that answered and exited is taken at its word even when something it
    /// started (here a `sleep`, in life a helper or a browser) inherited its standard
    /// output and holds it open: before, the worker waited for the end of that output,
    /// hit the time limit, and recorded a sent invite as `unknown` (and a few such
    /// opened the circuit breaker).
    #[tokio::test]
    async fn a_verdict_stands_when_a_helper_keeps_stdout_open() {
        // The time limit (5 s) is what the old code ran into: a verdict of `Sent`
        // means it was not reached.
        let outcome = run_sh(
            "cat >/dev/null; sleep 30 & echo '{\"outcome\":\"sent\"}'",
            5,
            request(),
        )
        .await;
        assert_eq!(outcome, Outcome::Sent);
    }

    #[tokio::test]
    async fn only_the_first_line_counts() {
        check(
            "cat >/dev/null; echo '{\"outcome\":\"restricted\"}'; echo '{\"outcome\":\"sent\"}'",
            Outcome::Restricted,
        )
        .await;
    }

    #[tokio::test]
    async fn a_failing_or_garbled_command_may_have_delivered() {
        for script in [
            "cat >/dev/null; echo '{\"outcome\":\"sent\"}'; exit 3",
            "cat >/dev/null; echo hello",
            "cat >/dev/null; echo '{\"detail\":\"no outcome\"}'",
            "cat >/dev/null",
            "cat >/dev/null; echo; echo '{\"outcome\":\"sent\"}'",
            "kill -9 $$",
        ] {
            let outcome = run_sh(script, 10, request()).await;
            assert!(is_maybe(&outcome), "{script}: {outcome:?}");
        }
    }

    #[tokio::test]
    async fn garbage_is_not_quoted_in_the_reason() {
        let outcome = run_sh("cat; exit 0", 10, request()).await;
        assert!(is_maybe(&outcome), "{outcome:?}");
        assert!(!format!("{outcome:?}").contains("secret"), "{outcome:?}");
    }

    #[tokio::test]
    async fn the_command_reads_the_request_on_stdin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let copy = dir.path().join("stdin.json");
        let command = [
            "sh",
            "-c",
            "cat > \"$0\"; echo '{\"outcome\":\"sent\"}'",
            copy.to_str().expect("utf-8 path"),
        ]
        .map(String::from);
        let exec = Exec::new(command.to_vec(), 10);
        assert_eq!(exec.send(request()).await, Outcome::Sent);
        let written = std::fs::read(&copy).expect("the script saved its input");
        assert_eq!(written.last(), Some(&b'\n'), "one line, newline-terminated");
        assert_eq!(written.iter().filter(|&&b| b == b'\n').count(), 1);
        let seen: SendRequest = serde_json::from_slice(&written).expect("json");
        assert_eq!(seen, request());
    }

    #[tokio::test]
    async fn the_command_can_echo_a_field_back() {
        // The attempt number travels: the script answers `invalid` with it as detail.
        let script =
            "sed -n 's/.*\"attempt\":\\([0-9]*\\).*/{\"outcome\":\"invalid\",\"detail\":\"attempt \\1\"}/p'";
        check(
            script,
            Outcome::Invalid {
                reason: "attempt 2".into(),
            },
        )
        .await;
    }

    #[tokio::test]
    async fn a_large_request_does_not_deadlock_and_may_be_ignored() {
        let mut big = request();
        big.payload = serde_json::json!({ "note": "x".repeat(1024 * 1024) });
        assert_eq!(
            run_sh(&answering(r#"{"outcome":"sent"}"#), 10, big.clone()).await,
            Outcome::Sent
        );
        // A command that never reads its input (a broken pipe on our side) still answers.
        assert_eq!(
            run_sh("echo '{\"outcome\":\"sent\"}'", 10, big).await,
            Outcome::Sent
        );
    }

    #[tokio::test]
    async fn a_slow_command_is_killed_at_the_time_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        let command = [
            "sh",
            "-c",
            "sleep 30 & echo $! > \"$0\"; cat >/dev/null; wait",
            pid_file.to_str().expect("utf-8 path"),
        ]
        .map(String::from);
        let started = Instant::now();
        let outcome = Exec::new(command.to_vec(), 1).send(request()).await;
        assert!(is_maybe(&outcome), "{outcome:?}");
        // The command sleeps 30 s: well under that is the 1 s limit, with room for a
        // loaded machine.
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
        // The grandchild died with its group (it may linger as a zombie, unreaped).
        let pid = std::fs::read_to_string(&pid_file).expect("pid file");
        let stat = format!("/proc/{}/stat", pid.trim());
        let mut dead = false;
        // Up to 10 s for the group's death to show on a loaded machine.
        for _ in 0..200 {
            match std::fs::read_to_string(&stat) {
                Err(_) => dead = true,
                Ok(s) => {
                    dead = s
                        .rsplit(')')
                        .next()
                        .is_some_and(|rest| rest.trim_start().starts_with('Z'))
                }
            }
            if dead {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(dead, "the background sleep outlived the timeout");
    }

    #[tokio::test]
    async fn endless_output_is_cut_at_the_bound() {
        let started = Instant::now();
        let outcome = run_sh("cat >/dev/null; yes '{\"outcome\":\"sent\"}'", 30, request()).await;
        assert_eq!(
            outcome,
            Outcome::MaybeDelivered {
                reason: format!("the command printed more than {MAX_OUTPUT_BYTES} bytes"),
            }
        );
        // Cut by the bound, not by the 30 s limit (the reason says so too).
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "{:?}",
            started.elapsed()
        );
        // Exactly the bound is still fine.
        let script = format!(
            "cat >/dev/null; echo '{{\"outcome\":\"sent\"}}'; head -c {} /dev/zero",
            MAX_OUTPUT_BYTES - 19
        );
        assert_eq!(run_sh(&script, 10, request()).await, Outcome::Sent);
    }

    #[tokio::test]
    async fn a_missing_program_is_not_delivered() {
        let outcome = Exec::new(vec!["/nonexistent/li-send".to_string()], 5)
            .send(request())
            .await;
        match outcome {
            Outcome::NotDelivered { reason } => assert!(reason.contains("/nonexistent/li-send"), "{reason}"),
            other => panic!("expected not delivered, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_empty_command_is_not_delivered() {
        let outcome = Exec::new(Vec::new(), 5).send(request()).await;
        assert!(matches!(outcome, Outcome::NotDelivered { .. }), "{outcome:?}");
    }

    #[tokio::test]
    async fn details_are_bounded_and_single_line() {
        check(
            &answering(r#"{"outcome":"invalid","detail":"a\u000ab\u0009c"}"#),
            Outcome::Invalid {
                reason: "a b c".into(),
            },
        )
        .await;
        let long = format!(r#"{{"outcome":"invalid","detail":"{}"}}"#, "x".repeat(1000));
        match run_sh(&answering(&long), 10, request()).await {
            Outcome::Invalid { reason } => assert_eq!(reason.chars().count(), MAX_REASON_CHARS),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn credentials_in_a_detail_are_redacted() {
        // A URL password, a long detail that would cut one in half, and the account's
        // own proxy password quoted bare: none survives.
        let pad = "y".repeat(185);
        for (detail, secret) in [
            ("bad proxy http://user:PW1234@host:8080", "PW1234"),
            ("bad proxy user:PW1234@host:8080", "PW1234"),
            (&*format!("{pad} http://user:PW1234@host:8080"), "PW"),
            ("upstream login as user/secret failed", "secret"),
        ] {
            let verdict = format!(r#"{{"outcome":"invalid","detail":"{detail}"}}"#);
            let outcome = run_sh(&answering(&verdict), 10, request()).await;
            assert!(matches!(outcome, Outcome::Invalid { .. }), "{outcome:?}");
            assert!(!format!("{outcome:?}").contains(secret), "{detail}: {outcome:?}");
        }
    }
}
