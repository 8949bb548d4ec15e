//! Long-running operations: [`Poller`].
//!
//! ARM signals a running operation in one of three ways, and this module
//! handles them in the documented order:
//!
//! 1. **`Azure-AsyncOperation`** — GET that URL; its body is
//!    `{"status": "InProgress"|"Succeeded"|"Failed"|"Canceled", "error"?}`.
//! 2. **`Location`** — GET that URL; `202` means running, `200`/`201`/`204`
//!    means done (possibly with the final body); an error status means failed.
//! 3. **Neither** — GET the resource itself and read
//!    `properties.provisioningState` (a DELETE is done when the GET says 404).
//!
//! Between polls the poller waits for the server's `Retry-After` (never less
//! than `min_interval`), else `default_interval` (see
//! [`crate::PollingConfig`]). A `Failed`/`Canceled` operation becomes
//! [`ArmError::OperationFailed`] with the operation's `error` code and message.
//! Unknown statuses count as still running, as the ARM guidelines require.

use std::time::{Instant, SystemTime};

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use crate::client::ArmClient;
use crate::error::{parse_error_body, ArmError, ArmErrorDetail};
use crate::pipeline::{http_error, RawResponse};
use crate::retry::parse_retry_after;

/// How a [`Poller`] learns the operation's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PollMode {
    /// GET the `Azure-AsyncOperation` URL and read `status`.
    AsyncOperation(Url),
    /// GET the `Location` URL until it stops answering 202.
    Location(Url),
    /// GET the resource and read `properties.provisioningState`.
    ResourceGet,
}

/// Which request started the operation (decides what "done" means).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LroKind {
    /// Create/update: done when the resource is `Succeeded`.
    Put,
    /// Delete: done when the resource is gone.
    Delete,
    /// POST action.
    Action,
}

/// The state after one poll.
#[derive(Clone, Debug, PartialEq)]
pub enum PollStatus {
    /// Still running; the string is the status the server reported.
    InProgress(String),
    /// Finished successfully; the body of the final poll, if any.
    Succeeded(Option<Value>),
}

/// `properties.provisioningState` of a resource body.
pub fn provisioning_state(body: &Value) -> Option<String> {
    body.get("properties")?
        .get("provisioningState")?
        .as_str()
        .map(str::to_owned)
}

/// Whether an ARM status string is terminal (`Succeeded`, `Failed`, `Canceled`/`Cancelled`).
pub fn is_terminal(status: &str) -> bool {
    ["succeeded", "failed", "canceled", "cancelled"].contains(&status.to_ascii_lowercase().as_str())
}

/// Follows one long-running operation to its end.
#[derive(Debug)]
pub struct Poller {
    client: ArmClient,
    kind: LroKind,
    resource_path: String,
    api_version: String,
    mode: PollMode,
    next_delay: std::time::Duration,
    request_id: String,
}

impl Poller {
    pub(crate) fn new(
        client: ArmClient,
        kind: LroKind,
        resource_path: &str,
        api_version: &str,
        mode: PollMode,
        initial: &RawResponse,
    ) -> Self {
        let mut p = Poller {
            client,
            kind,
            resource_path: resource_path.to_owned(),
            api_version: api_version.to_owned(),
            mode,
            next_delay: std::time::Duration::ZERO,
            request_id: initial.request_id.clone(),
        };
        p.next_delay = p.delay_from(initial);
        p
    }

    /// Resumes polling an operation whose URL the caller kept (e.g. after a restart).
    pub fn resume(
        client: ArmClient,
        kind: LroKind,
        resource_path: &str,
        api_version: &str,
        mode: PollMode,
    ) -> Self {
        let next_delay = client.inner.polling.default_interval;
        Poller {
            client,
            kind,
            resource_path: resource_path.to_owned(),
            api_version: api_version.to_owned(),
            mode,
            next_delay,
            request_id: String::new(),
        }
    }

    /// How this poller polls.
    pub fn mode(&self) -> &PollMode {
        &self.mode
    }

    /// The wait the server asked for before the next poll (or the default).
    pub fn next_delay(&self) -> std::time::Duration {
        self.next_delay
    }

    fn delay_from(&self, resp: &RawResponse) -> std::time::Duration {
        let polling = &self.client.inner.polling;
        match parse_retry_after(&resp.headers, SystemTime::now()) {
            Some(d) => d.max(polling.min_interval),
            None => polling.default_interval.max(polling.min_interval),
        }
    }

    fn failed(&self, status: &str, error: Option<ArmErrorDetail>, request_id: &str) -> ArmError {
        let e = error.unwrap_or_default();
        ArmError::OperationFailed {
            path: self.resource_path.clone(),
            status: status.to_owned(),
            code: e.code,
            message: e.message,
            details: e.details,
            request_id: request_id.to_owned(),
        }
    }

