//! Tests of the mock upstream, driven through the raw test client.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cco_tests::{anthropic, http, openai, split_at_offsets, split_every, MockUpstream, Reply};
use serde_json::{json, Value};

const MODEL: &str = "claude-sonnet-4-20250514";
const SHORT: Duration = Duration::from_secs(2);

fn message_request(text: &str, stream: bool) -> Vec<u8> {
    json!({
        "model": MODEL,
        "max_tokens": 64,
        "stream": stream,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": text}],
    })
    .to_string()
    .into_bytes()
}

fn post_messages(mock: &MockUpstream, body: &[u8]) -> http::HttpResponse {
    http::send(
        mock.addr(),
        "POST",
        "/v1/messages",
        &[("content-type", "application/json")],
        body,
    )
    .expect("request to the mock failed")
}

fn event_names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(name, _)| name.as_str()).collect()
}

fn joined_text_deltas(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .map(|(_, data)| data["delta"]["text"].as_str().unwrap_or_default())
        .collect()
}

#[test]
fn default_message_shape() {
    let mock = MockUpstream::start();
    // "Be brief." is 9 bytes and the user text 11, so ceil(20 / 4) = 5.
    let response = post_messages(&mock, &message_request("hello there", false));

    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert!(!response.chunked);
    assert!(response
        .header("request-id")
        .is_some_and(|id| id.starts_with("req_mock_")));
    assert_eq!(
        response.header("anthropic-ratelimit-requests-remaining"),
        Some("999")
    );
    let message = response.json();
    assert!(message["id"].as_str().unwrap().starts_with("msg_mock_"));
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], MODEL);
    assert_eq!(message["content"][0]["type"], "text");
    assert_eq!(message["content"][0]["text"], "Mock reply to: hello there");
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["stop_sequence"], Value::Null);
    assert_eq!(message["usage"], anthropic::usage(5, 5));
}

#[test]
fn default_message_honours_max_tokens() {
    let mock = MockUpstream::start();
    let body = json!({
        "model": MODEL,
        "max_tokens": 2,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "one two three"}]}],
    });
    let message = post_messages(&mock, body.to_string().as_bytes()).json();

    assert_eq!(message["content"][0]["text"], "Mock reply");
    assert_eq!(message["stop_reason"], "max_tokens");
    assert_eq!(message["usage"]["output_tokens"], 2);
    assert_eq!(message["usage"]["input_tokens"], 4);
}

