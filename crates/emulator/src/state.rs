//! The emulator's shared state: resources, operations, tokens and counters.
//!
//! Everything lives behind one [`Shared`] handle (an `Arc`) that the HTTP handlers and the
//! container runtimes clone. Mutable data sits in `std::sync::Mutex`es that are never held
//! across an `.await`: handlers lock, read or change, unlock, then do IO. That keeps the
//! locking obviously deadlock-free and makes every state change atomic from a client's view.
//!
//! **Architecture Invariant:** secrets (`secureValue`, registry passwords, client secrets)
//! are stored only in [`GroupEntry::spec`] and the config; they are stripped whenever a
//! resource is rendered for a response and never logged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arm_models::{
    ContainerGroupIdentity, ContainerGroupProperties, ContainerInstanceView, ErrorDetail, Event,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{EmulatorConfig, Faults};
use crate::throttle::Throttle;

/// The cheap, clonable handle every task shares.
pub(crate) type SharedRef = Arc<Shared>;

/// Shared emulator state.
pub(crate) struct Shared {
    /// The configuration the emulator started with (faults live separately, they change).
    pub config: EmulatorConfig,
    /// `http://127.0.0.1:PORT`: the ARM, AAD and IMDS base URL.
    pub base_url: String,
    /// The CA certificate file when serving HTTPS.
    pub ca_pem_path: Option<PathBuf>,
    /// System roots + CA, given to containers, when serving HTTPS.
    pub ca_bundle_path: Option<PathBuf>,
    /// The first IMDS token request: the warm-up fault is measured from here, as a
    /// container's identity endpoint warms up from when the container (its first caller)
    /// starts, not from when the host did.
    pub imds_first_request: std::sync::OnceLock<Instant>,
    /// Current failure injection.
    pub faults: Mutex<Faults>,
    /// Resources and operations.
    pub state: Mutex<State>,
    /// Request counters by (operation, status).
    pub stats: Mutex<BTreeMap<(String, u16), u64>>,
    /// ARM token buckets and ACI quota windows.
    pub throttle: Mutex<Throttle>,
    /// Issued access tokens.
    pub tokens: Mutex<HashMap<String, TokenInfo>>,
    /// Cancelled at shutdown: stops runners and restarts.
    pub shutdown: CancellationToken,
    /// Every background task (runners, deleters), awaited at shutdown.
    pub tasks: TaskTracker,
    /// Root of per-container working directories.
    pub work_root: PathBuf,
    /// True when `work_root` is a temp dir the emulator created (and removes).
    pub work_root_is_temp: bool,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: the state is plain
/// data, and a poisoned lock must not take the whole emulator down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Who a token was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenInfo {
    /// Object id of the principal (throttling key, stats).
    pub principal_id: String,
    /// Client id of the principal.
    pub client_id: String,
    /// Audience (resource) without a trailing `/`.
    pub audience: String,
    /// Expiry as Unix seconds.
    pub expires_on: i64,
}

/// Resources and operations.
#[derive(Default)]
pub(crate) struct State {
    /// Resource groups by lower-cased name.
    pub resource_groups: BTreeMap<String, RgEntry>,
    /// User-assigned identities by lower-cased resource id.
    pub identities: BTreeMap<String, IdentityEntry>,
    /// Container groups by lower-cased resource id.
    pub groups: BTreeMap<String, GroupEntry>,
    /// Async operations by id.
    pub operations: HashMap<String, OpEntry>,
    /// Registered resource provider namespaces (lower-cased).
    pub registered: std::collections::BTreeSet<String>,
    /// ARM template deployments by lower-cased id.
    pub deployments: BTreeMap<String, DeploymentEntry>,
    /// Custom role definitions by lower-cased GUID.
    pub role_definitions: BTreeMap<String, crate::rbac::RoleDefinition>,
    /// Role assignments by lower-cased id.
    pub role_assignments: BTreeMap<String, AssignmentEntry>,
    /// Container registries by lower-cased id.
    pub registries: BTreeMap<String, RegistryEntry>,
    /// Remaining failures per capacity fault (index into `faults.capacity`), consumed per create.
    pub capacity_used: HashMap<String, u32>,
}

