//! [`ArmClient`]: generic ARM operations over the pipeline.
//!
//! The client knows ARM's conventions, not its resources: paths plus an
//! `api-version`, JSON bodies, the error envelope, `nextLink` paging and
//! long-running operations. Resource shapes are the caller's `T`/`B`
//! (`serde` types), so this crate does not depend on any DTO crate.
//!
//! Operations and what they return:
//!
//! | Call | Success | Notes |
//! |---|---|---|
//! | [`ArmClient::get`] | `T` | any non-2xx is an error |
//! | [`ArmClient::get_opt`] | `Option<T>` | 404 → `None` |
//! | [`ArmClient::put`] | [`PutOutcome`] | 200/201; carries a [`Poller`] when the operation is still running |
//! | [`ArmClient::delete`] | [`DeleteOutcome`] | 204/404 → `NotFound`, 200 → `Deleted`, 202 → `Accepted(Poller)` |
//! | [`ArmClient::post_action`] | [`ActionOutcome`] | 200/202/204; a [`Poller`] on 202 with a location header |
//! | [`ArmClient::list`] | `Vec<T>` | follows `nextLink` verbatim |
//!
//! **Token safety.** Absolute URLs that come from the server (`nextLink`,
//! `Azure-AsyncOperation`, `Location`) are only followed when they point at
//! the configured endpoint's scheme, host and port; anything else is refused
//! with [`ArmError::InvalidUrl`] rather than sending the bearer token there.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::credential::{CachedCredential, TokenCredential};
use crate::error::ArmError;
use crate::http::{build_http_client, default_user_agent, HttpClientConfig, Timeouts};
use crate::lro::{LroKind, PollMode, Poller};
use crate::metrics::ArmMetrics;
use crate::pipeline::{http_error, Pipeline, RawResponse};
use crate::retry::RetryPolicy;
use crate::throttle::{Throttle, ThrottleConfig};

/// How long-running operations are polled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollingConfig {
    /// Wait between polls when the server sends no `Retry-After`.
    pub default_interval: Duration,
    /// Lower bound for the wait (also applied to `Retry-After`).
    pub min_interval: Duration,
    /// Give up with [`ArmError::Timeout`] after this long (`None` = wait until
    /// terminal; wrap the future in `tokio::time::timeout` for other limits).
    pub max_wait: Option<Duration>,
}

impl Default for PollingConfig {
    fn default() -> Self {
        PollingConfig {
            default_interval: Duration::from_secs(5),
            min_interval: Duration::from_secs(1),
            max_wait: Some(Duration::from_secs(1800)),
        }
    }
}

/// Everything [`ArmClient::new`] needs.
#[derive(Clone)]
pub struct ArmClientConfig {
    /// ARM base URL (`https://management.azure.com/`, or an emulator).
    pub endpoint: Url,
    /// Token source; the client caches its tokens.
    pub credential: Arc<dyn TokenCredential>,
    /// Token scope, e.g. `https://management.azure.com/.default`.
    pub scope: String,
    /// Retry behaviour of every request.
    pub retry: RetryPolicy,
    /// Client-side token buckets.
    pub throttle: ThrottleConfig,
    /// Extra PEM CA file trusted for HTTPS.
    pub ca_file: Option<PathBuf>,
    /// `User-Agent`.
    pub user_agent: String,
    /// Connect/request time limits.
    pub timeouts: Timeouts,
    /// Long-running operation polling.
    pub polling: PollingConfig,
    /// Refresh cached tokens this long before they expire.
    pub token_refresh_margin: Duration,
    /// Use this HTTP client instead of building one (share it with the
    /// credentials; `ca_file`, `user_agent` and `timeouts` are then ignored).
    pub http_client: Option<reqwest::Client>,
}

