//! Default responses of the mock upstream when no reply is queued.
//!
//! Usage numbers are deterministic functions of the request, so a test can
//! predict them:
//!
//! - `input_tokens` is `max(1, ceil(B / 4))`, where `B` is the number of
//!   UTF-8 bytes of text in `system` and in every `messages[].content`: plain
//!   string contents plus the `text` fields of content blocks, including
//!   blocks nested in a `tool_result` block's `content`.
//! - The reply text is `Mock reply to: ` followed by the first 12
//!   whitespace-separated words of the last `user` message, or `Mock reply.`
//!   when that message has no text.
//! - `output_tokens` is the number of whitespace-separated words in the reply
//!   text. When `max_tokens` is smaller, the text keeps only the first
//!   `max_tokens` words and `stop_reason` is `max_tokens` instead of
//!   `end_turn`.
//! - A streaming reply sends one `text_delta` per word (every word after the
//!   first with its leading space), `message_start` carries the input tokens
//!   and 1 output token, and `message_delta` carries the total output tokens.
//! - Cache token counts are always 0.
//!
//! `POST /v1/chat/completions` follows the same rules in the OpenAI format: every message
//! counts towards `prompt_tokens` (there is no separate `system`), `max_completion_tokens`
//! or else `max_tokens` limits the words, and `finish_reason` is `length` instead of `stop`
//! when it does. A streaming reply sends one chunk per word and ends with `data: [DONE]`;
//! it carries a usage chunk only when the request sets `stream_options.include_usage`.
//! `cached_tokens` is always 0.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::reply::Reply;
use super::RecordedRequest;
use crate::{anthropic, openai};

const REPLY_PREFIX: &str = "Mock reply to:";
const QUOTED_WORD_LIMIT: usize = 12;
const REQUESTS_LIMIT: u64 = 1000;
const TOKENS_LIMIT: u64 = 400_000;

/// Models returned by `GET /v1/models`, newest first as the API lists them:
/// id, display name and release date.
const MODELS: &[(&str, &str, &str)] = &[
    (
        "claude-opus-4-1-20250805",
        "Claude Opus 4.1",
        "2025-08-05T00:00:00Z",
    ),
    (
        "claude-sonnet-4-20250514",
        "Claude Sonnet 4",
        "2025-05-22T00:00:00Z",
    ),
    (
        "claude-3-5-haiku-20241022",
        "Claude Haiku 3.5",
        "2024-10-22T00:00:00Z",
    ),
];

/// Builds the default reply to `request`, the `sequence`-th request the mock
/// received (counting from 0).
pub(super) fn respond(request: &RecordedRequest, sequence: u64, chunk_delay: Duration) -> Reply {
    let path = request.path.split('?').next().unwrap_or_default();
    let reply = match (request.method.as_str(), path) {
        ("POST", "/v1/messages") => create_message(request, sequence, chunk_delay),
        ("POST", "/v1/messages/count_tokens") => count_tokens(request),
        ("POST", "/v1/chat/completions") => create_chat_completion(request, chunk_delay),
        ("GET", "/v1/models") => list_models(),
        ("GET", _) if path.starts_with("/v1/models/") => get_model(&path["/v1/models/".len()..]),
        _ => Reply::error(
            404,
            "not_found_error",
            &format!("Not found: {} {}", request.method, request.path),
        ),
    };
    reply.header("request-id", &format!("req_mock_{sequence:06}"))
}

/// Fields of a Messages API request that the default response depends on.
struct MessageRequest {
    model: String,
    input_tokens: u64,
    max_tokens: Option<u64>,
    stream: bool,
    last_user_text: String,
}

fn parse_message_request(
    request: &RecordedRequest,
    needs_max_tokens: bool,
) -> Result<MessageRequest, Reply> {
    let body: Value = serde_json::from_slice(&request.body)
        .map_err(|err| invalid_request(&format!("The request body is not valid JSON: {err}")))?;
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_request("model: Field required"))?
        .to_string();
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid_request("messages: Field required"))?;
    let max_tokens = body.get("max_tokens").and_then(Value::as_u64);
    if needs_max_tokens {
        match max_tokens {
            None => return Err(invalid_request("max_tokens: Field required")),
            Some(0) => {
                return Err(invalid_request(
                    "max_tokens: Input should be greater than or equal to 1",
                ))
            }
            Some(_) => {}
        }
    }

    let mut text_bytes = body.get("system").map_or(0, content_text_bytes);
    for message in messages {
        text_bytes += message.get("content").map_or(0, content_text_bytes);
    }
    let last_user_text = messages
        .iter()
        .rev()
        .find(|message| message.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|message| message.get("content"))
        .map(content_text)
        .unwrap_or_default();

    Ok(MessageRequest {
        model,
        input_tokens: text_bytes.div_ceil(4).max(1),
        max_tokens,
        stream: body.get("stream").and_then(Value::as_bool) == Some(true),
        last_user_text,
    })
}

