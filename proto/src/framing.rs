//! Newline-delimited JSON framing.
//!
//! [`LineFramer`] is fed bytes as they arrive, whatever the read boundaries, and yields one
//! frame per `\n`. It never buffers more than [`MAX_FRAME_BYTES`]: a longer line is reported
//! once as [`FrameError::TooLarge`] and skipped up to its newline, so the peer can go on.

use serde::Serialize;

use crate::messages::{ErrorKind, ErrorReply, RequestFrame, COMMAND_NAMES};
use crate::{MAX_FRAME_BYTES, PROTOCOL_VERSION};

/// Failure to turn a frame into a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of more than {limit} bytes rejected: send one JSON object per line")]
    TooLarge { limit: usize },
    #[error("malformed frame: {reason}")]
    Malformed { id: Option<u64>, reason: String },
    #[error("unknown command '{command}': expected one of {}", COMMAND_NAMES.join(", "))]
    UnknownCommand { id: Option<u64>, command: String },
    #[error(
        "protocol version {client} is not supported by ccod (protocol {PROTOCOL_VERSION}): \
         use the ccoctl that came with this ccod"
    )]
    ProtocolMismatch { id: Option<u64>, client: u32 },
    #[error("connection closed in the middle of a frame ({pending} bytes without a newline)")]
    Truncated { pending: usize },
}

impl FrameError {
    /// Id of the request the error belongs to, when the frame carried one.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            FrameError::Malformed { id, .. }
            | FrameError::UnknownCommand { id, .. }
            | FrameError::ProtocolMismatch { id, .. } => *id,
            FrameError::TooLarge { .. } | FrameError::Truncated { .. } => None,
        }
    }

    /// Returns the error as it is sent to the peer.
    pub fn to_reply(&self) -> ErrorReply {
        let kind = match self {
            FrameError::TooLarge { .. } => ErrorKind::FrameTooLarge,
            FrameError::Malformed { .. } | FrameError::Truncated { .. } => {
                ErrorKind::MalformedFrame
            }
            FrameError::UnknownCommand { .. } => ErrorKind::UnknownCommand,
            FrameError::ProtocolMismatch { .. } => ErrorKind::ProtocolMismatch,
        };
        ErrorReply {
            kind,
            message: self.to_string(),
        }
    }
}

/// Serializes `value` as one frame: compact JSON followed by `\n`.
pub fn encode_frame<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain data types to a Vec cannot fail: every map key is a string.
    let mut bytes = serde_json::to_vec(value).expect("control messages serialize to JSON");
    bytes.push(b'\n');
    bytes
}

/// Splits a byte stream into frames.
#[derive(Debug, Default)]
pub struct LineFramer {
    buffer: Vec<u8>,
    /// Set while the rest of an oversized line is being skipped.
    skipping: bool,
}

impl LineFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Returns the next complete frame without its newline, an error for an oversized one,
    /// or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        loop {
            match self.buffer.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                    line.pop();
                    if self.skipping {
                        self.skipping = false;
                        continue;
                    }
                    if line.len() + 1 > MAX_FRAME_BYTES {
                        return Some(Err(FrameError::TooLarge {
                            limit: MAX_FRAME_BYTES,
                        }));
                    }
                    return Some(Ok(line));
                }
                None if self.buffer.len() >= MAX_FRAME_BYTES => {
                    self.buffer.clear();
                    if self.skipping {
                        return None;
                    }
                    self.skipping = true;
                    return Some(Err(FrameError::TooLarge {
                        limit: MAX_FRAME_BYTES,
                    }));
                }
                None => return None,
            }
        }
    }

    /// Checks the state at end of input: bytes without a final newline are a cut frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffer.is_empty() || self.skipping {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                pending: self.buffer.len(),
            })
        }
    }
}

