//! `UpdaterActor`: checks the release feed, installs new releases and rolls them back.
//!
//! State: the `[updates]` settings, whether an install or rollback is running, and the
//! version this process last put in place. Messages: [`UpdateCommand`] from the control
//! server, and a periodic check when `[updates] enabled` is set. The actor runs on the
//! system arbiter, because `awc` futures are not `Send`. Downloads are async. The
//! unpacking, smoke test and file swap run on the blocking thread pool.
//!
//! An install goes: feed, checksum file, archive (into a private staging directory in the
//! install directory), SHA-256 check, unpack, `ccod --version` smoke test, then an atomic
//! rename of both binaries, the old ones kept as `ccod.bak` and `ccoctl.bak`. It never
//! touches the installed files before the swap, and the staging directory is removed on
//! every outcome. A restart, when asked for, happens after the reply has been sent.

mod checksum;
mod error;
mod feed;
mod fetch;
mod install;
pub mod restart;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::prelude::*;
use cco_proto::{RestartMode, UpdateAction, UpdateReply, UpdateRequest, CRATE_VERSION};
use semver::Version;
use tracing::{debug, info, warn};

use crate::config::UpdateSettings;
pub use error::UpdateError;
pub use fetch::check_url;
pub use fetch::DownloadProgress;
use fetch::Fetcher;
use install::{ModeSource, Staging};
pub use install::{BINARIES, STAGING_PREFIX};
pub use restart::{Restart, RestartSlot, SERVICE_RESTART_EXIT_CODE};

/// Largest feed body read. GitHub returns 30 releases per page, far below this.
const MAX_FEED_BYTES: u64 = 8 * 1024 * 1024;

/// Largest checksum file read.
const MAX_CHECKSUM_BYTES: u64 = 64 * 1024;

/// A control request for the updater.
#[derive(Debug)]
pub struct UpdateCommand(pub UpdateRequest);

impl Message for UpdateCommand {
    type Result = Result<UpdateReply, UpdateError>;
}

/// The periodic check that `[updates] enabled` schedules.
struct PeriodicCheck;

impl Message for PeriodicCheck {
    type Result = ();
}

/// Actor that owns the self-update.
pub struct UpdaterActor {
    settings: UpdateSettings,
    server: actix_web::dev::ServerHandle,
    restart: RestartSlot,
    busy: bool,
    /// Version put in place by the last install or rollback of this process, which the
    /// running code no longer matches until it restarts.
    installed: Option<Version>,
    progress: Arc<DownloadProgress>,
}

impl UpdaterActor {
    pub fn new(
        settings: UpdateSettings,
        server: actix_web::dev::ServerHandle,
        restart: RestartSlot,
    ) -> Self {
        Self {
            settings,
            server,
            restart,
            busy: false,
            installed: None,
            progress: Arc::default(),
        }
    }

    /// Returns the progress of downloads, readable while an install runs.
    pub fn progress(&self) -> Arc<DownloadProgress> {
        self.progress.clone()
    }

    fn job(&self) -> Job {
        Job {
            settings: self.settings.clone(),
            current: self.installed.clone().unwrap_or_else(running_version),
            progress: self.progress.clone(),
        }
    }

    /// Runs an install or rollback unless one is already running, then records the result
    /// and starts the restart that the request asked for.
    fn change(
        &mut self,
        action: UpdateAction,
        restart: bool,
    ) -> ResponseActFuture<Self, Result<UpdateReply, UpdateError>> {
        if self.busy {
            return Box::pin(fut::ready(Err(UpdateError::Busy)));
        }
        self.busy = true;
        let job = self.job();
        info!(actor = "updater", action = ?action, restart, "update started");
        let work = async move {
            match action {
                UpdateAction::Rollback => job.rollback(restart).await,
                UpdateAction::Install | UpdateAction::Check => job.install(restart).await,
            }
        };
        Box::pin(
            fut::wrap_future::<_, Self>(work).map(move |result, actor, _| {
                actor.busy = false;
                match &result {
                    Ok(reply) => actor.finish(reply),
                    Err(err) => warn!(actor = "updater", action = ?action, error = %err,
                    "update failed; the installed binaries are unchanged"),
                }
                result
            }),
        )
    }

