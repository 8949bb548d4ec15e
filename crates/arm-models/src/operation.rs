//! Async operation status, the document behind an `Azure-AsyncOperation` URL.
//!
//! A long-running PUT or DELETE answers 201/202 with an `Azure-AsyncOperation` header; polling
//! that URL yields this document until `status` is terminal (`Succeeded`, `Failed`, `Canceled`).

use serde::{Deserialize, Serialize};

use crate::error::ErrorDetail;

/// The status of an asynchronous ARM operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AsyncOperationStatus {
    /// Usually the resource id the operation acts on (ACI) or the operation URL path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The operation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Canceled` (kept as a string: services add
    /// values; see [`OperationStatus`] for a parsed view).
    pub status: String,
    /// When the operation started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the operation ended (RFC 3339), once terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Why it failed, when `status` is `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// Provider-specific extras (ACI puts `{"events":[]}` here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<serde_json::Value>,
}

/// A parsed operation status; unknown strings are preserved rather than rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationStatus {
    /// Accepted but not started.
    Pending,
    /// In progress (`Running`, `InProgress`, `Accepted`, `Creating`, `Deleting`, ...).
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Cancelled before finishing.
    Canceled,
    /// A status this crate does not know.
    Unknown(String),
}

impl OperationStatus {
    /// Parses a status string case-insensitively.
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "pending" | "notstarted" => OperationStatus::Pending,
            "running" | "inprogress" | "accepted" | "creating" | "updating" | "deleting" => {
                OperationStatus::Running
            }
            "succeeded" => OperationStatus::Succeeded,
            "failed" => OperationStatus::Failed,
            "canceled" | "cancelled" => OperationStatus::Canceled,
            _ => OperationStatus::Unknown(s.to_string()),
        }
    }

    /// True once the operation will not change any more.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            OperationStatus::Succeeded | OperationStatus::Failed | OperationStatus::Canceled
        )
    }
}

impl AsyncOperationStatus {
    /// The parsed [`OperationStatus`].
    pub fn parsed_status(&self) -> OperationStatus {
        OperationStatus::parse(&self.status)
    }
}