/// A resource group.
#[derive(Debug, Clone)]
pub(crate) struct RgEntry {
    /// Name as created.
    pub name: String,
    /// Location.
    pub location: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// A user-assigned identity.
#[derive(Debug, Clone)]
pub(crate) struct IdentityEntry {
    /// Resource id as created.
    pub id: String,
    /// Name.
    pub name: String,
    /// Location.
    pub location: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Client id.
    pub client_id: String,
    /// Principal (object) id.
    pub principal_id: String,
    /// When the identity was created through ARM (`None` for seeded ones): role
    /// assignments without `principalType` cannot see it until replication catches up.
    pub created: Option<Instant>,
}

/// An ARM template deployment record.
#[derive(Debug, Clone)]
pub(crate) struct DeploymentEntry {
    /// Resource id as created.
    pub id: String,
    /// Name.
    pub name: String,
    /// Resource group as sent.
    pub resource_group: String,
    /// `Accepted`, `Running`, `Succeeded`, `Failed`.
    pub provisioning_state: String,
    /// `properties.mode`.
    pub mode: String,
    /// Evaluated parameters (secure ones without value).
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// Outputs once succeeded.
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// Ids of the resources the deployment created or updated.
    pub output_resources: Vec<String>,
    /// `DeploymentFailed` error once failed.
    pub error: Option<serde_json::Value>,
    /// Last change (RFC 3339).
    pub timestamp: String,
    /// Correlation id of the PUT.
    pub correlation_id: String,
    /// The async operation of the current run.
    pub op_id: String,
    /// Deployment operations (one per resource attempted), as ARM lists them.
    pub operations: Vec<serde_json::Value>,
}

/// A custom role definition or role assignment is kept in [`crate::rbac`]'s own types.
/// A role assignment plus bookkeeping.
#[derive(Debug, Clone)]
pub(crate) struct AssignmentEntry {
    /// The assignment.
    pub assignment: crate::rbac::RoleAssignment,
    /// `properties.description`.
    pub description: Option<String>,
    /// Creation time (RFC 3339).
    pub created_on: String,
}

/// A container registry.
#[derive(Debug, Clone)]
pub(crate) struct RegistryEntry {
    /// Resource id as created.
    pub id: String,
    /// Name as created.
    pub name: String,
    /// Resource group as sent.
    pub resource_group: String,
    /// Location.
    pub location: String,
    /// SKU name (`Basic`, `Standard`, `Premium`).
    pub sku: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// `properties.adminUserEnabled`.
    pub admin_user_enabled: bool,
    /// `Creating`, `Succeeded`.
    pub provisioning_state: String,
    /// Creation time (RFC 3339).
    pub creation_date: String,
}

/// A container group and its runtime.
pub(crate) struct GroupEntry {
    /// Resource id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Resource group name as sent.
    pub resource_group: String,
    /// Location (normalized).
    pub location: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Zones.
    pub zones: Option<Vec<String>>,
    /// Identity block as sent (ids filled in at render time).
    pub identity: Option<ContainerGroupIdentity>,
    /// Properties as sent, including secrets; runtime fields are kept separately.
    pub spec: ContainerGroupProperties,
    /// `Pending`, `Creating`, `Succeeded`, `Failed`, `Deleting`.
    pub provisioning_state: String,
    /// Group instanceView state: `Pending`, `Running`, `Stopped`, `Succeeded`, `Failed`.
    pub instance_state: Option<String>,
    /// Group events.
    pub events: Vec<Event>,
    /// Per-container runtime, in `spec.containers` order.
    pub containers: Vec<ContainerRt>,
    /// Bumped on every (re)deployment; tasks of older generations stop touching the entry.
    pub generation: u64,
    /// Cancels the current generation's tasks.
    pub cancel: CancellationToken,
    /// Tracks the current generation's tasks (to await kills).
    pub tracker: TaskTracker,
    /// The async operation of the current generation's provisioning, if any.
    pub current_op: Option<String>,
    /// Key of this group's scoped IMDS endpoint (`/_imds/{key}/metadata/...`).
    pub imds_key: String,
    /// When the first PUT created the entry (RFC 3339); benchmarks measure pickup latency to it.
    pub created_at: String,
}

/// One container's runtime view.
pub(crate) struct ContainerRt {
    /// Container name.
    pub name: String,
    /// The instance view returned on GET.
    pub view: ContainerInstanceView,
    /// Process id of the running process (also its process group id).
    pub pid: Option<u32>,
    /// True while a task still manages the container (running or about to restart).
    pub active: bool,
    /// Captured output.
    pub logs: Arc<Mutex<LogBuffer>>,
}

/// An async operation.
#[derive(Debug, Clone)]
pub(crate) struct OpEntry {
    /// The resource the operation acts on.
    pub resource_id: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Canceled`.
    pub status: String,
    /// Start time (RFC 3339).
    pub start_time: String,
    /// End time once terminal.
    pub end_time: Option<String>,
    /// Error when failed.
    pub error: Option<ErrorDetail>,
}

/// Captured container output: timestamped lines, bounded in bytes (oldest dropped first).
#[derive(Debug, Default)]
pub(crate) struct LogBuffer {
    /// (timestamp, line) pairs.
    pub lines: VecDeque<(String, String)>,
    /// Total bytes of `lines`' text.
    pub bytes: usize,
    /// Byte limit.
    pub limit: usize,
}

impl LogBuffer {
    /// A buffer holding at most `limit` bytes of text.
    pub fn new(limit: usize) -> Self {
        LogBuffer {
            lines: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    /// Appends a line, dropping the oldest ones beyond the limit.
    pub fn push(&mut self, ts: String, line: String) {
        self.bytes += line.len() + 1;
        self.lines.push_back((ts, line));
        while self.bytes > self.limit {
            match self.lines.pop_front() {
                Some((_, l)) => self.bytes -= l.len() + 1,
                None => break,
            }
        }
    }

    /// Renders the last `tail` lines (all when `None`), optionally timestamp-prefixed.
    pub fn render(&self, tail: Option<usize>, timestamps: bool) -> String {
        let skip = match tail {
            Some(n) => self.lines.len().saturating_sub(n),
            None => 0,
        };
        let mut out = String::new();
        for (ts, line) in self.lines.iter().skip(skip) {
            if timestamps {
                out.push_str(ts);
                out.push(' ');
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_buffer_drops_oldest_and_tails() {
        let mut b = LogBuffer::new(10);
        for l in ["aaa", "bbb", "ccc"] {
            b.push("T".into(), l.into());
        }
        // 3 lines of 4 bytes (with newline) exceed 10: the oldest went.
        assert_eq!(b.render(None, false), "bbb\nccc\n");
        assert_eq!(b.render(Some(1), true), "T ccc\n");
        assert_eq!(b.render(Some(0), false), "");
    }

    #[test]
    fn events_fold_repeats() {
        let mut events = Vec::new();
        add_event(&mut events, "BackOff", "again".into(), "Warning");
        add_event(&mut events, "BackOff", "again".into(), "Warning");
        add_event(&mut events, "Started", "x".into(), "Normal");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].count, 2);
    }

    #[test]
    fn log_timestamps_have_seven_digits() {
        let ts = log_timestamp();
        let frac = ts.rsplit_once('.').map(|(_, f)| f).unwrap_or_default();
        assert_eq!(frac.len(), 8, "{ts}");
        assert!(frac.ends_with('Z'));
    }
}

/// The current time as ARM renders it (RFC 3339, UTC, `Z`).
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The current time as ACI log timestamps show it: 7 fractional digits, `Z`.
pub(crate) fn log_timestamp() -> String {
    let now = chrono::Utc::now();
    format!(
        "{}.{:07}Z",
        now.format("%Y-%m-%dT%H:%M:%S"),
        now.timestamp_subsec_nanos() / 100
    )
}

/// Adds an event, folding a repeat of the last same-named, same-message event into a count.
pub(crate) fn add_event(events: &mut Vec<Event>, name: &str, message: String, event_type: &str) {
    let now = now_rfc3339();
    if let Some(last) = events.iter_mut().rev().find(|e| e.name == name) {
        if last.message == message {
            last.count += 1;
            last.last_timestamp = Some(now);
            return;
        }
    }
    events.push(Event {
        count: 1,
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        name: name.to_string(),
        message,
        event_type: event_type.to_string(),
    });
}

/// Request counters, as returned by [`crate::Emulator::stats`] and `GET /_emulator/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// One row per (operation, status) pair seen, sorted.
    pub requests: Vec<RequestCount>,
}

/// How many requests of one operation ended with one status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    /// Operation name, e.g. `containerGroups.get`, `aad.token`, `imds.token`.
    pub operation: String,
    /// HTTP status.
    pub status: u16,
    /// Count.
    pub count: u64,
}

