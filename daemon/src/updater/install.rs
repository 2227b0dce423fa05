//! File-system side of an install or rollback: the private staging directory, unpacking
//! and checking the archive, the smoke test, and the swap of the binaries.
//!
//! Everything happens in a staging directory inside the install directory, so that the
//! final renames stay on one file system and are atomic. Until the swap, the installed
//! files are only read. The swap renames both binaries into place and, when the second
//! rename fails, puts the first one back. The staging directory is removed when
//! [`Staging`] is dropped, on success and on every failure.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use semver::Version;
use tracing::{error, warn};

use super::UpdateError;

/// Name prefix of staging directories. One left by a crashed earlier try is removed before
/// a new try starts, so that none of its files is reused.
// NOTE: two daemons that share one install directory would remove each other's staging
// directory mid-install; the busy flag guards only one process.
pub const STAGING_PREFIX: &str = ".ccod-update-";

/// The binaries a release archive must contain, replaced together.
pub const BINARIES: [&str; 2] = ["ccod", "ccoctl"];

/// Time the new `ccod --version` gets to exit.
const SMOKE_TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest total of decompressed archive bytes read, against archives that inflate
/// without bound.
const MAX_UNPACKED_BYTES: u64 = 1024 * 1024 * 1024;

/// Mode of a binary installed where none existed before.
const DEFAULT_MODE: u32 = 0o755;

/// A private (0700) directory inside the install directory, removed when dropped.
pub struct Staging {
    dir: tempfile::TempDir,
    install_dir: PathBuf,
}

impl Staging {
    /// Removes stale staging directories of earlier tries and creates a new one.
    pub fn create(install_dir: &Path) -> Result<Self, UpdateError> {
        let entries = fs::read_dir(install_dir)
            .map_err(|err| UpdateError::io("read the install directory", install_dir, err))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(STAGING_PREFIX) {
                continue;
            }
            let path = entry.path();
            warn!(actor = "updater", path = %path.display(),
                "removing a staging directory left by an earlier update; its files are not reused");
            let removed = if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if let Err(err) = removed {
                warn!(actor = "updater", path = %path.display(), error = %err,
                    "cannot remove the stale staging directory");
            }
        }

        let dir = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(install_dir)
            .map_err(|err| match err.kind() {
                io::ErrorKind::PermissionDenied => UpdateError::InstallDirNotWritable {
                    dir: install_dir.to_path_buf(),
                    source: err,
                },
                _ => UpdateError::io("create a staging directory in", install_dir, err),
            })?;
        set_mode(dir.path(), 0o700)?;
        Ok(Self {
            dir,
            install_dir: install_dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the path the archive `asset` is downloaded to.
    pub fn download_path(&self, asset: &str) -> PathBuf {
        self.path().join(format!("{asset}.part"))
    }

    /// Directory of the unpacked new binaries.
    pub fn unpacked_dir(&self) -> PathBuf {
        self.path().join("new")
    }
}

/// Unpacks `ccod` and `ccoctl` from the `.tar.gz` at `archive` into `dest`, which must not
/// exist. The binaries may sit at the archive's root or inside one top-level directory.
/// Any absolute path, `..` component, link or special file rejects the whole archive;
/// other regular files are skipped.
pub fn unpack(archive: &Path, asset: &str, dest: &Path) -> Result<(), UpdateError> {
    let invalid = |reason: String| UpdateError::InvalidArchive {
        asset: asset.to_owned(),
        reason,
    };
    let file = File::open(archive).map_err(|err| UpdateError::io("open", archive, err))?;
    create_private_dir(dest)?;
    let decoder = flate2::read::GzDecoder::new(BufReader::new(file));
    let mut tar = tar::Archive::new(decoder.take(MAX_UNPACKED_BYTES));
    let mut found = [false; BINARIES.len()];
    let entries = tar
        .entries()
        .map_err(|err| invalid(format!("cannot read it as tar.gz ({err})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|err| invalid(format!("cannot read an entry ({err})")))?;
        let path = entry
            .path()
            .map_err(|err| invalid(format!("an entry has an unreadable path ({err})")))?
            .into_owned();
        check_entry_path(&path).map_err(&invalid)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(invalid(format!("entry {} is a link", path.display())));
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            return Err(invalid(format!(
                "entry {} is not a regular file ({kind:?})",
                path.display()
            )));
        }
        let Some(index) = binary_index(&path) else {
            continue;
        };
        if found[index] {
            return Err(invalid(format!("it contains {} twice", BINARIES[index])));
        }
        found[index] = true;
        let target = dest.join(BINARIES[index]);
        let mut out = create_private_file(&target)?;
        io::copy(&mut entry, &mut out)
            .map_err(|err| invalid(format!("cannot unpack {} ({err})", path.display())))?;
        out.sync_all()
            .map_err(|err| UpdateError::io("write", &target, err))?;
    }
    for (name, present) in BINARIES.iter().zip(found) {
        if !present {
            return Err(invalid(format!("it has no {name}")));
        }
    }
    Ok(())
}

fn check_entry_path(path: &Path) -> Result<(), String> {
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(format!("entry {} contains '..'", path.display())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("entry {} is an absolute path", path.display()))
            }
        }
    }
    Ok(())
}

