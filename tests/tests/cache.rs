//! End-to-end tests of the response cache: the real `ccod` in front of the mock upstream.

use std::time::{Duration, Instant};

use cco_tests::daemon::{DaemonDirs, DaemonOptions, DaemonProcess};
use cco_tests::http::HttpResponse;
use cco_tests::{anthropic, ctl, http, MockUpstream, Reply};
use serde_json::{json, Value};

const MODEL: &str = "claude-sonnet-4-5";
const KEY_A: &str = "sk-ant-test-key-a";
const KEY_B: &str = "sk-ant-test-key-b";
const MESSAGES: &str = "/v1/messages";

/// Headers of a plain client request with key A.
const HEADERS: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("anthropic-version", "2023-06-01"),
    ("x-api-key", KEY_A),
];

/// A changed request: what changed, path, headers and body.
type Variant<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8]);

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

fn post_to(
    daemon: &DaemonProcess,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    http::send(daemon.addr, "POST", path, headers, body)
        .unwrap_or_else(|err| panic!("POST {path} through ccod failed: {err}"))
}

fn post(daemon: &DaemonProcess, body: &[u8]) -> HttpResponse {
    post_to(daemon, MESSAGES, HEADERS, body)
}

fn cache_header(response: &HttpResponse) -> Option<&str> {
    response.header("x-cco-cache")
}

fn start(mock: &MockUpstream, args: &[&str]) -> (DaemonDirs, DaemonProcess) {
    let dirs = DaemonDirs::new();
    let mut options = DaemonOptions::new(&mock.base_url());
    for arg in args {
        options = options.arg(arg);
    }
    let daemon = DaemonProcess::start(&dirs, &options);
    (dirs, daemon)
}

/// Builds a 200 JSON reply whose text block is `size` bytes long.
fn large_reply(size: usize) -> Reply {
    let text = "x".repeat(size);
    Reply::json(
        200,
        anthropic::message_json(MODEL, &text, anthropic::usage(10, 100)),
    )
}

#[test]
fn second_request_hits() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, &[]);
    let body = message_body("remember this", false);

    let first = post(&daemon, &body);
    ctl::wait_for_records(&daemon, 1);
    let second = post(&daemon, &body);

    assert_eq!(first.status, 200, "first response: {}", first.text());
    assert_eq!(cache_header(&first), Some("miss"), "first request");
    assert_eq!(second.status, 200, "second response: {}", second.text());
    assert_eq!(cache_header(&second), Some("hit"), "second request");
    assert_eq!(
        second.body, first.body,
        "a hit replays the stored body bytes"
    );
    assert_eq!(mock.request_count(), 1, "upstream requests");
}

#[test]
fn canonical_body_hits() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, &[]);
    let compact = br#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"same request"}]}"#;
    let reordered = br#"{
        "messages" : [ { "content" : "same request", "role" : "user" } ],
        "max_tokens" : 64,
        "model" : "claude-sonnet-4-5"
    }"#;

    let first = post(&daemon, compact);
    ctl::wait_for_records(&daemon, 1);
    let second = post(&daemon, reordered);

    assert_eq!(cache_header(&first), Some("miss"), "compact body");
    assert_eq!(
        cache_header(&second),
        Some("hit"),
        "reordered keys and other whitespace"
    );
    assert_eq!(second.body, first.body, "replayed body");
    assert_eq!(mock.request_count(), 1, "upstream requests");
}

#[test]
fn count_tokens_cached() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, &[]);
    let body =
        br#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"count these"}]}"#;

    let first = post_to(&daemon, "/v1/messages/count_tokens", HEADERS, body);
    ctl::wait_for_records(&daemon, 1);
    let second = post_to(&daemon, "/v1/messages/count_tokens", HEADERS, body);

    assert_eq!(first.status, 200, "first count: {}", first.text());
    assert_eq!(cache_header(&first), Some("miss"), "first count");
    assert_eq!(cache_header(&second), Some("hit"), "second count");
    assert_eq!(second.body, first.body, "replayed count");
    assert_eq!(mock.request_count(), 1, "upstream requests");
}

