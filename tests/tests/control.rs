//! End-to-end tests of the control plane: `ccoctl` and raw frames on the control socket.

use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cco_proto::CRATE_VERSION;
use cco_tests::daemon::{self, DaemonDirs, DaemonOptions, DaemonProcess};
use cco_tests::{anthropic, ctl, http, MockUpstream, Reply};
use serde_json::{json, Value};

const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);
const EXIT_DEADLINE: Duration = Duration::from_secs(20);

/// A valid status request frame with id 1, newline included.
const STATUS_FRAME: &[u8] =
    b"{\"protocol\":1,\"id\":1,\"client_version\":\"test\",\"command\":\"status\"}\n";

fn start(mock: &MockUpstream) -> (DaemonDirs, DaemonProcess) {
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    (dirs, daemon)
}

fn message_body(text: &str, stream: bool) -> Vec<u8> {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    })
    .to_string()
    .into_bytes()
}

fn post(daemon: &DaemonProcess, body: &[u8]) -> http::HttpResponse {
    http::send(
        daemon.addr,
        "POST",
        "/v1/messages",
        &[("content-type", "application/json")],
        body,
    )
    .unwrap_or_else(|err| panic!("POST /v1/messages through ccod failed: {err}"))
}

/// Connects to the control socket with read and write deadlines.
fn connect(dirs: &DaemonDirs) -> (UnixStream, BufReader<UnixStream>) {
    let stream = UnixStream::connect(dirs.socket()).expect("connect to the control socket");
    stream
        .set_read_timeout(Some(SOCKET_TIMEOUT))
        .expect("set the read timeout");
    stream
        .set_write_timeout(Some(SOCKET_TIMEOUT))
        .expect("set the write timeout");
    let reader = BufReader::new(stream.try_clone().expect("clone the control socket"));
    (stream, reader)
}

/// Reads one response frame and parses it.
fn read_frame(reader: &mut BufReader<UnixStream>) -> Value {
    let mut line = String::new();
    let read = reader
        .read_line(&mut line)
        .expect("read a response frame within the deadline");
    assert!(read > 0, "the daemon closed the connection without a reply");
    assert!(
        line.ends_with('\n'),
        "response frame without newline: {line:?}"
    );
    serde_json::from_str(&line)
        .unwrap_or_else(|err| panic!("invalid response frame ({err}): {line:?}"))
}

