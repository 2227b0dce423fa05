//! End-to-end tests of the price table that users can audit: `[[prices]]` overrides,
//! `ccoctl pricing`, `ccoctl stats --reprice`, web search pricing, estimated costs, and the
//! `--by` and `--csv` forms of `ccoctl stats`.
//!
//! Every expected cost is worked out in a comment. A rate of $X per million tokens is
//! X * 1000 nano-USD per token, and $X per 1,000 searches is X * 10^6 nano-USD per search.

use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use cco_proto::{GroupBy, GroupTotals, PricingReply, StatsReply};
use cco_tests::daemon::{binary, DaemonDirs, DaemonOptions, DaemonProcess};
use cco_tests::{anthropic, ctl, http, openai, MockUpstream, Reply};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const SONNET: &str = "claude-sonnet-4-5";
const KEY_A: &str = "sk-ant-test-pricing-a";
const KEY_B: &str = "sk-ant-test-pricing-b";

/// Replaces Sonnet 4.5's rates with $2 / $10 / $2.50 / $4 / $0.20 and $5 per 1,000 searches,
/// and adds `claude-custom-1` at $0.50 input and $1.50 output.
const OVERRIDES: &str = r#"
[[prices]]
id = "claude-sonnet-4-5"
input = "2"
output = "10"
cache_write_5m = "2.5"
cache_write_1h = "4"
cache_read = "0.2"
web_search_per_1000 = "5"

[[prices]]
id = "claude-custom-1"
aliases = ["claude-custom-latest"]
input = "0.5"
output = "1.5"
cache_write_5m = 0
cache_write_1h = 0
cache_read = 0
"#;

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

/// Sends a Messages API request with `key` as its credential and checks that it succeeded.
fn post_with_key(daemon: &DaemonProcess, key: &str, body: &[u8]) -> http::HttpResponse {
    let headers = [
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("x-api-key", key),
    ];
    let response = http::send(daemon.addr, "POST", "/v1/messages", &headers, body)
        .unwrap_or_else(|err| panic!("POST /v1/messages through ccod failed: {err}"));
    assert_eq!(response.status, 200, "response: {}", response.text());
    response
}

/// Queues a JSON reply of `model` with `usage` and sends a request that misses the cache.
fn send_json(mock: &MockUpstream, daemon: &DaemonProcess, model: &str, usage: Value, n: u64) {
    mock.push_reply(Reply::json(
        200,
        anthropic::message_json(model, "priced answer", usage),
    ));
    let text = format!("request number {n} for {model}");
    post_with_key(daemon, KEY_A, &request_body(model, &text, false));
    ctl::wait_for_records(daemon, n);
}

fn start_with_config(mock: &MockUpstream, config: &str) -> (DaemonDirs, DaemonProcess) {
    let dirs = DaemonDirs::new();
    std::fs::write(dirs.config_file(), config).expect("write config.toml");
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    (dirs, daemon)
}

fn row<'a>(stats: &'a StatsReply, group: &str, priced: bool) -> &'a GroupTotals {
    stats
        .rows
        .iter()
        .find(|row| row.group == group && row.priced == priced)
        .unwrap_or_else(|| panic!("no row {group} (priced: {priced}): {:?}", stats.rows))
}

/// First 12 hex digits of the SHA-256 of `key`, as stats show a credential.
fn credential_prefix(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))[..12].to_owned()
}

/// Today's UTC date, `YYYY-MM-DD`, from the days since the epoch by the usual
/// March-based era arithmetic.
fn today_utc() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let days = (millis / 86_400_000) as i64 + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[test]
fn overrides_replace_and_add() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start_with_config(&mock, OVERRIDES);
    let cases = [
        // Replaced sonnet-4-5: 1000 in * 2000 + 100 out * 10000 = 2_000_000 + 1_000_000.
        (SONNET, anthropic::usage(1000, 100), 3_000_000),
        // The embedded alias leads to the replaced row: 10 in * 2000 + 10 out * 10000
        // = 20_000 + 100_000.
        (
            "claude-sonnet-4-5-20250929",
            anthropic::usage(10, 10),
            120_000,
        ),
        // Added claude-custom-1: 1000 in * 500 + 1000 out * 1500 = 500_000 + 1_500_000.
        ("claude-custom-1", anthropic::usage(1000, 1000), 2_000_000),
        // Its alias: 2 in * 500 + 2 out * 1500 = 1000 + 3000.
        ("claude-custom-latest", anthropic::usage(2, 2), 4_000),
        // Untouched embedded haiku-4-5: 1000 in * 1000 + 100 out * 5000 = 1_500_000.
        ("claude-haiku-4-5", anthropic::usage(1000, 100), 1_500_000),
    ];
    let mut before = 0;
    for (number, (model, usage, expected)) in cases.into_iter().enumerate() {
        send_json(&mock, &daemon, model, usage, number as u64 + 1);
        let stats = ctl::stats(&daemon);
        assert_eq!(
            stats.total.cost_nano_usd - before,
            expected,
            "cost of the {model} request"
        );
        assert_eq!(stats.total.unpriced_requests, 0, "after {model}");
        before = stats.total.cost_nano_usd;
    }
}

