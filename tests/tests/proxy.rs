//! End-to-end tests of the proxy: the real `ccod` binary between the raw test client and the
//! mock upstream, checking the bytes and headers on both legs.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use cco_tests::daemon::{DaemonDirs, DaemonOptions, DaemonProcess};
use cco_tests::{anthropic, http, split_at_offsets, MockUpstream, RecordedRequest, Reply};
use serde_json::{json, Value};

const MODEL: &str = "claude-sonnet-4-5-20250929";
const API_KEY: &str = "sk-ant-client-test";
/// Deadline for an effect that follows a response, such as a record reaching the stats.
const DEADLINE: Duration = Duration::from_secs(5);
/// Pause between the chunks of a slow stream.
const CHUNK_DELAY: Duration = Duration::from_millis(300);

type Response = http::HttpResponse;

/// A running daemon and the directories it uses. Fields drop in order, so the daemon stops
/// before its directories are removed.
struct Proxy {
    daemon: DaemonProcess,
    _dirs: DaemonDirs,
}

impl Proxy {
    fn start(mock: &MockUpstream) -> Proxy {
        Proxy::start_with(&DaemonOptions::new(&mock.base_url()))
    }

    fn start_with(options: &DaemonOptions) -> Proxy {
        let dirs = DaemonDirs::new();
        let daemon = DaemonProcess::start(&dirs, options);
        Proxy {
            daemon,
            _dirs: dirs,
        }
    }

    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        http::send(self.daemon.addr, method, path, headers, body)
            .unwrap_or_else(|err| panic!("{method} {path} through ccod failed: {err}"))
    }

    /// Sends `POST /v1/messages` with the headers a typical client sends.
    fn post_messages(&self, body: &[u8]) -> Response {
        self.send("POST", "/v1/messages", &client_headers(), body)
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
    /// returns the last `total` read.
    fn wait_for_recorded(&self, count: u64) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let total = self.stats()["total"].clone();
            if total["requests"].as_u64() >= Some(count) || Instant::now() >= deadline {
                return total;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn client_headers() -> [(&'static str, &'static str); 3] {
    [
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("x-api-key", API_KEY),
    ]
}

fn message_body(text: &str, stream: bool) -> Vec<u8> {
    json!({
        "model": MODEL,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    })
    .to_string()
    .into_bytes()
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

/// Returns a port on 127.0.0.1 that was free a moment ago and has no listener now.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Asserts that `response` carries an error in the Anthropic format and returns its
/// `error.type` and `error.message`.
fn anthropic_error(response: &Response) -> (String, String) {
    let body = response.json();
    assert_eq!(body["type"], "error", "error body type: {body}");
    let kind = body["error"]["type"].as_str();
    let message = body["error"]["message"].as_str();
    assert!(kind.is_some(), "error.type should be a string: {body}");
    assert!(
        message.is_some(),
        "error.message should be a string: {body}"
    );
    (kind.unwrap().to_owned(), message.unwrap().to_owned())
}

#[test]
fn json_passes_bytes_unchanged() {
    let mock = MockUpstream::start();
    let reply = anthropic::message_json(MODEL, "plain answer", anthropic::usage(9, 2));
    mock.push_reply(Reply::json(200, reply.clone()));
    let proxy = Proxy::start(&mock);
    // Odd spacing and key order, which a proxy that re-serialised the JSON would change.
    let body = format!(
        r#"{{ "max_tokens" :64,"model": "{MODEL}",
  "messages":[{{"role":"user","content":"byte for byte"}}]  }}"#
    );

    let response = proxy.send(
        "POST",
        "/v1/messages?beta=true",
        &client_headers(),
        body.as_bytes(),
    );

    let request = only_request(&mock);
    assert_eq!(request.method, "POST", "upstream method");
    assert_eq!(request.path, "/v1/messages?beta=true", "upstream path");
    assert_eq!(request.body_text(), body, "upstream body");
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
fn stream_passes_bytes_unchanged() {
    let mock = MockUpstream::start();
    let events = anthropic::sse_events(
        MODEL,
        &["Hello", ", world"],
        anthropic::usage(7, 1),
        json!({"output_tokens": 3}),
    );
    mock.push_reply(Reply::sse(events.clone()));
    let proxy = Proxy::start(&mock);

    let response = proxy.post_messages(&message_body("stream please", true));

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
fn stream_events_arrive_before_end() {
    let mock = MockUpstream::start();
    let events = anthropic::sse_events(
        MODEL,
        &["one", " two", " three"],
        anthropic::usage(5, 1),
        json!({"output_tokens": 3}),
    );
    // 9 events, so the mock takes 8 chunk delays to send them all.
    mock.push_reply(Reply::sse(events.clone()).chunk_delay(CHUNK_DELAY));
    let proxy = Proxy::start(&mock);

    let mut stream = http::open_stream(
        proxy.daemon.addr,
        "POST",
        "/v1/messages",
        &client_headers(),
        &message_body("slow stream", true),
    )
    .expect("stream through ccod");
    let (first_at, first) = stream
        .next_chunk(DEADLINE)
        .expect("first chunk")
        .expect("the body is not empty");
    let mut body = first.clone();
    body.extend(stream.read_to_end(DEADLINE).expect("rest of the stream"));
    let ended_at = Instant::now();

    assert_eq!(stream.status, 200, "status");
    assert!(
        first.starts_with(b"event: message_start\n"),
        "first chunk: {:?}",
        String::from_utf8_lossy(&first)
    );
    assert!(
        ended_at - first_at >= 2 * CHUNK_DELAY,
        "the first chunk arrived only {:?} before the end, so ccod buffered the stream",
        ended_at - first_at
    );
    assert_eq!(body, events.concat(), "client body");
}

#[test]
fn split_chunks_pass_unchanged() {
    let mock = MockUpstream::start();
    let body = anthropic::sse_stream(
        MODEL,
        &["Café", " 日本", " done"],
        anthropic::usage(12, 1),
        json!({"output_tokens": 9}),
    );
    let find = |needle: &[u8]| {
        body.windows(needle.len())
            .position(|window| window == needle)
            .unwrap_or_else(|| panic!("{:?} is not in the stream", String::from_utf8_lossy(needle)))
    };
    let mut offsets = vec![
        // Inside the first `event:` line.
        3,
        // Between the two bytes of the first "\n\n".
        find(b"\n\n") + 1,
        // Inside the two-byte "é".
        find("é".as_bytes()) + 1,
        // Inside the three-byte "日", and again inside "本".
        find("日".as_bytes()) + 1,
        find("本".as_bytes()) + 2,
        // Inside the `message_delta` data line that carries the output tokens.
        find(b"\"output_tokens\":9") + 5,
    ];
    offsets.sort_unstable();
    mock.push_reply(Reply::sse(split_at_offsets(&body, &offsets)));
    let proxy = Proxy::start(&mock);

    let response = proxy.post_messages(&message_body("split it", true));

    assert_eq!(response.status, 200, "status: {}", response.text());
    assert_eq!(response.body, body, "client body: {}", response.text());
    let total = proxy.wait_for_recorded(1);
    assert_eq!(total["requests"], 1, "recorded requests: {total}");
    assert_eq!(
        total["tokens"]["input"], 12,
        "input tokens from message_start: {total}"
    );
    assert_eq!(
        total["tokens"]["output"], 9,
        "output tokens from message_delta: {total}"
    );
}

#[test]
fn request_headers_follow_rules() {
    let mock = MockUpstream::start();
    let proxy = Proxy::start(&mock);

    let response = proxy.send(
        "POST",
        "/v1/messages",
        &[
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "prompt-caching-2024-07-31"),
            ("anthropic-beta", "output-128k-2025-02-19"),
            ("x-api-key", API_KEY),
            ("x-custom", "Value With Case"),
            ("Connection", "close, X-Drop-Me"),
            ("X-Drop-Me", "connection-scoped"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0"),
            ("Accept-Encoding", "gzip, br"),
        ],
        &message_body("headers", false),
    );

    assert_eq!(response.status, 200, "status: {}", response.text());
    let request = only_request(&mock);
    assert_eq!(
        request.header_all("anthropic-version"),
        ["2023-06-01"],
        "anthropic-version"
    );
    assert_eq!(
        request.header_all("anthropic-beta"),
        ["prompt-caching-2024-07-31", "output-128k-2025-02-19"],
        "anthropic-beta, both values in order"
    );
    assert_eq!(
        request.header_all("x-custom"),
        ["Value With Case"],
        "custom header"
    );
    assert_eq!(
        request.header_all("content-type"),
        ["application/json"],
        "content-type"
    );
    for dropped in [
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "x-drop-me",
    ] {
        assert_eq!(
            request.header(dropped),
            None,
            "{dropped} is connection-specific and must not reach the upstream"
        );
    }
    assert_eq!(
        request.header_all("accept-encoding"),
        ["identity"],
        "accept-encoding is replaced by identity"
    );
}

#[test]
fn response_headers_pass_unchanged() {
    let mock = MockUpstream::start();
    let reply_headers = [
        ("request-id", "req_011CTest"),
        ("retry-after", "17"),
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "41"),
        ("anthropic-ratelimit-requests-reset", "2025-06-01T12:00:30Z"),
        ("anthropic-ratelimit-input-tokens-remaining", "29000"),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "2025-06-01T12:00:05Z",
        ),
        ("x-upstream-custom", "Mixed Case Value"),
        ("date", "Sun, 01 Jun 2025 12:00:00 GMT"),
    ];
    let mut reply = Reply::json(
        200,
        anthropic::message_json(MODEL, "with headers", anthropic::usage(3, 2)),
    );
    for (name, value) in reply_headers {
        reply = reply.header(name, value);
    }
    mock.push_reply(reply);
    let proxy = Proxy::start(&mock);

    let response = proxy.post_messages(&message_body("response headers", false));

    assert_eq!(response.status, 200, "status: {}", response.text());
    for (name, value) in reply_headers {
        assert_eq!(response.header_all(name), [value], "response header {name}");
    }
}

#[test]
fn client_api_key_forwarded() {
    let mock = MockUpstream::start();
    let proxy = Proxy::start(&mock);

    let response = proxy.post_messages(&message_body("key", false));

    assert_eq!(response.status, 200, "status: {}", response.text());
    let request = only_request(&mock);
    assert_eq!(request.header_all("x-api-key"), [API_KEY], "x-api-key");
    assert_eq!(request.header("authorization"), None, "authorization");
}

#[test]
fn bearer_token_forwarded() {
    let mock = MockUpstream::start();
    let proxy = Proxy::start(&mock);

    let response = proxy.send(
        "POST",
        "/v1/messages",
        &[
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("Authorization", "Bearer sk-ant-oat-bearer-test"),
        ],
        &message_body("bearer", false),
    );

    assert_eq!(response.status, 200, "status: {}", response.text());
    let request = only_request(&mock);
    assert_eq!(
        request.header_all("authorization"),
        ["Bearer sk-ant-oat-bearer-test"],
        "authorization"
    );
    assert_eq!(request.header("x-api-key"), None, "x-api-key");
}

#[test]
fn env_key_fills_missing_key() {
    let mock = MockUpstream::start();
    let proxy = Proxy::start_with(
        &DaemonOptions::new(&mock.base_url()).env("ANTHROPIC_API_KEY", "sk-ant-env-test"),
    );

    let response = proxy.send(
        "POST",
        "/v1/messages",
        &[
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
        ],
        &message_body("no key", false),
    );

    assert_eq!(response.status, 200, "status: {}", response.text());
    let request = only_request(&mock);
    assert_eq!(
        request.header_all("x-api-key"),
        ["sk-ant-env-test"],
        "x-api-key from ANTHROPIC_API_KEY"
    );
}

#[test]
fn client_key_overrides_env_key() {
    let mock = MockUpstream::start();
    let proxy = Proxy::start_with(
        &DaemonOptions::new(&mock.base_url()).env("ANTHROPIC_API_KEY", "sk-ant-env-test"),
    );

    let with_key = proxy.post_messages(&message_body("own key", false));
    let with_bearer = proxy.send(
        "POST",
        "/v1/messages",
        &[
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("authorization", "Bearer sk-ant-oat-bearer-test"),
        ],
        &message_body("own bearer", false),
    );

    assert_eq!(with_key.status, 200, "status: {}", with_key.text());
    assert_eq!(with_bearer.status, 200, "status: {}", with_bearer.text());
    let requests = mock.requests();
    assert_eq!(requests.len(), 2, "upstream requests");
    assert_eq!(
        requests[0].header_all("x-api-key"),
        [API_KEY],
        "x-api-key of the client that sent one"
    );
    assert_eq!(
        requests[1].header("x-api-key"),
        None,
        "no x-api-key for a client that sent a bearer token"
    );
    assert_eq!(
        requests[1].header_all("authorization"),
        ["Bearer sk-ant-oat-bearer-test"],
        "authorization"
    );
}

#[test]
fn upstream_errors_pass_unchanged() {
    let mock = MockUpstream::start();
    let proxy = Proxy::start(&mock);
    let cases = [
        Reply::error(400, "invalid_request_error", "messages: Field required"),
        Reply::error(401, "authentication_error", "invalid x-api-key"),
        Reply::rate_limited(30),
        Reply::error(500, "api_error", "Internal server error"),
        Reply::overloaded(),
    ];
    let expected = [
        (400, "invalid_request_error", "messages: Field required"),
        (401, "authentication_error", "invalid x-api-key"),
        (
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        ),
        (500, "api_error", "Internal server error"),
        (529, "overloaded_error", "Overloaded"),
    ];

    for (index, (reply, (status, kind, message))) in cases.into_iter().zip(expected).enumerate() {
        let request_id = format!("req_error_{index}");
        let reply = reply.header("request-id", &request_id);
        // Each case is sent twice, so the mock needs the reply twice.
        mock.push_reply(reply.clone());
        mock.push_reply(reply);
        let body = message_body(&format!("error case {index}"), false);
        let error_body = anthropic::error_json(kind, message);

        for attempt in ["first", "second"] {
            let before = mock.request_count();
            let response = proxy.post_messages(&body);

            assert_eq!(
                mock.request_count(),
                before + 1,
                "{status}, {attempt} request: an error must not be answered from the cache"
            );
            assert_eq!(
                response.status, status,
                "{status}, {attempt} request: status"
            );
            assert_eq!(
                response.body,
                error_body,
                "{status}, {attempt} request: body {}",
                response.text()
            );
            assert_eq!(
                response.header("content-type"),
                Some("application/json"),
                "{status}, {attempt} request: content-type"
            );
            assert_eq!(
                response.header("content-length"),
                Some(error_body.len().to_string().as_str()),
                "{status}, {attempt} request: content-length"
            );
            assert_eq!(
                response.header("request-id"),
                Some(request_id.as_str()),
                "{status}, {attempt} request: request-id"
            );
            let retry_after = (status == 429).then_some("30");
            assert_eq!(
                response.header("retry-after"),
                retry_after,
                "{status}, {attempt} request: retry-after"
            );
            assert_eq!(
                response.header("x-cco-cache"),
                Some("miss"),
                "{status}, {attempt} request: cache header"
            );
        }
    }
}

#[test]
fn unreachable_upstream_gets_502() {
    let upstream = format!("http://127.0.0.1:{}", closed_port());
    let proxy = Proxy::start_with(&DaemonOptions::new(&upstream));

    for attempt in ["first", "second"] {
        let response = proxy.post_messages(&message_body("anyone there", false));

        assert_eq!(response.status, 502, "{attempt} request: status");
        let (kind, message) = anthropic_error(&response);
        assert_eq!(kind, "api_error", "{attempt} request: error type");
        assert!(
            message.contains(&upstream),
            "{attempt} request: the message should name {upstream}: {message:?}"
        );
        assert_eq!(
            response.header("content-type"),
            Some("application/json"),
            "{attempt} request: content-type"
        );
    }
}

#[test]
fn slow_upstream_gets_504() {
    let mock = MockUpstream::start();
    mock.push_reply(Reply::default_response().delay(Duration::from_secs(3)));
    let proxy = Proxy::start_with(
        &DaemonOptions::new(&mock.base_url())
            .arg("--upstream-timeout")
            .arg("1"),
    );

    let started = Instant::now();
    let timed_out = proxy.post_messages(&message_body("too slow", false));
    let waited = started.elapsed();
    let after = proxy.post_messages(&message_body("fast again", false));

    assert_eq!(timed_out.status, 504, "status: {}", timed_out.text());
    let (_, message) = anthropic_error(&timed_out);
    assert!(
        message.contains(&mock.base_url()),
        "the message should name {}: {message:?}",
        mock.base_url()
    );
    assert!(
        waited < Duration::from_millis(2500),
        "the 504 came after {waited:?}, not after the 1 s timeout"
    );
    assert_eq!(
        after.status,
        200,
        "status after the timeout: {}",
        after.text()
    );
    assert_eq!(
        after.json()["content"][0]["text"],
        "Mock reply to: fast again",
        "reply after the timeout"
    );
}

#[test]
fn client_disconnect_cancels_upstream() {
    let mock = MockUpstream::start();
    let pieces: Vec<String> = (0..20).map(|index| format!(" word{index}")).collect();
    let piece_refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let events = anthropic::sse_events(
        MODEL,
        &piece_refs,
        anthropic::usage(11, 1),
        json!({"output_tokens": 20}),
    );
    // 27 events 300 ms apart: the whole stream would take almost 8 s.
    mock.push_reply(Reply::sse(events).chunk_delay(CHUNK_DELAY));
    let proxy = Proxy::start(&mock);

    let mut stream = http::open_stream(
        proxy.daemon.addr,
        "POST",
        "/v1/messages",
        &client_headers(),
        &message_body("long story", true),
    )
    .expect("stream through ccod");
    let first = stream.next_chunk(DEADLINE).expect("first chunk");
    assert!(first.is_some(), "the stream ended before its first chunk");
    stream.close();

    assert!(
        mock.wait_for_disconnects(1, DEADLINE),
        "the upstream connection stayed open after the client left"
    );
    let total = proxy.wait_for_recorded(1);
    assert_eq!(total["requests"], 1, "recorded requests: {total}");
    assert_eq!(
        total["tokens"]["input"], 11,
        "input tokens from message_start: {total}"
    );
    // The final count of 20 comes with message_delta, after every text piece.
    assert_eq!(
        total["tokens"]["output"], 1,
        "output tokens from message_start: {total}"
    );

    // The abandoned stream was not cached, so the same request goes upstream again.
    let after = proxy.post_messages(&message_body("long story", true));
    assert_eq!(
        after.status,
        200,
        "status after the disconnect: {}",
        after.text()
    );
    assert_eq!(after.header("x-cco-cache"), Some("miss"));
    assert_eq!(
        mock.request_count(),
        2,
        "requests that reached the upstream"
    );
}

#[test]
fn cut_stream_stays_cut() {
    let mock = MockUpstream::start();
    let events = anthropic::sse_events(
        MODEL,
        &["never", " finished"],
        anthropic::usage(4, 1),
        json!({"output_tokens": 2}),
    );
    mock.push_reply(Reply::sse(events).cut_after(3));
    let proxy = Proxy::start(&mock);
    let body = message_body("cut me off", true);

    let cut = http::send(
        proxy.daemon.addr,
        "POST",
        "/v1/messages",
        &client_headers(),
        &body,
    );
    let after = proxy.post_messages(&body);

    let err = cut.expect_err("a cut stream must not reach the client as a complete body");
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "error: {err}");
    assert_eq!(after.status, 200, "status after the cut: {}", after.text());
    assert_eq!(
        mock.request_count(),
        2,
        "the cut stream must not be cached, so the second request goes upstream"
    );
    let events = anthropic::parse_sse_events(&after.body);
    assert_eq!(
        events.last().map(|(name, _)| name.as_str()),
        Some("message_stop"),
        "the second stream is complete"
    );
}

