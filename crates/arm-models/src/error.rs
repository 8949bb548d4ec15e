//! The ARM error envelope.
//!
//! Every ARM failure (and ACI's) carries `{"error":{"code","message","target"?,"details"?}}`.
//! `code` is the stable, machine-readable part (`ResourceNotFound`, `InaccessibleImage`, ...);
//! `message` is for humans and may change wording between service releases.

use serde::{Deserialize, Serialize};

/// The top-level body of an ARM error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error itself.
    pub error: ErrorDetail,
}

/// One error: a code, a message and optional nested details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable error code, e.g. `ResourceGroupNotFound`.
    #[serde(default)]
    pub code: String,
    /// Human-readable description.
    #[serde(default)]
    pub message: String,
    /// The field or resource the error is about, when the service says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Nested errors (deployments and validation batches use these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ErrorDetail>,
}

impl ErrorResponse {
    /// An envelope holding one error with no details.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorResponse {
            error: ErrorDetail::new(code, message),
        }
    }
}

impl ErrorDetail {
    /// An error with no target and no details.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorDetail {
            code: code.into(),
            message: message.into(),
            target: None,
            details: Vec::new(),
        }
    }
}