#[test]
fn reprice_uses_current_table() {
    let mock = MockUpstream::start();
    let (dirs, daemon) = start_with_config(&mock, "");
    mock.push_reply(Reply::json(
        200,
        anthropic::message_json(SONNET, "asked twice", anthropic::usage(1000, 100)),
    ));
    let body = request_body(SONNET, "reprice me", false);
    post_with_key(&daemon, KEY_A, &body);
    ctl::wait_for_records(&daemon, 1);
    let hit = post_with_key(&daemon, KEY_A, &body);
    assert_eq!(hit.header("x-cco-cache"), Some("hit"), "second request");
    ctl::wait_for_records(&daemon, 2);
    assert_eq!(daemon.shutdown(), Some(0), "exit code of the first ccod");

    std::fs::write(dirs.config_file(), OVERRIDES).expect("write the overrides");
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let stored = ctl::stats(&daemon);
    let repriced: StatsReply = ctl::json(&daemon, &["stats", "--reprice", "--json"]);
    let text = ctl::text(&daemon, &["stats", "--reprice"]);

    // Recorded with the embedded sonnet-4-5: 1000 in * 3000 + 100 out * 15000
    // = 3_000_000 + 1_500_000 = 4_500_000 for the miss; the hit saved as much.
    assert!(!stored.repriced, "a plain query keeps the stored figures");
    assert_eq!(stored.total.cost_nano_usd, 4_500_000, "stored cost");
    assert_eq!(stored.total.saved_nano_usd, 4_500_000, "stored savings");
    // Repriced with the override: 1000 in * 2000 + 100 out * 10000 = 3_000_000 for the
    // miss, and the hit replayed the same usage, so it saved 3_000_000.
    assert!(repriced.repriced, "the reply says it was repriced");
    assert_eq!(repriced.total.cost_nano_usd, 3_000_000, "repriced cost");
    assert_eq!(repriced.total.saved_nano_usd, 3_000_000, "repriced savings");
    assert_eq!(repriced.total.requests, 2, "repriced requests");
    assert_eq!(row(&repriced, SONNET, true).totals.cost_nano_usd, 3_000_000);
    assert!(
        text.contains("prices:                repriced with ccod's current price table\n"),
        "{text}"
    );
    assert!(
        text.contains("cost:                  $0.003\n"),
        "the table shows the new cost:\n{text}"
    );
}

#[test]
fn web_searches_priced_json_and_stream() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start_with_config(&mock, "");
    let json_usage = json!({
        "input_tokens": 100,
        "output_tokens": 10,
        "server_tool_use": {"web_search_requests": 2},
    });
    send_json(&mock, &daemon, SONNET, json_usage, 1);
    let after_json = ctl::stats(&daemon);

    let mut events = anthropic::sse_events(
        SONNET,
        &["searched", " twice"],
        anthropic::usage(50, 1),
        json!({"output_tokens": 20, "server_tool_use": {"web_search_requests": 3}}),
    );
    let early_delta = anthropic::sse_event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": null, "stop_sequence": null},
            "usage": {"output_tokens": 5, "server_tool_use": {"web_search_requests": 1}},
        }),
    );
    // Before the last message_delta and message_stop.
    events.insert(events.len() - 2, early_delta);
    mock.push_reply(Reply::sse(events));
    post_with_key(&daemon, KEY_A, &request_body(SONNET, "search away", true));
    let stats = ctl::wait_for_records(&daemon, 2);
    let text = ctl::text(&daemon, &["stats"]);

    // JSON: 100 in * 3000 + 10 out * 15000 + 2 searches * 10_000_000
    // = 300_000 + 150_000 + 20_000_000 = 20_450_000.
    assert_eq!(after_json.total.web_search_requests, 2, "JSON searches");
    assert_eq!(after_json.total.cost_nano_usd, 20_450_000, "JSON cost");
    // Stream: the usage is cumulative, so the last delta's 3 searches replace the 1 before:
    // 50 in * 3000 + 20 out * 15000 + 3 * 10_000_000 = 150_000 + 300_000 + 30_000_000
    // = 30_450_000, and 20_450_000 + 30_450_000 = 50_900_000 in all.
    assert_eq!(stats.total.web_search_requests, 5, "searches of both");
    assert_eq!(stats.total.cost_nano_usd, 50_900_000, "total cost");
    assert!(text.contains("web search requests:   5\n"), "{text}");
}

