//! One request and one reply over the daemon's control socket.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cco_proto::{
    encode_frame, ErrorKind, FrameError, LineFramer, Request, RequestFrame, Response,
    ResponseFrame, PROTOCOL_VERSION,
};
use interprocess::local_socket::traits::Stream as _;
use interprocess::local_socket::{ConnectOptions, Name, Stream};
use interprocess::ConnectWaitMode;

use crate::error::CtlError;

/// How long a run waits for the daemon when `--timeout` is not given.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// Size of each read from the socket. Longer frames arrive over several reads.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// A connection target: the socket path and the time allowed for one exchange.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(socket: PathBuf, timeout: Duration) -> Self {
        Self { socket, timeout }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Returns the same target with at least `timeout` for one exchange, for requests that take
    /// longer than most, such as an install.
    pub fn with_min_timeout(&self, timeout: Duration) -> Self {
        Self {
            socket: self.socket.clone(),
            timeout: self.timeout.max(timeout),
        }
    }

    /// Connects, sends `request` in one frame and reads the one reply frame.
    ///
    /// An error reply becomes [`CtlError::Daemon`], or [`CtlError::ProtocolMismatch`] when
    /// its kind is a protocol mismatch, so `Ok` always contains a non-error response. The
    /// whole exchange, connecting included, shares one deadline of the client's timeout.
    pub fn send(&self, request: Request) -> Result<Response, CtlError> {
        let deadline = Instant::now() + self.timeout;
        let mut stream = self.connect()?;

        // The process id makes the request easy to find in the daemon's log, and one
        // connection carries one request, so it needs to be unique only per connection.
        let id = u64::from(std::process::id());
        let frame = encode_frame(&RequestFrame::new(id, request));
        stream
            .set_send_timeout(Some(self.remaining(deadline, "send the request")?))
            .map_err(|source| self.io_error("send the request", source))?;
        stream
            .write_all(&frame)
            .and_then(|()| stream.flush())
            .map_err(|source| self.io_error("send the request", source))?;

        let reply = read_frame(&mut stream, |stream: &Stream| {
            let remaining = self.remaining(deadline, "reply")?;
            stream
                .set_recv_timeout(Some(remaining))
                .map_err(|source| self.io_error("reply", source))
        });
        let reply = match reply {
            Ok(bytes) => bytes,
            Err(ReadError::Ctl(error)) => return Err(error),
            Err(ReadError::Io(source)) => return Err(self.io_error("reply", source)),
            Err(ReadError::Eof) => {
                return Err(CtlError::ClosedWithoutReply {
                    socket: self.socket.clone(),
                })
            }
            Err(ReadError::Frame(FrameError::Truncated { pending })) => {
                return Err(CtlError::TruncatedReply {
                    socket: self.socket.clone(),
                    pending,
                })
            }
            Err(ReadError::Frame(error)) => return Err(self.invalid_reply(error.to_string())),
        };
        self.decode_reply(&reply, id)
    }

    fn connect(&self) -> Result<Stream, CtlError> {
        let name = socket_name(&self.socket).map_err(|source| CtlError::Connect {
            socket: self.socket.clone(),
            source,
        })?;
        let result = ConnectOptions::new()
            .name(name)
            .wait_mode(ConnectWaitMode::Timeout(self.timeout))
            .connect_sync();
        result.map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => CtlError::NotRunning {
                socket: self.socket.clone(),
                reason: "no socket at this path",
            },
            io::ErrorKind::ConnectionRefused => CtlError::NotRunning {
                socket: self.socket.clone(),
                reason: "connection refused",
            },
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => CtlError::Timeout {
                socket: self.socket.clone(),
                timeout: self.timeout,
                action: "accept the connection",
            },
            _ => CtlError::Connect {
                socket: self.socket.clone(),
                source,
            },
        })
    }

    /// Time left before `deadline`, or a timeout error once it has passed.
    fn remaining(&self, deadline: Instant, action: &'static str) -> Result<Duration, CtlError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(self.timeout_error(action));
        }
        Ok(remaining)
    }

    fn timeout_error(&self, action: &'static str) -> CtlError {
        CtlError::Timeout {
            socket: self.socket.clone(),
            timeout: self.timeout,
            action,
        }
    }

    fn io_error(&self, action: &'static str, source: io::Error) -> CtlError {
        match source.kind() {
            // A read or write timeout of the socket surfaces as one of these two kinds,
            // depending on the platform.
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timeout_error(action),
            _ => CtlError::Io {
                socket: self.socket.clone(),
                action,
                source,
            },
        }
    }

    fn invalid_reply(&self, reason: String) -> CtlError {
        CtlError::InvalidReply {
            socket: self.socket.clone(),
            reason,
        }
    }

    /// Checks the protocol version and the id of a reply frame and unwraps its response.
    fn decode_reply(&self, bytes: &[u8], request_id: u64) -> Result<Response, CtlError> {
        // The version is checked on the raw JSON first, because a frame of another
        // protocol may not have the shape of this one's ResponseFrame.
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|err| self.invalid_reply(format!("not valid JSON ({err})")))?;
        let daemon_protocol = value.get("protocol").and_then(serde_json::Value::as_u64);
        let daemon_version = value
            .get("server_version")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        if daemon_protocol != Some(u64::from(PROTOCOL_VERSION)) {
            return Err(CtlError::ProtocolMismatch {
                daemon_protocol: daemon_protocol
                    .map(|version| u32::try_from(version).unwrap_or(u32::MAX)),
                daemon_version,
                detail: None,
            });
        }

        let frame: ResponseFrame = serde_json::from_value(value)
            .map_err(|err| self.invalid_reply(format!("unexpected frame shape ({err})")))?;
        match (frame.id, frame.response) {
            (_, Response::Error(error)) if error.kind == ErrorKind::ProtocolMismatch => {
                Err(CtlError::ProtocolMismatch {
                    daemon_protocol: Some(frame.protocol),
                    daemon_version: frame.server_version,
                    detail: Some(error.message),
                })
            }
            // The daemon sends no id when it could not read one from the request, which
            // only an error reply can report.
            (Some(id), Response::Error(error)) if id == request_id => Err(CtlError::Daemon {
                kind: error.kind,
                message: error.message,
            }),
            (None, Response::Error(error)) => Err(CtlError::Daemon {
                kind: error.kind,
                message: error.message,
            }),
            (Some(id), response) if id == request_id => Ok(response),
            (id, _) => Err(self.invalid_reply(format!(
                "reply carries id {} but the request had id {request_id}",
                id.map_or_else(|| "null".to_owned(), |id| id.to_string())
            ))),
        }
    }
}

