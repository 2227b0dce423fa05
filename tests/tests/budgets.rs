//! End-to-end tests of `[budgets]`: requests that could pass a USD limit get 429 and never
//! reach the upstream, and `ccoctl stats` shows each budget's spend and reservations.
//!
//! Every amount is worked out in a comment from the rates in `daemon/src/prices.toml`
//! (claude-haiku-4-5: input $1 and output $5 per million tokens, so 1000 and 5000 nano-USD
//! per token). The proxy reserves `ceil(body bytes / 3)` input tokens at the input rate plus
//! `max_tokens` output tokens at the output rate.
//!
//! NOTE: a test that runs across 00:00 UTC has the daily budgets reset between its
//! requests and can fail.

use std::time::Duration;

use cco_proto::{BudgetPeriod, BudgetStatus, StatsReply};
use cco_tests::daemon::{DaemonDirs, DaemonOptions, DaemonProcess};
use cco_tests::http::HttpResponse;
use cco_tests::{anthropic, ctl, http, MockUpstream, Reply};
use sha2::{Digest, Sha256};

const HAIKU: &str = "claude-haiku-4-5";
const KEY: &str = "sk-ant-test-budgets";
const OTHER_KEY: &str = "sk-ant-test-budgets-other";

/// Length of every [`message_body`] with a 4-digit `max_tokens` and an 8-character text.
const BODY_BYTES: usize = 96;

/// Returns a Messages API request for claude-haiku-4-5. With `max_tokens` of 4 digits and
/// a `text` of 8 characters it is [`BODY_BYTES`] long, so its input estimate is
/// ceil(96 / 3) = 32 tokens, 32 * 1000 = 32_000 nano-USD.
fn message_body(max_tokens: u32, text: &str) -> Vec<u8> {
    format!(
        r#"{{"model":"{HAIKU}","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"{text}"}}]}}"#
    )
    .into_bytes()
}

fn post_as(daemon: &DaemonProcess, key: &str, body: &[u8]) -> HttpResponse {
    let headers = [
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("x-api-key", key),
    ];
    http::send(daemon.addr, "POST", "/v1/messages", &headers, body)
        .unwrap_or_else(|err| panic!("POST /v1/messages through ccod failed: {err}"))
}

fn post(daemon: &DaemonProcess, body: &[u8]) -> HttpResponse {
    post_as(daemon, KEY, body)
}

/// Queues a reply of claude-haiku-4-5 that reports `input` and `output` tokens.
fn push_usage(mock: &MockUpstream, input: u64, output: u64) {
    mock.push_reply(Reply::json(
        200,
        anthropic::message_json(HAIKU, "budgeted answer", anthropic::usage(input, output)),
    ));
}

/// Starts a daemon whose config file is `config`.
fn start(mock: &MockUpstream, config: &str) -> (DaemonDirs, DaemonProcess) {
    let dirs = DaemonDirs::new();
    std::fs::write(dirs.config_file(), config).expect("config file");
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    (dirs, daemon)
}

/// Returns the first 12 hex digits of the SHA-256 of `key`, as the records show it.
fn credential_prefix(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))[..12].to_owned()
}

fn budget<'a>(stats: &'a StatsReply, credential: Option<&str>) -> &'a BudgetStatus {
    stats
        .budgets
        .iter()
        .find(|budget| {
            budget.credential.as_deref() == credential && budget.period == BudgetPeriod::Daily
        })
        .unwrap_or_else(|| panic!("no daily budget for {credential:?}: {:?}", stats.budgets))
}

fn error_message(response: &HttpResponse) -> String {
    response.json()["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {}", response.text()))
        .to_owned()
}

