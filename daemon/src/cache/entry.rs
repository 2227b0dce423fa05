//! Cached responses and their byte layout as sled values.
//!
//! A value is `[u8 format version = 1][u32 big-endian metadata length][metadata JSON][body]`.
//! The metadata JSON is [`EntryMetadata`], and the body is the response bytes exactly as sent
//! to the client. Tests pin this layout with a literal, so values written by this release stay
//! readable by later ones.

use bytes::Bytes;
use cco_proto::TokenCounts;
use serde::{Deserialize, Serialize};

use super::CacheError;

/// Version byte that starts every stored value.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes before the metadata JSON: the version byte and the metadata length.
const HEADER_LEN: usize = 1 + 4;

/// One upstream response as replayed on a cache hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedResponse {
    pub status: u16,
    /// Response headers to replay, such as `content-type` and `request-id`.
    pub headers: Vec<(String, String)>,
    /// The exact bytes sent to the client: a JSON document or the full SSE stream.
    pub body: Bytes,
    pub is_stream: bool,
    /// Model id as priced.
    pub model: Option<String>,
    /// Usage of the original response.
    pub tokens: TokenCounts,
    /// Web searches the original response was billed for.
    pub web_search_requests: u64,
    /// Price of the original response in nano-US-dollars, or `None` when the model has no
    /// price.
    pub cost_nano_usd: Option<u64>,
    /// Time the original response was received, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

/// Every field of [`CachedResponse`] except the body, as stored in the metadata JSON.
///
/// Field names and order are part of the stored format. Unknown fields are ignored, so a
/// later release may add fields without breaking this one.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EntryMetadata {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub is_stream: bool,
    #[serde(default)]
    pub model: Option<String>,
    pub tokens: TokenCounts,
    #[serde(default)]
    pub cost_nano_usd: Option<u64>,
    pub created_unix_ms: u64,
    /// Written only when nonzero, so entries without searches keep the first layout.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub web_search_requests: u64,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// Reason a stored value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("value is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    Truncated { len: usize },
    #[error("unsupported format version {0}; this release reads version {FORMAT_VERSION}")]
    UnsupportedVersion(u8),
    #[error("metadata length {declared} exceeds the {available} bytes after the header")]
    MetadataLength { declared: usize, available: usize },
    #[error("invalid metadata JSON: {0}")]
    Metadata(#[from] serde_json::Error),
}

impl CachedResponse {
    /// Encodes the response as a stored value.
    pub fn encode(&self) -> Result<Vec<u8>, CacheError> {
        let metadata = EntryMetadata {
            status: self.status,
            headers: self.headers.clone(),
            is_stream: self.is_stream,
            model: self.model.clone(),
            tokens: self.tokens,
            cost_nano_usd: self.cost_nano_usd,
            created_unix_ms: self.created_unix_ms,
            web_search_requests: self.web_search_requests,
        };
        let json = serde_json::to_vec(&metadata).map_err(CacheError::Encode)?;
        let json_len = u32::try_from(json.len())
            .map_err(|_| CacheError::MetadataTooLarge { len: json.len() })?;

        let mut value = Vec::with_capacity(HEADER_LEN + json.len() + self.body.len());
        value.push(FORMAT_VERSION);
        value.extend_from_slice(&json_len.to_be_bytes());
        value.extend_from_slice(&json);
        value.extend_from_slice(&self.body);
        Ok(value)
    }

    /// Decodes a stored value. The body shares `value`'s buffer instead of copying it.
    pub fn decode(value: Bytes) -> Result<CachedResponse, DecodeError> {
        let (metadata, body_offset) = decode_metadata(&value)?;
        Ok(CachedResponse {
            status: metadata.status,
            headers: metadata.headers,
            body: value.slice(body_offset..),
            is_stream: metadata.is_stream,
            model: metadata.model,
            tokens: metadata.tokens,
            web_search_requests: metadata.web_search_requests,
            cost_nano_usd: metadata.cost_nano_usd,
            created_unix_ms: metadata.created_unix_ms,
        })
    }
}

