//! End-to-end tests of the OpenAI side of the proxy: the real `ccod` binary between the raw
//! test client and mock upstreams, one standing in for OpenAI and one for Anthropic, so each
//! test can check which upstream a request reached.
//!
//! Costs in the comments are worked out by hand from `daemon/src/prices.toml`, in nano-USD
//! (USD per million tokens times 1000 gives nano-USD per token).

use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use cco_tests::daemon::{DaemonDirs, DaemonOptions, DaemonProcess};
use cco_tests::{http, openai, MockUpstream, RecordedRequest, Reply};
use serde_json::{json, Value};

const MODEL: &str = "gpt-4o-mini";
const CLIENT_KEY: &str = "sk-proj-client-test";
/// Deadline for an effect that follows a response, such as a record reaching the stats.
const DEADLINE: Duration = Duration::from_secs(5);

type Response = http::HttpResponse;

/// A daemon whose OpenAI upstream is `openai` and whose Anthropic upstream is `anthropic`.
/// Fields drop in order, so the daemon stops before its directories are removed.
struct Proxy {
    daemon: DaemonProcess,
    dirs: DaemonDirs,
}

impl Proxy {
    fn start(openai: &MockUpstream, anthropic: &MockUpstream) -> Proxy {
        Proxy::start_with(options(openai, anthropic), "")
    }

    /// Starts a daemon with `options` and a config file with `config` as its text.
    fn start_with(options: DaemonOptions, config: &str) -> Proxy {
        let dirs = DaemonDirs::new();
        std::fs::write(dirs.config_file(), config).expect("write config.toml");
        let daemon = DaemonProcess::start(&dirs, &options);
        Proxy { daemon, dirs }
    }

    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        http::send(self.daemon.addr, method, path, headers, body)
            .unwrap_or_else(|err| panic!("{method} {path} through ccod failed: {err}"))
    }

    /// Sends `POST /v1/chat/completions` with the headers the OpenAI SDK sends.
    fn post_chat(&self, body: &[u8]) -> Response {
        self.send("POST", "/v1/chat/completions", &client_headers(), body)
    }

    fn stats(&self) -> Value {
        let output = self.daemon.ctl(&["stats", "--json"]);
        assert!(
            output.status.success(),
            "ccoctl stats --json failed: {output:?}"
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
            panic!(
                "ccoctl stats --json printed invalid JSON ({err}): {:?}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// Polls the stats until `total.requests` reaches `count` or [`DEADLINE`] passes, and
    /// returns the last reply read.
    fn wait_for_recorded(&self, count: u64) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let stats = self.stats();
            if stats["total"]["requests"].as_u64() >= Some(count) || Instant::now() >= deadline {
                return stats;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn options(openai: &MockUpstream, anthropic: &MockUpstream) -> DaemonOptions {
    DaemonOptions::new(&anthropic.base_url()).openai_upstream(&openai.base_url())
}

fn client_headers() -> [(&'static str, &'static str); 2] {
    [
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-proj-client-test"),
    ]
}

fn chat_body(model: &str, text: &str) -> Vec<u8> {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": text}],
    })
    .to_string()
    .into_bytes()
}

/// Builds a streaming request. `include_usage` sets `stream_options.include_usage`.
fn chat_stream_body(model: &str, text: &str, include_usage: bool) -> Vec<u8> {
    let mut body = json!({
        "model": model,
        "stream": true,
        "messages": [{"role": "user", "content": text}],
    });
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body.to_string().into_bytes()
}

fn only_request(mock: &MockUpstream) -> RecordedRequest {
    let requests = mock.requests();
    assert_eq!(
        requests.len(),
        1,
        "the mock should receive exactly one request, got {requests:?}"
    );
    requests.into_iter().next().unwrap()
}

/// Returns the stats row of `model`.
fn model_row<'a>(stats: &'a Value, model: &str) -> &'a Value {
    stats["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["group"] == model))
        .unwrap_or_else(|| panic!("no stats row for {model}: {stats}"))
}

/// Returns the paths of the files under `dir`, recursively, whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("list a directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|window| window == needle))
            {
                found.push(path);
            }
        }
    }
    found
}

/// Returns a port on 127.0.0.1 that was free a moment ago and has no listener now.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