#[test]
fn request_within_budget_passes() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, "[budgets]\ndaily_usd = \"0.01\"\n");
    push_usage(&mock, 20, 30);

    let body = message_body(1000, "req-0001");
    let response = post(&daemon, &body);
    let stats = ctl::wait_for_records(&daemon, 1);

    // Estimate: 32_000 + 1000 * 5000 = 5_032_000 nano-USD, within 10_000_000 ($0.01).
    // Cost: 20 * 1000 + 30 * 5000 = 20_000 + 150_000 = 170_000 nano-USD.
    assert_eq!(body.len(), BODY_BYTES, "request body length");
    assert_eq!(response.status, 200, "response: {}", response.text());
    assert_eq!(mock.request_count(), 1, "upstream requests");
    assert_eq!(stats.total.cost_nano_usd, 170_000, "total cost");
    assert_eq!(stats.total.budget_rejected, 0, "budget rejections");
    let global = budget(&stats, None);
    assert_eq!(global.limit_nano_usd, 10_000_000, "limit");
    assert_eq!(global.spent_nano_usd, 170_000, "spent");
    assert_eq!(global.reserved_nano_usd, 0, "reserved after the response");
}

#[test]
fn request_over_budget_rejected() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, "[budgets]\ndaily_usd = \"0.01\"\n");
    push_usage(&mock, 1000, 1000);

    let first = post(&daemon, &message_body(1000, "req-0001"));
    ctl::wait_for_records(&daemon, 1);
    let second = post(&daemon, &message_body(1000, "req-0002"));
    let stats = ctl::wait_for_records(&daemon, 2);

    // First cost: 1000 * 1000 + 1000 * 5000 = 6_000_000 nano-USD ($0.006). The second
    // estimate is 5_032_000 ($0.005032): 6_000_000 + 5_032_000 = 11_032_000 is more than
    // the 10_000_000 of $0.01.
    assert_eq!(first.status, 200, "first response: {}", first.text());
    assert_eq!(second.status, 429, "second response: {}", second.text());
    assert_eq!(second.json()["type"], "error", "Anthropic error format");
    assert_eq!(
        second.json()["error"]["type"],
        "rate_limit_error",
        "error type"
    );
    let message = error_message(&second);
    assert!(
        message.starts_with(
            "daily budget of $0.01 for all clients reached: spent $0.006, this request may \
             cost up to $0.005032; it resets at "
        ),
        "{message}"
    );
    // Spend alone leaves no room, so only the reset at the next UTC midnight helps.
    let retry_after: u64 = second
        .header("retry-after")
        .expect("retry-after header")
        .parse()
        .expect("retry-after in seconds");
    assert!(
        (1..=86_400).contains(&retry_after),
        "retry-after {retry_after}"
    );
    assert_eq!(
        mock.request_count(),
        1,
        "the rejected request reached the upstream"
    );
    assert_eq!(stats.total.requests, 2, "requests");
    assert_eq!(stats.total.budget_rejected, 1, "budget rejections");
    assert_eq!(stats.total.cost_nano_usd, 6_000_000, "total cost");
    assert_eq!(budget(&stats, None).spent_nano_usd, 6_000_000, "spent");
    let metrics = http::send(daemon.addr, "GET", "/metrics", &[], b"")
        .expect("GET /metrics")
        .text();
    for line in [
        "cco_budget_rejected_total 1\n",
        "cco_budget_limit_usd{credential=\"all\",period=\"daily\"} 0.010000000\n",
        "cco_budget_spent_usd{credential=\"all\",period=\"daily\"} 0.006000000\n",
        "cco_budget_reserved_usd{credential=\"all\",period=\"daily\"} 0.000000000\n",
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
}

#[test]
fn estimate_above_limit_rejected_openai() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, "[budgets]\ndaily_usd = \"0.001\"\n");
    let body = br#"{"model":"gpt-4o-mini","max_completion_tokens":5000,"messages":[{"role":"user","content":"req-0001"}]}"#;
    let headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-openai-test-budgets"),
    ];

    let response = http::send(daemon.addr, "POST", "/v1/chat/completions", &headers, body)
        .expect("POST /v1/chat/completions through ccod");
    let stats = ctl::wait_for_records(&daemon, 1);

    // gpt-4o-mini: ceil(102 / 3) = 34 input tokens * 150 + 5000 output tokens * 600
    // = 5_100 + 3_000_000 = 3_005_100 nano-USD, more than the whole 1_000_000 ($0.001).
    assert_eq!(body.len(), 102, "request body length");
    assert_eq!(response.status, 429, "response: {}", response.text());
    assert_eq!(
        response.json()["error"]["type"],
        "rate_limit_error",
        "OpenAI error format"
    );
    let message = error_message(&response);
    assert_eq!(
        message,
        "this request may cost up to $0.0030051, more than the whole daily budget of $0.001 \
         for all clients; lower max_tokens or raise [budgets] daily_usd"
    );
    assert_eq!(
        response.header("retry-after"),
        None,
        "no reset admits the request"
    );
    assert_eq!(mock.request_count(), 0, "upstream requests");
    assert_eq!(stats.total.budget_rejected, 1, "budget rejections");
}

