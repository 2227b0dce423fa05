//! HTTP/1.1 message framing (RFC 9112) shared by the mock upstream and the
//! test client.
//!
//! The reader parses from its own buffer and consumes bytes only once a whole
//! head or chunk is available. A read that times out therefore loses nothing,
//! and the caller can wait again for the same chunk.

use std::io::{self, Read};

/// Maximum size of a message head (start line plus header lines).
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Maximum size of a body that the mock or the client buffers.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Terminating chunk of a chunked body, with an empty trailer section.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

const MAX_CHUNK_LINE_BYTES: usize = 4096;
const MAX_TRAILER_BYTES: usize = 16 * 1024;
const READ_SIZE: usize = 16 * 1024;

/// Start line and header fields of a request or response.
#[derive(Debug)]
pub(crate) struct Head {
    pub start_line: String,
    /// Header fields in arrival order, names in their original case.
    pub headers: Vec<(String, String)>,
}

/// One decoded element of a chunked body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Chunk {
    Data(Vec<u8>),
    /// The zero-size chunk; its trailer section has been consumed.
    Last,
}

/// Buffered reader for HTTP/1.1 framing.
pub(crate) struct WireReader<R> {
    inner: R,
    buffer: Vec<u8>,
}

impl<R: Read> WireReader<R> {
    pub fn new(inner: R) -> Self {
        WireReader {
            inner,
            buffer: Vec::new(),
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Reads more bytes into the buffer and returns how many arrived (0 at
    /// end of stream). On error the buffered bytes stay in place.
    fn fill(&mut self) -> io::Result<usize> {
        let old_len = self.buffer.len();
        self.buffer.resize(old_len + READ_SIZE, 0);
        let result = loop {
            match self.inner.read(&mut self.buffer[old_len..]) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let count = *result.as_ref().unwrap_or(&0);
        self.buffer.truncate(old_len + count);
        result
    }

    fn consume(&mut self, count: usize) {
        self.buffer.drain(..count);
    }

    /// Reads the next message head. Returns `None` when the stream ends
    /// cleanly before the first byte of a head, which is how a keep-alive
    /// peer closes an idle connection.
    pub fn read_head(&mut self) -> io::Result<Option<Head>> {
        loop {
            // RFC 9112 section 2.2: a server should ignore empty lines
            // received before a request line.
            let leading = self
                .buffer
                .iter()
                .take_while(|byte| **byte == b'\r' || **byte == b'\n')
                .count();
            if leading > 0 {
                self.consume(leading);
            }
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let head = parse_head(&self.buffer[..end])?;
                self.consume(end + 4);
                return Ok(Some(head));
            }
            if self.buffer.len() > MAX_HEAD_BYTES {
                return Err(invalid_data(format!(
                    "message head is longer than {MAX_HEAD_BYTES} bytes"
                )));
            }
            if self.fill()? == 0 {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed after {} bytes of a message head",
                        self.buffer.len()
                    ),
                ));
            }
        }
    }

    /// Reads a body of exactly `length` bytes.
    pub fn read_exact_body(&mut self, length: usize) -> io::Result<Vec<u8>> {
        if length > MAX_BODY_BYTES {
            return Err(body_too_large(length));
        }
        while self.buffer.len() < length {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed after {} of {length} body bytes",
                        self.buffer.len()
                    ),
                ));
            }
        }
        Ok(self.buffer.drain(..length).collect())
    }

    /// Reads the next chunk of a chunked body. A stream that ends before the
    /// terminating chunk is an `UnexpectedEof` error.
    pub fn read_chunk(&mut self) -> io::Result<Chunk> {
        loop {
            if let Some((chunk, used)) = parse_chunk(&self.buffer)? {
                self.consume(used);
                return Ok(chunk);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the terminating chunk of a chunked body",
                ));
            }
        }
    }

    /// Reads and joins all chunks of a chunked body.
    pub fn read_chunked_body(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            match self.read_chunk()? {
                Chunk::Data(data) => {
                    if body.len() + data.len() > MAX_BODY_BYTES {
                        return Err(body_too_large(body.len() + data.len()));
                    }
                    body.extend_from_slice(&data);
                }
                Chunk::Last => return Ok(body),
            }
        }
    }

    /// Returns the buffered bytes, or the bytes of the next read if nothing
    /// is buffered. An empty result means end of stream.
    pub fn read_available(&mut self, max: usize) -> io::Result<Vec<u8>> {
        if self.buffer.is_empty() {
            self.fill()?;
        }
        let count = self.buffer.len().min(max);
        Ok(self.buffer.drain(..count).collect())
    }

    /// Reads until end of stream.
    pub fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {
            if self.buffer.len() > MAX_BODY_BYTES {
                return Err(body_too_large(self.buffer.len()));
            }
        }
        Ok(std::mem::take(&mut self.buffer))
    }
}

