//! Faults and crashes: a misbehaving upstream, error storms, malformed HTTP from clients,
//! and `kill -9` under load. After each, the daemon keeps serving and loses nothing it
//! promised to keep.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cco_tests::daemon::{DaemonDirs, DaemonOptions, DaemonProcess};
use cco_tests::{anthropic, http, MockUpstream, Reply};

const MODEL: &str = "claude-haiku-4-5";

fn body(text: &str) -> Vec<u8> {
    serde_json::json!({
        "model": MODEL,
        "max_tokens": 32,
        "messages": [{"role": "user", "content": text}],
    })
    .to_string()
    .into_bytes()
}

fn post(daemon: &DaemonProcess, text: &str) -> std::io::Result<http::HttpResponse> {
    http::send(
        daemon.addr,
        "POST",
        "/v1/messages",
        &[("x-api-key", "sk-ant-resilience")],
        &body(text),
    )
}

fn stats(daemon: &DaemonProcess) -> serde_json::Value {
    let output = daemon.ctl(&["stats", "--json"]);
    assert!(output.status.success(), "ccoctl stats failed: {output:?}");
    serde_json::from_slice(&output.stdout).expect("stats JSON")
}

/// Asserts that a plain request still succeeds.
fn assert_serving(daemon: &DaemonProcess, mock: &MockUpstream) {
    mock.push_reply(Reply::default_response());
    let response = post(daemon, "still there?").expect("the daemon answers");
    assert_eq!(response.status, 200, "{}", response.text());
}

#[test]
fn garbage_from_upstream_gets_502() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    mock.push_reply(Reply::raw(
        b"\x00\x01 this is not HTTP at all\r\n\r\n".to_vec(),
    ));

    let response = post(&daemon, "garbage").unwrap();
    assert_eq!(response.status, 502);
    assert_eq!(response.json()["type"], "error");
    assert_eq!(response.json()["error"]["type"], "api_error");
    assert_serving(&daemon, &mock);
}

#[test]
fn upstream_closing_without_response_gets_502() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    mock.push_reply(Reply::close_without_response());

    let response = post(&daemon, "closed").unwrap();
    assert_eq!(response.status, 502);
    assert_eq!(response.json()["error"]["type"], "api_error");
    assert_serving(&daemon, &mock);
}

#[test]
fn error_storm_passes_through_uncached() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    const STORM: usize = 60;
    for index in 0..STORM {
        if index % 2 == 0 {
            mock.push_reply(Reply::overloaded());
        } else {
            mock.push_reply(Reply::error(500, "api_error", "internal error"));
        }
    }
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let addr = daemon.addr;
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                for _ in 0..STORM / 4 {
                    let response = http::send(
                        addr,
                        "POST",
                        "/v1/messages",
                        &[("x-api-key", "sk-ant-resilience")],
                        &body("the same request every time"),
                    )
                    .unwrap();
                    statuses.push(response.status);
                }
                statuses
            })
        })
        .collect();
    let statuses: Vec<u16> = handles
        .into_iter()
        .flat_map(|handle| handle.join().unwrap())
        .collect();

    assert_eq!(statuses.len(), STORM);
    assert!(
        statuses
            .iter()
            .all(|status| *status == 500 || *status == 529),
        "every error passes through: {statuses:?}"
    );
    assert_eq!(
        mock.request_count(),
        STORM,
        "no error is served from the cache"
    );
    assert_serving(&daemon, &mock);
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats(&daemon)["total"]["errors"] != STORM as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(stats(&daemon)["total"]["errors"], STORM as u64);
}

#[test]
fn malformed_http_requests_leave_daemon_serving() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let inputs: [&[u8]; 8] = [
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET\r\n\r\n",
        b"POST /v1/messages HTTP/1.1\r\ncontent-length: nope\r\n\r\n",
        b"POST /v1/messages HTTP/1.1\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"POST /v1/messages HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nZZZZ\r\nxx\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header line without colon\r\n\r\n",
    ];
    for round in 0..250 {
        let input = inputs[round % inputs.len()];
        let mut socket = TcpStream::connect(daemon.addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = socket.write_all(input);
        let _ = socket.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
    }
    assert_eq!(
        mock.request_count(),
        0,
        "no malformed request reached the upstream"
    );
    assert_serving(&daemon, &mock);
    let status = daemon.ctl(&["status"]);
    assert!(status.status.success(), "the control socket still answers");
}

#[cfg(unix)]
#[test]
fn kill_9_under_load_keeps_flushed_records() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let usage = anthropic::usage(100, 10);

    // Records of responses completed more than a flush interval (500 ms) before the crash
    // must survive.
    for index in 0..20 {
        mock.push_reply(Reply::json(
            200,
            anthropic::message_json(MODEL, "kept", usage.clone()),
        ));
        let response = post(&daemon, &format!("early {index}")).unwrap();
        assert_eq!(response.status, 200);
    }
    std::thread::sleep(Duration::from_millis(1200));

    // Load still running when the daemon is killed.
    let addr = daemon.addr;
    let load = std::thread::spawn(move || {
        let mut answered = 0;
        for index in 0..200 {
            let result = http::send(
                addr,
                "POST",
                "/v1/messages",
                &[("x-api-key", "sk-ant-resilience")],
                &body(&format!("late {index}")),
            );
            match result {
                Ok(response) if response.status == 200 => answered += 1,
                _ => break,
            }
        }
        answered
    });
    std::thread::sleep(Duration::from_millis(300));
    daemon.kill();
    let late_answered = load.join().unwrap();

    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let totals = &stats(&daemon)["total"];
    let requests = totals["requests"].as_u64().unwrap();
    assert!(
        requests >= 20,
        "{requests} records survived; the 20 early ones must"
    );
    assert!(
        requests <= 20 + late_answered,
        "{requests} records for {} answered requests",
        20 + late_answered
    );
    // The early 20 are the scripted replies: 20 * (100 in * 1000 + 10 out * 5000) = 3,000,000
    // nano-USD at least; the late ones use the mock's default usage and only add to it.
    assert!(totals["cost_nano_usd"].as_u64().unwrap() >= 3_000_000);

    // The cache came through intact: an early request is still a hit.
    let again = post(&daemon, "early 3").unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(again.header("x-cco-cache"), Some("hit"));
    assert_serving(&daemon, &mock);
}

#[test]
fn connect_and_upgrade_are_rejected_at_once() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    for raw in [
        "CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n".to_owned(),
        format!(
            "GET /v1/models HTTP/1.1\r\nhost: {}\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
            daemon.addr
        ),
    ] {
        let started = Instant::now();
        let mut socket = TcpStream::connect(daemon.addr).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        socket.write_all(raw.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        socket.read_exact(&mut head).unwrap();
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 501"), "{head} for {raw:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
    }
    assert_eq!(mock.request_count(), 0);
    assert_serving(&daemon, &mock);
}
