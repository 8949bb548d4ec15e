//! Emulator configuration: what the fake cloud looks like and how it misbehaves.
//!
//! [`EmulatorConfig`] deserializes from a JSON file (every field optional, see the defaults
//! below) so the CLI and tests share one description. The defaults describe a small, healthy
//! cloud: one subscription and tenant with fixed ids, an admin service principal, two
//! locations, no images (add [`ImageRule`]s or every container fails to pull), and the real
//! ARM throttling limits.
//!
//! A config file for running Prefect flows from a local venv might look like this:
//!
//! ```json
//! {
//!   "listen": "127.0.0.1:8765",
//!   "resource_groups": [{"name": "prefect", "location": "eastus"}],
//!   "images": [{
//!     "image": "prefecthq/prefect:*",
//!     "command": ["/opt/prefect/entrypoint.sh", "prefect", "version"],
//!     "entrypoint_aliases": {"/opt/prefect/entrypoint.sh": []},
//!     "path_prepend": ["/home/me/.venvs/prefect3/bin"],
//!     "env": {"PREFECT_HOME": "/tmp/prefect-home"}
//!   }],
//!   "pull_delay_ms": 500,
//!   "faults": {"error_rate": 0.05, "capacity": [{"location": "westus", "count": 1}]}
//! }
//! ```
//!
//! Fixed defaults (documented so scripts can rely on them):
//! - subscription `00000000-0000-0000-0000-000000000001`
//! - tenant `00000000-0000-0000-0000-00000000000a`
//! - admin client id `00000000-0000-0000-0000-0000000000ad`, secret `emulator-admin-secret`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default subscription id.
pub const DEFAULT_SUBSCRIPTION_ID: &str = "00000000-0000-0000-0000-000000000001";
/// Default tenant id.
pub const DEFAULT_TENANT_ID: &str = "00000000-0000-0000-0000-00000000000a";
/// Default admin client id.
pub const DEFAULT_ADMIN_CLIENT_ID: &str = "00000000-0000-0000-0000-0000000000ad";
/// Default admin client secret.
pub const DEFAULT_ADMIN_CLIENT_SECRET: &str = "emulator-admin-secret";

/// Everything the emulator needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorConfig {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The only subscription that exists.
    pub subscription_id: String,
    /// The only tenant that exists.
    pub tenant_id: String,
    /// The administrator service principal (client credentials accepted by the AAD endpoint).
    pub admin: Principal,
    /// More service principals (e.g. federated workload identities).
    pub principals: Vec<Principal>,
    /// Locations where container groups may be created.
    pub locations: Vec<String>,
    /// Resource provider namespaces that start unregistered (requests to them fail with
    /// `MissingSubscriptionRegistration` until `POST .../providers/{ns}/register`), e.g.
    /// `["Microsoft.ContainerInstance"]` to exercise a setup command. Default: none.
    pub unregistered_providers: Vec<String>,
    /// Resource groups that exist at start.
    pub resource_groups: Vec<ResourceGroupSeed>,
    /// User-assigned identities that exist at start (their resource group must be seeded).
    pub identities: Vec<IdentitySeed>,
    /// Image table: which images "exist" and how to run them locally.
    pub images: Vec<ImageRule>,
    /// When true (the default) an image matching no rule is rejected at PUT with
    /// `InaccessibleImage`; when false the PUT succeeds and the pull fails later.
    pub check_images_on_create: bool,
    /// How long each image pull takes.
    pub pull_delay_ms: u64,
    /// How long provisioning takes after the pulls, before containers start.
    pub provisioning_delay_ms: u64,
    /// Pause before a restart under `Always`/`OnFailure` (ACI backs off too).
    pub restart_delay_ms: u64,
    /// Grace between SIGTERM and SIGKILL when stopping containers.
    pub kill_grace_ms: u64,
    /// Where per-container working directories go (default: a temp dir).
    pub work_dir: Option<PathBuf>,
    /// Lifetime of issued tokens in seconds.
    pub token_lifetime_secs: u64,
    /// Page size of list operations.
    pub page_size: usize,
    /// Maximum captured log bytes per container (older lines are dropped).
    pub log_limit_bytes: usize,
    /// Failure injection.
    pub faults: Faults,
    /// Validate bearer tokens on ARM requests (default true).
    pub require_auth: bool,
    /// Serve HTTPS with a generated CA (see [`crate::Emulator::ca_pem_path`]).
    pub tls: bool,
    /// Enforce Azure RBAC on every ARM request (default false). The admin principal has
    /// Owner on the subscription; everyone else needs role assignments (tokens from IMDS act
    /// as their identity's principal). Meant with `require_auth`: anonymous callers hold no
    /// roles, so every request of theirs is refused.
    pub rbac: bool,
    /// Entra replication lag: a principal created less than this many milliseconds ago is
    /// unknown to role assignments that do not set `principalType` (`PrincipalNotFound`).
    pub principal_replication_lag_ms: u64,
    /// Container registry names that are "taken" by someone else in Azure (globally unique
    /// names): `checkNameAvailability` reports them unavailable and PUTs fail.
    pub taken_registry_names: Vec<String>,
}

