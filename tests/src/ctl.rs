//! Typed readings of a running daemon through `ccoctl ... --json`, and waits on them.
//!
//! The proxy sends a request's analytics record and its cache entry when the response body
//! ends, which can be a moment after the client has read the last byte. Tests therefore
//! wait for the record with [`wait_for_records`] before they rely on it.

use std::time::{Duration, Instant};

use cco_proto::{CacheStatsReply, StatsReply, StatusReply};
use serde::de::DeserializeOwned;

use crate::daemon::DaemonProcess;

/// Time a record or a cache entry gets to appear after its response ended.
pub const RECORD_DEADLINE: Duration = Duration::from_secs(5);

const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Runs `ccoctl ARGS...` against `daemon` and parses its standard output as JSON.
///
/// # Panics
/// When `ccoctl` fails or prints something that is not a `T`. The message shows the output.
pub fn json<T: DeserializeOwned>(daemon: &DaemonProcess, args: &[&str]) -> T {
    let output = daemon.ctl(args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ccoctl {args:?} failed with {}: stdout {stdout:?}, stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|err| panic!("ccoctl {args:?} printed invalid JSON ({err}): {stdout:?}"))
}

/// Returns the output of `ccoctl ARGS...` as text, asserting that it succeeded.
pub fn text(daemon: &DaemonProcess, args: &[&str]) -> String {
    let output = daemon.ctl(args);
    assert!(
        output.status.success(),
        "ccoctl {args:?} failed with {}: stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Returns `ccoctl stats --json` over all time.
pub fn stats(daemon: &DaemonProcess) -> StatsReply {
    json(daemon, &["stats", "--json"])
}

/// Returns `ccoctl cache stats --json`.
pub fn cache_stats(daemon: &DaemonProcess) -> CacheStatsReply {
    json(daemon, &["cache", "stats", "--json"])
}

/// Returns `ccoctl status --json`.
pub fn status(daemon: &DaemonProcess) -> StatusReply {
    json(daemon, &["status", "--json"])
}

/// Waits until the daemon has recorded at least `count` requests and returns the stats.
///
/// # Panics
/// When fewer than `count` requests are recorded after [`RECORD_DEADLINE`].
pub fn wait_for_records(daemon: &DaemonProcess, count: u64) -> StatsReply {
    let deadline = Instant::now() + RECORD_DEADLINE;
    loop {
        let reply = stats(daemon);
        if reply.total.requests >= count {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "ccod recorded {} requests, expected at least {count} within {RECORD_DEADLINE:?}",
            reply.total.requests
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}
