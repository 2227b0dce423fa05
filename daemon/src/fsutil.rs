//! File-system helpers that keep the daemon's files private to its user.

use std::io;
use std::path::Path;

use tracing::warn;

/// Creates `dir` and its missing parents with mode 0700. An existing directory that
/// others can read or enter is left as it is and reported, because it may be shared on
/// purpose (such as `/tmp`).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if dir.is_dir() {
            let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                warn!(path = %dir.display(), mode = format!("{mode:o}"),
                    "directory is open to other users; run 'chmod 700' on it");
            }
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Sets mode 0600 on a file the daemon created and returns its owner's user id, which is
/// the daemon's effective user id. Returns `None` where the platform has no such notion.
pub fn restrict_file(path: &Path) -> io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Some(std::fs::metadata(path)?.uid()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}
