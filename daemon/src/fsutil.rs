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

/// Sets mode 0700 on `dir` when it is open to others, `own` marks it as the daemon's own
/// directory, it is owned by `owner_uid` and it is not a shared sticky directory such as
/// `/tmp`; otherwise only reports it. The control socket's directory gets this treatment
/// once the socket exists.
pub fn tighten_private_dir(dir: &Path, owner_uid: Option<u32>, own: bool) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let metadata = std::fs::metadata(dir)?;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            return Ok(());
        }
        let sticky = mode & 0o1000 != 0;
        if !own || sticky || Some(metadata.uid()) != owner_uid {
            warn!(path = %dir.display(), mode = format!("{mode:o}"),
                "the control socket's directory is open to other users; the socket itself is \
                 0600, but a directory of its own (such as $XDG_RUNTIME_DIR/cco) is safer");
            return Ok(());
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        warn!(path = %dir.display(), old_mode = format!("{mode:o}"),
            "the control socket's directory was open to other users; set it to 0700");
        Ok(())
    }
    #[cfg(not(unix))]
    {
        let _ = (dir, owner_uid, own);
        Ok(())
    }
}

/// Reports a file that others can read, such as a config file, without changing it.
pub fn report_open_file(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = std::fs::metadata(path) {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                warn!(path = %path.display(), mode = format!("{mode:o}"),
                    "file is readable by other users; run 'chmod 600' on it");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
