//! Faults and crashes: a misbehaving upstream, error storms, malformed HTTP from clients,
//! and `kill -9` under load. After each, the daemon keeps serving and loses nothing it
//! promised to keep.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use cco_tests::daemon::{DaemonDirs, DaemonOptions, DaemonProcess};
use cco_tests::{anthropic, http, openai, MockUpstream, Reply};

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

fn metrics(daemon: &DaemonProcess) -> String {
    let response = http::send(daemon.addr, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    response.text()
}

/// Polls `/metrics` until it contains every line of `lines` or five seconds pass, and
/// returns the last text read.
fn wait_for_metrics(daemon: &DaemonProcess, lines: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(daemon);
        if lines.iter().all(|line| text.contains(line)) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls the stats until `total.requests` reaches `count` or five seconds pass, and returns
/// the last `total` read.
fn wait_for_recorded(daemon: &DaemonProcess, count: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let total = stats(daemon)["total"].clone();
        if total["requests"].as_u64() >= Some(count) || Instant::now() > deadline {
            return total;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
    for round in 0..2000 {
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

#[test]
fn targets_without_a_path_get_400() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    for target in ["GARBAGE", "*", "example.com:80"] {
        let raw = format!(
            "GET {target} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            daemon.addr
        );
        let mut socket = TcpStream::connect(daemon.addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        socket.write_all(raw.as_bytes()).unwrap();
        let mut answer = Vec::new();
        socket.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer} for {target}");
        assert!(
            answer.contains("\"type\":\"invalid_request_error\""),
            "{answer} for {target}"
        );
        assert!(
            answer.contains("send a path that starts with /"),
            "{answer} for {target}"
        );
    }
    assert_eq!(mock.request_count(), 0, "nothing reached the upstream");
    assert_serving(&daemon, &mock);
}

/// A listener on 127.0.0.1 that never accepts and whose accept queue is full, so a connect
/// to it neither succeeds nor fails: Linux drops the SYNs to a listener with a full queue.
#[cfg(target_os = "linux")]
struct SilentListener {
    addr: SocketAddr,
    _listener: TcpListener,
    /// The connections that fill the accept queue.
    _fillers: Vec<TcpStream>,
}

#[cfg(target_os = "linux")]
impl SilentListener {
    fn start() -> Self {
        use socket2::{Domain, Socket, Type};

        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("TCP socket");
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        socket.bind(&local.into()).expect("bind 127.0.0.1:0");
        // A backlog of 0 leaves room for a single connection in the accept queue.
        socket.listen(0).expect("listen");
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr().expect("local address");

        let mut fillers = Vec::new();
        let mut hung = false;
        for _ in 0..8 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(stream) => fillers.push(stream),
                Err(err) if err.kind() == ErrorKind::TimedOut => {
                    hung = true;
                    break;
                }
                Err(err) => panic!("connect to the silent listener failed: {err}"),
            }
        }
        assert!(!fillers.is_empty(), "the accept queue took no connection");
        assert!(
            hung,
            "connects still succeed after {} connections",
            fillers.len()
        );
        Self {
            addr,
            _listener: listener,
            _fillers: fillers,
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[cfg(target_os = "linux")]
#[test]
fn slow_connect_gets_504() {
    let silent = SilentListener::start();
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let options = DaemonOptions::new(&silent.base_url())
        .openai_upstream(&mock.base_url())
        .arg("--connect-timeout")
        .arg("1");
    let daemon = DaemonProcess::start(&dirs, &options);

    for attempt in ["first", "second"] {
        let started = Instant::now();
        let response = post(&daemon, "never connects").unwrap();
        let waited = started.elapsed();

        assert_eq!(response.status, 504, "{attempt}: {}", response.text());
        let body = response.json();
        assert_eq!(body["type"], "error", "{attempt}: {body}");
        assert_eq!(body["error"]["type"], "api_error", "{attempt}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&silent.base_url()),
            "{attempt}: the message should name the upstream: {message:?}"
        );
        assert!(
            message.contains("--connect-timeout"),
            "{attempt}: the message should name the setting: {message:?}"
        );
        // The second request would be a hit if the first had stored anything.
        assert_eq!(response.header("x-cco-cache"), Some("miss"), "{attempt}");
        assert!(
            waited >= Duration::from_millis(900),
            "{attempt}: the 504 came after {waited:?}, before the 1 s connect timeout"
        );
        assert!(
            waited < Duration::from_millis(3000),
            "{attempt}: the 504 came after {waited:?}, not after the 1 s connect timeout"
        );
    }

    let recorded = "cco_requests_total{provider=\"anthropic\",model=\"claude-haiku-4-5\",status=\"504\",cache=\"miss\"} 2\n";
    let text = wait_for_metrics(&daemon, &[recorded]);
    assert!(text.contains(recorded), "{text}");
    assert!(text.contains("cco_cache_entries 0\n"), "{text}");
    assert!(text.contains("cco_in_flight_requests 0\n"), "{text}");
    let total = wait_for_recorded(&daemon, 2);
    assert_eq!(total["requests"], 2, "{total}");
    assert_eq!(total["errors"], 2, "{total}");

    // The OpenAI upstream works, and the daemon still serves it.
    mock.push_reply(Reply::json(
        200,
        openai::chat_completion_json("gpt-4o", "fine", openai::usage(3, 1)),
    ));
    let chat = serde_json::json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "still there?"}],
    });
    let response = http::send(
        daemon.addr,
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-resilience")],
        chat.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(mock.request_count(), 1);
    let status = daemon.ctl(&["status"]);
    assert!(status.status.success(), "ccoctl status failed: {status:?}");
}

#[test]
fn disconnect_during_body_sends_nothing() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let full = body("half a body");
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {}\r\nx-api-key: sk-ant-resilience\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        daemon.addr,
        full.len()
    );
    let mut socket = TcpStream::connect(daemon.addr).unwrap();
    socket.write_all(head.as_bytes()).unwrap();
    socket.write_all(&full[..full.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(socket);

    let idle = ["cco_in_flight_requests 0\n", "cco_open_connections 1\n"];
    let text = wait_for_metrics(&daemon, &idle);
    for line in idle {
        assert!(text.contains(line), "{line} missing from {text}");
    }
    assert!(text.contains("cco_cache_entries 0\n"), "{text}");
    assert_eq!(mock.request_count(), 0, "half a body must not be forwarded");

    // The whole request afterwards finds no cache entry.
    let response = post(&daemon, "half a body").unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-cco-cache"), Some("miss"));
    assert_eq!(mock.request_count(), 1);
    assert_serving(&daemon, &mock);
    let total = wait_for_recorded(&daemon, 2);
    assert_eq!(
        total["requests"], 2,
        "only the two complete requests are recorded: {total}"
    );
}

#[test]
fn disconnect_before_first_byte_cancels_upstream() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    mock.push_reply(
        Reply::json(
            200,
            anthropic::message_json(MODEL, "too late", anthropic::usage(7, 2)),
        )
        .delay(Duration::from_secs(3)),
    );
    let full = body("waiting for the head");
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {}\r\nx-api-key: sk-ant-resilience\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        daemon.addr,
        full.len()
    );
    let mut socket = TcpStream::connect(daemon.addr).unwrap();
    socket.write_all(head.as_bytes()).unwrap();
    socket.write_all(&full).unwrap();
    assert!(
        mock.wait_for_requests(1, Duration::from_secs(5)),
        "the request did not reach the upstream"
    );
    drop(socket);

    assert!(
        mock.wait_for_disconnects(1, Duration::from_secs(2)),
        "the upstream connection stayed open after the client left"
    );
    let idle = wait_for_metrics(&daemon, &["cco_in_flight_requests 0\n"]);
    assert!(idle.contains("cco_in_flight_requests 0\n"), "{idle}");
    assert!(idle.contains("cco_cache_entries 0\n"), "{idle}");

    // Nothing was stored, so the same request goes upstream again.
    mock.push_reply(Reply::json(
        200,
        anthropic::message_json(MODEL, "in time", anthropic::usage(7, 2)),
    ));
    let response = post(&daemon, "waiting for the head").unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("x-cco-cache"), Some("miss"));
    assert_eq!(mock.request_count(), 2);
    assert_serving(&daemon, &mock);
}

