//! The `ccod` binary: parses flags, installs logging and runs the daemon.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = ccod::config::Args::parse();
    let config = match ccod::config::Config::resolve(&args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("ccod: {err}");
            return ExitCode::from(2);
        }
    };
    if args.test_config {
        println!("# effective configuration; the configuration is valid");
        print!("{}", config.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    if let Err(err) = ccod::logging::init(&config.log_level, config.log_file.as_deref()) {
        eprintln!("ccod: {err:#}");
        return ExitCode::from(2);
    }
    let system = actix_rt::System::new();
    match system.block_on(ccod::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "ccod failed");
            eprintln!("ccod: {err:#}");
            ExitCode::FAILURE
        }
    }
}
