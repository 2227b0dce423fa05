//! The official `anthropic` and `openai` Python SDKs against the real `ccod` and the mock
//! upstream.
//!
//! Each test is skipped with a message when `python3` is missing or cannot import its SDK,
//! unless `CCO_REQUIRE_SDK` is set, in which case a missing SDK fails it. The script itself
//! tries the import, because importing the SDK takes seconds and a separate check would
//! double that.

use std::io::{ErrorKind, Read};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cco_tests::daemon::{DaemonDirs, DaemonOptions, DaemonProcess};
use cco_tests::MockUpstream;
use serde_json::Value;

const MODEL: &str = "claude-sonnet-4-5-20250929";
const SDK_KEY: &str = "sk-ant-sdk-test";
const OPENAI_MODEL: &str = "gpt-4o-mini";
const OPENAI_SDK_KEY: &str = "sk-proj-sdk-test";
/// Time the Python script gets, interpreter start-up and SDK import included.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(30);
/// Exit status of the script when `import anthropic` fails.
const NO_SDK_STATUS: i32 = 77;

/// Makes one plain and one streaming request through the proxy at `argv[1]` and prints the
/// text and usage of both as one JSON object, with the credential and version headers the
/// SDK sends. Exits with [`NO_SDK_STATUS`] when the SDK cannot be imported.
const SCRIPT: &str = r#"
import json
import sys

try:
    import anthropic
except ImportError as err:
    print(f"cannot import anthropic: {err}", file=sys.stderr)
    sys.exit(77)

base_url, model, api_key = sys.argv[1], sys.argv[2], sys.argv[3]
client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=10.0)

message = client.messages.create(
    model=model,
    max_tokens=64,
    messages=[{"role": "user", "content": "hello from the python sdk"}],
)
with client.messages.stream(
    model=model,
    max_tokens=64,
    messages=[{"role": "user", "content": "stream this through the proxy please"}],
) as stream:
    streamed_text = "".join(stream.text_stream)
    final = stream.get_final_message()

print(json.dumps({
    "auth_headers": dict(client.auth_headers),
    "anthropic_version": client.default_headers["anthropic-version"],
    "create": {
        "text": message.content[0].text,
        "input_tokens": message.usage.input_tokens,
        "output_tokens": message.usage.output_tokens,
    },
    "stream": {
        "text": streamed_text,
        "input_tokens": final.usage.input_tokens,
        "output_tokens": final.usage.output_tokens,
    },
}))
"#;

/// Makes one plain and one streaming Chat Completions request through the proxy at
/// `argv[1]` (the base URL with `/v1`), the stream with `stream_options.include_usage`, and
/// prints the text and usage of both as one JSON object. Exits with [`NO_SDK_STATUS`] when
/// the SDK cannot be imported.
const OPENAI_SCRIPT: &str = r#"
import json
import sys

try:
    import openai
except ImportError as err:
    print(f"cannot import openai: {err}", file=sys.stderr)
    sys.exit(77)

base_url, model, api_key = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=10.0)

completion = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "hello from the openai sdk"}],
)
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "stream this through the proxy please"}],
    stream=True,
    stream_options={"include_usage": True},
)
streamed_text = ""
stream_usage = None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        streamed_text += chunk.choices[0].delta.content
    if chunk.usage is not None:
        stream_usage = chunk.usage

print(json.dumps({
    "create": {
        "text": completion.choices[0].message.content,
        "prompt_tokens": completion.usage.prompt_tokens,
        "completion_tokens": completion.usage.completion_tokens,
    },
    "stream": {
        "text": streamed_text,
        "prompt_tokens": stream_usage.prompt_tokens if stream_usage else None,
        "completion_tokens": stream_usage.completion_tokens if stream_usage else None,
    },
}))
"#;

/// Environment variables that would send the SDK through another proxy or change its key
/// or base URL.
const CLEARED_ENV: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
];

fn python() -> Command {
    let mut command = Command::new("python3");
    for name in CLEARED_ENV {
        command.env_remove(name);
    }
    command
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .stdin(Stdio::null());
    command
}