#[test]
fn other_paths_forwarded() {
    let mock = MockUpstream::start();
    let count_reply = br#"{"input_tokens":42}"#.to_vec();
    let models_reply = br#"{"data":[],"has_more":false,"first_id":null,"last_id":null}"#.to_vec();
    let unknown_reply = anthropic::error_json("not_found_error", "Not found: /v1/whatever");
    mock.push_reply(Reply::json(200, count_reply.clone()));
    mock.push_reply(Reply::json(200, models_reply.clone()));
    mock.push_reply(Reply::json(404, unknown_reply.clone()));
    let proxy = Proxy::start(&mock);
    let count_body =
        br#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"count"}]}"#;

    let counted = proxy.send(
        "POST",
        "/v1/messages/count_tokens",
        &client_headers(),
        count_body,
    );
    let models = proxy.send("GET", "/v1/models", &client_headers(), b"");
    let unknown = proxy.send("GET", "/v1/whatever?x=1", &client_headers(), b"");

    let requests = mock.requests();
    let targets: Vec<(&str, &str)> = requests
        .iter()
        .map(|request| (request.method.as_str(), request.path.as_str()))
        .collect();
    assert_eq!(
        targets,
        [
            ("POST", "/v1/messages/count_tokens"),
            ("GET", "/v1/models"),
            ("GET", "/v1/whatever?x=1"),
        ],
        "upstream requests"
    );
    assert_eq!(requests[0].body, count_body, "count_tokens upstream body");
    assert!(requests[1].body.is_empty(), "GET /v1/models upstream body");

    assert_eq!(counted.status, 200, "count_tokens status");
    assert_eq!(counted.body, count_reply, "count_tokens body");
    assert_eq!(
        counted.header("x-cco-cache"),
        Some("miss"),
        "count_tokens is cacheable"
    );
    assert_eq!(models.status, 200, "models status");
    assert_eq!(models.body, models_reply, "models body");
    assert_eq!(
        models.header("x-cco-cache"),
        Some("bypass"),
        "GET /v1/models is not cached"
    );
    assert_eq!(unknown.status, 404, "unknown path status");
    assert_eq!(unknown.body, unknown_reply, "unknown path body");
    assert_eq!(
        unknown.header("x-cco-cache"),
        Some("bypass"),
        "an unknown path is not cached"
    );
}