/// A service principal the AAD endpoint knows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Principal {
    /// Application (client) id.
    pub client_id: String,
    /// Accepted client secret; `None` disables the secret flow for this principal.
    pub client_secret: Option<String>,
    /// Accepted federated assertions: `None` rejects the assertion flow; an empty list
    /// accepts any non-empty assertion; otherwise the assertion must be one of these.
    pub federated_assertions: Option<Vec<String>>,
    /// Object id of the service principal (defaults to a UUID derived from the client id).
    pub object_id: Option<String>,
}

impl Default for Principal {
    fn default() -> Self {
        Principal {
            client_id: DEFAULT_ADMIN_CLIENT_ID.to_string(),
            client_secret: Some(DEFAULT_ADMIN_CLIENT_SECRET.to_string()),
            federated_assertions: None,
            object_id: None,
        }
    }
}

/// A resource group that exists when the emulator starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceGroupSeed {
    /// Resource group name.
    pub name: String,
    /// Its location.
    pub location: String,
}

/// A user-assigned identity that exists when the emulator starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentitySeed {
    /// Resource group (must be in `resource_groups`).
    pub resource_group: String,
    /// Identity name.
    pub name: String,
    /// Location (default: the resource group's).
    #[serde(default)]
    pub location: Option<String>,
    /// Fixed client id (default: a fresh UUID).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Fixed principal (object) id (default: a fresh UUID).
    #[serde(default)]
    pub principal_id: Option<String>,
}

/// One row of the image table: images matching `image` run locally like this.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ImageRule {
    /// Image reference glob; `*` matches any run of characters (`myacr.azurecr.io/*`).
    pub image: String,
    /// Default command (ENTRYPOINT + CMD) when the container sets no `command`.
    pub command: Vec<String>,
    /// Working directory (the image's WORKDIR); default: a fresh per-container directory.
    pub working_dir: Option<PathBuf>,
    /// Environment baked into the image.
    pub env: BTreeMap<String, String>,
    /// Directories put in front of PATH.
    pub path_prepend: Vec<PathBuf>,
    /// Rewrites of the first command word: `"/opt/prefect/entrypoint.sh": []` drops it and
    /// runs the rest, like an image entrypoint that only `exec "$@"`s.
    pub entrypoint_aliases: BTreeMap<String, Vec<String>>,
    /// When set, pulls of matching images fail with this message (registry errors).
    pub pull_error: Option<String>,
}

/// Failure injection. All fields default to "healthy" except ARM throttling, which defaults
/// to the real limits (a healthy cloud throttles too).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// ARM token buckets per principal; `None` disables throttling.
    pub arm_throttling: Option<ThrottleLimits>,
    /// ACI create/delete quotas per subscription; `None` disables them.
    pub aci_quotas: Option<AciQuotas>,
    /// Probability (0.0–1.0) that an ARM request fails with 500 or 503.
    pub error_rate: f64,
    /// When non-empty, `error_rate` applies only to these operations (stats names with `*`
    /// globs, e.g. `containerGroups.get`, `containerGroups.*`).
    pub error_operations: Vec<String>,
    /// Latency added to every ARM request.
    pub latency_ms: u64,
    /// Capacity errors (409 `ServiceUnavailable`) on container group creation.
    pub capacity: Vec<CapacityFault>,
    /// Overrides `provisioning_delay_ms` while set.
    pub provisioning_delay_ms: Option<u64>,
    /// The IMDS endpoint answers 503 for N seconds from its first token request.
    pub imds_unavailable_secs: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            arm_throttling: Some(ThrottleLimits::default()),
            aci_quotas: Some(AciQuotas::default()),
            error_rate: 0.0,
            error_operations: Vec::new(),
            latency_ms: 0,
            capacity: Vec::new(),
            provisioning_delay_ms: None,
            imds_unavailable_secs: 0,
        }
    }
}

