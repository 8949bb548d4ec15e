//! A local, ARM-compatible emulator of Azure Container Instances that runs containers as
//! local processes.
//!
//! The emulator serves, on one loopback HTTP port, the three endpoints an ACI client talks
//! to: Azure Resource Manager (container groups, resource groups, user-assigned
//! identities, ARM template deployments, role definitions and assignments, container
//! registries), the AAD v2 token endpoint, and an IMDS-compatible managed identity
//! endpoint. With `rbac: true` every ARM request is authorised against the role
//! assignments, as Azure RBAC does. It behaves like the real services where clients can tell the difference:
//! error codes and envelopes, `api-version` checks, bearer validation, asynchronous
//! provisioning with `Azure-AsyncOperation`, paging with `nextLink`, throttling with
//! `Retry-After`, write-only secrets, and container states with exit codes and restarts.
//!
//! ```no_run
//! # async fn demo() -> Result<(), aci_emulator::EmulatorError> {
//! let emulator = aci_emulator::start(aci_emulator::EmulatorConfig::default()).await?;
//! println!("ARM at {}, tokens at {}/{}/oauth2/v2.0/token", emulator.arm_url(),
//!          emulator.authority_host(), emulator.config().tenant_id);
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: [`EmulatorConfig`], the image table ([`ImageRule`]) and [`Faults`].
//! - `http`: the front door — request ids, auth, throttling, api-versions, faults, dispatch.
//! - `path`: ARM paths → typed routes; supported api-versions.
//! - `auth`: AAD and IMDS token endpoints; bearer validation.
//! - `aci`: container group operations and validation.
//! - `runtime`: the provisioning state machine and container processes.
//! - `resources`: subscription, resource groups, providers, user-assigned identities.
//! - `deployments`: ARM template deployments (evaluated by [`arm_template`], resources
//!   created through the same handlers as direct PUTs).
//! - `authz`: role definitions and assignments, and RBAC enforcement with [`rbac`].
//! - `registry`: container registries (`Microsoft.ContainerRegistry/registries`).
//! - `admin`: the `/_emulator/` introspection and fault API.
//! - `state`: shared state, stats and summaries; `throttle`: token buckets and quotas.
//! - `tls`: the optional HTTPS listener and its generated CA.
//! - [`arm_template`], [`rbac`]: ARM template expressions and role/action matching.
//!
//! # Serving HTTPS
//! Some clients insist on https (MSAL-based credentials, azure-core's bearer policy). With
//! [`EmulatorConfig::tls`] the emulator generates a CA and a server certificate at start and
//! serves HTTPS; trust [`Emulator::ca_pem_path`] (or point `REQUESTS_CA_BUNDLE`/
//! `SSL_CERT_FILE` at [`Emulator::ca_bundle_path`]). Containers get the bundle in those two
//! variables automatically.
//!
//! # What a container sees
//! Each container runs as a process in its own session and process group, in its own
//! working directory, with an environment built from scratch: a few basics from the
//! emulator (`PATH`, `HOME`, `LANG`, ...), then the platform variables below, then the
//! image's `env`, then the container's `environmentVariables` (`value` or `secureValue`).
//!
//! | Variable | Value | Why |
//! |---|---|---|
//! | `AZURE_POD_IDENTITY_AUTHORITY_HOST` | `{arm}/_imds/{key}` | Azure SDKs send IMDS requests to `{this}/metadata/identity/oauth2/token`; the key scopes them to the group's identities, like ACI's platform endpoint |
//! | `AZURE_RESOURCE_MANAGER_ENDPOINT` | ARM base URL | where a container reaches ARM |
//! | `AZURE_AUTHORITY_HOST` | AAD base URL | where a container gets AAD tokens |
//! | `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE` | system roots + the emulator's CA | only with `tls: true` |
//!
//! A container's own variables override these.

#![warn(missing_docs)]

