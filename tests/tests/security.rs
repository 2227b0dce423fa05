//! Listener security: HTTPS with a verified certificate, access tokens, rate limits,
//! connection caps, and the control socket's peer check.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cco_tests::daemon::{binary, DaemonDirs, DaemonOptions, DaemonProcess};
use cco_tests::{http, MockUpstream, Reply};
use sha2::{Digest, Sha256};

const MESSAGE_BODY: &[u8] =
    br#"{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;

/// Writes a self-signed certificate for 127.0.0.1 and its key; returns the certificate DER.
fn write_certificate(dir: &Path) -> rustls::pki_types::CertificateDer<'static> {
    let generated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("certificate generation");
    std::fs::write(dir.join("cert.pem"), generated.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), generated.signing_key.serialize_pem()).unwrap();
    generated.cert.der().clone()
}

fn tls_client(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Sends `GET /v1/models` over TLS and returns the raw response.
fn https_get(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<String> {
    let server_name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let connection = rustls::ClientConnection::new(config, server_name).unwrap();
    let socket = TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut stream = rustls::StreamOwned::new(connection, socket);
    let request = format!(
        "GET /v1/models HTTP/1.1\r\nhost: {addr}\r\nx-api-key: sk-ant-tls-test\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        // The server may close without a TLS close_notify once the response is complete.
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(err) => return Err(err),
    }
    Ok(String::from_utf8_lossy(&response).into_owned())
}

#[test]
fn https_listener_serves_verified_clients() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let certificate = write_certificate(dirs.root.path());
    let cert = dirs.root.path().join("cert.pem");
    let key = dirs.root.path().join("key.pem");
    let options = DaemonOptions::new(&mock.base_url())
        .arg("--tls-cert")
        .arg(cert.to_str().unwrap())
        .arg("--tls-key")
        .arg(key.to_str().unwrap());
    let daemon = DaemonProcess::start(&dirs, &options);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).unwrap();
    let response = https_get(daemon.addr, tls_client(roots)).expect("TLS request succeeds");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("\"data\""),
        "models list expected: {response}"
    );
    assert_eq!(mock.request_count(), 1, "the request reached the upstream");

    let untrusted = https_get(daemon.addr, tls_client(rustls::RootCertStore::empty()));
    assert!(
        untrusted.is_err(),
        "a client without the certificate must fail the handshake"
    );

    let plain = http::send(daemon.addr, "GET", "/v1/models", &[], b"");
    assert!(
        plain.map_or(true, |response| response.status != 200),
        "plain HTTP must not be served on the TLS port"
    );
}

fn start_failure(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), "").unwrap();
    let mut command = Command::new(binary("ccod"));
    command
        .args(["--port", "0", "--anthropic-base-url", "http://127.0.0.1:9"])
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    if !args.contains(&"--socket") {
        command.arg("--socket").arg(dir.path().join("ccod.sock"));
    }
    let output = command
        .env("CCO_CONFIG", dir.path().join("config.toml"))
        .env_remove("CCO_SOCKET")
        .args(args)
        .output()
        .unwrap();
    assert!(!output.status.success(), "ccod started with {args:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn mismatched_tls_key_fails_start() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    write_certificate(first.path());
    write_certificate(second.path());
    let cert = first.path().join("cert.pem");
    let other_key = second.path().join("key.pem");
    let stderr = start_failure(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        other_key.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("does not match the certificate"),
        "{stderr}"
    );
}

