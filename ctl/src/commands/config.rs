//! `ccoctl config`: the daemon's effective configuration.

use cco_proto::{Request, Response};

use super::unexpected_reply;
use crate::client::Client;
use crate::error::CtlError;

/// Returns the TOML as the daemon sent it, with credentials already redacted by the daemon.
pub fn run(client: &Client) -> Result<String, CtlError> {
    match client.send(Request::Config)? {
        Response::Config(reply) if reply.toml.ends_with('\n') || reply.toml.is_empty() => {
            Ok(reply.toml)
        }
        Response::Config(reply) => Ok(reply.toml + "\n"),
        other => Err(unexpected_reply(client, "config", &other)),
    }
}