#[test]
fn oversized_body_gets_413() {
    let mock = MockUpstream::start();
    let proxy = Proxy::start_with(
        &DaemonOptions::new(&mock.base_url())
            .arg("--max-body-size")
            .arg("1"),
    );
    let text = "x".repeat(2 * 1024 * 1024);

    let response = proxy.post_messages(&message_body(&text, false));

    assert_eq!(response.status, 413, "status: {}", response.text());
    let (kind, message) = anthropic_error(&response);
    assert_eq!(kind, "request_too_large", "error type");
    assert!(
        message.contains("--max-body-size"),
        "the message should name the flag: {message:?}"
    );
    assert_eq!(mock.request_count(), 0, "the upstream must receive nothing");
}

#[test]
fn oversized_chunked_body_gets_413() {
    let mock = MockUpstream::start();
    let proxy = Proxy::start_with(
        &DaemonOptions::new(&mock.base_url())
            .arg("--max-body-size")
            .arg("1"),
    );
    let body = message_body(&"y".repeat(2 * 1024 * 1024), false);
    let pieces: Vec<&[u8]> = body.chunks(64 * 1024).collect();

    let response = proxy.send(
        "POST",
        "/v1/messages",
        &[
            ("content-type", "application/json"),
            ("x-api-key", API_KEY),
            ("transfer-encoding", "chunked"),
        ],
        &http::encode_chunked(&pieces),
    );

    assert_eq!(response.status, 413, "status: {}", response.text());
    let (kind, _) = anthropic_error(&response);
    assert_eq!(kind, "request_too_large", "error type");
    assert_eq!(mock.request_count(), 0, "the upstream must receive nothing");
}