/// Parses the bytes of a head without its final empty line.
fn parse_head(bytes: &[u8]) -> io::Result<Head> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n");
    let start_line = lines.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for line in lines {
        // RFC 9112 section 5.2: obsolete line folding is rejected.
        if line.starts_with([' ', '\t']) {
            return Err(invalid_data(format!(
                "header line {line:?} uses obsolete line folding"
            )));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid_data(format!("header line {line:?} has no colon")));
        };
        if name.is_empty() || name.contains(|c: char| c.is_ascii_whitespace()) {
            return Err(invalid_data(format!(
                "header line {line:?} has an invalid field name"
            )));
        }
        let value = value.trim_matches([' ', '\t']);
        headers.push((name.to_string(), value.to_string()));
    }
    Ok(Head {
        start_line,
        headers,
    })
}

/// Parses one chunk from the start of `buffer`. Returns the chunk and the
/// number of bytes it spans, or `None` if the buffer holds only part of it.
fn parse_chunk(buffer: &[u8]) -> io::Result<Option<(Chunk, usize)>> {
    let Some(line_end) = find(buffer, b"\r\n") else {
        if buffer.len() > MAX_CHUNK_LINE_BYTES {
            return Err(invalid_data(format!(
                "chunk size line is longer than {MAX_CHUNK_LINE_BYTES} bytes"
            )));
        }
        return Ok(None);
    };
    let size = parse_chunk_size(&buffer[..line_end])?;
    let data_start = line_end + 2;

    if size == 0 {
        // The trailer section is a list of field lines ending in an empty line.
        let mut position = data_start;
        loop {
            let Some(relative_end) = find(&buffer[position..], b"\r\n") else {
                if buffer.len() - data_start > MAX_TRAILER_BYTES {
                    return Err(invalid_data(format!(
                        "chunked trailer section is longer than {MAX_TRAILER_BYTES} bytes"
                    )));
                }
                return Ok(None);
            };
            if relative_end == 0 {
                return Ok(Some((Chunk::Last, position + 2)));
            }
            position += relative_end + 2;
        }
    }

    if size > MAX_BODY_BYTES {
        return Err(body_too_large(size));
    }
    let data_end = data_start + size;
    if buffer.len() < data_end + 2 {
        return Ok(None);
    }
    if &buffer[data_end..data_end + 2] != b"\r\n" {
        return Err(invalid_data(format!(
            "chunk data of {size} bytes is not followed by CRLF"
        )));
    }
    let data = buffer[data_start..data_end].to_vec();
    Ok(Some((Chunk::Data(data), data_end + 2)))
}

/// Parses a chunk size line, ignoring chunk extensions after `;`.
fn parse_chunk_size(line: &[u8]) -> io::Result<usize> {
    let text = String::from_utf8_lossy(line);
    let digits = text.split(';').next().unwrap_or_default().trim();
    let valid = !digits.is_empty()
        && digits.len() <= 15
        && digits.bytes().all(|byte| byte.is_ascii_hexdigit());
    if !valid {
        return Err(invalid_data(format!("invalid chunk size line {text:?}")));
    }
    usize::from_str_radix(digits, 16)
        .map_err(|err| invalid_data(format!("invalid chunk size line {text:?}: {err}")))
}

/// Encodes `data` as one chunk of a chunked body. Empty data would be the
/// terminating chunk, so callers skip it.
pub(crate) fn encode_chunk(data: &[u8]) -> Vec<u8> {
    let mut frame = format!("{:x}\r\n", data.len()).into_bytes();
    frame.extend_from_slice(data);
    frame.extend_from_slice(b"\r\n");
    frame
}

/// Returns the value of the first header named `name`, compared
/// case-insensitively.
pub(crate) fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// Returns the values of all headers named `name`, in arrival order.
pub(crate) fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
        .collect()
}

/// Returns whether the comma-separated lists in all `name` headers contain
/// `token`, as in `Connection: keep-alive, close`.
pub(crate) fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    header_values(headers, name)
        .iter()
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// Returns whether the body is chunked: RFC 9112 section 6.3 makes chunked
/// the final transfer coding whenever it is present at all.
pub(crate) fn is_chunked(headers: &[(String, String)]) -> bool {
    has_token(headers, "transfer-encoding", "chunked")
}

