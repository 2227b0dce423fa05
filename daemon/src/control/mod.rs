//! The control server: `cco-proto` frames over a local socket, one task per connection.
//!
//! Guards:
//! - the socket is 0600, in a directory the daemon creates 0700;
//! - a peer whose user id is neither the daemon's nor root is rejected;
//! - a frame is checked against `MAX_FRAME_BYTES` before it is buffered;
//! - a peer that stays silent, or leaves replies unread, for [`IDLE_TIMEOUT`] is dropped;
//! - every frame, a malformed one included, gets a response.

mod handlers;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use cco_proto::{decode_request, encode_frame, LineFramer, Request, Response, ResponseFrame};
use interprocess::local_socket::tokio::{prelude::*, Listener, Stream};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, instrument, warn};

use crate::analytics::AnalyticsActor;
use crate::cache::CacheActor;
use crate::config::Config;
use crate::pricing::PriceTable;
use crate::updater::UpdaterActor;

/// Time a connection may stay silent, or leave a reply unread, before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once; further ones wait in the accept queue.
const MAX_CONNECTIONS: usize = 32;

/// Context of the handlers: the actors' addresses and facts about the daemon.
pub struct ControlContext {
    pub analytics: Addr<AnalyticsActor>,
    pub cache: Option<Addr<CacheActor>>,
    pub updater: Addr<UpdaterActor>,
    /// Download progress of the updater, read without a message so that it responds while
    /// the updater is busy installing.
    pub update_progress: Arc<crate::updater::DownloadProgress>,
    pub config: Arc<Config>,
    /// `None` when `[budgets]` sets no limit.
    pub budgets: Option<Arc<crate::budgets::Budgets>>,
    /// The price table that prices requests, for `pricing` and repriced stats.
    pub prices: Arc<PriceTable>,
    pub started: Instant,
    pub listen_addr: String,
    pub server: actix_web::dev::ServerHandle,
}

/// Failure to open the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("another ccod is already listening on {0}; stop it with 'ccoctl shutdown' or pass another --socket")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; remove it or pass another --socket")]
    NotASocket(PathBuf),
    #[error("cannot prepare the control socket directory {path}: {source}")]
    Directory { path: PathBuf, source: io::Error },
    #[error("cannot listen on the control socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
}

/// The bound socket, removed from the file system when dropped.
pub struct ControlSocket {
    listener: Listener,
    path: PathBuf,
    owner_uid: Option<u32>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Creates the socket directory (0700) and binds the socket (0600). A socket file left by
/// a daemon that is gone is replaced; one that still accepts connections is an error.
pub fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty());
    let created_dir = match dir {
        Some(dir) if !dir.exists() => {
            crate::fsutil::create_private_dir(dir).map_err(|source| ControlError::Directory {
                path: dir.to_path_buf(),
                source,
            })?;
            true
        }
        _ => false,
    };
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        if !is_socket(&metadata) {
            return Err(ControlError::NotASocket(path.to_path_buf()));
        }
        let name = path
            .to_fs_name::<GenericFilePath>()
            .map_err(|source| bind_error(path, source))?;
        if <interprocess::local_socket::Stream as interprocess::local_socket::traits::Stream>::connect(name).is_ok() {
            return Err(ControlError::InUse(path.to_path_buf()));
        }
        // A socket that no daemon accepts on is left over from one that is gone.
        std::fs::remove_file(path).map_err(|source| bind_error(path, source))?;
    }
    let name = path
        .to_fs_name::<GenericFilePath>()
        .map_err(|source| bind_error(path, source))?;
    let listener = ListenerOptions::new()
        .name(name)
        .reclaim_name(false)
        .create_tokio()
        .map_err(|source| bind_error(path, source))?;
    let mut socket = ControlSocket {
        listener,
        path: path.to_path_buf(),
        owner_uid: None,
    };
    // From here on, a failure drops `socket`, which removes the file again.
    socket.owner_uid =
        crate::fsutil::restrict_file(path).map_err(|source| bind_error(path, source))?;
    if let Some(dir) = dir.filter(|_| !created_dir) {
        // Only the `cco` directory of the path rule is the daemon's own to change. Any
        // other directory, such as a home directory given with --socket, is only reported.
        let own = dir.file_name().is_some_and(|name| name == "cco");
        crate::fsutil::tighten_private_dir(dir, socket.owner_uid, own).map_err(|source| {
            ControlError::Directory {
                path: dir.to_path_buf(),
                source,
            }
        })?;
    }
    Ok(socket)
}

#[cfg(unix)]
fn is_socket(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    metadata.file_type().is_socket()
}

#[cfg(not(unix))]
fn is_socket(_metadata: &std::fs::Metadata) -> bool {
    true
}

