//! The cost a request may reach, computed from its body before it is forwarded.
//!
//! Output is bounded by the request's own limit. The Anthropic Messages API takes
//! `max_tokens`. OpenAI chat completions and completions take the larger of
//! `max_completion_tokens` and `max_tokens`, times `n` or `best_of` because each choice is
//! a billed completion. The Responses API takes `max_output_tokens`, and embeddings have no
//! output.
//!
//! Input tokens are estimated as the body's length in bytes divided by 3, rounded up.
//! English text and code take 3 to 4 bytes per token, and the JSON around the text adds
//! bytes that are not billed, so the estimate is usually above the real count.
//! NOTE: bytes / 3 is not a bound. Text that tokenises worse (single characters, some
//! scripts) or the system prompt that Anthropic adds to requests with tools (159 to 530
//! tokens for the Claude 3 models, per docs.anthropic.com/es/docs/tool-use-pricing-and-tokens)
//! can bill more input tokens. A budget can then be overshot by that difference of the
//! requests in flight.
//!
//! Input tokens are priced at the highest rate they could be billed at: the input rate, or
//! the higher cache-write rates when the body contains `cache_control`. The long-context
//! rates apply, to output too, when the estimated input exceeds the tier's threshold.

use serde::Deserialize;
use serde_json::Value;

use crate::pricing::{ModelPrice, PriceTable};

/// Body bytes counted as one input token.
pub const BYTES_PER_INPUT_TOKEN: u64 = 3;

/// Part of a request's cost that its estimate covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The cost of the input estimate plus the max output that the request allows.
    WorstCase,
    /// The request sets no output limit, so the estimate covers its input only.
    InputOnly,
    /// The model has no price, so the request is recorded without a cost.
    Unpriced,
}

/// Cost a request may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// Zero for [`Bound::Unpriced`].
    pub cost_nano_usd: u64,
    pub bound: Bound,
}

/// API of a request that can cost money, which decides where its output limit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Anthropic `POST /v1/messages`.
    AnthropicMessages,
    /// OpenAI `POST /v1/chat/completions` or `POST /v1/completions`.
    OpenAiCompletions,
    /// OpenAI `POST /v1/responses`.
    OpenAiResponses,
    /// OpenAI `POST /v1/embeddings`, whose responses have no output tokens.
    OpenAiEmbeddings,
}

impl Api {
    /// Returns the API of an OpenAI-compatible upstream path, or `None` for a path that
    /// reports no usage.
    pub fn of_openai_path(path: &str) -> Option<Api> {
        match path {
            "/v1/chat/completions" | "/v1/completions" => Some(Api::OpenAiCompletions),
            "/v1/responses" => Some(Api::OpenAiResponses),
            "/v1/embeddings" => Some(Api::OpenAiEmbeddings),
            _ => None,
        }
    }
}

/// The request fields the estimate reads. Each is kept as JSON and read leniently: a
/// field of the wrong type counts as absent, which gives the more cautious estimate.
#[derive(Debug, Default, Deserialize)]
struct Fields {
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    max_tokens: Option<Value>,
    #[serde(default)]
    max_completion_tokens: Option<Value>,
    #[serde(default)]
    max_output_tokens: Option<Value>,
    #[serde(default)]
    n: Option<Value>,
    #[serde(default)]
    best_of: Option<Value>,
}

impl Fields {
    /// Returns the max output tokens that the request may be billed for, or `None` when it
    /// sets no limit.
    fn max_output_tokens(&self, api: Api) -> Option<u64> {
        let number = |field: &Option<Value>| field.as_ref().and_then(Value::as_u64);
        match api {
            Api::AnthropicMessages => number(&self.max_tokens),
            Api::OpenAiCompletions => {
                let limit = number(&self.max_completion_tokens).max(number(&self.max_tokens))?;
                // Absent `n` and `best_of` mean one completion.
                let completions = number(&self.n)
                    .unwrap_or(1)
                    .max(number(&self.best_of).unwrap_or(1));
                Some(limit.saturating_mul(completions))
            }
            Api::OpenAiResponses => number(&self.max_output_tokens),
            Api::OpenAiEmbeddings => Some(0),
        }
    }
}

