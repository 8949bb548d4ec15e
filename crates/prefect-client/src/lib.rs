//! Prefect's worker-facing API, as typed Rust.
//!
//! # Layout
//! - [`models`]: serde models of the JSON the Prefect server sends and accepts.
//! - [`client`]: the HTTP client: auth, CSRF, retries, version detection.
//! - [`events`]: the `/events/in` and `/events/out` websockets (Prefect 3).
//! - [`templating`]: Prefect's `{{ placeholder }}` rendering (`apply_values`), byte-for-byte.
//! - [`job_config`]: building a flow run's job configuration from a base job template,
//!   deployment and flow-run job variables, blocks and variables.

pub mod client;
pub mod events;
pub mod job_config;
pub mod models;
pub mod templating;

pub use client::{ApiError, Auth, ClientConfig, PrefectClient, RetryPolicy, ServerVersion};
