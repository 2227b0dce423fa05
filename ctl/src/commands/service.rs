//! `ccoctl service install | uninstall | status`: the systemd unit or launchd agent that
//! runs `ccod`.
//!
//! The files are the ones shipped in `systemd/` and `launchd/`, with the absolute path of
//! the installed `ccod` filled in. `ccoctl` writes or removes the file and prints the
//! command that loads it; it never runs `systemctl` or `launchctl` itself.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::error::CtlError;
use crate::format::format_fields;

const USER_UNIT: &str = include_str!("../../../systemd/ccod.service");
const SYSTEM_UNIT: &str = include_str!("../../../systemd/ccod-system.service");
const LAUNCH_AGENT: &str = include_str!("../../../launchd/dev.cco.ccod.plist");

/// Environment variable that overrides the directory the service file goes to.
pub const SERVICE_DIR_ENV: &str = "CCO_SERVICE_DIR";

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write the service file with the path of the installed ccod and print how to start it
    Install(InstallArgs),
    /// Remove the service file; stop the service first (the printed command shows how)
    Uninstall(TargetArgs),
    /// Say whether the service file is installed, where, and which ccod it runs
    Status(TargetArgs),
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Use the system-wide systemd unit, run as the user 'cco', instead of the per-user one
    #[arg(long)]
    pub system: bool,

    /// Directory of the service file [default: ~/.config/systemd/user,
    /// /etc/systemd/system with --system, ~/Library/LaunchAgents on macOS]
    #[arg(long, env = SERVICE_DIR_ENV, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// The ccod binary the service runs [default: ccod beside this ccoctl]
    #[arg(long, value_name = "PATH")]
    pub ccod: Option<PathBuf>,
}

/// The kind of service file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    SystemdUser,
    SystemdSystem,
    Launchd,
}

impl Kind {
    fn select(system: bool) -> Result<Self, CtlError> {
        match (cfg!(target_os = "macos"), system) {
            (true, true) => Err(CtlError::Usage(
                "--system is for systemd; on macOS, ccod runs as a per-user LaunchAgent".to_owned(),
            )),
            (true, false) => Ok(Kind::Launchd),
            (false, true) => Ok(Kind::SystemdSystem),
            (false, false) => Ok(Kind::SystemdUser),
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Kind::SystemdUser | Kind::SystemdSystem => "ccod.service",
            Kind::Launchd => "dev.cco.ccod.plist",
        }
    }

    fn default_dir(self) -> Option<PathBuf> {
        let dirs = directories::BaseDirs::new();
        match self {
            Kind::SystemdUser => dirs.map(|dirs| dirs.config_dir().join("systemd").join("user")),
            Kind::SystemdSystem => Some(PathBuf::from("/etc/systemd/system")),
            Kind::Launchd => dirs.map(|dirs| dirs.home_dir().join("Library").join("LaunchAgents")),
        }
    }

    fn start_command(self, file: &Path) -> String {
        match self {
            Kind::SystemdUser => {
                "systemctl --user daemon-reload && systemctl --user enable --now ccod".to_owned()
            }
            Kind::SystemdSystem => "useradd --system --home-dir /var/lib/cco --shell \
                                    /usr/sbin/nologin cco   # once, if the user does not exist\n  \
                                    systemctl daemon-reload && systemctl enable --now ccod"
                .to_owned(),
            Kind::Launchd => format!("launchctl bootstrap gui/$(id -u) {}", file.display()),
        }
    }

    fn stop_command(self) -> &'static str {
        match self {
            Kind::SystemdUser => "systemctl --user disable --now ccod",
            Kind::SystemdSystem => "systemctl disable --now ccod",
            Kind::Launchd => "launchctl bootout gui/$(id -u)/dev.cco.ccod",
        }
    }

    fn reload_command(self) -> Option<&'static str> {
        match self {
            Kind::SystemdUser => Some("systemctl --user daemon-reload"),
            Kind::SystemdSystem => Some("systemctl daemon-reload"),
            Kind::Launchd => None,
        }
    }
}

pub fn run(command: &ServiceCommand) -> Result<String, CtlError> {
    match command {
        ServiceCommand::Install(args) => install(args),
        ServiceCommand::Uninstall(args) => uninstall(args),
        ServiceCommand::Status(args) => status(args),
    }
}

