//! Where the control socket lives.
//!
//! The rule: `$CCO_SOCKET` when set; otherwise `ccod.sock` in the per-user runtime directory
//! that `directories` gives (`$XDG_RUNTIME_DIR/cco` on Linux); where there is none, as on
//! macOS, in the per-user cache directory (`~/Library/Caches/cco` on macOS). The daemon
//! creates the directory 0700 and the socket 0600. On Windows the file name is used as the
//! name of a named pipe.

use std::path::PathBuf;

/// Environment variable that overrides the socket path for both `ccod` and `ccoctl`.
pub const SOCKET_ENV: &str = "CCO_SOCKET";

/// File name of the socket inside its directory.
pub const SOCKET_FILE_NAME: &str = "ccod.sock";

/// Socket path from [`SOCKET_ENV`], when it is set and not empty.
pub fn socket_path_from_env() -> Option<PathBuf> {
    std::env::var_os(SOCKET_ENV)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
}

/// Socket path by the rule above, or `None` when the platform reports no home directory.
pub fn default_socket_path() -> Option<PathBuf> {
    if let Some(path) = socket_path_from_env() {
        return Some(path);
    }
    let dirs = directories::ProjectDirs::from("", "", "cco")?;
    let dir = dirs
        .runtime_dir()
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs.cache_dir().to_path_buf());
    Some(dir.join(SOCKET_FILE_NAME))
}
