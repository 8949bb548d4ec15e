//! The HTTP client for Prefect's API, as a worker uses it.
//!
//! What it does for every request, mirroring Prefect's own client so servers treat us exactly
//! like a current Python worker:
//! - **Headers.** `X-PREFECT-API-VERSION: 0.8.4` and `User-Agent: prefect/3.9.1 (API 0.8.4)`.
//!   The server parses the User-Agent with `^prefect/(x.y.z) \(API ..\)$` and switches
//!   behaviour on the version (concurrency lease checks from 3.4.11, pool storage fields from
//!   3.3.8), so we claim the Prefect release we are tested against and identify ourselves in
//!   a separate `X-Prefect-Client` header instead of in the User-Agent.
//! - **Auth.** `PREFECT_API_AUTH_STRING` → `Authorization: Basic base64(user:pass)` (it wins when
//!   both are set, as in Prefect 3.2+); `PREFECT_API_KEY` → `Authorization: Bearer <key>`.
//! - **CSRF.** Before the first mutating request to a self-hosted server, one
//!   `GET /csrf-token?client=<uuid>`; a 422 ("CSRF protection is disabled") or 404 turns it off.
//! - **Retries** — one loop, driven by [`RetryPolicy`]: 408/429/502/503 and transport errors, up
//!   to 5 retries, `Retry-After` wins, else `2^n` s with 20% jitter; a `Prefect-Maintenance:
//!   true` response is retried without limit.
//! - **Errors.** 404 → [`ApiError::NotFound`], 409 → [`ApiError::AlreadyExists`]; every error
//!   names the method and path, never a credential.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::models::*;

/// The API version header value Prefect has sent from 2.x through 3.9.
pub const API_VERSION: &str = "0.8.4";
/// The Prefect release whose worker behaviour we reproduce (see the module doc).
pub const PREFECT_VERSION: &str = "3.9.1";
/// Default Cloud API prefix, as `PREFECT_CLOUD_API_URL`.
pub const DEFAULT_CLOUD_API_URL: &str = "https://api.prefect.cloud/api";

/// Errors from the Prefect API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered 404.
    #[error("{method} {path}: not found ({detail})")]
    NotFound {
        method: Method,
        path: String,
        detail: String,
    },
    /// The server answered 409.
    #[error("{method} {path}: already exists ({detail})")]
    AlreadyExists {
        method: Method,
        path: String,
        detail: String,
    },
    /// Credentials were refused (401/403).
    #[error("{method} {path}: the Prefect API refused our credentials (HTTP {status}); check PREFECT_API_KEY / PREFECT_API_AUTH_STRING")]
    Unauthorized {
        method: Method,
        path: String,
        status: u16,
    },
    /// Any other non-success status, after retries.
    #[error("{method} {path}: HTTP {status}: {detail}")]
    Status {
        method: Method,
        path: String,
        status: u16,
        detail: String,
    },
    /// The server could not be reached (after retries).
    #[error("{method} {path}: cannot reach the Prefect API")]
    Transport {
        method: Method,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    /// The response body did not have the expected shape.
    #[error("{method} {path}: unexpected response body: {message}")]
    Decode {
        method: Method,
        path: String,
        message: String,
    },
    /// The client configuration is invalid.
    #[error("invalid Prefect API configuration: {0}")]
    Config(String),
}

impl ApiError {
    /// True for 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::NotFound { .. })
    }
    /// True when retrying later may succeed (server unreachable or 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Transport { .. } => true,
            ApiError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}

/// How the client authenticates.
#[derive(Clone, Default)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// `PREFECT_API_KEY`: Bearer token.
    ApiKey(String),
    /// `PREFECT_API_AUTH_STRING` (`user:pass`): HTTP Basic.
    AuthString(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret itself.
        match self {
            Auth::None => f.write_str("None"),
            Auth::ApiKey(_) => f.write_str("ApiKey(***)"),
            Auth::AuthString(_) => f.write_str("AuthString(***)"),
        }
    }
}