/// Index in [`BINARIES`] of an entry at the root or one directory deep.
fn binary_index(path: &Path) -> Option<usize> {
    let names: Vec<&OsStr> = path
        .components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    let name = match names.as_slice() {
        [name] | [_, name] => *name,
        _ => return None,
    };
    BINARIES
        .iter()
        .position(|binary| OsStr::new(binary) == name)
}

/// Runs `binary --version` and returns the version it prints as `ccod X.Y.Z`. With
/// `expected`, any other version is an error.
pub fn smoke_test(binary: &Path, expected: Option<&Version>) -> Result<Version, String> {
    let mut child = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run it ({err})"))?;
    let deadline = Instant::now() + SMOKE_TEST_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "it did not exit within {} s",
                    SMOKE_TEST_TIMEOUT.as_secs()
                ));
            }
            Err(err) => return Err(format!("cannot wait for it ({err})")),
        }
    };
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_string(&mut stdout);
    }
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let stderr: String = stderr.trim().chars().take(200).collect();
        return Err(format!("it exited with {status}: {stderr}"));
    }
    let first_line = stdout.lines().next().unwrap_or("").trim();
    let version = match first_line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["ccod", version] => Version::parse(version.trim_start_matches('v')).ok(),
        _ => None,
    };
    let Some(version) = version else {
        return Err(format!(
            "it printed '{}', expected 'ccod <version>'",
            first_line.chars().take(100).collect::<String>()
        ));
    };
    if let Some(expected) = expected.filter(|expected| **expected != version) {
        return Err(format!("it reports version {version}, expected {expected}"));
    }
    Ok(version)
}

/// One binary to put in place.
struct Replacement {
    /// The file to rename into place, inside the staging directory.
    staged: PathBuf,
    target: PathBuf,
    /// Copy of the file at `target` before the swap, inside the staging directory; `None`
    /// when there was none.
    previous: Option<PathBuf>,
    /// Path that `previous` is renamed to once the swap has succeeded.
    backup: PathBuf,
}

/// Source of a staged binary's permission bits.
#[derive(Clone, Copy)]
pub enum ModeSource {
    /// Those of the file it replaces, so an install keeps what the user set.
    Replaced,
    /// Its own, as copied from a backup.
    Staged,
}

/// Replaces `ccod` and `ccoctl` in the install directory with the files of the same name
/// in `source_dir`. The replaced files become `ccod.bak` and `ccoctl.bak`. Either both
/// binaries are replaced, or neither is.
pub fn swap_binaries(
    staging: &Staging,
    source_dir: &Path,
    modes: ModeSource,
) -> Result<(), UpdateError> {
    let mut replacements = Vec::new();
    for name in BINARIES {
        let target = staging.install_dir.join(name);
        let staged = source_dir.join(name);
        let previous = match fs::symlink_metadata(&target) {
            Ok(metadata) if metadata.file_type().is_file() => {
                let copy = staging.path().join(format!("{name}.previous"));
                fs::copy(&target, &copy).map_err(|err| UpdateError::io("back up", &target, err))?;
                Some((copy, permission_bits(&metadata)))
            }
            Ok(_) => {
                return Err(UpdateError::io(
                    "replace",
                    &target,
                    io::Error::other(
                        "it is not a regular file; set [updates] install_dir to the \
                         directory of the real binaries",
                    ),
                ))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(UpdateError::io("read", &target, err)),
        };
        if let ModeSource::Replaced = modes {
            let mode = previous.as_ref().map_or(DEFAULT_MODE, |(_, mode)| *mode);
            set_mode(&staged, mode)?;
        }
        replacements.push(Replacement {
            staged,
            backup: staging.install_dir.join(format!("{name}.bak")),
            target,
            previous: previous.map(|(copy, _)| copy),
        });
    }
    commit(&replacements)?;
    for replacement in &replacements {
        if let Some(previous) = &replacement.previous {
            if let Err(err) = fs::rename(previous, &replacement.backup) {
                warn!(actor = "updater", path = %replacement.backup.display(), error = %err,
                    "the binaries were replaced but the backup could not be kept; a rollback \
                     of this update is not possible");
            }
        }
    }
    sync_dir(&staging.install_dir);
    Ok(())
}

/// Renames every staged file into place; after a failure, puts back the ones already moved.
fn commit(replacements: &[Replacement]) -> Result<(), UpdateError> {
    for (done, replacement) in replacements.iter().enumerate() {
        if let Err(err) = fs::rename(&replacement.staged, &replacement.target) {
            restore(&replacements[..done]);
            return Err(UpdateError::io("install", &replacement.target, err));
        }
    }
    Ok(())
}

fn restore(done: &[Replacement]) {
    for replacement in done.iter().rev() {
        let restored = match &replacement.previous {
            Some(previous) => fs::rename(previous, &replacement.target),
            None => fs::remove_file(&replacement.target),
        };
        if let Err(err) = restored {
            error!(actor = "updater", path = %replacement.target.display(), error = %err,
                "cannot restore the binary after a failed update; reinstall it by hand");
        }
    }
}

/// Copies `ccod.bak` and `ccoctl.bak` into the staging directory and checks the backup
/// `ccod`; returns the staged directory and the backup's version.
pub fn stage_backups(staging: &Staging) -> Result<(PathBuf, Version), UpdateError> {
    let dir = staging.path().join("backup");
    create_private_dir(&dir)?;
    for name in BINARIES {
        let backup = staging.install_dir.join(format!("{name}.bak"));
        match fs::symlink_metadata(&backup) {
            Ok(metadata) if metadata.file_type().is_file() => {}
            Ok(_) | Err(_) => return Err(UpdateError::NoBackup { path: backup }),
        }
        fs::copy(&backup, dir.join(name)).map_err(|err| UpdateError::io("copy", &backup, err))?;
    }
    let version =
        smoke_test(&dir.join("ccod"), None).map_err(|reason| UpdateError::BrokenBackup {
            path: staging.install_dir.join("ccod.bak"),
            reason,
        })?;
    Ok((dir, version))
}

fn permission_bits(metadata: &fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        metadata.permissions().mode() & 0o7777
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        DEFAULT_MODE
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), UpdateError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|err| UpdateError::io("set the permissions of", path, err))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

