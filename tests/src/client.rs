//! Raw HTTP/1.1 client for tests, re-exported as `cco_tests::http`.
//!
//! It sends exactly the bytes a test requests and decodes responses without
//! hiding framing problems: a chunked body that ends before its terminating
//! chunk is an `UnexpectedEof` error. Every read has a deadline, so no test
//! can hang on a silent server. It connects only to loopback addresses.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::wire::{self, Chunk, WireReader};

/// Deadline for connecting and for reading a whole response in [`send`], and
/// for connecting and reading the head in [`open_stream`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Maximum bytes [`StreamingResponse::next_chunk`] returns at once from a
/// body that is not chunked.
const MAX_READ_PIECE: usize = 64 * 1024;

/// A complete response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header fields in arrival order, names in their original case.
    pub headers: Vec<(String, String)>,
    /// Body after removing any chunked framing.
    pub body: Vec<u8>,
    /// Whether the body arrived with `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

impl HttpResponse {
    /// Returns the first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        wire::header_value(&self.headers, name)
    }

    /// Returns all values of header `name`, in arrival order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        wire::header_values(&self.headers, name)
    }

    /// Parses the body as JSON.
    ///
    /// # Panics
    /// When the body is not valid JSON; the message shows status and body.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "response body (status {}) is not valid JSON ({err}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Returns the body as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request with `Connection: close` and reads the whole response
/// within [`DEFAULT_TIMEOUT`]. See [`send_with_timeout`].
pub fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    send_with_timeout(addr, method, path, headers, body, DEFAULT_TIMEOUT)
}

/// Sends one request and reads the whole response before `timeout` runs
/// out, or fails with `TimedOut`.
///
/// The client adds `Host`, `Content-Length` and `Connection: close` unless
/// `headers` has them. When `headers` has `Transfer-Encoding`, `body` goes
/// out as given, so it must already be encoded (see [`encode_chunked`]).
pub fn send_with_timeout(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let mut response = open_stream_with_timeout(addr, method, path, headers, body, timeout)?;
    let remaining = response.reader.get_mut().remaining();
    let body = response.read_to_end(remaining)?;
    Ok(HttpResponse {
        status: response.status,
        headers: response.headers,
        body,
        chunked: response.chunked,
    })
}

/// Sends one request and returns once the response head arrived, within
/// [`DEFAULT_TIMEOUT`]. The body is then read piece by piece with
/// [`StreamingResponse::next_chunk`]; dropping the response closes the
/// connection mid-stream.
pub fn open_stream(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<StreamingResponse> {
    open_stream_with_timeout(addr, method, path, headers, body, DEFAULT_TIMEOUT)
}

/// Like [`open_stream`], with a deadline of `timeout` for connecting and
/// reading the head.
pub fn open_stream_with_timeout(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<StreamingResponse> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect(addr, timeout)?;
    stream.write_all(&encode_request(addr, method, path, headers, body))?;
    stream.flush()?;

    let mut reader = WireReader::new(DeadlineStream { stream, deadline });
    let head = loop {
        let Some(head) = reader.read_head()? else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{addr} closed the connection without sending a response"),
            ));
        };
        let status = parse_status_line(&head.start_line)?;
        // Interim 1xx responses, such as 100 Continue, precede the real one.
        if !(100..200).contains(&status) {
            break (status, head.headers);
        }
    };
    let (status, headers) = head;

    // RFC 9112 section 6.3 decides how the body is framed.
    let chunked = wire::is_chunked(&headers);
    let framing = if method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(length) = wire::content_length(&headers)? {
        Framing::Length { remaining: length }
    } else {
        Framing::UntilEof
    };
    Ok(StreamingResponse {
        status,
        headers,
        chunked,
        framing,
        reader,
    })
}

/// Writes `bytes` as they are and reads until the server closes the
/// connection or `timeout` runs out. Use it for malformed requests and for
/// several requests on one connection.
pub fn send_raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect(addr, timeout)?;
    stream.write_all(bytes)?;
    stream.flush()?;
    WireReader::new(DeadlineStream { stream, deadline }).read_to_end()
}

/// Encodes `pieces` as a chunked body with its terminating chunk. Empty
/// pieces are skipped because an empty chunk would end the body.
pub fn encode_chunked(pieces: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for piece in pieces.iter().filter(|piece| !piece.is_empty()) {
        body.extend_from_slice(&wire::encode_chunk(piece));
    }
    body.extend_from_slice(wire::LAST_CHUNK);
    body
}