/// Counts the UTF-8 bytes of text in a `system` or `content` value.
fn content_text_bytes(content: &Value) -> u64 {
    match content {
        Value::String(text) => text.len() as u64,
        Value::Array(blocks) => blocks.iter().map(block_text_bytes).sum(),
        _ => 0,
    }
}

fn block_text_bytes(block: &Value) -> u64 {
    let own = block
        .get("text")
        .and_then(Value::as_str)
        .map_or(0, str::len) as u64;
    let nested = block.get("content").map_or(0, content_text_bytes);
    own + nested
}

/// Joins the text of a `content` value with spaces.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|block| block.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Returns the words of the reply text and the stop reason.
fn reply_words(parsed: &MessageRequest) -> (Vec<String>, &'static str) {
    let quoted: Vec<&str> = parsed
        .last_user_text
        .split_whitespace()
        .take(QUOTED_WORD_LIMIT)
        .collect();
    let mut words: Vec<String> = if quoted.is_empty() {
        vec!["Mock".to_string(), "reply.".to_string()]
    } else {
        REPLY_PREFIX
            .split_whitespace()
            .chain(quoted)
            .map(str::to_string)
            .collect()
    };
    let limit = parsed.max_tokens.unwrap_or(u64::MAX);
    if (words.len() as u64) > limit {
        words.truncate(limit as usize);
        return (words, "max_tokens");
    }
    (words, "end_turn")
}

fn create_message(request: &RecordedRequest, sequence: u64, chunk_delay: Duration) -> Reply {
    let parsed = match parse_message_request(request, true) {
        Ok(parsed) => parsed,
        Err(reply) => return reply,
    };
    let (words, stop_reason) = reply_words(&parsed);
    let output_tokens = words.len() as u64;
    let id = anthropic::next_message_id();

    let reply = if parsed.stream {
        let pieces: Vec<String> = words
            .iter()
            .enumerate()
            .map(|(index, word)| {
                if index == 0 {
                    word.clone()
                } else {
                    format!(" {word}")
                }
            })
            .collect();
        let piece_refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let events = anthropic::stream_events(
            &id,
            &parsed.model,
            &piece_refs,
            stop_reason,
            &anthropic::usage(parsed.input_tokens, 1),
            &json!({"output_tokens": output_tokens}),
        );
        Reply::sse(events).chunk_delay(chunk_delay)
    } else {
        let body = anthropic::message_json_with(
            &id,
            &parsed.model,
            &words.join(" "),
            stop_reason,
            &anthropic::usage(parsed.input_tokens, output_tokens),
        );
        Reply::json(200, body)
    };
    with_rate_limit_headers(reply, sequence, parsed.input_tokens + output_tokens)
}

/// Adds the `anthropic-ratelimit-*` headers. Remaining requests count down
/// from 999 by one per request and start over every 1000 requests.
/// Remaining tokens are the limit minus the tokens of this request.
fn with_rate_limit_headers(reply: Reply, sequence: u64, tokens: u64) -> Reply {
    let reset = rfc3339_utc(SystemTime::now() + Duration::from_secs(60));
    let requests_remaining = REQUESTS_LIMIT - 1 - sequence % REQUESTS_LIMIT;
    reply
        .header(
            "anthropic-ratelimit-requests-limit",
            &REQUESTS_LIMIT.to_string(),
        )
        .header(
            "anthropic-ratelimit-requests-remaining",
            &requests_remaining.to_string(),
        )
        .header("anthropic-ratelimit-requests-reset", &reset)
        .header(
            "anthropic-ratelimit-tokens-limit",
            &TOKENS_LIMIT.to_string(),
        )
        .header(
            "anthropic-ratelimit-tokens-remaining",
            &TOKENS_LIMIT.saturating_sub(tokens).to_string(),
        )
        .header("anthropic-ratelimit-tokens-reset", &reset)
}