#[test]
fn credential_budget_isolates_credentials() {
    let mock = MockUpstream::start();
    let prefix = credential_prefix(KEY);
    let config =
        format!("[[budgets.credentials]]\ncredential = \"{prefix}\"\ndaily_usd = \"0.01\"\n");
    let (_dirs, daemon) = start(&mock, &config);
    push_usage(&mock, 1000, 1000);

    let first = post(&daemon, &message_body(1000, "req-0001"));
    ctl::wait_for_records(&daemon, 1);
    let second = post(&daemon, &message_body(1000, "req-0002"));
    let other = post_as(&daemon, OTHER_KEY, &message_body(1000, "req-0003"));
    let other_again = post_as(&daemon, OTHER_KEY, &message_body(1000, "req-0004"));
    let stats = ctl::wait_for_records(&daemon, 4);

    // As in request_over_budget_rejected: 6_000_000 spent + 5_032_000 estimated is more
    // than 10_000_000, but only for the credential the budget names.
    assert_eq!(first.status, 200, "first response: {}", first.text());
    assert_eq!(second.status, 429, "second response: {}", second.text());
    let message = error_message(&second);
    assert!(
        message.starts_with(&format!(
            "daily budget of $0.01 for credential {prefix} reached: spent $0.006"
        )),
        "{message}"
    );
    assert!(!message.contains(KEY), "the key leaked: {message}");
    assert_eq!(other.status, 200, "other credential: {}", other.text());
    assert_eq!(
        other_again.status,
        200,
        "other credential again: {}",
        other_again.text()
    );
    assert_eq!(mock.request_count(), 3, "upstream requests");
    assert_eq!(stats.budgets.len(), 1, "budgets: {:?}", stats.budgets);
    assert_eq!(
        budget(&stats, Some(&prefix)).spent_nano_usd,
        6_000_000,
        "the other credential's cost is not counted"
    );
}

#[test]
fn settled_request_frees_reservation() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, "[budgets]\ndaily_usd = \"0.01\"\n");
    push_usage(&mock, 10, 10);
    push_usage(&mock, 10, 10);

    let first = post(&daemon, &message_body(1500, "req-0001"));
    ctl::wait_for_records(&daemon, 1);
    let second = post(&daemon, &message_body(1500, "req-0002"));
    let stats = ctl::wait_for_records(&daemon, 2);

    // Each estimate: 32_000 + 1500 * 5000 = 7_532_000 nano-USD, so two held at once
    // (15_064_000) would not fit the 10_000_000. The first costs 10 * 1000 + 10 * 5000
    // = 60_000 once settled, and 60_000 + 7_532_000 = 7_592_000 fits.
    assert_eq!(first.status, 200, "first response: {}", first.text());
    assert_eq!(second.status, 200, "second response: {}", second.text());
    assert_eq!(mock.request_count(), 2, "upstream requests");
    let global = budget(&stats, None);
    assert_eq!(global.spent_nano_usd, 120_000, "spent");
    assert_eq!(global.reserved_nano_usd, 0, "reserved");
}

/// Returns a streaming Messages API request for claude-haiku-4-5.
fn stream_body(text: &str) -> Vec<u8> {
    format!(
        r#"{{"model":"{HAIKU}","max_tokens":1000,"stream":true,"messages":[{{"role":"user","content":"{text}"}}]}}"#
    )
    .into_bytes()
}

