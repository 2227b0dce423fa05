//! `ccoctl update`: check for, install or roll back a release through the daemon.
//!
//! The daemon does the work and replies once, at the end. On a terminal, `ccoctl` shows a
//! spinner on standard error while it waits, and during an install a progress bar of the
//! download, which it reads from the daemon over a second connection a few times a second.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cco_proto::{RestartMode, UpdateAction, UpdateReply, UpdateRequest};
use clap::Args;

use super::{to_json, unexpected_reply};
use crate::client::Client;
use crate::error::CtlError;
use crate::format::format_fields;

/// Minimum time `ccoctl update` waits for the reply of an install or rollback: the daemon's
/// download limit (`[updates] download_timeout`, 600 s by default) for the archive and its
/// checksum file, plus the smoke test.
pub const UPDATE_TIMEOUT_SECS: u64 = 1800;

#[derive(Debug, Args)]
#[command(
    after_help = "An install or rollback waits up to 30 minutes for the daemon's reply, \
                        or --timeout when that is longer. To restart, a ccod under systemd or \
                        launchd exits with code 75 for its service manager to start the new \
                        binary; one in the foreground replaces itself with it."
)]
pub struct UpdateArgs {
    /// Only report the running and the newest version; install nothing
    #[arg(long, conflicts_with = "rollback")]
    pub check: bool,

    /// Put back the binaries that the last update replaced (ccod.bak, ccoctl.bak)
    #[arg(long)]
    pub rollback: bool,

    /// Leave the daemon running on its old code after the binaries are replaced
    #[arg(long)]
    pub no_restart: bool,

    /// Print the daemon's reply as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(client: &Client, args: &UpdateArgs) -> Result<String, CtlError> {
    let action = if args.check {
        UpdateAction::Check
    } else if args.rollback {
        UpdateAction::Rollback
    } else {
        UpdateAction::Install
    };
    let request = cco_proto::Request::Update(UpdateRequest {
        action,
        restart: !args.no_restart,
    });
    let client = match action {
        UpdateAction::Check => client.clone(),
        UpdateAction::Install | UpdateAction::Rollback => {
            client.with_min_timeout(Duration::from_secs(UPDATE_TIMEOUT_SECS))
        }
    };
    let spinner = start_spinner(action);
    let done = Arc::new(AtomicBool::new(false));
    let poller = match (&spinner, action) {
        (Some(bar), UpdateAction::Install) => {
            let (bar, done, client) = (bar.clone(), done.clone(), client.clone());
            Some(std::thread::spawn(move || {
                show_download(&bar, &done, &client)
            }))
        }
        _ => None,
    };
    let result = client.send(request);
    done.store(true, Ordering::Relaxed);
    if let Some(poller) = poller {
        let _ = poller.join();
    }
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    match result? {
        cco_proto::Response::Update(reply) if args.json => Ok(to_json(&reply)),
        cco_proto::Response::Update(reply) => Ok(render(&reply)),
        other => Err(unexpected_reply(&client, "update", &other)),
    }
}

fn start_spinner(action: UpdateAction) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let message = match action {
        UpdateAction::Check => "checking the release feed",
        UpdateAction::Install => "ccod is downloading, verifying and installing the update",
        UpdateAction::Rollback => "ccod is restoring the backups",
    };
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(message);
    spinner.enable_steady_tick(Duration::from_millis(100));
    Some(spinner)
}

