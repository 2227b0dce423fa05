//! `ccoctl shutdown`: stop the daemon gracefully.

use cco_proto::{Request, Response};

use super::unexpected_reply;
use crate::client::Client;
use crate::error::CtlError;

/// Asks the daemon to stop. It replies before it stops, so the reply confirms that the
/// shutdown has begun, not that it has finished.
pub fn run(client: &Client) -> Result<String, CtlError> {
    match client.send(Request::Shutdown)? {
        Response::ShuttingDown => Ok(format!(
            "ccod at {} is shutting down: in-flight requests finish and analytics are flushed \
             first\n",
            client.socket().display()
        )),
        other => Err(unexpected_reply(client, "shutdown", &other)),
    }
}
