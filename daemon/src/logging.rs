//! Installs the tracing subscriber: standard error by default, or an appended log file.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context as _;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber with `filter` (a level or a tracing directive). A log
/// file is created 0600 because request paths and model names are the user's business.
///
/// Lines are written by a background thread, so a request never waits on the log's I/O;
/// keep the returned guard until exit, since dropping it writes what is still queued.
pub fn init(filter: &str, log_file: Option<&Path>) -> anyhow::Result<WorkerGuard> {
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
            let (writer, guard) = NonBlockingBuilder::default().lossy(false).finish(file);
            builder
                .with_ansi(false)
                .with_writer(writer)
                .try_init()
                .map(|()| guard)
        }
        None => {
            let (writer, guard) = NonBlockingBuilder::default()
                .lossy(false)
                .finish(std::io::stderr());
            builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(writer)
                .try_init()
                .map(|()| guard)
        }
    }
    .map_err(|err| anyhow::anyhow!("cannot install the logger: {err}"))
}

/// Replaces the panic message printer with one that masks each of `secrets`, so a panic
/// that formats a value holding a credential cannot print it.
pub fn install_redacting_panic_hook(secrets: Vec<String>) {
    let secrets: Vec<String> = secrets
        .into_iter()
        .filter(|secret| !secret.is_empty())
        .collect();
    std::panic::set_hook(Box::new(move |info| {
        let text = redact(&info.to_string(), &secrets);
        tracing::error!(panic = %text, "ccod panicked");
        eprintln!("ccod panicked: {text}");
    }));
}

/// Replaces every occurrence of each secret in `text` with `<redacted>`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret.as_str(), "<redacted>")
    })
}

/// Expands a bare level into directives that apply it to CCO's own crates only. The
/// libraries below stay at `warn`, because sled's debug output alone would bury the
/// daemon's, except actix-server, whose start and stop lines are worth keeping at `info`.
/// actix-http's connection dispatcher is off: it logs every malformed request from a client
/// as an error, so any client could fill the log, and the proxy logs the responses it cuts
/// itself. Anything other than a bare level is used as written.
pub fn directives(filter: &str) -> String {
    const DISPATCHER_OFF: &str = "actix_http::h1::dispatcher=off";
    match filter.trim().to_ascii_lowercase().as_str() {
        level @ ("error" | "warn") => format!("{level},{DISPATCHER_OFF}"),
        level @ ("info" | "debug" | "trace") => {
            format!("warn,ccod={level},cco_proto={level},actix_server=info,{DISPATCHER_OFF}")
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
            "warn,ccod=debug,cco_proto=debug,actix_server=info,actix_http::h1::dispatcher=off"
        );
        assert_eq!(directives("error"), "error,actix_http::h1::dispatcher=off");
        assert_eq!(directives("sled=debug"), "sled=debug");
    }

    #[test]
    fn redact_masks_every_secret() {
        let secrets = vec!["sk-ant-one".to_owned(), "tok-two".to_owned()];
        let text = redact("key sk-ant-one and tok-two, again sk-ant-one", &secrets);
        assert_eq!(text, "key <redacted> and <redacted>, again <redacted>");
    }
}
