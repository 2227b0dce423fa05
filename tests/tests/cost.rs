//! End-to-end tests of usage and cost analytics, read back with `ccoctl stats`.
//!
//! Every expected cost is worked out in a comment from the rates in
//! `daemon/src/prices.toml`. A rate of $X per million tokens is X * 1000 nano-USD per token.

use std::time::{Duration, Instant};

use cco_proto::{GroupTotals, StatsReply, TokenCounts};
use cco_tests::daemon::{DaemonDirs, DaemonOptions, DaemonProcess};
use cco_tests::http::HttpResponse;
use cco_tests::{anthropic, ctl, http, MockUpstream, Reply};
use serde_json::{json, Value};

const SONNET: &str = "claude-sonnet-4-5";

const HEADERS: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("anthropic-version", "2023-06-01"),
    ("x-api-key", "sk-ant-test-cost"),
];

fn request_body(model: &str, text: &str, stream: bool) -> Vec<u8> {
    json!({
        "model": model,
        "max_tokens": 1024,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    })
    .to_string()
    .into_bytes()
}

fn post(daemon: &DaemonProcess, body: &[u8]) -> HttpResponse {
    let response = http::send(daemon.addr, "POST", "/v1/messages", HEADERS, body)
        .unwrap_or_else(|err| panic!("POST /v1/messages through ccod failed: {err}"));
    assert_eq!(response.status, 200, "response: {}", response.text());
    response
}

/// Queues a JSON reply of `response_model` with `usage`, sends a request for
/// `request_model` with a text of its own so that it misses the cache, and returns the
/// stats once the daemon recorded `recorded` requests.
fn send_scripted(
    mock: &MockUpstream,
    daemon: &DaemonProcess,
    request_model: &str,
    response_model: &str,
    usage: Value,
    recorded: u64,
) -> StatsReply {
    mock.push_reply(Reply::json(
        200,
        anthropic::message_json(response_model, "priced answer", usage),
    ));
    let text = format!("request number {recorded} for {request_model}");
    post(daemon, &request_body(request_model, &text, false));
    ctl::wait_for_records(daemon, recorded)
}

fn start(mock: &MockUpstream) -> (DaemonDirs, DaemonProcess) {
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    (dirs, daemon)
}

fn model_row<'a>(stats: &'a StatsReply, model: &str) -> &'a GroupTotals {
    stats
        .rows
        .iter()
        .find(|row| row.group == model)
        .unwrap_or_else(|| panic!("no stats row for {model}: {:?}", stats.rows))
}

#[test]
fn every_token_class_priced() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock);
    let usage = json!({
        "input_tokens": 1000,
        "output_tokens": 500,
        "cache_creation_input_tokens": 3000,
        "cache_read_input_tokens": 4000,
        "cache_creation": {
            "ephemeral_5m_input_tokens": 1000,
            "ephemeral_1h_input_tokens": 2000,
        },
    });

    let stats = send_scripted(&mock, &daemon, SONNET, SONNET, usage, 1);

    // sonnet-4-5: 1000 in * 3000 + 500 out * 15000 + 1000 5m writes * 3750
    // + 2000 1h writes * 6000 + 4000 reads * 300
    // = 3_000_000 + 7_500_000 + 3_750_000 + 12_000_000 + 1_200_000 = 27_450_000 nano-USD.
    // The 8000 input tokens of all classes stay below the 200K long-context threshold.
    let expected_tokens = TokenCounts {
        input: 1000,
        output: 500,
        cache_write_5m: 1000,
        cache_write_1h: 2000,
        cache_read: 4000,
    };
    assert_eq!(stats.total.requests, 1, "requests");
    assert_eq!(stats.total.tokens, expected_tokens, "token classes");
    assert_eq!(stats.total.cost_nano_usd, 27_450_000, "total cost");
    assert_eq!(stats.total.unpriced_requests, 0, "unpriced requests");
    assert_eq!(stats.rows.len(), 1, "rows: {:?}", stats.rows);
    let row = model_row(&stats, SONNET);
    assert!(row.priced, "{SONNET} is priced");
    assert_eq!(row.totals.cost_nano_usd, 27_450_000, "row cost");
    assert_eq!(row.totals.tokens, expected_tokens, "row tokens");
}