#[test]
fn default_message_rejects_invalid_body() {
    let mock = MockUpstream::start();
    let cases: [(&[u8], &str); 3] = [
        (b"{not json", "not valid JSON"),
        (
            br#"{"messages":[],"max_tokens":1}"#,
            "model: Field required",
        ),
        (
            br#"{"model":"m","messages":[]}"#,
            "max_tokens: Field required",
        ),
    ];
    for (body, expected) in cases {
        let response = post_messages(&mock, body);
        assert_eq!(response.status, 400);
        let error = response.json();
        assert_eq!(error["type"], "error");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
}

#[test]
fn default_stream_event_sequence() {
    let mock = MockUpstream::start();
    let response = post_messages(&mock, &message_request("stream this please", true));

    assert_eq!(response.status, 200);
    assert!(response.chunked);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let events = anthropic::parse_sse_events(&response.body);
    let names = event_names(&events);
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[1..3], ["content_block_start", "ping"]);
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let delta_count = names
        .iter()
        .filter(|name| **name == "content_block_delta")
        .count();
    assert_eq!(delta_count, 6);
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
    }
    // The real API writes `type` as the first field of every event.
    let text = response.text();
    for line in text.lines().filter(|line| line.starts_with("data:")) {
        assert!(line.starts_with(r#"data: {"type":""#), "{line}");
    }

    let start = &events[0].1["message"];
    assert_eq!(start["model"], MODEL);
    assert_eq!(start["content"], json!([]));
    // "Be brief." plus "stream this please" is 27 bytes, so 7 tokens.
    assert_eq!(start["usage"]["input_tokens"], 7);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(
        joined_text_deltas(&events),
        "Mock reply to: stream this please"
    );
    let message_delta = &events[names.len() - 2].1;
    assert_eq!(message_delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(message_delta["usage"]["output_tokens"], 6);
}

#[test]
fn default_stream_matches_json_text() {
    let mock = MockUpstream::start();
    let plain = post_messages(&mock, &message_request("same words both ways", false)).json();
    let streamed = post_messages(&mock, &message_request("same words both ways", true));
    let events = anthropic::parse_sse_events(&streamed.body);

    assert_eq!(
        joined_text_deltas(&events),
        plain["content"][0]["text"].as_str().unwrap()
    );
}

#[test]
fn count_tokens_models_and_not_found() {
    let mock = MockUpstream::start();
    let counted = http::send(
        mock.addr(),
        "POST",
        "/v1/messages/count_tokens",
        &[],
        br#"{"model":"m","messages":[{"role":"user","content":"12345678"}]}"#,
    )
    .unwrap();
    assert_eq!(counted.status, 200);
    assert_eq!(counted.json(), json!({"input_tokens": 2}));

    let models = http::send(mock.addr(), "GET", "/v1/models", &[], b"").unwrap();
    assert_eq!(models.status, 200);
    let list = models.json();
    let data = list["data"].as_array().unwrap();
    assert!(!data.is_empty());
    assert!(data.iter().all(|model| model["type"] == "model"));
    assert_eq!(list["first_id"], data[0]["id"]);
    assert_eq!(list["has_more"], false);

    let missing = http::send(mock.addr(), "GET", "/v1/nothing", &[], b"").unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["type"], "not_found_error");
}

fn post_chat(mock: &MockUpstream, body: &Value) -> http::HttpResponse {
    http::send(
        mock.addr(),
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
    .expect("request to the mock failed")
}

#[test]
fn default_chat_completion_shape() {
    let mock = MockUpstream::start();
    // "Be brief." is 9 bytes and the user text 11, so ceil(20 / 4) = 5 prompt tokens.
    let request = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hello there"}]},
        ],
    });

    let response = post_chat(&mock, &request);

    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Mock reply to: hello there"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 5);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

#[test]
fn default_chat_stream_usage_on_request() {
    let mock = MockUpstream::start();
    let mut request = json!({
        "model": "gpt-4o-mini",
        "stream": true,
        "max_completion_tokens": 2,
        "messages": [{"role": "user", "content": "one two three"}],
    });

    let plain = post_chat(&mock, &request);
    request["stream_options"] = json!({"include_usage": true});
    let with_usage = post_chat(&mock, &request);

    for response in [&plain, &with_usage] {
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("text/event-stream"));
        assert!(response.body.ends_with(openai::DONE_EVENT));
    }
    let chunks = |response: &http::HttpResponse| -> Vec<Value> {
        openai::sse_data(&response.body)
            .iter()
            .filter(|data| *data != "[DONE]")
            .map(|data| serde_json::from_str(data).unwrap())
            .collect()
    };
    let plain = chunks(&plain);
    assert!(plain.iter().all(|chunk| chunk.get("usage").is_none()));
    let text: String = plain
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text, "Mock reply",
        "two words, as max_completion_tokens allows"
    );
    let finish = plain.last().unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");

    let with_usage = chunks(&with_usage);
    let last = with_usage.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 4);
    assert_eq!(last["usage"]["completion_tokens"], 2);
    let earlier = &with_usage[..with_usage.len() - 1];
    assert!(earlier.iter().all(|chunk| chunk["usage"].is_null()));
}

#[test]
fn default_chat_rejects_missing_model() {
    let mock = MockUpstream::start();
    let response = post_chat(&mock, &json!({"messages": []}));
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["type"], "invalid_request_error");
}

#[test]
fn records_headers_in_order_and_case() {
    let mock = MockUpstream::start();
    let body = message_request("hi", false);
    http::send(
        mock.addr(),
        "POST",
        "/v1/messages?beta=true",
        &[
            ("X-Api-Key", "sk-test"),
            ("anthropic-version", "2023-06-01"),
            ("Anthropic-Beta", "a"),
            ("anthropic-beta", "b"),
        ],
        &body,
    )
    .unwrap();

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/messages?beta=true");
    let names: Vec<&str> = request
        .headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "Host",
            "X-Api-Key",
            "anthropic-version",
            "Anthropic-Beta",
            "anthropic-beta",
            "Content-Length",
            "Connection"
        ]
    );
    assert_eq!(request.header("x-api-key"), Some("sk-test"));
    assert_eq!(request.header_all("ANTHROPIC-BETA"), ["a", "b"]);
    assert_eq!(request.body, body);
    assert_eq!(request.json()["messages"][0]["content"], "hi");
    assert!(!request.chunked);
}

