//! Scripted replies of the mock upstream and how they go out on the wire.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::anthropic;
use crate::wire::{encode_chunk, LAST_CHUNK};

use super::StopSignal;

/// One scripted reply of the mock upstream, built with the constructors and
/// the chaining methods below.
///
/// ```
/// use std::time::Duration;
/// use cco_tests::{anthropic, split_every, Reply};
///
/// let body = anthropic::sse_stream(
///     "claude-sonnet-4-20250514",
///     &["Hel", "lo"],
///     anthropic::usage(10, 1),
///     anthropic::usage(10, 2),
/// );
/// let reply = Reply::sse(split_every(&body, 7))
///     .delay(Duration::from_millis(20))
///     .chunk_delay(Duration::from_millis(5))
///     .cut_after(3);
/// # drop(reply);
/// ```
#[derive(Clone, Debug)]
pub struct Reply {
    pub(super) delay: Duration,
    pub(super) headers: Vec<(String, String)>,
    pub(super) close_connection: bool,
    pub(super) kind: ReplyKind,
}

#[derive(Clone, Debug)]
pub(super) enum ReplyKind {
    /// A body framed by `Content-Length`.
    Full {
        status: u16,
        body: Vec<u8>,
    },
    /// A chunked body written one chunk per write.
    Stream {
        status: u16,
        chunks: Vec<Vec<u8>>,
        chunk_delay: Duration,
        /// Number of chunks written before the socket is closed without the
        /// terminating chunk; `None` ends the body normally.
        cut_after: Option<usize>,
    },
    /// The default behaviour, resolved when the request arrives.
    Default {
        chunk_delay: Option<Duration>,
    },
    CloseWithoutResponse,
    Raw(Vec<u8>),
}

impl Reply {
    fn new(kind: ReplyKind) -> Reply {
        Reply {
            delay: Duration::ZERO,
            headers: Vec::new(),
            close_connection: false,
            kind,
        }
    }

    /// Builds a JSON reply with `content-type: application/json` and a
    /// `Content-Length` body.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(ReplyKind::Full {
            status,
            body: body.into(),
        })
    }

    /// Builds a status 200 server-sent event stream with `content-type:
    /// text/event-stream` and `Transfer-Encoding: chunked`, as the real API
    /// sends it. Each element of `chunks` goes out as one chunk in its own
    /// write, so a test can split an event, or a UTF-8 character, across TCP
    /// writes. Empty elements are skipped because an empty chunk would end
    /// the body.
    pub fn sse(chunks: Vec<Vec<u8>>) -> Reply {
        Reply::new(ReplyKind::Stream {
            status: 200,
            chunks,
            chunk_delay: Duration::ZERO,
            cut_after: None,
        })
    }

    /// Builds an error in the Anthropic format, such as
    /// `Reply::error(400, "invalid_request_error", "max_tokens: Field required")`.
    pub fn error(status: u16, kind: &str, message: &str) -> Reply {
        Reply::json(status, anthropic::error_json(kind, message))
    }

    /// Builds a 429 `rate_limit_error` with `retry-after` in seconds.
    pub fn rate_limited(retry_after_seconds: u64) -> Reply {
        Reply::error(
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        )
        .header("retry-after", &retry_after_seconds.to_string())
    }

    /// Builds a 529 `overloaded_error`.
    pub fn overloaded() -> Reply {
        Reply::error(529, "overloaded_error", "Overloaded")
    }

    /// Builds the reply that the mock sends when no reply is queued. Chaining
    /// methods such as [`Reply::delay`] and [`Reply::header`] still apply.
    pub fn default_response() -> Reply {
        Reply::new(ReplyKind::Default { chunk_delay: None })
    }

    /// Closes the connection without sending any response byte.
    pub fn close_without_response() -> Reply {
        Reply::new(ReplyKind::CloseWithoutResponse)
    }

    /// Writes `bytes` as they are, then closes the connection. Use it for
    /// garbage that is not HTTP or for hand-made framing.
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply::new(ReplyKind::Raw(bytes.into()))
    }

    /// Waits this long after the request arrives before sending anything
    /// (the head of a stream included). While it waits, the mock watches for
    /// the peer closing the connection and counts that as a disconnect.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Replaces the status of a JSON or SSE reply.
    ///
    /// # Panics
    /// On other kinds of reply, which have no status to replace.
    pub fn status(mut self, new_status: u16) -> Reply {
        match &mut self.kind {
            ReplyKind::Full { status, .. } | ReplyKind::Stream { status, .. } => {
                *status = new_status;
            }
            _ => panic!("Reply::status applies only to json, error and sse replies"),
        }
        self
    }

    /// Adds a response header, after the ones the mock writes itself. A
    /// `content-type` given here replaces the default one.
    ///
    /// # Panics
    /// On `Content-Length` and `Transfer-Encoding`, which the mock derives
    /// from the body (use [`Reply::raw`] for other framing), and on replies
    /// that send no HTTP head.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        let framing = name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding");
        assert!(
            !framing,
            "the mock sets {name} from the body; use Reply::raw for custom framing"
        );
        assert!(
            self.sends_head(),
            "Reply::header applies only to replies that send an HTTP head"
        );
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the pause between two chunks of an SSE reply, or between the
    /// events of a default streaming reply.
    ///
    /// # Panics
    /// On replies that are not streams.
    pub fn chunk_delay(mut self, delay: Duration) -> Reply {
        match &mut self.kind {
            ReplyKind::Stream { chunk_delay, .. } => *chunk_delay = delay,
            ReplyKind::Default { chunk_delay } => *chunk_delay = Some(delay),
            _ => panic!("Reply::chunk_delay applies only to sse and default replies"),
        }
        self
    }

    /// Closes the socket right after the first `chunk_count` chunks, without
    /// the terminating chunk, so the peer receives a cut stream. With 0 the
    /// socket closes right after the head.
    ///
    /// # Panics
    /// On replies other than [`Reply::sse`], or when `chunk_count` exceeds the
    /// number of chunks.
    pub fn cut_after(mut self, chunk_count: usize) -> Reply {
        match &mut self.kind {
            ReplyKind::Stream {
                chunks, cut_after, ..
            } => {
                assert!(
                    chunk_count <= chunks.len(),
                    "cut_after({chunk_count}) exceeds the {} chunks of the reply",
                    chunks.len()
                );
                *cut_after = Some(chunk_count);
            }
            _ => panic!("Reply::cut_after applies only to sse replies"),
        }
        self
    }

    /// Sends `connection: close` and closes the connection after the reply.
    pub fn close_connection(mut self) -> Reply {
        assert!(
            self.sends_head(),
            "Reply::close_connection applies only to replies that send an HTTP head"
        );
        self.close_connection = true;
        self
    }

    fn sends_head(&self) -> bool {
        matches!(
            self.kind,
            ReplyKind::Full { .. } | ReplyKind::Stream { .. } | ReplyKind::Default { .. }
        )
    }
}