#[test]
fn write_without_split_is_5m() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock);
    let usage = anthropic::usage_with_cache(100, 10, 2000, 0);

    let stats = send_scripted(&mock, &daemon, SONNET, SONNET, usage, 1);

    // sonnet-4-5: 100 in * 3000 + 10 out * 15000 + 2000 5m writes * 3750
    // = 300_000 + 150_000 + 7_500_000 = 7_950_000 nano-USD.
    assert_eq!(stats.total.tokens.cache_write_5m, 2000, "5-minute writes");
    assert_eq!(stats.total.tokens.cache_write_1h, 0, "1-hour writes");
    assert_eq!(stats.total.cost_nano_usd, 7_950_000, "total cost");
}

#[test]
fn stream_output_is_cumulative() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock);
    let mut events = anthropic::sse_events(
        SONNET,
        &["forty", " two"],
        anthropic::usage(200, 1),
        json!({"output_tokens": 42}),
    );
    let early_delta = anthropic::sse_event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": null, "stop_sequence": null},
            "usage": {"output_tokens": 10},
        }),
    );
    // Before the last message_delta and message_stop.
    events.insert(events.len() - 2, early_delta);
    mock.push_reply(Reply::sse(events));

    let response = post(&daemon, &request_body(SONNET, "count up", true));
    let stats = ctl::wait_for_records(&daemon, 1);

    // sonnet-4-5: 200 in * 3000 + 42 out * 15000 = 600_000 + 630_000 = 1_230_000 nano-USD.
    // Adding both deltas would give 52 output tokens and 1_380_000.
    let deltas = anthropic::parse_sse_events(&response.body)
        .into_iter()
        .filter(|(name, _)| name == "message_delta")
        .count();
    assert_eq!(deltas, 2, "message_delta events relayed");
    assert_eq!(stats.total.tokens.input, 200, "input tokens");
    assert_eq!(stats.total.tokens.output, 42, "output tokens");
    assert_eq!(stats.total.cost_nano_usd, 1_230_000, "total cost");
}

#[test]
fn cut_stream_counts_as_error() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock);
    let events = anthropic::sse_events(
        SONNET,
        &["cut", " short"],
        anthropic::usage(100, 1),
        json!({"output_tokens": 2}),
    );
    // message_start, content_block_start, ping and the first delta, then the socket closes.
    mock.push_reply(Reply::sse(events).cut_after(4));

    let body = request_body(SONNET, "stop halfway", true);
    let _cut = http::send(daemon.addr, "POST", "/v1/messages", HEADERS, &body);
    let stats = ctl::wait_for_records(&daemon, 1);

    // sonnet-4-5, as far as message_start: 100 in * 3000 + 1 out * 15000
    // = 300_000 + 15_000 = 315_000 nano-USD.
    assert_eq!(stats.total.errors, 1, "a cut stream is an error");
    assert_eq!(stats.total.tokens.input, 100, "input tokens seen");
    assert_eq!(stats.total.tokens.output, 1, "output tokens seen");
    assert_eq!(stats.total.cost_nano_usd, 315_000, "cost of the usage seen");
}

#[test]
fn truncated_body_counts_as_error() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock);
    let message = anthropic::message_json(SONNET, "complete text", anthropic::usage(5, 2));
    let mut raw = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        message.len()
    )
    .into_bytes();
    raw.extend_from_slice(&message[..message.len() / 2]);
    mock.push_reply(Reply::raw(raw));

    let body = request_body(SONNET, "half a body", false);
    let truncated = http::send(daemon.addr, "POST", "/v1/messages", HEADERS, &body);
    let stats = ctl::wait_for_records(&daemon, 1);

    assert!(
        truncated.is_err(),
        "the client sees the truncated body as an error, got {truncated:?}"
    );
    assert_eq!(stats.total.errors, 1, "a truncated body is an error");
}