#[test]
fn web_search_rate_follows_override() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start_with_config(&mock, OVERRIDES);
    let usage = json!({
        "input_tokens": 0,
        "output_tokens": 0,
        "server_tool_use": {"web_search_requests": 4},
    });
    send_json(&mock, &daemon, SONNET, usage, 1);
    let stats = ctl::stats(&daemon);
    // $5 per 1,000 searches is 5_000_000 nano-USD each: 4 * 5_000_000 = 20_000_000.
    assert_eq!(stats.total.cost_nano_usd, 20_000_000, "cost of 4 searches");
}

#[test]
fn unsplit_writes_are_estimated() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start_with_config(&mock, "");
    let split = json!({
        "input_tokens": 10,
        "output_tokens": 0,
        "cache_creation_input_tokens": 100,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 100},
    });
    let cases = [
        // No split: 2000 writes taken as 5-minute writes, 100 in * 3000 + 10 out * 15000
        // + 2000 * 3750 = 300_000 + 150_000 + 7_500_000 = 7_950_000, an estimate.
        (
            anthropic::usage_with_cache(100, 10, 2000, 0),
            true,
            7_950_000,
        ),
        // Split: 10 in * 3000 + 100 1h writes * 6000 = 30_000 + 600_000 = 630_000, exact.
        (split, false, 630_000),
        // No writes at all: 5 in * 3000 = 15_000, exact.
        (anthropic::usage_with_cache(5, 0, 0, 0), false, 15_000),
    ];
    let mut estimated_before = 0;
    let mut cost_before = 0;
    for (number, (usage, estimated, cost)) in cases.into_iter().enumerate() {
        send_json(&mock, &daemon, SONNET, usage, number as u64 + 1);
        let stats = ctl::stats(&daemon);
        assert_eq!(
            stats.total.estimated_requests - estimated_before,
            u64::from(estimated),
            "estimated flag of case {number}"
        );
        assert_eq!(
            stats.total.cost_nano_usd - cost_before,
            cost,
            "cost of case {number}"
        );
        estimated_before = stats.total.estimated_requests;
        cost_before = stats.total.cost_nano_usd;
    }
    let text = ctl::text(&daemon, &["stats"]);
    assert!(text.contains("estimated costs:       1\n"), "{text}");
    assert!(
        text.contains("1 requests have estimated costs: their cache writes came without"),
        "{text}"
    );
}

/// Sends, in order: sonnet-4-5 with key A, sonnet-4-5 with key B, an unknown model with
/// key B, and an OpenAI gpt-4o-mini request with key A. Returns the daemon's stats.
fn send_mixed(mock: &MockUpstream, daemon: &DaemonProcess) -> StatsReply {
    let anthropic_requests = [
        (KEY_A, SONNET, anthropic::usage(1000, 100)),
        (KEY_B, SONNET, anthropic::usage(100, 10)),
        (KEY_B, "claude-imaginary-9", anthropic::usage(7, 7)),
    ];
    for (number, (key, model, usage)) in anthropic_requests.into_iter().enumerate() {
        mock.push_reply(Reply::json(
            200,
            anthropic::message_json(model, "answer", usage),
        ));
        let text = format!("mixed request {number}");
        post_with_key(daemon, key, &request_body(model, &text, false));
    }
    mock.push_reply(Reply::json(
        200,
        openai::chat_completion_json("gpt-4o-mini", "hi", openai::usage(1000, 100)),
    ));
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-ant-test-pricing-a"),
    ];
    let response = http::send(
        daemon.addr,
        "POST",
        "/v1/chat/completions",
        &headers,
        body.to_string().as_bytes(),
    )
    .expect("OpenAI request through ccod");
    assert_eq!(response.status, 200, "response: {}", response.text());
    ctl::wait_for_records(daemon, 4)
}