impl std::fmt::Debug for ArmClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClientConfig")
            .field("endpoint", &self.endpoint.as_str())
            .field("credential", &self.credential.name())
            .field("scope", &self.scope)
            .field("retry", &self.retry)
            .field("throttle", &self.throttle)
            .field("ca_file", &self.ca_file)
            .field("user_agent", &self.user_agent)
            .field("timeouts", &self.timeouts)
            .field("polling", &self.polling)
            .field("token_refresh_margin", &self.token_refresh_margin)
            .field("shared_http_client", &self.http_client.is_some())
            .finish()
    }
}

impl ArmClientConfig {
    /// Defaults for everything but the endpoint and the credential.
    pub fn new(endpoint: Url, credential: Arc<dyn TokenCredential>) -> Self {
        ArmClientConfig {
            endpoint,
            credential,
            scope: "https://management.azure.com/.default".to_owned(),
            retry: RetryPolicy::default(),
            throttle: ThrottleConfig::default(),
            ca_file: None,
            user_agent: default_user_agent(),
            timeouts: Timeouts::default(),
            polling: PollingConfig::default(),
            token_refresh_margin: CachedCredential::DEFAULT_REFRESH_MARGIN,
            http_client: None,
        }
    }

    /// Defaults for `cloud`: its ARM endpoint and token scope.
    pub fn for_cloud(
        cloud: &crate::cloud::AzureCloud,
        credential: Arc<dyn TokenCredential>,
    ) -> Self {
        let mut c = Self::new(cloud.resource_manager.clone(), credential);
        c.scope = cloud.token_scope.clone();
        c
    }
}

pub(crate) struct Inner {
    pub(crate) endpoint: Url,
    pub(crate) pipeline: Pipeline,
    pub(crate) polling: PollingConfig,
}

/// A cheap-to-clone handle to an ARM endpoint.
#[derive(Clone)]
pub struct ArmClient {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("endpoint", &self.inner.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

/// Result of a PUT.
#[derive(Debug)]
pub struct PutOutcome<T> {
    /// HTTP status (200 updated, 201 created).
    pub status: u16,
    /// The response body, if there was one.
    pub body: Option<T>,
    /// `x-ms-request-id`.
    pub request_id: String,
    /// Set when the operation is still running.
    pub poller: Option<Poller>,
    /// Where to GET the resource if the PUT returned no body.
    resource: (ArmClient, String, String),
}

impl<T: DeserializeOwned> PutOutcome<T> {
    /// Waits for the operation to finish and returns the final resource.
    pub async fn wait(self) -> Result<T, ArmError> {
        match (self.poller, self.body) {
            (Some(p), _) => p.wait_for_resource().await,
            (None, Some(body)) => Ok(body),
            (None, None) => {
                let (client, path, api_version) = self.resource;
                client.get(&path, &api_version).await
            }
        }
    }
}

/// Result of a DELETE.
#[derive(Debug)]
pub enum DeleteOutcome {
    /// 204 or 404: there was nothing to delete.
    NotFound,
    /// 200: deleted synchronously.
    Deleted,
    /// 202: deletion is running; poll it.
    Accepted(Poller),
}

impl DeleteOutcome {
    /// Waits for a running deletion to finish (returns at once otherwise).
    pub async fn wait(self) -> Result<(), ArmError> {
        match self {
            DeleteOutcome::Accepted(p) => p.wait().await.map(|_| ()),
            _ => Ok(()),
        }
    }
}

/// Result of a POST action.
#[derive(Debug)]
pub struct ActionOutcome {
    /// HTTP status.
    pub status: u16,
    /// The body, if any (JSON).
    pub body: Option<serde_json::Value>,
    /// `x-ms-request-id`.
    pub request_id: String,
    /// Set when the action is still running (202 with a location header).
    pub poller: Option<Poller>,
}

impl ActionOutcome {
    /// Waits for a running action and returns the final body, if any.
    pub async fn wait(self) -> Result<Option<serde_json::Value>, ArmError> {
        match self.poller {
            Some(p) => p.wait().await,
            None => Ok(self.body),
        }
    }

    /// Decodes the (synchronous) body as `T`.
    pub fn body_as<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        self.body.clone().map(serde_json::from_value).transpose()
    }
}

#[derive(Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    #[serde(default, rename = "nextLink")]
    next_link: Option<String>,
}