#[test]
fn other_endpoints_bypass() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, &[]);

    for attempt in 1..=2 {
        let response = http::send(daemon.addr, "GET", "/v1/models", HEADERS, b"")
            .unwrap_or_else(|err| panic!("GET /v1/models through ccod failed: {err}"));
        ctl::wait_for_records(&daemon, attempt);
        assert_eq!(response.status, 200, "GET /v1/models: {}", response.text());
        assert_eq!(
            cache_header(&response),
            Some("bypass"),
            "GET /v1/models, attempt {attempt}"
        );
    }

    assert_eq!(mock.request_count(), 2, "upstream requests");
}

#[test]
fn changed_request_misses() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, &[]);
    let base = message_body("vary me", false);
    let other_max_tokens = json!({
        "model": MODEL,
        "max_tokens": 65,
        "stream": false,
        "messages": [{"role": "user", "content": "vary me"}],
    })
    .to_string()
    .into_bytes();
    let other_version: &[(&str, &str)] = &[
        ("content-type", "application/json"),
        ("anthropic-version", "2024-01-01"),
        ("x-api-key", KEY_A),
    ];
    let with_beta: &[(&str, &str)] = &[
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "prompt-caching-2024-07-31"),
        ("x-api-key", KEY_A),
    ];
    let variants: [Variant; 4] = [
        ("max_tokens", MESSAGES, HEADERS, &other_max_tokens),
        ("anthropic-version", MESSAGES, other_version, &base),
        ("anthropic-beta", MESSAGES, with_beta, &base),
        ("query", "/v1/messages?beta=true", HEADERS, &base),
    ];

    let stored = post(&daemon, &base);
    assert_eq!(cache_header(&stored), Some("miss"), "base request");
    let mut recorded = 1;
    ctl::wait_for_records(&daemon, recorded);
    for (changed, path, headers, body) in variants {
        let upstream_before = mock.request_count();
        let response = post_to(&daemon, path, headers, body);
        assert_eq!(response.status, 200, "{changed}: {}", response.text());
        assert_eq!(cache_header(&response), Some("miss"), "changed {changed}");
        assert_eq!(
            mock.request_count(),
            upstream_before + 1,
            "changed {changed} reaches the upstream"
        );
        recorded += 1;
        ctl::wait_for_records(&daemon, recorded);
    }

    let again = post(&daemon, &base);
    assert_eq!(cache_header(&again), Some("hit"), "base request again");
}

#[test]
fn cache_isolates_credentials() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, &[]);
    let body = message_body("whose answer is this", false);
    let headers_b: &[(&str, &str)] = &[
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("x-api-key", KEY_B),
    ];

    let first_a = post(&daemon, &body);
    ctl::wait_for_records(&daemon, 1);
    let first_b = post_to(&daemon, MESSAGES, headers_b, &body);
    ctl::wait_for_records(&daemon, 2);
    let second_a = post(&daemon, &body);
    let second_b = post_to(&daemon, MESSAGES, headers_b, &body);

    assert_eq!(cache_header(&first_b), Some("miss"), "key B after key A");
    assert_ne!(
        first_b.json()["id"],
        first_a.json()["id"],
        "key B gets its own upstream response"
    );
    assert_eq!(mock.request_count(), 2, "upstream requests");
    assert_eq!(mock.requests()[1].header("x-api-key"), Some(KEY_B));
    assert_eq!(cache_header(&second_a), Some("hit"), "key A again");
    assert_eq!(second_a.body, first_a.body, "key A replays its own entry");
    assert_eq!(cache_header(&second_b), Some("hit"), "key B again");
    assert_eq!(second_b.body, first_b.body, "key B replays its own entry");
}

