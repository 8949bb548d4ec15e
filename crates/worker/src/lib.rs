//! The prefect-aci worker: Prefect's worker protocol on one side, an [`Infrastructure`] on the
//! other.
//!
//! # Layout
//! - [`config`]: the validated [`WorkerConfig`] the CLI builds from flags and env vars.
//! - [`template`]: the `azure-container-instance` base job template (a superset of Python's).
//! - [`worker`]: the long-lived loop: pool sync, heartbeats, polling, dispatch, shutdown.
//! - [`run`]: one flow run's life as an explicit state machine driven by `step()`.
//! - [`prepare`]: the job configuration of a run (Prefect's merge/render rules + env/labels).
//! - [`infrastructure`]: the trait a backend implements (ACI, or fakes in tests).
//! - [`logs`]: batching worker logs into `POST /logs/` per flow run.
//! - [`health`]: the `/health` and `/metrics` endpoints of `--with-healthcheck`.
//! - [`metrics`]: the process-wide counters behind `/metrics`.
//! - [`pickup`]: wake the loop on the pool's flow-run events (websocket), polling as fallback.

pub mod aci;
pub mod config;
pub mod health;
pub mod infrastructure;
pub mod logs;
pub mod metrics;
pub mod pickup;
pub mod prepare;
pub mod run;
pub mod single_flight;
pub mod template;
pub mod worker;

pub use config::WorkerConfig;
pub use infrastructure::{ExitInfo, InfraError, Infrastructure, JobContext, RunRefs};
pub use worker::{run, WorkerError};
