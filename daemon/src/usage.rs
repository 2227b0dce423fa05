//! Token usage as the Anthropic Messages API reports it, and through [`openai`] as the
//! OpenAI API reports it. [`UsageFormat`] picks one per response.
//!
//! `input_tokens` counts only the tokens after the last cache breakpoint;
//! `cache_creation_input_tokens` and `cache_read_input_tokens` come on top of it. The
//! `cache_creation` object, where present, splits the writes into 5-minute and 1-hour ones.
//! Without it every write is taken as a 5-minute write, the API's default TTL, and the usage
//! is marked [`Usage::estimated`]. `server_tool_use.web_search_requests` counts the web
//! searches that the server ran for the response.
//!
//! In a stream, `message_start` carries the first usage and each `message_delta` carries
//! cumulative counts: a field present in a later event replaces the earlier value.

pub mod openai;

use cco_proto::TokenCounts;
use serde_json::Value;

use crate::sse::Event;

/// The usage rules a response follows, from the API it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageFormat {
    /// Anthropic Messages API: usage in the body or in `message_start` and `message_delta`.
    AnthropicMessages,
    /// OpenAI and compatible APIs: see [`openai`].
    OpenAi,
}

impl UsageFormat {
    /// Reads the usage of a non-streaming response body.
    pub fn from_body(self, body: &[u8]) -> Option<Usage> {
        match self {
            UsageFormat::AnthropicMessages => from_message_body(body),
            UsageFormat::OpenAi => openai::from_body(body),
        }
    }

    /// Returns a tracker for an event stream of this format.
    pub fn stream_tracker(self) -> StreamTracker {
        match self {
            UsageFormat::AnthropicMessages => StreamTracker::Anthropic(StreamUsage::default()),
            UsageFormat::OpenAi => StreamTracker::OpenAi(openai::StreamUsage::default()),
        }
    }
}

/// Usage and end state of an event stream, in either format.
#[derive(Debug)]
pub enum StreamTracker {
    Anthropic(StreamUsage),
    OpenAi(openai::StreamUsage),
}

impl StreamTracker {
    pub fn observe(&mut self, event: &Event) {
        match self {
            StreamTracker::Anthropic(stream) => stream.observe(event),
            StreamTracker::OpenAi(stream) => stream.observe(event),
        }
    }

    /// Returns the usage seen so far, or `None` when no event carried any.
    pub fn usage(&self) -> Option<Usage> {
        match self {
            StreamTracker::Anthropic(stream) => stream.saw_usage.then(|| stream.usage.clone()),
            StreamTracker::OpenAi(stream) => stream.saw_usage.then(|| stream.usage.clone()),
        }
    }

    /// Returns true once the terminal event arrived: `message_stop`, or `[DONE]` and its
    /// Responses API equivalents.
    pub fn saw_end(&self) -> bool {
        match self {
            StreamTracker::Anthropic(stream) => stream.saw_stop,
            StreamTracker::OpenAi(stream) => stream.saw_end,
        }
    }

    /// Returns true once an error event arrived.
    pub fn saw_error(&self) -> bool {
        match self {
            StreamTracker::Anthropic(stream) => stream.saw_error,
            StreamTracker::OpenAi(stream) => stream.saw_error,
        }
    }
}

/// Usage read from one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub tokens: TokenCounts,
    /// Model id from the response, which is the id that gets priced.
    pub model: Option<String>,
    /// Web searches run by the server: `usage.server_tool_use.web_search_requests`.
    pub web_search_requests: u64,
    /// True when cache writes came without the `cache_creation` split, so they are priced
    /// as 5-minute writes without knowing whether some were 1-hour writes.
    pub estimated: bool,
}

/// Reads the usage of a non-streaming Messages API response body.
pub fn from_message_body(body: &[u8]) -> Option<Usage> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let usage_value = value.get("usage")?;
    let mut usage = Usage {
        model: value
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_owned),
        ..Usage::default()
    };
    apply_usage(&mut usage, usage_value);
    Some(usage)
}

/// Overwrites each count that `usage` names with its value.
fn apply_usage(target: &mut Usage, usage: &Value) {
    let field = |name: &str| usage.get(name).and_then(Value::as_u64);
    let searches = usage
        .get("server_tool_use")
        .and_then(|tools| tools.get("web_search_requests"))
        .and_then(Value::as_u64);
    if let Some(searches) = searches {
        target.web_search_requests = searches;
    }
    let tokens = &mut target.tokens;
    if let Some(input) = field("input_tokens") {
        tokens.input = input;
    }
    if let Some(output) = field("output_tokens") {
        tokens.output = output;
    }
    if let Some(read) = field("cache_read_input_tokens") {
        tokens.cache_read = read;
    }
    let split = usage
        .get("cache_creation")
        .filter(|split| split.is_object());
    match split {
        Some(split) => {
            let part = |name: &str| split.get(name).and_then(Value::as_u64).unwrap_or(0);
            tokens.cache_write_5m = part("ephemeral_5m_input_tokens");
            tokens.cache_write_1h = part("ephemeral_1h_input_tokens");
            target.estimated = false;
        }
        None => {
            if let Some(written) = field("cache_creation_input_tokens") {
                tokens.cache_write_5m = written;
                tokens.cache_write_1h = 0;
                target.estimated = written > 0;
            }
        }
    }
}

/// Usage tracker for a stream, fed the events as they are parsed.
#[derive(Debug, Default)]
pub struct StreamUsage {
    pub usage: Usage,
    /// At least one event carried usage.
    pub saw_usage: bool,
    /// The terminal `message_stop` event arrived.
    pub saw_stop: bool,
    /// An `error` event arrived; such a stream is never cached.
    pub saw_error: bool,
}

