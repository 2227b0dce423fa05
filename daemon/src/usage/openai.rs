//! Token usage as the OpenAI API and compatible servers (Ollama, vLLM) report it.
//!
//! Chat Completions, Completions and Embeddings report `prompt_tokens` and
//! `completion_tokens`, and the Responses API reports `input_tokens` and `output_tokens`. In
//! both, the input count includes the cached tokens given in
//! `prompt_tokens_details.cached_tokens` or `input_tokens_details.cached_tokens`. So the cached
//! tokens become [`TokenCounts::cache_read`] and only the rest become [`TokenCounts::input`],
//! and every token is priced once. The output count includes reasoning tokens, which are
//! billed as output.
//!
//! Chat Completions and Completions streams end with `data: [DONE]`. They carry usage only
//! when the client sets `stream_options.include_usage`, in one last chunk before `[DONE]`, and
//! the other chunks then have `"usage": null`. Some compatible servers attach usage to an
//! earlier chunk instead, so any chunk with a `usage` object counts and a later one replaces
//! it. Responses API streams end with a `response.completed` or `response.incomplete` event,
//! whose `response.usage` is the usage, and have no `[DONE]`.

use cco_proto::TokenCounts;
use serde_json::Value;

use super::Usage;
use crate::sse::Event;

/// Reads the usage of a non-streaming response body.
pub fn from_body(body: &[u8]) -> Option<Usage> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let usage = value.get("usage").filter(|usage| usage.is_object())?;
    Some(Usage {
        tokens: tokens_from(usage),
        model: model_of(&value),
        ..Usage::default()
    })
}

/// Converts an OpenAI `usage` object into token classes.
fn tokens_from(usage: &Value) -> TokenCounts {
    let field = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|name| usage.get(*name).and_then(Value::as_u64))
            .unwrap_or(0)
    };
    let prompt = field(["prompt_tokens", "input_tokens"]);
    let cached = ["prompt_tokens_details", "input_tokens_details"]
        .iter()
        .find_map(|name| usage.get(*name)?.get("cached_tokens")?.as_u64())
        .unwrap_or(0);
    TokenCounts {
        input: prompt.saturating_sub(cached),
        output: field(["completion_tokens", "output_tokens"]),
        cache_write_5m: 0,
        cache_write_1h: 0,
        // A server that reports more cached tokens than prompt tokens is trusted only up to
        // the prompt count, so no token is counted twice.
        cache_read: cached.min(prompt),
    }
}