#[test]
fn invalid_tls_files_fail_start() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file\n").unwrap();
    write_certificate(dir.path());
    let key = dir.path().join("key.pem");

    let stderr = start_failure(&[
        "--tls-cert",
        garbage.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(stderr.contains("no certificate found in"), "{stderr}");
    assert!(stderr.contains("garbage.pem"), "{stderr}");

    let missing = dir.path().join("missing.pem");
    let stderr = start_failure(&[
        "--tls-cert",
        missing.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("cannot read the TLS certificate"),
        "{stderr}"
    );
}

#[test]
fn access_token_required_and_not_forwarded() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let digest = hex::encode(Sha256::digest(b"team-token-4444"));
    std::fs::write(
        dirs.config_file(),
        format!("[proxy]\naccess_tokens = [\"sha256:{digest}\"]\n"),
    )
    .unwrap();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));

    let rejected = http::send(
        daemon.addr,
        "POST",
        "/v1/messages",
        &[("x-api-key", "sk-ant-a")],
        MESSAGE_BODY,
    )
    .unwrap();
    assert_eq!(rejected.status, 401);
    assert_eq!(rejected.json()["error"]["type"], "authentication_error");
    let wrong = http::send(
        daemon.addr,
        "POST",
        "/v1/messages",
        &[("x-api-key", "sk-ant-a"), ("x-cco-access-token", "wrong")],
        MESSAGE_BODY,
    )
    .unwrap();
    assert_eq!(wrong.status, 401);
    assert_eq!(
        mock.request_count(),
        0,
        "rejected requests must not reach the upstream"
    );

    for header in ["x-cco-access-token", "proxy-authorization"] {
        let value = if header == "proxy-authorization" {
            "Bearer team-token-4444"
        } else {
            "team-token-4444"
        };
        let accepted = http::send(
            daemon.addr,
            "POST",
            "/v1/messages",
            &[
                ("x-api-key", "sk-ant-a"),
                (header, value),
                ("cache-control", "no-store"),
            ],
            MESSAGE_BODY,
        )
        .unwrap();
        assert_eq!(
            accepted.status,
            200,
            "token in {header}: {}",
            accepted.text()
        );
    }
    for request in mock.requests() {
        for (name, value) in &request.headers {
            assert!(
                !value.contains("team-token-4444"),
                "the access token reached the upstream in {name}"
            );
        }
    }
}

#[test]
fn rate_limit_rejects_with_retry_after() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    std::fs::write(
        dirs.config_file(),
        "[rate_limiting]\nenabled = true\nmax_requests_per_minute = 6\nburst_size = 2\n",
    )
    .unwrap();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let headers = [
        ("x-api-key", "sk-ant-limited"),
        ("cache-control", "no-store"),
    ];

    for attempt in 0..2 {
        let response =
            http::send(daemon.addr, "POST", "/v1/messages", &headers, MESSAGE_BODY).unwrap();
        assert_eq!(
            response.status, 200,
            "attempt {attempt} is within the burst"
        );
    }
    let rejected = http::send(daemon.addr, "POST", "/v1/messages", &headers, MESSAGE_BODY).unwrap();
    assert_eq!(rejected.status, 429);
    assert_eq!(rejected.json()["type"], "error");
    assert_eq!(rejected.json()["error"]["type"], "rate_limit_error");
    // 6 per minute refills one request every 10 seconds.
    let retry_after: u64 = rejected.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(
        mock.request_count(),
        2,
        "the rejected request must not reach the upstream"
    );

    let output = daemon.ctl(&["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(stats["total"]["rate_limited"], 1);
    assert_eq!(stats["total"]["requests"], 3);
}

#[test]
fn connection_cap_queues_extra_clients() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(
        &dirs,
        &DaemonOptions::new(&mock.base_url())
            .arg("--max-connections")
            .arg("2"),
    );
    let workers = std::thread::available_parallelism().map_or(2, |count| count.get());
    let held: Vec<_> = (0..workers.max(2))
        .map(|_| {
            mock.push_reply(Reply::default_response().delay(Duration::from_millis(1500)));
            let addr = daemon.addr;
            std::thread::spawn(move || {
                http::send(addr, "GET", "/v1/models", &[("x-api-key", "k")], b"").map(|r| r.status)
            })
        })
        .collect();
    assert!(mock.wait_for_requests(held.len(), Duration::from_secs(5)));

    let started = Instant::now();
    let queued = http::send(daemon.addr, "GET", "/v1/models", &[("x-api-key", "k")], b"").unwrap();
    let waited = started.elapsed();
    assert_eq!(queued.status, 200);
    // The extra client is served only once a held connection closes, about 1.5 s later.
    assert!(
        waited >= Duration::from_millis(700),
        "served after {waited:?}, not queued"
    );
    for handle in held {
        assert_eq!(handle.join().unwrap().unwrap(), 200);
    }
}