#[test]
fn stats_group_by_day_provider_credential() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start_with_config(&mock, "");
    let all = send_mixed(&mock, &daemon);

    // sonnet-4-5 with key A: 1000 * 3000 + 100 * 15000 = 3_000_000 + 1_500_000 = 4_500_000.
    // sonnet-4-5 with key B: 100 * 3000 + 10 * 15000 = 300_000 + 150_000 = 450_000.
    // gpt-4o-mini with key A: 1000 * 150 + 100 * 600 = 150_000 + 60_000 = 210_000.
    // The unknown model with key B is unpriced.
    assert_eq!(all.total.cost_nano_usd, 5_160_000, "total cost");
    let by = |group: &str, range: &[&str]| -> StatsReply {
        let mut args = vec!["stats", "--by", group, "--json"];
        args.extend_from_slice(range);
        ctl::json(&daemon, &args)
    };
    // All time reads today's rollup; --since 1h reads the records themselves.
    for range in [&[][..], &["--since", "1h"][..]] {
        let days = by("day", range);
        assert_eq!(days.group_by, GroupBy::Day, "{range:?}");
        let today = today_utc();
        // 4_500_000 + 450_000 + 210_000 = 5_160_000 over the three priced requests.
        assert_eq!(row(&days, &today, true).totals.cost_nano_usd, 5_160_000);
        assert_eq!(row(&days, &today, true).totals.requests, 3, "{range:?}");
        assert_eq!(row(&days, &today, false).totals.requests, 1, "{range:?}");
        assert_eq!(days.rows.len(), 2, "{range:?}: {:?}", days.rows);

        let providers = by("provider", range);
        // anthropic: 4_500_000 + 450_000 = 4_950_000; openai: 210_000.
        assert_eq!(
            row(&providers, "anthropic", true).totals.cost_nano_usd,
            4_950_000
        );
        assert_eq!(
            row(&providers, "openai", true).totals.cost_nano_usd,
            210_000
        );
        assert_eq!(row(&providers, "anthropic", false).totals.requests, 1);
        assert_eq!(providers.rows[0].group, "anthropic", "most expensive first");

        let credentials = by("credential", range);
        let (a, b) = (credential_prefix(KEY_A), credential_prefix(KEY_B));
        // Key A: 4_500_000 + 210_000 = 4_710_000; key B: 450_000 and one unpriced request.
        assert_eq!(row(&credentials, &a, true).totals.cost_nano_usd, 4_710_000);
        assert_eq!(row(&credentials, &b, true).totals.cost_nano_usd, 450_000);
        assert_eq!(row(&credentials, &b, false).totals.unpriced_requests, 1);
        for row in &credentials.rows {
            assert_eq!(row.group.len(), 12, "a 12-hex-digit prefix: {}", row.group);
            assert!(
                !row.group.contains("sk-ant"),
                "no credential in {}",
                row.group
            );
        }
    }

    let table = ctl::text(&daemon, &["stats", "--by", "credential"]);
    let unpriced_line = table
        .lines()
        .find(|line| line.contains(&credential_prefix(KEY_B)) && line.contains("unpriced"))
        .unwrap_or_else(|| panic!("no unpriced row for key B:\n{table}"));
    assert!(!unpriced_line.contains('$'), "{unpriced_line}");
}