/// Upper bound on pages in one `list` (guards against a server looping).
const MAX_PAGES: usize = 10_000;

impl ArmClient {
    /// Builds a client. The credential is wrapped in a [`CachedCredential`].
    pub fn new(config: ArmClientConfig) -> Result<Self, ArmError> {
        let http = match config.http_client {
            Some(c) => c,
            None => build_http_client(&HttpClientConfig {
                ca_file: config.ca_file.clone(),
                user_agent: config.user_agent.clone(),
                timeouts: config.timeouts,
            })
            .map_err(ArmError::Config)?,
        };
        if config.endpoint.cannot_be_a_base()
            || !matches!(config.endpoint.scheme(), "http" | "https")
        {
            return Err(ArmError::InvalidUrl {
                url: config.endpoint.to_string(),
                reason: "the ARM endpoint must be an http(s) base URL".to_owned(),
            });
        }
        let credential: Arc<dyn TokenCredential> = Arc::new(CachedCredential::with_refresh_margin(
            config.credential,
            config.token_refresh_margin,
        ));
        Ok(ArmClient {
            inner: Arc::new(Inner {
                endpoint: config.endpoint,
                pipeline: Pipeline {
                    http,
                    credential,
                    scope: config.scope,
                    retry: config.retry,
                    throttle: Throttle::new(&config.throttle),
                    metrics: Arc::new(ArmMetrics::default()),
                },
                polling: config.polling,
            }),
        })
    }

    /// The ARM endpoint.
    pub fn endpoint(&self) -> &Url {
        &self.inner.endpoint
    }

    /// The shared request counters.
    pub fn metrics(&self) -> Arc<ArmMetrics> {
        self.inner.pipeline.metrics.clone()
    }

    /// `{endpoint}{path}?api-version=...&{query}`.
    pub fn url_for(
        &self,
        path: &str,
        api_version: &str,
        query: &[(&str, &str)],
    ) -> Result<Url, ArmError> {
        if !path.starts_with('/') || path.contains('?') || path.contains('#') {
            return Err(ArmError::InvalidUrl {
                url: path.to_owned(),
                reason: "a resource path must start with '/' and carry no query or fragment"
                    .to_owned(),
            });
        }
        let base = self.inner.endpoint.as_str().trim_end_matches('/');
        let mut url = Url::parse(&format!("{base}{path}")).map_err(|e| ArmError::InvalidUrl {
            url: path.to_owned(),
            reason: e.to_string(),
        })?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", api_version);
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// Parses a server-provided absolute URL and checks that it points at our endpoint.
    pub(crate) fn trusted_url(&self, raw: &str) -> Result<Url, ArmError> {
        let redacted = raw.split('?').next().unwrap_or("").to_owned();
        let url = Url::parse(raw).map_err(|e| ArmError::InvalidUrl {
            url: redacted.clone(),
            reason: e.to_string(),
        })?;
        let ep = &self.inner.endpoint;
        if url.scheme() != ep.scheme()
            || url.host_str() != ep.host_str()
            || url.port_or_known_default() != ep.port_or_known_default()
        {
            return Err(ArmError::InvalidUrl {
                url: redacted,
                reason: format!(
                    "it is not on the ARM endpoint {ep}; refusing to send the bearer token there"
                ),
            });
        }
        Ok(url)
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&[u8]>,
    ) -> Result<RawResponse, ArmError> {
        self.inner.pipeline.send(method, url, body).await
    }

    fn decode<T: DeserializeOwned>(
        method: &Method,
        url: &Url,
        resp: &RawResponse,
    ) -> Result<T, ArmError> {
        serde_json::from_slice(&resp.body).map_err(|source| ArmError::Decode {
            method: method.to_string(),
            path: url.path().to_owned(),
            request_id: resp.request_id.clone(),
            source,
        })
    }

    fn encode<B: Serialize + ?Sized>(
        method: &Method,
        url: &Url,
        body: &B,
    ) -> Result<Vec<u8>, ArmError> {
        serde_json::to_vec(body).map_err(|source| ArmError::Decode {
            method: method.to_string(),
            path: url.path().to_owned(),
            request_id: "(not sent)".to_owned(),
            source,
        })
    }

    /// `GET path`: the resource as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        api_version: &str,
    ) -> Result<T, ArmError> {
        self.get_with_query(path, api_version, &[]).await
    }

