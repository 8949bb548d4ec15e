//! The request pipeline: throttle → authenticate → send → log/metrics, inside
//! the one retry loop.
//!
//! Order matters, as in the Azure SDK pipeline (per-call → retry → per-try →
//! logging → transport):
//!
//! 1. per call: a fresh `x-ms-client-request-id`, kept across retries so the
//!    server-side logs tie the attempts together;
//! 2. per try: wait for a client-side throttle token (a retry is a new ARM
//!    request and costs a token too), then get a bearer token (cached, so
//!    this is free except near expiry), then send and read the whole body
//!    (a connection reset mid-body is retried like any transport error);
//! 3. every try is logged at debug level in a span with method, path (never
//!    the query), status, `x-ms-request-id` and elapsed time, and counted in
//!    [`ArmMetrics`].
//!
//! Credential failures are not retried here: the credential has its own
//! retries, and a wrong secret will not become right by asking again.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use tracing::Instrument;
use url::Url;

use crate::credential::{CredentialError, TokenCredential};
use crate::error::{parse_error_body, ArmError};
use crate::metrics::{operation_label, ArmMetrics};
use crate::retry::{self, RetryPolicy, Verdict};
use crate::throttle::{OperationClass, Throttle};

/// A fully read response.
#[derive(Debug)]
pub struct RawResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Vec<u8>,
    /// `x-ms-request-id`, else the client request id we sent.
    pub request_id: String,
}

impl RawResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A header as a string, if present and valid.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

enum AttemptError {
    Credential(CredentialError),
    Transport(reqwest::Error),
}

pub(crate) struct Pipeline {
    pub(crate) http: reqwest::Client,
    pub(crate) credential: Arc<dyn TokenCredential>,
    pub(crate) scope: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) throttle: Throttle,
    pub(crate) metrics: Arc<ArmMetrics>,
}

impl Pipeline {
    /// Sends one logical request (with retries) and returns the final
    /// response whatever its status; transport and credential failures are errors.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&[u8]>,
    ) -> Result<RawResponse, ArmError> {
        let path = url.path().to_owned();
        let operation = operation_label(method.as_str(), &path);
        let class = OperationClass::of(&method);
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let span = tracing::debug_span!(
            "arm_request",
            method = %method,
            path = %path,
            operation = %operation,
            client_request_id = %client_request_id,
        );
        let result = retry::run(
            &self.retry,
            |r: &Result<RawResponse, AttemptError>| match r {
                Ok(resp) if resp.status < 400 => Verdict::Done,
                Ok(resp) => Verdict::Status {
                    status: resp.status,
                    retry_after: retry::parse_retry_after(&resp.headers, SystemTime::now()),
                },
                Err(AttemptError::Transport(_)) => Verdict::Transient,
                Err(AttemptError::Credential(_)) => Verdict::Done,
            },
            |e| {
                self.metrics.record_retry();
                tracing::info!(
                    attempt = e.attempt,
                    status = e.status,
                    delay_ms = e.delay.as_millis() as u64,
                    server_delay = e.from_server,
                    "retrying ARM request"
                );
            },
            |attempt| {
                self.attempt(
                    attempt,
                    &method,
                    url,
                    body,
                    class,
                    &operation,
                    &client_request_id,
                )
            },
        )
        .instrument(span)
        .await;
        match result {
            Ok(resp) => Ok(resp),
            Err(AttemptError::Credential(e)) => Err(ArmError::Credential(e)),
            Err(AttemptError::Transport(e)) => Err(ArmError::Transport {
                method: method.to_string(),
                path,
                kind: crate::credential::managed_identity::transport_kind(&e),
                request_id: client_request_id,
                source: e.without_url(),
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        attempt: u32,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
        class: OperationClass,
        operation: &str,
        client_request_id: &str,
    ) -> Result<RawResponse, AttemptError> {
        let waited = self.throttle.acquire(class).await;
        self.metrics.record_throttle_wait(waited);
        let token = self
            .credential
            .get_token(&self.scope)
            .await
            .map_err(AttemptError::Credential)?;
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", token.token.expose())).map_err(|_| {
                AttemptError::Credential(CredentialError::InvalidResponse {
                    credential: self.credential.name(),
                    reason: "the access token contains characters not allowed in an HTTP header"
                        .to_owned(),
                })
            })?;
        auth.set_sensitive(true);
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, auth)
            .header("x-ms-client-request-id", client_request_id)
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(b.to_vec());
        }
        let started = Instant::now();
        let sent = async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?.to_vec();
            Ok::<_, reqwest::Error>((status, headers, body))
        }
        .await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match sent {
            Ok((status, headers, body)) => {
                let request_id = headers
                    .get("x-ms-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(client_request_id)
                    .to_owned();
                self.metrics.record_response(operation, status);
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                };
                // ARM reports what is left of the principal's bucket for this class.
                let remaining = header(match class {
                    OperationClass::Read => "x-ms-ratelimit-remaining-subscription-reads",
                    OperationClass::Write => "x-ms-ratelimit-remaining-subscription-writes",
                    OperationClass::Delete => "x-ms-ratelimit-remaining-subscription-deletes",
                });
                tracing::debug!(
                    attempt,
                    status,
                    request_id = %request_id,
                    correlation_id = header("x-ms-correlation-request-id"),
                    ratelimit_remaining = remaining,
                    elapsed_ms,
                    "ARM response"
                );
                Ok(RawResponse {
                    status,
                    headers,
                    body,
                    request_id,
                })
            }
            Err(e) => {
                self.metrics.record_response(operation, 0);
                tracing::debug!(attempt, elapsed_ms, error = %e.without_url_ref(), "ARM request failed in transport");
                Err(AttemptError::Transport(e))
            }
        }
    }
}

/// Helper to print a reqwest error without its URL (which may carry a query).
trait WithoutUrlRef {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrlRef for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let kind = crate::credential::managed_identity::transport_kind(self);
        match std::error::Error::source(self) {
            Some(src) => format!("{kind}: {src}"),
            None => kind.to_owned(),
        }
    }
}

/// Builds [`ArmError::Http`] from a non-success response.
pub(crate) fn http_error(method: &Method, path: &str, resp: &RawResponse) -> ArmError {
    let detail = parse_error_body(&resp.body);
    let (code, message, details) = match detail {
        Some(d) => (
            d.code,
            d.message.unwrap_or_else(|| "no error message".to_owned()),
            d.details,
        ),
        None => {
            let text = String::from_utf8_lossy(&resp.body);
            let excerpt: String = text
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            let message = if excerpt.trim().is_empty() {
                "empty response body".to_owned()
            } else {
                excerpt
            };
            (None, message, Vec::new())
        }
    };
    ArmError::Http {
        method: method.to_string(),
        path: path.to_owned(),
        status: resp.status,
        code,
        message,
        details,
        request_id: resp.request_id.clone(),
        retry_after: retry::parse_retry_after(&resp.headers, SystemTime::now()),
    }
}
