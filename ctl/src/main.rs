//! `ccoctl`, the control CLI of the CCO daemon `ccod`.

mod cli;
mod client;
mod commands;
mod error;
mod format;
mod time_bound;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::client::Client;
use crate::error::{CtlError, EXIT_FAILURE};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return exit_for_cli_error(&err),
    };
    match run(&cli) {
        Ok(output) => write_stdout(&output),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
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
            let command = <Cli as clap::CommandFactory>::command();
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

fn run(cli: &Cli) -> Result<String, CtlError> {
    // Service files are local; they need neither a socket nor a running daemon.
    if let Command::Service(command) = &cli.command {
        return commands::service::run(command);
    }
    let socket = resolve_socket(cli.socket.clone())?;
    let client = Client::new(socket, Duration::from_secs(cli.timeout));
    match &cli.command {
        Command::Status(args) => commands::status::run(&client, args),
        Command::Stats(args) => commands::stats::run(&client, args),
        Command::Pricing(args) => commands::pricing::run(&client, args),
        Command::Cache(command) => commands::cache::run(&client, command),
        Command::Config => commands::config::run(&client),
        Command::Shutdown => commands::shutdown::run(&client),
        Command::Update(args) => commands::update::run(&client, args),
        Command::Service(command) => commands::service::run(command),
    }
}

/// Picks the socket from `--socket` or `CCO_SOCKET`, an empty value counting as unset, or
/// else the default path that ccod uses.
fn resolve_socket(flag: Option<PathBuf>) -> Result<PathBuf, CtlError> {
    flag.filter(|path| !path.as_os_str().is_empty())
        .or_else(cco_proto::default_socket_path)
        .ok_or_else(|| {
            CtlError::Usage(
                "cannot place the ccod socket because no home directory is known: pass \
                 --socket PATH or set CCO_SOCKET"
                    .to_owned(),
            )
        })
}

/// Prints the command's output. A closed pipe, as in `ccoctl stats | head -1`, is not a
/// failure of the command.
fn write_stdout(output: &str) -> ExitCode {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: cannot write to stdout: {error}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
