//! Builders for OpenAI Chat Completions bodies: completions, server-sent event streams and
//! errors, in the shapes the API reference documents.
//!
//! A stream is a sequence of `data: CHUNK\n\n` events ending with `data: [DONE]\n\n`, with no
//! `event:` lines. With `stream_options.include_usage` the client gets one more chunk before
//! `[DONE]`, with empty `choices` and the request's `usage`, and every other chunk carries
//! `"usage": null`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use crate::anthropic::{object, string};

/// The event that ends every Chat Completions stream.
pub const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// `created` of the bodies built here, a fixed time so that bodies compare equal.
const CREATED: u64 = 1_764_806_400;

static NEXT_COMPLETION_NUMBER: AtomicU64 = AtomicU64::new(1);

/// Returns a completion id that is unique within the process, such as
/// `chatcmpl-mock000042`, so that a test can tell a fresh upstream reply from a replayed
/// one.
pub fn next_completion_id() -> String {
    let number = NEXT_COMPLETION_NUMBER.fetch_add(1, Ordering::Relaxed);
    format!("chatcmpl-mock{number:06}")
}

/// Returns a `usage` object with the given prompt and completion tokens and no cached
/// tokens.
pub fn usage(prompt_tokens: u64, completion_tokens: u64) -> Value {
    usage_with_cached(prompt_tokens, completion_tokens, 0)
}

/// Returns a `usage` object whose `prompt_tokens` include `cached_tokens` prompt-cache
/// hits, as the API counts them.
pub fn usage_with_cached(prompt_tokens: u64, completion_tokens: u64, cached_tokens: u64) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    })
}

/// Builds a non-streaming completion body with one choice, `finish_reason` `stop` and a
/// fresh id from [`next_completion_id`].
pub fn chat_completion_json(model: &str, text: &str, usage: Value) -> Vec<u8> {
    chat_completion_json_with(&next_completion_id(), model, text, "stop", &usage)
}

/// Builds a non-streaming completion body with one choice and the given id and finish
/// reason.
pub fn chat_completion_json_with(
    id: &str,
    model: &str,
    text: &str,
    finish_reason: &str,
    usage: &Value,
) -> Vec<u8> {
    let message = object(&[
        ("role", string("assistant")),
        ("content", string(text)),
        ("refusal", "null".to_owned()),
    ]);
    let choice = object(&[
        ("index", "0".to_owned()),
        ("message", message),
        ("logprobs", "null".to_owned()),
        ("finish_reason", string(finish_reason)),
    ]);
    object(&[
        ("id", string(id)),
        ("object", string("chat.completion")),
        ("created", CREATED.to_string()),
        ("model", string(model)),
        ("choices", format!("[{choice}]")),
        ("usage", usage.to_string()),
        ("system_fingerprint", string("fp_mock")),
    ])
    .into_bytes()
}

/// Builds the events of a streaming completion, one byte vector per event, with a fresh id.
/// See [`chat_chunks_with`].
pub fn chat_chunks(model: &str, text_pieces: &[&str], usage: Option<&Value>) -> Vec<Vec<u8>> {
    chat_chunks_with(&next_completion_id(), model, text_pieces, "stop", usage)
}

/// Builds the events of a streaming completion: a chunk with the assistant role, one chunk
/// per text piece, a chunk with `finish_reason`, then, when `usage` is given, the usage
/// chunk that `stream_options.include_usage` requests, and finally `data: [DONE]`.
pub fn chat_chunks_with(
    id: &str,
    model: &str,
    text_pieces: &[&str],
    finish_reason: &str,
    usage: Option<&Value>,
) -> Vec<Vec<u8>> {
    let chunk = |delta: String, finish: String| {
        let choice = object(&[
            ("index", "0".to_owned()),
            ("delta", delta),
            ("logprobs", "null".to_owned()),
            ("finish_reason", finish),
        ]);
        chunk_object(id, model, format!("[{choice}]"), usage.map(|_| "null"))
    };
    let mut events = vec![chunk(
        object(&[("role", string("assistant")), ("content", string(""))]),
        "null".to_owned(),
    )];
    for piece in text_pieces {
        events.push(chunk(
            object(&[("content", string(piece))]),
            "null".to_owned(),
        ));
    }
    events.push(chunk("{}".to_owned(), string(finish_reason)));
    if let Some(usage) = usage {
        let text = usage.to_string();
        events.push(chunk_object(id, model, "[]".to_owned(), Some(&text)));
    }
    events.push(DONE_EVENT.to_vec());
    events
}