impl Stats {
    /// Requests of `operation` that ended with `status`.
    pub fn count(&self, operation: &str, status: u16) -> u64 {
        self.requests
            .iter()
            .filter(|r| r.operation == operation && r.status == status)
            .map(|r| r.count)
            .sum()
    }

    /// All requests of `operation`, whatever the status.
    pub fn total(&self, operation: &str) -> u64 {
        self.requests
            .iter()
            .filter(|r| r.operation == operation)
            .map(|r| r.count)
            .sum()
    }
}

/// A container group as the introspection API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// Resource id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Resource group.
    pub resource_group: String,
    /// Provisioning state.
    pub provisioning_state: String,
    /// Instance view state (`Running`, `Succeeded`, ...), if any yet.
    pub state: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Containers.
    pub containers: Vec<ContainerSummary>,
    /// When the first PUT created the group (RFC 3339, microseconds).
    #[serde(default)]
    pub created_at: Option<String>,
}

/// A user-assigned identity as the introspection API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentitySummary {
    /// Resource id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Client id (IMDS `client_id`).
    pub client_id: String,
    /// Principal (object) id.
    pub principal_id: String,
}

/// One container in a [`GroupSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSummary {
    /// Name.
    pub name: String,
    /// Current state (`Waiting`, `Running`, `Terminated`).
    pub state: Option<String>,
    /// Process id while running.
    pub pid: Option<u32>,
    /// Exit code of the last run.
    pub exit_code: Option<i32>,
    /// Restart count.
    pub restart_count: u32,
}

