//! `GET /metrics` serves Prometheus text with the counters of the requests served.

use std::io::{Read, Write};
use std::net::TcpStream;
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

/// Returns the value of the sample `series` (name and labels) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("sample value is a number"))
}

/// Sums `cco_requests_total` over every sample with `cache="CACHE"`.
fn requests_with_cache(text: &str, cache: &str) -> u64 {
    let label = format!(",cache=\"{cache}\"}} ");
    text.lines()
        .filter(|line| line.starts_with("cco_requests_total{"))
        .filter_map(|line| line.split_once(&label))
        .map(|(_, count)| count.parse::<u64>().expect("request count is a number"))
        .sum()
}

/// Sends `GET /metrics` on a keep-alive connection and reads the whole response, leaving
/// the connection open.
fn scrape_keeping_alive(socket: &mut TcpStream) {
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let read = socket
            .read(&mut buffer)
            .expect("response on the connection");
        assert!(read > 0, "ccod closed a keep-alive connection");
        received.extend_from_slice(&buffer[..read]);
        let Some(head_end) = received.windows(4).position(|window| window == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .expect("content-length")
            .trim()
            .parse()
            .unwrap();
        if received.len() >= head_end + 4 + length {
            return;
        }
    }
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

#[test]
fn open_connections_gauge_follows_connections() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    // Each scrape below opens its own connection, so the gauge reads the open keep-alive
    // connections plus one.
    let idle = wait_for_line(&daemon, "cco_open_connections 1\n");
    assert!(idle.contains("cco_open_connections 1\n"), "{idle}");

    const OPEN: usize = 3;
    let mut sockets: Vec<TcpStream> = (0..OPEN)
        .map(|_| {
            let mut socket = TcpStream::connect(daemon.addr).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            scrape_keeping_alive(&mut socket);
            socket
        })
        .collect();
    let open = wait_for_line(&daemon, "cco_open_connections 4\n");
    assert!(open.contains("cco_open_connections 4\n"), "{open}");
    // A second request on each connection is served on it, so no new one is counted.
    for socket in &mut sockets {
        scrape_keeping_alive(socket);
    }
    assert!(metrics(&daemon).contains("cco_open_connections 4\n"));

    sockets.truncate(1);
    let fewer = wait_for_line(&daemon, "cco_open_connections 2\n");
    assert!(fewer.contains("cco_open_connections 2\n"), "{fewer}");
    sockets.clear();
    let closed = wait_for_line(&daemon, "cco_open_connections 1\n");
    assert!(closed.contains("cco_open_connections 1\n"), "{closed}");
    assert_eq!(mock.request_count(), 0);
}

#[test]
fn open_streams_gauge_follows_streams() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let headers = [("x-api-key", "sk-ant-metrics")];
    let events = || {
        anthropic::sse_events(
            MODEL,
            &["one", " two", " three"],
            anthropic::usage(5, 1),
            anthropic::usage(5, 3),
        )
    };

    // A JSON response in progress is in flight but is not a stream.
    mock.push_reply(Reply::default_response().delay(Duration::from_millis(800)));
    let addr = daemon.addr;
    let waiting = std::thread::spawn(move || {
        http::send(addr, "POST", "/v1/messages", &headers, &body("json", false)).unwrap()
    });
    let json_in_flight = wait_for_line(&daemon, "cco_in_flight_requests 1\n");
    assert!(
        json_in_flight.contains("cco_in_flight_requests 1\n"),
        "{json_in_flight}"
    );
    assert!(
        json_in_flight.contains("cco_open_streams 0\n"),
        "{json_in_flight}"
    );
    assert_eq!(waiting.join().unwrap().status, 200);

    // A stream the mock keeps open, read to its end.
    mock.push_reply(Reply::sse(events()).chunk_delay(Duration::from_millis(400)));
    let mut stream = http::open_stream(
        daemon.addr,
        "POST",
        "/v1/messages",
        &headers,
        &body("held open", true),
    )
    .unwrap();
    assert!(stream.next_chunk(Duration::from_secs(5)).unwrap().is_some());
    let during = metrics(&daemon);
    assert!(during.contains("cco_open_streams 1\n"), "{during}");
    stream.read_to_end(Duration::from_secs(10)).unwrap();
    let ended = wait_for_line(&daemon, "cco_open_streams 0\n");
    assert!(ended.contains("cco_open_streams 0\n"), "{ended}");

    // A stream the client abandons.
    mock.push_reply(Reply::sse(events()).chunk_delay(Duration::from_millis(400)));
    let mut abandoned = http::open_stream(
        daemon.addr,
        "POST",
        "/v1/messages",
        &headers,
        &body("abandoned", true),
    )
    .unwrap();
    assert!(abandoned
        .next_chunk(Duration::from_secs(5))
        .unwrap()
        .is_some());
    let during = metrics(&daemon);
    assert!(during.contains("cco_open_streams 1\n"), "{during}");
    abandoned.close();
    let after = wait_for_line(&daemon, "cco_open_streams 0\n");
    assert!(after.contains("cco_open_streams 0\n"), "{after}");
}