fn bind_error(path: &Path, source: io::Error) -> ControlError {
    ControlError::Bind {
        path: path.to_path_buf(),
        source,
    }
}

/// Accepts connections until the daemon stops.
pub async fn serve(socket: ControlSocket, context: Arc<ControlContext>) {
    info!(actor = "control", path = %socket.path.display(), "control socket listening");
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match socket.listener.accept().await {
            Ok(stream) => stream,
            Err(err) => {
                warn!(actor = "control", error = %err, "cannot accept a control connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(peer_uid) = peer_allowed(&stream, socket.owner_uid) {
            actix_rt::spawn(reject_peer(stream, peer_uid));
            continue;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let context = context.clone();
        actix_rt::spawn(async move {
            if let Err(err) = connection(stream, &context).await {
                debug!(actor = "control", error = %err, "control connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// Checks that the peer runs as the daemon's user or as root, where the platform reports
/// the peer's user id. Returns the peer's user id when it does not.
fn peer_allowed(stream: &Stream, owner_uid: Option<u32>) -> Result<(), u32> {
    let Some(owner) = owner_uid else {
        return Ok(());
    };
    match stream.peer_creds().ok().and_then(|creds| creds.euid()) {
        Some(uid) if uid == owner || uid == 0 => Ok(()),
        Some(uid) => {
            warn!(
                actor = "control",
                peer_uid = uid,
                daemon_uid = owner,
                "rejected a control connection from another user"
            );
            Err(uid)
        }
        None => Ok(()),
    }
}

/// Tells a rejected peer why before closing: an error frame, then one read so the peer's
/// request is consumed and its write does not fail before it reads the reply.
async fn reject_peer(stream: Stream, peer_uid: u32) {
    let reply = ResponseFrame::new(
        None,
        Response::Error(cco_proto::ErrorReply {
            kind: cco_proto::ErrorKind::PermissionDenied,
            message: format!(
                "user {peer_uid} may not control this ccod; run ccoctl as the daemon's user or root"
            ),
        }),
    );
    let (mut reader, mut writer) = (&stream, &stream);
    let wait = Duration::from_secs(2);
    let _ = tokio::time::timeout(wait, writer.write_all(&encode_frame(&reply))).await;
    let mut buffer = [0u8; 4096];
    let _ = tokio::time::timeout(wait, reader.read(&mut buffer)).await;
}

#[instrument(skip_all, fields(actor = "control"))]
async fn connection(stream: Stream, context: &ControlContext) -> io::Result<()> {
    // `&Stream` reads and writes, so one stream serves both directions.
    let (mut reader, mut writer) = (&stream, &stream);
    let mut framer = LineFramer::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        while let Some(frame) = framer.next_frame() {
            let reply = match frame.and_then(|line| decode_request(&line)) {
                Ok(request) => {
                    let response = dispatch(context, request.request).await;
                    ResponseFrame::new(Some(request.id), response)
                }
                Err(err) => {
                    debug!(error = %err, "rejected a control frame");
                    ResponseFrame::new(err.request_id(), Response::Error(err.to_reply()))
                }
            };
            // A peer that sends but never reads would otherwise hold this task forever.
            match tokio::time::timeout(IDLE_TIMEOUT, writer.write_all(&encode_frame(&reply))).await
            {
                Ok(written) => written?,
                Err(_) => {
                    debug!("control peer stopped reading replies; closing the connection");
                    return Ok(());
                }
            }
        }
        let read = match tokio::time::timeout(IDLE_TIMEOUT, reader.read(&mut buffer)).await {
            Ok(read) => read?,
            Err(_) => return Ok(()),
        };
        if read == 0 {
            if let Err(err) = framer.finish() {
                let reply = ResponseFrame::new(None, Response::Error(err.to_reply()));
                // The peer closed its side; it may still read the reply.
                let _ = tokio::time::timeout(IDLE_TIMEOUT, writer.write_all(&encode_frame(&reply)))
                    .await;
            }
            return Ok(());
        }
        framer.push(&buffer[..read]);
    }
}

async fn dispatch(context: &ControlContext, request: Request) -> Response {
    match request {
        Request::Status => handlers::status(context).await,
        Request::Stats(query) => handlers::stats(context, query).await,
        Request::CacheStats => handlers::cache_stats_reply(context).await,
        Request::CacheClear => handlers::cache_clear(context).await,
        Request::Config => handlers::config(context),
        Request::Shutdown => handlers::shutdown(context),
        Request::Update(request) => handlers::update(context, request).await,
        Request::UpdateProgress => Response::UpdateProgress(context.update_progress.reply()),
        Request::Pricing(query) => handlers::pricing(context, &query),
    }
}