/// Cuts `bytes` at the given offsets, which must be ascending and at most
/// `bytes.len()`. Offsets that would make an empty piece (0, the length, or a
/// repeated offset) add no piece.
///
/// # Panics
/// When the offsets are not ascending or exceed the length.
pub fn split_at_offsets(bytes: &[u8], offsets: &[usize]) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for &offset in offsets {
        assert!(
            offset >= start && offset <= bytes.len(),
            "split offset {offset} is out of order or beyond the {} bytes",
            bytes.len()
        );
        if offset > start {
            pieces.push(bytes[start..offset].to_vec());
        }
        start = offset;
    }
    if start < bytes.len() {
        pieces.push(bytes[start..].to_vec());
    }
    pieces
}

/// Cuts `bytes` into pieces of `size` bytes; the last piece may be shorter.
///
/// # Panics
/// When `size` is 0.
pub fn split_every(bytes: &[u8], size: usize) -> Vec<Vec<u8>> {
    assert!(size > 0, "split_every needs a piece size of at least 1");
    bytes.chunks(size).map(<[u8]>::to_vec).collect()
}

/// How writing a reply ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The whole reply went out and the connection may serve another request.
    Completed,
    /// The reply ended the connection, as scripted.
    Closed,
    /// The peer closed the connection before the reply was complete.
    Abandoned,
    /// The mock is shutting down.
    Stopped,
}

/// Per-request facts that shape how a reply is written.
pub(super) struct WriteContext<'a> {
    pub stop: &'a StopSignal,
    /// A response to HEAD has no body.
    pub head_request: bool,
    /// The request asked to close the connection after the response.
    pub close_requested: bool,
}

/// Writes a resolved reply, which must not be [`ReplyKind::Default`].
pub(super) fn write_reply(
    reply: &Reply,
    stream: &mut TcpStream,
    context: &WriteContext,
) -> Outcome {
    match pause(stream, reply.delay, context.stop) {
        Pause::Elapsed => {}
        Pause::PeerClosed => return Outcome::Abandoned,
        Pause::Stopped => return Outcome::Stopped,
    }
    let closing = reply.close_connection
        || context.close_requested
        || reply.headers.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("connection") && value.contains("close")
        });

    match &reply.kind {
        ReplyKind::Full { status, body } => {
            let mut bytes = response_head(
                *status,
                "application/json",
                &[("content-length", &body.len().to_string())],
                &reply.headers,
                closing,
            );
            if !context.head_request {
                bytes.extend_from_slice(body);
            }
            if write_flush(stream, &bytes).is_err() {
                return failed_write(context);
            }
            if closing {
                Outcome::Closed
            } else {
                Outcome::Completed
            }
        }
        ReplyKind::Stream {
            status,
            chunks,
            chunk_delay,
            cut_after,
        } => write_stream(
            stream,
            context,
            &StreamPlan {
                status: *status,
                headers: &reply.headers,
                chunks,
                chunk_delay: *chunk_delay,
                cut_after: *cut_after,
                closing,
            },
        ),
        ReplyKind::Default { .. } => {
            unreachable!("default replies are resolved before they are written")
        }
        ReplyKind::CloseWithoutResponse => {
            let _ = stream.shutdown(Shutdown::Both);
            Outcome::Closed
        }
        ReplyKind::Raw(bytes) => {
            if write_flush(stream, bytes).is_err() {
                return failed_write(context);
            }
            let _ = stream.shutdown(Shutdown::Both);
            Outcome::Closed
        }
    }
}