impl Auth {
    /// Auth string wins over API key, as in Prefect 3.2+.
    pub fn from_settings(api_key: Option<String>, auth_string: Option<String>) -> Self {
        match (
            auth_string.filter(|s| !s.is_empty()),
            api_key.filter(|s| !s.is_empty()),
        ) {
            (Some(s), _) => Auth::AuthString(s),
            (None, Some(k)) => Auth::ApiKey(k),
            (None, None) => Auth::None,
        }
    }

    /// The `Authorization` header value, if any.
    pub fn header(&self) -> Option<String> {
        match self {
            Auth::None => None,
            Auth::ApiKey(k) => Some(format!("Bearer {k}")),
            Auth::AuthString(s) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )),
        }
    }

    /// The token sent in the first websocket frame (`{"type":"auth","token":..}`).
    pub fn websocket_token(&self) -> Option<&str> {
        match self {
            Auth::None => None,
            Auth::ApiKey(k) => Some(k),
            Auth::AuthString(s) => Some(s),
        }
    }
}

/// Retry behaviour of the one retry loop in [`PrefectClient::send`].
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt (Prefect: 5).
    pub max_retries: u32,
    /// Base of the exponential backoff (Prefect: 2 s → 2, 4, 8, ...).
    pub base_delay: Duration,
    /// Upper bound for one wait, including a server's `Retry-After`.
    pub max_delay: Duration,
    /// Fraction of random jitter added to computed delays (Prefect: 0.2).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// Whether a status is worth another attempt.
    pub fn retries_status(status: StatusCode) -> bool {
        matches!(status.as_u16(), 408 | 429 | 502 | 503)
    }

    /// The wait before retry number `attempt` (1-based); `retry_after` from the server wins.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(self.max_delay);
        }
        let exp = self.base_delay.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1) as i32);
        let jittered = exp * (1.0 + self.jitter * fastrand::f64());
        Duration::from_secs_f64(jittered.min(self.max_delay.as_secs_f64()))
    }
}

/// Configuration of a [`PrefectClient`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `PREFECT_API_URL`, e.g. `http://127.0.0.1:4200/api`.
    pub api_url: String,
    pub auth: Auth,
    /// `PREFECT_CLOUD_API_URL`; URLs under it are treated as Prefect Cloud.
    pub cloud_api_url: String,
    /// Sent as `X-Prefect-Worker-Name` when set.
    pub worker_name: Option<String>,
    pub retry: RetryPolicy,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl ClientConfig {
    /// A config for `api_url` with defaults for everything else.
    pub fn new(api_url: impl Into<String>) -> Self {
        ClientConfig {
            api_url: api_url.into(),
            auth: Auth::None,
            cloud_api_url: DEFAULT_CLOUD_API_URL.into(),
            worker_name: None,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
enum Csrf {
    Unknown,
    Disabled,
    Token {
        token: String,
        client: String,
        expiration: Option<DateTime<Utc>>,
    },
}

/// A cheap-to-clone handle on the Prefect API.
#[derive(Clone)]
pub struct PrefectClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    config: ClientConfig,
    is_cloud: bool,
    csrf: Mutex<Csrf>,
    csrf_client_id: String,
    server_version: tokio::sync::OnceCell<ServerVersion>,
}

/// The server's version, from `GET /admin/version`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// The raw string the server sent (`"3.9.1"`).
    pub raw: String,
}

impl ServerVersion {
    /// Parse `x.y.z[anything]`; unparsable parts become 0.
    pub fn parse(raw: &str) -> Self {
        let cleaned = raw.trim().trim_matches('"');
        let mut nums = cleaned
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty());
        let mut next = || nums.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let (major, minor, patch) = (next(), next(), next());
        ServerVersion {
            major,
            minor,
            patch,
            raw: cleaned.to_string(),
        }
    }
    /// At least `major.minor.patch`.
    pub fn at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        (self.major, self.minor, self.patch) >= (major, minor, patch)
    }
    /// Prefect 3 or later: events, labels, `prefect flow-run execute`.
    pub fn is_v3(&self) -> bool {
        self.major >= 3
    }
    /// `PATCH /flow_runs/{id}/labels` exists from 3.2.
    pub fn supports_labels(&self) -> bool {
        self.at_least(3, 2, 0)
    }
    /// The `Submitting` sub-state is accepted from 3.6.22.
    pub fn supports_submitting(&self) -> bool {
        self.at_least(3, 6, 22)
    }
    /// OSS servers have the events websocket from 3.0.
    pub fn supports_events(&self) -> bool {
        self.is_v3()
    }
}

