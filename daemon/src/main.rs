//! The `ccod` binary: parses flags, installs logging and runs the daemon.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match ccod::config::Args::try_parse() {
        Ok(args) => args,
        Err(err) => return exit_for_cli_error(&err),
    };
    let config = match ccod::config::Config::resolve(&args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("ccod: {err}");
            return ExitCode::from(2);
        }
    };
    if args.test_config {
        if let Err(err) = ccod::check_startable(&config) {
            eprintln!("ccod: {err:#}");
            return ExitCode::from(2);
        }
        println!("# effective configuration; the configuration is valid");
        print!("{}", config.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    let _log_guard = match ccod::logging::init(&config.log_level, config.log_file.as_deref()) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("ccod: {err:#}");
            return ExitCode::from(2);
        }
    };
    let provider_keys = config
        .providers
        .iter()
        .filter_map(|provider| provider.api_key.as_ref());
    let secrets = config
        .anthropic_api_key
        .iter()
        .chain(&config.openai_api_key)
        .chain(provider_keys)
        .map(|key| key.expose().to_owned());
    ccod::logging::install_redacting_panic_hook(secrets.collect());
    let system = actix_rt::System::new();
    match system.block_on(ccod::run(config)) {
        Ok(ccod::Stopped::Normally) => ExitCode::SUCCESS,
        Ok(ccod::Stopped::ForRestart(restart)) => {
            drop(system);
            // Buffered log lines are written before the process exits or is replaced.
            drop(_log_guard);
            match restart.execute() {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
                Err(err) => {
                    eprintln!("ccod: cannot restart after the update: {err}; start ccod again");
                    ExitCode::FAILURE
                }
            }
        }
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "ccod failed");
            eprintln!("ccod: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a command-line error as clap does, plus the environment variable behind the value
/// when the flag was not typed, and returns clap's exit code.
fn exit_for_cli_error(err: &clap::Error) -> ExitCode {
    let hint = err
        .get(clap::error::ContextKind::InvalidArg)
        .and_then(|arg| {
            let argv: Vec<String> = std::env::args().collect();
            let command = <ccod::config::Args as clap::CommandFactory>::command();
            cco_proto::env_source_hint(&arg.to_string(), &argv, |name| {
                declares_env(&command, name) && std::env::var_os(name).is_some()
            })
        });
    let _ = err.print();
    if let Some(hint) = hint {
        eprintln!("{hint}");
    }
    ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2))
}

/// Returns true when an argument of `command` or of one of its subcommands reads `name`.
fn declares_env(command: &clap::Command, name: &str) -> bool {
    command
        .get_arguments()
        .any(|arg| arg.get_env().is_some_and(|env| env == name))
        || command
            .get_subcommands()
            .any(|subcommand| declares_env(subcommand, name))
}