/// Decodes one frame into a request, telling malformed JSON, an unknown command and a
/// protocol mismatch apart.
pub fn decode_request(frame: &[u8]) -> Result<RequestFrame, FrameError> {
    let value: serde_json::Value =
        serde_json::from_slice(frame).map_err(|err| FrameError::Malformed {
            id: None,
            reason: format!("not valid JSON ({err})"),
        })?;
    let Some(object) = value.as_object() else {
        return Err(FrameError::Malformed {
            id: None,
            reason: "expected a JSON object".to_owned(),
        });
    };
    let id = object.get("id").and_then(serde_json::Value::as_u64);

    match object.get("protocol").and_then(serde_json::Value::as_u64) {
        Some(version) if version == u64::from(PROTOCOL_VERSION) => {}
        Some(version) => {
            return Err(FrameError::ProtocolMismatch {
                id,
                client: u32::try_from(version).unwrap_or(u32::MAX),
            })
        }
        None => {
            return Err(FrameError::Malformed {
                id,
                reason: "missing integer field 'protocol'".to_owned(),
            })
        }
    }
    match object.get("command").and_then(serde_json::Value::as_str) {
        Some(command) if !COMMAND_NAMES.contains(&command) => {
            return Err(FrameError::UnknownCommand {
                id,
                command: command.chars().take(64).collect(),
            })
        }
        Some(_) => {}
        None => {
            return Err(FrameError::Malformed {
                id,
                reason: "missing string field 'command'".to_owned(),
            })
        }
    }
    serde_json::from_value(value).map_err(|err| FrameError::Malformed {
        id,
        reason: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::*;

    fn frames(framer: &mut LineFramer) -> Vec<Result<Vec<u8>, FrameError>> {
        std::iter::from_fn(|| framer.next_frame()).collect()
    }

    #[test]
    fn framer_joins_split_reads() {
        let mut framer = LineFramer::new();
        framer.push(b"{\"a\":");
        assert!(framer.next_frame().is_none());
        framer.push(b"1}\n{\"b\":2}\n{\"c\"");
        let got = frames(&mut framer);
        assert_eq!(
            got,
            vec![Ok(b"{\"a\":1}".to_vec()), Ok(b"{\"b\":2}".to_vec())]
        );
        assert!(framer.finish().is_err());
    }

    #[test]
    fn framer_rejects_oversized_line_once_and_recovers() {
        let mut framer = LineFramer::new();
        let chunk = vec![b'x'; 64 * 1024];
        let mut errors = 0;
        for _ in 0..40 {
            framer.push(&chunk);
            for frame in frames(&mut framer) {
                assert!(matches!(frame, Err(FrameError::TooLarge { .. })));
                errors += 1;
            }
        }
        assert!(framer.buffer.len() < MAX_FRAME_BYTES);
        framer.push(b"tail\n{\"ok\":true}\n");
        let got = frames(&mut framer);
        assert_eq!(errors, 1);
        assert_eq!(got, vec![Ok(b"{\"ok\":true}".to_vec())]);
        assert!(framer.finish().is_ok());
    }

    #[test]
    fn framer_rejects_exact_limit_line() {
        let mut framer = LineFramer::new();
        let mut line = vec![b'x'; MAX_FRAME_BYTES - 1];
        line.push(b'\n');
        framer.push(&line);
        assert_eq!(
            frames(&mut framer),
            vec![Ok(vec![b'x'; MAX_FRAME_BYTES - 1])]
        );

        let mut framer = LineFramer::new();
        let mut line = vec![b'x'; MAX_FRAME_BYTES];
        line.push(b'\n');
        framer.push(&line);
        let got = frames(&mut framer);
        assert_eq!(got.len(), 1);
        assert!(matches!(got[0], Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn decode_distinguishes_errors() {
        assert!(matches!(
            decode_request(b"not json"),
            Err(FrameError::Malformed { id: None, .. })
        ));
        assert!(matches!(
            decode_request(b"[1,2]"),
            Err(FrameError::Malformed { .. })
        ));
        assert!(matches!(
            decode_request(br#"{"protocol":1,"id":7,"command":"explode"}"#),
            Err(FrameError::UnknownCommand { id: Some(7), .. })
        ));
        assert!(matches!(
            decode_request(br#"{"protocol":99,"id":8,"command":"status"}"#),
            Err(FrameError::ProtocolMismatch {
                id: Some(8),
                client: 99
            })
        ));
        assert!(matches!(
            decode_request(br#"{"id":9,"command":"status"}"#),
            Err(FrameError::Malformed { id: Some(9), .. })
        ));
        assert!(matches!(
            decode_request(br#"{"protocol":1,"id":3,"command":"stats","since_unix_ms":"x"}"#),
            Err(FrameError::Malformed { id: Some(3), .. })
        ));
    }

    #[test]
    fn every_request_round_trips() {
        let requests = [
            Request::Status,
            Request::Stats(StatsQuery {
                since_unix_ms: Some(5),
                until_unix_ms: None,
                ..StatsQuery::default()
            }),
            Request::CacheStats,
            Request::CacheClear,
            Request::Config,
            Request::Shutdown,
            Request::Update(UpdateRequest {
                action: UpdateAction::Install,
                restart: true,
            }),
            Request::UpdateProgress,
            Request::Pricing(PricingQuery {
                provider: Some("anthropic".into()),
            }),
        ];
        assert_eq!(requests.len(), COMMAND_NAMES.len());
        for (id, request) in requests.into_iter().enumerate() {
            let frame = RequestFrame::new(id as u64, request);
            let bytes = encode_frame(&frame);
            assert_eq!(bytes.last(), Some(&b'\n'));
            let decoded = decode_request(&bytes[..bytes.len() - 1]).unwrap();
            assert_eq!(decoded, frame);
        }
    }

    #[test]
    fn every_response_round_trips() {
        let responses = [
            Response::Status(StatusReply {
                version: "0.1.0".into(),
                protocol: 1,
                pid: 42,
                uptime_secs: 3,
                listen_addr: "127.0.0.1:8000".into(),
                data_dir: "/tmp/cco".into(),
                cache_enabled: true,
                cache_entries: 2,
                cache_bytes: 300,
                requests_served: 9,
                analytics_enabled: false,
            }),
            Response::Stats(StatsReply {
                since_unix_ms: Some(1),
                until_unix_ms: Some(2),
                total: UsageTotals {
                    requests: 3,
                    cache_hits: 1,
                    errors: 0,
                    unpriced_requests: 1,
                    streams_without_usage: 2,
                    rate_limited: 0,
                    budget_rejected: 4,
                    estimated_requests: 1,
                    tokens: TokenCounts {
                        input: 10,
                        output: 20,
                        cache_write_5m: 30,
                        cache_write_1h: 40,
                        cache_read: 50,
                    },
                    web_search_requests: 6,
                    cost_nano_usd: 123,
                    saved_nano_usd: 45,
                },
                group_by: GroupBy::Day,
                repriced: true,
                analytics_enabled: true,
                rows: vec![GroupTotals {
                    group: "2026-12-01".into(),
                    priced: true,
                    totals: UsageTotals::default(),
                }],
                budgets: vec![
                    BudgetStatus {
                        credential: None,
                        period: BudgetPeriod::Daily,
                        limit_nano_usd: 5_000_000_000,
                        spent_nano_usd: 4_980_000_000,
                        reserved_nano_usd: 10_000_000,
                        resets_unix_ms: 1_764_892_800_000,
                    },
                    BudgetStatus {
                        credential: Some("0123456789ab".into()),
                        period: BudgetPeriod::Monthly,
                        limit_nano_usd: 20_000_000_000,
                        spent_nano_usd: 0,
                        reserved_nano_usd: 0,
                        resets_unix_ms: 1_767_225_600_000,
                    },
                ],
            }),
            Response::Stats(StatsReply {
                since_unix_ms: None,
                until_unix_ms: None,
                group_by: GroupBy::Model,
                repriced: false,
                analytics_enabled: false,
                total: UsageTotals::default(),
                rows: Vec::new(),
                budgets: Vec::new(),
            }),
            Response::Pricing(PricingReply {
                rows: vec![PriceRow {
                    id: "claude-sonnet-4-5".into(),
                    provider: "anthropic".into(),
                    aliases: vec!["claude-sonnet-4-5-20250929".into()],
                    rates: TokenRates {
                        input: 3000,
                        output: 15000,
                        cache_write_5m: 3750,
                        cache_write_1h: 6000,
                        cache_read: 300,
                    },
                    long_context: Some(LongContextRates {
                        threshold_input_tokens: 200_000,
                        rates: TokenRates::default(),
                    }),
                    web_search_nano_usd: 10_000_000,
                    source: "config".into(),
                    url: None,
                    as_of: None,
                    file: Some("/etc/cco/config.toml".into()),
                }],
            }),
            Response::CacheStats(CacheStatsReply::default()),
            Response::CacheCleared(CacheClearReply {
                entries: 4,
                bytes: 400,
            }),
            Response::Config(ConfigReply {
                toml: "port = 8000\n".into(),
            }),
            Response::ShuttingDown,
            Response::Update(UpdateReply {
                action: UpdateAction::Check,
                running_version: "0.1.0".into(),
                channel: "stable".into(),
                latest_version: Some("0.2.0".into()),
                update_available: true,
                installed_version: None,
                install_dir: "/usr/local/bin".into(),
                restart: RestartMode::None,
            }),
            Response::Update(UpdateReply {
                action: UpdateAction::Install,
                running_version: "0.1.0".into(),
                channel: "beta".into(),
                latest_version: Some("0.3.0-beta.1".into()),
                update_available: true,
                installed_version: Some("0.3.0-beta.1".into()),
                install_dir: "/usr/local/bin".into(),
                restart: RestartMode::ServiceManager { exit_code: 75 },
            }),
            Response::Update(UpdateReply {
                action: UpdateAction::Rollback,
                running_version: "0.2.0".into(),
                channel: "stable".into(),
                latest_version: None,
                update_available: false,
                installed_version: Some("0.1.0".into()),
                install_dir: "/usr/local/bin".into(),
                restart: RestartMode::Reexec,
            }),
            Response::UpdateProgress(UpdateProgressReply {
                downloading: true,
                received_bytes: 1024,
                total_bytes: 4096,
            }),
            Response::Error(ErrorReply {
                kind: ErrorKind::UpdateFailed,
                message: "checksum mismatch".into(),
            }),
            Response::Error(FrameError::TooLarge { limit: 10 }.to_reply()),
        ];
        for response in responses {
            let frame = ResponseFrame::new(Some(1), response);
            let bytes = encode_frame(&frame);
            let decoded: ResponseFrame = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(decoded, frame);
        }
    }

    #[test]
    fn update_actions_round_trip() {
        for action in [
            UpdateAction::Check,
            UpdateAction::Install,
            UpdateAction::Rollback,
        ] {
            let frame = RequestFrame::new(
                2,
                Request::Update(UpdateRequest {
                    action,
                    restart: false,
                }),
            );
            let bytes = encode_frame(&frame);
            let decoded = decode_request(&bytes[..bytes.len() - 1]).unwrap();
            assert_eq!(decoded, frame);
        }
        let frame = br#"{"protocol":1,"id":5,"client_version":"0.1.0","command":"update","action":"rollback","restart":false}"#;
        let decoded = decode_request(frame).unwrap();
        assert_eq!(
            decoded.request,
            Request::Update(UpdateRequest {
                action: UpdateAction::Rollback,
                restart: false
            })
        );
    }

    #[test]
    fn request_wire_format_is_stable() {
        let frame = RequestFrame::new(
            4,
            Request::Stats(StatsQuery {
                since_unix_ms: Some(1000),
                until_unix_ms: None,
                ..StatsQuery::default()
            }),
        );
        let text = String::from_utf8(encode_frame(&frame)).unwrap();
        let expected = format!(
            "{{\"protocol\":1,\"id\":4,\"client_version\":\"{}\",\"command\":\"stats\",\
             \"since_unix_ms\":1000,\"until_unix_ms\":null}}\n",
            crate::CRATE_VERSION
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn stats_options_on_the_wire() {
        let frame = RequestFrame::new(
            6,
            Request::Stats(StatsQuery {
                since_unix_ms: None,
                until_unix_ms: None,
                reprice: true,
                group_by: GroupBy::Credential,
            }),
        );
        let text = String::from_utf8(encode_frame(&frame)).unwrap();
        assert!(text.contains(r#""reprice":true"#), "{text}");
        assert!(text.contains(r#""group_by":"credential""#), "{text}");

        let old = br#"{"protocol":1,"id":7,"client_version":"0.1.0","command":"stats","since_unix_ms":null,"until_unix_ms":null}"#;
        let decoded = decode_request(old).unwrap();
        assert_eq!(decoded.request, Request::Stats(StatsQuery::default()));

        let pricing = br#"{"protocol":1,"id":8,"client_version":"0.1.0","command":"pricing"}"#;
        let decoded = decode_request(pricing).unwrap();
        assert_eq!(decoded.request, Request::Pricing(PricingQuery::default()));
    }

    #[test]
    fn old_stats_reply_still_decodes() {
        // A reply of a release that had `by_model` rows with a `model` field and no
        // `group_by`, `repriced`, `estimated_requests` or `web_search_requests`.
        let old = r#"{"since_unix_ms":null,"until_unix_ms":null,"total":{"requests":1,
            "cache_hits":0,"errors":0,"unpriced_requests":0,"tokens":{"input":1,"output":2,
            "cache_write_5m":0,"cache_write_1h":0,"cache_read":0},"cost_nano_usd":5,
            "saved_nano_usd":0},"by_model":[{"model":"claude-haiku-4-5","priced":true,
            "totals":{"requests":1,"cache_hits":0,"errors":0,"unpriced_requests":0,
            "tokens":{"input":1,"output":2,"cache_write_5m":0,"cache_write_1h":0,
            "cache_read":0},"cost_nano_usd":5,"saved_nano_usd":0}}]}"#;
        let reply: StatsReply = serde_json::from_str(old).unwrap();
        assert_eq!(reply.group_by, GroupBy::Model);
        assert!(!reply.repriced);
        assert_eq!(reply.rows[0].group, "claude-haiku-4-5");
        assert_eq!(reply.total.web_search_requests, 0);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary input in arbitrary pieces never panics the framer or the decoder, never
        /// buffers more than the frame limit, and yields the same frames however it is cut.
        #[test]
        fn framer_and_decoder_survive_any_input(
            input in proptest::collection::vec(any::<u8>(), 0..4096),
            mut cuts in proptest::collection::vec(0usize..4096, 0..16),
        ) {
            cuts.sort_unstable();
            let collect = |cuts: &[usize]| {
                let mut framer = LineFramer::new();
                let mut frames = Vec::new();
                let mut start = 0;
                for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
                    let cut = cut.min(input.len()).max(start);
                    framer.push(&input[start..cut]);
                    start = cut;
                    while let Some(frame) = framer.next_frame() {
                        if let Ok(line) = &frame {
                            let _ = decode_request(line);
                        }
                        frames.push(frame);
                    }
                    assert!(framer.buffer.len() <= MAX_FRAME_BYTES);
                }
                frames
            };
            prop_assert_eq!(collect(&[]), collect(&cuts));
        }

        /// Valid frames decode whatever surrounds them on other lines.
        #[test]
        fn valid_frame_decodes_among_junk(
            junk in proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..512),
            id in any::<u64>(),
        ) {
            let mut input = junk.clone();
            input.push(b'\n');
            input.extend(encode_frame(&RequestFrame::new(id, crate::Request::Status)));
            let mut framer = LineFramer::new();
            framer.push(&input);
            let _junk = framer.next_frame();
            let frame = framer.next_frame().unwrap().unwrap();
            let decoded = decode_request(&frame).unwrap();
            prop_assert_eq!(decoded.id, id);
        }
    }
}