/// One request, kept as data so the retry loop can rebuild it for each attempt.
struct Request<'a> {
    method: Method,
    path: &'a str,
    query: &'a [(&'a str, String)],
    body: Option<&'a Value>,
}

impl PrefectClient {
    /// Build a client; nothing is sent until the first call.
    pub fn new(config: ClientConfig) -> Result<Self, ApiError> {
        let base = config.api_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ApiError::Config(format!(
                "PREFECT_API_URL must start with http:// or https:// (got {base:?}); for a local server use http://127.0.0.1:4200/api"
            )));
        }
        // reqwest is built without a default TLS crypto provider (ring keeps builds light);
        // install it process-wide once. A provider installed earlier by the host wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let is_cloud = base.starts_with(config.cloud_api_url.trim_end_matches('/'));
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ApiError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(PrefectClient {
            inner: Arc::new(Inner {
                http,
                base,
                is_cloud,
                csrf: Mutex::new(if is_cloud {
                    Csrf::Disabled
                } else {
                    Csrf::Unknown
                }),
                csrf_client_id: Uuid::new_v4().to_string(),
                config,
                server_version: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// The API base URL without a trailing slash.
    pub fn api_url(&self) -> &str {
        &self.inner.base
    }
    /// Credentials in use.
    pub fn auth(&self) -> &Auth {
        &self.inner.config.auth
    }
    /// Whether the URL is a Prefect Cloud workspace.
    pub fn is_cloud(&self) -> bool {
        self.inner.is_cloud
    }

    fn base_request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let mut rb = self
            .inner
            .http
            .request(method, url)
            .header("X-PREFECT-API-VERSION", API_VERSION)
            .header(
                reqwest::header::USER_AGENT,
                format!("prefect/{PREFECT_VERSION} (API {API_VERSION})"),
            )
            .header(
                "X-Prefect-Client",
                concat!("prefect-aci/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(h) = self.inner.config.auth.header() {
            rb = rb.header(reqwest::header::AUTHORIZATION, h);
        }
        if let Some(name) = &self.inner.config.worker_name {
            rb = rb.header("X-Prefect-Worker-Name", name);
        }
        rb
    }

    async fn csrf_headers(&self, method: &Method) -> Result<Vec<(&'static str, String)>, ApiError> {
        if matches!(*method, Method::GET | Method::HEAD) {
            return Ok(vec![]);
        }
        let mut guard = self.inner.csrf.lock().await;
        let needs_fetch = match &*guard {
            Csrf::Disabled => return Ok(vec![]),
            Csrf::Unknown => true,
            Csrf::Token { expiration, .. } => {
                expiration.is_some_and(|e| e <= Utc::now() + chrono::Duration::seconds(10))
            }
        };
        if needs_fetch {
            *guard = self.fetch_csrf().await?;
        }
        Ok(match &*guard {
            Csrf::Token { token, client, .. } => vec![
                ("Prefect-Csrf-Token", token.clone()),
                ("Prefect-Csrf-Client", client.clone()),
            ],
            _ => vec![],
        })
    }

    async fn fetch_csrf(&self) -> Result<Csrf, ApiError> {
        let path = "/csrf-token";
        let url = format!("{}{}", self.inner.base, path);
        let resp = self
            .base_request(Method::GET, &url)
            .query(&[("client", &self.inner.csrf_client_id)])
            .send()
            .await
            .map_err(|source| ApiError::Transport {
                method: Method::GET,
                path: path.into(),
                source,
            })?;
        match resp.status().as_u16() {
            404 | 422 => Ok(Csrf::Disabled),
            s if (200..300).contains(&s) => {
                let v: Value = resp.json().await.map_err(|e| ApiError::Decode {
                    method: Method::GET,
                    path: path.into(),
                    message: e.to_string(),
                })?;
                Ok(Csrf::Token {
                    token: v["token"].as_str().unwrap_or_default().to_string(),
                    client: v["client"]
                        .as_str()
                        .unwrap_or(&self.inner.csrf_client_id)
                        .to_string(),
                    expiration: v["expiration"]
                        .as_str()
                        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                        .map(|d| d.with_timezone(&Utc)),
                })
            }
            401 | 403 => Err(ApiError::Unauthorized {
                method: Method::GET,
                path: path.into(),
                status: resp.status().as_u16(),
            }),
            // Any other answer: behave like a server without CSRF rather than failing every write.
            _ => Ok(Csrf::Disabled),
        }
    }

    /// The one retry loop: every request of this client goes through here.
    async fn send(&self, req: Request<'_>) -> Result<reqwest::Response, ApiError> {
        let url = format!("{}{}", self.inner.base, req.path);
        let policy = &self.inner.config.retry;
        let mut attempt: u32 = 0;
        let mut csrf_refreshed = false;
        loop {
            let mut rb = self.base_request(req.method.clone(), &url);
            for (k, v) in self.csrf_headers(&req.method).await? {
                rb = rb.header(k, v);
            }
            if !req.query.is_empty() {
                rb = rb.query(req.query);
            }
            if let Some(body) = req.body {
                rb = rb.json(body);
            }
            let outcome = rb.send().await;
            let (retry_after, maintenance, err) = match outcome {
                Ok(resp) => {
                    let status = resp.status();
                    let maintenance = resp
                        .headers()
                        .get("Prefect-Maintenance")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                    if status.is_success() && !maintenance {
                        return Ok(resp);
                    }
                    let retry_after = parse_retry_after(resp.headers());
                    if status == StatusCode::FORBIDDEN && !csrf_refreshed {
                        // An expired or unknown CSRF token: fetch a new one once and resend.
                        let body = resp.text().await.unwrap_or_default();
                        if body.to_ascii_lowercase().contains("csrf") {
                            csrf_refreshed = true;
                            *self.inner.csrf.lock().await = Csrf::Unknown;
                            continue;
                        }
                        return Err(ApiError::Unauthorized {
                            method: req.method,
                            path: req.path.into(),
                            status: 403,
                        });
                    }
                    if !(maintenance || RetryPolicy::retries_status(status)) {
                        return Err(self.status_error(&req, resp).await);
                    }
                    let err = self.status_error(&req, resp).await;
                    (retry_after, maintenance, err)
                }
                Err(source) => {
                    if !(source.is_timeout() || source.is_connect() || source.is_request()) {
                        return Err(ApiError::Transport {
                            method: req.method,
                            path: req.path.into(),
                            source,
                        });
                    }
                    (
                        None,
                        false,
                        ApiError::Transport {
                            method: req.method.clone(),
                            path: req.path.into(),
                            source,
                        },
                    )
                }
            };
            attempt += 1;
            if !maintenance && attempt > policy.max_retries {
                return Err(err);
            }
            let delay = policy.delay(attempt.min(8), retry_after);
            tracing::debug!(method = %req.method, path = req.path, attempt, ?delay, error = %err, "retrying Prefect API request");
            tokio::time::sleep(delay).await;
        }
    }

    async fn status_error(&self, req: &Request<'_>, resp: reqwest::Response) -> ApiError {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| match &v["detail"] {
                Value::String(s) => Some(s.clone()),
                Value::Null => v["exception_message"].as_str().map(str::to_string),
                other => Some(other.to_string()),
            })
            .unwrap_or_else(|| truncate(&text, 500));
        let (method, path) = (req.method.clone(), req.path.to_string());
        match status {
            404 => ApiError::NotFound {
                method,
                path,
                detail,
            },
            409 => ApiError::AlreadyExists {
                method,
                path,
                detail,
            },
            401 | 403 => ApiError::Unauthorized {
                method,
                path,
                status,
            },
            _ => ApiError::Status {
                method,
                path,
                status,
                detail,
            },
        }
    }

    async fn json<T: DeserializeOwned>(&self, req: Request<'_>) -> Result<T, ApiError> {
        let (method, path) = (req.method.clone(), req.path.to_string());
        let resp = self.send(req).await?;
        let bytes = resp.bytes().await.map_err(|source| ApiError::Transport {
            method: method.clone(),
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
            method,
            path,
            message: e.to_string(),
        })
    }

    async fn no_content(&self, req: Request<'_>) -> Result<(), ApiError> {
        self.send(req).await.map(drop)
    }

    fn get<'a>(path: &'a str) -> Request<'a> {
        Request {
            method: Method::GET,
            path,
            query: &[],
            body: None,
        }
    }

    fn with_body<'a>(method: Method, path: &'a str, body: &'a Value) -> Request<'a> {
        Request {
            method,
            path,
            query: &[],
            body: Some(body),
        }
    }

    /// `GET /admin/version`, cached for the client's lifetime.
    pub async fn server_version(&self) -> Result<ServerVersion, ApiError> {
        self.inner
            .server_version
            .get_or_try_init(|| async {
                let v: Value = self.json(Self::get("/admin/version")).await?;
                Ok(ServerVersion::parse(v.as_str().unwrap_or_default()))
            })
            .await
            .cloned()
    }

    /// `GET /health` (exempt from auth on servers with an auth string).
    pub async fn health(&self) -> Result<(), ApiError> {
        self.no_content(Self::get("/health")).await
    }

    /// `GET /work_pools/{name}`; `None` when it does not exist.
    pub async fn read_work_pool(&self, name: &str) -> Result<Option<WorkPool>, ApiError> {
        let path = format!("/work_pools/{}", encode_segment(name));
        optional(self.json(Self::get(&path)).await)
    }

    /// `POST /work_pools/`.
    pub async fn create_work_pool(
        &self,
        name: &str,
        pool_type: &str,
        base_job_template: Option<&Value>,
        description: Option<&str>,
    ) -> Result<WorkPool, ApiError> {
        let mut body = json!({"name": name, "type": pool_type});
        if let Some(t) = base_job_template {
            body["base_job_template"] = t.clone();
        }
        if let Some(d) = description {
            body["description"] = json!(d);
        }
        self.json(Self::with_body(Method::POST, "/work_pools/", &body))
            .await
    }

    /// `PATCH /work_pools/{name}` with the given fields.
    pub async fn update_work_pool(&self, name: &str, patch: &Value) -> Result<(), ApiError> {
        let path = format!("/work_pools/{}", encode_segment(name));
        self.no_content(Self::with_body(Method::PATCH, &path, patch))
            .await
    }

    /// `POST /work_pools/{name}/workers/heartbeat`.
    ///
    /// On Prefect Cloud the first heartbeat also asks for the worker's id (`return_id`) and
    /// sends integration metadata, as Prefect's worker does; a server that rejects those
    /// fields (422) gets the plain heartbeat. Returns the worker id when the server sent one.
    pub async fn send_worker_heartbeat(
        &self,
        pool: &str,
        worker_name: &str,
        heartbeat_interval_seconds: u64,
        request_id: bool,
    ) -> Result<Option<Uuid>, ApiError> {
        let path = format!("/work_pools/{}/workers/heartbeat", encode_segment(pool));
        let plain =
            json!({"name": worker_name, "heartbeat_interval_seconds": heartbeat_interval_seconds});
        if request_id && self.is_cloud() {
            let mut body = plain.clone();
            body["return_id"] = json!(true);
            body["metadata"] = json!({"integrations": [{"name": "prefect-aci", "version": env!("CARGO_PKG_VERSION")}]});
            match self.send(Self::with_body(Method::POST, &path, &body)).await {
                Ok(resp) => {
                    let text = resp.text().await.unwrap_or_default();
                    return Ok(text.trim().trim_matches('"').parse().ok());
                }
                Err(ApiError::Status { status: 422, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.no_content(Self::with_body(Method::POST, &path, &plain))
            .await?;
        Ok(None)
    }

    /// `POST /work_pools/{name}/get_scheduled_flow_runs`. An unknown queue (404) means no runs.
    pub async fn get_scheduled_flow_runs(
        &self,
        pool: &str,
        work_queue_names: &[String],
        scheduled_before: DateTime<Utc>,
        limit: Option<usize>,
    ) -> Result<Vec<WorkerFlowRunResponse>, ApiError> {
        let path = format!(
            "/work_pools/{}/get_scheduled_flow_runs",
            encode_segment(pool)
        );
        let mut body = json!({
            "work_queue_names": work_queue_names,
            "scheduled_before": scheduled_before.to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
        });
        if let Some(l) = limit {
            body["limit"] = json!(l);
        }
        match self.json(Self::with_body(Method::POST, &path, &body)).await {
            Err(e) if e.is_not_found() && !work_queue_names.is_empty() => Ok(vec![]),
            other => other,
        }
    }

    /// `GET /deployments/{id}`; `None` when deleted.
    pub async fn read_deployment(&self, id: Uuid) -> Result<Option<Deployment>, ApiError> {
        optional(self.json(Self::get(&format!("/deployments/{id}"))).await)
    }

    /// `GET /flows/{id}`.
    pub async fn read_flow(&self, id: Uuid) -> Result<Flow, ApiError> {
        self.json(Self::get(&format!("/flows/{id}"))).await
    }

    /// `GET /flow_runs/{id}`; `None` when deleted.
    pub async fn read_flow_run(&self, id: Uuid) -> Result<Option<FlowRun>, ApiError> {
        optional(self.json(Self::get(&format!("/flow_runs/{id}"))).await)
    }

    /// `GET /flow_run_states/?flow_run_id=..`: the run's state history.
    pub async fn read_flow_run_states(&self, id: Uuid) -> Result<Vec<State>, ApiError> {
        let q = [("flow_run_id", id.to_string())];
        self.json(Request {
            method: Method::GET,
            path: "/flow_run_states/",
            query: &q,
            body: None,
        })
        .await
    }

    /// `POST /flow_runs/filter` with a raw filter body.
    pub async fn filter_flow_runs(&self, filter: &Value) -> Result<Vec<FlowRun>, ApiError> {
        self.json(Self::with_body(Method::POST, "/flow_runs/filter", filter))
            .await
    }

    /// `POST /flow_runs/filter`, keeping only ids and current states.
    pub async fn filter_flow_run_heads(
        &self,
        filter: &Value,
    ) -> Result<Vec<FlowRunHead>, ApiError> {
        self.json(Self::with_body(Method::POST, "/flow_runs/filter", filter))
            .await
    }

    /// `POST /flow_runs/{id}/set_state`.
    pub async fn set_flow_run_state(
        &self,
        id: Uuid,
        state: &StateCreate,
        force: bool,
    ) -> Result<SetStateResponse, ApiError> {
        let body = json!({"state": state, "force": force});
        let mut resp: SetStateResponse = self
            .json(Self::with_body(
                Method::POST,
                &format!("/flow_runs/{id}/set_state"),
                &body,
            ))
            .await?;
        // The request is retried on timeouts and 5xx; a retry of a proposal that did
        // commit comes back REJECTed with our own state, and is reported as accepted.
        if resp.is_duplicate_of(state) {
            tracing::debug!(flow_run.id = %id, "state proposal was already committed by an earlier attempt");
            resp.status = SetStateStatus::Accept;
        }
        Ok(resp)
    }

    /// `PATCH /flow_runs/{id}/labels` (servers 3.2+); labels are merged server-side.
    pub async fn update_flow_run_labels(
        &self,
        id: Uuid,
        labels: &Map<String, Value>,
    ) -> Result<(), ApiError> {
        let body = Value::Object(labels.clone());
        self.no_content(Self::with_body(
            Method::PATCH,
            &format!("/flow_runs/{id}/labels"),
            &body,
        ))
        .await
    }

    /// `PATCH /flow_runs/{id}` with `{"infrastructure_pid": pid}`.
    pub async fn set_infrastructure_pid(&self, id: Uuid, pid: &str) -> Result<(), ApiError> {
        let body = json!({"infrastructure_pid": pid});
        self.no_content(Self::with_body(
            Method::PATCH,
            &format!("/flow_runs/{id}"),
            &body,
        ))
        .await
    }

    /// `POST /logs/` with a batch.
    pub async fn create_logs(&self, logs: &[LogCreate]) -> Result<(), ApiError> {
        let body = serde_json::to_value(logs).map_err(|e| ApiError::Decode {
            method: Method::POST,
            path: "/logs/".into(),
            message: e.to_string(),
        })?;
        self.no_content(Self::with_body(Method::POST, "/logs/", &body))
            .await
    }

    /// `GET /block_types/slug/{slug}/block_documents/name/{name}?include_secrets=true` → `data`.
    pub async fn read_block_document_data_by_name(
        &self,
        slug: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let path = format!(
            "/block_types/slug/{}/block_documents/name/{}",
            encode_segment(slug),
            encode_segment(name)
        );
        self.block_document_data(&path).await
    }

    /// `GET /block_documents/{id}?include_secrets=true` → `data`.
    pub async fn read_block_document_data(&self, id: &str) -> Result<Option<Value>, ApiError> {
        self.block_document_data(&format!("/block_documents/{}", encode_segment(id)))
            .await
    }

    /// A block document's `data`, secrets included (templates need the real values).
    async fn block_document_data(&self, path: &str) -> Result<Option<Value>, ApiError> {
        let q = [("include_secrets", "true".to_string())];
        let req = Request {
            method: Method::GET,
            path,
            query: &q,
            body: None,
        };
        let doc: Option<Value> = optional(self.json(req).await)?;
        Ok(doc.map(|d| d.get("data").cloned().unwrap_or(Value::Null)))
    }

    /// `GET /variables/name/{name}` → `value`.
    pub async fn read_variable(&self, name: &str) -> Result<Option<Value>, ApiError> {
        let path = format!("/variables/name/{}", encode_segment(name));
        let v: Option<Value> = optional(self.json(Self::get(&path)).await)?;
        Ok(v.map(|v| v.get("value").cloned().unwrap_or(Value::Null)))
    }

    /// A raw JSON request, for calls this client has no typed method for (tests, setup).
    pub async fn raw_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let resp = self
            .send(Request {
                method: method.clone(),
                path,
                query: &[],
                body,
            })
            .await?;
        let bytes = resp.bytes().await.map_err(|source| ApiError::Transport {
            method: method.clone(),
            path: path.into(),
            source,
        })?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
            method,
            path: path.into(),
            message: e.to_string(),
        })
    }
}

