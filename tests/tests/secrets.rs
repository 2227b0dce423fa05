//! End-to-end tests of credential handling and of the modes of the files `ccod` creates.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cco_tests::daemon::{DaemonDirs, DaemonOptions, DaemonProcess};
use cco_tests::http::HttpResponse;
use cco_tests::{ctl, http, MockUpstream, Reply};
use serde_json::json;

const CLIENT_KEY: &str = "sk-ant-secret-client-1111";
const ENV_KEY: &str = "sk-ant-secret-env-2222";
const BEARER_TOKEN: &str = "sk-ant-secret-bearer-3333";
const SECRETS: [&str; 3] = [CLIENT_KEY, ENV_KEY, BEARER_TOKEN];

/// How a request carries its credential.
#[derive(Clone, Copy, Debug)]
enum Credential {
    ApiKey,
    /// None from the client, so the daemon sends its `ANTHROPIC_API_KEY`.
    DaemonKey,
    Bearer,
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

fn post(daemon: &DaemonProcess, credential: Credential, body: &[u8]) -> HttpResponse {
    let bearer = format!("Bearer {BEARER_TOKEN}");
    let mut headers = vec![
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
    ];
    match credential {
        Credential::ApiKey => headers.push(("x-api-key", CLIENT_KEY)),
        Credential::DaemonKey => {}
        Credential::Bearer => headers.push(("authorization", &bearer)),
    }
    http::send(daemon.addr, "POST", "/v1/messages", &headers, body)
        .unwrap_or_else(|err| panic!("POST /v1/messages with {credential:?} failed: {err}"))
}

/// Lists every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()));
        for entry in entries {
            let entry = entry.expect("directory entry");
            let file_type = entry.file_type().expect("file type");
            if file_type.is_dir() {
                pending.push(entry.path());
            } else if file_type.is_file() {
                files.push(entry.path());
            }
        }
    }
    files
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn mode(path: &Path) -> u32 {
    let metadata = std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("cannot read the mode of {}: {err}", path.display()));
    metadata.permissions().mode() & 0o777
}

/// Sends requests with every kind of credential: successes, cache hits, a stream and an
/// upstream 401. Returns how many requests were sent.
fn run_upstream_session(mock: &MockUpstream, daemon: &DaemonProcess) -> u64 {
    let mut sent = 0;
    let credentials = [
        Credential::ApiKey,
        Credential::DaemonKey,
        Credential::Bearer,
    ];
    for (index, credential) in credentials.into_iter().enumerate() {
        let body = message_body(&format!("session request {index}"), index == 2);
        let first = post(daemon, credential, &body);
        sent += 1;
        ctl::wait_for_records(daemon, sent);
        let second = post(daemon, credential, &body);
        sent += 1;
        assert_eq!(first.status, 200, "{credential:?}: {}", first.text());
        assert_eq!(
            second.header("x-cco-cache"),
            Some("hit"),
            "{credential:?} repeated"
        );
    }

    let forwarded = mock.requests();
    assert_eq!(forwarded.len(), 3, "upstream requests");
    assert_eq!(
        forwarded[0].header("x-api-key"),
        Some(CLIENT_KEY),
        "client key forwarded"
    );
    assert_eq!(
        forwarded[1].header("x-api-key"),
        Some(ENV_KEY),
        "daemon key sent for a client without one"
    );
    assert_eq!(
        forwarded[2].header("authorization"),
        Some(format!("Bearer {BEARER_TOKEN}").as_str()),
        "bearer token forwarded"
    );

    mock.push_reply(Reply::error(
        401,
        "authentication_error",
        "invalid x-api-key",
    ));
    let rejected = post(daemon, Credential::ApiKey, &message_body("rejected", false));
    sent += 1;
    assert_eq!(rejected.status, 401, "scripted 401");
    sent
}

#[test]
fn secrets_never_stored() {
    for level in ["debug", "trace"] {
        check_session_keeps_secrets(level);
    }
}

/// Runs a whole session at log level `level`, then searches every file the daemon wrote.
fn check_session_keeps_secrets(level: &str) {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let options = DaemonOptions::new(&mock.base_url())
        .env("ANTHROPIC_API_KEY", ENV_KEY)
        .log_level(level);
    let daemon = DaemonProcess::start(&dirs, &options);

    let mut sent = run_upstream_session(&mock, &daemon);
    // Stopping the mock makes the upstream unreachable for the rest of the session.
    drop(mock);
    for credential in [
        Credential::ApiKey,
        Credential::DaemonKey,
        Credential::Bearer,
    ] {
        let failed = post(&daemon, credential, &message_body("unreachable", false));
        sent += 1;
        assert_eq!(
            failed.status, 502,
            "{level}: {credential:?} without an upstream"
        );
    }
    ctl::wait_for_records(&daemon, sent);

    let outputs = [
        ctl::text(&daemon, &["config"]),
        ctl::text(&daemon, &["status"]),
        ctl::text(&daemon, &["stats"]),
        ctl::text(&daemon, &["cache", "stats"]),
    ];
    assert!(
        outputs[0].contains("anthropic_api_key = \"<redacted"),
        "ccoctl config shows the key as redacted:\n{}",
        outputs[0]
    );
    for output in &outputs {
        for secret in SECRETS {
            assert!(
                !output.contains(secret),
                "{level}: ccoctl output contains {secret}:\n{output}"
            );
        }
    }
    assert_eq!(
        daemon.shutdown(),
        Some(0),
        "{level}: exit code after the session"
    );

    let files = files_under(dirs.root.path());
    assert!(
        files.contains(&dirs.log_file()),
        "the log file is among {files:?}"
    );
    assert!(
        files.iter().any(|file| file.starts_with(dirs.data_dir())),
        "files under the data directory are among {files:?}"
    );
    let log = std::fs::read_to_string(dirs.log_file()).expect("log file");
    assert!(
        log.contains(" DEBUG "),
        "{level}: the log has debug lines, so the search covers them:\n{log}"
    );
    for file in &files {
        let bytes = std::fs::read(file)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", file.display()));
        for secret in SECRETS {
            assert!(
                !contains_bytes(&bytes, secret.as_bytes()),
                "{level}: {} contains {secret}",
                file.display()
            );
        }
    }
}

#[test]
fn created_files_private() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let socket_dir = dirs
        .socket()
        .parent()
        .expect("socket directory")
        .to_path_buf();

    assert_eq!(mode(&dirs.data_dir()), 0o700, "data directory mode");
    assert_eq!(mode(&socket_dir), 0o700, "socket directory mode");
    assert_eq!(mode(&dirs.socket()), 0o600, "socket mode");
    assert_eq!(mode(&dirs.log_file()), 0o600, "log file mode");
    assert_eq!(daemon.shutdown(), Some(0), "exit code");
}