struct StreamPlan<'a> {
    status: u16,
    headers: &'a [(String, String)],
    chunks: &'a [Vec<u8>],
    chunk_delay: Duration,
    cut_after: Option<usize>,
    closing: bool,
}

fn write_stream(stream: &mut TcpStream, context: &WriteContext, plan: &StreamPlan) -> Outcome {
    let head = response_head(
        plan.status,
        "text/event-stream",
        &[
            ("cache-control", "no-cache"),
            ("transfer-encoding", "chunked"),
        ],
        plan.headers,
        plan.closing,
    );
    if write_flush(stream, &head).is_err() {
        return failed_write(context);
    }
    if context.head_request {
        return Outcome::Completed;
    }

    let sent_limit = plan.cut_after.unwrap_or(plan.chunks.len());
    for (index, chunk) in plan.chunks.iter().take(sent_limit).enumerate() {
        if index > 0 && !plan.chunk_delay.is_zero() {
            match pause(stream, plan.chunk_delay, context.stop) {
                Pause::Elapsed => {}
                Pause::PeerClosed => return Outcome::Abandoned,
                Pause::Stopped => return Outcome::Stopped,
            }
        }
        if chunk.is_empty() {
            continue;
        }
        if write_flush(stream, &encode_chunk(chunk)).is_err() {
            return failed_write(context);
        }
    }

    if plan.cut_after.is_some() {
        let _ = stream.shutdown(Shutdown::Both);
        return Outcome::Closed;
    }
    if write_flush(stream, LAST_CHUNK).is_err() {
        return failed_write(context);
    }
    if plan.closing {
        Outcome::Closed
    } else {
        Outcome::Completed
    }
}

/// Builds a response head. `framing` headers come first, then the caller's
/// `extra` headers; `default_content_type` is used unless `extra` has one.
fn response_head(
    status: u16,
    default_content_type: &str,
    framing: &[(&str, &str)],
    extra: &[(String, String)],
    closing: bool,
) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    let has_content_type = extra
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
    if !has_content_type {
        head.push_str(&format!("content-type: {default_content_type}\r\n"));
    }
    for (name, value) in framing {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let has_connection = extra
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("connection"));
    if closing && !has_connection {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Unknown",
    }
}

/// Writes `bytes` in one call and flushes, so each call maps to its own TCP
/// segment (the mock sets `TCP_NODELAY`).
pub(super) fn write_flush(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes)?;
    stream.flush()
}

/// Classifies a failed write: while the mock runs, it means the peer went
/// away.
fn failed_write(context: &WriteContext) -> Outcome {
    if context.stop.is_set() {
        Outcome::Stopped
    } else {
        Outcome::Abandoned
    }
}

enum Pause {
    Elapsed,
    PeerClosed,
    Stopped,
}

/// Maximum single wait inside [`pause`], so that a stop is noticed quickly.
const PAUSE_SLICE: Duration = Duration::from_millis(50);

/// Waits for `duration` while watching the connection. Peeking returns 0
/// once the peer has sent FIN, which is how an abandoned request shows up
/// before the next write fails.
///
/// NOTE: a peer that half-closes its write side but still reads the
/// response is also reported as `PeerClosed`; HTTP clients in practice do
/// not half-close.
fn pause(stream: &TcpStream, duration: Duration, stop: &StopSignal) -> Pause {
    if duration.is_zero() {
        return Pause::Elapsed;
    }
    let deadline = Instant::now() + duration;
    let mut probe = [0u8; 1];
    loop {
        if stop.is_set() {
            return Pause::Stopped;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Pause::Elapsed;
        }
        let slice = remaining.min(PAUSE_SLICE).max(Duration::from_millis(1));
        if stream.set_read_timeout(Some(slice)).is_err() {
            return Pause::PeerClosed;
        }
        match stream.peek(&mut probe) {
            Ok(0) => {
                return if stop.is_set() {
                    Pause::Stopped
                } else {
                    Pause::PeerClosed
                };
            }
            // The peer sent more bytes (a pipelined request), so peeking
            // would return at once; wait out the rest without watching.
            Ok(_) => {
                return if stop.wait(remaining) {
                    Pause::Stopped
                } else {
                    Pause::Elapsed
                };
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => {
                return if stop.is_set() {
                    Pause::Stopped
                } else {
                    Pause::PeerClosed
                };
            }
        }
    }
}