/// Returns the `Content-Length`, rejecting invalid or conflicting values.
pub(crate) fn content_length(headers: &[(String, String)]) -> io::Result<Option<usize>> {
    let mut length = None;
    for value in header_values(headers, "content-length") {
        for item in value.split(',') {
            let item = item.trim();
            let parsed: usize = item
                .parse()
                .map_err(|_| invalid_data(format!("invalid Content-Length {value:?}")))?;
            if length.is_some_and(|previous| previous != parsed) {
                return Err(invalid_data(format!(
                    "conflicting Content-Length values in {value:?}"
                )));
            }
            length = Some(parsed);
        }
    }
    Ok(length)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

pub(crate) fn invalid_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Error payload that marks a body over [`MAX_BODY_BYTES`], so that the mock
/// can reply 413 rather than 400.
#[derive(Debug)]
struct BodyTooLarge(String);

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for BodyTooLarge {}

fn body_too_large(length: usize) -> io::Error {
    let message = format!("body of {length} bytes exceeds the limit of {MAX_BODY_BYTES} bytes");
    io::Error::new(io::ErrorKind::InvalidData, BodyTooLarge(message))
}

/// Returns whether `err` reports a body over [`MAX_BODY_BYTES`].
pub(crate) fn is_body_too_large(err: &io::Error) -> bool {
    err.get_ref()
        .is_some_and(|inner| inner.is::<BodyTooLarge>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> WireReader<&[u8]> {
        WireReader::new(bytes)
    }

    #[test]
    fn head_keeps_order_and_case() {
        let mut wire = reader(b"\r\nGET /x?y=1 HTTP/1.1\r\nX-One: a\r\nhost:  h \r\n\r\n");
        let head = wire.read_head().unwrap().unwrap();
        assert_eq!(head.start_line, "GET /x?y=1 HTTP/1.1");
        assert_eq!(
            head.headers,
            vec![
                ("X-One".to_string(), "a".to_string()),
                ("host".to_string(), "h".to_string())
            ]
        );
    }

    #[test]
    fn head_clean_eof_is_none() {
        assert!(reader(b"").read_head().unwrap().is_none());
    }

    #[test]
    fn head_partial_eof_is_error() {
        let err = reader(b"GET / HTTP/1.1\r\n").read_head().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn head_rejects_folding_and_bad_names() {
        let folded = reader(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n").read_head();
        assert_eq!(folded.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let spaced = reader(b"GET / HTTP/1.1\r\nA b: c\r\n\r\n").read_head();
        assert_eq!(spaced.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let mut wire = reader(b"3;ext=1\r\nabc\r\n1\r\nd\r\n0\r\nTrailer: x\r\n\r\nrest");
        assert_eq!(wire.read_chunked_body().unwrap(), b"abcd");
        assert_eq!(wire.read_to_end().unwrap(), b"rest");
    }

    #[test]
    fn chunked_body_cut_is_unexpected_eof() {
        let err = reader(b"3\r\nabc\r\n").read_chunked_body().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn chunk_without_crlf_is_invalid() {
        let err = reader(b"3\r\nabcX\r\n0\r\n\r\n").read_chunk().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn chunk_size_must_be_hex() {
        let err = reader(b"zz\r\n").read_chunk().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn encode_chunk_round_trips() {
        let mut bytes = encode_chunk(b"hello world, a longer chunk");
        bytes.extend_from_slice(LAST_CHUNK);
        let mut wire = WireReader::new(bytes.as_slice());
        assert_eq!(
            wire.read_chunk().unwrap(),
            Chunk::Data(b"hello world, a longer chunk".to_vec())
        );
        assert_eq!(wire.read_chunk().unwrap(), Chunk::Last);
    }

    #[test]
    fn content_length_conflicts_rejected() {
        let same = vec![
            ("Content-Length".to_string(), "5".to_string()),
            ("content-length".to_string(), "5".to_string()),
        ];
        assert_eq!(content_length(&same).unwrap(), Some(5));
        let conflicting = vec![("Content-Length".to_string(), "5, 6".to_string())];
        assert!(content_length(&conflicting).is_err());
        let invalid = vec![("Content-Length".to_string(), "-1".to_string())];
        assert!(content_length(&invalid).is_err());
    }

    #[test]
    fn tokens_match_across_lines() {
        let headers = vec![
            ("Transfer-Encoding".to_string(), "gzip".to_string()),
            ("transfer-encoding".to_string(), "Chunked".to_string()),
        ];
        assert!(is_chunked(&headers));
        assert!(!has_token(&headers, "connection", "close"));
    }
}
