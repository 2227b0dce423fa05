//! `ccoctl cache stats` and `ccoctl cache clear`: the daemon's response cache.

use cco_proto::{CacheClearReply, CacheStatsReply, Request, Response};
use clap::Subcommand;

use super::{to_json, unexpected_reply};
use crate::client::Client;
use crate::error::CtlError;
use crate::format::{
    format_bytes, format_count, format_duration_secs, format_fields, format_percent,
};

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Show the cache's size, limits and counters since the daemon started
    Stats {
        /// Print the daemon's reply as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove every cache entry from memory and disk
    Clear,
}

pub fn run(client: &Client, command: &CacheCommand) -> Result<String, CtlError> {
    match command {
        CacheCommand::Stats { json } => match client.send(Request::CacheStats)? {
            Response::CacheStats(reply) if *json => Ok(to_json(&reply)),
            Response::CacheStats(reply) => Ok(render_stats(&reply)),
            other => Err(unexpected_reply(client, "cache stats", &other)),
        },
        CacheCommand::Clear => match client.send(Request::CacheClear)? {
            Response::CacheCleared(reply) => Ok(render_cleared(&reply)),
            other => Err(unexpected_reply(client, "cache clear", &other)),
        },
    }
}

fn render_stats(reply: &CacheStatsReply) -> String {
    let lookups = reply.hits.saturating_add(reply.misses);
    let hit_rate = if lookups == 0 {
        0.0
    } else {
        reply.hits as f64 / lookups as f64
    };
    format_fields(&[
        (
            "enabled",
            if reply.enabled { "yes" } else { "no" }.to_owned(),
        ),
        ("entries", format_count(reply.entries)),
        ("size", format_bytes(reply.bytes)),
        ("capacity", format_bytes(reply.capacity_bytes)),
        ("ttl", format_duration_secs(reply.ttl_secs)),
        ("hits", format_count(reply.hits)),
        ("misses", format_count(reply.misses)),
        ("hit rate", format_percent(hit_rate)),
        ("stores", format_count(reply.stores)),
        ("evictions", format_count(reply.evictions)),
        ("expirations", format_count(reply.expirations)),
        ("skipped stores", format_count(reply.skipped_stores)),
    ])
}

fn render_cleared(reply: &CacheClearReply) -> String {
    let noun = if reply.entries == 1 {
        "entry"
    } else {
        "entries"
    };
    format!(
        "removed {} cache {noun} ({})\n",
        format_count(reply.entries),
        format_bytes(reply.bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_stats_renders_counters() {
        let reply = CacheStatsReply {
            enabled: true,
            entries: 12,
            bytes: 2048,
            capacity_bytes: 64 * 1024 * 1024,
            ttl_secs: 86_400,
            hits: 30,
            misses: 90,
            stores: 90,
            evictions: 3,
            expirations: 4,
            skipped_stores: 5,
        };
        let expected = "\
enabled:        yes
entries:        12
size:           2.0 KiB
capacity:       64.0 MiB
ttl:            1d 0h 0m 0s
hits:           30
misses:         90
hit rate:       25.0%
stores:         90
evictions:      3
expirations:    4
skipped stores: 5
";
        assert_eq!(render_stats(&reply), expected);
    }

    #[test]
    fn cache_stats_without_lookups() {
        let text = render_stats(&CacheStatsReply::default());
        assert!(text.contains("hit rate:       0.0%\n"), "{text}");
        assert!(text.contains("enabled:        no\n"), "{text}");
    }

    #[test]
    fn cleared_counts_entries() {
        let one = render_cleared(&CacheClearReply {
            entries: 1,
            bytes: 100,
        });
        assert_eq!(one, "removed 1 cache entry (100 B)\n");
        let many = render_cleared(&CacheClearReply {
            entries: 1_500,
            bytes: 3 * 1024 * 1024,
        });
        assert_eq!(many, "removed 1,500 cache entries (3.0 MiB)\n");
    }
}