fn target(args: &TargetArgs) -> Result<(Kind, PathBuf), CtlError> {
    let kind = Kind::select(args.system)?;
    let dir = args
        .dir
        .clone()
        .filter(|dir| !dir.as_os_str().is_empty())
        .or_else(|| kind.default_dir())
        .ok_or_else(|| {
            CtlError::Usage(format!(
                "cannot place the service file because no home directory is known: pass \
                 --dir DIR or set {SERVICE_DIR_ENV}"
            ))
        })?;
    Ok((kind, dir.join(kind.file_name())))
}

fn install(args: &InstallArgs) -> Result<String, CtlError> {
    let (kind, file) = target(&args.target)?;
    let ccod = ccod_path(args.ccod.as_deref())?;
    let text = render(kind, &ccod)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|err| write_error(&file, err))?;
    // Written beside the target and renamed, so a reader never sees half a file.
    let partial = dir.join(format!(".{}.partial", kind.file_name()));
    fs::write(&partial, text).map_err(|err| write_error(&file, err))?;
    fs::rename(&partial, &file).map_err(|err| {
        let _ = fs::remove_file(&partial);
        write_error(&file, err)
    })?;
    Ok(format!(
        "wrote {} to run {}\nit is not started yet; start it with:\n  {}\n",
        file.display(),
        ccod.display(),
        kind.start_command(&file)
    ))
}

fn uninstall(args: &TargetArgs) -> Result<String, CtlError> {
    let (kind, file) = target(args)?;
    match fs::remove_file(&file) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Ok(format!(
                "no service file at {}; nothing removed\n",
                file.display()
            ))
        }
        Err(err) => {
            return Err(CtlError::Usage(format!(
                "cannot remove {}: {err}; check its permissions (--system needs root)",
                file.display()
            )))
        }
    }
    let mut text = format!(
        "removed {}\nif the service still runs, stop it with:\n  {}\n",
        file.display(),
        kind.stop_command()
    );
    if let Some(reload) = kind.reload_command() {
        text.push_str(&format!("then run:\n  {reload}\n"));
    }
    Ok(text)
}

fn status(args: &TargetArgs) -> Result<String, CtlError> {
    let (kind, file) = target(args)?;
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Ok(format_fields(&[
                ("installed", "no".to_owned()),
                ("file", file.display().to_string()),
            ]))
        }
        Err(err) => {
            return Err(CtlError::Usage(format!(
                "cannot read {}: {err}",
                file.display()
            )))
        }
    };
    let program = match kind {
        Kind::SystemdUser | Kind::SystemdSystem => text
            .lines()
            .find_map(|line| line.strip_prefix("ExecStart="))
            .map(|command| command.split_whitespace().next().unwrap_or("").to_owned()),
        Kind::Launchd => plist_program(&text),
    };
    Ok(format_fields(&[
        ("installed", "yes".to_owned()),
        ("file", file.display().to_string()),
        ("runs", program.unwrap_or_else(|| "unknown".to_owned())),
    ]))
}

fn write_error(file: &Path, err: io::Error) -> CtlError {
    CtlError::Usage(format!(
        "cannot write {}: {err}; check the directory's permissions (--system needs root) or \
         pass --dir",
        file.display()
    ))
}

/// The absolute path of the `ccod` to run, which must exist.
fn ccod_path(explicit: Option<&Path>) -> Result<PathBuf, CtlError> {
    let candidate = match explicit {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("ccod")))
            .ok_or_else(|| {
                CtlError::Usage("cannot find this ccoctl's directory: pass --ccod PATH".to_owned())
            })?,
    };
    let resolved = fs::canonicalize(&candidate).map_err(|err| {
        CtlError::Usage(format!(
            "cannot find ccod at {}: {err}; pass --ccod PATH",
            candidate.display()
        ))
    })?;
    if !resolved.is_file() {
        return Err(CtlError::Usage(format!(
            "{} is not a file: pass --ccod PATH",
            resolved.display()
        )));
    }
    Ok(resolved)
}

/// Fills the shipped file of `kind` in with `ccod`.
fn render(kind: Kind, ccod: &Path) -> Result<String, CtlError> {
    let path = ccod
        .to_str()
        .ok_or_else(|| CtlError::Usage(format!("{} is not valid UTF-8", ccod.display())))?;
    match kind {
        Kind::SystemdUser => render_systemd(USER_UNIT, path, true),
        Kind::SystemdSystem => render_systemd(SYSTEM_UNIT, path, false),
        Kind::Launchd => Ok(render_plist(path)),
    }
}

