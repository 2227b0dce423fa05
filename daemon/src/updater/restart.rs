//! Restarting into new binaries once the daemon has stopped.
//!
//! Under a service manager the daemon exits with [`SERVICE_RESTART_EXIT_CODE`]: the
//! shipped systemd units use `Restart=on-failure` and the launchd plist
//! `KeepAlive { SuccessfulExit = false }`, and both restart a service that exits with a
//! non-zero code. In the foreground the daemon replaces itself with the new binary through
//! `exec`, keeping its process id, arguments and environment.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cco_proto::RestartMode;

/// Exit code that requests a restart from the service manager: `EX_TEMPFAIL` of `sysexits.h`,
/// a temporary failure whose retry is expected to succeed. It is non-zero on purpose,
/// because `Restart=on-failure` does not restart a service that exits 0.
pub const SERVICE_RESTART_EXIT_CODE: i32 = 75;

/// A restart that `ccod`'s `main` carries out after the daemon has stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    /// Replace the process with `program`, the newly installed `ccod`.
    Reexec { program: PathBuf },
    /// Exit with `code` for the service manager to start the new binary.
    Exit { code: i32 },
}

/// Slot in which the updater leaves the restart for `main` to carry out.
pub type RestartSlot = Arc<Mutex<Option<Restart>>>;

/// Tells from the environment how this process restarts: systemd sets `INVOCATION_ID` for
/// every service it starts, launchd sets `XPC_SERVICE_NAME` to the job's label.
pub fn detect_mode() -> RestartMode {
    let set = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    // macOS Terminal sessions carry XPC_SERVICE_NAME=0, which names no launchd job.
    let launchd = set("XPC_SERVICE_NAME").is_some_and(|value| value != "0");
    if set("INVOCATION_ID").is_some() || launchd {
        RestartMode::ServiceManager {
            exit_code: SERVICE_RESTART_EXIT_CODE,
        }
    } else {
        RestartMode::Reexec
    }
}

impl Restart {
    /// Carries out the restart. Returns the exit code for `main` when the process exits
    /// instead of being replaced, or the error of a failed `exec`.
    pub fn execute(self) -> Result<i32, std::io::Error> {
        match self {
            Restart::Exit { code } => Ok(code),
            Restart::Reexec { program } => reexec(program),
        }
    }
}

#[cfg(unix)]
fn reexec(program: PathBuf) -> Result<i32, std::io::Error> {
    use std::os::unix::process::CommandExt;
    let error = std::process::Command::new(&program)
        .args(std::env::args_os().skip(1))
        .exec();
    Err(std::io::Error::new(
        error.kind(),
        format!("cannot run {}: {error}", program.display()),
    ))
}

#[cfg(not(unix))]
fn reexec(program: PathBuf) -> Result<i32, std::io::Error> {
    Err(std::io::Error::other(format!(
        "restarting in place is not supported on this platform; start {} again",
        program.display()
    )))
}
