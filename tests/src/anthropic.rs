//! Builders for Anthropic Messages API bodies: messages, server-sent event
//! streams and errors, in the shapes the API reference documents.
//!
//! Tests use them to script exact token usages into mock replies.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

static NEXT_MESSAGE_NUMBER: AtomicU64 = AtomicU64::new(1);

/// Returns a message id that is unique within the process, such as
/// `msg_mock_000042`, so that a test can tell a fresh upstream reply from a
/// replayed one.
pub fn next_message_id() -> String {
    let number = NEXT_MESSAGE_NUMBER.fetch_add(1, Ordering::Relaxed);
    format!("msg_mock_{number:06}")
}

/// Returns a `usage` object with the given input and output tokens and no
/// prompt caching.
pub fn usage(input_tokens: u64, output_tokens: u64) -> Value {
    usage_with_cache(input_tokens, output_tokens, 0, 0)
}

/// Returns a `usage` object including prompt-cache writes and reads.
pub fn usage_with_cache(
    input_tokens: u64,
    output_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
) -> Value {
    json!({
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_creation_input_tokens,
        "cache_read_input_tokens": cache_read_input_tokens,
    })
}

/// Builds a non-streaming Messages API response body with one text block,
/// `stop_reason` `end_turn` and a fresh id from [`next_message_id`].
pub fn message_json(model: &str, text: &str, usage: Value) -> Vec<u8> {
    message_json_with(&next_message_id(), model, text, "end_turn", &usage)
}

/// Builds a non-streaming Messages API response body with one text block and
/// the given id and stop reason.
pub fn message_json_with(
    id: &str,
    model: &str,
    text: &str,
    stop_reason: &str,
    usage: &Value,
) -> Vec<u8> {
    let content = format!(
        "[{}]",
        object(&[("type", string("text")), ("text", string(text))])
    );
    message_object(id, model, content, string(stop_reason), usage).into_bytes()
}

fn message_object(
    id: &str,
    model: &str,
    content: String,
    stop_reason: String,
    usage: &Value,
) -> String {
    object(&[
        ("id", string(id)),
        ("type", string("message")),
        ("role", string("assistant")),
        ("model", string(model)),
        ("content", content),
        ("stop_reason", stop_reason),
        ("stop_sequence", "null".to_string()),
        ("usage", usage.to_string()),
    ])
}

/// Builds a whole streaming response body: the events of [`sse_events`]
/// joined in order.
pub fn sse_stream(
    model: &str,
    text_pieces: &[&str],
    start_usage: Value,
    final_usage: Value,
) -> Vec<u8> {
    sse_events(model, text_pieces, start_usage, final_usage).concat()
}

/// Builds the events of a streaming response, one byte vector per event, so
/// that each event can go out in its own write.
///
/// The sequence is `message_start` (carrying `start_usage`),
/// `content_block_start`, `ping`, one `content_block_delta` per text piece,
/// `content_block_stop`, `message_delta` (carrying `final_usage` and
/// `stop_reason` `end_turn`) and `message_stop`. In the real API the
/// `message_delta` usage is cumulative, so `final_usage.output_tokens` is the
/// total for the message.
pub fn sse_events(
    model: &str,
    text_pieces: &[&str],
    start_usage: Value,
    final_usage: Value,
) -> Vec<Vec<u8>> {
    stream_events(
        &next_message_id(),
        model,
        text_pieces,
        "end_turn",
        &start_usage,
        &final_usage,
    )
}