/// Fields of a Chat Completions request that the default response depends on.
struct ChatRequest {
    /// The request in the shape the Messages rules use.
    message: MessageRequest,
    include_usage: bool,
}

fn parse_chat_request(request: &RecordedRequest) -> Result<ChatRequest, Reply> {
    let invalid =
        |message: &str| Reply::json(400, openai::error_json("invalid_request_error", message));
    let body: Value = serde_json::from_slice(&request.body).map_err(|err| {
        invalid(&format!(
            "We could not parse the JSON body of your request: {err}"
        ))
    })?;
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("you must provide a model parameter"))?
        .to_string();
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("Missing required parameter: 'messages'."))?;
    let text_bytes: u64 = messages
        .iter()
        .map(|message| message.get("content").map_or(0, content_text_bytes))
        .sum();
    let last_user_text = messages
        .iter()
        .rev()
        .find(|message| message.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|message| message.get("content"))
        .map(content_text)
        .unwrap_or_default();
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|name| body.get(*name).and_then(Value::as_u64));
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    Ok(ChatRequest {
        message: MessageRequest {
            model,
            input_tokens: text_bytes.div_ceil(4).max(1),
            max_tokens,
            stream: body.get("stream").and_then(Value::as_bool) == Some(true),
            last_user_text,
        },
        include_usage,
    })
}

fn create_chat_completion(request: &RecordedRequest, chunk_delay: Duration) -> Reply {
    let parsed = match parse_chat_request(request) {
        Ok(parsed) => parsed,
        Err(reply) => return reply,
    };
    let message = &parsed.message;
    let (words, stop_reason) = reply_words(message);
    let finish_reason = if stop_reason == "max_tokens" {
        "length"
    } else {
        "stop"
    };
    let usage = openai::usage(message.input_tokens, words.len() as u64);
    let id = openai::next_completion_id();
    if message.stream {
        let pieces: Vec<String> = words
            .iter()
            .enumerate()
            .map(|(index, word)| {
                if index == 0 {
                    word.clone()
                } else {
                    format!(" {word}")
                }
            })
            .collect();
        let piece_refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let stream_usage = parsed.include_usage.then_some(&usage);
        let events = openai::chat_chunks_with(
            &id,
            &message.model,
            &piece_refs,
            finish_reason,
            stream_usage,
        );
        Reply::sse(events).chunk_delay(chunk_delay)
    } else {
        let body = openai::chat_completion_json_with(
            &id,
            &message.model,
            &words.join(" "),
            finish_reason,
            &usage,
        );
        Reply::json(200, body)
    }
}

fn count_tokens(request: &RecordedRequest) -> Reply {
    match parse_message_request(request, false) {
        Ok(parsed) => Reply::json(
            200,
            json!({"input_tokens": parsed.input_tokens}).to_string(),
        ),
        Err(reply) => reply,
    }
}

fn model_value(id: &str, display_name: &str, created_at: &str) -> Value {
    json!({
        "type": "model",
        "id": id,
        "display_name": display_name,
        "created_at": created_at,
    })
}

fn list_models() -> Reply {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|(id, name, created)| model_value(id, name, created))
        .collect();
    let body = json!({
        "data": data,
        "has_more": false,
        "first_id": MODELS.first().map(|model| model.0),
        "last_id": MODELS.last().map(|model| model.0),
    });
    Reply::json(200, body.to_string())
}

fn get_model(model_id: &str) -> Reply {
    match MODELS.iter().find(|(id, _, _)| *id == model_id) {
        Some((id, name, created)) => Reply::json(200, model_value(id, name, created).to_string()),
        None => Reply::error(404, "not_found_error", &format!("model: {model_id}")),
    }
}

fn invalid_request(message: &str) -> Reply {
    Reply::error(400, "invalid_request_error", message)
}

/// Formats a time as RFC 3339 in UTC with whole seconds, the format of the
/// `anthropic-ratelimit-*-reset` headers.
fn rfc3339_utc(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let days = (seconds / 86_400) as i64;
    let second_of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month,
/// day). It counts in 400-year eras whose years start on March 1, so that
/// the leap day falls at the end of a year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }

    #[test]
    fn rfc3339_formats_seconds() {
        let time = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661);
        assert_eq!(rfc3339_utc(time), "2000-02-29T01:01:01Z");
    }
}