#[test]
fn chunked_request_body_decoded() {
    let mock = MockUpstream::start();
    let body = message_request("chunked upload", false);
    let pieces = split_at_offsets(&body, &[1, 10, 11, 40]);
    let piece_refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
    let response = http::send(
        mock.addr(),
        "POST",
        "/v1/messages",
        &[("Transfer-Encoding", "chunked")],
        &http::encode_chunked(&piece_refs),
    )
    .unwrap();

    assert_eq!(response.status, 200);
    let request = &mock.requests()[0];
    assert!(request.chunked);
    assert_eq!(request.body, body);
}

#[test]
fn keep_alive_serves_pipelined_requests() {
    let mock = MockUpstream::start();
    let first = "GET /v1/models HTTP/1.1\r\nHost: mock\r\n\r\n";
    let second = "GET /v1/models/claude-sonnet-4-20250514 HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n";
    let raw = http::send_raw(mock.addr(), format!("{first}{second}").as_bytes(), SHORT).unwrap();
    let text = String::from_utf8(raw).unwrap();

    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2);
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].connection_id, requests[1].connection_id);
    assert_eq!(requests[1].path, "/v1/models/claude-sonnet-4-20250514");
}

#[test]
fn expect_continue_gets_100() {
    let mock = MockUpstream::start();
    let body = br#"{"model":"m","messages":[]}"#;
    let request = format!(
        "POST /v1/messages/count_tokens HTTP/1.1\r\nHost: mock\r\nExpect: 100-continue\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    let raw = http::send_raw(mock.addr(), &bytes, SHORT).unwrap();

    assert!(raw.starts_with(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"));
}

#[test]
fn malformed_request_gets_400() {
    let mock = MockUpstream::start();
    let raw = http::send_raw(mock.addr(), b"NOT-HTTP\r\n\r\n", SHORT).unwrap();

    assert!(raw.starts_with(b"HTTP/1.1 400 "));
    assert_eq!(mock.request_count(), 0);
}

#[test]
fn split_chunks_arrive_byte_for_byte() {
    let mock = MockUpstream::start();
    // "é" is two bytes; offset 3 falls between them.
    let body = anthropic::sse_stream(
        MODEL,
        &["héllo", " wörld"],
        anthropic::usage(3, 1),
        anthropic::usage(3, 2),
    );
    let mut pieces = split_at_offsets(&body, &[3]);
    let tail = pieces.pop().unwrap();
    pieces.extend(split_every(&tail, 17));
    mock.push_reply(Reply::sse(pieces.clone()));

    let mut stream = http::open_stream(mock.addr(), "POST", "/v1/messages", &[], b"{}").unwrap();
    assert_eq!(stream.status, 200);
    assert!(stream.chunked);
    let mut received = Vec::new();
    while let Some((_, chunk)) = stream.next_chunk(SHORT).unwrap() {
        received.push(chunk);
    }

    assert_eq!(received, pieces);
    assert_eq!(received.concat(), body);
    let events = anthropic::parse_sse_events(&received.concat());
    assert_eq!(joined_text_deltas(&events), "héllo wörld");
    assert_eq!(events[6].0, "message_delta");
    assert_eq!(events[6].1["usage"], anthropic::usage(3, 2));
}

#[test]
fn split_helpers_cover_edges() {
    let bytes = b"abcdef";
    assert_eq!(
        split_at_offsets(bytes, &[0, 2, 2, 6]),
        [b"ab".to_vec(), b"cdef".to_vec()]
    );
    assert_eq!(split_at_offsets(bytes, &[]), [bytes.to_vec()]);
    assert_eq!(split_every(bytes, 4), [b"abcd".to_vec(), b"ef".to_vec()]);
    assert!(split_every(b"", 3).is_empty());
}

#[test]
fn cut_stream_is_unexpected_eof() {
    let mock = MockUpstream::start();
    let events = anthropic::sse_events(
        MODEL,
        &["a", "b"],
        anthropic::usage(1, 1),
        anthropic::usage(1, 2),
    );
    mock.push_reply(Reply::sse(events.clone()).cut_after(3));
    mock.push_reply(Reply::sse(events).cut_after(3));

    let err = http::send(mock.addr(), "POST", "/v1/messages", &[], b"{}").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);

    let mut stream = http::open_stream(mock.addr(), "POST", "/v1/messages", &[], b"{}").unwrap();
    for _ in 0..3 {
        assert!(stream.next_chunk(SHORT).unwrap().is_some());
    }
    let err = stream.next_chunk(SHORT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(mock.disconnects(), 0);
}

#[test]
fn first_chunk_arrives_before_last_sent() {
    let mock = MockUpstream::start();
    let chunks = vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()];
    mock.push_reply(Reply::sse(chunks).chunk_delay(Duration::from_millis(100)));

    let mut stream = http::open_stream(mock.addr(), "POST", "/v1/messages", &[], b"{}").unwrap();
    let (first_at, first) = stream.next_chunk(SHORT).unwrap().unwrap();
    let (_, second) = stream.next_chunk(SHORT).unwrap().unwrap();
    let (last_at, last) = stream.next_chunk(SHORT).unwrap().unwrap();

    assert_eq!(first, b"one");
    assert_eq!(second, b"two");
    assert_eq!(last, b"three");
    assert!(last_at - first_at >= Duration::from_millis(150));
    assert!(stream.next_chunk(SHORT).unwrap().is_none());
}

#[test]
fn abandoned_stream_counted() {
    let mock = MockUpstream::start();
    let chunks = split_every(&[b'x'; 200], 10);
    mock.push_reply(Reply::sse(chunks).chunk_delay(Duration::from_millis(20)));

    let mut stream = http::open_stream(mock.addr(), "POST", "/v1/messages", &[], b"{}").unwrap();
    assert!(stream.next_chunk(SHORT).unwrap().is_some());
    drop(stream);

    assert!(mock.wait_for_disconnects(1, SHORT));
    assert_eq!(mock.disconnects(), 1);
}

#[test]
fn timeout_during_delay_counted() {
    let mock = MockUpstream::start();
    mock.push_reply(Reply::json(200, "{}").delay(Duration::from_millis(1500)));

    let started = Instant::now();
    let err = http::send_with_timeout(
        mock.addr(),
        "GET",
        "/",
        &[],
        b"",
        Duration::from_millis(100),
    )
    .unwrap_err();

    assert_eq!(err.kind(), ErrorKind::TimedOut);
    assert!(started.elapsed() < Duration::from_millis(1000));
    assert!(mock.wait_for_disconnects(1, SHORT));
}

#[test]
fn delay_before_stream_head() {
    let mock = MockUpstream::start();
    mock.push_reply(Reply::sse(vec![b"data".to_vec()]).delay(Duration::from_millis(150)));

    let started = Instant::now();
    let response = http::send(mock.addr(), "POST", "/v1/messages", &[], b"{}").unwrap();

    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(response.body, b"data");
}

#[test]
fn queued_replies_served_in_order() {
    let mock = MockUpstream::start();
    mock.push_reply(
        Reply::json(201, r#"{"n":1}"#)
            .header("x-first", "yes")
            .header("Content-Type", "application/vnd.test+json"),
    );
    mock.push_reply(Reply::rate_limited(7));
    mock.push_reply(Reply::overloaded());
    mock.push_reply(Reply::error(
        401,
        "authentication_error",
        "invalid x-api-key",
    ));
    mock.push_reply(Reply::error(500, "api_error", "Internal server error"));
    mock.push_reply(Reply::default_response().header("x-scripted", "1"));
    assert_eq!(mock.pending_replies(), 6);

    let send = || {
        http::send(
            mock.addr(),
            "POST",
            "/v1/messages",
            &[],
            &message_request("q", false),
        )
        .unwrap()
    };
    let first = send();
    assert_eq!(first.status, 201);
    assert_eq!(first.header("x-first"), Some("yes"));
    assert_eq!(
        first.header_all("content-type"),
        ["application/vnd.test+json"]
    );
    assert_eq!(first.json(), json!({"n": 1}));

    let limited = send();
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("7"));
    assert_eq!(limited.json()["error"]["type"], "rate_limit_error");

    let overloaded = send();
    assert_eq!(overloaded.status, 529);
    assert_eq!(overloaded.json()["error"]["type"], "overloaded_error");

    let unauthorized = send();
    assert_eq!(unauthorized.status, 401);
    assert_eq!(unauthorized.json()["error"]["message"], "invalid x-api-key");

    let failed = send();
    assert_eq!(failed.status, 500);
    assert_eq!(failed.json()["error"]["type"], "api_error");

    let scripted_default = send();
    assert_eq!(scripted_default.status, 200);
    assert_eq!(scripted_default.header("x-scripted"), Some("1"));
    assert_eq!(scripted_default.json()["type"], "message");

    let unscripted = send();
    assert_eq!(unscripted.status, 200);
    assert_eq!(unscripted.header("x-scripted"), None);
    assert_eq!(mock.pending_replies(), 0);
    assert_eq!(mock.request_count(), 7);
}

#[test]
fn close_without_response_and_garbage() {
    let mock = MockUpstream::start();
    mock.push_reply(Reply::close_without_response());
    mock.push_reply(Reply::raw(b"\x00\x01 not http at all\r\n\r\n".to_vec()));

    let closed = http::send(mock.addr(), "GET", "/", &[], b"").unwrap_err();
    assert_eq!(closed.kind(), ErrorKind::UnexpectedEof);
    let garbage = http::send(mock.addr(), "GET", "/", &[], b"").unwrap_err();
    assert_eq!(garbage.kind(), ErrorKind::InvalidData);
    assert_eq!(mock.request_count(), 2);
}

#[test]
fn drop_stops_listener_and_connections() {
    let mock = MockUpstream::start();
    let address = mock.addr();
    mock.push_reply(
        Reply::sse(vec![b"a".to_vec(), b"b".to_vec()]).chunk_delay(Duration::from_secs(5)),
    );
    let mut stream = http::open_stream(address, "POST", "/v1/messages", &[], b"{}").unwrap();
    assert!(stream.next_chunk(SHORT).unwrap().is_some());

    let started = Instant::now();
    drop(mock);

    assert!(started.elapsed() < Duration::from_secs(1));
    let err = stream.next_chunk(SHORT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    assert!(TcpStream::connect_timeout(&address, SHORT).is_err());
}

#[test]
fn request_cap_stops_mock() {
    let mock = MockUpstream::builder().max_requests(2).start().unwrap();
    for _ in 0..2 {
        let response = http::send(mock.addr(), "GET", "/v1/models", &[], b"").unwrap();
        assert_eq!(response.status, 200);
    }

    // The mock stops right after writing the capped reply, so the client may
    // see the reply a moment earlier.
    let deadline = Instant::now() + SHORT;
    while !mock.is_stopped() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(mock.is_stopped());
    assert!(http::send(mock.addr(), "GET", "/v1/models", &[], b"").is_err());
}

#[test]
fn mock_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MockUpstream>();
    assert_send_sync::<Reply>();
}

#[test]
fn loopback_only() {
    let public: SocketAddr = "192.0.2.1:80".parse().unwrap();
    let client_err = http::send(public, "GET", "/", &[], b"").unwrap_err();
    assert_eq!(client_err.kind(), ErrorKind::InvalidInput);
    let start_err = MockUpstream::builder()
        .address(public)
        .start()
        .err()
        .unwrap();
    assert_eq!(start_err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn binary_serves_and_exits() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cco-mock-upstream"))
        .args(["--port", "0", "--max-requests", "1", "--max-seconds", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).unwrap();
    let address: SocketAddr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();

    let response = http::send(
        address,
        "POST",
        "/v1/messages",
        &[],
        &message_request("hi", true),
    )
    .unwrap();
    assert_eq!(response.status, 200);
    assert!(response.chunked);

    let deadline = Instant::now() + SHORT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cco-mock-upstream did not exit after its request cap");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success());
}

#[test]
fn binary_rejects_public_host() {
    let output = Command::new(env!("CARGO_BIN_EXE_cco-mock-upstream"))
        .args(["--port", "0", "--host", "0.0.0.0"])
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "stderr was {stderr:?}");
}
