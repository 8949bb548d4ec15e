//! A small Azure Resource Manager client: credentials, a retrying and
//! throttled request pipeline, long-running operations and paging.
//!
//! # Why our own client
//!
//! The official `azure_identity`/`azure_core` crates would bring a second HTTP
//! stack configuration and the aws-lc crypto provider next to the
//! reqwest + rustls/ring stack the rest of the workspace uses, and their 1.x
//! API still moves. They also insist on https authority hosts and a fixed
//! IMDS address, which makes tests against an in-process fake awkward, and
//! they default to an IMDS api-version that ACI does not document. What this
//! project needs is small: four token flows (one form POST, one federated
//! POST, one IMDS GET, one `az` subprocess) and ten to fifteen JSON calls plus
//! generic LRO polling and paging. Owning that code lets every base URL be
//! configurable (so the local emulator and test fakes are plain http), lets us
//! handle the ACI quirks (IMDS warm-up, string-typed numbers, the three LRO
//! styles) deliberately, and keeps secrets out of every log line by
//! construction.
//!
//! # Layout
//!
//! - [`cloud`] — [`AzureCloud`] endpoints and [`AzureEnvironmentConfig`] read
//!   from `AZURE_*` variables.
//! - [`credential`] — the [`TokenCredential`] trait, the four sources, the
//!   [`DefaultAzureCredential`] chain and the [`CachedCredential`] wrapper.
//! - [`http`] — builds the shared `reqwest::Client` (extra CA file, timeouts).
//! - [`retry`] — the one retry loop and [`RetryPolicy`].
//! - [`throttle`] — client-side token buckets per ARM operation class.
//! - `pipeline` — throttle → token → send → log, inside the retry loop.
//! - [`client`] — [`ArmClient`]: `get`, `get_opt`, `put`, `delete`,
//!   `post_action`, `list`.
//! - [`lro`] — [`Poller`] for long-running operations.
//! - [`error`] — [`ArmError`] and the ARM error envelope.
//! - [`metrics`] — [`ArmMetrics`] request counters.
//!
//! # Example
//!
//! Wiring it together the way the worker does: one HTTP client (with the
//! optional private CA) shared by the credentials and the ARM client.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use azure_arm::*;
//!
//! let env = AzureEnvironmentConfig::from_process_env()?;
//! let http = build_http_client(&HttpClientConfig { ca_file: None, ..Default::default() })?;
//! let explicit = ExplicitClientSecret::default(); // from the pool's aci_credentials block
//! let credential =
//!     DefaultAzureCredential::from_env(&env, &explicit, http.clone(), &DefaultCredentialOptions::default())?;
//! let mut config = ArmClientConfig::for_cloud(&env.cloud, Arc::new(credential));
//! config.http_client = Some(http);
//! let arm = ArmClient::new(config)?;
//!
//! let path = "/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.ContainerInstance/containerGroups/job-1";
//! let created = arm.put::<_, serde_json::Value>(path, "2025-09-01", &serde_json::json!({ /* ... */ })).await?;
//! let group = created.wait().await?; // follows Azure-AsyncOperation / Location / resource GET
//! let state: Option<serde_json::Value> = arm.get_opt(path, "2025-09-01").await?;
//! arm.delete(path, "2025-09-01").await?.wait().await?;
//! # let _ = (group, state);
//! # Ok(()) }
//! ```
//!
//! **Architecture Invariant:** this crate knows ARM conventions, not resource
//! shapes. Callers bring their own `serde` types; nothing here depends on the
//! DTO crate.
//!
//! **Architecture Invariant:** no token, client secret or assertion is ever
//! formatted into a log line or an error message ([`credential::Secret`]
//! prints `***`), and bearer tokens are only sent to the configured ARM
//! endpoint's origin.

#![warn(missing_docs)]
// `ArmError::Http` is a large struct variant on purpose: callers match on its
// fields (`status`, `code`, `request_id`). Errors are the cold path, so the
// size of `Result<_, ArmError>` does not matter here.
#![allow(clippy::result_large_err)]

pub mod client;
pub mod cloud;
pub mod credential;
pub mod error;
pub mod http;
pub mod lro;
pub mod metrics;
mod pipeline;
pub mod retry;
pub mod throttle;

pub use client::{
    ActionOutcome, ArmClient, ArmClientConfig, DeleteOutcome, PollingConfig, PutOutcome,
};
pub use cloud::{AzureCloud, AzureEnvironmentConfig};
pub use credential::{
    AccessToken, AzureCliCredential, CachedCredential, ChainedCredential, ClientSecretCredential,
    CredentialError, DefaultAzureCredential, DefaultCredentialOptions, ExplicitClientSecret,
    ManagedIdentityCredential, ManagedIdentityOptions, Secret, StaticTokenCredential,
    TokenCredential, TokenFuture, WorkloadIdentityCredential,
};
pub use error::{ArmError, ArmErrorDetail};
pub use http::{build_http_client, HttpClientConfig, HttpClientError, Timeouts};
pub use lro::{LroKind, PollMode, PollStatus, Poller};
pub use metrics::{ArmMetrics, ArmMetricsSnapshot};
pub use pipeline::RawResponse;
pub use retry::RetryPolicy;
pub use throttle::{BucketConfig, OperationClass, ThrottleConfig};
