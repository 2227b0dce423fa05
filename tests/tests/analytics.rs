//! `--no-analytics`: the daemon counts requests for `/metrics` and writes no record to the
//! data directory, `ccoctl stats` reports that, and records of earlier runs stay as they were.
//!
//! Each test reads the sled database of the data directory itself, after the daemon has
//! stopped and released it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cco_proto::{StatsReply, StatusReply};
use cco_tests::daemon::{binary, DaemonDirs, DaemonOptions, DaemonProcess};
use cco_tests::{anthropic, ctl, http, MockUpstream, Reply};

const HAIKU: &str = "claude-haiku-4-5";

/// Contents of one sled tree, in key order.
type TreeContents = Vec<(Vec<u8>, Vec<u8>)>;

/// The analytics trees of a data directory whose daemon has stopped.
struct Stored {
    /// Names of every tree in the database.
    tree_names: Vec<String>,
    records: TreeContents,
    rollups: TreeContents,
}

/// Opens the database of `data_dir` and reads the trees `records` and `rollups`, waiting
/// up to five seconds for the stopped daemon's lock to go.
fn read_store(data_dir: &Path) -> Stored {
    let path = data_dir.join("db");
    let deadline = Instant::now() + Duration::from_secs(5);
    let db = loop {
        match sled::open(&path) {
            Ok(db) => break db,
            Err(err) if Instant::now() > deadline => {
                panic!("cannot open {}: {err}", path.display())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let tree_names = db
        .tree_names()
        .iter()
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    let contents = |name: &str| -> TreeContents {
        db.open_tree(name)
            .unwrap()
            .iter()
            .map(|entry| {
                let (key, value) = entry.unwrap();
                (key.to_vec(), value.to_vec())
            })
            .collect()
    };
    Stored {
        tree_names,
        records: contents("records"),
        rollups: contents("rollups"),
    }
}

fn message_body(text: &str) -> Vec<u8> {
    serde_json::json!({
        "model": HAIKU,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
    })
    .to_string()
    .into_bytes()
}

/// Sends `texts` through the daemon, one Messages request each, and returns the
/// `x-cco-cache` value of each response.
fn send(daemon: &DaemonProcess, texts: &[&str]) -> Vec<String> {
    let headers = [
        ("content-type", "application/json"),
        ("x-api-key", "sk-ant-test-analytics"),
    ];
    texts
        .iter()
        .map(|text| {
            let response = http::send(
                daemon.addr,
                "POST",
                "/v1/messages",
                &headers,
                &message_body(text),
            )
            .unwrap_or_else(|err| panic!("POST /v1/messages through ccod failed: {err}"));
            assert_eq!(response.status, 200, "{}", response.text());
            response.header("x-cco-cache").unwrap_or("").to_owned()
        })
        .collect()
}

/// Queues `count` replies of claude-haiku-4-5 with 100 input and 20 output tokens.
fn push_replies(mock: &MockUpstream, count: usize) {
    for _ in 0..count {
        mock.push_reply(Reply::json(
            200,
            anthropic::message_json(HAIKU, "answer", anthropic::usage(100, 20)),
        ));
    }
}

/// Waits until the cache contains `count` entries, so that a repeated request is a hit.
fn wait_for_cache_entries(daemon: &DaemonProcess, count: u64) {
    let deadline = Instant::now() + ctl::RECORD_DEADLINE;
    while ctl::cache_stats(daemon).entries < count {
        assert!(
            Instant::now() < deadline,
            "the cache contains fewer than {count} entries after {:?}",
            ctl::RECORD_DEADLINE
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sums every `cco_requests_total` sample of `/metrics` whose labels contain `labels`.
fn requests_total(daemon: &DaemonProcess, labels: &str) -> u64 {
    let response = http::send(daemon.addr, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    response
        .text()
        .lines()
        .filter(|line| line.starts_with("cco_requests_total{") && line.contains(labels))
        .map(|line| {
            let (_, count) = line.rsplit_once(' ').expect("sample has a value");
            count.parse::<u64>().expect("request count is a number")
        })
        .sum()
}

/// Polls `/metrics` until `cco_requests_total` sums to at least `count` or five seconds
/// pass, and returns the last sum.
fn wait_for_requests_total(daemon: &DaemonProcess, count: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let total = requests_total(daemon, "");
        if total >= count || Instant::now() > deadline {
            return total;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn no_analytics_writes_no_records() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();

    // First run, with analytics off, on an empty data directory.
    let options = DaemonOptions::new(&mock.base_url()).arg("--no-analytics");
    let daemon = DaemonProcess::start(&dirs, &options);
    push_replies(&mock, 2);
    assert_eq!(send(&daemon, &["first", "second"]), ["miss", "miss"]);
    wait_for_cache_entries(&daemon, 2);
    assert_eq!(send(&daemon, &["first"]), ["hit"]);
    assert_eq!(mock.request_count(), 2);

    assert_eq!(wait_for_requests_total(&daemon, 3), 3);
    assert_eq!(requests_total(&daemon, "cache=\"miss\""), 2);
    assert_eq!(requests_total(&daemon, "cache=\"hit\""), 1);

    let output = daemon.ctl(&["stats"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.starts_with(
            "analytics are off (--no-analytics or [analytics] enabled = false): no requests \
             are recorded\n"
        ),
        "{text}"
    );
    assert!(!text.contains("requests:"), "{text}");

    let stats: StatsReply = ctl::json(&daemon, &["stats", "--json"]);
    assert!(!stats.analytics_enabled);
    assert_eq!(stats.total.requests, 0);
    assert!(stats.rows.is_empty());

    let output = daemon.ctl(&["stats", "--csv"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty(), "no CSV is printed");
    assert!(stderr.contains("analytics are off in ccod"), "{stderr}");

    let status: StatusReply = ctl::status(&daemon);
    assert!(!status.analytics_enabled);
    assert_eq!(status.requests_served, 3);
    let text = ctl::text(&daemon, &["status"]);
    assert!(text.contains("analytics:       disabled"), "{text}");
    let text = ctl::text(&daemon, &["config"]);
    assert!(text.contains("[analytics]\nenabled = false\n"), "{text}");

    // The metrics count every request exactly once, also after the queries above.
    assert_eq!(requests_total(&daemon, ""), 3);
    assert_eq!(daemon.shutdown(), Some(0));

    let stored = read_store(&dirs.data_dir());
    assert!(
        !stored.tree_names.iter().any(|name| name == "records"),
        "ccod opened the records tree: {:?}",
        stored.tree_names
    );
    assert!(
        !stored.tree_names.iter().any(|name| name == "rollups"),
        "ccod opened the rollups tree: {:?}",
        stored.tree_names
    );
    assert!(stored.records.is_empty());
    assert!(stored.rollups.is_empty());

    // Second run, with analytics on, over the same data directory: it records.
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    push_replies(&mock, 2);
    let cache = send(&daemon, &["third", "fourth"]);
    assert_eq!(cache, ["miss", "miss"]);
    let stats = ctl::wait_for_records(&daemon, 2);
    assert!(stats.analytics_enabled);
    assert_eq!(stats.total.requests, 2);
    let status: StatusReply = ctl::status(&daemon);
    assert!(status.analytics_enabled);
    assert_eq!(daemon.shutdown(), Some(0));

    let recorded = read_store(&dirs.data_dir());
    assert_eq!(recorded.records.len(), 2);
    assert!(!recorded.rollups.is_empty());

    // Third run, with analytics off in the config file: the records stay as they were.
    std::fs::write(dirs.config_file(), "[analytics]\nenabled = false\n").unwrap();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    push_replies(&mock, 1);
    let cache = send(&daemon, &["fifth", "third"]);
    assert_eq!(cache, ["miss", "hit"]);
    assert_eq!(wait_for_requests_total(&daemon, 2), 2);
    let stats: StatsReply = ctl::json(&daemon, &["stats", "--json"]);
    assert!(!stats.analytics_enabled);
    assert_eq!(daemon.shutdown(), Some(0));

    let after = read_store(&dirs.data_dir());
    assert_eq!(after.records, recorded.records);
    assert_eq!(after.rollups, recorded.rollups);
}

#[test]
fn no_analytics_env_turns_it_off() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let options = DaemonOptions::new(&mock.base_url()).env("CCO_NO_ANALYTICS", "true");
    let daemon = DaemonProcess::start(&dirs, &options);
    push_replies(&mock, 1);
    assert_eq!(send(&daemon, &["only"]), ["miss"]);
    assert_eq!(wait_for_requests_total(&daemon, 1), 1);
    let stats: StatsReply = ctl::json(&daemon, &["stats", "--json"]);
    assert!(!stats.analytics_enabled);
    assert_eq!(daemon.shutdown(), Some(0));
    assert!(read_store(&dirs.data_dir()).records.is_empty());
}

#[test]
fn budgets_with_no_analytics_stop_startup() {
    let dirs = DaemonDirs::new();
    std::fs::write(dirs.config_file(), "[budgets]\ndaily_usd = 5\n").unwrap();
    let output = Command::new(binary("ccod"))
        .arg("--config")
        .arg(dirs.config_file())
        .arg("--data-dir")
        .arg(dirs.data_dir())
        .arg("--socket")
        .arg(dirs.socket())
        .arg("--no-analytics")
        .arg("--test-config")
        .env_remove("CCO_NO_ANALYTICS")
        .stdin(Stdio::null())
        .output()
        .expect("ccod runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("[budgets] sets limits"), "{stderr}");
    assert!(stderr.contains("--no-analytics"), "{stderr}");
    assert!(
        stderr.contains("remove the limits from [budgets] or turn analytics on"),
        "{stderr}"
    );
    assert!(!dirs.data_dir().exists(), "ccod created its data directory");
}
