//! The CLI side of the admin socket: one request, one reply, within one bound.

use super::protocol::{Reply, Request};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a command waits for the worker, in all: connecting, sending the request and
/// reading the whole reply. The worker answers within its own `server::REQUEST_TIMEOUT`
/// (30 s), or says it timed out; the 5 s beyond carry that reply. A worker stopped with
/// `kill -STOP` (its socket still takes connections, nobody answers) is given up on then.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(35);
/// The longest single wait of the kernel's: a socket timeout is a timer-wheel timer,
/// which fires up to an eighth late (a 35 s one, up to 4 s), so the bound is waited out
/// in slices of at most this long and checked after each.
const SLICE: Duration = Duration::from_millis(500);
/// The longest reply read (`list --limit 0` of a big store is long).
pub const MAX_REPLY_BYTES: u64 = 1 << 30;

/// Why the socket could not serve a request.
#[derive(Debug)]
pub enum ClientError {
    /// Nobody listens there (no socket file, or a stale one): no worker runs.
    NoWorker,
    /// Something listens but the exchange failed.
    Failed(String),
    /// The connection was closed or reset before a word of the reply: the worker is
    /// gone or going (a `kill -9`ed worker's socket takes connections for as long as
    /// the kernel tears the process down), or it stopped while answering.
    Closed(String),
    /// The bound passed first: the worker is stopped (`kill -STOP`), hung or swamped.
    NoAnswer(Silence),
}

/// What a command saw of a worker that did not answer in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Silence {
    pub socket: PathBuf,
    /// The bound that passed.
    pub waited: Duration,
    pub stage: Stage,
}

/// How far the exchange got when the bound passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The connection was not taken (the socket's backlog is full).
    Connect,
    /// The request was not written whole: the worker cannot read it as a request.
    Send,
    /// The request was sent and nothing came back: the worker may still read it and
    /// carry it out.
    Answer,
    /// The reply began but did not arrive whole.
    Reply,
}

impl Stage {
    /// Whether the worker holds the whole request (and so may carry it out later).
    pub fn sent(self) -> bool {
        matches!(self, Stage::Answer | Stage::Reply)
    }
}

/// Send `req` to the worker listening at `path` and read its reply, all within `bound`
/// (the CLI passes [`EXCHANGE_TIMEOUT`]).
pub fn call(path: &Path, req: &Request, bound: Duration) -> Result<Reply, ClientError> {
    debug_assert!(!bound.is_zero());
    let deadline = Instant::now() + bound;
    let silence = |stage| {
        ClientError::NoAnswer(Silence {
            socket: path.to_path_buf(),
            waited: bound,
            stage,
        })
    };
    let fail = |e: std::io::Error| ClientError::Failed(format!("{}: {e}", path.display()));
    let stream = match connect(path, deadline) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NoWorker)
        }
        Err(e) if timed_out(&e) => return Err(silence(Stage::Connect)),
        Err(e) => return Err(fail(e)),
    };
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Failed(e.to_string()))?;
    line.push(b'\n');
    let mut bounded = Bounded {
        stream: &stream,
        deadline,
    };
    // A worker that is busy answers at once and closes, maybe before the request is
    // written whole: a failed write still reads what it said.
    let written = bounded.write_all(&line);
    if written.as_ref().is_err_and(timed_out) {
        return Err(silence(Stage::Send));
    }
    let mut reply = Vec::new();
    let read = BufReader::new(bounded.take(MAX_REPLY_BYTES)).read_until(b'\n', &mut reply);
    if read.as_ref().is_err_and(timed_out) {
        // A partial request (a failed write) is not one the worker can carry out.
        let stage = match (reply.is_empty(), written.is_ok()) {
            (false, _) => Stage::Reply,
            (true, true) => Stage::Answer,
            (true, false) => Stage::Send,
        };
        return Err(silence(stage));
    }
    if reply.is_empty() {
        if closed_without_answer(&read) {
            return Err(ClientError::Closed(format!(
                "{}: the worker closed the connection without an answer",
                path.display()
            )));
        }
        written.map_err(fail)?;
        read.map_err(fail)?;
    }
    serde_json::from_slice(&reply).map_err(|e| {
        ClientError::Failed(format!(
            "{}: unreadable reply from the worker: {e}",
            path.display()
        ))
    })
}

/// Connect by `deadline`: the send timeout is set before `connect`, which on Linux
/// bounds the wait for room in a listener's full backlog (a stopped worker's socket
/// fills up with the connections of every command that gave up on it; `std`'s connect
/// would wait for ever). A connect that timed out leaves the socket unconnected, so it
/// is tried again until the deadline.
fn connect(path: &Path, deadline: Instant) -> std::io::Result<UnixStream> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let addr = SockAddr::unix(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    loop {
        socket.set_write_timeout(Some(slice(deadline)?))?;
        match socket.connect(&addr) {
            Ok(()) => return Ok(socket.into()),
            Err(e) if timed_out(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What is left until `deadline`, at most [`SLICE`]; `TimedOut` once nothing is.
fn slice(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(std::io::ErrorKind::TimedOut.into())
    } else {
        Ok(left.min(SLICE))
    }
}

/// The stream, each read and write of it given what is left of the exchange's bound.
struct Bounded<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl Read for Bounded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            self.stream.set_read_timeout(Some(slice(self.deadline)?))?;
            match (&mut &*self.stream).read(buf) {
                Err(e) if timed_out(&e) => continue,
                other => return other,
            }
        }
    }
}

impl Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            self.stream.set_write_timeout(Some(slice(self.deadline)?))?;
            match (&mut &*self.stream).write(buf) {
                Err(e) if timed_out(&e) => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A socket timeout reads as `EAGAIN` on Linux (`WouldBlock`), the bound's own check as
/// `TimedOut`.
fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Whether a read that got nothing means the other end closed or reset the connection
/// (not a timeout: a worker that hangs is not taken for one that is gone).
fn closed_without_answer(read: &std::io::Result<usize>) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    match read {
        Ok(_) => true,
        Err(e) => matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe),
    }
}