/// Turns the spinner into a byte progress bar while the daemon downloads the archive.
/// Polling stops at the first failed request: the bar is a convenience, the reply is what
/// counts.
fn show_download(bar: &indicatif::ProgressBar, done: &AtomicBool, client: &Client) {
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} downloading {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}, {eta} left",
    )
    .map(|style| style.progress_chars("=> "));
    let mut showing_bytes = false;
    while !done.load(Ordering::Relaxed) {
        let progress = match client.send(cco_proto::Request::UpdateProgress) {
            Ok(cco_proto::Response::UpdateProgress(progress)) => progress,
            _ => return,
        };
        if progress.downloading && progress.total_bytes > 0 {
            if !showing_bytes {
                if let Ok(style) = &style {
                    bar.set_style(style.clone());
                }
                bar.set_length(progress.total_bytes);
                showing_bytes = true;
            }
            bar.set_position(progress.received_bytes.min(progress.total_bytes));
        } else if showing_bytes && !progress.downloading {
            bar.set_style(indicatif::ProgressStyle::default_spinner());
            bar.set_message("ccod is verifying and installing the update");
            showing_bytes = false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn render(reply: &UpdateReply) -> String {
    match reply.action {
        UpdateAction::Check => render_check(reply),
        UpdateAction::Install => render_install(reply),
        UpdateAction::Rollback => render_rollback(reply),
    }
}

fn render_check(reply: &UpdateReply) -> String {
    let latest = match &reply.latest_version {
        Some(version) => version.clone(),
        None => format!("none (the feed lists no {} release)", reply.channel),
    };
    let available = if reply.update_available {
        "yes: install it with 'ccoctl update'"
    } else {
        "no"
    };
    format_fields(&[
        ("running version", reply.running_version.clone()),
        ("latest version", latest),
        ("channel", reply.channel.clone()),
        ("update available", available.to_owned()),
        ("install dir", reply.install_dir.clone()),
    ])
}

fn render_install(reply: &UpdateReply) -> String {
    let Some(installed) = &reply.installed_version else {
        return match &reply.latest_version {
            Some(latest) => format!(
                "nothing to install: the newest {} release, {latest}, is not newer than the \
                 installed ccod (running {})\n",
                reply.channel, reply.running_version
            ),
            None => format!(
                "nothing to install: the feed lists no {} release (running {})\n",
                reply.channel, reply.running_version
            ),
        };
    };
    format!(
        "installed ccod and ccoctl {installed} in {}; the replaced ones are ccod.bak and \
         ccoctl.bak (undo with 'ccoctl update --rollback')\n{}",
        reply.install_dir,
        restart_line(reply.restart, installed)
    )
}

fn render_rollback(reply: &UpdateReply) -> String {
    let installed = reply.installed_version.as_deref().unwrap_or("unknown");
    format!(
        "restored ccod and ccoctl {installed} from the backups in {}; the replaced ones are \
         the new backups\n{}",
        reply.install_dir,
        restart_line(reply.restart, installed)
    )
}

fn restart_line(restart: RestartMode, version: &str) -> String {
    match restart {
        RestartMode::None => {
            format!("ccod keeps running its old code: restart it to run {version}\n")
        }
        RestartMode::Reexec => format!("ccod is restarting into {version}\n"),
        RestartMode::ServiceManager { exit_code } => format!(
            "ccod exits with code {exit_code} so that its service manager starts {version}\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(action: UpdateAction) -> UpdateReply {
        UpdateReply {
            action,
            running_version: "0.1.0".into(),
            channel: "stable".into(),
            latest_version: Some("0.2.0".into()),
            update_available: true,
            installed_version: None,
            install_dir: "/opt/cco/bin".into(),
            restart: RestartMode::None,
        }
    }

    #[test]
    fn check_names_both_versions() {
        let text = render(&reply(UpdateAction::Check));
        let expected = "\
running version:  0.1.0
latest version:   0.2.0
channel:          stable
update available: yes: install it with 'ccoctl update'
install dir:      /opt/cco/bin
";
        assert_eq!(text, expected);
    }

    #[test]
    fn check_without_release() {
        let mut reply = reply(UpdateAction::Check);
        reply.latest_version = None;
        reply.update_available = false;
        let text = render(&reply);
        assert!(
            text.contains("latest version:   none (the feed lists no stable release)\n"),
            "{text}"
        );
        assert!(text.contains("update available: no\n"), "{text}");
    }

    #[test]
    fn install_up_to_date() {
        let mut reply = reply(UpdateAction::Install);
        reply.latest_version = Some("0.1.0".into());
        reply.update_available = false;
        assert_eq!(
            render(&reply),
            "nothing to install: the newest stable release, 0.1.0, is not newer than the \
             installed ccod (running 0.1.0)\n"
        );
    }

    #[test]
    fn install_names_restart() {
        let mut reply = reply(UpdateAction::Install);
        reply.installed_version = Some("0.2.0".into());
        reply.restart = RestartMode::ServiceManager { exit_code: 75 };
        let text = render(&reply);
        assert!(
            text.starts_with("installed ccod and ccoctl 0.2.0 in /opt/cco/bin;"),
            "{text}"
        );
        assert!(
            text.ends_with("ccod exits with code 75 so that its service manager starts 0.2.0\n"),
            "{text}"
        );
        reply.restart = RestartMode::None;
        assert!(render(&reply).ends_with("restart it to run 0.2.0\n"));
    }

    #[test]
    fn rollback_names_version() {
        let mut reply = reply(UpdateAction::Rollback);
        reply.installed_version = Some("0.1.0".into());
        reply.restart = RestartMode::Reexec;
        let text = render(&reply);
        assert!(
            text.starts_with("restored ccod and ccoctl 0.1.0 from the backups in /opt/cco/bin"),
            "{text}"
        );
        assert!(text.ends_with("ccod is restarting into 0.1.0\n"), "{text}");
    }
}