#[test]
fn dated_id_prices_as_alias() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock);
    let usage = anthropic::usage(1000, 100);

    send_scripted(
        &mock,
        &daemon,
        SONNET,
        "claude-sonnet-4-5-20250929",
        usage.clone(),
        1,
    );
    let stats = send_scripted(&mock, &daemon, SONNET, SONNET, usage, 2);

    // sonnet-4-5: 1000 in * 3000 + 100 out * 15000 = 3_000_000 + 1_500_000 = 4_500_000
    // nano-USD for each of the two requests, 9_000_000 in all.
    assert_eq!(stats.total.cost_nano_usd, 9_000_000, "total cost");
    assert_eq!(stats.rows.len(), 1, "rows: {:?}", stats.rows);
    let row = model_row(&stats, SONNET);
    assert_eq!(row.totals.requests, 2, "requests of the one row");
    assert_eq!(row.totals.cost_nano_usd, 9_000_000, "row cost");
}

#[test]
fn older_models_priced() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock);

    send_scripted(
        &mock,
        &daemon,
        "claude-3-5-haiku-latest",
        "claude-3-5-haiku-20241022",
        anthropic::usage_with_cache(1000, 200, 100, 500),
        1,
    );
    let stats = send_scripted(
        &mock,
        &daemon,
        "claude-opus-4-1",
        "claude-opus-4-1-20250805",
        anthropic::usage(100, 100),
        2,
    );

    // claude-3-5-haiku: 1000 in * 800 + 200 out * 4000 + 100 5m writes * 1000
    // + 500 reads * 80 = 800_000 + 800_000 + 100_000 + 40_000 = 1_740_000 nano-USD.
    let haiku = model_row(&stats, "claude-3-5-haiku");
    assert!(haiku.priced, "claude-3-5-haiku is priced");
    assert_eq!(haiku.totals.cost_nano_usd, 1_740_000, "Haiku 3.5 cost");
    // claude-opus-4-1: 100 in * 15000 + 100 out * 75000 = 1_500_000 + 7_500_000
    // = 9_000_000 nano-USD.
    let opus = model_row(&stats, "claude-opus-4-1");
    assert!(opus.priced, "claude-opus-4-1 is priced");
    assert_eq!(opus.totals.cost_nano_usd, 9_000_000, "Opus 4.1 cost");
    // 1_740_000 + 9_000_000 = 10_740_000 nano-USD.
    assert_eq!(stats.total.cost_nano_usd, 10_740_000, "total cost");
    assert_eq!(
        stats.rows[0].group, "claude-opus-4-1",
        "rows are sorted by cost, highest first"
    );
}

#[test]
fn unknown_model_unpriced() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock);
    let unknown = "claude-imaginary-9";

    send_scripted(&mock, &daemon, unknown, unknown, anthropic::usage(50, 5), 1);
    let stats = send_scripted(&mock, &daemon, SONNET, SONNET, anthropic::usage(10, 10), 2);
    let table = ctl::text(&daemon, &["stats"]);

    // sonnet-4-5: 10 in * 3000 + 10 out * 15000 = 30_000 + 150_000 = 180_000 nano-USD.
    // The unknown model adds tokens but no cost.
    assert_eq!(stats.total.requests, 2, "requests");
    assert_eq!(stats.total.unpriced_requests, 1, "unpriced requests");
    assert_eq!(stats.total.tokens.input, 60, "input tokens of both");
    assert_eq!(stats.total.tokens.output, 15, "output tokens of both");
    assert_eq!(stats.total.cost_nano_usd, 180_000, "total cost");
    let row = model_row(&stats, unknown);
    assert!(!row.priced, "{unknown} is unpriced");
    assert_eq!(row.totals.unpriced_requests, 1, "row unpriced requests");
    assert_eq!(row.totals.tokens.input, 50, "row input tokens");
    assert_eq!(row.totals.tokens.output, 5, "row output tokens");
    assert_eq!(row.totals.cost_nano_usd, 0, "row cost");

    let line = table
        .lines()
        .find(|line| line.contains(unknown))
        .unwrap_or_else(|| panic!("no table row for {unknown}:\n{table}"));
    assert!(line.contains("unpriced"), "row shows unpriced: {line}");
    assert!(!line.contains("$0"), "row shows no dollar amount: {line}");
}

