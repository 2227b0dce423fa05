//! Runs the real `ccod` and `ccoctl` binaries for end-to-end tests.
//!
//! Each [`DaemonProcess`] gets its own temporary data directory, socket and log file and
//! listens on a port the kernel picks; the test learns the port from the `listening` log
//! line. The binaries come from the same target directory as the test executable, where
//! `cargo test --workspace` builds them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Time a daemon gets to start or stop.
const PROCESS_DEADLINE: Duration = Duration::from_secs(20);

/// Path of a binary built by this workspace, next to the test executable's directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe
        .parent()
        .expect("test executable directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with 'cargo test --workspace', which builds it",
        path.display()
    );
    path
}

/// Where a daemon keeps its files; reused across restarts.
pub struct DaemonDirs {
    pub root: tempfile::TempDir,
}

impl DaemonDirs {
    pub fn new() -> Self {
        Self {
            root: tempfile::tempdir().expect("temporary directory"),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn socket(&self) -> PathBuf {
        self.root.path().join("run").join("ccod.sock")
    }

    pub fn log_file(&self) -> PathBuf {
        self.root.path().join("ccod.log")
    }

    pub fn config_file(&self) -> PathBuf {
        self.root.path().join("config.toml")
    }
}

impl Default for DaemonDirs {
    fn default() -> Self {
        Self::new()
    }
}

/// Options of one daemon start.
#[derive(Clone, Debug, Default)]
pub struct DaemonOptions {
    /// Base URL of the Anthropic upstream.
    pub upstream: String,
    /// Base URL of the OpenAI upstream; `None` uses `upstream` too, so that no test request
    /// can leave the machine.
    pub openai_upstream: Option<String>,
    pub extra_args: Vec<String>,
    /// Environment variables set for the daemon, such as `ANTHROPIC_API_KEY`.
    pub env: Vec<(String, String)>,
    /// Value of `--log-level`, or `debug` when unset.
    pub log_level: Option<String>,
    /// A command that runs `ccod`, such as `setpriv --reuid 65534`; empty runs it directly.
    pub wrapper: Vec<String>,
}

impl DaemonOptions {
    pub fn new(upstream: &str) -> Self {
        Self {
            upstream: upstream.to_owned(),
            ..Self::default()
        }
    }

    pub fn openai_upstream(mut self, url: &str) -> Self {
        self.openai_upstream = Some(url.to_owned());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_owned());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = Some(level.to_owned());
        self
    }

    pub fn wrapped_by(mut self, command: &[&str]) -> Self {
        self.wrapper = command.iter().map(|part| (*part).to_owned()).collect();
        self
    }
}

/// A running `ccod` child process.
pub struct DaemonProcess {
    pub child: Child,
    pub addr: SocketAddr,
    socket: PathBuf,
    log_file: PathBuf,
}

impl DaemonProcess {
    /// Starts `ccod` on `dirs` and waits until it listens.
    pub fn start(dirs: &DaemonDirs, options: &DaemonOptions) -> Self {
        let log_file = dirs.log_file();
        let start_offset = std::fs::metadata(&log_file).map_or(0, |meta| meta.len());
        let mut command = match options.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary("ccod"));
                command
            }
            None => Command::new(binary("ccod")),
        };
        // A test may give its own --socket; the harness then talks to that one.
        let socket = options
            .extra_args
            .iter()
            .position(|arg| arg == "--socket")
            .and_then(|index| options.extra_args.get(index + 1))
            .map_or_else(|| dirs.socket(), PathBuf::from);
        command
            .arg("--port")
            .arg("0")
            .arg("--data-dir")
            .arg(dirs.data_dir());
        if !options.extra_args.iter().any(|arg| arg == "--socket") {
            command.arg("--socket").arg(dirs.socket());
        }
        command
            .arg("--log-file")
            .arg(&log_file)
            .arg("--log-level")
            .arg(options.log_level.as_deref().unwrap_or("debug"))
            .arg("--anthropic-base-url")
            .arg(&options.upstream)
            .arg("--openai-base-url")
            .arg(
                options
                    .openai_upstream
                    .as_ref()
                    .unwrap_or(&options.upstream),
            )
            .args(&options.extra_args)
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("OPENAI_API_KEY")
            .env_remove("CCO_SOCKET")
            .env("CCO_CONFIG", dirs.config_file())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !dirs.config_file().exists() {
            std::fs::write(dirs.config_file(), "").expect("empty config file");
        }
        for (name, value) in &options.env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("ccod starts");
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            if let Some(addr) = listening_addr(&log_file, start_offset) {
                return Self {
                    child,
                    addr,
                    socket,
                    log_file,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(pipe) = child.stderr.take() {
                    let _ = BufReader::new(pipe).read_line(&mut stderr);
                }
                panic!("ccod exited during start-up with {status}: {stderr}");
            }
            assert!(
                Instant::now() < deadline,
                "ccod did not start listening in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `ccoctl` against this daemon's socket.
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.socket, args)
    }

    /// Returns the daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// Stops the daemon with `ccoctl shutdown` and returns its exit code.
    pub fn shutdown(mut self) -> Option<i32> {
        let output = self.ctl(&["shutdown"]);
        assert!(
            output.status.success(),
            "ccoctl shutdown failed: {output:?}"
        );
        self.wait_exit()
    }

    /// Sends SIGTERM and returns the exit code.
    #[cfg(unix)]
    pub fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            status.is_ok_and(|status| status.success()),
            "kill -TERM failed"
        );
        self.wait_exit()
    }

    /// Kills the daemon without warning, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the daemon to exit by itself and returns its exit code.
    pub fn wait_for_exit(mut self) -> Option<i32> {
        self.wait_exit()
    }

    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ccod did not exit in time");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `ccoctl --socket SOCKET ARGS...`.
pub fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(binary("ccoctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("CCO_SOCKET")
        .stdin(Stdio::null())
        .output()
        .expect("ccoctl runs")
}

/// Finds `addr=IP:PORT` on the `listening` line written after `offset`.
fn listening_addr(log_file: &Path, offset: u64) -> Option<SocketAddr> {
    let text = std::fs::read(log_file).ok()?;
    let text = String::from_utf8_lossy(text.get(offset as usize..)?);
    let line = text.lines().find(|line| line.contains(" listening "))?;
    let start = line.find("addr=")? + "addr=".len();
    line[start..].split_whitespace().next()?.parse().ok()
}
