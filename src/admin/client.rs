//! The CLI side of the admin socket: one request, one reply.

use super::protocol::{Reply, Request};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long the CLI waits for the worker's reply (an audit of a long ledger takes a
/// while; the worker gives up on its side after `server::REQUEST_TIMEOUT`).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
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
}

/// Send `req` to the worker listening at `path` and read its reply.
pub fn call(path: &Path, req: &Request) -> Result<Reply, ClientError> {
    let mut stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NoWorker)
        }
        Err(e) => return Err(ClientError::Failed(format!("{}: {e}", path.display()))),
    };
    let fail = |e: std::io::Error| ClientError::Failed(format!("{}: {e}", path.display()));
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(fail)?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(fail)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Failed(e.to_string()))?;
    line.push(b'\n');
    // A worker that is busy answers at once and closes, maybe before the request is
    // written whole: a failed write still reads what it said.
    let written = stream.write_all(&line);
    let mut reply = Vec::new();
    let read = BufReader::new(stream.take(MAX_REPLY_BYTES)).read_until(b'\n', &mut reply);
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

/// Whether a read that got nothing means the other end closed or reset the connection
/// (not a timeout: a worker that hangs is not taken for one that is gone).
fn closed_without_answer(read: &std::io::Result<usize>) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    match read {
        Ok(_) => true,
        Err(e) => matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe),
    }
}