#[test]
fn cache_control_bypasses() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, &[]);
    let mut recorded = 0;
    for directive in ["no-cache", "no-store"] {
        let body = message_body(&format!("fresh answer with {directive}"), false);
        let headers: &[(&str, &str)] = &[
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("x-api-key", KEY_A),
            ("cache-control", directive),
        ];

        let upstream_before = mock.request_count();
        let opted_out = post_to(&daemon, MESSAGES, headers, &body);
        recorded += 1;
        ctl::wait_for_records(&daemon, recorded);
        assert_eq!(opted_out.status, 200, "{directive}: {}", opted_out.text());
        assert_eq!(cache_header(&opted_out), Some("bypass"), "{directive}");
        assert_eq!(
            mock.request_count(),
            upstream_before + 1,
            "{directive} reaches the upstream"
        );

        let plain = post(&daemon, &body);
        recorded += 1;
        ctl::wait_for_records(&daemon, recorded);
        assert_eq!(
            cache_header(&plain),
            Some("miss"),
            "plain request after {directive}: nothing was stored"
        );

        let opted_out_again = post_to(&daemon, MESSAGES, headers, &body);
        recorded += 1;
        ctl::wait_for_records(&daemon, recorded);
        assert_eq!(
            cache_header(&opted_out_again),
            Some("bypass"),
            "{directive} with an entry stored"
        );
        assert_eq!(
            mock.request_count(),
            upstream_before + 3,
            "{directive} skips a stored entry"
        );
    }
}

#[test]
fn errors_not_cached() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, &[]);
    let body = message_body("fail first", false);
    mock.push_reply(Reply::error(500, "api_error", "Internal server error"));

    let failed = post(&daemon, &body);
    ctl::wait_for_records(&daemon, 1);
    let retried = post(&daemon, &body);

    assert_eq!(failed.status, 500, "scripted error");
    assert_eq!(retried.status, 200, "retry: {}", retried.text());
    assert_eq!(
        cache_header(&retried),
        Some("miss"),
        "request after an error"
    );
    assert_eq!(mock.request_count(), 2, "upstream requests");
}

#[test]
fn aborted_stream_not_cached() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, &[]);
    let body = message_body("cut me off", true);
    let events = anthropic::sse_events(
        MODEL,
        &["partial", " answer"],
        anthropic::usage(5, 1),
        anthropic::usage(5, 2),
    );
    mock.push_reply(Reply::sse(events).cut_after(3));

    // How the client sees the cut is a property of the relay, not of the cache.
    let _cut = http::send(daemon.addr, "POST", MESSAGES, HEADERS, &body);
    ctl::wait_for_records(&daemon, 1);
    let retried = post(&daemon, &body);

    assert_eq!(retried.status, 200, "retry: {}", retried.text());
    assert_eq!(
        cache_header(&retried),
        Some("miss"),
        "request after a cut stream"
    );
    assert_eq!(mock.request_count(), 2, "upstream requests");
}

#[test]
fn truncated_json_not_cached() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, &[]);
    let body = message_body("half a body", false);
    let message = anthropic::message_json(MODEL, "complete text", anthropic::usage(5, 2));
    let mut raw = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        message.len()
    )
    .into_bytes();
    raw.extend_from_slice(&message[..message.len() / 2]);
    mock.push_reply(Reply::raw(raw));

    let _truncated = http::send(daemon.addr, "POST", MESSAGES, HEADERS, &body);
    ctl::wait_for_records(&daemon, 1);
    let retried = post(&daemon, &body);

    assert_eq!(retried.status, 200, "retry: {}", retried.text());
    assert_eq!(
        cache_header(&retried),
        Some("miss"),
        "request after a truncated body"
    );
    assert_eq!(mock.request_count(), 2, "upstream requests");
}

#[test]
fn stream_without_stop_not_cached() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, &[]);
    let body = message_body("never stops", true);
    let mut events = anthropic::sse_events(
        MODEL,
        &["no", " stop"],
        anthropic::usage(5, 1),
        anthropic::usage(5, 2),
    );
    let last = events.pop().expect("the stream has events");
    assert!(
        String::from_utf8_lossy(&last).starts_with("event: message_stop"),
        "the removed event is message_stop"
    );
    mock.push_reply(Reply::sse(events));

    let unfinished = http::send(daemon.addr, "POST", MESSAGES, HEADERS, &body);
    ctl::wait_for_records(&daemon, 1);
    let retried = post(&daemon, &body);

    let err = unfinished.expect_err("a stream without message_stop reaches the client as cut");
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::UnexpectedEof,
        "error: {err}"
    );
    assert_eq!(
        cache_header(&retried),
        Some("miss"),
        "request after a stream without message_stop"
    );
    assert_eq!(mock.request_count(), 2, "upstream requests");
}