/// A response whose body is read as it arrives.
pub struct StreamingResponse {
    pub status: u16,
    /// Header fields in arrival order, names in their original case.
    pub headers: Vec<(String, String)>,
    /// Whether the body arrives with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    framing: Framing,
    reader: WireReader<DeadlineStream>,
}

enum Framing {
    Chunked,
    Length { remaining: usize },
    UntilEof,
    Empty,
    Finished,
}

impl StreamingResponse {
    /// Returns the first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        wire::header_value(&self.headers, name)
    }

    /// Waits up to `timeout` for the next piece of the body and returns it
    /// with the time it was complete. For a chunked body a piece is one
    /// decoded chunk, exactly as the server framed it; otherwise it is
    /// whatever one read returned. Returns `None` once the body is complete.
    ///
    /// Errors: `TimedOut` when nothing complete arrived in time (the partial
    /// bytes are kept, so calling again continues), `UnexpectedEof` when the
    /// connection closed before the body was complete.
    pub fn next_chunk(&mut self, timeout: Duration) -> io::Result<Option<(Instant, Vec<u8>)>> {
        self.reader.get_mut().deadline = Instant::now() + timeout;
        match self.framing {
            Framing::Chunked => match self.reader.read_chunk()? {
                Chunk::Data(data) => Ok(Some((Instant::now(), data))),
                Chunk::Last => {
                    self.framing = Framing::Finished;
                    Ok(None)
                }
            },
            Framing::Length { remaining } => {
                if remaining == 0 {
                    self.framing = Framing::Finished;
                    return Ok(None);
                }
                let piece = self.reader.read_available(remaining.min(MAX_READ_PIECE))?;
                if piece.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection closed with {remaining} body bytes missing"),
                    ));
                }
                self.framing = Framing::Length {
                    remaining: remaining - piece.len(),
                };
                Ok(Some((Instant::now(), piece)))
            }
            Framing::UntilEof => {
                let piece = self.reader.read_available(MAX_READ_PIECE)?;
                if piece.is_empty() {
                    self.framing = Framing::Finished;
                    return Ok(None);
                }
                Ok(Some((Instant::now(), piece)))
            }
            Framing::Empty | Framing::Finished => {
                self.framing = Framing::Finished;
                Ok(None)
            }
        }
    }

    /// Reads the rest of the body within `timeout` and returns it joined.
    pub fn read_to_end(&mut self, timeout: Duration) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut body = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.next_chunk(remaining)? {
                Some((_, piece)) => body.extend_from_slice(&piece),
                None => return Ok(body),
            }
        }
    }

    /// Closes the connection at once, as a client that gives up mid-stream.
    /// Dropping the response does the same.
    pub fn close(mut self) {
        let _ = self.reader.get_mut().stream.shutdown(Shutdown::Both);
    }
}

/// A socket whose reads fail with `TimedOut` once `deadline` passes.
struct DeadlineStream {
    stream: TcpStream,
    deadline: Instant,
}

impl DeadlineStream {
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let remaining = self.remaining();
        if remaining.is_zero() {
            return Err(timed_out());
        }
        self.stream.set_read_timeout(Some(remaining))?;
        match self.stream.read(buffer) {
            // On Unix an expired SO_RCVTIMEO reports EAGAIN.
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Err(timed_out()),
            other => other,
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the server")
}

fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    if !addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the test client connects only to loopback addresses, not {addr}"),
        ));
    }
    let stream = TcpStream::connect_timeout(&addr, timeout.max(Duration::from_millis(1)))?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    Ok(stream)
}

fn encode_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let has = |name: &str| {
        headers
            .iter()
            .any(|(key, _)| key.eq_ignore_ascii_case(name))
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let sends_body = !body.is_empty() || ["POST", "PUT", "PATCH"].contains(&method);
    if sends_body && !has("content-length") && !has("transfer-encoding") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn parse_status_line(line: &str) -> io::Result<u16> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().unwrap_or_default();
    let valid = version.starts_with("HTTP/1.") && status.len() == 3;
    match status.parse::<u16>() {
        Ok(code) if valid => Ok(code),
        _ => Err(wire::invalid_data(format!("invalid status line {line:?}"))),
    }
}