    fn finish(&mut self, reply: &UpdateReply) {
        let Some(version) = &reply.installed_version else {
            info!(actor = "updater", version = %reply.running_version, "already up to date");
            return;
        };
        info!(actor = "updater", version = %version, install_dir = %reply.install_dir,
            restart = ?reply.restart, "installed");
        self.installed = Version::parse(version).ok();
        let restart = match reply.restart {
            RestartMode::None => return,
            RestartMode::Reexec => Restart::Reexec {
                program: Path::new(&reply.install_dir).join("ccod"),
            },
            RestartMode::ServiceManager { exit_code } => Restart::Exit { code: exit_code },
        };
        if let Ok(mut slot) = self.restart.lock() {
            *slot = Some(restart);
        }
        let server = self.server.clone();
        // The reply goes out first; the graceful stop follows, as for `ccoctl shutdown`.
        actix_rt::spawn(async move { server.stop(true).await });
    }
}

impl Actor for UpdaterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if !self.settings.enabled {
            return;
        }
        info!(actor = "updater", interval_secs = self.settings.check_interval.as_secs(),
            auto_install = self.settings.auto_install, feed = %self.settings.feed_url,
            "periodic update checks enabled");
        ctx.run_interval(self.settings.check_interval, |_, ctx| {
            ctx.notify(PeriodicCheck);
        });
    }
}

impl Handler<UpdateCommand> for UpdaterActor {
    type Result = ResponseActFuture<Self, Result<UpdateReply, UpdateError>>;

    fn handle(&mut self, msg: UpdateCommand, _ctx: &mut Self::Context) -> Self::Result {
        match msg.0.action {
            UpdateAction::Check => {
                let job = self.job();
                Box::pin(fut::wrap_future(async move { job.check().await }))
            }
            action => self.change(action, msg.0.restart),
        }
    }
}

impl Handler<PeriodicCheck> for UpdaterActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: PeriodicCheck, _ctx: &mut Self::Context) -> Self::Result {
        let job = self.job();
        Box::pin(
            fut::wrap_future::<_, Self>(async move { job.check().await }).then(
                |result, actor, _| -> ResponseActFuture<Self, ()> {
                    let reply = match result {
                        Ok(reply) => reply,
                        Err(err) => {
                            warn!(actor = "updater", error = %err, "periodic update check failed");
                            return Box::pin(fut::ready(()));
                        }
                    };
                    if !reply.update_available {
                        return Box::pin(fut::ready(()));
                    }
                    let latest = reply.latest_version.unwrap_or_default();
                    info!(actor = "updater", running = %reply.running_version, latest = %latest,
                        auto_install = actor.settings.auto_install,
                        "update available; install it with 'ccoctl update'");
                    if !actor.settings.auto_install || actor.busy {
                        return Box::pin(fut::ready(()));
                    }
                    Box::pin(actor.change(UpdateAction::Install, true).map(|_, _, _| ()))
                },
            ),
        )
    }
}

fn running_version() -> Version {
    Version::parse(CRATE_VERSION).expect("the crate version is a semantic version")
}

/// One check, install or rollback, detached from the actor so it can run as a future.
struct Job {
    settings: UpdateSettings,
    /// Version of the installed binaries, as far as this process has seen them change.
    current: Version,
    progress: Arc<DownloadProgress>,
}

impl Job {
    fn install_dir(&self) -> Result<PathBuf, UpdateError> {
        self.settings
            .install_dir
            .clone()
            .ok_or(UpdateError::NoInstallDir)
    }

    fn reply(&self, action: UpdateAction) -> UpdateReply {
        UpdateReply {
            action,
            running_version: CRATE_VERSION.to_owned(),
            channel: self.settings.channel.as_str().to_owned(),
            latest_version: None,
            update_available: false,
            installed_version: None,
            install_dir: self
                .settings
                .install_dir
                .as_deref()
                .map(|dir| dir.display().to_string())
                .unwrap_or_default(),
            restart: RestartMode::None,
        }
    }

    /// Reads the feed and returns the newest release of the channel.
    async fn newest(
        &self,
        fetcher: &Fetcher,
    ) -> Result<Option<(Version, feed::Release)>, UpdateError> {
        let url = &self.settings.feed_url;
        let body = fetcher
            .fetch_bytes(url, "application/vnd.github+json", MAX_FEED_BYTES)
            .await?;
        let releases = feed::parse(&body).map_err(|err| UpdateError::InvalidFeed {
            url: url.clone(),
            reason: format!("expected a JSON list of GitHub releases ({err})"),
        })?;
        Ok(feed::newest(&releases, self.settings.channel)
            .map(|(version, release)| (version, release.clone())))
    }