mod aci;
mod admin;
pub mod arm_template;
mod auth;
mod authz;
pub mod config;
mod deployments;
mod error;
mod http;
mod path;
pub mod rbac;
mod registry;
mod resources;
mod runtime;
mod state;
mod throttle;
mod tls;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{
    AciQuotas, Bucket, CapacityFault, EmulatorConfig, Faults, IdentitySeed, ImageRule, Principal,
    ResourceGroupSeed, ThrottleLimits,
};
pub use error::{ArmError, EmulatorError};
pub use path::ACI_VERSIONS;
pub use state::{ContainerSummary, GroupSummary, IdentitySummary, RequestCount, Stats};

use state::{lock, RgEntry, Shared, SharedRef, State};

/// A running emulator. Dropping it without [`Emulator::shutdown`] still kills every
/// container process (best effort), but only `shutdown` waits for the server to stop.
pub struct Emulator {
    shared: SharedRef,
    server: Option<tokio::task::JoinHandle<Result<(), std::io::Error>>>,
}

/// Binds the configured address and serves in the background.
pub async fn start(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
    if config.locations.is_empty() {
        return Err(EmulatorError::Config(
            "at least one location is required".into(),
        ));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| EmulatorError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| EmulatorError::Bind {
            addr: config.listen,
            source,
        })?;
    let (work_root, work_root_is_temp) = match &config.work_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("aci-emulator-{}", uuid::Uuid::new_v4().simple())),
            true,
        ),
    };
    let mut state = State::default();
    let sub_id = format!("/subscriptions/{}", config.subscription_id);
    for ns in [
        "Microsoft.Resources",
        "Microsoft.ContainerInstance",
        "Microsoft.ManagedIdentity",
        "Microsoft.ContainerRegistry",
        "Microsoft.Authorization",
    ] {
        if !config
            .unregistered_providers
            .iter()
            .any(|u| u.eq_ignore_ascii_case(ns))
        {
            state.registered.insert(ns.to_ascii_lowercase());
        }
    }
    for seed in &config.resource_groups {
        state.resource_groups.insert(
            seed.name.to_ascii_lowercase(),
            RgEntry {
                name: seed.name.clone(),
                location: seed.location.to_ascii_lowercase(),
                tags: BTreeMap::new(),
            },
        );
    }
    for seed in &config.identities {
        let Some(rg) = state
            .resource_groups
            .get(&seed.resource_group.to_ascii_lowercase())
        else {
            return Err(EmulatorError::Config(format!(
                "identity '{}' names resource group '{}', which is not in resource_groups",
                seed.name, seed.resource_group
            )));
        };
        let id = format!(
            "{sub_id}/resourceGroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}",
            rg.name, seed.name
        );
        state.identities.insert(
            id.to_ascii_lowercase(),
            state::IdentityEntry {
                id,
                name: seed.name.clone(),
                location: seed.location.clone().unwrap_or_else(|| rg.location.clone()),
                tags: BTreeMap::new(),
                client_id: seed
                    .client_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                principal_id: seed
                    .principal_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                // Seeded identities exist "long ago": already replicated.
                created: None,
            },
        );
    }

    std::fs::create_dir_all(&work_root).map_err(|source| EmulatorError::WorkDir {
        path: work_root.clone(),
        source,
    })?;
    // HTTPS: generate certificates and write the CA (and a system+CA bundle) for clients.
    let tls = if config.tls {
        let material = tls::generate()?;
        let ca_path = work_root.join("emulator-ca.pem");
        let bundle_path = work_root.join("ca-bundle.pem");
        let bundle = format!(
            "{}\n{}",
            tls::system_bundle().unwrap_or_default(),
            material.ca_pem
        );
        for (path, text) in [(&ca_path, &material.ca_pem), (&bundle_path, &bundle)] {
            std::fs::write(path, text).map_err(|source| EmulatorError::WorkDir {
                path: path.clone(),
                source,
            })?;
        }
        Some((material, ca_path, bundle_path))
    } else {
        None
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let shared = Arc::new(Shared {
        base_url: format!("{scheme}://{addr}"),
        ca_pem_path: tls.as_ref().map(|t| t.1.clone()),
        ca_bundle_path: tls.as_ref().map(|t| t.2.clone()),
        imds_first_request: std::sync::OnceLock::new(),
        faults: Mutex::new(config.faults.clone()),
        state: Mutex::new(state),
        stats: Mutex::new(BTreeMap::new()),
        throttle: Mutex::new(Default::default()),
        tokens: Mutex::new(Default::default()),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        work_root,
        work_root_is_temp,
        config,
    });
    let router = http::router(shared.clone());
    let stop = shared.shutdown.clone();
    let server = match tls {
        None => tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }),
        Some((material, _, _)) => {
            let listener = tls::TlsListener::new(listener, material.server_config, stop.clone())
                .map_err(|source| EmulatorError::Bind { addr, source })?;
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            })
        }
    };
    tracing::info!(arm = %shared.base_url, "aci emulator listening");
    Ok(Emulator {
        shared,
        server: Some(server),
    })
}