impl Shared {
    /// Records one finished request.
    pub fn record(&self, operation: &str, status: u16) {
        *lock(&self.stats)
            .entry((operation.to_string(), status))
            .or_insert(0) += 1;
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let requests = lock(&self.stats)
            .iter()
            .map(|((operation, status), count)| RequestCount {
                operation: operation.clone(),
                status: *status,
                count: *count,
            })
            .collect();
        Stats { requests }
    }

    /// A snapshot of every container group.
    pub fn groups(&self) -> Vec<GroupSummary> {
        let state = lock(&self.state);
        state
            .groups
            .values()
            .map(|g| GroupSummary {
                id: g.id.clone(),
                name: g.name.clone(),
                resource_group: g.resource_group.clone(),
                provisioning_state: g.provisioning_state.clone(),
                state: g.instance_state.clone(),
                tags: g.tags.clone(),
                containers: g
                    .containers
                    .iter()
                    .map(|c| ContainerSummary {
                        name: c.name.clone(),
                        state: c.view.current_state.as_ref().map(|s| s.state.clone()),
                        pid: c.pid,
                        exit_code: c.view.current_state.as_ref().and_then(|s| s.exit_code),
                        restart_count: c.view.restart_count,
                    })
                    .collect(),
                created_at: Some(g.created_at.clone()),
            })
            .collect()
    }

    /// A snapshot of every user-assigned identity.
    pub fn identities(&self) -> Vec<IdentitySummary> {
        lock(&self.state)
            .identities
            .values()
            .map(|i| IdentitySummary {
                id: i.id.clone(),
                name: i.name.clone(),
                client_id: i.client_id.clone(),
                principal_id: i.principal_id.clone(),
            })
            .collect()
    }

    /// Current faults.
    pub fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// Resource id prefix of the subscription.
    pub fn sub_id(&self) -> String {
        format!("/subscriptions/{}", self.config.subscription_id)
    }

    /// The URL of an ACI async operation.
    pub fn aci_operation_url(&self, location: &str, op_id: &str, api_version: &str) -> String {
        format!(
            "{}/subscriptions/{}/providers/Microsoft.ContainerInstance/locations/{}/operations/{}?api-version={}",
            self.base_url, self.config.subscription_id, location, op_id, api_version
        )
    }

    /// Creates an operation in `Pending` and returns its id.
    pub fn new_operation(&self, state: &mut State, resource_id: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        state.operations.insert(
            id.clone(),
            OpEntry {
                resource_id: resource_id.to_string(),
                status: "Pending".to_string(),
                start_time: now_rfc3339(),
                end_time: None,
                error: None,
            },
        );
        id
    }
}

/// Moves an operation to a new status (terminal statuses get an end time).
pub(crate) fn set_op(state: &mut State, op_id: &str, status: &str, error: Option<ErrorDetail>) {
    if let Some(op) = state.operations.get_mut(op_id) {
        if matches!(op.status.as_str(), "Succeeded" | "Failed" | "Canceled") {
            return;
        }
        op.status = status.to_string();
        if matches!(status, "Succeeded" | "Failed" | "Canceled") {
            op.end_time = Some(now_rfc3339());
        }
        op.error = error;
    }
}