/// Formats one chunk event. `usage` is the JSON text of its `usage` field, or `None` to
/// leave the field out as the API does without `include_usage`.
fn chunk_object(id: &str, model: &str, choices: String, usage: Option<&str>) -> Vec<u8> {
    let mut fields = vec![
        ("id", string(id)),
        ("object", string("chat.completion.chunk")),
        ("created", CREATED.to_string()),
        ("model", string(model)),
        ("system_fingerprint", string("fp_mock")),
        ("choices", choices),
    ];
    if let Some(usage) = usage {
        fields.push(("usage", usage.to_owned()));
    }
    format!("data: {}\n\n", object(&fields)).into_bytes()
}

/// Builds an error body in the OpenAI format,
/// `{"error":{"message":MESSAGE,"type":KIND,"param":null,"code":null}}`.
pub fn error_json(kind: &str, message: &str) -> Vec<u8> {
    let error = object(&[
        ("message", string(message)),
        ("type", string(kind)),
        ("param", "null".to_owned()),
        ("code", "null".to_owned()),
    ]);
    object(&[("error", error)]).into_bytes()
}

/// Returns the `data:` payload of each event of a stream, `[DONE]` included, in order.
///
/// # Panics
/// When the body is not UTF-8.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body)
        .unwrap_or_else(|err| panic!("SSE body is not UTF-8: {err}"))
        .replace("\r\n", "\n");
    text.split("\n\n")
        .filter_map(|block| {
            let lines: Vec<&str> = block
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|value| value.strip_prefix(' ').unwrap_or(value))
                .collect();
            (!lines.is_empty()).then(|| lines.join("\n"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_with_usage_ends_with_usage_then_done() {
        let events = chat_chunks("gpt-4o-mini", &["Hi", " there"], Some(&usage(9, 2)));
        let data = sse_data(&events.concat());
        assert_eq!(data.len(), 6);
        assert_eq!(data[5], "[DONE]");
        let usage_chunk: Value = serde_json::from_str(&data[4]).unwrap();
        assert_eq!(usage_chunk["choices"], json!([]));
        assert_eq!(usage_chunk["usage"]["prompt_tokens"], 9);
        let first: Value = serde_json::from_str(&data[0]).unwrap();
        assert_eq!(first["usage"], Value::Null);
        assert!(first.get("usage").is_some(), "usage: null is present");
        let last_text: Value = serde_json::from_str(&data[2]).unwrap();
        assert_eq!(last_text["choices"][0]["delta"]["content"], " there");
    }

    #[test]
    fn stream_without_usage_has_no_usage_field() {
        let events = chat_chunks("gpt-4o-mini", &["Hi"], None);
        let data = sse_data(&events.concat());
        assert_eq!(data.len(), 4);
        assert_eq!(data[3], "[DONE]");
        for chunk in &data[..3] {
            let chunk: Value = serde_json::from_str(chunk).unwrap();
            assert!(chunk.get("usage").is_none(), "{chunk}");
        }
    }

    #[test]
    fn completion_json_keeps_api_order() {
        let body = chat_completion_json_with("chatcmpl-1", "gpt-4o", "ok", "stop", &usage(1, 1));
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.starts_with(r#"{"id":"chatcmpl-1","object":"chat.completion","created":"#),
            "{text}"
        );
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["choices"][0]["message"]["content"], "ok");
        assert_eq!(value["usage"]["total_tokens"], 2);
    }
}
