//! Failures of a check, install or rollback. Every one of them leaves the installed
//! binaries as they were and the staging directory removed.

use std::io;
use std::path::PathBuf;

/// Failure of an update request. The message names the value at fault and what to do.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("rejected URL '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("request to {url} failed: {reason}; check the network and [updates] feed_url")]
    Request { url: String, reason: String },

    #[error("{url} returned HTTP {status}")]
    Status { url: String, status: u16 },

    #[error("{url} redirected more than {limit} times; check [updates] feed_url")]
    TooManyRedirects { url: String, limit: usize },

    #[error(
        "download of {url} timed out after {timeout_secs} s; retry, or raise \
         [updates] download_timeout"
    )]
    TimedOut { url: String, timeout_secs: u64 },

    #[error(
        "download of {url} is {size} bytes, over the limit of {limit} bytes; raise \
         [updates] max_download_size if the release is genuine"
    )]
    TooLarge { url: String, size: u64, limit: u64 },

    #[error("download of {url} was cut short: received {received} of {expected} bytes; retry")]
    Truncated {
        url: String,
        received: u64,
        expected: u64,
    },

    #[error(
        "download of {url} is {received} bytes, but {source_of_size} states {expected}; the \
         release assets do not match"
    )]
    SizeMismatch {
        url: String,
        received: u64,
        expected: u64,
        source_of_size: &'static str,
    },

    #[error("invalid release feed {url}: {reason}")]
    InvalidFeed { url: String, reason: String },

    #[error("release {version} has no asset {asset} for this platform")]
    MissingAsset { version: String, asset: String },

    #[error(
        "release {version} has no checksum file {file}; the archive cannot be verified, \
         so it is not installed"
    )]
    MissingChecksum { version: String, file: String },

    #[error("malformed checksum file {file}: line {line} is not '<64 hex digits>  <file name>'")]
    MalformedChecksum { file: String, line: usize },

    #[error(
        "checksum file {file} has no line for {asset} (it lists: {listed}); the release \
         assets do not match"
    )]
    ChecksumForOtherAsset {
        file: String,
        asset: String,
        listed: String,
    },

    #[error(
        "checksum mismatch for {asset}: expected SHA-256 {expected}, downloaded file has \
         {actual}; the download is corrupt or was altered, nothing was installed"
    )]
    ChecksumMismatch {
        asset: String,
        expected: String,
        actual: String,
    },

    #[error("invalid archive {asset}: {reason}")]
    InvalidArchive { asset: String, reason: String },

    #[error(
        "no write permission on the install directory {}: {source}; run ccod as the \
         owner of its binaries, or set [updates] install_dir",
        dir.display()
    )]
    InstallDirNotWritable { dir: PathBuf, source: io::Error },

    #[error(
        "cannot tell where ccod is installed because the running binary's path is \
         unknown; set [updates] install_dir"
    )]
    NoInstallDir,

    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error("the new ccod failed its smoke test ('{} --version'): {reason}", binary.display())]
    SmokeTest { binary: PathBuf, reason: String },

    #[error(
        "no backup to roll back to: {} is missing; backups are kept by the last \
         'ccoctl update'",
        path.display()
    )]
    NoBackup { path: PathBuf },

    #[error("the backup {} failed its check ('--version'): {reason}", path.display())]
    BrokenBackup { path: PathBuf, reason: String },

    #[error("another update or rollback is running; wait for it to finish")]
    Busy,
}

impl UpdateError {
    /// Builds the error for an I/O failure while doing `action` on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        UpdateError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