#[test]
fn json_passes_bytes_and_bearer() {
    let upstream = MockUpstream::start();
    let anthropic = MockUpstream::start();
    let reply = openai::chat_completion_json(MODEL, "plain answer", openai::usage(9, 2));
    upstream.push_reply(Reply::json(200, reply.clone()));
    let proxy = Proxy::start(&upstream, &anthropic);
    // Odd spacing and key order, which a proxy that re-serialised the JSON would change.
    let body = format!(
        r#"{{ "messages":[{{"role":"user","content":"byte for byte"}}] , "model" :"{MODEL}"}}"#
    );

    let response = proxy.send(
        "POST",
        "/v1/chat/completions?trace=1",
        &client_headers(),
        body.as_bytes(),
    );

    let request = only_request(&upstream);
    assert_eq!(request.method, "POST", "upstream method");
    assert_eq!(
        request.path, "/v1/chat/completions?trace=1",
        "upstream path"
    );
    assert_eq!(request.body_text(), body, "upstream body");
    assert_eq!(
        request.header_all("authorization"),
        [format!("Bearer {CLIENT_KEY}")],
        "the client's bearer token is forwarded unchanged"
    );
    assert_eq!(request.header("x-api-key"), None, "no x-api-key is added");
    assert_eq!(anthropic.request_count(), 0, "nothing reaches Anthropic");
    assert_eq!(response.status, 200, "status: {}", response.text());
    assert_eq!(response.body, reply, "client body: {}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "content-type"
    );
    assert_eq!(response.header("x-cco-cache"), Some("miss"), "cache header");
}

#[test]
fn env_key_injected_as_bearer() {
    let upstream = MockUpstream::start();
    let anthropic = MockUpstream::start();
    let options = options(&upstream, &anthropic)
        .env("OPENAI_API_KEY", "sk-openai-env-test")
        .env("ANTHROPIC_API_KEY", "sk-ant-env-test");
    let proxy = Proxy::start_with(options, "");

    let without_key = proxy.send(
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        &chat_body(MODEL, "no key"),
    );
    let with_key = proxy.post_chat(&chat_body(MODEL, "own key"));

    assert_eq!(without_key.status, 200, "status: {}", without_key.text());
    assert_eq!(with_key.status, 200, "status: {}", with_key.text());
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2, "requests: {requests:?}");
    assert_eq!(
        requests[0].header_all("authorization"),
        ["Bearer sk-openai-env-test"],
        "OPENAI_API_KEY is sent as a bearer token"
    );
    assert_eq!(
        requests[0].header("x-api-key"),
        None,
        "the Anthropic key is not sent to OpenAI"
    );
    assert_eq!(
        requests[1].header_all("authorization"),
        [format!("Bearer {CLIENT_KEY}")],
        "a client's own key wins over OPENAI_API_KEY"
    );
    proxy.wait_for_recorded(2);
    let Proxy { daemon, dirs } = proxy;
    assert_eq!(daemon.shutdown(), Some(0), "exit code");
    for key in ["sk-openai-env-test", CLIENT_KEY] {
        let files = files_containing(dirs.root.path(), key.as_bytes());
        assert!(files.is_empty(), "{key} is stored in {files:?}");
    }
}

#[test]
fn stream_passes_bytes_unchanged() {
    let upstream = MockUpstream::start();
    let anthropic = MockUpstream::start();
    let events = openai::chat_chunks(MODEL, &["Hello", ", world"], Some(&openai::usage(7, 3)));
    upstream.push_reply(Reply::sse(events.clone()));
    let proxy = Proxy::start(&upstream, &anthropic);

    let response = proxy.post_chat(&chat_stream_body(MODEL, "stream please", true));

    assert_eq!(response.status, 200, "status: {}", response.text());
    assert_eq!(response.body, events.concat(), "client body");
    assert_eq!(
        response.header("content-type"),
        Some("text/event-stream"),
        "content-type"
    );
    assert_eq!(
        response.header("content-length"),
        None,
        "a stream has no content-length"
    );
    assert!(response.chunked, "a stream is sent chunked");
    assert_eq!(response.header("x-cco-cache"), Some("miss"), "cache header");
}