#[test]
fn unknown_model_never_zero() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock);
    let unknown = "claude-imaginary-9";
    let body = request_body(unknown, "any model at all", false);
    mock.push_reply(Reply::error(
        404,
        "not_found_error",
        "model: claude-imaginary-9",
    ));
    mock.push_reply(Reply::json(
        200,
        anthropic::message_json(unknown, "imaginary answer", anthropic::usage(50, 5)),
    ));

    let not_found = http::send(daemon.addr, "POST", "/v1/messages", HEADERS, &body)
        .expect("request for an unknown model");
    ctl::wait_for_records(&daemon, 1);
    post(&daemon, &body);
    ctl::wait_for_records(&daemon, 2);
    let hit = post(&daemon, &body);
    let stats = ctl::wait_for_records(&daemon, 3);
    let table = ctl::text(&daemon, &["stats"]);

    assert_eq!(not_found.status, 404, "scripted error");
    assert_eq!(hit.header("x-cco-cache"), Some("hit"), "third request");
    let rows: Vec<&GroupTotals> = stats
        .rows
        .iter()
        .filter(|row| row.group == unknown)
        .collect();
    assert_eq!(rows.len(), 1, "rows for {unknown}: {:?}", stats.rows);
    assert!(!rows[0].priced, "{unknown} is unpriced");
    assert_eq!(
        stats.total.unpriced_requests, 3,
        "the error, the miss and the hit all lack a price"
    );
    assert_eq!(stats.total.cost_nano_usd, 0, "total cost");
    for line in table.lines().filter(|line| line.contains(unknown)) {
        assert!(line.contains("unpriced"), "row shows unpriced: {line}");
        assert!(!line.contains("$0"), "row shows no dollar amount: {line}");
    }
}

#[test]
fn cache_hit_costs_nothing() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock);
    let body = request_body(SONNET, "ask twice", false);
    mock.push_reply(Reply::json(
        200,
        anthropic::message_json(SONNET, "same answer", anthropic::usage(1000, 500)),
    ));

    post(&daemon, &body);
    ctl::wait_for_records(&daemon, 1);
    let hit = post(&daemon, &body);
    let stats = ctl::wait_for_records(&daemon, 2);
    let table = ctl::text(&daemon, &["stats"]);

    // sonnet-4-5: 1000 in * 3000 + 500 out * 15000 = 3_000_000 + 7_500_000
    // = 10_500_000 nano-USD for the miss. The hit costs 0 and saves the same amount.
    assert_eq!(hit.header("x-cco-cache"), Some("hit"), "second request");
    assert_eq!(mock.request_count(), 1, "upstream requests");
    assert_eq!(stats.total.requests, 2, "requests");
    assert_eq!(stats.total.cache_hits, 1, "cache hits");
    assert_eq!(stats.total.hit_rate(), 0.5, "hit rate");
    assert_eq!(stats.total.cost_nano_usd, 10_500_000, "total cost");
    assert_eq!(stats.total.saved_nano_usd, 10_500_000, "saved by the hit");
    assert_eq!(
        stats.total.tokens.input, 1000,
        "a hit bills no upstream tokens"
    );
    let row = model_row(&stats, SONNET);
    assert_eq!(row.totals.cache_hits, 1, "row cache hits");
    assert_eq!(row.totals.saved_nano_usd, 10_500_000, "row saved");
    assert!(
        table.contains("1 (50.0% hit rate)"),
        "ccoctl stats shows the hit rate:\n{table}"
    );
}

