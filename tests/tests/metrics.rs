//! `GET /metrics` serves Prometheus text with the counters of the requests served.

use std::time::{Duration, Instant};

use cco_tests::daemon::{DaemonDirs, DaemonOptions, DaemonProcess};
use cco_tests::{anthropic, http, MockUpstream, Reply};

const MODEL: &str = "claude-haiku-4-5";

fn body(text: &str, stream: bool) -> Vec<u8> {
    serde_json::json!({
        "model": MODEL,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    })
    .to_string()
    .into_bytes()
}

fn metrics(daemon: &DaemonProcess) -> String {
    let response = http::send(daemon.addr, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    response.text()
}

/// Polls `/metrics` until it contains `line` or five seconds pass.
fn wait_for_line(daemon: &DaemonProcess, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(daemon);
        if text.contains(line) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_count_requests_cost_and_cache() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let usage = anthropic::usage(1000, 200);
    mock.push_reply(Reply::json(
        200,
        anthropic::message_json(MODEL, "priced", usage),
    ));
    let headers = [("x-api-key", "sk-ant-metrics")];
    for _ in 0..2 {
        let response = http::send(
            daemon.addr,
            "POST",
            "/v1/messages",
            &headers,
            &body("same", false),
        )
        .unwrap();
        assert_eq!(response.status, 200);
    }

    let hit_line = "cco_requests_total{provider=\"anthropic\",model=\"claude-haiku-4-5\",status=\"200\",cache=\"hit\"} 1\n";
    let text = wait_for_line(&daemon, hit_line);
    assert!(text.contains(hit_line), "{text}");
    assert!(
        text.contains("cco_requests_total{provider=\"anthropic\",model=\"claude-haiku-4-5\",status=\"200\",cache=\"miss\"} 1\n"),
        "{text}"
    );
    // haiku-4-5: 1000 in * 1000 + 200 out * 5000 = 2,000,000 nano-USD = $0.002.
    assert!(
        text.contains("cco_cost_usd_total{model=\"claude-haiku-4-5\"} 0.002000000\n"),
        "{text}"
    );
    assert!(
        text.contains("cco_saved_usd_total{model=\"claude-haiku-4-5\"} 0.002000000\n"),
        "{text}"
    );
    assert!(
        text.contains("cco_tokens_total{model=\"claude-haiku-4-5\",class=\"input\"} 1000\n"),
        "{text}"
    );
    assert!(text.contains("cco_cache_hits_total 1\n"), "{text}");
    assert!(text.contains("cco_cache_entries 1\n"), "{text}");
    assert!(
        text.contains("cco_request_duration_seconds_count{cache=\"hit\"} 1\n"),
        "{text}"
    );
    assert_eq!(
        mock.request_count(),
        1,
        "/metrics is answered by ccod, not forwarded"
    );
}

#[test]
fn in_flight_gauge_counts_open_streams() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let events = anthropic::sse_events(
        MODEL,
        &["one", " two", " three"],
        anthropic::usage(5, 1),
        anthropic::usage(5, 3),
    );
    mock.push_reply(Reply::sse(events).chunk_delay(Duration::from_millis(400)));
    let mut stream = http::open_stream(
        daemon.addr,
        "POST",
        "/v1/messages",
        &[("x-api-key", "sk-ant-metrics")],
        &body("slow", true),
    )
    .unwrap();
    assert!(stream.next_chunk(Duration::from_secs(5)).unwrap().is_some());

    let during = metrics(&daemon);
    assert!(during.contains("cco_in_flight_requests 1\n"), "{during}");
    stream.read_to_end(Duration::from_secs(10)).unwrap();
    let after = wait_for_line(&daemon, "cco_in_flight_requests 0\n");
    assert!(after.contains("cco_in_flight_requests 0\n"), "{after}");
}
