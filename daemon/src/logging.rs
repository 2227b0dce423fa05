//! Installs the tracing subscriber: standard error by default, or an appended log file.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber with `filter` (a level or a tracing directive). A log
/// file is created 0600 because request paths and model names are the user's business.
pub fn init(filter: &str, log_file: Option<&Path>) -> anyhow::Result<()> {
    let directives = directives(filter);
    let filter =
        EnvFilter::try_new(&directives).with_context(|| format!("invalid log level '{filter}'"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match log_file {
        Some(path) => {
            let mut options = OpenOptions::new();
            options.create(true).append(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let file = options
                .open(path)
                .with_context(|| format!("cannot open the log file {}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .try_init()
        }
        None => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
    }
    .map_err(|err| anyhow::anyhow!("cannot install the logger: {err}"))
}

/// Expands a bare level into directives that apply it to CCO's own crates only. The
/// libraries below stay at `warn`, because sled's debug output alone would bury the
/// daemon's, except actix-server, whose start and stop lines are worth keeping at `info`.
/// Anything other than a bare level is used as written.
pub fn directives(filter: &str) -> String {
    match filter.trim().to_ascii_lowercase().as_str() {
        level @ ("error" | "warn") => level.to_owned(),
        level @ ("info" | "debug" | "trace") => {
            format!("warn,ccod={level},cco_proto={level},actix_server=info")
        }
        _ => filter.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_level_applies_to_own_crates() {
        assert_eq!(
            directives("debug"),
            "warn,ccod=debug,cco_proto=debug,actix_server=info"
        );
        assert_eq!(directives("error"), "error");
        assert_eq!(directives("sled=debug"), "sled=debug");
    }
}