/// Replaces the program of `ExecStart=` and the header comment. For the user unit, also
/// adds the binary's directory to `ReadWritePaths=`, because `ProtectSystem=strict` makes
/// everything else read-only and the self-updater replaces the binaries there.
fn render_systemd(
    template: &str,
    ccod: &str,
    writable_install_dir: bool,
) -> Result<String, CtlError> {
    if ccod
        .chars()
        .any(|char| char.is_whitespace() || matches!(char, '"' | '\'' | '\\' | '%'))
    {
        return Err(CtlError::Usage(format!(
            "the ccod path '{ccod}' contains a space, quote, backslash or '%', which a \
             systemd unit would need escaped: install ccod under a plain path and pass --ccod"
        )));
    }
    let install_dir = Path::new(ccod)
        .parent()
        .map_or_else(String::new, |dir| dir.display().to_string());
    let mut text = format!(
        "# Generated by 'ccoctl service install' for {ccod}.\n\
         # Remove it with 'ccoctl service uninstall'.\n"
    );
    for line in template.lines().skip_while(|line| line.starts_with('#')) {
        if let Some(command) = line.strip_prefix("ExecStart=") {
            let arguments = command.split_once(' ').map_or("", |(_, rest)| rest);
            text.push_str(format!("ExecStart={ccod} {arguments}").trim_end());
        } else if line.starts_with("ReadWritePaths=") && writable_install_dir {
            text.push_str(&format!("{line} {install_dir}"));
        } else {
            text.push_str(line);
        }
        text.push('\n');
    }
    Ok(text)
}

fn render_plist(ccod: &str) -> String {
    let escaped = ccod
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let mut text = LAUNCH_AGENT.replace(
        "<string>/usr/local/bin/ccod</string>",
        &format!("<string>{escaped}</string>"),
    );
    if let (Some(start), Some(end)) = (text.find("<!--"), text.find("-->")) {
        let comment = "<!-- Generated by 'ccoctl service install'; remove it with 'ccoctl service \
             uninstall'. -->";
        text.replace_range(start..end + "-->".len(), comment);
    }
    text
}

/// Returns the first `ProgramArguments` string of a plist.
fn plist_program(text: &str) -> Option<String> {
    let after = &text[text.find("<key>ProgramArguments</key>")?..];
    let start = after.find("<string>")? + "<string>".len();
    let end = after[start..].find("</string>")? + start;
    Some(after[start..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_unit_runs_given_binary() {
        let text = render_systemd(USER_UNIT, "/opt/cco/bin/ccod", true).unwrap();
        assert!(text.contains("\nExecStart=/opt/cco/bin/ccod\n"), "{text}");
        assert!(
            text.contains("ReadWritePaths=%h/.local/share/cco %h/.config/cco %t /opt/cco/bin\n"),
            "{text}"
        );
        assert!(text.contains("\nType=notify\n"), "{text}");
        assert!(text.contains("\nNoNewPrivileges=yes\n"), "{text}");
        assert!(text.contains("\nProtectSystem=strict\n"), "{text}");
        assert!(
            text.starts_with("# Generated by 'ccoctl service install' for /opt/cco/bin/ccod.\n")
        );
        assert!(!text.contains(".cargo/bin"), "{text}");
    }

    #[test]
    fn system_unit_keeps_arguments() {
        let text = render_systemd(SYSTEM_UNIT, "/usr/bin/ccod", false).unwrap();
        assert!(
            text.contains(
                "\nExecStart=/usr/bin/ccod --data-dir /var/lib/cco --socket /run/cco/ccod.sock\n"
            ),
            "{text}"
        );
        assert!(text.contains("\nUser=cco\n"), "{text}");
        assert!(!text.contains("/usr/local/bin"), "{text}");
    }

    #[test]
    fn unit_rejects_paths_needing_escapes() {
        for path in ["/opt/my apps/ccod", "/opt/100%/ccod", "/opt/\"x\"/ccod"] {
            assert!(render_systemd(USER_UNIT, path, true).is_err(), "{path}");
        }
    }

    #[test]
    fn plist_runs_given_binary() {
        let text = render_plist("/Users/a&b/bin/ccod");
        assert!(
            text.contains("<string>/Users/a&amp;b/bin/ccod</string>"),
            "{text}"
        );
        assert!(!text.contains("/usr/local/bin/ccod"), "{text}");
        assert_eq!(
            plist_program(&text).as_deref(),
            Some("/Users/a&amp;b/bin/ccod")
        );
        assert!(text.contains("<key>KeepAlive</key>"), "{text}");
    }
}
