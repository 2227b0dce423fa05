//! Command-line flags and subcommands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::client::DEFAULT_TIMEOUT_SECS;
use crate::commands::cache::CacheCommand;
use crate::commands::pricing::PricingArgs;
use crate::commands::service::ServiceCommand;
use crate::commands::stats::StatsArgs;
use crate::commands::status::StatusArgs;
use crate::commands::update::UpdateArgs;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  ccod returned an error reply, whose kind and message are printed, the exchange
     failed: a timeout, a connection closed mid-reply or a reply that could not be read,
     or 'stats --csv' found analytics off in ccod
  2  bad usage: an unknown flag, an invalid --since or --until value, a reversed range,
     or no socket path because no home directory is known
  3  ccod is not running: no socket at the path, or the connection was refused
  4  protocol mismatch: ccoctl and ccod speak different protocol versions";

/// Control the CCO caching proxy daemon (ccod)
#[derive(Debug, Parser)]
#[command(
    name = "ccoctl",
    version,
    long_about = "Control the CCO caching proxy daemon (ccod) over its local control socket: \
                  show its status, usage and cost, its price table, inspect or clear its \
                  cache, print its configuration, update it or stop it. 'ccoctl service' \
                  writes the service file that runs ccod and needs no daemon.",
    after_help = "Run 'ccoctl --help' to see the exit codes.",
    after_long_help = EXIT_CODES
)]
pub struct Cli {
    /// Path of ccod's control socket [default: ccod.sock in the per-user runtime directory]
    ///
    /// The default is ccod.sock in $XDG_RUNTIME_DIR/cco on Linux, or in the per-user cache
    /// directory where the platform has no runtime directory, as on macOS. On Windows the
    /// path's file name is used as the name of a named pipe.
    #[arg(long, global = true, env = cco_proto::SOCKET_ENV, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Seconds to wait for ccod to accept the connection and reply, in total
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        default_value_t = DEFAULT_TIMEOUT_SECS,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub timeout: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show ccod's version, uptime, listen address, data dir and counters
    Status(StatusArgs),
    /// Show requests, cache hits, tokens and cost over a time range, in total and by model,
    /// day, provider or credential
    Stats(StatsArgs),
    /// Show the price table ccod prices requests with: rates, aliases and each row's source
    Pricing(PricingArgs),
    /// Inspect or clear the response cache
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Print ccod's effective configuration as TOML, credentials redacted
    Config,
    /// Stop ccod gracefully: in-flight requests finish and analytics are flushed first
    Shutdown,
    /// Check for a new release, install it (the default) or roll the last install back
    Update(UpdateArgs),
    /// Install, remove or inspect the systemd unit or launchd agent that runs ccod
    #[command(subcommand)]
    Service(ServiceCommand),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn since_rejects_bad_value_as_usage() {
        let error = Cli::try_parse_from(["ccoctl", "stats", "--since", "yesterday"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let message = error.to_string();
        assert!(message.contains("'yesterday'"), "{message}");
        assert!(message.contains("RFC 3339"), "{message}");
    }

    #[test]
    fn socket_flag_is_global() {
        let cli =
            Cli::try_parse_from(["ccoctl", "cache", "stats", "--socket", "/tmp/x.sock"]).unwrap();
        assert_eq!(cli.socket, Some(PathBuf::from("/tmp/x.sock")));
    }

    #[test]
    fn timeout_rejects_zero() {
        let error = Cli::try_parse_from(["ccoctl", "--timeout", "0", "status"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }
}