/// Returns the events of a claude-haiku-4-5 stream whose `message_start` reports 100 input tokens and
/// 1 output token, and whose last `message_delta` reports 3 output tokens.
fn stream_events() -> Vec<Vec<u8>> {
    anthropic::sse_events(
        HAIKU,
        &["one", " two", " three"],
        anthropic::usage(100, 1),
        serde_json::json!({"output_tokens": 3}),
    )
}

#[test]
fn cut_stream_settles_usage_seen() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, "[budgets]\ndaily_usd = \"0.01\"\n");
    // message_start, content_block_start, ping and the first delta, then the socket closes.
    mock.push_reply(Reply::sse(stream_events()).cut_after(4));

    let headers = [("content-type", "application/json"), ("x-api-key", KEY)];
    let _cut = http::send(
        daemon.addr,
        "POST",
        "/v1/messages",
        &headers,
        &stream_body("cut"),
    );
    let stats = ctl::wait_for_records(&daemon, 1);

    // Usage as far as message_start: 100 * 1000 + 1 * 5000 = 105_000 nano-USD.
    assert_eq!(stats.total.errors, 1, "a cut stream is an error");
    let global = budget(&stats, None);
    assert_eq!(global.spent_nano_usd, 105_000, "spent");
    assert_eq!(global.reserved_nano_usd, 0, "reserved");
}

#[test]
fn disconnected_client_settles_usage_seen() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, "[budgets]\ndaily_usd = \"0.01\"\n");
    mock.push_reply(Reply::sse(stream_events()).chunk_delay(Duration::from_millis(300)));

    let headers = [("content-type", "application/json"), ("x-api-key", KEY)];
    let mut stream = http::open_stream(
        daemon.addr,
        "POST",
        "/v1/messages",
        &headers,
        &stream_body("leave"),
    )
    .expect("stream request through ccod");
    let first = stream
        .next_chunk(Duration::from_secs(5))
        .expect("first chunk of the stream");
    stream.close();
    let stats = ctl::wait_for_records(&daemon, 1);

    // The client left after message_start: 100 * 1000 + 1 * 5000 = 105_000 nano-USD.
    assert!(first.is_some(), "the stream started");
    assert_eq!(stats.total.tokens.output, 1, "output tokens seen");
    let global = budget(&stats, None);
    assert_eq!(global.spent_nano_usd, 105_000, "spent");
    assert_eq!(global.reserved_nano_usd, 0, "reserved");
}

#[test]
fn cache_hit_served_over_budget() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, "[budgets]\ndaily_usd = \"0.01\"\n");
    push_usage(&mock, 1000, 1000);
    let body = message_body(1000, "req-0001");

    let first = post(&daemon, &body);
    ctl::wait_for_records(&daemon, 1);
    let over = post(&daemon, &message_body(1000, "req-0002"));
    let hit = post(&daemon, &body);
    let stats = ctl::wait_for_records(&daemon, 3);

    // 6_000_000 spent leaves no room for another 5_032_000, but a hit costs nothing.
    assert_eq!(first.status, 200, "first response: {}", first.text());
    assert_eq!(over.status, 429, "new request: {}", over.text());
    assert_eq!(hit.status, 200, "repeated request: {}", hit.text());
    assert_eq!(hit.header("x-cco-cache"), Some("hit"), "repeated request");
    assert_eq!(mock.request_count(), 1, "upstream requests");
    assert_eq!(budget(&stats, None).spent_nano_usd, 6_000_000, "spent");
}