#[test]
fn added_latency_counts_match_requests() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let headers = [("x-api-key", "sk-ant-metrics")];
    let send = |extra: &[(&str, &str)], text: &str, stream: bool| {
        let mut all = headers.to_vec();
        all.extend_from_slice(extra);
        let response = http::send(
            daemon.addr,
            "POST",
            "/v1/messages",
            &all,
            &body(text, stream),
        )
        .unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        response
            .header("x-cco-cache")
            .unwrap_or_default()
            .to_owned()
    };

    // The upstream takes 500 ms, which is not time the proxy added.
    mock.push_reply(Reply::default_response().delay(Duration::from_millis(500)));
    assert_eq!(send(&[], "slow miss", false), "miss");
    assert_eq!(send(&[], "slow miss", false), "hit");
    assert_eq!(send(&[], "stream miss", true), "miss");
    assert_eq!(
        send(&[("cache-control", "no-cache")], "bypass", false),
        "bypass"
    );
    assert_eq!(
        send(&[("cache-control", "no-cache")], "bypass", true),
        "bypass"
    );

    let line = "cco_added_latency_seconds_count{cache=\"bypass\"} 2\n";
    let text = wait_for_line(&daemon, line);
    for (cache, expected) in [("miss", 2), ("hit", 1), ("bypass", 2)] {
        let requests = requests_with_cache(&text, cache);
        assert_eq!(requests, expected, "{cache} requests in {text}");
        let count = sample(
            &text,
            &format!("cco_added_latency_seconds_count{{cache=\"{cache}\"}}"),
        );
        assert_eq!(
            count,
            Some(expected as f64),
            "{cache} added-latency count in {text}"
        );
        let infinite = sample(
            &text,
            &format!("cco_added_latency_seconds_bucket{{cache=\"{cache}\",le=\"+Inf\"}}"),
        );
        assert_eq!(
            infinite,
            Some(expected as f64),
            "{cache} +Inf bucket in {text}"
        );
    }
    let miss_sum = sample(&text, "cco_added_latency_seconds_sum{cache=\"miss\"}").unwrap();
    let miss_duration = sample(&text, "cco_request_duration_seconds_sum{cache=\"miss\"}").unwrap();
    assert!(miss_duration >= 0.5, "miss duration sum {miss_duration}");
    assert!(
        miss_sum > 0.0 && miss_sum < 0.25,
        "the added latency of the misses, {miss_sum} s, must leave out the upstream's 500 ms"
    );
    let hit_sum = sample(&text, "cco_added_latency_seconds_sum{cache=\"hit\"}").unwrap();
    assert!(
        hit_sum > 0.0,
        "a hit's added latency is its handler's time: {hit_sum}"
    );
}