/// Runs an emulator until `shutdown` completes, then stops it (for the CLI).
pub async fn serve(
    config: EmulatorConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EmulatorError> {
    let emulator = start(config).await?;
    shutdown.await;
    emulator.shutdown().await;
    Ok(())
}

impl Emulator {
    /// The ARM base URL, `http://127.0.0.1:PORT`.
    pub fn arm_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The AAD authority host; the token endpoint is `{authority}/{tenant}/oauth2/v2.0/token`.
    pub fn authority_host(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The full URL of the global IMDS token endpoint.
    pub fn imds_endpoint(&self) -> String {
        format!("{}/metadata/identity/oauth2/token", self.shared.base_url)
    }

    /// The AAD v2 token endpoint of the configured tenant.
    pub fn token_endpoint(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.shared.base_url, self.shared.config.tenant_id
        )
    }

    /// With `tls: true`, the PEM file of the emulator's CA (trust it to reach the emulator).
    pub fn ca_pem_path(&self) -> Option<PathBuf> {
        self.shared.ca_pem_path.clone()
    }

    /// With `tls: true`, a PEM bundle of the system roots plus the emulator's CA.
    pub fn ca_bundle_path(&self) -> Option<PathBuf> {
        self.shared.ca_bundle_path.clone()
    }

    /// The configuration the emulator started with (faults may have changed since).
    pub fn config(&self) -> &EmulatorConfig {
        &self.shared.config
    }

    /// Replaces the fault configuration (capacity fault counters restart).
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
        lock(&self.shared.state).capacity_used.clear();
    }

    /// The current fault configuration.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Request counts by (operation, status).
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Every container group with its containers' pids and exit codes.
    pub fn groups(&self) -> Vec<GroupSummary> {
        self.shared.groups()
    }

    /// Every user-assigned identity (seeded or created through ARM).
    pub fn identities(&self) -> Vec<IdentitySummary> {
        self.shared.identities()
    }

    /// The root of the per-container working directories.
    pub fn work_dir(&self) -> PathBuf {
        self.shared.work_root.clone()
    }

    /// Stops serving, kills every container process group and waits for them to exit.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        let trackers: Vec<TaskTracker> = lock(&self.shared.state)
            .groups
            .values()
            .map(|g| g.tracker.clone())
            .collect();
        let deadline =
            Duration::from_millis(self.shared.config.kill_grace_ms) + Duration::from_secs(5);
        let _ = tokio::time::timeout(deadline, async {
            for t in trackers {
                t.close();
                t.wait().await;
            }
            self.shared.tasks.close();
            self.shared.tasks.wait().await;
        })
        .await;
        kill_all(&self.shared);
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        if self.shared.work_root_is_temp {
            let _ = tokio::fs::remove_dir_all(&self.shared.work_root).await;
        }
    }
}

fn kill_all(shared: &Shared) {
    let state = lock(&shared.state);
    for g in state.groups.values() {
        for c in &g.containers {
            if let Some(pid) = c.pid {
                runtime::signal_group(pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if self.server.is_some() {
            self.shared.shutdown.cancel();
            kill_all(&self.shared);
            // Best effort: containers may still be exiting and hold files open.
            if self.shared.work_root_is_temp {
                let _ = std::fs::remove_dir_all(&self.shared.work_root);
            }
        }
    }
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("arm_url", &self.shared.base_url)
            .finish()
    }
}
