//! Downloads for the updater: HTTPS through `awc` with rustls, or plain HTTP to a loopback
//! host only. Redirects are followed by hand, at most [`MAX_REDIRECTS`], and every target
//! is checked against the same rule. Each download has a size limit and a deadline.

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use awc::error::SendRequestError;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use url::Url;

use super::UpdateError;
use crate::config::UpdateSettings;

/// Redirects followed per download. A GitHub `browser_download_url` redirects once, to the
/// host that stores the file.
pub const MAX_REDIRECTS: usize = 5;

/// Time allowed to open the connection of each request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks that `url` is HTTPS, or plain HTTP to a loopback host (`127.0.0.0/8`, `::1` or
/// `localhost`), and parses it.
pub fn check_url(url: &str) -> Result<Url, UpdateError> {
    let invalid = |reason: &str| UpdateError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = Url::parse(url).map_err(|err| invalid(&format!("{err}")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if is_loopback(&parsed) => {}
        "http" => {
            return Err(invalid(
                "plain http is allowed only to a loopback host; use https",
            ))
        }
        _ => return Err(invalid("the scheme must be https")),
    }
    if parsed.host().is_none() {
        return Err(invalid("the URL has no host"));
    }
    Ok(parsed)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Size and hash of a download written to a file.
#[derive(Debug)]
pub struct Downloaded {
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
}

/// Bytes received of the archive being downloaded, shared with the control server so that
/// `ccoctl update` can draw a progress bar while the install runs.
#[derive(Debug, Default)]
pub struct DownloadProgress {
    downloading: AtomicBool,
    received: AtomicU64,
    total: AtomicU64,
}

impl DownloadProgress {
    /// Marks a download of `total` bytes (0 when unknown) as started, until the returned
    /// guard is dropped.
    fn begin(&self, total: u64) -> DownloadGuard<'_> {
        self.received.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        self.downloading.store(true, Ordering::Relaxed);
        DownloadGuard(self)
    }

    fn add(&self, bytes: u64) {
        self.received.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn reply(&self) -> cco_proto::UpdateProgressReply {
        cco_proto::UpdateProgressReply {
            downloading: self.downloading.load(Ordering::Relaxed),
            received_bytes: self.received.load(Ordering::Relaxed),
            total_bytes: self.total.load(Ordering::Relaxed),
        }
    }
}

/// Clears [`DownloadProgress::downloading`] when the download ends, however it ends.
struct DownloadGuard<'a>(&'a DownloadProgress);

impl Drop for DownloadGuard<'_> {
    fn drop(&mut self) {
        self.0.downloading.store(false, Ordering::Relaxed);
    }
}

/// An HTTP client with the updater's limits.
pub struct Fetcher {
    client: awc::Client,
    max_bytes: u64,
    timeout: Duration,
}

impl Fetcher {
    /// Builds a client on the current actix runtime.
    pub fn new(settings: &UpdateSettings) -> Self {
        let tls = Arc::new(crate::proxy::upstream_tls_config());
        let connector = awc::Connector::new()
            .rustls_0_23(tls)
            .timeout(CONNECT_TIMEOUT);
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(settings.download_timeout)
            .disable_redirects()
            // GitHub's API rejects requests without a User-Agent.
            .add_default_header(("user-agent", concat!("ccod/", env!("CARGO_PKG_VERSION"))))
            .finish();
        Self {
            client,
            max_bytes: settings.max_download_bytes,
            timeout: settings.download_timeout,
        }
    }

    /// Downloads `url` into memory; for the feed and checksum files.
    pub async fn fetch_bytes(
        &self,
        url: &str,
        accept: &str,
        limit: u64,
    ) -> Result<Vec<u8>, UpdateError> {
        let mut body = Vec::new();
        self.deadline(
            url,
            self.fetch_into(url, accept, limit.min(self.max_bytes), None, &mut body),
        )
        .await?;
        Ok(body)
    }

    /// Downloads `url` into `file`, hashing it on the way. `declared_size` is the size the
    /// feed states; a download of another length is rejected.
    pub async fn fetch_to_file(
        &self,
        url: &str,
        declared_size: Option<u64>,
        file: &mut std::fs::File,
        progress: &DownloadProgress,
    ) -> Result<Downloaded, UpdateError> {
        if let Some(size) = declared_size.filter(|size| *size > self.max_bytes) {
            return Err(UpdateError::TooLarge {
                url: url.to_owned(),
                size,
                limit: self.max_bytes,
            });
        }
        let _downloading = progress.begin(declared_size.unwrap_or(0));
        let mut sink = HashingWriter {
            file,
            hasher: Sha256::new(),
            progress,
        };
        let bytes = self
            .deadline(
                url,
                self.fetch_into(
                    url,
                    "application/octet-stream",
                    self.max_bytes,
                    declared_size,
                    &mut sink,
                ),
            )
            .await?;
        Ok(Downloaded {
            bytes,
            sha256: hex::encode(sink.hasher.finalize()),
        })
    }