/// Estimates the cost of a request to `api` with `body`, priced by the rows of
/// `provider`. A body that is not a JSON object names no model and is [`Bound::Unpriced`].
pub fn estimate(prices: &PriceTable, provider: &str, api: Api, body: &[u8]) -> Estimate {
    let fields: Fields = serde_json::from_slice(body).unwrap_or_default();
    let price = fields
        .model
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|model| prices.resolve(provider, model));
    let Some(price) = price else {
        return Estimate {
            cost_nano_usd: 0,
            bound: Bound::Unpriced,
        };
    };
    let input_tokens = (body.len() as u64).div_ceil(BYTES_PER_INPUT_TOKEN);
    let output_tokens = fields.max_output_tokens(api);
    let writes_cache = contains(body, b"cache_control");
    let cost = worst_case_cost(
        price,
        input_tokens,
        output_tokens.unwrap_or(0),
        writes_cache,
    );
    Estimate {
        cost_nano_usd: cost,
        bound: match output_tokens {
            Some(_) => Bound::WorstCase,
            None => Bound::InputOnly,
        },
    }
}

/// Prices `input_tokens` at the highest input-class rate that applies and `output_tokens`
/// at the output rate, with the long-context rates when the input exceeds their
/// threshold. Saturates at `u64::MAX`.
fn worst_case_cost(
    price: &ModelPrice,
    input_tokens: u64,
    output_tokens: u64,
    writes_cache: bool,
) -> u64 {
    let (input, output, cache_write_5m, cache_write_1h) = match &price.long_context {
        Some(tier) if input_tokens > tier.threshold_input_tokens => (
            tier.input,
            tier.output,
            tier.cache_write_5m,
            tier.cache_write_1h,
        ),
        _ => (
            price.input,
            price.output,
            price.cache_write_5m,
            price.cache_write_1h,
        ),
    };
    let input_rate = if writes_cache {
        input.max(cache_write_5m).max(cache_write_1h)
    } else {
        input
    };
    let total = u128::from(input_tokens) * u128::from(input_rate)
        + u128::from(output_tokens) * u128::from(output);
    u64::try_from(total).unwrap_or(u64::MAX)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedded(provider: &str, api: Api, body: &str) -> Estimate {
        estimate(&PriceTable::embedded(), provider, api, body.as_bytes())
    }

    #[test]
    fn messages_worst_case() {
        let body = r#"{"model":"claude-haiku-4-5","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(body.len(), 90);
        let estimate = embedded("anthropic", Api::AnthropicMessages, body);
        // haiku-4-5: 90 bytes / 3 = 30 input tokens * 1000 + 1000 output tokens * 5000
        // = 30_000 + 5_000_000 = 5_030_000 nano-USD.
        assert_eq!(estimate.cost_nano_usd, 5_030_000);
        assert_eq!(estimate.bound, Bound::WorstCase);
    }

    #[test]
    fn input_tokens_round_up() {
        let body = r#"{"model":"claude-haiku-4-5","max_tokens":1,"messages":[{"role":"user","content":"h"}]}"#;
        assert_eq!(body.len(), 86);
        let estimate = embedded("anthropic", Api::AnthropicMessages, body);
        // haiku-4-5: ceil(86 / 3) = 29 input tokens * 1000 + 1 output token * 5000
        // = 34_000 nano-USD.
        assert_eq!(estimate.cost_nano_usd, 34_000);
    }

    #[test]
    fn cache_control_uses_write_rate() {
        let body = r#"{"model":"claude-sonnet-4-5","max_tokens":10,"system":[{"type":"text","text":"x","cache_control":{"type":"ephemeral"}}],"messages":[]}"#;
        assert_eq!(body.len(), 134);
        let estimate = embedded("anthropic", Api::AnthropicMessages, body);
        // sonnet-4-5: ceil(134 / 3) = 45 input tokens at the 1-hour write rate 6000 + 10
        // output tokens * 15000 = 270_000 + 150_000 = 420_000 nano-USD.
        assert_eq!(estimate.cost_nano_usd, 420_000);
    }

    #[test]
    fn long_input_uses_tier_rates() {
        let padding = "a".repeat(600_003);
        let body = format!(
            r#"{{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{{"role":"user","content":"{padding}"}}]}}"#
        );
        assert_eq!(body.len(), 600_003 + 88);
        let estimate = embedded("anthropic", Api::AnthropicMessages, &body);
        // 600_091 bytes / 3 = 200_031 (rounded up) input tokens, above the 200_000
        // threshold, so the tier rates apply: 200_031 * 6000 + 100 * 22500
        // = 1_200_186_000 + 2_250_000 = 1_202_436_000 nano-USD.
        assert_eq!(estimate.cost_nano_usd, 1_202_436_000);
    }

    #[test]
    fn chat_completions_limits_and_choices() {
        let cases = [
            // gpt-4o-mini: input 150, output 600 nano-USD per token.
            (r#"{"model":"gpt-4o-mini","max_tokens":100}"#, Some(100)),
            (
                r#"{"model":"gpt-4o-mini","max_completion_tokens":200,"max_tokens":100}"#,
                Some(200),
            ),
            (
                r#"{"model":"gpt-4o-mini","max_tokens":100,"n":3}"#,
                Some(300),
            ),
            (
                r#"{"model":"gpt-4o-mini","max_tokens":100,"best_of":4,"n":2}"#,
                Some(400),
            ),
            (r#"{"model":"gpt-4o-mini","max_tokens":"100"}"#, None),
            (r#"{"model":"gpt-4o-mini"}"#, None),
        ];
        for (body, output) in cases {
            let estimate = embedded("openai", Api::OpenAiCompletions, body);
            let input = (body.len() as u64).div_ceil(3) * 150;
            let expected = input + output.unwrap_or(0) * 600;
            assert_eq!(estimate.cost_nano_usd, expected, "{body}");
            let bound = if output.is_some() {
                Bound::WorstCase
            } else {
                Bound::InputOnly
            };
            assert_eq!(estimate.bound, bound, "{body}");
        }
    }

    #[test]
    fn responses_and_embeddings_limits() {
        let body = r#"{"model":"gpt-4o-mini","max_output_tokens":50,"input":"hi"}"#;
        assert_eq!(body.len(), 59);
        let responses = embedded("openai", Api::OpenAiResponses, body);
        // gpt-4o-mini: ceil(59 / 3) = 20 input tokens * 150 + 50 output tokens * 600
        // = 3_000 + 30_000 = 33_000 nano-USD.
        assert_eq!(responses.cost_nano_usd, 33_000);
        assert_eq!(responses.bound, Bound::WorstCase);

        let embeddings = embedded("openai", Api::OpenAiEmbeddings, body);
        assert_eq!(embeddings.cost_nano_usd, 3_000);
        assert_eq!(embeddings.bound, Bound::WorstCase);
    }

    #[test]
    fn unknown_model_or_body_is_unpriced() {
        for body in [
            r#"{"model":"claude-imaginary-9","max_tokens":10}"#,
            r#"{"max_tokens":10}"#,
            r#"{"model":7,"max_tokens":10}"#,
            "not json",
        ] {
            let estimate = embedded("anthropic", Api::AnthropicMessages, body);
            assert_eq!(estimate.bound, Bound::Unpriced, "{body}");
            assert_eq!(estimate.cost_nano_usd, 0, "{body}");
        }
        // A model priced for Anthropic is unpriced at another provider.
        let other = embedded(
            "ollama",
            Api::OpenAiCompletions,
            r#"{"model":"claude-haiku-4-5","max_tokens":10}"#,
        );
        assert_eq!(other.bound, Bound::Unpriced);
    }

    #[test]
    fn openai_paths_map_to_apis() {
        assert_eq!(
            Api::of_openai_path("/v1/chat/completions"),
            Some(Api::OpenAiCompletions)
        );
        assert_eq!(
            Api::of_openai_path("/v1/completions"),
            Some(Api::OpenAiCompletions)
        );
        assert_eq!(
            Api::of_openai_path("/v1/responses"),
            Some(Api::OpenAiResponses)
        );
        assert_eq!(
            Api::of_openai_path("/v1/embeddings"),
            Some(Api::OpenAiEmbeddings)
        );
        assert_eq!(Api::of_openai_path("/v1/moderations"), None);
    }
}