/// One token bucket: `burst` tokens, refilled at `per_second`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    /// Bucket size.
    pub burst: u32,
    /// Refill rate in tokens per second.
    pub per_second: f64,
}

/// ARM's per-principal token buckets (2024 regional throttling).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleLimits {
    /// GET/HEAD: 250 burst, 25/s.
    pub reads: Bucket,
    /// PUT/PATCH/POST: 200 burst, 10/s.
    pub writes: Bucket,
    /// DELETE: 200 burst, 10/s.
    pub deletes: Bucket,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        ThrottleLimits {
            reads: Bucket {
                burst: 250,
                per_second: 25.0,
            },
            writes: Bucket {
                burst: 200,
                per_second: 10.0,
            },
            deletes: Bucket {
                burst: 200,
                per_second: 10.0,
            },
        }
    }
}

/// ACI resource-provider quotas on creates and deletes (sliding windows per subscription).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AciQuotas {
    /// Creates per 5 minutes (100).
    pub creates_per_5m: u32,
    /// Creates per hour (300).
    pub creates_per_hour: u32,
    /// Deletes per 5 minutes (100).
    pub deletes_per_5m: u32,
    /// Deletes per hour (300).
    pub deletes_per_hour: u32,
    /// Standard container groups per region (100); more gives `ContainerGroupQuotaReached`.
    pub container_groups_per_region: u32,
    /// Standard cores per region (100); more gives `ContainerGroupQuotaReached`.
    pub cores_per_region: u32,
}

impl Default for AciQuotas {
    fn default() -> Self {
        AciQuotas {
            creates_per_5m: 100,
            creates_per_hour: 300,
            deletes_per_5m: 100,
            deletes_per_hour: 300,
            container_groups_per_region: 100,
            cores_per_region: 100,
        }
    }
}

/// Capacity errors for container group creation in one location.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CapacityFault {
    /// Location name (case-insensitive); `*` for all.
    pub location: String,
    /// Fail this many creates, then succeed; `None` fails every create.
    #[serde(default)]
    pub count: Option<u32>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            subscription_id: DEFAULT_SUBSCRIPTION_ID.to_string(),
            tenant_id: DEFAULT_TENANT_ID.to_string(),
            admin: Principal::default(),
            principals: Vec::new(),
            locations: vec!["eastus".to_string(), "westus".to_string()],
            unregistered_providers: Vec::new(),
            resource_groups: Vec::new(),
            identities: Vec::new(),
            images: Vec::new(),
            check_images_on_create: true,
            pull_delay_ms: 200,
            provisioning_delay_ms: 200,
            restart_delay_ms: 500,
            kill_grace_ms: 2000,
            work_dir: None,
            token_lifetime_secs: 3600,
            page_size: 100,
            log_limit_bytes: 4 * 1024 * 1024,
            faults: Faults::default(),
            require_auth: true,
            tls: false,
            rbac: false,
            principal_replication_lag_ms: 2000,
            taken_registry_names: Vec::new(),
        }
    }
}

impl ImageRule {
    /// True when `image` matches this rule's glob (`*` = any run of characters).
    pub fn matches(&self, image: &str) -> bool {
        glob_match(&self.image, image)
    }
}

/// Matches `text` against `pattern` where `*` matches any (possibly empty) run of characters.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative wildcard matching with backtracking to the last star: O(len(p) * len(t)).
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match(
            "prefecthq/prefect:*",
            "prefecthq/prefect:3-latest"
        ));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b", "aXXc"));
        assert!(glob_match("busybox", "busybox"));
        assert!(!glob_match("busybox", "busybox:1"));
    }

    #[test]
    fn config_parses_from_partial_json() {
        let c: EmulatorConfig = serde_json::from_str(
            r#"{"listen":"127.0.0.1:8080","images":[{"image":"sh","command":["/bin/sh"]}],
                "faults":{"error_rate":0.5}}"#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.images[0].command, vec!["/bin/sh"]);
        assert_eq!(c.faults.error_rate, 0.5);
        assert!(c.faults.arm_throttling.is_some());
        assert!(c.require_auth);
    }
}