    async fn deadline<T>(
        &self,
        url: &str,
        work: impl std::future::Future<Output = Result<T, UpdateError>>,
    ) -> Result<T, UpdateError> {
        match actix_rt::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(UpdateError::TimedOut {
                url: url.to_owned(),
                timeout_secs: self.timeout.as_secs(),
            }),
        }
    }

    /// Streams the body of `url` into `sink` and returns its length. The length must match
    /// `Content-Length` when the server sends one, and `declared_size` when it is given.
    async fn fetch_into(
        &self,
        url: &str,
        accept: &str,
        limit: u64,
        declared_size: Option<u64>,
        sink: &mut impl Write,
    ) -> Result<u64, UpdateError> {
        let (final_url, mut response) = self.open(url, accept).await?;
        let final_url = final_url.to_string();
        let content_length = response
            .headers()
            .get("content-length")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if let Some(size) = content_length.filter(|size| *size > limit) {
            return Err(UpdateError::TooLarge {
                url: final_url,
                size,
                limit,
            });
        }
        let mut received: u64 = 0;
        while let Some(chunk) = response.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                // A connection closed before Content-Length bytes arrived surfaces as a
                // payload error; report it as the cut it is.
                Err(_)
                    if content_length
                        .or(declared_size)
                        .is_some_and(|size| received < size) =>
                {
                    return Err(UpdateError::Truncated {
                        url: final_url,
                        received,
                        expected: content_length.or(declared_size).unwrap_or_default(),
                    })
                }
                Err(err) => {
                    return Err(UpdateError::Request {
                        url: final_url,
                        reason: format!("reading the body failed ({err})"),
                    })
                }
            };
            received += chunk.len() as u64;
            if received > limit {
                return Err(UpdateError::TooLarge {
                    url: final_url,
                    size: received,
                    limit,
                });
            }
            // A synchronous write of one chunk to a local file. It blocks only the system
            // arbiter, and briefly, because the proxy's workers run on threads of their own.
            sink.write_all(&chunk)
                .map_err(|err| UpdateError::io("write the download of", &final_url, err))?;
        }
        let stated = [
            (content_length, "its Content-Length"),
            (declared_size, "the release feed"),
        ];
        for (expected, source_of_size) in stated {
            let Some(expected) = expected else {
                continue;
            };
            if received < expected {
                return Err(UpdateError::Truncated {
                    url: final_url,
                    received,
                    expected,
                });
            }
            if received > expected {
                return Err(UpdateError::SizeMismatch {
                    url: final_url,
                    received,
                    expected,
                    source_of_size,
                });
            }
        }
        Ok(received)
    }

    /// Sends a GET and follows redirects; returns the final URL and its 2xx response.
    async fn open(
        &self,
        url: &str,
        accept: &str,
    ) -> Result<
        (
            Url,
            awc::ClientResponse<
                impl Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
            >,
        ),
        UpdateError,
    > {
        let mut current = check_url(url)?;
        for _ in 0..=MAX_REDIRECTS {
            let response = self
                .client
                .get(current.as_str())
                .insert_header(("accept", accept))
                .send()
                .await
                .map_err(|err| request_error(&current, &err, self.timeout))?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|value| value.to_str().ok())
                    .ok_or_else(|| UpdateError::Request {
                        url: current.to_string(),
                        reason: format!("HTTP {} without a valid Location header", status.as_u16()),
                    })?;
                let next = current
                    .join(location)
                    .map_err(|err| UpdateError::InvalidUrl {
                        url: location.to_owned(),
                        reason: format!("{err}"),
                    })?;
                current = check_url(next.as_str())?;
                continue;
            }
            if !status.is_success() {
                return Err(UpdateError::Status {
                    url: current.to_string(),
                    status: status.as_u16(),
                });
            }
            return Ok((current, response));
        }
        Err(UpdateError::TooManyRedirects {
            url: url.to_owned(),
            limit: MAX_REDIRECTS,
        })
    }
}

fn request_error(url: &Url, err: &SendRequestError, timeout: Duration) -> UpdateError {
    match err {
        SendRequestError::Timeout => UpdateError::TimedOut {
            url: url.to_string(),
            timeout_secs: timeout.as_secs(),
        },
        other => UpdateError::Request {
            url: url.to_string(),
            reason: other.to_string(),
        },
    }
}

/// A writer that hashes what passes through it.
struct HashingWriter<'a> {
    file: &'a mut std::fs::File,
    hasher: Sha256,
    progress: &'a DownloadProgress,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(buffer)?;
        self.hasher.update(&buffer[..written]);
        self.progress.add(written as u64);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_rule_allows_https_and_loopback_http() {
        for url in [
            "https://api.github.com/repos/cco-dev/cco/releases",
            "http://127.0.0.1:8080/releases",
            "http://127.1.2.3/x",
            "http://[::1]:9/x",
            "http://localhost:9/x",
        ] {
            assert!(check_url(url).is_ok(), "{url} was rejected");
        }
    }

    #[test]
    fn url_rule_rejects_plain_http_elsewhere() {
        for url in [
            "http://example.com/releases",
            "http://10.0.0.1/x",
            "http://127.0.0.1.example.com/x",
            "ftp://127.0.0.1/x",
            "file:///etc/passwd",
            "not a url",
        ] {
            let err = check_url(url).unwrap_err();
            assert!(
                matches!(err, UpdateError::InvalidUrl { .. }),
                "{url}: {err}"
            );
        }
    }
}