#[test]
fn stream_hit_replays_events() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, &[]);
    let streamed = message_body("stream and replay", true);

    let first = post(&daemon, &streamed);
    ctl::wait_for_records(&daemon, 1);
    let second = post(&daemon, &streamed);

    assert_eq!(cache_header(&first), Some("miss"), "first stream");
    assert_eq!(cache_header(&second), Some("hit"), "second stream");
    assert_eq!(second.body, first.body, "replayed SSE bytes");
    assert_eq!(
        second.header("content-type"),
        Some("text/event-stream"),
        "replayed content-type"
    );
    assert_eq!(
        second.header("content-length"),
        None,
        "a replayed stream has no content-length"
    );
    let names: Vec<String> = anthropic::parse_sse_events(&second.body)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        names.last().map(String::as_str),
        Some("message_stop"),
        "replayed events: {names:?}"
    );
    assert_eq!(mock.request_count(), 1, "upstream requests");

    let plain = post(&daemon, &message_body("stream and replay", false));
    assert_eq!(
        cache_header(&plain),
        Some("miss"),
        "same request with stream false"
    );
    assert_eq!(
        plain.header("content-type"),
        Some("application/json"),
        "non-streaming content-type"
    );
    assert_eq!(plain.json()["type"], "message", "non-streaming body");
    assert_eq!(mock.request_count(), 2, "upstream requests");
}

#[test]
fn entry_expires_after_ttl() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, &["--cache-ttl", "1"]);
    let body = message_body("short lived", false);

    let sent_at = Instant::now();
    let first = post(&daemon, &body);
    ctl::wait_for_records(&daemon, 1);
    let fresh = post(&daemon, &body);
    let fresh_at = sent_at.elapsed();
    let expired_at = sent_at + Duration::from_millis(1500);
    std::thread::sleep(expired_at.saturating_duration_since(Instant::now()));
    let expired = post(&daemon, &body);

    assert_eq!(cache_header(&first), Some("miss"), "first request");
    assert!(
        fresh_at < Duration::from_secs(1),
        "the second request took {fresh_at:?}, past the TTL"
    );
    assert_eq!(cache_header(&fresh), Some("hit"), "within the TTL");
    assert_eq!(cache_header(&expired), Some("miss"), "after the TTL");
    assert_eq!(mock.request_count(), 2, "upstream requests");
    assert_eq!(ctl::cache_stats(&daemon).expirations, 1, "expirations");
}

#[test]
fn lru_evicts_oldest() {
    let mock = MockUpstream::start();
    // 1 MiB has room for two responses of about 400 KB but not for three.
    let (_dirs, daemon) = start(&mock, &["--cache-size", "1"]);
    let body_a = message_body("large a", false);
    let body_b = message_body("large b", false);
    let body_c = message_body("large c", false);
    let mut recorded = 0;
    let mut send = |body: &[u8]| {
        let response = post(&daemon, body);
        recorded += 1;
        ctl::wait_for_records(&daemon, recorded);
        response
    };

    mock.push_reply(large_reply(400_000));
    mock.push_reply(large_reply(400_000));
    let stored_a = send(&body_a);
    let stored_b = send(&body_b);
    let touched_a = send(&body_a);
    mock.push_reply(large_reply(400_000));
    let stored_c = send(&body_c);
    let after_c = ctl::cache_stats(&daemon);
    let hit_a = send(&body_a);
    let hit_c = send(&body_c);
    mock.push_reply(large_reply(400_000));
    let evicted_b = send(&body_b);

    assert_eq!(cache_header(&stored_a), Some("miss"), "A stored");
    assert_eq!(cache_header(&stored_b), Some("miss"), "B stored");
    assert_eq!(cache_header(&touched_a), Some("hit"), "A used before C");
    assert_eq!(cache_header(&stored_c), Some("miss"), "C stored");
    assert_eq!(after_c.evictions, 1, "evictions after storing C");
    assert_eq!(after_c.entries, 2, "entries after storing C");
    assert!(
        after_c.bytes <= after_c.capacity_bytes,
        "{} bytes stored over a capacity of {}",
        after_c.bytes,
        after_c.capacity_bytes
    );
    assert_eq!(
        cache_header(&hit_a),
        Some("hit"),
        "A, recently used, is kept"
    );
    assert_eq!(cache_header(&hit_c), Some("hit"), "C, newest, is kept");
    assert_eq!(
        cache_header(&evicted_b),
        Some("miss"),
        "B, least recently used, is evicted"
    );
    assert_eq!(mock.request_count(), 4, "upstream requests");
    assert_eq!(
        ctl::cache_stats(&daemon).evictions,
        2,
        "storing B again evicts A"
    );
}