#[test]
fn stats_survive_restart() {
    let mock = MockUpstream::start();
    let (dirs, daemon) = start(&mock);

    send_scripted(&mock, &daemon, SONNET, SONNET, anthropic::usage(10, 20), 1);
    send_scripted(
        &mock,
        &daemon,
        "claude-imaginary-9",
        "claude-imaginary-9",
        anthropic::usage(30, 40),
        2,
    );
    let before = ctl::stats(&daemon);
    assert_eq!(daemon.shutdown(), Some(0), "exit code of the first ccod");
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let after = ctl::stats(&daemon);

    assert_eq!(before.total.requests, 2, "requests before the restart");
    assert_eq!(after, before, "stats after the restart");
}

#[test]
fn stats_time_range() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock);
    send_scripted(&mock, &daemon, SONNET, SONNET, anthropic::usage(10, 20), 1);

    let all: StatsReply = ctl::json(&daemon, &["stats", "--json"]);
    let last_hour: StatsReply = ctl::json(&daemon, &["stats", "--since", "1h", "--json"]);
    let past: StatsReply = ctl::json(&daemon, &["stats", "--until", "2020-01-01", "--json"]);

    assert_eq!(all.total.requests, 1, "all time");
    assert_eq!(last_hour.total.requests, 1, "--since 1h");
    assert_eq!(last_hour.total, all.total, "--since 1h totals");
    assert_eq!(past.total.requests, 0, "--until 2020-01-01");
    assert!(past.rows.is_empty(), "rows until 2020: {:?}", past.rows);
}

#[test]
fn sigterm_finishes_stream() {
    let mock = MockUpstream::start();
    let (dirs, daemon) = start(&mock);
    let pieces = ["slow", " but", " finished"];
    let events = anthropic::sse_events(
        SONNET,
        &pieces,
        anthropic::usage(100, 1),
        json!({"output_tokens": 3}),
    );
    let event_count = events.len();
    mock.push_reply(Reply::sse(events).chunk_delay(Duration::from_millis(250)));

    let body = request_body(SONNET, "take your time", true);
    let mut stream = http::open_stream(daemon.addr, "POST", "/v1/messages", HEADERS, &body)
        .expect("stream request through ccod");
    let first = stream
        .next_chunk(Duration::from_secs(5))
        .expect("first chunk of the stream");
    let reader = std::thread::spawn(move || stream.read_to_end(Duration::from_secs(30)));
    let terminated_at = Instant::now();
    let exit_code = daemon.terminate();
    let exited_after = terminated_at.elapsed();
    let rest = reader
        .join()
        .expect("reader thread")
        .expect("rest of the stream");

    assert!(first.is_some(), "the stream started before SIGTERM");
    assert_eq!(exit_code, Some(0), "exit code after SIGTERM");
    assert!(
        exited_after < Duration::from_secs(30),
        "ccod took {exited_after:?} to exit"
    );
    let mut received = first.map(|(_, bytes)| bytes).unwrap_or_default();
    received.extend_from_slice(&rest);
    let names: Vec<String> = anthropic::parse_sse_events(&received)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names.len(), event_count, "events received: {names:?}");
    assert_eq!(
        names.last().map(String::as_str),
        Some("message_stop"),
        "the stream ended normally"
    );

    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let stats = ctl::stats(&daemon);
    // sonnet-4-5: 100 in * 3000 + 3 out * 15000 = 300_000 + 45_000 = 345_000 nano-USD.
    assert_eq!(stats.total.requests, 1, "record kept across SIGTERM");
    assert_eq!(stats.total.errors, 0, "the stream completed");
    assert_eq!(stats.total.tokens.output, 3, "output tokens");
    assert_eq!(stats.total.cost_nano_usd, 345_000, "total cost");
}
