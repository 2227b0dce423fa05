//! One module per subcommand. Each `run` sends one request and returns the text to print.

pub mod cache;
pub mod config;
pub mod pricing;
pub mod service;
pub mod shutdown;
pub mod stats;
pub mod status;
pub mod update;

use cco_proto::Response;
use serde::Serialize;

use crate::client::Client;
use crate::error::CtlError;

/// Builds the error for a well-formed reply of the wrong kind, such as a stats reply to a status
/// request.
fn unexpected_reply(client: &Client, command: &str, response: &Response) -> CtlError {
    let kind = serde_json::to_value(response)
        .ok()
        .and_then(|value| value.get("result")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    CtlError::InvalidReply {
        socket: client.socket().to_path_buf(),
        reason: format!("expected a reply to '{command}', got '{kind}'"),
    }
}

/// Renders a reply as pretty JSON with a final newline, the `--json` output.
fn to_json<T: Serialize>(reply: &T) -> String {
    // serde_json fails only on maps with non-string keys and on failing custom Serialize
    // impls, and the derived proto reply types have neither.
    let mut text = serde_json::to_string_pretty(reply).expect("replies serialize to JSON");
    text.push('\n');
    text
}