    async fn check(self) -> Result<UpdateReply, UpdateError> {
        let fetcher = Fetcher::new(&self.settings);
        let newest = self.newest(&fetcher).await?;
        let mut reply = self.reply(UpdateAction::Check);
        if let Some((version, _)) = newest {
            reply.update_available = version > self.current;
            reply.latest_version = Some(version.to_string());
        }
        Ok(reply)
    }

    async fn install(self, restart: bool) -> Result<UpdateReply, UpdateError> {
        let install_dir = self.install_dir()?;
        let fetcher = Fetcher::new(&self.settings);
        let mut reply = self.reply(UpdateAction::Install);
        let Some((version, release)) = self.newest(&fetcher).await? else {
            return Ok(reply);
        };
        reply.latest_version = Some(version.to_string());
        if version <= self.current {
            return Ok(reply);
        }
        reply.update_available = true;

        let asset_name = feed::archive_name(&version);
        let checksum_name = feed::checksum_name(&asset_name);
        let asset = release
            .asset(&asset_name)
            .ok_or_else(|| UpdateError::MissingAsset {
                version: release.tag_name.clone(),
                asset: asset_name.clone(),
            })?;
        let missing_checksum = || UpdateError::MissingChecksum {
            version: release.tag_name.clone(),
            file: checksum_name.clone(),
        };
        let checksum_asset = release.asset(&checksum_name).ok_or_else(missing_checksum)?;

        let staging = blocking({
            let install_dir = install_dir.clone();
            move || Staging::create(&install_dir)
        })
        .await?;

        let checksum_text = match fetcher
            .fetch_bytes(
                &checksum_asset.browser_download_url,
                "application/octet-stream",
                MAX_CHECKSUM_BYTES,
            )
            .await
        {
            Ok(body) => body,
            Err(UpdateError::Status { status: 404, .. }) => return Err(missing_checksum()),
            Err(err) => return Err(err),
        };
        let checksum_text = String::from_utf8_lossy(&checksum_text);
        let expected = checksum::expected_digest(&checksum_text, &checksum_name, &asset_name)?;

        let download_path = staging.download_path(&asset_name);
        let mut file = std::fs::File::create_new(&download_path)
            .map_err(|err| UpdateError::io("create", &download_path, err))?;
        let declared_size = Some(asset.size).filter(|size| *size > 0);
        let downloaded = fetcher
            .fetch_to_file(
                &asset.browser_download_url,
                declared_size,
                &mut file,
                &self.progress,
            )
            .await?;
        file.sync_all()
            .map_err(|err| UpdateError::io("write", &download_path, err))?;
        drop(file);
        debug!(actor = "updater", asset = %asset_name, bytes = downloaded.bytes, "downloaded");
        if downloaded.sha256 != expected {
            return Err(UpdateError::ChecksumMismatch {
                asset: asset_name,
                expected,
                actual: downloaded.sha256,
            });
        }

        let expected_version = version.clone();
        blocking(move || {
            let unpacked = staging.unpacked_dir();
            install::unpack(&download_path, &asset_name, &unpacked)?;
            let new_ccod = unpacked.join("ccod");
            install::smoke_test(&new_ccod, Some(&expected_version)).map_err(|reason| {
                UpdateError::SmokeTest {
                    binary: new_ccod.clone(),
                    reason,
                }
            })?;
            install::swap_binaries(&staging, &unpacked, ModeSource::Replaced)
        })
        .await?;

        reply.installed_version = Some(version.to_string());
        if restart {
            reply.restart = restart::detect_mode();
        }
        Ok(reply)
    }

    async fn rollback(self, restart: bool) -> Result<UpdateReply, UpdateError> {
        let install_dir = self.install_dir()?;
        let mut reply = self.reply(UpdateAction::Rollback);
        let version = blocking(move || {
            let staging = Staging::create(&install_dir)?;
            let (backups, version) = install::stage_backups(&staging)?;
            install::swap_binaries(&staging, &backups, ModeSource::Staged)?;
            Ok(version)
        })
        .await?;
        reply.installed_version = Some(version.to_string());
        if restart {
            reply.restart = restart::detect_mode();
        }
        Ok(reply)
    }
}

/// Runs file-system work on the blocking thread pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, UpdateError> + Send + 'static,
) -> Result<T, UpdateError> {
    match actix_rt::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(err) => Err(UpdateError::Io {
            action: "finish the update task for",
            path: PathBuf::from("the install directory"),
            source: std::io::Error::other(err.to_string()),
        }),
    }
}