    /// `GET path` with extra query parameters (e.g. `tail` for container logs).
    pub async fn get_with_query<T: DeserializeOwned>(
        &self,
        path: &str,
        api_version: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ArmError> {
        let url = self.url_for(path, api_version, query)?;
        let resp = self.send(Method::GET, &url, None).await?;
        if !resp.is_success() {
            return Err(http_error(&Method::GET, url.path(), &resp));
        }
        Self::decode(&Method::GET, &url, &resp)
    }

    /// `GET path`, with 404 mapped to `None`.
    pub async fn get_opt<T: DeserializeOwned>(
        &self,
        path: &str,
        api_version: &str,
    ) -> Result<Option<T>, ArmError> {
        let url = self.url_for(path, api_version, &[])?;
        let resp = self.send(Method::GET, &url, None).await?;
        if resp.status == 404 {
            return Ok(None);
        }
        if !resp.is_success() {
            return Err(http_error(&Method::GET, url.path(), &resp));
        }
        Self::decode(&Method::GET, &url, &resp).map(Some)
    }

    /// `HEAD path`: whether the resource exists (2xx → true, 404 → false).
    pub async fn exists(&self, path: &str, api_version: &str) -> Result<bool, ArmError> {
        let url = self.url_for(path, api_version, &[])?;
        let resp = self.send(Method::HEAD, &url, None).await?;
        match resp.status {
            404 => Ok(false),
            s if (200..300).contains(&s) => Ok(true),
            _ => Err(http_error(&Method::HEAD, url.path(), &resp)),
        }
    }

    /// `PUT path` with a JSON body (create or update).
    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        api_version: &str,
        body: &B,
    ) -> Result<PutOutcome<T>, ArmError> {
        let url = self.url_for(path, api_version, &[])?;
        let bytes = Self::encode(&Method::PUT, &url, body)?;
        let resp = self.send(Method::PUT, &url, Some(&bytes)).await?;
        if !resp.is_success() {
            return Err(http_error(&Method::PUT, url.path(), &resp));
        }
        let value: Option<serde_json::Value> = if resp.body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            Some(Self::decode(&Method::PUT, &url, &resp)?)
        };
        let state = value.as_ref().and_then(crate::lro::provisioning_state);
        let mode = self.lro_mode(
            &resp,
            state
                .as_deref()
                .is_some_and(|s| !crate::lro::is_terminal(s)),
        )?;
        let poller =
            mode.map(|m| Poller::new(self.clone(), LroKind::Put, path, api_version, m, &resp));
        let body = value
            .map(|v| {
                serde_json::from_value(v).map_err(|source| ArmError::Decode {
                    method: "PUT".to_owned(),
                    path: url.path().to_owned(),
                    request_id: resp.request_id.clone(),
                    source,
                })
            })
            .transpose()?;
        Ok(PutOutcome {
            status: resp.status,
            body,
            request_id: resp.request_id.clone(),
            poller,
            resource: (self.clone(), path.to_owned(), api_version.to_owned()),
        })
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str, api_version: &str) -> Result<DeleteOutcome, ArmError> {
        let url = self.url_for(path, api_version, &[])?;
        let resp = self.send(Method::DELETE, &url, None).await?;
        match resp.status {
            204 | 404 => Ok(DeleteOutcome::NotFound),
            202 => {
                let mode = self.lro_mode(&resp, true)?.unwrap_or(PollMode::ResourceGet);
                Ok(DeleteOutcome::Accepted(Poller::new(
                    self.clone(),
                    LroKind::Delete,
                    path,
                    api_version,
                    mode,
                    &resp,
                )))
            }
            s if (200..300).contains(&s) => Ok(DeleteOutcome::Deleted),
            _ => Err(http_error(&Method::DELETE, url.path(), &resp)),
        }
    }

    /// `POST path` (an action such as `stop`, `start`, `register`), with an
    /// optional JSON body.
    pub async fn post_action<B: Serialize + ?Sized>(
        &self,
        path: &str,
        api_version: &str,
        body: Option<&B>,
    ) -> Result<ActionOutcome, ArmError> {
        let url = self.url_for(path, api_version, &[])?;
        let bytes = body
            .map(|b| Self::encode(&Method::POST, &url, b))
            .transpose()?;
        let resp = self.send(Method::POST, &url, bytes.as_deref()).await?;
        if !resp.is_success() {
            return Err(http_error(&Method::POST, url.path(), &resp));
        }
        let value = if resp.body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            Some(Self::decode::<serde_json::Value>(
                &Method::POST,
                &url,
                &resp,
            )?)
        };
        let poller = if resp.status == 202 {
            self.lro_mode(&resp, false)?
                .map(|m| Poller::new(self.clone(), LroKind::Action, path, api_version, m, &resp))
        } else {
            None
        };
        Ok(ActionOutcome {
            status: resp.status,
            body: value,
            request_id: resp.request_id.clone(),
            poller,
        })
    }

    /// `POST path` without a body.
    pub async fn post_empty(
        &self,
        path: &str,
        api_version: &str,
    ) -> Result<ActionOutcome, ArmError> {
        self.post_action::<()>(path, api_version, None).await
    }

    /// `GET path` of a collection, following `nextLink` until it is absent.
    pub async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        api_version: &str,
    ) -> Result<Vec<T>, ArmError> {
        let mut url = self.url_for(path, api_version, &[])?;
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let resp = self.send(Method::GET, &url, None).await?;
            if !resp.is_success() {
                return Err(http_error(&Method::GET, url.path(), &resp));
            }
            let page: Page<T> = Self::decode(&Method::GET, &url, &resp)?;
            items.extend(page.value);
            match page.next_link.filter(|l| !l.is_empty()) {
                None => return Ok(items),
                Some(next) => {
                    let next = self.trusted_url(&next)?;
                    if next == url {
                        return Err(ArmError::InvalidUrl {
                            url: next.path().to_owned(),
                            reason:
                                "nextLink points at the page just read; stopping to avoid a loop"
                                    .to_owned(),
                        });
                    }
                    url = next;
                }
            }
        }
        Err(ArmError::InvalidUrl {
            url: path.to_owned(),
            reason: format!("more than {MAX_PAGES} pages; stopping"),
        })
    }

    /// Picks how to poll: `Azure-AsyncOperation`, else `Location`, else the
    /// resource itself when `resource_fallback` is set.
    fn lro_mode(
        &self,
        resp: &RawResponse,
        resource_fallback: bool,
    ) -> Result<Option<PollMode>, ArmError> {
        if let Some(u) = resp.header("azure-asyncoperation") {
            return Ok(Some(PollMode::AsyncOperation(self.trusted_url(u)?)));
        }
        if let Some(u) = resp.header("location") {
            return Ok(Some(PollMode::Location(self.trusted_url(u)?)));
        }
        Ok(resource_fallback.then_some(PollMode::ResourceGet))
    }
}
