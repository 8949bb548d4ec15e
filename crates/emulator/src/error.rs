//! Errors: [`EmulatorError`] for the embedding API, [`ArmError`] for HTTP answers.
//!
//! `EmulatorError` is what `start`/`serve` return when the emulator itself cannot run.
//! `ArmError` is an expected, client-facing failure rendered as the ARM error envelope with
//! its HTTP status; handlers return it with `?` and the HTTP layer turns it into a response.

use std::path::PathBuf;

use axum::http::StatusCode;

/// Why the emulator could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// Binding the listen address failed (in use, not permitted, ...).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address from the configuration.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed while serving.
    #[error("the emulator's http server failed")]
    Serve(#[source] std::io::Error),
    /// The per-container working directory root could not be created.
    #[error("cannot create the working directory {path}")]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Generating or loading the TLS certificates failed.
    #[error("cannot set up tls: {0}")]
    Tls(String),
    /// The configuration is inconsistent.
    #[error("invalid emulator configuration: {0}")]
    Config(String),
}

/// A client-facing ARM error: HTTP status plus `{"error":{"code","message"}}`.
#[derive(Debug, Clone)]
pub struct ArmError {
    /// HTTP status.
    pub status: StatusCode,
    /// ARM error code.
    pub code: String,
    /// Message.
    pub message: String,
    /// Extra response headers (e.g. `Retry-After`).
    pub headers: Vec<(String, String)>,
}

impl ArmError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ArmError {
            status,
            code: code.to_string(),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// 400 with the given code.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// 404 `ResourceGroupNotFound`.
    pub fn resource_group_not_found(rg: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            format!("Resource group '{rg}' could not be found."),
        )
    }

    /// 404 `ResourceNotFound` for `{type}/{name}` in a resource group.
    pub fn resource_not_found(resource_type: &str, name: &str, rg: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "The Resource '{resource_type}/{name}' under resource group '{rg}' was not found. \
                 For more details please go to https://aka.ms/ARMResourceNotFoundFix"
            ),
        )
    }
}