    /// Polls once (no waiting). `Err` for failed operations and request errors.
    pub async fn poll(&mut self) -> Result<PollStatus, ArmError> {
        let url = match &self.mode {
            PollMode::AsyncOperation(u) | PollMode::Location(u) => u.clone(),
            PollMode::ResourceGet => {
                self.client
                    .url_for(&self.resource_path, &self.api_version, &[])?
            }
        };
        let resp = self.client.send(Method::GET, &url, None).await?;
        self.request_id = resp.request_id.clone();
        self.next_delay = self.delay_from(&resp);
        let body: Option<Value> = if resp.body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            serde_json::from_slice(&resp.body).ok()
        };
        let status = match &self.mode {
            PollMode::AsyncOperation(_) => {
                if !resp.is_success() {
                    return Err(http_error(&Method::GET, url.path(), &resp));
                }
                let status = body
                    .as_ref()
                    .and_then(|b| b.get("status"))
                    .and_then(Value::as_str)
                    .unwrap_or("InProgress")
                    .to_owned();
                self.classify(status, body, |b| b.get("error").cloned(), &resp)?
            }
            PollMode::Location(_) => match resp.status {
                202 => PollStatus::InProgress("Accepted".to_owned()),
                s if (200..300).contains(&s) => {
                    // Some services answer the Location URL with an operation
                    // status document instead of the final resource.
                    match body
                        .as_ref()
                        .and_then(|b| b.get("status"))
                        .and_then(Value::as_str)
                    {
                        Some(st) if is_terminal(st) && !st.eq_ignore_ascii_case("succeeded") => {
                            let err = body.as_ref().and_then(|b| b.get("error").cloned());
                            return Err(self.failed(
                                st,
                                err.and_then(|e| serde_json::from_value(e).ok()),
                                &resp.request_id,
                            ));
                        }
                        _ => PollStatus::Succeeded(body),
                    }
                }
                404 if self.kind == LroKind::Delete => PollStatus::Succeeded(None),
                s if (400..500).contains(&s) && s != 408 && s != 429 => {
                    return Err(self.failed(
                        "Failed",
                        parse_error_body(&resp.body),
                        &resp.request_id,
                    ));
                }
                _ => return Err(http_error(&Method::GET, url.path(), &resp)),
            },
            PollMode::ResourceGet => match resp.status {
                404 if self.kind == LroKind::Delete => PollStatus::Succeeded(None),
                s if (200..300).contains(&s) => {
                    let state = body
                        .as_ref()
                        .and_then(provisioning_state)
                        .unwrap_or_else(|| "Succeeded".to_owned());
                    if self.kind == LroKind::Delete && state.eq_ignore_ascii_case("succeeded") {
                        // Still there: a deletion is only done when the GET says 404.
                        PollStatus::InProgress("Deleting".to_owned())
                    } else {
                        self.classify(
                            state,
                            body,
                            |b| b.get("properties")?.get("error").cloned(),
                            &resp,
                        )?
                    }
                }
                _ => return Err(http_error(&Method::GET, url.path(), &resp)),
            },
        };
        tracing::debug!(
            path = %self.resource_path,
            request_id = %self.request_id,
            status = ?status_label(&status),
            "polled long-running operation"
        );
        Ok(status)
    }

    fn classify(
        &self,
        status: String,
        body: Option<Value>,
        error_of: impl Fn(&Value) -> Option<Value>,
        resp: &RawResponse,
    ) -> Result<PollStatus, ArmError> {
        if status.eq_ignore_ascii_case("succeeded") {
            Ok(PollStatus::Succeeded(body))
        } else if is_terminal(&status) {
            let err = body
                .as_ref()
                .and_then(error_of)
                .and_then(|e| serde_json::from_value(e).ok());
            Err(self.failed(&status, err, &resp.request_id))
        } else {
            Ok(PollStatus::InProgress(status))
        }
    }

    /// Polls until the operation finishes; returns the last poll's body.
    ///
    /// Stops with [`ArmError::Timeout`] after `PollingConfig::max_wait`.
    pub async fn wait(mut self) -> Result<Option<Value>, ArmError> {
        let started = Instant::now();
        let max_wait = self.client.inner.polling.max_wait;
        loop {
            if let Some(max) = max_wait {
                if started.elapsed() + self.next_delay > max {
                    return Err(ArmError::Timeout {
                        path: self.resource_path.clone(),
                        waited: started.elapsed(),
                        request_id: self.request_id.clone(),
                    });
                }
            }
            tokio::time::sleep(self.next_delay).await;
            if let PollStatus::Succeeded(body) = self.poll().await? {
                return Ok(body);
            }
        }
    }

    /// Waits, then returns the final resource: the last body when polling the
    /// resource itself, else a fresh GET (the ARM rule for PUT operations).
    pub async fn wait_for_resource<T: DeserializeOwned>(self) -> Result<T, ArmError> {
        let client = self.client.clone();
        let (path, api_version, mode) = (
            self.resource_path.clone(),
            self.api_version.clone(),
            self.mode.clone(),
        );
        let body = self.wait().await?;
        match (mode, body) {
            (PollMode::ResourceGet, Some(b)) => {
                serde_json::from_value(b).map_err(|source| ArmError::Decode {
                    method: "GET".to_owned(),
                    path: path.clone(),
                    request_id: String::new(),
                    source,
                })
            }
            _ => client.get(&path, &api_version).await,
        }
    }
}

fn status_label(s: &PollStatus) -> &str {
    match s {
        PollStatus::InProgress(st) => st,
        PollStatus::Succeeded(_) => "Succeeded",
    }
}