#[test]
fn cut_json_stays_cut() {
    let mock = MockUpstream::start();
    let body = anthropic::message_json(MODEL, "cut short", anthropic::usage(4, 2));
    let mut raw = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body[..body.len() / 2]);
    mock.push_reply(Reply::raw(raw));
    let proxy = Proxy::start(&mock);

    let request = message_body("cut json", false);

    let cut = http::send(
        proxy.daemon.addr,
        "POST",
        "/v1/messages",
        &client_headers(),
        &request,
    );
    let after = proxy.post_messages(&request);

    let err = cut.expect_err("a cut body must not reach the client as a complete one");
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "error: {err}");
    assert_eq!(after.status, 200, "status after the cut: {}", after.text());
    assert_eq!(
        mock.request_count(),
        2,
        "the cut body must not be cached, so the second request goes upstream"
    );
}

#[test]
fn cut_chunked_json_stays_cut() {
    let mock = MockUpstream::start();
    let body = anthropic::message_json(MODEL, "cut short", anthropic::usage(4, 2));
    let mut raw =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    raw.extend_from_slice(&http::encode_chunked(&[&body[..body.len() / 2]]));
    // Drop the terminating chunk, so the body ends at a chunk boundary without it.
    raw.truncate(raw.len() - b"0\r\n\r\n".len());
    mock.push_reply(Reply::raw(raw));
    let proxy = Proxy::start(&mock);

    let cut = http::send(
        proxy.daemon.addr,
        "POST",
        "/v1/messages",
        &client_headers(),
        &message_body("cut chunked json", false),
    );

    let err = cut.expect_err("a cut body must not reach the client as a complete one");
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "error: {err}");
}