#[test]
fn cache_survives_restart() {
    let mock = MockUpstream::start();
    let (dirs, daemon) = start(&mock, &[]);
    let body = message_body("keep me on disk", false);

    let first = post(&daemon, &body);
    ctl::wait_for_records(&daemon, 1);
    assert_eq!(daemon.shutdown(), Some(0), "exit code of the first ccod");
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let after_restart = post(&daemon, &body);

    assert_eq!(cache_header(&first), Some("miss"), "before the restart");
    assert_eq!(
        cache_header(&after_restart),
        Some("hit"),
        "after the restart"
    );
    assert_eq!(after_restart.body, first.body, "replayed body");
    assert_eq!(mock.request_count(), 1, "upstream requests");
}

#[test]
fn cache_clear_empties() {
    let mock = MockUpstream::start();
    let (dirs, daemon) = start(&mock, &[]);
    let body_a = message_body("clear a", false);
    let body_b = message_body("clear b", false);

    post(&daemon, &body_a);
    post(&daemon, &body_b);
    ctl::wait_for_records(&daemon, 2);
    let cleared = ctl::text(&daemon, &["cache", "clear"]);
    let after_clear = ctl::cache_stats(&daemon);
    let b_after_clear = post(&daemon, &body_b);
    ctl::wait_for_records(&daemon, 3);
    assert_eq!(daemon.shutdown(), Some(0), "exit code of the first ccod");
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let a_after_restart = post(&daemon, &body_a);
    let b_after_restart = post(&daemon, &body_b);

    assert!(
        cleared.starts_with("removed 2 cache entries"),
        "ccoctl cache clear printed {cleared:?}"
    );
    assert_eq!(after_clear.entries, 0, "entries after clear");
    assert_eq!(after_clear.bytes, 0, "bytes after clear");
    assert_eq!(cache_header(&b_after_clear), Some("miss"), "B after clear");
    assert_eq!(
        cache_header(&a_after_restart),
        Some("miss"),
        "A after clear and restart"
    );
    assert_eq!(
        cache_header(&b_after_restart),
        Some("hit"),
        "B, stored again after the clear, survives the restart"
    );
    assert_eq!(mock.request_count(), 4, "upstream requests");
}

#[test]
fn no_cache_bypasses() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, &["--no-cache"]);
    let bodies = [
        message_body("uncached", false),
        message_body("uncached", false),
        message_body("uncached stream", true),
        message_body("uncached stream", true),
    ];

    for (index, body) in bodies.iter().enumerate() {
        let response = post(&daemon, body);
        ctl::wait_for_records(&daemon, index as u64 + 1);
        assert_eq!(response.status, 200, "request {index}: {}", response.text());
        assert_eq!(cache_header(&response), Some("bypass"), "request {index}");
    }

    assert_eq!(mock.request_count(), bodies.len(), "upstream requests");
    let cache: Value = ctl::json(&daemon, &["cache", "stats", "--json"]);
    assert_eq!(cache["enabled"], false, "cache stats with --no-cache");
    let clear = daemon.ctl(&["cache", "clear"]);
    let stderr = String::from_utf8_lossy(&clear.stderr);
    assert_eq!(
        clear.status.code(),
        Some(1),
        "cache clear with --no-cache: {stderr}"
    );
    assert!(
        stderr.contains("--no-cache"),
        "the error names --no-cache: {stderr}"
    );
}
