//! Building the one `reqwest::Client` shared by ARM calls and token requests.
//!
//! All HTTPS in this crate goes through a client built here, so an extra CA
//! (`ca_file`, e.g. the local emulator's `--tls` certificate) is trusted in one
//! place for ARM, AAD and IMDS alike. TLS is rustls with the ring provider,
//! installed on first use.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Connection and request time limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connect limit.
    pub connect: Duration,
    /// Whole-request limit (send until the body is read).
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(60),
        }
    }
}

/// What goes into the HTTP client.
#[derive(Clone, Debug)]
pub struct HttpClientConfig {
    /// Extra PEM file of CA certificates trusted in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Time limits.
    pub timeouts: Timeouts,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        HttpClientConfig {
            ca_file: None,
            user_agent: default_user_agent(),
            timeouts: Timeouts::default(),
        }
    }
}

/// `azure-arm-rs/<version>`.
pub fn default_user_agent() -> String {
    format!("azure-arm-rs/{}", env!("CARGO_PKG_VERSION"))
}

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    /// The CA file could not be read.
    #[error("cannot read CA file {}", path.display())]
    ReadCaFile {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The CA file is not a PEM bundle with at least one certificate.
    #[error("CA file {} holds no usable PEM certificate; expected one or more '-----BEGIN CERTIFICATE-----' blocks", path.display())]
    InvalidCaFile {
        /// The file.
        path: PathBuf,
    },
    /// reqwest refused the configuration.
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
}

fn load_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, HttpClientError> {
    let pem = std::fs::read(path).map_err(|source| HttpClientError::ReadCaFile {
        path: path.to_owned(),
        source,
    })?;
    let invalid = || HttpClientError::InvalidCaFile {
        path: path.to_owned(),
    };
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(invalid());
    }
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| invalid())?;
    if certs.is_empty() {
        return Err(invalid());
    }
    Ok(certs)
}

/// Builds the shared HTTP client.
pub fn build_http_client(config: &HttpClientConfig) -> Result<reqwest::Client, HttpClientError> {
    // reqwest is built without a default crypto provider; installing ring is
    // idempotent (an error only means some provider is already installed).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .user_agent(config.user_agent.clone())
        .connect_timeout(config.timeouts.connect)
        .timeout(config.timeouts.request);
    if let Some(path) = &config.ca_file {
        builder = builder.tls_certs_merge(load_ca(path)?);
    }
    builder.build().map_err(HttpClientError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_bogus_ca_files_are_clear_errors() {
        let missing = PathBuf::from("/nonexistent/ca.pem");
        let e = build_http_client(&HttpClientConfig {
            ca_file: Some(missing),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let bogus = std::env::temp_dir().join(format!("bogus-ca-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&bogus, "hello").unwrap();
        let e = build_http_client(&HttpClientConfig {
            ca_file: Some(bogus.clone()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        let _ = std::fs::remove_file(&bogus);
        assert!(e.contains("no usable PEM certificate"), "{e}");
    }

    #[test]
    fn builds_without_ca() {
        assert!(build_http_client(&HttpClientConfig::default()).is_ok());
    }
}
