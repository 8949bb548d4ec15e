//! Managed identity through the IMDS-compatible endpoint (what ACI provides).
//!
//! `GET {endpoint}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=...`
//! with `Metadata: true`; `client_id=` selects a user-assigned identity. This
//! is the AAD v1 shape, so the scope `https://management.azure.com/.default`
//! becomes the resource `https://management.azure.com/`, and the numbers in
//! the reply are strings.
//!
//! **Warm-up.** In ACI the endpoint may refuse connections or answer 404/5xx
//! for a short while after the container starts. The credential therefore
//! retries those (through the crate's one retry loop) for a bounded time
//! (`warmup`, default 30 s) before declaring managed identity unavailable.
//! Without the `Metadata` header IMDS answers in plain text, which is why the
//! header is always sent.

use std::time::Duration;

use url::Url;

use super::aad::{self, TokenResponse};
use super::{redact_url, CredentialError, TokenCredential, TokenFuture};
use crate::cloud::DEFAULT_IMDS_ENDPOINT;
use crate::retry::{self, RetryPolicy, Verdict};

/// IMDS api-version documented for ACI.
pub const IMDS_API_VERSION: &str = "2018-02-01";

/// Settings of [`ManagedIdentityCredential`].
#[derive(Clone, Debug)]
pub struct ManagedIdentityOptions {
    /// IMDS base URL; the token path is appended. Default `http://169.254.169.254`.
    pub endpoint: Url,
    /// Client id of a user-assigned identity (`AZURE_CLIENT_ID`); `None` = system-assigned.
    pub client_id: Option<String>,
    /// How long to keep retrying while the endpoint warms up.
    pub warmup: Duration,
    /// First retry delay during warm-up (doubles, capped at 5 s).
    pub warmup_initial_delay: Duration,
    /// Limit for one attempt (IMDS is local; a slow answer means it is not there).
    pub attempt_timeout: Duration,
}

impl Default for ManagedIdentityOptions {
    fn default() -> Self {
        ManagedIdentityOptions {
            endpoint: Url::parse(DEFAULT_IMDS_ENDPOINT)
                .unwrap_or_else(|e| panic!("built-in IMDS URL: {e}")),
            client_id: None,
            warmup: Duration::from_secs(30),
            warmup_initial_delay: Duration::from_millis(500),
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

/// Gets tokens from the instance metadata service.
#[derive(Clone, Debug)]
pub struct ManagedIdentityCredential {
    http: reqwest::Client,
    options: ManagedIdentityOptions,
    token_path: Url,
}

/// The AAD v1 resource for a v2 scope: `https://x/.default` → `https://x/`.
pub fn scope_to_resource(scope: &str) -> String {
    match scope.strip_suffix("/.default") {
        Some(base) => format!("{base}/"),
        None => scope.to_owned(),
    }
}

impl ManagedIdentityCredential {
    /// A credential talking to `options.endpoint`.
    pub fn new(
        http: reqwest::Client,
        options: ManagedIdentityOptions,
    ) -> Result<Self, CredentialError> {
        let base = options.endpoint.as_str().trim_end_matches('/');
        let token_path =
            Url::parse(&format!("{base}/metadata/identity/oauth2/token")).map_err(|e| {
                CredentialError::Config(format!("invalid IMDS endpoint {}: {e}", options.endpoint))
            })?;
        Ok(ManagedIdentityCredential {
            http,
            options,
            token_path,
        })
    }

    fn warmup_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: u32::MAX,
            max_elapsed: self.options.warmup,
            initial_delay: self.options.warmup_initial_delay,
            max_delay: Duration::from_secs(5).max(self.options.warmup_initial_delay),
            // 404 and 410 are what IMDS says while it is not ready yet.
            retry_statuses: vec![404, 408, 410, 429, 500, 502, 503, 504],
            ..RetryPolicy::default()
        }
    }

    fn request_url(&self, scope: &str) -> Url {
        let mut url = self.token_path.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", IMDS_API_VERSION);
            q.append_pair("resource", &scope_to_resource(scope));
            if let Some(id) = &self.options.client_id {
                q.append_pair("client_id", id);
            }
        }
        url
    }
}

impl TokenCredential for ManagedIdentityCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> TokenFuture<'a> {
        Box::pin(async move {
            let url = self.request_url(scope);
            let policy = self.warmup_policy();
            let result = retry::run(
                &policy,
                |r: &Result<(u16, reqwest::header::HeaderMap, Vec<u8>), reqwest::Error>| match r {
                    Ok((s, _, _)) if (200..300).contains(s) => Verdict::Done,
                    // During warm-up a server Retry-After could exceed the budget
                    // and end the loop early; use our own backoff instead.
                    Ok((s, _, _)) => Verdict::Status {
                        status: *s,
                        retry_after: None,
                    },
                    Err(_) => Verdict::Transient,
                },
                |e| {
                    tracing::debug!(
                        attempt = e.attempt,
                        status = e.status,
                        delay_ms = e.delay.as_millis() as u64,
                        "managed identity endpoint not ready, retrying"
                    )
                },
                |_| async {
                    let resp = self
                        .http
                        .get(url.clone())
                        .header("Metadata", "true")
                        .timeout(self.options.attempt_timeout)
                        .send()
                        .await?;
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    let body = resp.bytes().await?.to_vec();
                    Ok((status, headers, body))
                },
            )
            .await;
            let endpoint = redact_url(&self.token_path);
            match result {
                Err(e) => Err(CredentialError::Unavailable {
                    credential: self.name(),
                    reason: format!(
                        "no managed identity endpoint answered at {endpoint} within {:?} ({}); \
                         outside Azure, use another credential or set AZURE_POD_IDENTITY_AUTHORITY_HOST",
                        self.options.warmup,
                        transport_kind(&e)
                    ),
                }),
                Ok((404, _, _)) => Err(CredentialError::Unavailable {
                    credential: self.name(),
                    reason: format!("{endpoint} answered 404: no identity service there"),
                }),
                Ok((status, _, body)) if !(200..300).contains(&status) => {
                    Err(CredentialError::Authentication {
                        credential: self.name(),
                        status: Some(status),
                        message: format!(
                            "{}{}",
                            aad::describe_error_body(&body),
                            if status == 400 {
                                " (is the identity assigned to this container group, and AZURE_CLIENT_ID its client id?)"
                            } else {
                                ""
                            }
                        ),
                    })
                }
                Ok((_, _, body)) => TokenResponse::parse(self.name(), &body),
            }
        })
    }

    fn name(&self) -> &'static str {
        "ManagedIdentityCredential"
    }
}

/// A short description of a transport error without its URL.
pub(crate) fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "reply body could not be read"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_from_scope() {
        assert_eq!(
            scope_to_resource("https://management.azure.com/.default"),
            "https://management.azure.com/"
        );
        assert_eq!(
            scope_to_resource("https://management.azure.com/"),
            "https://management.azure.com/"
        );
    }

    #[test]
    fn request_url_shape() {
        let http = crate::http::build_http_client(&Default::default()).unwrap();
        let c = ManagedIdentityCredential::new(
            http,
            ManagedIdentityOptions {
                endpoint: Url::parse("http://127.0.0.1:9/base/").unwrap(),
                client_id: Some("abc".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            c.request_url("https://management.azure.com/.default").as_str(),
            "http://127.0.0.1:9/base/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F&client_id=abc"
        );
    }
}