#[cfg(target_os = "linux")]
#[test]
fn control_socket_rejects_other_users() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout == b"0\n");
    let has_setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !is_root || !has_setpriv {
        eprintln!("skipped: needs root and setpriv to connect as another user");
        return;
    }
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    // Let user 65534 reach the socket file, so that only the peer check can reject it.
    let socket = dirs.socket();
    let mut permissions = Vec::new();
    for path in [dirs.root.path(), socket.parent().unwrap(), socket.as_path()] {
        permissions.push(Command::new("chmod").arg("777").arg(path).status().unwrap());
    }
    assert!(permissions.iter().all(|status| status.success()));

    let output = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(binary("ccoctl"))
        .arg("--socket")
        .arg(&socket)
        .args(["--timeout", "3", "status"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "another user's ccoctl was served");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("permission_denied"), "{stderr}");
    assert!(
        stderr.contains("user 65534 may not control this ccod"),
        "{stderr}"
    );
    assert!(
        daemon
            .log()
            .contains("rejected a control connection from another user"),
        "{}",
        daemon.log()
    );
    let own = daemon.ctl(&["status"]);
    assert!(
        own.status.success(),
        "the daemon's own user is still served"
    );
}

#[test]
fn slow_client_body_times_out() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(
        &dirs,
        &DaemonOptions::new(&mock.base_url())
            .arg("--client-timeout")
            .arg("1"),
    );
    // Promise a 100-byte body and send 10 bytes of it, then stall.
    let mut socket = TcpStream::connect(daemon.addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {}\r\ncontent-length: 100\r\nx-api-key: k\r\n\r\n{{\"model\":",
        daemon.addr
    );
    socket.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let mut response = Vec::new();
    let _ = socket.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("--client-timeout"), "{response}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        mock.request_count(),
        0,
        "a partial body must not reach the upstream"
    );
}

#[test]
fn access_log_records_each_request() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let headers = [("x-api-key", "sk-ant-access-log-5555")];
    let response = http::send(daemon.addr, "POST", "/v1/messages", &headers, MESSAGE_BODY).unwrap();
    assert_eq!(response.status, 200);

    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let log = daemon.log();
        if let Some(line) = log.lines().find(|line| line.contains(" request ")) {
            break line.to_owned();
        }
        assert!(Instant::now() < deadline, "no access-log line in {log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    for field in [
        "method=POST",
        "path=/v1/messages",
        "status=200",
        "cache=\"miss\"",
        "model=claude-haiku-4-5",
        "input=",
        "output=",
        "cost_usd=0.",
        "latency_ms=",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    assert!(
        !line.contains("sk-ant-access-log-5555"),
        "credential in {line}"
    );
    assert!(!line.contains("\"messages\""), "request body in {line}");
}

#[cfg(unix)]
#[test]
fn open_config_file_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    std::fs::write(dirs.config_file(), "cache_ttl = 60\n").unwrap();
    std::fs::set_permissions(dirs.config_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let log = daemon.log();
    assert!(log.contains("file is readable by other users"), "{log}");
    assert!(log.contains("chmod 600"), "{log}");
}

#[test]
fn socket_path_on_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "important notes\n").unwrap();
    let stderr = start_failure(&["--socket", notes.to_str().unwrap()]);
    assert!(stderr.contains("exists and is not a socket"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap(),
        "important notes\n",
        "the file must be left as it was"
    );
}

#[cfg(unix)]
#[test]
fn given_socket_directory_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let shared = dirs.root.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = shared.join("ccod.sock");
    let options = DaemonOptions::new(&mock.base_url())
        .arg("--socket")
        .arg(socket.to_str().unwrap());
    let daemon = DaemonProcess::start(&dirs, &options);
    let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o755,
        "a directory that is not the daemon's own is not changed"
    );
    assert!(
        daemon.log().contains("a directory of its own"),
        "{}",
        daemon.log()
    );
}
