//! TLS for the client-facing listener, from PEM files given with `--tls-cert`/`--tls-key`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Failure to use the listener's certificate or key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {reason}; pass a PEM file with --tls-cert")]
    Certificate { path: PathBuf, reason: String },
    #[error(
        "no certificate found in {path}: expected a PEM file with a 'BEGIN CERTIFICATE' block"
    )]
    NoCertificate { path: PathBuf },
    #[error("cannot read the TLS private key {path}: {reason}; pass a PEM file with --tls-key")]
    Key { path: PathBuf, reason: String },
    #[error(
        "the TLS key {key} does not match the certificate {cert} or is not supported: {reason}"
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// Builds the server configuration from a certificate chain and its private key, checking
/// that the key belongs to the first certificate.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|err| TlsError::Certificate {
            path: cert_path.to_path_buf(),
            reason: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|err| TlsError::Key {
        path: key_path.to_path_buf(),
        reason: err.to_string(),
    })?;
    let mismatch = |err: rustls::Error| TlsError::Mismatch {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        reason: err.to_string(),
    };
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(mismatch)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(mismatch)?;
    Ok(config)
}