/// Builds the events of a streaming response with a given id and stop reason.
pub fn stream_events(
    id: &str,
    model: &str,
    text_pieces: &[&str],
    stop_reason: &str,
    start_usage: &Value,
    final_usage: &Value,
) -> Vec<Vec<u8>> {
    let start_message =
        message_object(id, model, "[]".to_string(), "null".to_string(), start_usage);
    let text_block = object(&[("type", string("text")), ("text", string(""))]);

    let mut events = vec![
        event_bytes(
            "message_start",
            &object(&[
                ("type", string("message_start")),
                ("message", start_message),
            ]),
        ),
        event_bytes(
            "content_block_start",
            &object(&[
                ("type", string("content_block_start")),
                ("index", "0".to_string()),
                ("content_block", text_block),
            ]),
        ),
        event_bytes("ping", &object(&[("type", string("ping"))])),
    ];
    for piece in text_pieces {
        let delta = object(&[("type", string("text_delta")), ("text", string(piece))]);
        events.push(event_bytes(
            "content_block_delta",
            &object(&[
                ("type", string("content_block_delta")),
                ("index", "0".to_string()),
                ("delta", delta),
            ]),
        ));
    }
    events.push(event_bytes(
        "content_block_stop",
        &object(&[
            ("type", string("content_block_stop")),
            ("index", "0".to_string()),
        ]),
    ));
    let message_delta = object(&[
        ("stop_reason", string(stop_reason)),
        ("stop_sequence", "null".to_string()),
    ]);
    events.push(event_bytes(
        "message_delta",
        &object(&[
            ("type", string("message_delta")),
            ("delta", message_delta),
            ("usage", final_usage.to_string()),
        ]),
    ));
    events.push(event_bytes(
        "message_stop",
        &object(&[("type", string("message_stop"))]),
    ));
    events
}

/// Formats one server-sent event as `event: NAME\ndata: JSON\n\n`.
pub fn sse_event(name: &str, data: &Value) -> Vec<u8> {
    event_bytes(name, &data.to_string())
}

fn event_bytes(name: &str, data: &str) -> Vec<u8> {
    format!("event: {name}\ndata: {data}\n\n").into_bytes()
}

/// Builds an error body, `{"type":"error","error":{"type":KIND,"message":MESSAGE}}`.
///
/// The API's error page (docs.claude.com/en/api/errors) lists these kinds
/// with their statuses: `invalid_request_error` (400), `authentication_error`
/// (401), `permission_error` (403), `not_found_error` (404),
/// `request_too_large` (413), `rate_limit_error` (429), `api_error` (500) and
/// `overloaded_error` (529). The real API also adds a top-level `request_id`,
/// which this body leaves out.
pub fn error_json(kind: &str, message: &str) -> Vec<u8> {
    let error = object(&[("type", string(kind)), ("message", string(message))]);
    object(&[("type", string("error")), ("error", error)]).into_bytes()
}

/// Writes a JSON object with its fields in the given order. The values are
/// JSON text already. `serde_json::Value` would sort the keys, but the real
/// API writes `type` first, and the mock should send bytes shaped like the
/// real ones.
pub(crate) fn object(fields: &[(&str, String)]) -> String {
    let members: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("{}:{value}", string(key)))
        .collect();
    format!("{{{}}}", members.join(","))
}

/// Writes `text` as a JSON string literal.
pub(crate) fn string(text: &str) -> String {
    Value::from(text).to_string()
}

/// Returns the error kind that the API uses for an HTTP status.
pub fn error_kind_for_status(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Parses a server-sent event stream into `(event name, data)` pairs.
///
/// Lines may end in LF or CRLF. Several `data:` lines of one event are
/// joined with LF, as the SSE format specifies, and comment lines (`:`) are
/// ignored.
///
/// # Panics
/// When the body is not UTF-8 or an event's data is not JSON; the message
/// shows the event.
pub fn parse_sse_events(body: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(body)
        .unwrap_or_else(|err| panic!("SSE body is not UTF-8: {err}"))
        .replace("\r\n", "\n");
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|block| !block.trim().is_empty()) {
        let mut name = String::from("message");
        let mut data_lines = Vec::new();
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim_start().to_string();
            } else if let Some(value) = line.strip_prefix("data:") {
                data_lines.push(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        if data_lines.is_empty() {
            continue;
        }
        let data_text = data_lines.join("\n");
        let data = serde_json::from_str(&data_text).unwrap_or_else(|err| {
            panic!("data of SSE event {name:?} is not JSON ({err}): {data_text:?}")
        });
        events.push((name, data));
    }
    events
}
