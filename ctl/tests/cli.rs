//! Runs the built `ccoctl` against no daemon and against a fake daemon that serves canned
//! replies on a socket in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ccoctl");

/// Runs `ccoctl --socket SOCKET ARGS...` with `CCO_SOCKET` cleared.
fn run_ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .env_remove("CCO_SOCKET")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("ccoctl runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn missing_socket_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("missing.sock");
    let output = run_ctl(&socket, &["status"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{message}");
    assert!(message.contains(&socket.display().to_string()), "{message}");
    assert!(message.contains("is it running?"), "{message}");
    assert!(stdout(&output).is_empty());
}

#[test]
fn env_socket_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("from-env.sock");
    let output = Command::new(BIN)
        .env("CCO_SOCKET", &socket)
        .arg("status")
        .output()
        .unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{message}");
    assert!(message.contains(&socket.display().to_string()), "{message}");
}

#[test]
fn empty_env_socket_names_the_variable() {
    let output = Command::new(BIN)
        .env("CCO_SOCKET", "")
        .arg("status")
        .output()
        .expect("ccoctl runs");
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(
        message.contains(
            "note: the value of --socket came from the environment variable CCO_SOCKET; \
             fix it or unset it"
        ),
        "{message}"
    );
}

#[test]
fn bad_since_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_ctl(
        &dir.path().join("unused.sock"),
        &["stats", "--since", "soon"],
    );
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("'soon'"), "{message}");
    assert!(message.contains("2025-06-01"), "{message}");
}

#[test]
fn help_lists_exit_codes() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0));
    assert!(text.contains("Exit codes:"), "{text}");
    assert!(text.contains("3  ccod is not running"), "{text}");
    assert!(text.contains("4  protocol mismatch"), "{text}");
}

#[cfg(unix)]
mod with_fake_daemon {
    use super::*;

    use std::io::{Read, Write};
    use std::thread::{self, JoinHandle};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use cco_proto::{
        decode_request, encode_frame, BudgetPeriod, BudgetStatus, CacheClearReply, ConfigReply,
        ErrorKind, ErrorReply, GroupTotals, LineFramer, Request, RequestFrame, Response,
        ResponseFrame, StatsReply, StatusReply, TokenCounts, UsageTotals,
    };
    use interprocess::local_socket::traits::{Listener as _, Stream as _};
    use interprocess::local_socket::{
        GenericFilePath, ListenerNonblockingMode, ListenerOptions, Stream, ToFsName,
    };

    /// How long the fake daemon waits for each connection and each read before it gives
    /// up, so a test whose client never connects fails instead of hanging.
    const SERVER_WAIT: Duration = Duration::from_secs(10);

    /// What the fake daemon does with one connection after reading its request.
    enum Reply {
        /// Sends these bytes and closes the connection.
        Bytes(Vec<u8>),
        /// Sends a frame that echoes the request id.
        Frame(Response),
        /// Sends nothing and waits until the client hangs up.
        Silence,
    }

    struct FakeDaemon {
        // Kept so the directory outlives the server.
        _dir: tempfile::TempDir,
        socket: PathBuf,
        server: JoinHandle<Vec<RequestFrame>>,
    }

    impl FakeDaemon {
        /// Serves one connection per reply, in order, then stops.
        fn start(replies: Vec<Reply>) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("ccod.sock");
            let name = socket.clone().to_fs_name::<GenericFilePath>().unwrap();
            let listener = ListenerOptions::new()
                .name(name)
                .nonblocking(ListenerNonblockingMode::Accept)
                .create_sync()
                .unwrap();
            let server = thread::spawn(move || {
                let mut requests = Vec::new();
                for reply in replies {
                    let stream = accept_within(&listener, SERVER_WAIT);
                    if let Some(request) = serve_one(stream, reply) {
                        requests.push(request);
                    }
                }
                requests
            });
            Self {
                _dir: dir,
                socket,
                server,
            }
        }

