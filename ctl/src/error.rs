//! Failures of a `ccoctl` run and the exit code each one maps to.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use cco_proto::{ErrorKind, CRATE_VERSION, PROTOCOL_VERSION};

/// Exit code for a daemon error reply and for any failure not listed below.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for bad usage. clap uses the same code for the errors it reports itself.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when no daemon listens on the socket.
pub const EXIT_NOT_RUNNING: u8 = 3;
/// Exit code when `ccoctl` and `ccod` speak different protocol versions.
pub const EXIT_PROTOCOL_MISMATCH: u8 = 4;

/// Next steps printed when no daemon listens on the socket.
const START_HINT: &str = "is it running? start it with 'ccod' or 'systemctl --user start \
                          ccod', or pass --socket PATH if it listens elsewhere";

/// A failure of one `ccoctl` run, displayed as the message printed after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Usage(String),

    /// Nothing listens on the socket: the file is missing or refuses connections.
    #[error("cannot connect to ccod at {}: {reason}: {START_HINT}", socket.display())]
    NotRunning {
        socket: PathBuf,
        reason: &'static str,
    },

    #[error("cannot connect to ccod at {}: {source}", socket.display())]
    Connect { socket: PathBuf, source: io::Error },

    #[error(
        "timed out after {} waiting for ccod at {} to {action}: the daemon may be \
         overloaded or stuck; check its log, or retry with a larger --timeout",
        format_timeout(*timeout),
        socket.display()
    )]
    Timeout {
        socket: PathBuf,
        timeout: Duration,
        action: &'static str,
    },

    #[error("connection to ccod at {} failed while trying to {action}: {source}", socket.display())]
    Io {
        socket: PathBuf,
        action: &'static str,
        source: io::Error,
    },

    #[error(
        "ccod at {} closed the connection without replying: check the daemon's log",
        socket.display()
    )]
    ClosedWithoutReply { socket: PathBuf },

    #[error(
        "ccod at {} closed the connection in the middle of a reply ({pending} bytes without \
         a newline): the daemon may have crashed; check its log",
        socket.display()
    )]
    TruncatedReply { socket: PathBuf, pending: usize },

    /// The reply was not a response frame of this protocol, or it replied to another request.
    #[error("invalid reply from ccod at {}: {reason}", socket.display())]
    InvalidReply { socket: PathBuf, reason: String },

    /// The daemon's frame carries another protocol version, or the daemon rejected ours.
    #[error(
        "protocol mismatch: ccoctl protocol {PROTOCOL_VERSION} (version {CRATE_VERSION}) vs \
         ccod protocol {} (version {daemon_version}){}: use the ccoctl that came with this \
         ccod, or restart ccod after upgrading",
        daemon_protocol.map_or_else(|| "unknown".to_owned(), |version| version.to_string()),
        detail.as_deref().map(|text| format!(", ccod reported: {text}")).unwrap_or_default()
    )]
    ProtocolMismatch {
        daemon_protocol: Option<u32>,
        daemon_version: String,
        detail: Option<String>,
    },

    /// The daemon received the request and replied with an error.
    #[error("ccod returned an error ({}): {message}", kind_name(*kind))]
    Daemon { kind: ErrorKind, message: String },

    /// The daemon records no requests, so an output that consists only of records, such as
    /// `--csv`, has nothing to show.
    #[error(
        "analytics are off in ccod (--no-analytics or [analytics] enabled = false), so it \
         records no requests and {output} has no rows to print: use --json, whose \
         analytics_enabled is false, or restart ccod with analytics on"
    )]
    AnalyticsOff { output: &'static str },
}

impl CtlError {
    /// Process exit code for this failure, as listed in `ccoctl --help`.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => EXIT_USAGE,
            CtlError::NotRunning { .. } => EXIT_NOT_RUNNING,
            CtlError::ProtocolMismatch { .. } => EXIT_PROTOCOL_MISMATCH,
            CtlError::Connect { .. }
            | CtlError::Timeout { .. }
            | CtlError::Io { .. }
            | CtlError::ClosedWithoutReply { .. }
            | CtlError::TruncatedReply { .. }
            | CtlError::InvalidReply { .. }
            | CtlError::Daemon { .. }
            | CtlError::AnalyticsOff { .. } => EXIT_FAILURE,
        }
    }
}

/// Returns the wire name of an error kind, such as `internal`.
fn kind_name(kind: ErrorKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{kind:?}"),
    }
}

fn format_timeout(timeout: Duration) -> String {
    if timeout.subsec_millis() == 0 {
        format!("{} s", timeout.as_secs())
    } else {
        format!("{} ms", timeout.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket() -> PathBuf {
        PathBuf::from("/run/user/1000/cco/ccod.sock")
    }

    #[test]
    fn exit_codes_follow_help() {
        let cases = [
            (CtlError::Usage("bad".into()), 2),
            (
                CtlError::NotRunning {
                    socket: socket(),
                    reason: "no socket file",
                },
                3,
            ),
            (
                CtlError::ProtocolMismatch {
                    daemon_protocol: Some(99),
                    daemon_version: "9.0.0".into(),
                    detail: None,
                },
                4,
            ),
            (
                CtlError::Daemon {
                    kind: ErrorKind::Internal,
                    message: "disk full".into(),
                },
                1,
            ),
            (
                CtlError::Timeout {
                    socket: socket(),
                    timeout: Duration::from_secs(10),
                    action: "reply",
                },
                1,
            ),
            (
                CtlError::TruncatedReply {
                    socket: socket(),
                    pending: 5,
                },
                1,
            ),
            (CtlError::ClosedWithoutReply { socket: socket() }, 1),
            (CtlError::AnalyticsOff { output: "--csv" }, 1),
            (
                CtlError::InvalidReply {
                    socket: socket(),
                    reason: "x".into(),
                },
                1,
            ),
            (
                CtlError::Connect {
                    socket: socket(),
                    source: io::Error::from(io::ErrorKind::PermissionDenied),
                },
                1,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit_code(), code, "for {error:?}");
        }
    }

    #[test]
    fn not_running_names_socket_and_start() {
        let message = CtlError::NotRunning {
            socket: socket(),
            reason: "no socket file",
        }
        .to_string();
        assert!(message.starts_with("cannot connect to ccod at /run/user/1000/cco/ccod.sock"));
        assert!(message.contains("systemctl --user start ccod"), "{message}");
    }

    #[test]
    fn mismatch_names_both_versions() {
        let message = CtlError::ProtocolMismatch {
            daemon_protocol: Some(99),
            daemon_version: "9.0.0".into(),
            detail: None,
        }
        .to_string();
        let expected = format!(
            "protocol mismatch: ccoctl protocol {PROTOCOL_VERSION} (version {CRATE_VERSION}) vs \
             ccod protocol 99 (version 9.0.0): use the ccoctl"
        );
        assert!(message.starts_with(&expected), "{message}");
    }

    #[test]
    fn daemon_error_shows_wire_kind() {
        let message = CtlError::Daemon {
            kind: ErrorKind::UnknownCommand,
            message: "unknown command 'x'".into(),
        }
        .to_string();
        assert_eq!(
            message,
            "ccod returned an error (unknown_command): unknown command 'x'"
        );
    }

    #[test]
    fn timeout_names_duration() {
        let message = CtlError::Timeout {
            socket: socket(),
            timeout: Duration::from_millis(1500),
            action: "reply",
        }
        .to_string();
        assert!(
            message.starts_with(
                "timed out after 1500 ms waiting for ccod at /run/user/1000/cco/ccod.sock to reply"
            ),
            "{message}"
        );
    }
}
