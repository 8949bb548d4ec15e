//! [`ArmError`]: what can go wrong talking to ARM, and the ARM error envelope.
//!
//! ARM reports failures as `{"error":{"code","message","target","details"}}`.
//! [`ArmError::Http`] keeps the code, the message and the nested details, plus
//! the `x-ms-request-id` that Azure support asks for. Every variant that
//! involves a request carries a request id: the server's when there was a
//! response, otherwise the `x-ms-client-request-id` this client sent.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::credential::CredentialError;

/// One entry of an ARM error (the top-level error or a nested detail).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmErrorDetail {
    /// Machine-readable code, e.g. `ResourceNotFound`.
    #[serde(default)]
    pub code: Option<String>,
    /// Human-readable message.
    #[serde(default)]
    pub message: Option<String>,
    /// The property or resource the error is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Nested errors (e.g. per-resource failures of a deployment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ArmErrorDetail>,
}

#[derive(Deserialize)]
struct Envelope {
    error: Option<ArmErrorDetail>,
    // Some older RPs put code/message at the top level.
    code: Option<String>,
    message: Option<String>,
}

/// Parses an ARM error body; `None` if it is not the envelope (or empty).
pub fn parse_error_body(body: &[u8]) -> Option<ArmErrorDetail> {
    let env: Envelope = serde_json::from_slice(body).ok()?;
    match env.error {
        Some(d) => Some(d),
        None if env.code.is_some() || env.message.is_some() => Some(ArmErrorDetail {
            code: env.code,
            message: env.message,
            ..Default::default()
        }),
        None => None,
    }
}

/// Errors from [`crate::ArmClient`].
#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    /// ARM answered with a non-success status (after retries, if retryable).
    #[error("{method} {path} failed with HTTP {status}{}: {message} (request id {request_id})", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Http {
        /// HTTP method.
        method: String,
        /// Request path without query.
        path: String,
        /// HTTP status.
        status: u16,
        /// `error.code` from the envelope.
        code: Option<String>,
        /// `error.message`, or a short excerpt of a non-envelope body.
        message: String,
        /// `error.details`, preserved.
        details: Vec<ArmErrorDetail>,
        /// `x-ms-request-id` (or the client request id if the server sent none).
        request_id: String,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The request did not complete (connect, reset, timeout) after retries.
    #[error("{method} {path} could not be completed: {kind} (client request id {request_id})")]
    Transport {
        /// HTTP method.
        method: String,
        /// Request path without query.
        path: String,
        /// Short classification (connection failed, timed out, ...).
        kind: &'static str,
        /// The `x-ms-client-request-id` sent.
        request_id: String,
        /// The transport error (URL stripped).
        #[source]
        source: reqwest::Error,
    },
    /// No token could be obtained.
    #[error("cannot authenticate to Azure Resource Manager")]
    Credential(#[source] CredentialError),
    /// A success response whose body is not what the caller expected.
    #[error("cannot decode the response of {method} {path} (request id {request_id})")]
    Decode {
        /// HTTP method.
        method: String,
        /// Request path without query.
        path: String,
        /// `x-ms-request-id`.
        request_id: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A long-running operation ended in `Failed` or `Canceled`.
    #[error("long-running operation on {path} ended {status}{}: {} (request id {request_id})",
        code.as_deref().map(|c| format!(" with {c}")).unwrap_or_default(),
        message.as_deref().unwrap_or("no error message"))]
    OperationFailed {
        /// The resource path the operation was about.
        path: String,
        /// Terminal status (`Failed`, `Canceled`).
        status: String,
        /// `error.code`.
        code: Option<String>,
        /// `error.message`.
        message: Option<String>,
        /// `error.details`.
        details: Vec<ArmErrorDetail>,
        /// Request id of the poll that reported the failure.
        request_id: String,
    },
    /// Waiting for a long-running operation exceeded its limit.
    #[error("long-running operation on {path} did not finish within {waited:?} (last request id {request_id})")]
    Timeout {
        /// The resource path.
        path: String,
        /// How long we waited.
        waited: Duration,
        /// Request id of the last poll.
        request_id: String,
    },
    /// A URL could not be used (malformed path, or an LRO/nextLink URL on a
    /// different host, which would leak the bearer token).
    #[error("invalid URL {url}: {reason}")]
    InvalidUrl {
        /// The URL (query stripped).
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The client could not be configured (bad CA file, bad endpoint).
    #[error("invalid ARM client configuration")]
    Config(#[source] crate::http::HttpClientError),
}

impl ArmError {
    /// The HTTP status, if ARM answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ArmError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The ARM error code (`error.code`), from an HTTP error or a failed operation.
    pub fn code(&self) -> Option<&str> {
        match self {
            ArmError::Http { code, .. } | ArmError::OperationFailed { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The request id this error is about, if any.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ArmError::Http { request_id, .. }
            | ArmError::Transport { request_id, .. }
            | ArmError::Decode { request_id, .. }
            | ArmError::OperationFailed { request_id, .. }
            | ArmError::Timeout { request_id, .. } => Some(request_id),
            _ => None,
        }
    }

    /// 404, or a `*NotFound` code.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
            || self.code().is_some_and(|c| {
                c == "ResourceNotFound" || c == "ResourceGroupNotFound" || c == "NotFound"
            })
    }

    /// 429 / `TooManyRequests` (after the client's own retries gave up).
    pub fn is_throttled(&self) -> bool {
        self.status() == Some(429) || self.code() == Some("TooManyRequests")
    }

    /// Whether trying the same call again later may succeed (throttling,
    /// server errors, transport failures, timeouts).
    pub fn is_transient(&self) -> bool {
        match self {
            ArmError::Http { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            ArmError::Transport { .. } | ArmError::Timeout { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envelope_with_details() {
        let body = br#"{"error":{"code":"DeploymentFailed","message":"At least one resource deployment operation failed.","details":[{"code":"InaccessibleImage","message":"The image 'x' is not accessible."}]}}"#;
        let d = parse_error_body(body).unwrap();
        assert_eq!(d.code.as_deref(), Some("DeploymentFailed"));
        assert_eq!(d.details.len(), 1);
        assert_eq!(d.details[0].code.as_deref(), Some("InaccessibleImage"));
    }

    #[test]
    fn parses_flat_and_rejects_garbage() {
        let d = parse_error_body(br#"{"code":"Conflict","message":"busy"}"#).unwrap();
        assert_eq!(d.code.as_deref(), Some("Conflict"));
        assert!(parse_error_body(b"<html>").is_none());
        assert!(parse_error_body(b"").is_none());
        assert!(parse_error_body(b"{}").is_none());
    }

    #[test]
    fn helpers_and_message() {
        let e = ArmError::Http {
            method: "GET".into(),
            path: "/subscriptions/s/resourceGroups/rg".into(),
            status: 404,
            code: Some("ResourceGroupNotFound".into()),
            message: "Resource group 'rg' could not be found.".into(),
            details: vec![],
            request_id: "rid-1".into(),
            retry_after: None,
        };
        assert!(e.is_not_found() && !e.is_throttled() && !e.is_transient());
        assert_eq!(e.code(), Some("ResourceGroupNotFound"));
        assert_eq!(e.request_id(), Some("rid-1"));
        assert_eq!(
            e.to_string(),
            "GET /subscriptions/s/resourceGroups/rg failed with HTTP 404 ResourceGroupNotFound: Resource group 'rg' could not be found. (request id rid-1)"
        );
    }
}
