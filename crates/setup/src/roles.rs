//! The roles setup creates and assigns, stable GUIDs for them, and which roles grant what.
//!
//! Azure identifies role definitions and role assignments by GUIDs the caller picks. Picking
//! them deterministically is what makes setup idempotent: the custom role's GUID is
//! `guid(assignableScope, roleName)` and an assignment's is `guid(scope, principalId,
//! roleDefinitionId)` — Bicep's `guid()` (UUID v5 under ARM's namespace over the parts joined
//! with `-`) — so a re-run PUTs the same ids and updates instead of failing with
//! `RoleDefinitionWithSameNameExists` or `RoleAssignmentExists`.
//!
//! When ARM refuses a call (403 `AuthorizationFailed`), [`roles_granting`] names the built-in
//! roles that would allow it, from a small static table of the roles relevant to setup,
//! least privileged first, so the user knows what to ask an administrator for.

use uuid::Uuid;

/// The custom role setup creates (the guide's name).
pub const ROLE_NAME: &str = "Container Instances Contributor";

/// What the worker needs: the guide's three actions plus reading its resource group (the
/// worker looks up the group's location).
pub const ROLE_ACTIONS: &[&str] = &[
    "Microsoft.ContainerInstance/containerGroups/*",
    "Microsoft.Resources/deployments/*",
    "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
];

/// GUID of the built-in AcrPull role.
pub const ACR_PULL: &str = "7f951dda-4ed3-4680-a7ca-43fe172d538d";

/// ARM's namespace for `guid()` (UUID v5).
const ARM_GUID_NAMESPACE: Uuid = Uuid::from_u128(0x11fb06fb_712d_4ddd_98c7_e71bbd588830);

/// ARM's `guid(parts...)`.
pub fn arm_guid(parts: &[&str]) -> Uuid {
    Uuid::new_v5(&ARM_GUID_NAMESPACE, parts.join("-").as_bytes())
}

/// The custom role's stable GUID for a resource group scope.
pub fn custom_role_guid(rg_scope: &str) -> Uuid {
    arm_guid(&[rg_scope, ROLE_NAME])
}

/// The stable name of a role assignment.
pub fn assignment_name(scope: &str, principal_id: &str, role_definition_id: &str) -> Uuid {
    arm_guid(&[scope, principal_id, role_definition_id])
}

/// The subscription-level id of a role definition.
pub fn role_definition_id(subscription_id: &str, guid: &str) -> String {
    format!(
        "/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
    )
}

/// (role, actions, notActions) of the roles relevant to setup, least privileged first.
const ROLES: &[(&str, &[&str], &[&str])] = &[
    (
        "AcrPull",
        &["Microsoft.ContainerRegistry/registries/pull/read"],
        &[],
    ),
    ("Reader", &["*/read"], &[]),
    (
        "Managed Identity Operator",
        &[
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            "Microsoft.Authorization/*/read",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/deployments/*",
        ],
        &[],
    ),
    (ROLE_NAME, ROLE_ACTIONS, &[]),
    (
        "Managed Identity Contributor",
        &[
            "Microsoft.ManagedIdentity/userAssignedIdentities/*",
            "Microsoft.Authorization/*/read",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Resources/deployments/*",
        ],
        &[],
    ),
    (
        "User Access Administrator",
        &["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"],
        &[],
    ),
    (
        "Contributor",
        &["*"],
        &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
        ],
    ),
    ("Owner", &["*"], &[]),
];

/// The roles (of the static table) that grant `action`, least privileged first.
pub fn roles_granting(action: &str) -> Vec<&'static str> {
    ROLES
        .iter()
        .filter(|(_, actions, not_actions)| {
            actions.iter().any(|p| action_matches(p, action))
                && !not_actions.iter().any(|p| action_matches(p, action))
        })
        .map(|(name, _, _)| *name)
        .collect()
}

/// Azure's action pattern match: case-insensitive, `*` matches any run of characters, and a
/// `/*/` in the middle may also match a single `/`.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    fn go(p: &[u8], a: &[u8]) -> bool {
        match p.first() {
            None => a.is_empty(),
            Some(b'/') if p.get(1) == Some(&b'*') && p.get(2) == Some(&b'/') => {
                a.first() == Some(&b'/') && (go(&p[3..], &a[1..]) || go(&p[1..], &a[1..]))
            }
            Some(b'*') => go(&p[1..], a) || (!a.is_empty() && go(p, &a[1..])),
            Some(c) => a.first() == Some(c) && go(&p[1..], &a[1..]),
        }
    }
    if pattern.len() > 512 || action.len() > 512 {
        return false;
    }
    go(
        pattern.to_ascii_lowercase().as_bytes(),
        action.to_ascii_lowercase().as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_stable_and_match_bicep() {
        // Stable, scoped, version 5; tests/setup_e2e.rs checks them against the emulator's
        // implementation of ARM's guid().
        let a = custom_role_guid("/subscriptions/s/resourceGroups/rg");
        assert_eq!(a, custom_role_guid("/subscriptions/s/resourceGroups/rg"));
        assert_ne!(a, custom_role_guid("/subscriptions/s/resourceGroups/rg2"));
        assert_eq!(a.get_version_num(), 5);
    }

    #[test]
    fn roles_granting_is_least_privileged_first() {
        assert_eq!(
            roles_granting("Microsoft.Authorization/roleDefinitions/write"),
            vec!["User Access Administrator", "Owner"]
        );
        assert_eq!(
            roles_granting("Microsoft.ContainerInstance/containerGroups/write"),
            vec![ROLE_NAME, "Contributor", "Owner"]
        );
        assert_eq!(
            roles_granting("Microsoft.ManagedIdentity/userAssignedIdentities/assign/action")[0],
            "Managed Identity Operator"
        );
        assert_eq!(
            roles_granting("Microsoft.ContainerRegistry/registries/pull/read")[0],
            "AcrPull"
        );
    }

    #[test]
    fn patterns() {
        assert!(action_matches("*/read", "Microsoft.Foo/bars/read"));
        assert!(action_matches(
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            "microsoft.managedidentity/userassignedidentities/assign/action"
        ));
        assert!(!action_matches(
            "Microsoft.Authorization/*/Write",
            "Microsoft.Resources/x/write"
        ));
    }
}