/// Failures of [`read_frame`], turned into [`CtlError`]s by the caller, which adds the
/// socket path.
#[derive(Debug)]
enum ReadError {
    /// The peer closed the connection before sending any byte of a frame.
    Eof,
    Frame(FrameError),
    Io(io::Error),
    Ctl(CtlError),
}

/// Reads from `reader` until one whole frame has arrived and returns it without its
/// newline. `before_read` runs before every read, so the caller can shorten the read
/// timeout to what is left of its deadline or stop with an error.
fn read_frame<R: Read>(
    reader: &mut R,
    mut before_read: impl FnMut(&R) -> Result<(), CtlError>,
) -> Result<Vec<u8>, ReadError> {
    let mut framer = LineFramer::new();
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        if let Some(frame) = framer.next_frame() {
            return frame.map_err(ReadError::Frame);
        }
        before_read(reader).map_err(ReadError::Ctl)?;
        let count = match reader.read(&mut chunk) {
            Ok(count) => count,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(ReadError::Io(err)),
        };
        if count == 0 {
            framer.finish().map_err(ReadError::Frame)?;
            return Err(ReadError::Eof);
        }
        framer.push(&chunk[..count]);
    }
}

/// Converts the socket path to an interprocess name: the file path itself on Unix, and on
/// Windows the path's file name as the name of a named pipe, as the daemon uses it.
fn socket_name(path: &Path) -> io::Result<Name<'_>> {
    #[cfg(windows)]
    {
        use interprocess::local_socket::{GenericNamespaced, ToNsName};
        let file_name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the socket path has no file name to use as the pipe name",
            )
        })?;
        file_name.to_ns_name::<GenericNamespaced>()
    }
    #[cfg(not(windows))]
    {
        use interprocess::local_socket::{GenericFilePath, ToFsName};
        path.to_fs_name::<GenericFilePath>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cco_proto::{encode_frame, CacheClearReply, ErrorReply, CRATE_VERSION};

    fn client() -> Client {
        Client::new(
            PathBuf::from("/tmp/cco-test/ccod.sock"),
            Duration::from_secs(1),
        )
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<u8>, ReadError> {
        let mut reader = bytes;
        read_frame(&mut reader, |_| Ok(()))
    }

    /// A reader that returns one byte per read, as a slow peer would.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buffer[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    fn cleared_frame(id: Option<u64>) -> Vec<u8> {
        let response = Response::CacheCleared(CacheClearReply {
            entries: 2,
            bytes: 10,
        });
        let mut bytes = encode_frame(&ResponseFrame::new(id, response));
        bytes.pop();
        bytes
    }

    fn error_frame(id: Option<u64>, kind: ErrorKind) -> Vec<u8> {
        let response = Response::Error(ErrorReply {
            kind,
            message: "went wrong".into(),
        });
        let mut bytes = encode_frame(&ResponseFrame::new(id, response));
        bytes.pop();
        bytes
    }

    #[test]
    fn read_returns_first_frame() {
        let frame = read_all(b"{\"a\":1}\n{\"b\":2}\n").unwrap();
        assert_eq!(frame, b"{\"a\":1}");
    }

    #[test]
    fn read_joins_one_byte_reads() {
        let mut reader = Trickle(b"{\"a\":1}\n");
        let mut reads = 0;
        let frame = read_frame(&mut reader, |_| {
            reads += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(frame, b"{\"a\":1}");
        assert_eq!(reads, 8);
    }

    #[test]
    fn read_tells_clean_eof_from_cut_frame() {
        assert!(matches!(read_all(b""), Err(ReadError::Eof)));
        assert!(matches!(
            read_all(b"{\"protocol\":1"),
            Err(ReadError::Frame(FrameError::Truncated { pending: 13 }))
        ));
    }

    #[test]
    fn read_stops_when_hook_fails() {
        let mut reader: &[u8] = b"{}";
        let result = read_frame(&mut reader, |_| Err(client().timeout_error("reply")));
        assert!(matches!(
            result,
            Err(ReadError::Ctl(CtlError::Timeout { .. }))
        ));
    }

    #[test]
    fn decode_accepts_matching_id() {
        let response = client().decode_reply(&cleared_frame(Some(7)), 7).unwrap();
        assert!(matches!(
            response,
            Response::CacheCleared(CacheClearReply { entries: 2, .. })
        ));
    }

    #[test]
    fn decode_rejects_other_id() {
        let error = client()
            .decode_reply(&cleared_frame(Some(8)), 7)
            .unwrap_err();
        assert!(matches!(error, CtlError::InvalidReply { .. }), "{error:?}");
        assert!(error.to_string().contains("id 8"), "{error}");

        let error = client().decode_reply(&cleared_frame(None), 7).unwrap_err();
        assert!(error.to_string().contains("id null"), "{error}");
    }

    #[test]
    fn decode_maps_error_replies() {
        let error = client()
            .decode_reply(&error_frame(Some(7), ErrorKind::Internal), 7)
            .unwrap_err();
        assert!(matches!(
            error,
            CtlError::Daemon {
                kind: ErrorKind::Internal,
                ..
            }
        ));

        let error = client()
            .decode_reply(&error_frame(None, ErrorKind::MalformedFrame), 7)
            .unwrap_err();
        assert!(matches!(
            error,
            CtlError::Daemon {
                kind: ErrorKind::MalformedFrame,
                ..
            }
        ));

        let error = client()
            .decode_reply(&error_frame(Some(7), ErrorKind::ProtocolMismatch), 7)
            .unwrap_err();
        assert_eq!(error.exit_code(), crate::error::EXIT_PROTOCOL_MISMATCH);
    }

    #[test]
    fn decode_checks_protocol_before_shape() {
        let frame = br#"{"protocol":99,"server_version":"9.0.0","reply":{}}"#;
        let error = client().decode_reply(frame, 7).unwrap_err();
        let CtlError::ProtocolMismatch {
            daemon_protocol,
            daemon_version,
            ..
        } = &error
        else {
            panic!("expected a protocol mismatch, got {error:?}");
        };
        assert_eq!(*daemon_protocol, Some(99));
        assert_eq!(daemon_version, "9.0.0");
        assert!(error.to_string().contains(CRATE_VERSION), "{error}");

        let error = client().decode_reply(br#"{"id":7}"#, 7).unwrap_err();
        assert!(
            error.to_string().contains("ccod protocol unknown"),
            "{error}"
        );
    }

    #[test]
    fn decode_rejects_non_json() {
        let error = client().decode_reply(b"hello", 7).unwrap_err();
        assert!(error.to_string().contains("not valid JSON"), "{error}");
    }
}
