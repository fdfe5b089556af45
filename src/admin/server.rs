//! The admin socket's listener, on the worker's tokio runtime. One request per
//! connection: read one line (at most `MAX_REQUEST_BYTES`), hand it to the engine
//! through `submit` (the engine's bounded inbox; a full inbox answers "busy"), wait for
//! the reply, write it, close. Every step has `REQUEST_TIMEOUT`; at most `MAX_CLIENTS`
//! connections are served at once (more are answered "busy" and closed). None of it
//! runs on the engine thread, so no client can stall the engine.

use super::protocol::{parse_request, Reply, Request, MAX_REQUEST_BYTES};
use crate::exit;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, Semaphore};

/// Connections served at once.
pub const MAX_CLIENTS: usize = 8;
/// Reading the request, the engine's answer, and writing the reply each get this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The socket's mode (SPEC §7): owner and group.
pub const SOCKET_MODE: u32 = 0o660;
/// The group given the socket when it exists (best effort).
pub const SOCKET_GROUP: &str = "sendgate";
/// The longest path a Unix socket address holds (`sun_path`, with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// A request on its way to the engine, with where the reply goes.
pub struct Call {
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
}

/// Hands a call to the engine; false when the engine's inbox is full or gone.
pub type Submit = Arc<dyn Fn(Call) -> bool + Send + Sync>;

/// Bind the socket at `path`: its directory is created, a stale socket file (left by a
/// crash) replaced, the mode set to `SOCKET_MODE` and the group to `SOCKET_GROUP` when
/// that group exists. Call inside the runtime.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    let shown = path.display();
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(format!(
            "admin.socket {shown}: longer than {MAX_SOCKET_PATH} bytes, the limit of a Unix socket path"
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("admin.socket {shown}: cannot create its directory: {e}"))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(format!("admin.socket {shown}: exists and is not a socket"));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!("admin.socket {shown}: another process listens on it"));
        }
        // Nobody listens: a socket left by a crash.
        std::fs::remove_file(path)
            .map_err(|e| format!("admin.socket {shown}: cannot replace a stale socket: {e}"))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("admin.socket {shown}: cannot listen: {e}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| format!("admin.socket {shown}: cannot set its mode: {e}"))?;
    set_group(path);
    Ok(listener)
}

/// Give the socket the `sendgate` group when it exists; without it (or without the
/// right to), the socket keeps the worker's group.
fn set_group(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(name), Ok(cpath)) = (
        std::ffi::CString::new(SOCKET_GROUP),
        std::ffi::CString::new(path.as_os_str().as_bytes()),
    ) else {
        return;
    };
    // SAFETY: getgrnam takes a NUL-terminated name and returns a pointer into static
    // storage or null; the gid is read at once, before any other call could reuse it.
    let gid = unsafe {
        let g = libc::getgrnam(name.as_ptr());
        if g.is_null() {
            return;
        }
        (*g).gr_gid
    };
    // SAFETY: chown takes a NUL-terminated path; uid -1 leaves the owner unchanged.
    let rc = unsafe { libc::chown(cpath.as_ptr(), libc::uid_t::MAX, gid) };
    if rc != 0 {
        tracing::warn!(
            event = "admin_socket_group",
            path = %path.display(),
            error = %std::io::Error::last_os_error()
        );
    }
}

/// Accept connections until the runtime shuts down.
pub async fn serve(listener: UnixListener, submit: Submit) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and the like: back off a little instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let submit = Arc::clone(&submit);
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    handle(stream, submit).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let busy = Reply::error(format!("busy: {MAX_CLIENTS} clients already"), exit::FAILURE);
                    let _ = write_reply(stream, &busy).await;
                });
            }
        }
    }
}

async fn handle(stream: UnixStream, submit: Submit) {
    let (read, write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES as u64 + 1));
    let reply = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
        Err(_) => Reply::error("timed out reading the request", exit::USAGE),
        Ok(Err(e)) => Reply::error(format!("cannot read the request: {e}"), exit::USAGE),
        Ok(Ok(_)) if line.len() > MAX_REQUEST_BYTES => Reply::error(
            format!("request longer than {MAX_REQUEST_BYTES} bytes"),
            exit::USAGE,
        ),
        Ok(Ok(_)) => match parse_request(&line) {
            Err(e) => Reply::error(e, exit::USAGE),
            Ok(request) => ask_engine(request, &submit).await,
        },
    };
    let Ok(stream) = reader.into_inner().into_inner().reunite(write) else {
        return;
    };
    let _ = write_reply(stream, &reply).await;
}

async fn ask_engine(request: Request, submit: &Submit) -> Reply {
    let (tx, rx) = oneshot::channel();
    if !submit(Call { request, reply: tx }) {
        return Reply::error("busy: the worker's inbox is full; try again", exit::FAILURE);
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) => Reply::error("the worker is stopping", exit::FAILURE),
        Err(_) => Reply::error("timed out waiting for the worker", exit::FAILURE),
    }
}

async fn write_reply(mut stream: UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    text.push(b'\n');
    // A client that never reads cannot hold the slot longer than this.
    match tokio::time::timeout(REQUEST_TIMEOUT, stream.write_all(&text)).await {
        Ok(r) => r?,
        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
    }
    let _ = stream.shutdown().await;
    Ok(())
}

/// The socket path of a configuration (SPEC §7): `admin.socket`, else `admin.sock`
/// beside the status file (so under `$RUNTIME_DIRECTORY` under systemd, and in the
/// data directory for the zero-config run).
pub fn socket_path(config: &crate::config::Config) -> PathBuf {
    config.admin.socket.clone().unwrap_or_else(|| {
        config
            .status
            .path
            .parent()
            .unwrap_or(Path::new(""))
            .join("admin.sock")
    })
}