#[test]
fn spend_survives_restart() {
    let mock = MockUpstream::start();
    let (dirs, daemon) = start(&mock, "[budgets]\ndaily_usd = \"0.01\"\n");
    push_usage(&mock, 1000, 1000);

    let first = post(&daemon, &message_body(1000, "req-0001"));
    ctl::wait_for_records(&daemon, 1);
    assert_eq!(daemon.shutdown(), Some(0), "exit code of the first ccod");
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let before = ctl::stats(&daemon);
    let second = post(&daemon, &message_body(1000, "req-0002"));
    let stats = ctl::wait_for_records(&daemon, 2);

    // The 6_000_000 recorded before the restart still counts: with the 5_032_000 estimate
    // it is more than the 10_000_000 of $0.01.
    assert_eq!(first.status, 200, "first response: {}", first.text());
    assert_eq!(
        budget(&before, None).spent_nano_usd,
        6_000_000,
        "spent after the restart"
    );
    assert_eq!(second.status, 429, "second response: {}", second.text());
    assert_eq!(mock.request_count(), 1, "upstream requests");
    assert_eq!(stats.total.budget_rejected, 1, "budget rejections");
}

#[test]
fn concurrent_requests_never_overshoot() {
    const REQUESTS: usize = 40;
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock, "[budgets]\ndaily_usd = \"0.05\"\n");
    for _ in 0..REQUESTS {
        mock.push_reply(
            Reply::json(
                200,
                anthropic::message_json(HAIKU, "slow answer", anthropic::usage(20, 1000)),
            )
            .delay(Duration::from_millis(400)),
        );
    }

    let addr = daemon.addr;
    let threads: Vec<_> = (0..REQUESTS)
        .map(|index| {
            let body = message_body(1000, &format!("req-{index:04}"));
            std::thread::spawn(move || {
                let headers = [("content-type", "application/json"), ("x-api-key", KEY)];
                http::send(addr, "POST", "/v1/messages", &headers, &body)
                    .map(|response| response.status)
            })
        })
        .collect();
    let statuses: Vec<u16> = threads
        .into_iter()
        .map(|thread| {
            thread
                .join()
                .expect("client thread")
                .expect("request through ccod")
        })
        .collect();
    let stats = ctl::wait_for_records(&daemon, REQUESTS as u64);

    // Each request reserves 5_032_000 and costs 20 * 1000 + 1000 * 5000 = 5_020_000
    // nano-USD. Whatever the timing, the k-th admitted request found at least (k - 1)
    // * 5_020_000 held, so (k - 1) * 5_020_000 + 5_032_000 <= 50_000_000 gives k <= 9.
    // Nine always fit: 9 * 5_032_000 = 45_288_000. They cost 9 * 5_020_000 = 45_180_000.
    let passed = statuses.iter().filter(|&&status| status == 200).count();
    let rejected = statuses.iter().filter(|&&status| status == 429).count();
    assert_eq!(passed + rejected, REQUESTS, "statuses: {statuses:?}");
    assert_eq!(passed, 9, "admitted requests: {statuses:?}");
    assert_eq!(rejected, 31, "rejected requests: {statuses:?}");
    assert_eq!(mock.request_count(), passed, "upstream requests");
    assert!(
        stats.total.cost_nano_usd <= 50_000_000,
        "cost {} exceeds the budget",
        stats.total.cost_nano_usd
    );
    assert_eq!(stats.total.cost_nano_usd, 45_180_000, "total cost");
    assert_eq!(stats.total.budget_rejected, 31, "budget rejections");
    let global = budget(&stats, None);
    assert_eq!(global.spent_nano_usd, 45_180_000, "spent");
    assert_eq!(global.reserved_nano_usd, 0, "reserved once all ended");
}

#[test]
fn config_shows_budgets() {
    let mock = MockUpstream::start();
    let config = "[budgets]\ndaily_usd = 5\nmonthly_usd = \"100\"\n";
    let (_dirs, daemon) = start(&mock, config);

    let shown = ctl::text(&daemon, &["config"]);
    let table = ctl::text(&daemon, &["stats"]);

    assert!(
        shown.contains("budgets = \"all clients: daily $5.00, monthly $100.00\""),
        "{shown}"
    );
    let daily = table
        .lines()
        .find(|line| line.contains("all clients") && line.contains("daily"))
        .unwrap_or_else(|| panic!("no daily budget row in\n{table}"));
    assert!(daily.contains("$5.00"), "{daily}");
    assert!(daily.contains("0.0%"), "{daily}");
    assert!(table.contains("budget rejected:       0\n"), "{table}");
}
