//! The release feed: a GitHub releases API list, and the choice of the newest release of a
//! channel.

use semver::Version;
use serde::Deserialize;

use crate::config::Channel;

/// One entry of the GitHub releases list. Fields the updater does not use are skipped.
#[derive(Debug, Clone, Deserialize)]
pub struct Release {
    /// Tag such as `v0.2.0`; the version is the tag without its leading `v`.
    pub tag_name: String,
    #[serde(default)]
    pub prerelease: bool,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub assets: Vec<Asset>,
}

/// A file attached to a release.
#[derive(Debug, Clone, Deserialize)]
pub struct Asset {
    pub name: String,
    pub browser_download_url: String,
    /// Size in bytes as the feed states it.
    #[serde(default)]
    pub size: u64,
}

impl Release {
    /// The semantic version of the tag, or `None` for a tag that is not one.
    pub fn version(&self) -> Option<Version> {
        let text = self.tag_name.strip_prefix('v').unwrap_or(&self.tag_name);
        Version::parse(text).ok()
    }

    /// Returns the asset called `name`.
    pub fn asset(&self, name: &str) -> Option<&Asset> {
        self.assets.iter().find(|asset| asset.name == name)
    }
}

/// Parses the feed body.
pub fn parse(body: &[u8]) -> Result<Vec<Release>, serde_json::Error> {
    serde_json::from_slice(body)
}

/// Returns the newest release that `channel` takes. Drafts and tags that are not semantic
/// versions are skipped. The stable channel also skips releases flagged `prerelease` and
/// versions with a pre-release part such as `-beta.1`.
pub fn newest(releases: &[Release], channel: Channel) -> Option<(Version, &Release)> {
    releases
        .iter()
        .filter(|release| !release.draft)
        .filter_map(|release| Some((release.version()?, release)))
        .filter(|(version, release)| match channel {
            Channel::Stable => !release.prerelease && version.pre.is_empty(),
            Channel::Beta => true,
        })
        .max_by(|(left, _), (right, _)| left.cmp(right))
}

/// Name of the archive of `version` for this platform, such as
/// `cco-v0.2.0-linux-x86_64.tar.gz`.
pub fn archive_name(version: &Version) -> String {
    format!(
        "cco-v{version}-{}-{}.tar.gz",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Name of the checksum file that sits beside `archive`.
pub fn checksum_name(archive: &str) -> String {
    format!("{archive}.sha256")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEED: &str = r#"[
        {"tag_name": "v0.3.0-beta.1", "prerelease": true, "draft": false, "assets": []},
        {"tag_name": "v0.2.0", "prerelease": false, "assets": [
            {"name": "cco-v0.2.0-linux-x86_64.tar.gz", "size": 10,
             "browser_download_url": "https://example.invalid/a.tar.gz", "extra": 1}
        ], "body": "notes"},
        {"tag_name": "v0.4.0", "draft": true, "assets": []},
        {"tag_name": "nightly", "assets": []},
        {"tag_name": "v0.1.5", "assets": []}
    ]"#;

    #[test]
    fn stable_skips_prereleases_and_drafts() {
        let releases = parse(FEED.as_bytes()).unwrap();
        let (version, release) = newest(&releases, Channel::Stable).unwrap();
        assert_eq!(version, Version::new(0, 2, 0));
        assert_eq!(release.tag_name, "v0.2.0");
        assert_eq!(release.assets[0].size, 10);
    }

    #[test]
    fn beta_takes_prereleases() {
        let releases = parse(FEED.as_bytes()).unwrap();
        let (version, _) = newest(&releases, Channel::Beta).unwrap();
        assert_eq!(version, Version::parse("0.3.0-beta.1").unwrap());
    }

    #[test]
    fn stable_skips_unflagged_prerelease_version() {
        let feed = r#"[{"tag_name": "v0.9.0-rc.1", "prerelease": false}, {"tag_name": "0.8.0"}]"#;
        let releases = parse(feed.as_bytes()).unwrap();
        let (version, _) = newest(&releases, Channel::Stable).unwrap();
        assert_eq!(version, Version::new(0, 8, 0));
    }

    #[test]
    fn empty_feed_has_no_newest() {
        let releases = parse(b"[]").unwrap();
        assert!(newest(&releases, Channel::Beta).is_none());
    }

    #[test]
    fn archive_name_follows_platform() {
        let name = archive_name(&Version::new(1, 2, 3));
        let expected = format!(
            "cco-v1.2.3-{}-{}.tar.gz",
            std::env::consts::OS,
            std::env::consts::ARCH
        );
        assert_eq!(name, expected);
        assert_eq!(checksum_name(&name), format!("{expected}.sha256"));
    }
}
