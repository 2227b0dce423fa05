//! Upstream selection: which provider a request goes to, with which path, and what the proxy
//! does with the endpoint.
//!
//! The rule, checked in this order on the request path:
//!
//! 1. Under the prefix of a `[[providers]]` entry (`/ollama`, `/ollama/...`): that provider,
//!    with the prefix removed. The longest matching prefix wins.
//! 2. Under `/openai`: the OpenAI upstream, with `/openai` removed.
//! 3. `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`,
//!    `/v1/moderations`, or a path below one of them: the OpenAI upstream, unchanged.
//! 4. Anything else, `GET /v1/models` included: the Anthropic upstream, unchanged.

use actix_web::http::{Method, StatusCode};
use actix_web::HttpResponse;

use crate::config::{Config, Secret, OPENAI_PREFIX};
use crate::usage::UsageFormat;

use super::CACHE_HEADER;

/// OpenAI endpoints that go to the OpenAI upstream without a prefix. `/v1/models` is not
/// among them because the Anthropic API has the same path.
const OPENAI_PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/moderations",
];

/// The API an upstream speaks, which decides its headers, usage format and error format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    Anthropic,
    /// OpenAI, or a server that implements its API.
    OpenAi,
}

/// One upstream provider.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Recorded as the provider of its requests, hashed into their cache keys and used to
    /// pick price rows: `anthropic`, `openai` or a `[[providers]]` name.
    pub name: String,
    pub kind: ApiKind,
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// Key sent for clients that send none.
    pub api_key: Option<Secret>,
    /// Environment variable the key comes from, named in log messages.
    pub api_key_env: Option<String>,
    /// Setting that sets `base_url`, named in connection errors.
    pub base_url_setting: String,
}

/// Picks the upstream of each request by the rule in the module documentation.
#[derive(Debug, Clone)]
pub struct Router {
    anthropic: Upstream,
    openai: Upstream,
    /// `[[providers]]` entries with their prefixes, longest prefix first.
    providers: Vec<(String, Upstream)>,
}

impl Router {
    pub fn from_config(config: &Config) -> Router {
        let anthropic = Upstream {
            name: "anthropic".to_owned(),
            kind: ApiKind::Anthropic,
            base_url: config.anthropic_base_url.clone(),
            api_key: config.anthropic_api_key.clone(),
            api_key_env: Some("ANTHROPIC_API_KEY".to_owned()),
            base_url_setting: "--anthropic-base-url".to_owned(),
        };
        let openai = Upstream {
            name: "openai".to_owned(),
            kind: ApiKind::OpenAi,
            base_url: config.openai_base_url.clone(),
            api_key: config.openai_api_key.clone(),
            api_key_env: Some("OPENAI_API_KEY".to_owned()),
            base_url_setting: "--openai-base-url".to_owned(),
        };
        let mut providers: Vec<(String, Upstream)> = config
            .providers
            .iter()
            .map(|provider| {
                let upstream = Upstream {
                    name: provider.name.clone(),
                    kind: ApiKind::OpenAi,
                    base_url: provider.base_url.clone(),
                    api_key: provider.api_key.clone(),
                    api_key_env: provider.api_key_env.clone(),
                    base_url_setting: format!("base_url of [[providers]] {}", provider.name),
                };
                (provider.prefix.clone(), upstream)
            })
            .collect();
        providers.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Router {
            anthropic,
            openai,
            providers,
        }
    }

    /// Returns the upstream of a request to `path` and the path to send it with.
    pub fn route<'a, 'p>(&'a self, path: &'p str) -> (&'a Upstream, &'p str) {
        for (prefix, upstream) in &self.providers {
            if let Some(rest) = strip_path_prefix(path, prefix) {
                return (upstream, rest);
            }
        }
        if let Some(rest) = strip_path_prefix(path, OPENAI_PREFIX) {
            return (&self.openai, rest);
        }
        if OPENAI_PATHS
            .iter()
            .any(|openai| strip_path_prefix(path, openai).is_some())
        {
            return (&self.openai, path);
        }
        (&self.anthropic, path)
    }

    /// Returns every upstream, for start-up checks.
    pub fn upstreams(&self) -> impl Iterator<Item = &Upstream> {
        [&self.anthropic, &self.openai]
            .into_iter()
            .chain(self.providers.iter().map(|(_, upstream)| upstream))
    }
}

/// Removes `prefix` from `path` at a segment boundary: `/ollama/v1/x` becomes `/v1/x`, and
/// `/ollama` becomes `/`. Returns `None` for `/ollamax`.
fn strip_path_prefix<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

/// Kind of endpoint a request is for, from the upstream's API, the method and the upstream
/// path. It decides whether the response is cached and how its usage is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Anthropic `POST /v1/messages`: cacheable, reports usage.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`: cacheable, free.
    CountTokens,
    /// OpenAI `POST` to chat completions, completions, embeddings or responses: cacheable,
    /// reports usage.
    OpenAiGeneration,
    /// Forwarded uncached, without reading usage.
    Other,
}

impl Endpoint {
    pub fn classify(kind: ApiKind, method: &Method, path: &str) -> Endpoint {
        if *method != Method::POST {
            return Endpoint::Other;
        }
        match (kind, path) {
            (ApiKind::Anthropic, "/v1/messages") => Endpoint::Messages,
            (ApiKind::Anthropic, "/v1/messages/count_tokens") => Endpoint::CountTokens,
            (
                ApiKind::OpenAi,
                "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" | "/v1/responses",
            ) => Endpoint::OpenAiGeneration,
            _ => Endpoint::Other,
        }
    }