fn model_of(value: &Value) -> Option<String> {
    value
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Usage tracker for an OpenAI event stream, fed the events as they are parsed.
#[derive(Debug, Default)]
pub struct StreamUsage {
    pub usage: Usage,
    /// At least one event carried usage.
    pub saw_usage: bool,
    /// The stream's terminal event arrived: `data: [DONE]`, or for the Responses API
    /// `response.completed` or `response.incomplete`.
    pub saw_end: bool,
    /// An error arrived in the stream, so the stream is never cached.
    pub saw_error: bool,
}

impl StreamUsage {
    pub fn observe(&mut self, event: &Event) {
        if event.data == "[DONE]" {
            self.saw_end = true;
            return;
        }
        if event.name == "error" {
            self.saw_error = true;
        }
        let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        match value.get("type").and_then(Value::as_str) {
            Some(kind) if kind.starts_with("response.") || kind == "error" => {
                self.observe_responses_event(kind, &value);
            }
            _ => self.observe_chunk(&value),
        }
    }

    /// Handles a Chat Completions or Completions chunk.
    fn observe_chunk(&mut self, chunk: &Value) {
        if chunk.get("error").is_some_and(|error| !error.is_null()) {
            self.saw_error = true;
            return;
        }
        if let Some(model) = model_of(chunk) {
            self.usage.model = Some(model);
        }
        if let Some(usage) = chunk.get("usage").filter(|usage| usage.is_object()) {
            self.usage.tokens = tokens_from(usage);
            self.saw_usage = true;
        }
    }

    /// Handles a Responses API event, whose `type` is `kind`.
    fn observe_responses_event(&mut self, kind: &str, event: &Value) {
        match kind {
            "response.failed" | "error" => {
                self.saw_error = true;
                return;
            }
            "response.completed" | "response.incomplete" => self.saw_end = true,
            _ => {}
        }
        let Some(response) = event.get("response") else {
            return;
        };
        if let Some(model) = model_of(response) {
            self.usage.model = Some(model);
        }
        if let Some(usage) = response.get("usage").filter(|usage| usage.is_object()) {
            self.usage.tokens = tokens_from(usage);
            self.saw_usage = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(data: &str) -> Event {
        Event {
            name: String::new(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn cached_tokens_leave_input() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-2024-08-06",
            "usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,
            "prompt_tokens_details":{"cached_tokens":1920},
            "completion_tokens_details":{"reasoning_tokens":0}}}"#;
        let usage = from_body(body).unwrap();
        assert_eq!(usage.model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(
            usage.tokens,
            TokenCounts {
                input: 86,
                output: 300,
                cache_write_5m: 0,
                cache_write_1h: 0,
                cache_read: 1920,
            }
        );
    }

    #[test]
    fn responses_api_fields_read() {
        let body = br#"{"object":"response","model":"gpt-5","usage":{"input_tokens":125,
            "input_tokens_details":{"cached_tokens":98},"output_tokens":48,
            "output_tokens_details":{"reasoning_tokens":20},"total_tokens":173}}"#;
        let tokens = from_body(body).unwrap().tokens;
        assert_eq!(tokens.input, 27);
        assert_eq!(tokens.cache_read, 98);
        assert_eq!(tokens.output, 48);
    }

    #[test]
    fn embeddings_have_no_output() {
        let body = br#"{"object":"list","model":"text-embedding-3-small",
            "usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        let tokens = from_body(body).unwrap().tokens;
        assert_eq!(tokens.input, 8);
        assert_eq!(tokens.output, 0);
        assert_eq!(tokens.cache_read, 0);
    }

    #[test]
    fn body_without_usage_is_none() {
        assert_eq!(from_body(br#"{"model":"m","usage":null}"#), None);
        assert_eq!(from_body(br#"{"model":"m"}"#), None);
        assert_eq!(from_body(b"not json"), None);
    }

    #[test]
    fn cached_beyond_prompt_is_capped() {
        let body = br#"{"usage":{"prompt_tokens":10,"completion_tokens":1,
            "prompt_tokens_details":{"cached_tokens":50}}}"#;
        let tokens = from_body(body).unwrap().tokens;
        assert_eq!(tokens.input, 0);
        assert_eq!(tokens.cache_read, 10);
    }

    #[test]
    fn stream_usage_chunk_before_done() {
        let mut stream = StreamUsage::default();
        stream.observe(&data(
            r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":
                [{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}"#,
        ));
        assert!(!stream.saw_usage);
        stream.observe(&data(
            r#"{"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[],
                "usage":{"prompt_tokens":30,"completion_tokens":2,
                "prompt_tokens_details":{"cached_tokens":0}}}"#,
        ));
        assert!(stream.saw_usage);
        assert!(!stream.saw_end);
        stream.observe(&data("[DONE]"));
        assert!(stream.saw_end);
        assert!(!stream.saw_error);
        assert_eq!(stream.usage.tokens.input, 30);
        assert_eq!(stream.usage.tokens.output, 2);
        assert_eq!(stream.usage.model.as_deref(), Some("gpt-4o-mini"));
    }

    #[test]
    fn stream_without_usage_ends() {
        let mut stream = StreamUsage::default();
        stream.observe(&data(
            r#"{"object":"chat.completion.chunk","model":"gpt-4o","choices":[]}"#,
        ));
        stream.observe(&data("[DONE]"));
        assert!(stream.saw_end);
        assert!(!stream.saw_usage);
        assert_eq!(stream.usage.model.as_deref(), Some("gpt-4o"));
    }

    #[test]
    fn stream_error_chunk_is_error() {
        let mut stream = StreamUsage::default();
        stream.observe(&data(
            r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
        ));
        assert!(stream.saw_error);
    }

    #[test]
    fn responses_stream_ends_on_completed() {
        let mut stream = StreamUsage::default();
        stream.observe(&Event {
            name: "response.created".to_owned(),
            data: r#"{"type":"response.created","response":{"model":"gpt-5","usage":null}}"#
                .to_owned(),
        });
        assert!(!stream.saw_end);
        stream.observe(&Event {
            name: "response.completed".to_owned(),
            data: r#"{"type":"response.completed","response":{"model":"gpt-5-2025-08-07",
                "usage":{"input_tokens":40,"input_tokens_details":{"cached_tokens":10},
                "output_tokens":7}}}"#
                .to_owned(),
        });
        assert!(stream.saw_end);
        assert!(stream.saw_usage);
        assert_eq!(stream.usage.tokens.input, 30);
        assert_eq!(stream.usage.tokens.cache_read, 10);
        assert_eq!(stream.usage.model.as_deref(), Some("gpt-5-2025-08-07"));

        let mut failed = StreamUsage::default();
        failed.observe(&data(r#"{"type":"response.failed","response":{}}"#));
        assert!(failed.saw_error);
    }
}