fn create_private_dir(path: &Path) -> Result<(), UpdateError> {
    fs::create_dir(path).map_err(|err| UpdateError::io("create", path, err))?;
    set_mode(path, 0o700)
}

fn create_private_file(path: &Path) -> Result<File, UpdateError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o700);
    }
    options
        .open(path)
        .map_err(|err| UpdateError::io("create", path, err))
}

/// Makes the renames durable where the platform allows syncing a directory.
fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_checked() {
        assert!(check_entry_path(Path::new("ccod")).is_ok());
        assert!(check_entry_path(Path::new("./cco-v1/ccod")).is_ok());
        assert!(check_entry_path(Path::new("/usr/bin/ccod")).is_err());
        assert!(check_entry_path(Path::new("../ccod")).is_err());
        assert!(check_entry_path(Path::new("a/../../ccod")).is_err());
    }

    #[test]
    fn binaries_found_at_root_or_one_deep() {
        assert_eq!(binary_index(Path::new("ccod")), Some(0));
        assert_eq!(binary_index(Path::new("./ccoctl")), Some(1));
        assert_eq!(binary_index(Path::new("cco-v1/ccod")), Some(0));
        assert_eq!(binary_index(Path::new("a/b/ccod")), None);
        assert_eq!(binary_index(Path::new("README.md")), None);
    }

    #[test]
    fn failed_commit_restores_first_binary() {
        let dir = tempfile::tempdir().unwrap();
        let install = dir.path();
        fs::write(install.join("ccod"), b"old ccod").unwrap();
        // A non-empty directory where ccoctl should go makes the second rename fail.
        fs::create_dir_all(install.join("ccoctl").join("inner")).unwrap();
        let staging = Staging::create(install).unwrap();
        fs::write(staging.path().join("new-ccod"), b"new ccod").unwrap();
        fs::write(staging.path().join("new-ccoctl"), b"new ccoctl").unwrap();
        fs::copy(install.join("ccod"), staging.path().join("old-ccod")).unwrap();
        let replacements = [
            Replacement {
                staged: staging.path().join("new-ccod"),
                target: install.join("ccod"),
                previous: Some(staging.path().join("old-ccod")),
                backup: install.join("ccod.bak"),
            },
            Replacement {
                staged: staging.path().join("new-ccoctl"),
                target: install.join("ccoctl"),
                previous: None,
                backup: install.join("ccoctl.bak"),
            },
        ];
        let err = commit(&replacements).unwrap_err();
        assert!(err.to_string().contains("cannot install"), "{err}");
        assert_eq!(fs::read(install.join("ccod")).unwrap(), b"old ccod");
        assert!(!install.join("ccod.bak").exists());
    }

    #[test]
    fn staging_removes_stale_directories() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(format!("{STAGING_PREFIX}old"));
        fs::create_dir(&stale).unwrap();
        fs::write(stale.join("a.tar.gz.part"), b"partial").unwrap();
        let staging = Staging::create(dir.path()).unwrap();
        assert!(!stale.exists());
        let path = staging.path().to_path_buf();
        assert!(path.exists());
        drop(staging);
        assert!(!path.exists());
    }
}