fn assert_error_frame(frame: &Value, kind: &str, id: &Value, case: &str) {
    assert_eq!(frame["protocol"], 1, "{case}: protocol in {frame}");
    assert_eq!(&frame["id"], id, "{case}: id in {frame}");
    assert_eq!(
        frame["server_version"], CRATE_VERSION,
        "{case}: server_version in {frame}"
    );
    assert_eq!(
        frame["response"]["result"], "error",
        "{case}: result in {frame}"
    );
    assert_eq!(frame["response"]["kind"], kind, "{case}: kind in {frame}");
    let message = frame["response"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{case}: message in {frame}");
}

/// Checks that the daemon still replies to `ccoctl status` and proxies a request.
fn assert_still_serves(daemon: &DaemonProcess, case: &str) {
    let status = daemon.ctl(&["status"]);
    assert!(
        status.status.success(),
        "{case}: ccoctl status afterwards: {status:?}"
    );
    let response = post(
        daemon,
        &message_body(&format!("still there after {case}"), false),
    );
    assert_eq!(response.status, 200, "{case}: proxied request afterwards");
}

/// Waits for `child` to exit, killing it and failing the test after [`EXIT_DEADLINE`].
fn wait_for_exit(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + EXIT_DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("poll the child process") {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ccod did not exit within {EXIT_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a second `ccod` with the given data directory and socket until it exits.
fn run_second_ccod(dirs: &DaemonDirs, data_dir: &Path, socket: &Path, upstream: &str) -> Output {
    let mut child = Command::new(daemon::binary("ccod"))
        .arg("--port")
        .arg("0")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--socket")
        .arg(socket)
        .arg("--log-level")
        .arg("warn")
        .arg("--anthropic-base-url")
        .arg(upstream)
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("CCO_SOCKET")
        .env("CCO_CONFIG", dirs.config_file())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("second ccod starts");
    wait_for_exit(&mut child);
    child.wait_with_output().expect("output of the second ccod")
}

#[test]
fn status_reports_daemon() {
    let mock = MockUpstream::start();
    let (_dirs, daemon) = start(&mock);
    post(&daemon, &message_body("count me", false));
    ctl::wait_for_records(&daemon, 1);

    let text = ctl::text(&daemon, &["status"]);
    let field = |label: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(label))
            .map(str::trim)
            .unwrap_or_else(|| panic!("ccoctl status has no {label:?} line:\n{text}"))
            .to_owned()
    };
    let status = ctl::status(&daemon);

    assert_eq!(field("version:"), CRATE_VERSION, "version line");
    assert_eq!(
        field("listening on:"),
        daemon.addr.to_string(),
        "listening on line"
    );
    assert_eq!(field("requests served:"), "1", "requests served line");
    assert_eq!(
        status.listen_addr,
        daemon.addr.to_string(),
        "listen_addr in JSON"
    );
    assert_eq!(status.requests_served, 1, "requests_served in JSON");
    assert_eq!(status.pid, daemon.child.id(), "pid in JSON");
}

#[test]
fn no_daemon_exits_3() {
    let empty = tempfile::tempdir().expect("temporary directory");
    let socket = empty.path().join("ccod.sock");

    for command in [&["status"][..], &["stats"][..]] {
        let output = daemon::ctl(&socket, command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(3),
            "ccoctl {command:?} without a daemon: {stderr}"
        );
        assert!(
            stderr.contains(&socket.display().to_string()),
            "ccoctl {command:?} names the socket: {stderr}"
        );
    }
}

#[test]
fn malformed_frames_get_errors() {
    let mock = MockUpstream::start();
    let (dirs, daemon) = start(&mock);
    let cases: [(&str, &[u8], &str, Value); 4] = [
        (
            "invalid JSON",
            b"{not json\n",
            "malformed_frame",
            Value::Null,
        ),
        ("JSON array", b"[1,2]\n", "malformed_frame", Value::Null),
        (
            "unknown command",
            b"{\"protocol\":1,\"id\":7,\"client_version\":\"test\",\"command\":\"explode\"}\n",
            "unknown_command",
            json!(7),
        ),
        (
            "protocol 99",
            b"{\"protocol\":99,\"id\":8,\"client_version\":\"test\",\"command\":\"status\"}\n",
            "protocol_mismatch",
            json!(8),
        ),
    ];

    for (case, frame, kind, id) in cases {
        let (mut stream, mut reader) = connect(&dirs);
        stream.write_all(frame).expect("write the frame");
        let reply = read_frame(&mut reader);
        assert_error_frame(&reply, kind, &id, case);

        stream
            .write_all(STATUS_FRAME)
            .expect("write a status frame");
        let status = read_frame(&mut reader);
        assert_eq!(
            status["response"]["result"], "status",
            "{case}: the connection still serves: {status}"
        );
    }

    assert_still_serves(&daemon, "malformed frames");
}

#[test]
fn oversized_frame_rejected() {
    let mock = MockUpstream::start();
    let (dirs, daemon) = start(&mock);
    let (mut stream, mut reader) = connect(&dirs);
    let mut frame = vec![b'x'; 1024 * 1024 + 100];
    frame.push(b'\n');

    stream.write_all(&frame).expect("write the oversized frame");
    stream
        .write_all(STATUS_FRAME)
        .expect("write a status frame");
    let rejected = read_frame(&mut reader);
    let status = read_frame(&mut reader);

    assert_error_frame(
        &rejected,
        "frame_too_large",
        &Value::Null,
        "frame over 1 MiB",
    );
    assert_eq!(
        status["response"]["result"], "status",
        "the frame after the oversized one: {status}"
    );
    assert_still_serves(&daemon, "an oversized frame");
}

#[test]
fn cut_frame_rejected() {
    let mock = MockUpstream::start();
    let (dirs, daemon) = start(&mock);
    let (mut stream, mut reader) = connect(&dirs);

    stream
        .write_all(br#"{"protocol":1,"id":5,"client_version":"test","command":"status""#)
        .expect("write the cut frame");
    stream
        .shutdown(Shutdown::Write)
        .expect("close the write side");
    let reply = read_frame(&mut reader);

    assert_error_frame(&reply, "malformed_frame", &Value::Null, "frame cut at EOF");
    assert_still_serves(&daemon, "a cut frame");
}

#[test]
fn repeated_malformed_frames() {
    let mock = MockUpstream::start();
    let (dirs, daemon) = start(&mock);
    let (mut stream, mut reader) = connect(&dirs);
    let mut frames = b"not json\n".repeat(1000);
    frames.extend_from_slice(STATUS_FRAME);

    stream.write_all(&frames).expect("write the frames");
    for index in 0..1000 {
        let reply = read_frame(&mut reader);
        assert_error_frame(
            &reply,
            "malformed_frame",
            &Value::Null,
            &format!("malformed frame {index}"),
        );
    }
    let status = read_frame(&mut reader);

    assert_eq!(
        status["response"]["result"], "status",
        "the frame after 1000 malformed ones: {status}"
    );
    assert_still_serves(&daemon, "1000 malformed frames");
}

#[test]
fn shutdown_removes_socket() {
    let mock = MockUpstream::start();
    let (dirs, daemon) = start(&mock);
    assert!(dirs.socket().exists(), "socket file while running");

    let exit_code = daemon.shutdown();

    assert_eq!(exit_code, Some(0), "exit code after ccoctl shutdown");
    assert!(!dirs.socket().exists(), "socket file after shutdown");
}

#[test]
fn second_daemon_rejected() {
    let mock = MockUpstream::start();
    let (dirs, daemon) = start(&mock);
    let other = tempfile::tempdir().expect("temporary directory");

    let same_data = run_second_ccod(
        &dirs,
        &dirs.data_dir(),
        &other.path().join("ccod.sock"),
        &mock.base_url(),
    );
    let same_socket = run_second_ccod(
        &dirs,
        &other.path().join("data"),
        &dirs.socket(),
        &mock.base_url(),
    );

    let stderr = String::from_utf8_lossy(&same_data.stderr);
    assert!(
        !same_data.status.success(),
        "second ccod on the same data directory: {stderr}"
    );
    assert!(
        stderr.contains(&dirs.data_dir().display().to_string()),
        "the error names the data directory's path: {stderr}"
    );
    assert!(
        stderr.contains("data directory"),
        "the error says the data directory is in use: {stderr}"
    );
    let stderr = String::from_utf8_lossy(&same_socket.stderr);
    assert!(
        !same_socket.status.success(),
        "second ccod on the same socket: {stderr}"
    );
    assert!(
        stderr.contains(&dirs.socket().display().to_string()),
        "the error names the socket: {stderr}"
    );
    assert!(dirs.socket().exists(), "the first daemon's socket is kept");
    assert_still_serves(&daemon, "a rejected second ccod");
}

#[test]
fn sigint_stops_gracefully() {
    let mock = MockUpstream::start();
    let (dirs, mut daemon) = start(&mock);
    let events = anthropic::sse_events(
        "claude-sonnet-4-5",
        &["interrupted", " but", " finished"],
        anthropic::usage(10, 1),
        json!({"output_tokens": 3}),
    );
    mock.push_reply(Reply::sse(events).chunk_delay(Duration::from_millis(150)));
    let mut stream = http::open_stream(
        daemon.addr,
        "POST",
        "/v1/messages",
        &[("content-type", "application/json")],
        &message_body("slow stream", true),
    )
    .expect("stream request through ccod");
    let first = stream
        .next_chunk(SOCKET_TIMEOUT)
        .expect("first chunk of the stream");
    let reader = std::thread::spawn(move || stream.read_to_end(Duration::from_secs(30)));

    let pid = daemon.child.id().to_string();
    let killed = Command::new("kill").args(["-INT", &pid]).status();
    let exit_code = wait_for_exit(&mut daemon.child);
    let rest = reader
        .join()
        .expect("reader thread")
        .expect("rest of the stream");

    assert!(first.is_some(), "the stream started before SIGINT");
    assert!(
        killed.is_ok_and(|status| status.success()),
        "kill -INT {pid}"
    );
    assert_eq!(exit_code, Some(0), "exit code after SIGINT");
    assert!(
        String::from_utf8_lossy(&rest).contains("event: message_stop"),
        "the stream in flight finished"
    );
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    assert_eq!(
        ctl::stats(&daemon).total.requests,
        1,
        "record kept across SIGINT"
    );
}
