//! Container groups (`Microsoft.ContainerInstance/containerGroups`), stable 2025-09-01 shape.
//!
//! One struct serves both directions: the PUT body a client sends and the resource the
//! service returns. Read-only fields (`id`, `provisioningState`, `instanceView`, identity
//! principal ids) are `Option` and skipped when absent, so a request never sends them.
//!
//! Two details matter for correctness:
//! - [`EnvironmentVariable::secure_value`] is write-only: the service accepts it and never
//!   returns it (a GET shows only `name`).
//! - Lists (by resource group or subscription) omit `instanceView`; GET one group to see
//!   container states and exit codes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A container group resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ContainerGroup {
    /// Full resource id (response only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Resource name (response only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Microsoft.ContainerInstance/containerGroups` (response only).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// Azure region, e.g. `eastus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Resource tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Availability zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<Vec<String>>,
    /// Managed identities attached to the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<ContainerGroupIdentity>,
    /// The group's properties.
    #[serde(default)]
    pub properties: ContainerGroupProperties,
}

/// Managed identity settings of a container group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerGroupIdentity {
    /// Principal id of the system-assigned identity (response only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Tenant id of the system-assigned identity (response only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// `SystemAssigned`, `UserAssigned`, `SystemAssigned, UserAssigned` or `None`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub identity_type: Option<String>,
    /// Identity resource id → ids; send `{}` as the value in requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_assigned_identities: Option<BTreeMap<String, UserAssignedIdentityRef>>,
}

/// The ids of one user-assigned identity as seen from a container group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct UserAssignedIdentityRef {
    /// Object id of the identity's service principal (response only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Client id of the identity (response only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// Properties of a container group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerGroupProperties {
    /// Last operation's state: `Pending`, `Creating`, `Succeeded`, `Failed`, `Deleting`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// The containers; at least one is required.
    #[serde(default)]
    pub containers: Vec<Container>,
    /// Credentials for private registries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_registry_credentials: Option<Vec<ImageRegistryCredential>>,
    /// `Always` (default), `OnFailure` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    /// `Linux` or `Windows`; required by the service in practice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_type: Option<String>,
    /// `Standard`, `Dedicated` or `Confidential`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// `Regular` or `Spot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Subnets for VNet injection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_ids: Option<Vec<SubnetId>>,
    /// Group runtime view (response only, absent from lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_view: Option<ContainerGroupInstanceView>,
    /// Everything else (ipAddress, volumes, dnsConfig, diagnostics, initContainers, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A subnet reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SubnetId {
    /// Subnet resource id.
    pub id: String,
    /// Optional friendly name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One container of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Container {
    /// Container name, unique in the group.
    pub name: String,
    /// Container properties.
    #[serde(default)]
    pub properties: ContainerProperties,
}

/// Properties of one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProperties {
    /// Image reference, e.g. `myacr.azurecr.io/worker:1.2.3`.
    #[serde(default)]
    pub image: String,
    /// Exec-form command; replaces the image ENTRYPOINT when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_variables: Option<Vec<EnvironmentVariable>>,
    /// CPU and memory requests (required) and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Runtime view (response only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_view: Option<ContainerInstanceView>,
    /// Everything else (ports, volumeMounts, probes, securityContext, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An environment variable; exactly one of `value`, `secureValue` or
/// `secureValueReference` is normally set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentVariable {
    /// Variable name: 1–63 characters, alphanumerics and `_`.
    pub name: String,
    /// Plain value (returned on GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Secret value: accepted on PUT, never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_value: Option<String>,
    /// Key Vault reference to a secret value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_value_reference: Option<String>,
}

/// Resource requests and limits of a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ResourceRequirements {
    /// What the container is guaranteed (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceRequests>,
    /// Upper bounds (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceLimits>,
}

/// Requested resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequests {
    /// Memory in GB.
    #[serde(
        rename = "memoryInGB",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_in_gb: Option<f64>,
    /// CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// GPU (retired on ACI in 2025; kept for schema fidelity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Value>,
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourceLimits {
    /// Memory in GB.
    #[serde(
        rename = "memoryInGB",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_in_gb: Option<f64>,
    /// CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Value>,
}

/// A private registry credential: password form or managed-identity form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImageRegistryCredential {
    /// Registry host name without scheme, e.g. `myacr.azurecr.io`.
    pub server: String,
    /// User name (password form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password (password form; never returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Key Vault reference to the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_reference: Option<String>,
    /// User-assigned identity resource id (identity form, api-version ≥ 2021-07-01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Custom token endpoint for the identity form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_url: Option<String>,
}

/// Group-level runtime view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ContainerGroupInstanceView {
    /// Group events.
    #[serde(default)]
    pub events: Vec<Event>,
    /// `Pending`, `Running`, `Stopped`, `Succeeded`, `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// Per-container runtime view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstanceView {
    /// How many times the platform restarted the container.
    #[serde(default)]
    pub restart_count: u32,
    /// The current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_state: Option<ContainerState>,
    /// The state before the last restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_state: Option<ContainerState>,
    /// Container events (Pulling, Pulled, Started, Killing, Failed, BackOff, ...).
    #[serde(default)]
    pub events: Vec<Event>,
}

/// A container state: `Waiting`, `Running` or `Terminated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// `Waiting`, `Running` or `Terminated`.
    #[serde(default)]
    pub state: String,
    /// When this state began (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// Process exit code, once terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When the container finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
    /// `Completed`, `Error`, `Killed`, `CrashLoopBackOff`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail_status: Option<String>,
}

/// An instance-view event (aggregated by name with a count, like Kubernetes events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// How many times it happened.
    #[serde(default)]
    pub count: u32,
    /// First occurrence (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<String>,
    /// Last occurrence (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<String>,
    /// Event name, e.g. `Pulling`, `Started`.
    #[serde(default)]
    pub name: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// `Normal` or `Warning`.
    #[serde(rename = "type", default)]
    pub event_type: String,
}

/// The body of the container logs endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Logs {
    /// Log text, one line per `\n`, optionally timestamp-prefixed.
    #[serde(default)]
    pub content: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let json = serde_json::json!({
            "location": "eastus",
            "properties": {
                "osType": "Linux",
                "ipAddress": {"type": "Public", "ports": [{"port": 80}]},
                "containers": [{"name": "c", "properties": {
                    "image": "nginx", "ports": [{"port": 80}],
                    "resources": {"requests": {"cpu": 1.0, "memoryInGB": 1.5}},
                    "environmentVariables": [{"name": "A", "secureValue": "s"}]}}]
            }
        });
        let cg: ContainerGroup = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(
            cg.properties.containers[0]
                .properties
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()
                .memory_in_gb,
            Some(1.5)
        );
        assert_eq!(serde_json::to_value(&cg).unwrap(), json);
    }
}