#[test]
fn cached_tokens_priced_once() {
    let upstream = MockUpstream::start();
    let anthropic = MockUpstream::start();
    let usage = openai::usage_with_cached(2000, 300, 1024);
    let reply = openai::chat_completion_json("gpt-4o-2024-08-06", "cached", usage);
    upstream.push_reply(Reply::json(200, reply));
    let proxy = Proxy::start(&upstream, &anthropic);

    let response = proxy.post_chat(&chat_body("gpt-4o", "long shared prefix"));

    assert_eq!(response.status, 200, "status: {}", response.text());
    let stats = proxy.wait_for_recorded(1);
    let total = &stats["total"];
    // prompt_tokens 2000 include the 1024 cached ones, so 976 are uncached.
    assert_eq!(total["tokens"]["input"], 976, "uncached input: {total}");
    assert_eq!(total["tokens"]["cache_read"], 1024, "cached input: {total}");
    assert_eq!(total["tokens"]["output"], 300, "output: {total}");
    assert_eq!(total["tokens"]["cache_write_5m"], 0, "writes: {total}");
    // gpt-4o: input $2.50, cached input $1.25, output $10 per MTok.
    // 976 * 2500 + 1024 * 1250 + 300 * 10000 = 2_440_000 + 1_280_000 + 3_000_000.
    assert_eq!(total["cost_nano_usd"], 6_720_000, "cost: {total}");
    let row = model_row(&stats, "gpt-4o");
    assert_eq!(row["priced"], true, "the snapshot prices as gpt-4o: {row}");
}

#[test]
fn stream_usage_priced() {
    let upstream = MockUpstream::start();
    let anthropic = MockUpstream::start();
    let proxy = Proxy::start(&upstream, &anthropic);

    // The mock's default reply: "count these words please" is 24 bytes, so 6 prompt tokens,
    // and "Mock reply to: count these words please" is 7 completion tokens.
    let response = proxy.post_chat(&chat_stream_body(MODEL, "count these words please", true));

    assert_eq!(response.status, 200, "status: {}", response.text());
    let data = openai::sse_data(&response.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let usage_chunk: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 6, "{usage_chunk}");
    let stats = proxy.wait_for_recorded(1);
    let total = &stats["total"];
    assert_eq!(total["tokens"]["input"], 6, "input: {total}");
    assert_eq!(total["tokens"]["output"], 7, "output: {total}");
    // gpt-4o-mini: input $0.15, output $0.60 per MTok: 6 * 150 + 7 * 600 = 5_100.
    assert_eq!(total["cost_nano_usd"], 5_100, "cost: {total}");
    assert_eq!(total["streams_without_usage"], 0, "flag: {total}");
}