impl StreamUsage {
    pub fn observe(&mut self, event: &Event) {
        match event.name.as_str() {
            "message_start" => {
                let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
                    return;
                };
                let Some(message) = value.get("message") else {
                    return;
                };
                if let Some(model) = message.get("model").and_then(Value::as_str) {
                    self.usage.model = Some(model.to_owned());
                }
                if let Some(usage) = message.get("usage") {
                    apply_usage(&mut self.usage, usage);
                    self.saw_usage = true;
                }
            }
            "message_delta" => {
                let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
                    return;
                };
                if let Some(usage) = value.get("usage") {
                    apply_usage(&mut self.usage, usage);
                    self.saw_usage = true;
                }
            }
            "message_stop" => self.saw_stop = true,
            "error" => self.saw_error = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, data: &str) -> Event {
        Event {
            name: name.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn body_usage_reads_every_class() {
        let body = br#"{"model":"claude-sonnet-4-5-20250929","usage":{"input_tokens":12,
            "output_tokens":34,"cache_creation_input_tokens":300,"cache_read_input_tokens":56,
            "cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200}}}"#;
        let usage = from_message_body(body).unwrap();
        assert_eq!(usage.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
        assert_eq!(
            usage.tokens,
            TokenCounts {
                input: 12,
                output: 34,
                cache_write_5m: 100,
                cache_write_1h: 200,
                cache_read: 56,
            }
        );
    }

    #[test]
    fn write_without_split_counts_as_5m() {
        let body =
            br#"{"usage":{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":70}}"#;
        let usage = from_message_body(body).unwrap();
        assert_eq!(usage.tokens.cache_write_5m, 70);
        assert_eq!(usage.tokens.cache_write_1h, 0);
        assert!(usage.estimated);
    }

    #[test]
    fn estimated_only_for_unsplit_writes() {
        let cases = [
            (
                r#"{"usage":{"input_tokens":1,"cache_creation_input_tokens":70}}"#,
                true,
            ),
            (
                r#"{"usage":{"input_tokens":1,"cache_creation_input_tokens":0}}"#,
                false,
            ),
            (r#"{"usage":{"input_tokens":1}}"#, false),
            (
                r#"{"usage":{"cache_creation_input_tokens":70,"cache_creation":
                    {"ephemeral_5m_input_tokens":70,"ephemeral_1h_input_tokens":0}}}"#,
                false,
            ),
        ];
        for (body, estimated) in cases {
            let usage = from_message_body(body.as_bytes()).unwrap();
            assert_eq!(usage.estimated, estimated, "{body}");
        }
    }

    #[test]
    fn body_counts_web_searches() {
        let body = br#"{"usage":{"input_tokens":5,"output_tokens":6,
            "server_tool_use":{"web_search_requests":3}}}"#;
        assert_eq!(from_message_body(body).unwrap().web_search_requests, 3);
        let body = br#"{"usage":{"input_tokens":5,"server_tool_use":null}}"#;
        assert_eq!(from_message_body(body).unwrap().web_search_requests, 0);
    }

    #[test]
    fn stream_web_searches_are_cumulative() {
        let mut stream = StreamUsage::default();
        stream.observe(&event(
            "message_start",
            r#"{"type":"message_start","message":{"model":"claude-sonnet-4-5","usage":
                {"input_tokens":25,"output_tokens":1,"cache_creation_input_tokens":40}}}"#,
        ));
        assert!(stream.usage.estimated);
        for searches in [1, 2] {
            let data = format!(
                r#"{{"type":"message_delta","usage":{{"output_tokens":9,
                    "server_tool_use":{{"web_search_requests":{searches}}}}}}}"#
            );
            stream.observe(&event("message_delta", &data));
        }
        assert_eq!(stream.usage.web_search_requests, 2);
        // A later split settles the estimate.
        stream.observe(&event(
            "message_delta",
            r#"{"type":"message_delta","usage":{"cache_creation_input_tokens":40,
                "cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":40}}}"#,
        ));
        assert!(!stream.usage.estimated);
        assert_eq!(stream.usage.tokens.cache_write_1h, 40);
    }

    #[test]
    fn stream_deltas_replace_not_add() {
        let mut stream = StreamUsage::default();
        stream.observe(&event(
            "message_start",
            r#"{"type":"message_start","message":{"model":"claude-haiku-4-5","usage":
                {"input_tokens":25,"output_tokens":1,"cache_read_input_tokens":10}}}"#,
        ));
        stream.observe(&event(
            "message_delta",
            r#"{"type":"message_delta","usage":{"output_tokens":15}}"#,
        ));
        stream.observe(&event(
            "message_delta",
            r#"{"type":"message_delta","usage":{"output_tokens":40}}"#,
        ));
        assert!(!stream.saw_stop);
        stream.observe(&event("message_stop", r#"{"type":"message_stop"}"#));
        assert!(stream.saw_stop);
        assert_eq!(stream.usage.tokens.input, 25);
        assert_eq!(stream.usage.tokens.output, 40);
        assert_eq!(stream.usage.tokens.cache_read, 10);
        assert_eq!(stream.usage.model.as_deref(), Some("claude-haiku-4-5"));
    }

    #[test]
    fn malformed_event_data_is_ignored() {
        let mut stream = StreamUsage::default();
        stream.observe(&event("message_start", "{not json"));
        stream.observe(&event("message_delta", "[]"));
        assert!(!stream.saw_usage);
        stream.observe(&event("error", "{}"));
        assert!(stream.saw_error);
    }
}