#[test]
fn stats_csv_is_exact() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start_with_config(&mock, "");
    send_mixed(&mock, &daemon);

    let csv = ctl::text(&daemon, &["stats", "--by", "provider", "--csv"]);
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert!(
        lines[0].starts_with("provider,priced,requests,"),
        "header: {}",
        lines[0]
    );
    assert!(
        lines[0].ends_with(",cost_usd,saved_usd,repriced"),
        "{}",
        lines[0]
    );
    // anthropic, priced: 2 requests, 1100 in, 110 out, 4_950_000 nano-USD = 0.004950000.
    assert_eq!(
        lines[1],
        "anthropic,true,2,0,0,0,0,0,0,1100,110,0,0,0,0,0.004950000,0.000000000,false"
    );
    // openai: 1000 in, 100 out, 210_000 nano-USD = 0.000210000.
    assert_eq!(
        lines[2],
        "openai,true,1,0,0,0,0,0,0,1000,100,0,0,0,0,0.000210000,0.000000000,false"
    );
    // The unknown model: 7 in, 7 out, and empty money cells.
    assert_eq!(
        lines[3],
        "anthropic,false,1,0,0,0,1,0,0,7,7,0,0,0,0,,,false"
    );
    assert_eq!(lines[4], "", "the last row ends with CRLF");
    assert_eq!(lines.len(), 5, "{csv}");

    let output = daemon.ctl(&["stats", "--csv", "--json"]);
    assert_eq!(output.status.code(), Some(2), "--csv conflicts with --json");
}

#[test]
fn pricing_lists_sources() {
    let mock = MockUpstream::start();
    let (dirs, daemon) = start_with_config(&mock, OVERRIDES);
    let config_path = dirs.config_file().display().to_string();
    let reply: PricingReply = ctl::json(&daemon, &["pricing", "--json"]);
    let find = |provider: &str, id: &str| {
        reply
            .rows
            .iter()
            .find(|row| row.provider == provider && row.id == id)
            .unwrap_or_else(|| panic!("no {provider} row {id}"))
    };

    let sonnet = find("anthropic", SONNET);
    assert_eq!(sonnet.source, "config", "the override replaced the row");
    assert_eq!(sonnet.file.as_deref(), Some(config_path.as_str()));
    // $2 per MTok is 2000 nano-USD per token; $5 per 1,000 searches is 5_000_000 each.
    assert_eq!(sonnet.rates.input, 2000);
    assert_eq!(sonnet.web_search_nano_usd, 5_000_000);
    assert!(
        sonnet
            .aliases
            .contains(&"claude-sonnet-4-5-20250929".to_owned()),
        "{:?}",
        sonnet.aliases
    );
    let custom = find("anthropic", "claude-custom-1");
    assert_eq!(custom.aliases, ["claude-custom-latest"]);
    // Unset web_search_per_1000 of an anthropic row: $10 per 1,000, 10_000_000 each.
    assert_eq!(custom.web_search_nano_usd, 10_000_000);
    let opus = find("anthropic", "claude-opus-4-5");
    assert_eq!(opus.source, "embedded");
    assert!(opus
        .url
        .as_deref()
        .is_some_and(|url| url.starts_with("https://")));
    assert!(opus.as_of.is_some(), "embedded rows carry their date");
    assert_eq!(opus.file, None);
    let long = find("anthropic", "claude-sonnet-4").long_context.clone();
    assert_eq!(long.map(|tier| tier.threshold_input_tokens), Some(200_000));

    let openai: PricingReply = ctl::json(&daemon, &["pricing", "--provider", "openai", "--json"]);
    assert!(!openai.rows.is_empty(), "OpenAI rows");
    assert!(openai.rows.iter().all(|row| row.provider == "openai"));

    let table = ctl::text(&daemon, &["pricing"]);
    let line = table
        .lines()
        .find(|line| line.contains("claude-custom-1"))
        .unwrap_or_else(|| panic!("no claude-custom-1 row:\n{table}"));
    assert!(line.contains(&format!("config, {config_path}")), "{line}");
    assert!(line.contains("|   0.5 |"), "input in USD per MTok: {line}");
}

#[test]
fn invalid_price_row_stops_startup() {
    let dirs = DaemonDirs::new();
    let text = "[[prices]]\nid = \"my-model\"\ninput = \"1\"\n";
    std::fs::write(dirs.config_file(), text).unwrap();
    let output = Command::new(binary("ccod"))
        .arg("--config")
        .arg(dirs.config_file())
        .arg("--data-dir")
        .arg(dirs.data_dir())
        .arg("--socket")
        .arg(dirs.socket())
        .arg("--test-config")
        .stdin(Stdio::null())
        .output()
        .expect("ccod runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "ccod accepted the row: {stderr}");
    assert!(
        stderr.contains("config price table, model my-model: missing required field `output`"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&dirs.config_file().display().to_string()),
        "{stderr}"
    );
}