        /// Waits for the server to finish and returns the requests it decoded.
        fn requests(self) -> Vec<RequestFrame> {
            self.server.join().expect("fake daemon thread panicked")
        }
    }

    fn accept_within(listener: &interprocess::local_socket::Listener, wait: Duration) -> Stream {
        let deadline = Instant::now() + wait;
        loop {
            match listener.accept() {
                Ok(stream) => return stream,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "no client connected within {wait:?}"
                    );
                    thread::sleep(Duration::from_millis(10));
                }
                Err(err) => panic!("accept failed: {err}"),
            }
        }
    }

    fn serve_one(mut stream: Stream, reply: Reply) -> Option<RequestFrame> {
        stream.set_nonblocking(false).unwrap();
        stream.set_recv_timeout(Some(SERVER_WAIT)).unwrap();
        let mut framer = LineFramer::new();
        let mut chunk = [0u8; 4096];
        let frame = loop {
            if let Some(frame) = framer.next_frame() {
                break frame.unwrap();
            }
            let count = stream.read(&mut chunk).unwrap();
            if count == 0 {
                return None;
            }
            framer.push(&chunk[..count]);
        };
        let request = decode_request(&frame).expect("ccoctl sends a valid request");

        match reply {
            Reply::Bytes(bytes) => stream.write_all(&bytes).unwrap(),
            Reply::Frame(response) => {
                let frame = ResponseFrame::new(Some(request.id), response);
                stream.write_all(&encode_frame(&frame)).unwrap();
            }
            Reply::Silence => {
                // Returns once ccoctl gives up and closes its end, or after SERVER_WAIT.
                let _ = stream.read(&mut chunk);
            }
        }
        Some(request)
    }

    fn status_reply() -> StatusReply {
        StatusReply {
            version: "0.1.0".into(),
            protocol: 1,
            pid: 4242,
            uptime_secs: 3_725,
            listen_addr: "127.0.0.1:8000".into(),
            data_dir: "/var/lib/cco".into(),
            cache_enabled: true,
            cache_entries: 12,
            cache_bytes: 2048,
            requests_served: 56_789,
            analytics_enabled: true,
        }
    }

    fn stats_reply() -> StatsReply {
        let priced = UsageTotals {
            requests: 10,
            cache_hits: 4,
            errors: 1,
            unpriced_requests: 0,
            streams_without_usage: 0,
            rate_limited: 0,
            budget_rejected: 3,
            tokens: TokenCounts {
                input: 1_000,
                output: 2_000,
                cache_write_5m: 300,
                cache_write_1h: 400,
                cache_read: 5_000,
            },
            cost_nano_usd: 1_500_000_000,
            saved_nano_usd: 3_600_000,
            ..UsageTotals::default()
        };
        let unpriced = UsageTotals {
            requests: 2,
            unpriced_requests: 2,
            rate_limited: 0,
            tokens: TokenCounts {
                input: 7,
                output: 9,
                ..TokenCounts::default()
            },
            ..UsageTotals::default()
        };
        let mut total = priced.clone();
        total.requests += unpriced.requests;
        total.unpriced_requests += unpriced.unpriced_requests;
        total.tokens.add(&unpriced.tokens);
        StatsReply {
            since_unix_ms: Some(1_717_200_000_000),
            until_unix_ms: None,
            group_by: cco_proto::GroupBy::Model,
            repriced: false,
            analytics_enabled: true,
            total,
            rows: vec![
                GroupTotals {
                    group: "claude-sonnet-4-5".into(),
                    priced: true,
                    totals: priced,
                },
                GroupTotals {
                    group: "my-local-model".into(),
                    priced: false,
                    totals: unpriced,
                },
            ],
            budgets: Vec::new(),
        }
    }

    fn now_unix_ms() -> u64 {
        let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        u64::try_from(elapsed.as_millis()).unwrap()
    }

    #[test]
    fn status_shows_daemon_fields() {
        let daemon = FakeDaemon::start(vec![Reply::Frame(Response::Status(status_reply()))]);
        let output = run_ctl(&daemon.socket, &["status"]);
        let text = stdout(&output);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(text.contains("version:         0.1.0\n"), "{text}");
        assert!(text.contains("pid:             4242\n"), "{text}");
        assert!(text.contains("uptime:          1h 2m 5s\n"), "{text}");
        assert!(text.contains("listening on:    127.0.0.1:8000\n"), "{text}");
        assert!(text.contains("data dir:        /var/lib/cco\n"), "{text}");
        assert!(text.contains("enabled, 12 entries, 2.0 KiB"), "{text}");
        assert!(text.contains("requests served: 56,789\n"), "{text}");
        assert!(text.contains("analytics:       enabled\n"), "{text}");

        let requests = daemon.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].request, Request::Status);
        assert_eq!(requests[0].protocol, cco_proto::PROTOCOL_VERSION);
    }

    #[test]
    fn stats_shows_budgets() {
        let mut reply = stats_reply();
        reply.budgets = vec![BudgetStatus {
            credential: Some("0123456789ab".into()),
            period: BudgetPeriod::Daily,
            limit_nano_usd: 2_000_000_000,
            spent_nano_usd: 1_500_000_000,
            reserved_nano_usd: 250_000_000,
            resets_unix_ms: 1_717_286_400_000,
        }];
        let daemon = FakeDaemon::start(vec![Reply::Frame(Response::Stats(reply))]);
        let output = run_ctl(&daemon.socket, &["stats"]);
        let text = stdout(&output);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(text.contains("budget rejected:       3\n"), "{text}");
        let row = text
            .lines()
            .find(|line| line.contains("credential 0123456789ab"))
            .unwrap_or_else(|| panic!("no budget row in {text}"));
        for cell in [
            "daily",
            "$1.50",
            "$0.25",
            "$2.00",
            "75.0%",
            "2024-06-02T00:00:00Z",
        ] {
            assert!(row.contains(cell), "{cell} missing from {row}");
        }
    }

    #[test]
    fn stats_shows_unpriced_models() {
        let daemon = FakeDaemon::start(vec![Reply::Frame(Response::Stats(stats_reply()))]);
        let before = now_unix_ms();
        let output = run_ctl(&daemon.socket, &["stats", "--since", "24h"]);
        let after = now_unix_ms();
        let text = stdout(&output);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(text.contains("requests:              12\n"), "{text}");
        assert!(
            text.contains("cache hits:            4 (33.3% hit rate)\n"),
            "{text}"
        );
        assert!(text.contains("cache write 1h tokens: 400\n"), "{text}");
        assert!(
            text.contains("cost:                  $1.50 (excludes 2 unpriced requests)\n"),
            "{text}"
        );
        assert!(text.contains("saved by cache:        $0.0036\n"), "{text}");

        let priced_row = text.lines().find(|line| line.contains("claude-sonnet-4-5"));
        let unpriced_row = text.lines().find(|line| line.contains("my-local-model"));
        assert!(priced_row.unwrap().contains("$1.50"), "{text}");
        assert!(
            unpriced_row.unwrap().contains("unpriced | unpriced |"),
            "{text}"
        );
        assert!(!unpriced_row.unwrap().contains('$'), "{text}");
        assert!(
            text.ends_with(
                "unpriced models, whose tokens are counted but whose cost is not: \
                 my-local-model\n"
            ),
            "{text}"
        );

        let requests = daemon.requests();
        let Request::Stats(query) = &requests[0].request else {
            panic!("expected a stats request, got {:?}", requests[0].request);
        };
        let day_ms = 24 * 3_600_000;
        let since = query.since_unix_ms.expect("--since is sent");
        assert!(since >= before - day_ms, "since {since} before {before}");
        assert!(since <= after - day_ms, "since {since} after {after}");
        assert_eq!(query.until_unix_ms, None);
    }

    #[test]
    fn stats_rejects_ignored_grouping() {
        // A daemon older than --by replies with rows by model, whatever the request sets.
        let daemon = FakeDaemon::start(vec![Reply::Frame(Response::Stats(stats_reply()))]);
        let output = run_ctl(&daemon.socket, &["stats", "--by", "day"]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(message.contains("ccod ignored --by day"), "{message}");

        let requests = daemon.requests();
        let Request::Stats(query) = &requests[0].request else {
            panic!("expected a stats request, got {:?}", requests[0].request);
        };
        assert_eq!(query.group_by, cco_proto::GroupBy::Day);
    }

    /// Builds the reply of a daemon that runs with `--no-analytics`.
    fn analytics_off_reply() -> StatsReply {
        StatsReply {
            analytics_enabled: false,
            total: UsageTotals::default(),
            rows: Vec::new(),
            ..stats_reply()
        }
    }

    #[test]
    fn stats_says_analytics_off() {
        // --reprice and --by too: a reply without records must not read as ignoring them.
        let daemon = FakeDaemon::start(vec![Reply::Frame(Response::Stats(analytics_off_reply()))]);
        let output = run_ctl(&daemon.socket, &["stats", "--reprice", "--by", "day"]);
        let text = stdout(&output);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(
            text.starts_with(
                "analytics are off (--no-analytics or [analytics] enabled = false): no \
                 requests are recorded\n"
            ),
            "{text}"
        );
        assert!(!text.contains("requests:"), "{text}");
        assert!(!text.contains('$'), "{text}");
    }

    #[test]
    fn stats_json_carries_analytics_off() {
        let reply = analytics_off_reply();
        let daemon = FakeDaemon::start(vec![Reply::Frame(Response::Stats(reply.clone()))]);
        let output = run_ctl(&daemon.socket, &["stats", "--json"]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let text = stdout(&output);
        assert!(
            text.contains("\n  \"analytics_enabled\": false,\n"),
            "{text}"
        );
        let printed: StatsReply = serde_json::from_str(&text).unwrap();
        assert_eq!(printed, reply);
    }

    #[test]
    fn stats_csv_fails_with_analytics_off() {
        let daemon = FakeDaemon::start(vec![Reply::Frame(Response::Stats(analytics_off_reply()))]);
        let output = run_ctl(&daemon.socket, &["stats", "--csv"]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(stdout(&output).is_empty(), "no CSV header is printed");
        assert!(
            message.starts_with("error: analytics are off in ccod"),
            "{message}"
        );
        assert!(message.contains("--csv has no rows to print"), "{message}");
        assert!(message.contains("use --json"), "{message}");
    }

    #[test]
    fn stats_rejects_ignored_reprice() {
        let daemon = FakeDaemon::start(vec![Reply::Frame(Response::Stats(stats_reply()))]);
        let output = run_ctl(&daemon.socket, &["stats", "--reprice"]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(message.contains("ccod ignored --reprice"), "{message}");
    }

    #[test]
    fn stats_json_prints_reply() {
        let reply = stats_reply();
        let daemon = FakeDaemon::start(vec![Reply::Frame(Response::Stats(reply.clone()))]);
        let output = run_ctl(
            &daemon.socket,
            &[
                "stats",
                "--json",
                "--since",
                "2024-06-01",
                "--until",
                "2024-06-02T00:00:00Z",
            ],
        );
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let printed: StatsReply = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(printed, reply);
        assert!(
            stdout(&output).contains("\n  \"total\": {\n"),
            "pretty JSON"
        );

        let requests = daemon.requests();
        let Request::Stats(query) = &requests[0].request else {
            panic!("expected a stats request, got {:?}", requests[0].request);
        };
        assert_eq!(query.since_unix_ms, Some(1_717_200_000_000));
        assert_eq!(query.until_unix_ms, Some(1_717_286_400_000));
    }

    #[test]
    fn cache_clear_reports_removed() {
        let cleared = CacheClearReply {
            entries: 3,
            bytes: 4096,
        };
        let daemon = FakeDaemon::start(vec![Reply::Frame(Response::CacheCleared(cleared))]);
        let output = run_ctl(&daemon.socket, &["cache", "clear"]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(stdout(&output), "removed 3 cache entries (4.0 KiB)\n");
        assert_eq!(daemon.requests()[0].request, Request::CacheClear);
    }

    #[test]
    fn config_and_shutdown_print_replies() {
        let toml = "[proxy]\nport = 8000\napi_key = \"<redacted>\"\n".to_owned();
        let daemon = FakeDaemon::start(vec![
            Reply::Frame(Response::Config(ConfigReply { toml: toml.clone() })),
            Reply::Frame(Response::ShuttingDown),
        ]);
        let output = run_ctl(&daemon.socket, &["config"]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(stdout(&output), toml);

        let output = run_ctl(&daemon.socket, &["shutdown"]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(stdout(&output).contains("is shutting down"));

        let requests = daemon.requests();
        assert_eq!(requests[0].request, Request::Config);
        assert_eq!(requests[1].request, Request::Shutdown);
    }

    #[test]
    fn error_reply_exits_1() {
        let error = ErrorReply {
            kind: ErrorKind::Internal,
            message: "analytics store is read-only".into(),
        };
        let daemon = FakeDaemon::start(vec![Reply::Frame(Response::Error(error))]);
        let output = run_ctl(&daemon.socket, &["cache", "stats"]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert_eq!(
            message,
            "error: ccod returned an error (internal): analytics store is read-only\n"
        );
        assert!(stdout(&output).is_empty());
        daemon.requests();
    }

    #[test]
    fn protocol_99_exits_4() {
        let frame = br#"{"protocol":99,"id":1,"server_version":"9.0.0","response":{"result":"shutting_down"}}"#;
        let mut bytes = frame.to_vec();
        bytes.push(b'\n');
        let daemon = FakeDaemon::start(vec![Reply::Bytes(bytes)]);
        let output = run_ctl(&daemon.socket, &["status"]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(4), "{message}");
        let versions = format!(
            "ccoctl protocol {} (version {}) vs ccod protocol 99 (version 9.0.0)",
            cco_proto::PROTOCOL_VERSION,
            cco_proto::CRATE_VERSION
        );
        assert!(message.contains(&versions), "{message}");
        assert!(
            message.contains("use the ccoctl that came with this ccod"),
            "{message}"
        );
        daemon.requests();
    }

    #[test]
    fn cut_frame_is_reported() {
        let daemon = FakeDaemon::start(vec![Reply::Bytes(br#"{"protocol":1,"id":"#.to_vec())]);
        let output = run_ctl(&daemon.socket, &["status"]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(
            message.contains("closed the connection in the middle of a reply (19 bytes"),
            "{message}"
        );
        assert!(
            message.contains(&daemon.socket.display().to_string()),
            "{message}"
        );
        daemon.requests();
    }

    #[test]
    fn close_without_reply_is_reported() {
        let daemon = FakeDaemon::start(vec![Reply::Bytes(Vec::new())]);
        let output = run_ctl(&daemon.socket, &["status"]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(
            message.contains("closed the connection without replying"),
            "{message}"
        );
        daemon.requests();
    }

    #[test]
    fn silent_daemon_times_out() {
        let daemon = FakeDaemon::start(vec![Reply::Silence]);
        let started = Instant::now();
        let output = run_ctl(&daemon.socket, &["--timeout", "1", "status"]);
        let elapsed = started.elapsed();
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(message.contains("timed out after 1 s"), "{message}");
        assert!(
            message.contains(&daemon.socket.display().to_string()),
            "{message}"
        );
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
        daemon.requests();
    }

    #[test]
    fn stale_socket_exits_3() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("stale.sock");
        // A bound and dropped std listener leaves its socket file behind, as a crashed
        // daemon would.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let output = run_ctl(&socket, &["status"]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(3), "{message}");
        assert!(message.contains("connection refused"), "{message}");
    }

    #[test]
    fn long_reply_arrives_whole() {
        // Larger than one read of the client, so the frame is reassembled from chunks.
        let toml = format!("notes = \"{}\"\n", "x".repeat(100_000));
        let daemon = FakeDaemon::start(vec![Reply::Frame(Response::Config(ConfigReply {
            toml: toml.clone(),
        }))]);
        let output = run_ctl(&daemon.socket, &["config"]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(stdout(&output), toml);
        daemon.requests();
    }
}