/// Runs `command` and kills it when it outlives `deadline`. Returns `None` when the program
/// is not installed.
fn output_within(mut command: Command, deadline: Duration) -> Option<Output> {
    let spawned = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) if err.kind() == ErrorKind::NotFound => return None,
        Err(err) => panic!("python3 failed to start: {err}"),
    };
    let ends_at = Instant::now() + deadline;
    loop {
        if child.try_wait().expect("python3 status").is_some() {
            break;
        }
        if Instant::now() >= ends_at {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the SDK script did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The script prints a few hundred bytes, far below a pipe's buffer, so reading after
    // the exit cannot deadlock.
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Some(Output {
        status: child.wait().expect("python3 status"),
        stdout,
        stderr,
    })
}

/// Prints why `test` is skipped, or fails it when `CCO_REQUIRE_SDK` is set. `package` is the
/// SDK's name on PyPI.
fn skip_without_sdk(test: &str, package: &str, reason: &str) {
    assert!(
        std::env::var_os("CCO_REQUIRE_SDK").is_none(),
        "CCO_REQUIRE_SDK is set but {reason}: install the SDK with 'pip install {package}'"
    );
    eprintln!(
        "skipping {test}: {reason} (pip install {package}); \
         set CCO_REQUIRE_SDK=1 to make this a failure"
    );
}

/// Runs `script` with `args` and returns its JSON output, or `None` after reporting a skip
/// when python3 or the SDK is missing.
fn run_sdk_script(test: &str, package: &str, script: &str, args: &[&str]) -> Option<Value> {
    let mut command = python();
    command.args(["-c", script]).args(args);
    let Some(output) = output_within(command, SCRIPT_DEADLINE) else {
        skip_without_sdk(test, package, "python3 is not installed");
        return None;
    };
    if output.status.code() == Some(NO_SDK_STATUS) {
        skip_without_sdk(
            test,
            package,
            String::from_utf8_lossy(&output.stderr).trim(),
        );
        return None;
    }
    assert!(
        output.status.success(),
        "the SDK script failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let results = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "the SDK script printed invalid JSON ({err}): {:?}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    Some(results)
}

#[test]
fn python_sdk_through_proxy() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    let base_url = format!("http://{}", daemon.addr);

    let test = "python_sdk_through_proxy";
    let args = [base_url.as_str(), MODEL, SDK_KEY];
    let Some(results) = run_sdk_script(test, "anthropic", SCRIPT, &args) else {
        return;
    };
    let create = &results["create"];
    assert_eq!(
        create["text"], "Mock reply to: hello from the python sdk",
        "messages.create text"
    );
    // 25 bytes of user text make ceil(25 / 4) = 7 input tokens; the reply has 8 words.
    assert_eq!(create["input_tokens"], 7, "messages.create input tokens");
    assert_eq!(create["output_tokens"], 8, "messages.create output tokens");
    let stream = &results["stream"];
    assert_eq!(
        stream["text"], "Mock reply to: stream this through the proxy please",
        "messages.stream text"
    );
    // 36 bytes make 9 input tokens; the reply has 9 words.
    assert_eq!(stream["input_tokens"], 9, "messages.stream input tokens");
    assert_eq!(stream["output_tokens"], 9, "messages.stream output tokens");

    // The header that carries the key depends on the SDK release (2.16.0 sends
    // `Authorization: Bearer`, see `_api_key_auth` in anthropic/_client.py), so the script
    // reports its headers and each must reach the upstream unchanged.
    let auth_headers = results["auth_headers"]
        .as_object()
        .expect("auth_headers is an object");
    assert!(
        auth_headers
            .values()
            .any(|value| value.as_str().is_some_and(|text| text.contains(SDK_KEY))),
        "the SDK should send {SDK_KEY} in a credential header: {auth_headers:?}"
    );
    assert!(
        results["anthropic_version"].is_string(),
        "the SDK should send anthropic-version: {results}"
    );

    let requests = mock.requests();
    assert_eq!(requests.len(), 2, "upstream requests: {requests:?}");
    for (request, call) in requests.iter().zip(["messages.create", "messages.stream"]) {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/v1/messages"),
            "{call} upstream request"
        );
        for (name, value) in auth_headers {
            assert_eq!(
                request.header(name),
                value.as_str(),
                "{call} credential header {name}"
            );
        }
        assert_eq!(
            request.header("anthropic-version"),
            results["anthropic_version"].as_str(),
            "{call} anthropic-version"
        );
    }
    assert_eq!(
        requests[1].json()["stream"],
        true,
        "messages.stream asks for a stream"
    );
}

#[test]
fn openai_sdk_through_proxy() {
    let mock = MockUpstream::start();
    let dirs = DaemonDirs::new();
    let daemon = DaemonProcess::start(&dirs, &DaemonOptions::new(&mock.base_url()));
    // The OpenAI SDK's base URL ends in /v1, as with OPENAI_BASE_URL.
    let base_url = format!("http://{}/v1", daemon.addr);

    let test = "openai_sdk_through_proxy";
    let args = [base_url.as_str(), OPENAI_MODEL, OPENAI_SDK_KEY];
    let Some(results) = run_sdk_script(test, "openai", OPENAI_SCRIPT, &args) else {
        return;
    };

    let create = &results["create"];
    assert_eq!(
        create["text"], "Mock reply to: hello from the openai sdk",
        "chat.completions.create text"
    );
    // 25 bytes of user text make ceil(25 / 4) = 7 prompt tokens; the reply has 8 words.
    assert_eq!(create["prompt_tokens"], 7, "create prompt tokens");
    assert_eq!(create["completion_tokens"], 8, "create completion tokens");
    let stream = &results["stream"];
    assert_eq!(
        stream["text"], "Mock reply to: stream this through the proxy please",
        "streamed text"
    );
    // 36 bytes make 9 prompt tokens; the reply has 9 words.
    assert_eq!(stream["prompt_tokens"], 9, "stream prompt tokens");
    assert_eq!(stream["completion_tokens"], 9, "stream completion tokens");

    let requests = mock.requests();
    assert_eq!(requests.len(), 2, "upstream requests: {requests:?}");
    for request in &requests {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/v1/chat/completions"),
            "upstream request"
        );
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {OPENAI_SDK_KEY}").as_str()),
            "the SDK's key reaches the upstream"
        );
    }

    // The record of a response is sent when its body ends, so it may trail the response.
    let deadline = Instant::now() + Duration::from_secs(5);
    let stats = loop {
        let output = daemon.ctl(&["stats", "--json"]);
        assert!(output.status.success(), "ccoctl stats failed: {output:?}");
        let stats: Value = serde_json::from_slice(&output.stdout).expect("stats JSON");
        if stats["total"]["requests"].as_u64() >= Some(2) || Instant::now() >= deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let total = &stats["total"];
    assert_eq!(total["requests"], 2, "recorded: {total}");
    assert_eq!(total["streams_without_usage"], 0, "{total}");
    // gpt-4o-mini: $0.15 input, $0.60 output per MTok.
    // (7 + 9) * 150 + (8 + 9) * 600 = 2_400 + 10_200.
    assert_eq!(total["cost_nano_usd"], 12_600, "cost: {total}");
}
