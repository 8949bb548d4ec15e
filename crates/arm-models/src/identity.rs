//! User-assigned managed identities (`Microsoft.ManagedIdentity/userAssignedIdentities`).
//!
//! The resource `id` goes into a container group's `identity.userAssignedIdentities` and
//! `imageRegistryCredentials[].identity`; `properties.clientId` selects the identity at IMDS;
//! `properties.principalId` is what role assignments name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A user-assigned managed identity resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserAssignedIdentity {
    /// Full resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Resource name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Microsoft.ManagedIdentity/userAssignedIdentities`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// Azure region.
    #[serde(default)]
    pub location: String,
    /// Resource tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Service-assigned ids; absent in requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<UserAssignedIdentityProperties>,
}

/// The ids the service assigns to an identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAssignedIdentityProperties {
    /// Directory tenant of the identity.
    #[serde(default)]
    pub tenant_id: String,
    /// Object id of the service principal (for role assignments).
    #[serde(default)]
    pub principal_id: String,
    /// Application (client) id (for IMDS `client_id`).
    #[serde(default)]
    pub client_id: String,
}