#[test]
fn stream_without_usage_flagged() {
    let upstream = MockUpstream::start();
    let anthropic = MockUpstream::start();
    let proxy = Proxy::start(&upstream, &anthropic);

    let response = proxy.post_chat(&chat_stream_body(MODEL, "no usage please", false));

    assert_eq!(response.status, 200, "status: {}", response.text());
    let data = openai::sse_data(&response.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let stats = proxy.wait_for_recorded(1);
    let total = &stats["total"];
    assert_eq!(total["requests"], 1, "recorded: {total}");
    assert_eq!(total["streams_without_usage"], 1, "flagged: {total}");
    assert_eq!(
        total["unpriced_requests"], 0,
        "a known model is not unpriced: {total}"
    );
    assert_eq!(total["cost_nano_usd"], 0, "no cost is counted: {total}");
    let row = model_row(&stats, MODEL);
    assert_eq!(row["priced"], true, "row: {row}");
    assert_eq!(row["totals"]["streams_without_usage"], 1, "row: {row}");

    let output = proxy.daemon.ctl(&["stats"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "ccoctl stats failed: {output:?}");
    assert!(
        text.contains("streams without usage: 1\n"),
        "ccoctl stats: {text}"
    );
}

#[test]
fn second_request_hits_cache() {
    let upstream = MockUpstream::start();
    let anthropic = MockUpstream::start();
    let proxy = Proxy::start(&upstream, &anthropic);
    let body = chat_stream_body(MODEL, "count these words please", true);

    let first = proxy.post_chat(&body);
    let second = proxy.post_chat(&body);

    assert_eq!(first.header("x-cco-cache"), Some("miss"), "first");
    assert_eq!(second.header("x-cco-cache"), Some("hit"), "second");
    assert_eq!(upstream.request_count(), 1, "the hit does not go upstream");
    assert_eq!(second.body, first.body, "the replay is the stored bytes");
    assert!(
        second.body.ends_with(openai::DONE_EVENT),
        "the replay ends with data: [DONE]: {:?}",
        String::from_utf8_lossy(&second.body)
    );
    assert_eq!(
        second.header("content-type"),
        Some("text/event-stream"),
        "content-type of the replay"
    );
    let stats = proxy.wait_for_recorded(2);
    let total = &stats["total"];
    assert_eq!(total["cache_hits"], 1, "hits: {total}");
    assert_eq!(
        total["cost_nano_usd"], 5_100,
        "only the miss costs: {total}"
    );
    assert_eq!(total["saved_nano_usd"], 5_100, "the hit saved: {total}");
}

#[test]
fn organization_splits_cache() {
    let upstream = MockUpstream::start();
    let anthropic = MockUpstream::start();
    let proxy = Proxy::start(&upstream, &anthropic);
    let body = chat_body(MODEL, "same body");
    let with_org = |org: &'static str| {
        let [content_type, authorization] = client_headers();
        [content_type, authorization, ("openai-organization", org)]
    };

    let first = proxy.send("POST", "/v1/chat/completions", &with_org("org-one"), &body);
    let other = proxy.send("POST", "/v1/chat/completions", &with_org("org-two"), &body);
    let again = proxy.send("POST", "/v1/chat/completions", &with_org("org-one"), &body);

    assert_eq!(first.header("x-cco-cache"), Some("miss"), "first");
    assert_eq!(
        other.header("x-cco-cache"),
        Some("miss"),
        "another organization misses"
    );
    assert_eq!(
        again.header("x-cco-cache"),
        Some("hit"),
        "same organization"
    );
    assert_eq!(upstream.request_count(), 2, "upstream requests");
}

#[test]
fn provider_prefix_priced_at_zero() {
    let local = MockUpstream::start();
    let upstream = MockUpstream::start();
    let anthropic = MockUpstream::start();
    let config = format!(
        r#"
[[providers]]
name = "local"
prefix = "/local"
base_url = "{}"
api_key_env = "CCO_TEST_LOCAL_KEY"

[[providers.models]]
id = "llama3.2"
input = 0
output = 0
cache_write_5m = 0
cache_write_1h = 0
cache_read = 0
"#,
        local.base_url()
    );
    let options = options(&upstream, &anthropic).env("CCO_TEST_LOCAL_KEY", "sk-local-test");
    let proxy = Proxy::start_with(options, &config);

    let response = proxy.send(
        "POST",
        "/local/v1/chat/completions?x=1",
        &[("content-type", "application/json")],
        &chat_body("llama3.2", "hello local model"),
    );

    assert_eq!(response.status, 200, "status: {}", response.text());
    let request = only_request(&local);
    assert_eq!(
        request.path, "/v1/chat/completions?x=1",
        "the prefix is removed, the query kept"
    );
    assert_eq!(
        request.header_all("authorization"),
        ["Bearer sk-local-test"],
        "the key from api_key_env is sent"
    );
    assert_eq!(upstream.request_count(), 0, "nothing reaches OpenAI");
    assert_eq!(anthropic.request_count(), 0, "nothing reaches Anthropic");
    let stats = proxy.wait_for_recorded(1);
    let total = &stats["total"];
    assert!(
        total["tokens"]["output"].as_u64() > Some(0),
        "tokens are recorded: {total}"
    );
    assert_eq!(
        total["unpriced_requests"], 0,
        "priced, not unpriced: {total}"
    );
    assert_eq!(total["cost_nano_usd"], 0, "a local model costs $0: {total}");
    let row = model_row(&stats, "llama3.2");
    assert_eq!(row["priced"], true, "row: {row}");
}

#[test]
fn unknown_openai_model_unpriced() {
    let upstream = MockUpstream::start();
    let anthropic = MockUpstream::start();
    let proxy = Proxy::start(&upstream, &anthropic);

    let response = proxy.post_chat(&chat_body("gpt-mystery-1", "who knows"));

    assert_eq!(response.status, 200, "status: {}", response.text());
    let stats = proxy.wait_for_recorded(1);
    let total = &stats["total"];
    assert_eq!(total["unpriced_requests"], 1, "unpriced: {total}");
    assert_eq!(total["cost_nano_usd"], 0, "no cost is counted: {total}");
    let row = model_row(&stats, "gpt-mystery-1");
    assert_eq!(row["priced"], false, "row: {row}");
    assert!(
        row["totals"]["tokens"]["input"].as_u64() > Some(0),
        "its tokens are counted: {row}"
    );
}

#[test]
fn claude_model_unpriced_at_openai() {
    let upstream = MockUpstream::start();
    let anthropic = MockUpstream::start();
    let proxy = Proxy::start(&upstream, &anthropic);

    let response = proxy.post_chat(&chat_body("claude-sonnet-4-5", "wrong table"));

    assert_eq!(response.status, 200, "status: {}", response.text());
    let stats = proxy.wait_for_recorded(1);
    assert_eq!(
        stats["total"]["unpriced_requests"], 1,
        "OpenAI requests are priced only by OpenAI rows: {stats}"
    );
}

#[test]
fn routing_follows_rule() {
    let upstream = MockUpstream::start();
    let anthropic = MockUpstream::start();
    let proxy = Proxy::start(&upstream, &anthropic);
    let headers = client_headers();

    let models = proxy.send("GET", "/v1/models", &headers, b"");
    let prefixed = proxy.send("GET", "/openai/v1/models?limit=2", &headers, b"");
    let embeddings = proxy.send(
        "POST",
        "/v1/embeddings",
        &headers,
        br#"{"model":"text-embedding-3-small","input":"hi"}"#,
    );

    assert_eq!(models.status, 200, "GET /v1/models: {}", models.text());
    let to_anthropic = only_request(&anthropic);
    assert_eq!(
        to_anthropic.path, "/v1/models",
        "GET /v1/models goes to Anthropic"
    );
    assert_eq!(
        prefixed.status,
        200,
        "GET /openai/v1/models: {}",
        prefixed.text()
    );
    assert_eq!(embeddings.status, 404, "the mock has no embeddings");
    let to_openai = upstream.requests();
    assert_eq!(to_openai.len(), 2, "requests: {to_openai:?}");
    assert_eq!(
        to_openai[0].path, "/v1/models?limit=2",
        "/openai is removed, the query kept"
    );
    assert_eq!(
        to_openai[1].path, "/v1/embeddings",
        "embeddings go to OpenAI"
    );
}

#[test]
fn stream_without_done_is_cut() {
    let upstream = MockUpstream::start();
    let anthropic = MockUpstream::start();
    let events = openai::chat_chunks(MODEL, &["never", " finished"], Some(&openai::usage(4, 2)));
    let without_done = events.len() - 1;
    upstream.push_reply(Reply::sse(events).cut_after(without_done));
    let proxy = Proxy::start(&upstream, &anthropic);
    let body = chat_stream_body(MODEL, "cut me off", true);

    let cut = http::send(
        proxy.daemon.addr,
        "POST",
        "/v1/chat/completions",
        &client_headers(),
        &body,
    );
    let after = proxy.post_chat(&body);

    let err = cut.expect_err("a stream without [DONE] must not reach the client as complete");
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "error: {err}");
    assert_eq!(after.status, 200, "status after the cut: {}", after.text());
    assert_eq!(
        upstream.request_count(),
        2,
        "the cut stream must not be cached, so the second request goes upstream"
    );
    assert!(
        after.body.ends_with(openai::DONE_EVENT),
        "the second stream is complete"
    );
}

#[test]
fn proxy_errors_use_openai_format() {
    let anthropic = MockUpstream::start();
    let unreachable = format!("http://127.0.0.1:{}", closed_port());
    let options = DaemonOptions::new(&anthropic.base_url()).openai_upstream(&unreachable);
    let proxy = Proxy::start_with(options, "");

    let response = proxy.post_chat(&chat_body(MODEL, "nobody home"));

    assert_eq!(response.status, 502, "status: {}", response.text());
    let body = response.json();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(body["error"]["type"], "api_error", "type: {body}");
    assert!(message.contains(&unreachable), "message: {body}");
    assert!(message.contains("--openai-base-url"), "message: {body}");
    assert_eq!(body.get("type"), None, "not the Anthropic format: {body}");
}
