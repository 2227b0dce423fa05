//! The self-updater end to end: a real `ccod` installs releases from a local release
//! server into a temporary install directory, driven by `ccoctl update`.
//!
//! The installed and released `ccod`/`ccoctl` are shell scripts whose `--version` prints
//! the version they stand for. After every failure the install directory must be byte for
//! byte, and mode for mode, as it was, with no staging files left.

#![cfg(unix)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use cco_tests::daemon::{DaemonDirs, DaemonOptions, DaemonProcess};
use cco_tests::release_server::{ReleaseServer, Route};
use sha2::{Digest, Sha256};

/// Version of the daemon under test, which the releases are compared against.
const RUNNING: &str = env!("CARGO_PKG_VERSION");

/// Prefix of the updater's staging directories.
const STAGING_PREFIX: &str = ".ccod-update-";

fn asset_name(version: &str) -> String {
    format!(
        "cco-v{version}-{}-{}.tar.gz",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Returns a `ccod` script that prints `ccod VERSION` for `--version`. Run any other way, it
/// writes its arguments to `reexec-args` beside itself and exits 0.
fn ccod_script(version: &str) -> Vec<u8> {
    format!(
        "#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then echo \"ccod {version}\"; exit 0; fi\n\
         echo \"$@\" > \"$(dirname \"$0\")/reexec-args\"\nexit 0\n"
    )
    .into_bytes()
}

fn ccoctl_script(version: &str) -> Vec<u8> {
    format!("#!/bin/sh\necho \"ccoctl {version}\"\n").into_bytes()
}

/// One entry of a test archive.
struct Entry {
    path: String,
    kind: tar::EntryType,
    data: Vec<u8>,
    link: Option<String>,
}

impl Entry {
    fn file(path: &str, data: Vec<u8>) -> Self {
        Self {
            path: path.to_owned(),
            kind: tar::EntryType::Regular,
            data,
            link: None,
        }
    }
}

/// Builds a `.tar.gz`. Paths are written into the header as raw bytes, so that the test
/// can build the unsafe entries that `tar::Builder` itself refuses.
fn tar_gz(entries: &[Entry]) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let name = &mut header.as_gnu_mut().unwrap().name;
        name[..entry.path.len()].copy_from_slice(entry.path.as_bytes());
        header.set_entry_type(entry.kind);
        header.set_mode(0o755);
        header.set_size(entry.data.len() as u64);
        if let Some(link) = &entry.link {
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        builder.append(&header, entry.data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn release_archive(version: &str) -> Vec<u8> {
    tar_gz(&[
        Entry::file("ccod", ccod_script(version)),
        Entry::file("ccoctl", ccoctl_script(version)),
        Entry::file("README.md", b"release notes\n".to_vec()),
    ])
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A release as the feed lists it and the server serves it.
struct Release {
    version: String,
    prerelease: bool,
    archive: Vec<u8>,
    /// Body of the checksum file; `None` leaves it out of the feed.
    checksum: Option<String>,
    /// Size the feed states for the archive; `None` states its real size.
    declared_size: Option<u64>,
}

impl Release {
    fn new(version: &str) -> Self {
        let archive = release_archive(version);
        let checksum = format!("{}  {}\n", sha256_hex(&archive), asset_name(version));
        Self {
            version: version.to_owned(),
            prerelease: false,
            archive,
            checksum: Some(checksum),
            declared_size: None,
        }
    }

    fn with_archive(mut self, archive: Vec<u8>) -> Self {
        self.checksum = Some(format!(
            "{}  {}\n",
            sha256_hex(&archive),
            asset_name(&self.version)
        ));
        self.archive = archive;
        self
    }
}

/// A release server, a daemon's directories, an install directory with version
/// `RUNNING` of both binaries, and the daemon once started.
struct Fixture {
    server: ReleaseServer,
    dirs: DaemonDirs,
    install_dir: PathBuf,
    daemon: Option<DaemonProcess>,
}

impl Fixture {
    fn new() -> Self {
        let server = ReleaseServer::start();
        let dirs = DaemonDirs::new();
        let install_dir = dirs.root.path().join("install");
        std::fs::create_dir(&install_dir).unwrap();
        write_mode(&install_dir.join("ccod"), &ccod_script(RUNNING), 0o750);
        write_mode(&install_dir.join("ccoctl"), &ccoctl_script(RUNNING), 0o710);
        Self {
            server,
            dirs,
            install_dir,
            daemon: None,
        }
    }

    /// Writes the config with `[updates]` pointing at the server, plus `extra` lines.
    fn configure(&self, extra: &str) {
        let text = format!(
            "[updates]\nfeed_url = \"{}/releases\"\ninstall_dir = \"{}\"\n{extra}",
            self.server.base_url(),
            self.install_dir.display()
        );
        std::fs::write(self.dirs.config_file(), text).unwrap();
    }

    fn start(&mut self, extra: &str) {
        self.start_with(extra, self.options());
    }

    fn options(&self) -> DaemonOptions {
        // The upstream is never contacted; it points at the release server, a port the
        // test owns.
        DaemonOptions::new(&self.server.base_url())
    }

    fn start_with(&mut self, extra: &str, options: DaemonOptions) {
        self.configure(extra);
        self.daemon = Some(DaemonProcess::start(&self.dirs, &options));
    }

    fn daemon(&self) -> &DaemonProcess {
        self.daemon.as_ref().expect("daemon started")
    }

    /// Publishes `releases` in the feed, newest first as GitHub lists them. Assets are
    /// served under `/download/`, each behind a redirect as GitHub does.
    fn publish(&self, releases: &[Release]) {
        let base = self.server.base_url();
        let mut feed = Vec::new();
        for release in releases {
            let asset = asset_name(&release.version);
            let mut assets = vec![serde_json::json!({
                "name": asset,
                "size": release.declared_size.unwrap_or(release.archive.len() as u64),
                "browser_download_url": format!("{base}/download/{asset}"),
            })];
            self.server.set(
                &format!("/download/{asset}"),
                Route::Redirect {
                    location: format!("/files/{asset}"),
                },
            );
            self.server.set(
                &format!("/files/{asset}"),
                Route::ok("application/octet-stream", release.archive.clone()),
            );
            if let Some(checksum) = &release.checksum {
                let name = format!("{asset}.sha256");
                assets.push(serde_json::json!({
                    "name": name,
                    "size": checksum.len(),
                    "browser_download_url": format!("{base}/files/{name}"),
                }));
                self.server.set(
                    &format!("/files/{name}"),
                    Route::ok("text/plain", checksum.clone()),
                );
            }
            feed.push(serde_json::json!({
                "tag_name": format!("v{}", release.version),
                "prerelease": release.prerelease,
                "draft": false,
                "assets": assets,
            }));
        }
        let body = serde_json::to_vec(&feed).unwrap();
        self.server
            .set("/releases", Route::ok("application/json", body));
    }

    fn update(&self, args: &[&str]) -> Output {
        let mut all = vec!["update"];
        all.extend_from_slice(args);
        self.daemon().ctl(&all)
    }

    fn snapshot(&self) -> BTreeMap<String, (Vec<u8>, u32)> {
        snapshot(&self.install_dir)
    }

    /// Runs an install that must fail with a message containing `expected`, and checks
    /// that the install directory did not change.
    fn assert_install_fails(&self, expected: &str) {
        let before = self.snapshot();
        let output = self.update(&["--no-restart"]);
        let message = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{message}{}",
            stdout(&output)
        );
        assert!(
            message.contains(expected),
            "expected '{expected}' in: {message}"
        );
        assert_no_staging(&self.install_dir);
        assert_eq!(self.snapshot(), before, "the install directory changed");
    }
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Reads every entry of `dir` with its bytes and mode, directories with empty bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    let mut entries = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let bytes = if path.is_file() {
            std::fs::read(&path).unwrap()
        } else {
            Vec::new()
        };
        entries.insert(
            entry.file_name().to_string_lossy().into_owned(),
            (bytes, mode(&path)),
        );
    }
    entries
}

fn assert_no_staging(dir: &Path) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|name| !name.starts_with(STAGING_PREFIX)),
        "staging files remain: {names:?}"
    );
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn wait_for(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn update_replaces_binaries_and_keeps_backups() {
    let mut fixture = Fixture::new();
    fixture.publish(&[Release::new("0.2.0")]);
    fixture.start("");
    let old_ccod = std::fs::read(fixture.install_dir.join("ccod")).unwrap();
    let old_ccoctl = std::fs::read(fixture.install_dir.join("ccoctl")).unwrap();

    let output = fixture.update(&["--no-restart"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{}{text}", stderr(&output));
    assert!(
        text.starts_with("installed ccod and ccoctl 0.2.0 in "),
        "{text}"
    );
    assert!(text.contains("restart it to run 0.2.0"), "{text}");

    let dir = &fixture.install_dir;
    assert_eq!(
        std::fs::read(dir.join("ccod")).unwrap(),
        ccod_script("0.2.0")
    );
    assert_eq!(
        std::fs::read(dir.join("ccoctl")).unwrap(),
        ccoctl_script("0.2.0")
    );
    assert_eq!(mode(&dir.join("ccod")), 0o750);
    assert_eq!(mode(&dir.join("ccoctl")), 0o710);
    assert_eq!(std::fs::read(dir.join("ccod.bak")).unwrap(), old_ccod);
    assert_eq!(std::fs::read(dir.join("ccoctl.bak")).unwrap(), old_ccoctl);
    assert_eq!(mode(&dir.join("ccod.bak")), 0o750);
    assert_no_staging(dir);
    assert!(
        !dir.join("README.md").exists(),
        "other archive files are skipped"
    );

    // The archive came through the redirect, as GitHub serves assets.
    let paths: Vec<String> = fixture
        .server
        .requests()
        .iter()
        .map(|request| request.path.clone())
        .collect();
    let asset = asset_name("0.2.0");
    assert!(paths.contains(&format!("/download/{asset}")), "{paths:?}");
    assert!(paths.contains(&format!("/files/{asset}")), "{paths:?}");

    // The daemon remembers what it installed, so a second run installs nothing.
    let output = fixture.update(&["--no-restart"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(text.starts_with("nothing to install"), "{text}");
    assert_eq!(std::fs::read(dir.join("ccod.bak")).unwrap(), old_ccod);
}

#[test]
fn rollback_restores_backups() {
    let mut fixture = Fixture::new();
    fixture.publish(&[Release::new("0.2.0")]);
    fixture.start("");
    let before = fixture.snapshot();
    let output = fixture.update(&["--no-restart"]);
    assert!(output.status.success(), "{}", stderr(&output));

    let output = fixture.update(&["--rollback", "--no-restart"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        text.starts_with(&format!(
            "restored ccod and ccoctl {RUNNING} from the backups"
        )),
        "{text}"
    );
    let dir = &fixture.install_dir;
    assert_eq!(std::fs::read(dir.join("ccod")).unwrap(), before["ccod"].0);
    assert_eq!(
        std::fs::read(dir.join("ccoctl")).unwrap(),
        before["ccoctl"].0
    );
    assert_eq!(mode(&dir.join("ccod")), 0o750);
    assert_eq!(mode(&dir.join("ccoctl")), 0o710);
    // The binaries the rollback replaced are the new backups.
    assert_eq!(
        std::fs::read(dir.join("ccod.bak")).unwrap(),
        ccod_script("0.2.0")
    );
    assert_eq!(
        std::fs::read(dir.join("ccoctl.bak")).unwrap(),
        ccoctl_script("0.2.0")
    );
    assert_no_staging(dir);

    // After the rollback the newer release counts as available again.
    let output = fixture.update(&["--check"]);
    assert!(
        stdout(&output).contains("update available: yes"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn rollback_without_backup_fails() {
    let mut fixture = Fixture::new();
    fixture.publish(&[]);
    fixture.start("");
    let before = fixture.snapshot();
    let output = fixture.update(&["--rollback", "--no-restart"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("update_failed"), "{message}");
    assert!(message.contains("no backup to roll back to"), "{message}");
    assert!(message.contains("ccod.bak"), "{message}");
    assert_eq!(fixture.snapshot(), before);
}

#[test]
fn check_reports_both_versions() {
    let mut fixture = Fixture::new();
    fixture.publish(&[Release::new("0.2.0")]);
    fixture.start("");
    let before = fixture.snapshot();
    let output = fixture.update(&["--check"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        text.contains(&format!("running version:  {RUNNING}\n")),
        "{text}"
    );
    assert!(text.contains("latest version:   0.2.0\n"), "{text}");
    assert!(text.contains("channel:          stable\n"), "{text}");
    assert!(text.contains("update available: yes"), "{text}");
    assert_eq!(fixture.snapshot(), before);

    let output = fixture.update(&["--check", "--json"]);
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reply["latest_version"], "0.2.0");
    assert_eq!(reply["update_available"], true);
    assert_eq!(reply["restart"]["mode"], "none");
}

#[test]
fn check_without_newer_release() {
    let mut fixture = Fixture::new();
    fixture.publish(&[Release::new(RUNNING)]);
    fixture.start("");
    let output = fixture.update(&["--check"]);
    let text = stdout(&output);
    assert!(text.contains("update available: no\n"), "{text}");
    let output = fixture.update(&["--no-restart"]);
    assert!(
        stdout(&output).starts_with("nothing to install"),
        "{}",
        stdout(&output)
    );
}

fn channel_releases() -> Vec<Release> {
    let mut beta = Release::new("0.3.0-beta.1");
    beta.prerelease = true;
    vec![beta, Release::new("0.2.0")]
}

#[test]
fn stable_channel_skips_prereleases() {
    let mut fixture = Fixture::new();
    fixture.publish(&channel_releases());
    fixture.start("channel = \"stable\"\n");
    let text = stdout(&fixture.update(&["--check"]));
    assert!(text.contains("latest version:   0.2.0\n"), "{text}");
    let output = fixture.update(&["--no-restart"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let installed = std::fs::read(fixture.install_dir.join("ccod")).unwrap();
    assert_eq!(installed, ccod_script("0.2.0"));
}

#[test]
fn beta_channel_takes_prereleases() {
    let mut fixture = Fixture::new();
    fixture.publish(&channel_releases());
    fixture.start("channel = \"beta\"\n");
    let text = stdout(&fixture.update(&["--check"]));
    assert!(text.contains("latest version:   0.3.0-beta.1\n"), "{text}");
    assert!(text.contains("channel:          beta\n"), "{text}");
    let output = fixture.update(&["--no-restart"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let installed = std::fs::read(fixture.install_dir.join("ccod")).unwrap();
    assert_eq!(installed, ccod_script("0.3.0-beta.1"));
}

#[test]
fn cut_download_changes_nothing() {
    let mut fixture = Fixture::new();
    let release = Release::new("0.2.0");
    let archive = release.archive.clone();
    fixture.publish(&[release]);
    fixture.server.set(
        &format!("/files/{}", asset_name("0.2.0")),
        Route::Cut {
            sent: archive.len() / 2,
            body: archive,
        },
    );
    fixture.start("");
    fixture.assert_install_fails("was cut short");
}

#[test]
fn wrong_bytes_fail_checksum() {
    let mut fixture = Fixture::new();
    let release = Release::new("0.2.0");
    // Same length, one byte changed, checksum of the original.
    let mut altered = release.archive.clone();
    let last = altered.len() - 1;
    altered[last] ^= 0xff;
    fixture.publish(&[release]);
    fixture.server.set(
        &format!("/files/{}", asset_name("0.2.0")),
        Route::ok("application/octet-stream", altered),
    );
    fixture.start("");
    fixture.assert_install_fails("checksum mismatch");
}

#[test]
fn missing_checksum_file_fails() {
    let mut fixture = Fixture::new();
    let mut release = Release::new("0.2.0");
    release.checksum = None;
    fixture.publish(&[release]);
    fixture.start("");
    fixture.assert_install_fails("has no checksum file");

    // Listed in the feed but not served.
    fixture.publish(&[Release::new("0.2.0")]);
    fixture
        .server
        .remove(&format!("/files/{}.sha256", asset_name("0.2.0")));
    fixture.assert_install_fails("has no checksum file");
}

#[test]
fn malformed_checksum_file_fails() {
    let mut fixture = Fixture::new();
    let mut release = Release::new("0.2.0");
    release.checksum = Some("this is not a checksum\n".to_owned());
    fixture.publish(&[release]);
    fixture.start("");
    fixture.assert_install_fails("malformed checksum file");
}

#[test]
fn checksum_for_other_asset_fails() {
    let mut fixture = Fixture::new();
    let mut release = Release::new("0.2.0");
    let other = asset_name("0.2.0").replace(std::env::consts::ARCH, "sparc64");
    release.checksum = Some(format!("{}  {other}\n", sha256_hex(&release.archive)));
    fixture.publish(&[release]);
    fixture.start("");
    fixture.assert_install_fails("has no line for");
}

#[test]
fn stale_partial_is_removed_not_reused() {
    let mut fixture = Fixture::new();
    let release = Release::new("0.2.0");
    let asset = asset_name("0.2.0");
    // An earlier try that stopped half-way through the download.
    let stale = fixture.install_dir.join(format!("{STAGING_PREFIX}earlier"));
    std::fs::create_dir(&stale).unwrap();
    let half = &release.archive[..release.archive.len() / 2];
    std::fs::write(stale.join(format!("{asset}.part")), half).unwrap();
    fixture.publish(&[release]);
    fixture.start("");

    let output = fixture.update(&["--no-restart"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stale.exists(), "the stale staging directory remains");
    assert_no_staging(&fixture.install_dir);
    let installed = std::fs::read(fixture.install_dir.join("ccod")).unwrap();
    assert_eq!(installed, ccod_script("0.2.0"));
    let downloads: Vec<_> = fixture
        .server
        .requests()
        .into_iter()
        .filter(|request| request.path == format!("/files/{asset}"))
        .collect();
    assert_eq!(downloads.len(), 1);
    assert_eq!(downloads[0].method, "GET");
    assert_eq!(
        downloads[0].header("range"),
        None,
        "the partial file was resumed"
    );
}

/// Returns whether this test process runs as root, from the owner of a file it creates.
fn running_as_root(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = dir.join("uid-probe");
    std::fs::write(&probe, b"").unwrap();
    let root = std::fs::metadata(&probe).unwrap().uid() == 0;
    std::fs::remove_file(&probe).unwrap();
    root
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid);
        }
    }
}

/// Root ignores directory permissions, so as root the daemon runs as `nobody` (65534)
/// through `setpriv`, on files it owns. As another user, the chmod alone is enough.
#[test]
fn install_dir_without_write_permission() {
    let mut fixture = Fixture::new();
    fixture.publish(&[Release::new("0.2.0")]);
    let mut options = fixture.options();
    if running_as_root(fixture.dirs.root.path()) {
        if std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: running as root and setpriv (util-linux) is not installed");
            return;
        }
        fixture.configure("");
        chown_tree(fixture.dirs.root.path(), 65534);
        options = options.wrapped_by(&[
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
        ]);
    }
    std::fs::set_permissions(&fixture.install_dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    fixture.start_with("", options);
    fixture.assert_install_fails("no write permission on the install directory");
    std::fs::set_permissions(&fixture.install_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn failing_smoke_test_changes_nothing() {
    let mut fixture = Fixture::new();
    let broken = tar_gz(&[
        Entry::file(
            "ccod",
            b"#!/bin/sh\necho 'segfault' >&2\nexit 139\n".to_vec(),
        ),
        Entry::file("ccoctl", ccoctl_script("0.2.0")),
    ]);
    fixture.publish(&[Release::new("0.2.0").with_archive(broken)]);
    fixture.start("");
    fixture.assert_install_fails("failed its smoke test");

    // A binary that runs but reports another version.
    let mislabeled = tar_gz(&[
        Entry::file("ccod", ccod_script("0.1.9")),
        Entry::file("ccoctl", ccoctl_script("0.2.0")),
    ]);
    fixture.publish(&[Release::new("0.2.0").with_archive(mislabeled)]);
    fixture.assert_install_fails("reports version 0.1.9, expected 0.2.0");
}

#[test]
fn unsafe_archives_are_rejected() {
    let mut fixture = Fixture::new();
    fixture.start("");
    let cases = [
        (
            vec![
                Entry::file("ccod", ccod_script("0.2.0")),
                Entry::file("../ccoctl", ccoctl_script("0.2.0")),
            ],
            "contains '..'",
        ),
        (
            vec![
                Entry::file("/tmp/ccod", ccod_script("0.2.0")),
                Entry::file("ccoctl", ccoctl_script("0.2.0")),
            ],
            "is an absolute path",
        ),
        (
            vec![
                Entry {
                    path: "ccod".to_owned(),
                    kind: tar::EntryType::Symlink,
                    data: Vec::new(),
                    link: Some("/bin/sh".to_owned()),
                },
                Entry::file("ccoctl", ccoctl_script("0.2.0")),
            ],
            "entry ccod is a link",
        ),
        (
            vec![Entry::file("ccod", ccod_script("0.2.0"))],
            "it has no ccoctl",
        ),
        (
            vec![
                Entry::file("ccod", ccod_script("0.2.0")),
                Entry::file("dir/ccod", ccod_script("0.2.0")),
                Entry::file("ccoctl", ccoctl_script("0.2.0")),
            ],
            "it contains ccod twice",
        ),
    ];
    for (entries, expected) in cases {
        fixture.publish(&[Release::new("0.2.0").with_archive(tar_gz(&entries))]);
        fixture.assert_install_fails(expected);
    }
    // Not an archive at all.
    fixture.publish(&[Release::new("0.2.0").with_archive(b"plain text".to_vec())]);
    fixture.assert_install_fails("invalid archive");
}

#[test]
fn oversize_download_is_rejected() {
    let mut fixture = Fixture::new();
    // Incompressible data, so the archive itself is over 1 MB.
    let mut noise = Vec::with_capacity(1_600_000);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    while noise.len() < 1_600_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        noise.extend_from_slice(&state.to_le_bytes());
    }
    let archive = tar_gz(&[
        Entry::file("ccod", ccod_script("0.2.0")),
        Entry::file("ccoctl", ccoctl_script("0.2.0")),
        Entry::file("padding", noise),
    ]);
    assert!(archive.len() > 1024 * 1024);
    fixture.publish(&[Release::new("0.2.0").with_archive(archive.clone())]);
    fixture.start("max_download_size = 1\n");
    // Rejected from the size the feed states.
    fixture.assert_install_fails("over the limit of 1048576 bytes");

    // Rejected from the response, when the feed states no size.
    let mut release = Release::new("0.2.0").with_archive(archive);
    release.declared_size = Some(0);
    fixture.publish(&[release]);
    fixture.assert_install_fails("over the limit of 1048576 bytes");
}

#[test]
fn size_other_than_feed_states_fails() {
    let mut fixture = Fixture::new();
    let mut release = Release::new("0.2.0");
    release.declared_size = Some(release.archive.len() as u64 + 1);
    fixture.publish(&[release]);
    fixture.start("");
    fixture.assert_install_fails("was cut short");

    let mut release = Release::new("0.2.0");
    release.declared_size = Some(release.archive.len() as u64 - 1);
    fixture.publish(&[release]);
    fixture.assert_install_fails("but the release feed states");
}

#[test]
fn stalled_download_times_out() {
    let mut fixture = Fixture::new();
    let release = Release::new("0.2.0");
    let archive = release.archive.clone();
    fixture.publish(&[release]);
    fixture.server.set(
        &format!("/files/{}", asset_name("0.2.0")),
        Route::Stall {
            sent: 10,
            body: archive,
            hold: Duration::from_secs(20),
        },
    );
    fixture.start("download_timeout = 2\n");
    let started = Instant::now();
    fixture.assert_install_fails("timed out after 2 s");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn concurrent_install_is_rejected() {
    let mut fixture = Fixture::new();
    let release = Release::new("0.2.0");
    let archive = release.archive.clone();
    fixture.publish(&[release]);
    fixture.server.set(
        &format!("/files/{}", asset_name("0.2.0")),
        Route::Stall {
            sent: 10,
            body: archive,
            hold: Duration::from_secs(20),
        },
    );
    fixture.start("download_timeout = 4\n");
    let before = fixture.snapshot();
    let socket = fixture.dirs.socket();
    let first =
        std::thread::spawn(move || cco_tests::daemon::ctl(&socket, &["update", "--no-restart"]));
    let asset_path = format!("/files/{}", asset_name("0.2.0"));
    wait_for(
        "the first download to start",
        Duration::from_secs(10),
        || {
            fixture
                .server
                .requests()
                .iter()
                .any(|request| request.path == asset_path)
        },
    );

    let output = fixture.update(&["--rollback", "--no-restart"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("another update or rollback is running"),
        "{message}"
    );

    let first = first.join().unwrap();
    assert!(stderr(&first).contains("timed out"), "{}", stderr(&first));
    assert_no_staging(&fixture.install_dir);
    assert_eq!(fixture.snapshot(), before);
}

#[test]
fn redirect_to_plain_http_host_is_rejected() {
    let mut fixture = Fixture::new();
    fixture.publish(&[Release::new("0.2.0")]);
    // Nothing listens there, and the rule rejects it before any connection.
    fixture.server.set(
        &format!("/download/{}", asset_name("0.2.0")),
        Route::Redirect {
            location: "http://downloads.example.invalid/cco.tar.gz".to_owned(),
        },
    );
    fixture.start("");
    fixture.assert_install_fails("plain http is allowed only to a loopback host");
}

#[test]
fn restart_reexecs_in_foreground() {
    let mut fixture = Fixture::new();
    fixture.publish(&[Release::new("0.2.0")]);
    fixture.start("");
    let output = fixture.update(&[]);
    let text = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(text.ends_with("ccod is restarting into 0.2.0\n"), "{text}");

    // The new "ccod" is the script, which records its arguments and exits 0.
    let daemon = fixture.daemon.take().unwrap();
    assert_eq!(daemon.wait_for_exit(), Some(0));
    let args = std::fs::read_to_string(fixture.install_dir.join("reexec-args")).unwrap();
    assert!(args.starts_with("--port 0 --data-dir "), "{args}");
    assert!(
        args.contains(&fixture.dirs.socket().display().to_string()),
        "{args}"
    );
    assert!(
        !fixture.dirs.socket().exists(),
        "the old daemon left its socket behind"
    );
}

#[test]
fn restart_exits_for_service_manager() {
    let mut fixture = Fixture::new();
    fixture.publish(&[Release::new("0.2.0")]);
    let options = fixture.options().env("INVOCATION_ID", "0123456789abcdef");
    fixture.start_with("", options);
    let output = fixture.update(&[]);
    let text = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        text.ends_with("ccod exits with code 75 so that its service manager starts 0.2.0\n"),
        "{text}"
    );
    let daemon = fixture.daemon.take().unwrap();
    let log = daemon.log();
    assert_eq!(daemon.wait_for_exit(), Some(75), "{log}");
    assert!(!fixture.install_dir.join("reexec-args").exists());
}

#[test]
fn periodic_check_logs_available_update() {
    let mut fixture = Fixture::new();
    fixture.publish(&[Release::new("0.2.0")]);
    fixture.start("enabled = true\ncheck_interval = 1\n");
    let before = fixture.snapshot();
    wait_for(
        "the update-available log line",
        Duration::from_secs(15),
        || fixture.daemon().log().contains("update available"),
    );
    let log = fixture.daemon().log();
    let line = log
        .lines()
        .find(|line| line.contains("update available"))
        .unwrap();
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains("latest=0.2.0"), "{line}");
    assert_eq!(fixture.snapshot(), before, "installed without auto_install");
}

#[test]
fn auto_install_replaces_and_restarts() {
    let mut fixture = Fixture::new();
    fixture.publish(&[Release::new("0.2.0")]);
    let options = fixture.options().env("INVOCATION_ID", "0123456789abcdef");
    fixture.start_with(
        "enabled = true\nauto_install = true\ncheck_interval = 1\n",
        options,
    );
    let daemon = fixture.daemon.take().unwrap();
    assert_eq!(daemon.wait_for_exit(), Some(75));
    let dir = &fixture.install_dir;
    assert_eq!(
        std::fs::read(dir.join("ccod")).unwrap(),
        ccod_script("0.2.0")
    );
    assert_eq!(
        std::fs::read(dir.join("ccod.bak")).unwrap(),
        ccod_script(RUNNING)
    );
    assert_no_staging(dir);
}

#[test]
fn config_shows_updates_section() {
    let mut fixture = Fixture::new();
    fixture.publish(&[]);
    fixture.start("channel = \"beta\"\n");
    let output = fixture.daemon().ctl(&["config"]);
    let text = stdout(&output);
    assert!(text.contains("[updates]\n"), "{text}");
    assert!(text.contains("channel = \"beta\"\n"), "{text}");
    assert!(
        text.contains(&format!(
            "install_dir = \"{}\"",
            fixture.install_dir.display()
        )),
        "{text}"
    );
}

/// Sends one control request on the daemon's socket and returns the response frame.
fn control_request(socket: &Path, request: cco_proto::Request) -> cco_proto::ResponseFrame {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let frame = cco_proto::RequestFrame::new(1, request);
    stream.write_all(&cco_proto::encode_frame(&frame)).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn download_progress_is_reported() {
    let mut fixture = Fixture::new();
    let release = Release::new("0.2.0");
    let archive = release.archive.clone();
    let total = archive.len() as u64;
    fixture.publish(&[release]);
    fixture.server.set(
        &format!("/files/{}", asset_name("0.2.0")),
        Route::Stall {
            sent: 10,
            body: archive,
            hold: Duration::from_secs(20),
        },
    );
    fixture.start("download_timeout = 3\n");
    let socket = fixture.dirs.socket();
    let idle = control_request(&socket, cco_proto::Request::UpdateProgress);
    assert_eq!(
        idle.response,
        cco_proto::Response::UpdateProgress(cco_proto::UpdateProgressReply::default()),
        "no download before the install"
    );

    let install_socket = socket.clone();
    let install = std::thread::spawn(move || {
        cco_tests::daemon::ctl(&install_socket, &["update", "--no-restart"])
    });
    let mut seen = None;
    wait_for(
        "the download to report progress",
        Duration::from_secs(10),
        || {
            let frame = control_request(&socket, cco_proto::Request::UpdateProgress);
            match frame.response {
                cco_proto::Response::UpdateProgress(progress)
                    if progress.downloading && progress.received_bytes > 0 =>
                {
                    seen = Some(progress);
                    true
                }
                _ => false,
            }
        },
    );
    let progress = seen.unwrap();
    assert_eq!(progress.total_bytes, total, "the size the feed states");
    // The server sends 10 bytes and then stalls.
    assert_eq!(progress.received_bytes, 10);

    let output = install.join().unwrap();
    assert!(stderr(&output).contains("timed out"), "{}", stderr(&output));
    let after = control_request(&socket, cco_proto::Request::UpdateProgress);
    match after.response {
        cco_proto::Response::UpdateProgress(progress) => {
            assert!(!progress.downloading, "the failed download has ended")
        }
        other => panic!("unexpected reply {other:?}"),
    }
}