/// Decodes the header and metadata of a stored value, returning the metadata and the offset
/// at which the body starts.
pub(crate) fn decode_metadata(value: &[u8]) -> Result<(EntryMetadata, usize), DecodeError> {
    if value.len() < HEADER_LEN {
        return Err(DecodeError::Truncated { len: value.len() });
    }
    if value[0] != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(value[0]));
    }

    let length_bytes: [u8; 4] = value[1..HEADER_LEN]
        .try_into()
        .expect("slice is exactly 4 bytes");
    let declared = u32::from_be_bytes(length_bytes) as usize;
    let available = value.len() - HEADER_LEN;
    if declared > available {
        return Err(DecodeError::MetadataLength {
            declared,
            available,
        });
    }

    let body_offset = HEADER_LEN + declared;
    let metadata = serde_json::from_slice(&value[HEADER_LEN..body_offset])?;
    Ok((metadata, body_offset))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a response with every field set, for the format fixtures.
    pub(crate) fn fixture_response() -> CachedResponse {
        CachedResponse {
            status: 200,
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("request-id".to_owned(), "req_1".to_owned()),
            ],
            body: Bytes::from_static(br#"{"id":"msg_1"}"#),
            is_stream: false,
            model: Some("claude-sonnet-4-5".to_owned()),
            tokens: TokenCounts {
                input: 10,
                output: 20,
                cache_write_5m: 3,
                cache_write_1h: 4,
                cache_read: 5,
            },
            web_search_requests: 0,
            cost_nano_usd: Some(330_000),
            created_unix_ms: 1_700_000_000_000,
        }
    }

    /// Stored value of [`fixture_response`] in format version 1. Releases must keep
    /// decoding these bytes.
    pub(crate) const FIXTURE_V1: &[u8] = b"\x01\x00\x00\x01\x11\
{\"status\":200,\
\"headers\":[[\"content-type\",\"application/json\"],[\"request-id\",\"req_1\"]],\
\"is_stream\":false,\
\"model\":\"claude-sonnet-4-5\",\
\"tokens\":{\"input\":10,\"output\":20,\"cache_write_5m\":3,\"cache_write_1h\":4,\"cache_read\":5},\
\"cost_nano_usd\":330000,\
\"created_unix_ms\":1700000000000}\
{\"id\":\"msg_1\"}";

    #[test]
    fn encode_matches_fixture() {
        let encoded = fixture_response().encode().unwrap();
        assert_eq!(
            encoded,
            FIXTURE_V1,
            "encoded: {:?}",
            String::from_utf8_lossy(&encoded)
        );
    }

    #[test]
    fn decode_reads_fixture() {
        let decoded = CachedResponse::decode(Bytes::from_static(FIXTURE_V1)).unwrap();
        assert_eq!(decoded, fixture_response());
    }

    #[test]
    fn decode_round_trips_stream_without_price() {
        let response = CachedResponse {
            body: Bytes::from_static(b"event: message_start\ndata: {}\n\n"),
            is_stream: true,
            model: None,
            cost_nano_usd: None,
            headers: Vec::new(),
            ..fixture_response()
        };
        let encoded = Bytes::from(response.encode().unwrap());
        assert_eq!(CachedResponse::decode(encoded).unwrap(), response);
    }

    #[test]
    fn web_searches_round_trip() {
        let response = CachedResponse {
            web_search_requests: 3,
            ..fixture_response()
        };
        let encoded = response.encode().unwrap();
        let text = String::from_utf8_lossy(&encoded);
        assert!(text.contains(r#""web_search_requests":3"#), "{text}");
        let decoded = CachedResponse::decode(Bytes::from(encoded)).unwrap();
        assert_eq!(decoded.web_search_requests, 3);
    }

    #[test]
    fn decode_accepts_empty_body() {
        let response = CachedResponse {
            body: Bytes::new(),
            ..fixture_response()
        };
        let encoded = Bytes::from(response.encode().unwrap());
        assert_eq!(CachedResponse::decode(encoded).unwrap().body, Bytes::new());
    }

    #[test]
    fn decode_rejects_short_value() {
        let error = CachedResponse::decode(Bytes::from_static(b"\x01\x00\x00")).unwrap_err();
        assert!(
            matches!(error, DecodeError::Truncated { len: 3 }),
            "{error}"
        );
    }

    #[test]
    fn decode_rejects_other_version() {
        let mut value = FIXTURE_V1.to_vec();
        value[0] = 2;
        let error = CachedResponse::decode(Bytes::from(value)).unwrap_err();
        assert!(
            matches!(error, DecodeError::UnsupportedVersion(2)),
            "{error}"
        );
    }

    #[test]
    fn decode_rejects_overlong_metadata_length() {
        let error =
            CachedResponse::decode(Bytes::from_static(b"\x01\x00\x00\x00\x09{}")).unwrap_err();
        assert!(
            matches!(
                error,
                DecodeError::MetadataLength {
                    declared: 9,
                    available: 2
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn decode_rejects_invalid_metadata() {
        let error =
            CachedResponse::decode(Bytes::from_static(b"\x01\x00\x00\x00\x02{}body")).unwrap_err();
        assert!(matches!(error, DecodeError::Metadata(_)), "{error}");
    }
}