#[cfg(unix)]
#[test]
fn sigterm_under_load_finishes_every_request() {
    const IN_FLIGHT: usize = 16;
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    for _ in 0..IN_FLIGHT {
        mock.push_reply(
            Reply::json(
                200,
                anthropic::message_json(MODEL, "finished", anthropic::usage(100, 10)),
            )
            .delay(Duration::from_millis(500)),
        );
    }

    let addr = daemon.addr;
    let clients: Vec<_> = (0..IN_FLIGHT)
        .map(|index| {
            std::thread::spawn(move || {
                http::send(
                    addr,
                    "POST",
                    "/v1/messages",
                    &[("x-api-key", "sk-ant-resilience")],
                    &body(&format!("in flight {index}")),
                )
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while mock.request_count() < IN_FLIGHT && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        mock.request_count(),
        IN_FLIGHT,
        "requests upstream before SIGTERM"
    );

    let terminated_at = Instant::now();
    let exit_code = daemon.terminate();
    let exited_after = terminated_at.elapsed();
    assert_eq!(exit_code, Some(0), "exit code after SIGTERM");
    // The shutdown waits at most 30 s for requests in flight; these need 0.5 s.
    assert!(
        exited_after < Duration::from_secs(30),
        "ccod took {exited_after:?} to exit"
    );
    for client in clients {
        let response = client
            .join()
            .unwrap()
            .expect("response of a request in flight");
        assert_eq!(response.status, 200, "{}", response.text());
        assert!(response.text().contains("finished"), "{}", response.text());
    }

    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let totals = &stats(&daemon)["total"];
    assert_eq!(totals["requests"], IN_FLIGHT, "records kept across SIGTERM");
    assert_eq!(totals["errors"], 0, "every request completed");
    // claude-haiku-4-5: 16 * (100 in * 1000 + 10 out * 5000) = 16 * 150,000 = 2,400,000
    // nano-USD.
    assert_eq!(
        totals["cost_nano_usd"], 2_400_000,
        "cost of the finished requests"
    );
}
