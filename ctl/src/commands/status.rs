//! `ccoctl status`: what the daemon is and how it is doing.

use cco_proto::{Request, Response, StatusReply};
use clap::Args;

use super::{to_json, unexpected_reply};
use crate::client::Client;
use crate::error::CtlError;
use crate::format::{format_bytes, format_count, format_duration_secs, format_fields};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the daemon's reply as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(client: &Client, args: &StatusArgs) -> Result<String, CtlError> {
    match client.send(Request::Status)? {
        Response::Status(reply) if args.json => Ok(to_json(&reply)),
        Response::Status(reply) => Ok(render(&reply, client)),
        other => Err(unexpected_reply(client, "status", &other)),
    }
}

fn render(reply: &StatusReply, client: &Client) -> String {
    let cache = if reply.cache_enabled {
        format!(
            "enabled, {} entries, {}",
            format_count(reply.cache_entries),
            format_bytes(reply.cache_bytes)
        )
    } else {
        "disabled".to_owned()
    };
    let analytics = if reply.analytics_enabled {
        "enabled"
    } else {
        "disabled (--no-analytics or [analytics] enabled = false): requests are counted, \
         not recorded"
    };
    format_fields(&[
        ("version", reply.version.clone()),
        ("protocol", reply.protocol.to_string()),
        ("pid", reply.pid.to_string()),
        ("uptime", format_duration_secs(reply.uptime_secs)),
        ("listening on", reply.listen_addr.clone()),
        ("data dir", reply.data_dir.clone()),
        ("cache", cache),
        ("analytics", analytics.to_owned()),
        ("requests served", format_count(reply.requests_served)),
        ("control socket", client.socket().display().to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn reply(cache_enabled: bool, analytics_enabled: bool) -> StatusReply {
        StatusReply {
            version: "0.1.0".into(),
            protocol: 1,
            pid: 4242,
            uptime_secs: 3_725,
            listen_addr: "127.0.0.1:8000".into(),
            data_dir: "/var/lib/cco".into(),
            cache_enabled,
            cache_entries: 1_234,
            cache_bytes: 3 * 1024 * 1024,
            requests_served: 56_789,
            analytics_enabled,
        }
    }

    fn client() -> Client {
        Client::new(PathBuf::from("/tmp/ccod.sock"), Duration::from_secs(1))
    }

    #[test]
    fn status_renders_every_field() {
        let text = render(&reply(true, true), &client());
        let expected = "\
version:         0.1.0
protocol:        1
pid:             4242
uptime:          1h 2m 5s
listening on:    127.0.0.1:8000
data dir:        /var/lib/cco
cache:           enabled, 1,234 entries, 3.0 MiB
analytics:       enabled
requests served: 56,789
control socket:  /tmp/ccod.sock
";
        assert_eq!(text, expected);
    }

    #[test]
    fn status_shows_disabled_cache() {
        let text = render(&reply(false, true), &client());
        assert!(text.contains("cache:           disabled\n"), "{text}");
    }

    #[test]
    fn status_shows_disabled_analytics() {
        let text = render(&reply(true, false), &client());
        assert!(
            text.contains(
                "analytics:       disabled (--no-analytics or [analytics] enabled = false): \
                 requests are counted, not recorded\n"
            ),
            "{text}"
        );
        assert!(text.contains("requests served: 56,789\n"), "{text}");
    }
}