    pub fn cacheable(self) -> bool {
        self != Endpoint::Other
    }

    /// Returns the usage format of the endpoint's responses, or `None` for one without usage.
    pub fn usage_format(self) -> Option<UsageFormat> {
        match self {
            Endpoint::Messages => Some(UsageFormat::AnthropicMessages),
            Endpoint::OpenAiGeneration => Some(UsageFormat::OpenAi),
            Endpoint::CountTokens | Endpoint::Other => None,
        }
    }
}

/// Builds an error response of the proxy itself in the format of `kind`'s API, so the
/// client's SDK can read it. `error_type` is one of Anthropic's error types, such as
/// `api_error`, and the OpenAI format carries it as its `type`.
///
/// Anthropic: `{"type":"error","error":{"type":TYPE,"message":MESSAGE}}`.
/// OpenAI: `{"error":{"message":MESSAGE,"type":TYPE,"param":null,"code":null}}`.
pub fn error_response(
    kind: ApiKind,
    status: StatusCode,
    error_type: &str,
    message: &str,
) -> HttpResponse {
    let body = match kind {
        ApiKind::Anthropic => serde_json::json!({
            "type": "error",
            "error": { "type": error_type, "message": message },
        }),
        ApiKind::OpenAi => serde_json::json!({
            "error": { "message": message, "type": error_type, "param": null, "code": null },
        }),
    };
    HttpResponse::build(status)
        .insert_header((CACHE_HEADER, "bypass"))
        .content_type("application/json")
        .body(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(name: &str, kind: ApiKind) -> Upstream {
        Upstream {
            name: name.to_owned(),
            kind,
            base_url: format!("http://{name}.test"),
            api_key: None,
            api_key_env: None,
            base_url_setting: String::new(),
        }
    }

    fn router() -> Router {
        Router {
            anthropic: upstream("anthropic", ApiKind::Anthropic),
            openai: upstream("openai", ApiKind::OpenAi),
            providers: vec![
                ("/team/vllm".to_owned(), upstream("vllm", ApiKind::OpenAi)),
                ("/ollama".to_owned(), upstream("ollama", ApiKind::OpenAi)),
                ("/team".to_owned(), upstream("team", ApiKind::OpenAi)),
            ],
        }
    }

    #[test]
    fn route_follows_documented_rule() {
        let router = router();
        let cases = [
            ("/v1/messages", "anthropic", "/v1/messages"),
            ("/v1/models", "anthropic", "/v1/models"),
            ("/v1/models/gpt-4o", "anthropic", "/v1/models/gpt-4o"),
            ("/v1/chat/completions", "openai", "/v1/chat/completions"),
            (
                "/v1/chat/completions/abc",
                "openai",
                "/v1/chat/completions/abc",
            ),
            ("/v1/completions", "openai", "/v1/completions"),
            ("/v1/embeddings", "openai", "/v1/embeddings"),
            ("/v1/responses", "openai", "/v1/responses"),
            (
                "/v1/responses/resp_1/cancel",
                "openai",
                "/v1/responses/resp_1/cancel",
            ),
            ("/v1/moderations", "openai", "/v1/moderations"),
            (
                "/v1/chat/completionsx",
                "anthropic",
                "/v1/chat/completionsx",
            ),
            ("/openai/v1/models", "openai", "/v1/models"),
            ("/openai", "openai", "/"),
            ("/openaix/v1/models", "anthropic", "/openaix/v1/models"),
            (
                "/ollama/v1/chat/completions",
                "ollama",
                "/v1/chat/completions",
            ),
            ("/ollama", "ollama", "/"),
            (
                "/ollamax/v1/chat/completions",
                "anthropic",
                "/ollamax/v1/chat/completions",
            ),
            ("/team/vllm/v1/embeddings", "vllm", "/v1/embeddings"),
            ("/team/v1/embeddings", "team", "/v1/embeddings"),
        ];
        for (path, name, upstream_path) in cases {
            let (upstream, routed) = router.route(path);
            assert_eq!(upstream.name, name, "upstream of {path}");
            assert_eq!(routed, upstream_path, "upstream path of {path}");
        }
    }

    #[test]
    fn endpoint_depends_on_api_and_method() {
        let post = Method::POST;
        let cases = [
            (
                ApiKind::Anthropic,
                &post,
                "/v1/messages",
                Endpoint::Messages,
            ),
            (ApiKind::OpenAi, &post, "/v1/messages", Endpoint::Other),
            (
                ApiKind::Anthropic,
                &post,
                "/v1/chat/completions",
                Endpoint::Other,
            ),
            (
                ApiKind::OpenAi,
                &post,
                "/v1/chat/completions",
                Endpoint::OpenAiGeneration,
            ),
            (
                ApiKind::OpenAi,
                &Method::GET,
                "/v1/chat/completions",
                Endpoint::Other,
            ),
            (ApiKind::OpenAi, &post, "/v1/moderations", Endpoint::Other),
            (
                ApiKind::OpenAi,
                &post,
                "/v1/responses/resp_1/cancel",
                Endpoint::Other,
            ),
        ];
        for (kind, method, path, expected) in cases {
            assert_eq!(
                Endpoint::classify(kind, method, path),
                expected,
                "{kind:?} {method} {path}"
            );
        }
    }
}
