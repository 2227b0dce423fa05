//! Checksum files in `sha256sum` format: one `HEX  NAME` line per file, where a `*` before
//! the name marks binary mode.

use super::UpdateError;

/// Returns the lowercase SHA-256 hex digest that the checksum file `file` lists for
/// `asset`, matched against the exact name.
pub fn expected_digest(text: &str, file: &str, asset: &str) -> Result<String, UpdateError> {
    let mut listed = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let malformed = || UpdateError::MalformedChecksum {
            file: file.to_owned(),
            line: index + 1,
        };
        let (digest, rest) = line.split_once(' ').ok_or_else(malformed)?;
        if digest.len() != 64 || !digest.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        // sha256sum writes two characters between digest and name: a space, then a
        // space for text mode or '*' for binary mode.
        let name = rest
            .strip_prefix(' ')
            .or_else(|| rest.strip_prefix('*'))
            .ok_or_else(malformed)?;
        if name.is_empty() {
            return Err(malformed());
        }
        if name == asset {
            return Ok(digest.to_ascii_lowercase());
        }
        listed.push(name.to_owned());
    }
    if listed.is_empty() {
        return Err(UpdateError::MalformedChecksum {
            file: file.to_owned(),
            line: 1,
        });
    }
    Err(UpdateError::ChecksumForOtherAsset {
        file: file.to_owned(),
        asset: asset.to_owned(),
        listed: listed.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn finds_exact_name() {
        let text = format!(
            "{DIGEST}  other.tar.gz\n{}  a.tar.gz\n",
            DIGEST.to_uppercase()
        );
        assert_eq!(
            expected_digest(&text, "a.sha256", "a.tar.gz").unwrap(),
            DIGEST
        );
    }

    #[test]
    fn accepts_binary_mode_marker() {
        let text = format!("{DIGEST} *a.tar.gz\n");
        assert_eq!(
            expected_digest(&text, "a.sha256", "a.tar.gz").unwrap(),
            DIGEST
        );
    }

    #[test]
    fn rejects_other_asset() {
        let text = format!("{DIGEST}  a.tar.gz.old\n");
        let err = expected_digest(&text, "a.sha256", "a.tar.gz").unwrap_err();
        assert!(
            matches!(err, UpdateError::ChecksumForOtherAsset { ref listed, .. } if listed == "a.tar.gz.old"),
            "{err}"
        );
    }

    #[test]
    fn rejects_malformed_lines() {
        for text in [
            "",
            "not a checksum\n",
            "abc  a.tar.gz\n",
            &format!("{DIGEST}\n"),
            &format!("{DIGEST}  \n"),
            &format!("{}  a.tar.gz\n", "g".repeat(64)),
        ] {
            let err = expected_digest(text, "a.sha256", "a.tar.gz").unwrap_err();
            assert!(
                matches!(err, UpdateError::MalformedChecksum { .. }),
                "{text:?}: {err}"
            );
        }
    }
}