fn optional<T>(r: Result<T, ApiError>) -> Result<Option<T>, ApiError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    (when - Utc::now()).to_std().ok()
}

/// Percent-encode one path segment (pool and block names may hold spaces and slashes).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_string_wins_over_api_key() {
        let a = Auth::from_settings(Some("key".into()), Some("u:p".into()));
        assert_eq!(a.header().unwrap(), "Basic dTpw");
        let k = Auth::from_settings(Some("key".into()), None);
        assert_eq!(k.header().unwrap(), "Bearer key");
        assert!(Auth::from_settings(Some(String::new()), None)
            .header()
            .is_none());
    }

    #[test]
    fn auth_debug_hides_secrets() {
        let a = Auth::AuthString("user:hunter2".into());
        assert!(!format!("{a:?}").contains("hunter2"));
    }

    #[test]
    fn retry_after_wins_and_backoff_grows() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        let d1 = p.delay(1, None).as_secs_f64();
        let d3 = p.delay(3, None).as_secs_f64();
        assert!((2.0..=2.4).contains(&d1), "{d1}");
        assert!((8.0..=9.6).contains(&d3), "{d3}");
        assert!(p.delay(30, None) <= p.max_delay);
    }

    #[test]
    fn version_parsing_and_capabilities() {
        let v = ServerVersion::parse("\"3.9.1\"");
        assert!(v.is_v3() && v.supports_labels() && v.supports_submitting());
        let v2 = ServerVersion::parse("2.20.25");
        assert!(!v2.is_v3() && !v2.supports_labels());
        let old3 = ServerVersion::parse("3.6.21");
        assert!(old3.supports_labels() && !old3.supports_submitting());
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("my pool/x"), "my%20pool%2Fx");
    }

    #[test]
    fn rejects_url_without_scheme() {
        assert!(PrefectClient::new(ClientConfig::new("localhost:4200/api")).is_err());
    }
}
