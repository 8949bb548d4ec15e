//! Azure RBAC, modelled closely enough that the emulator can refuse requests the way Azure does.
//!
//! Azure Resource Manager authorises every management-plane request by turning it into an
//! *action* string (`Microsoft.ContainerInstance/containerGroups/write`) and a *scope* (the ARM
//! id the request touches), then asking: does any role assignment of the caller, made at that
//! scope or at one of its ancestors, point at a role definition whose `actions` match the action
//! and whose `notActions` do not? This module answers exactly that question and nothing more.
//!
//! # Rules implemented
//!
//! - **Scope inheritance** is a case-insensitive, segment-by-segment prefix test: an assignment
//!   at `/subscriptions/s` covers `/subscriptions/s/resourceGroups/rg/...`, but one at
//!   `/subscriptions/s/resourceGroups/rg` does not cover `/subscriptions/s/resourceGroups/rg2`.
//!   The root scope `/` covers everything.
//! - **Action patterns** compare case-insensitively and `*` matches any run of characters,
//!   including `/`, so `*/read` matches every read and `Microsoft.Authorization/*/Write` matches
//!   `Microsoft.Authorization/roleAssignments/write`. As in Azure, a `/*/` in the middle of a
//!   pattern may also match a single `/`: the built-in *Managed Identity Operator* grants
//!   `Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action`, and that must cover
//!   `Microsoft.ManagedIdentity/userAssignedIdentities/assign/action`.
//! - **`notActions` subtract per role**, not globally: a principal that is Contributor (which
//!   excludes `Microsoft.Authorization/*/Write`) and also User Access Administrator may still
//!   write role assignments. Deny assignments are not modelled.
//! - **Control-plane and data-plane** permissions are separate lists; [`is_authorized`] checks
//!   `actions`/`notActions` and [`is_data_action_authorized`] checks `dataActions`/`notDataActions`.
//!
//! # Request mapping
//!
//! [`action_for`] maps an HTTP method and ARM path to the action ARM would check, and
//! [`authorization_scope`] gives the scope to check it over (the resource itself, or the parent
//! for collection reads and `POST …/{action}` calls). Together they let the HTTP layer
//! authorise any request, and [`authorization_failed_message`] /
//! [`linked_authorization_failed_message`] produce ARM's own refusal texts.
//! [`authorize_request`] does all of it in one call, including ARM's *linked* check: a `PUT`
//! that attaches user-assigned identities also needs
//! `Microsoft.ManagedIdentity/userAssignedIdentities/assign/action` on each of them, or ARM
//! answers `LinkedAuthorizationFailed`.
//!
//! # Boundaries
//!
//! Pure functions over plain data: no IO, no clock, no dependency on other emulator modules.
//! The domain types here are deliberately not `Serialize`; the HTTP layer maps them to the wire
//! DTOs.

use serde_json::Value;
use uuid::Uuid;

/// Well-known GUIDs (the `name` of the definition) of the built-in roles this module ships.
pub mod builtin_ids {
    /// *Owner*: everything, including role assignments.
    pub const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
    /// *Contributor*: everything except RBAC, blueprint assignments and gallery sharing.
    pub const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
    /// *Reader*: every `read` action.
    pub const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
    /// *AcrPull*: pull images from a container registry.
    pub const ACR_PULL: &str = "7f951dda-4ed3-4680-a7ca-43fe172d538d";
    /// *User Access Administrator*: read everything and manage RBAC.
    pub const USER_ACCESS_ADMINISTRATOR: &str = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9";
    /// *Managed Identity Operator*: read and assign user-assigned identities.
    pub const MANAGED_IDENTITY_OPERATOR: &str = "f1a07417-d97a-45cb-824c-7a7467783830";
}

/// The action a caller needs on a user-assigned identity to attach it to a resource (for
/// example to a container group's `identity.userAssignedIdentities`).
pub const IDENTITY_ASSIGN_ACTION: &str =
    "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action";

/// The namespace GUID ARM's `guid()` template function hashes under (UUID version 5). Bicep's
/// `guid(scope, principalId, roleDefinitionId)` idiom for role assignment names relies on it;
/// `arm_template` uses the same constant for its `guid()`.
const ARM_GUID_NAMESPACE: Uuid = Uuid::from_u128(0x11fb06fb_712d_4ddd_98c7_e71bbd588830);

/// Whether a role definition ships with Azure or was created by a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleType {
    /// Shipped by Azure (`"BuiltInRole"` on the wire).
    BuiltIn,
    /// Created by a customer (`"CustomRole"` on the wire).
    Custom,
}

impl RoleType {
    /// The `properties.type` value ARM uses for this kind of role.
    pub fn as_arm_str(self) -> &'static str {
        match self {
            RoleType::BuiltIn => "BuiltInRole",
            RoleType::Custom => "CustomRole",
        }
    }

    /// Parses ARM's `properties.type`, case-insensitively; `None` for anything else.
    pub fn from_arm_str(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("BuiltInRole") {
            Some(RoleType::BuiltIn)
        } else if s.eq_ignore_ascii_case("CustomRole") {
            Some(RoleType::Custom)
        } else {
            None
        }
    }
}

/// A role definition: a named set of permitted and excluded actions.
///
/// Azure allows several `permissions` blocks; they always come as one in practice, so this
/// flattens them into one set of lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleDefinition {
    /// Full ARM id, e.g. `/subscriptions/{s}/providers/Microsoft.Authorization/roleDefinitions/{guid}`.
    pub id: String,
    /// The definition GUID (last segment of `id`).
    pub name: String,
    /// Display name, e.g. `Contributor`.
    pub role_name: String,
    /// Built-in or custom.
    pub role_type: RoleType,
    /// Human description.
    pub description: String,
    /// Control-plane action patterns granted.
    pub actions: Vec<String>,
    /// Control-plane action patterns subtracted from `actions`.
    pub not_actions: Vec<String>,
    /// Data-plane action patterns granted.
    pub data_actions: Vec<String>,
    /// Data-plane action patterns subtracted from `data_actions`.
    pub not_data_actions: Vec<String>,
    /// Scopes at which the role may be assigned (`/` for built-ins).
    pub assignable_scopes: Vec<String>,
}

impl RoleDefinition {
    /// Whether this role grants the control-plane `action` (its `actions` match and its
    /// `notActions` do not).
    pub fn grants(&self, action: &str) -> bool {
        grants(&self.actions, &self.not_actions, action)
    }

    /// Whether this role grants the data-plane `data_action`.
    pub fn grants_data(&self, data_action: &str) -> bool {
        grants(&self.data_actions, &self.not_data_actions, data_action)
    }

    /// Whether the role may be assigned at `scope`: `scope` lies at or under one of its
    /// assignable scopes.
    pub fn is_assignable_at(&self, scope: &str) -> bool {
        self.assignable_scopes
            .iter()
            .any(|allowed| scope_covers(allowed, scope))
    }
}

/// A role assignment: grants a principal a role at a scope (and everything under it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAssignment {
    /// Full ARM id: `{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`.
    pub id: String,
    /// The assignment GUID.
    pub name: String,
    /// The scope the role is granted at.
    pub scope: String,
    /// Full id of the role definition; only its last segment (the GUID) is used for matching,
    /// because ARM accepts both the tenant-level and the subscription-level form.
    pub role_definition_id: String,
    /// Object id of the principal (user, group or service principal).
    pub principal_id: String,
    /// `User`, `Group`, `ServicePrincipal`, ...
    pub principal_type: String,
}

/// The tenant-level ARM id of a role definition GUID, the form built-ins are listed with.
pub fn tenant_role_definition_id(guid: &str) -> String {
    format!("/providers/Microsoft.Authorization/roleDefinitions/{guid}")
}

/// The subscription-level ARM id of a role definition GUID, the form role assignments use.
pub fn subscription_role_definition_id(subscription_id: &str, guid: &str) -> String {
    format!(
        "/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
    )
}

/// The built-in roles the emulator knows, with their real GUIDs, descriptions and permissions
/// (as published in Microsoft's built-in roles reference). Ids are tenant-level
/// (`/providers/Microsoft.Authorization/roleDefinitions/{guid}`).
pub fn builtin_role_definitions() -> Vec<RoleDefinition> {
    fn builtin(
        guid: &str,
        role_name: &str,
        description: &str,
        actions: &[&str],
        not_actions: &[&str],
        data_actions: &[&str],
    ) -> RoleDefinition {
        let strings = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        RoleDefinition {
            id: tenant_role_definition_id(guid),
            name: guid.to_string(),
            role_name: role_name.to_string(),
            role_type: RoleType::BuiltIn,
            description: description.to_string(),
            actions: strings(actions),
            not_actions: strings(not_actions),
            data_actions: strings(data_actions),
            not_data_actions: Vec::new(),
            assignable_scopes: vec!["/".to_string()],
        }
    }
    vec![
        builtin(
            builtin_ids::OWNER,
            "Owner",
            "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
            &["*"],
            &[],
            &[],
        ),
        builtin(
            builtin_ids::CONTRIBUTOR,
            "Contributor",
            "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC, manage assignments in Azure Blueprints, or share image galleries.",
            &["*"],
            &[
                "Microsoft.Authorization/*/Delete",
                "Microsoft.Authorization/*/Write",
                "Microsoft.Authorization/elevateAccess/Action",
                "Microsoft.Blueprint/blueprintAssignments/write",
                "Microsoft.Blueprint/blueprintAssignments/delete",
                "Microsoft.Compute/galleries/share/action",
                "Microsoft.Purview/consents/write",
                "Microsoft.Purview/consents/delete",
                "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
            ],
            &[],
        ),
        builtin(
            builtin_ids::READER,
            "Reader",
            "View all resources, but does not allow you to make any changes.",
            &["*/read"],
            &[],
            &[],
        ),
        builtin(
            builtin_ids::ACR_PULL,
            "AcrPull",
            "acr pull",
            &["Microsoft.ContainerRegistry/registries/pull/read"],
            &[],
            &[],
        ),
        builtin(
            builtin_ids::USER_ACCESS_ADMINISTRATOR,
            "User Access Administrator",
            "Lets you manage user access to Azure resources.",
            &["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"],
            &[],
            &[],
        ),
        builtin(
            builtin_ids::MANAGED_IDENTITY_OPERATOR,
            "Managed Identity Operator",
            "Read and Assign User Assigned Identity",
            &[
                "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
                "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
                "Microsoft.Authorization/*/read",
                "Microsoft.Insights/alertRules/*",
                "Microsoft.Resources/subscriptions/resourceGroups/read",
                "Microsoft.Resources/deployments/*",
                "Microsoft.Support/*",
            ],
            &[],
            &[],
        ),
    ]
}

/// Whether `principal_id` may perform the control-plane `action` over `scope`, given all role
/// assignments and definitions known. Assignments whose definition is unknown grant nothing.
pub fn is_authorized(
    assignments: &[RoleAssignment],
    definitions: &[RoleDefinition],
    principal_id: &str,
    action: &str,
    scope: &str,
) -> bool {
    effective_roles(assignments, definitions, principal_id, scope).any(|def| def.grants(action))
}

/// Like [`is_authorized`] but for a data-plane action (`dataActions`/`notDataActions`).
pub fn is_data_action_authorized(
    assignments: &[RoleAssignment],
    definitions: &[RoleDefinition],
    principal_id: &str,
    data_action: &str,
    scope: &str,
) -> bool {
    effective_roles(assignments, definitions, principal_id, scope)
        .any(|def| def.grants_data(data_action))
}

/// The role definitions that apply to `principal_id` at `scope`: those of its assignments made
/// at `scope` or an ancestor of it.
pub fn effective_roles<'a>(
    assignments: &'a [RoleAssignment],
    definitions: &'a [RoleDefinition],
    principal_id: &'a str,
    scope: &'a str,
) -> impl Iterator<Item = &'a RoleDefinition> + 'a {
    assignments
        .iter()
        .filter(move |a| a.principal_id.eq_ignore_ascii_case(principal_id))
        .filter(move |a| scope_covers(&a.scope, scope))
        .filter_map(move |a| find_definition(definitions, &a.role_definition_id))
}

/// Finds a definition by full id or bare GUID, comparing GUIDs case-insensitively so the
/// tenant-level and subscription-level id forms both resolve.
pub fn find_definition<'a>(
    definitions: &'a [RoleDefinition],
    role_definition_id: &str,
) -> Option<&'a RoleDefinition> {
    let guid = last_segment(role_definition_id);
    definitions.iter().find(|d| {
        d.name.eq_ignore_ascii_case(guid) || last_segment(&d.id).eq_ignore_ascii_case(guid)
    })
}

/// The definitions that grant `action`, in the order given; setup uses this to tell a user
/// which role would make a refused request succeed.
pub fn roles_granting<'a>(
    action: &str,
    definitions: &'a [RoleDefinition],
) -> Vec<&'a RoleDefinition> {
    definitions.iter().filter(|d| d.grants(action)).collect()
}

/// The identities among `identity_ids` on which `principal_id` lacks
/// [`IDENTITY_ASSIGN_ACTION`]. Attaching a user-assigned identity to a container group needs
/// that action on each identity, in addition to `containerGroups/write` on the group.
pub fn identities_not_assignable<'a>(
    assignments: &[RoleAssignment],
    definitions: &[RoleDefinition],
    principal_id: &str,
    identity_ids: &'a [String],
) -> Vec<&'a str> {
    identity_ids
        .iter()
        .filter(|id| {
            !is_authorized(
                assignments,
                definitions,
                principal_id,
                IDENTITY_ASSIGN_ACTION,
                id,
            )
        })
        .map(String::as_str)
        .collect()
}

/// Whether an assignment at `assignment_scope` applies to a request over `target_scope`:
/// a case-insensitive, segment-wise prefix test (`/` covers everything).
pub fn scope_covers(assignment_scope: &str, target_scope: &str) -> bool {
    let outer = segments(assignment_scope);
    let inner = segments(target_scope);
    outer.len() <= inner.len()
        && outer
            .iter()
            .zip(inner.iter())
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
}

/// Whether `action` matches the permission `pattern`: case-insensitive, `*` matches any run of
/// characters (including `/`), and `/*/` may also match a single `/`. Inputs longer than 1024
/// characters never match.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    // Real actions and patterns are well under 200 characters; refusing absurd lengths keeps
    // the matcher's memory and recursion bounded, and refusing is the safe answer.
    const MAX_LEN: usize = 1024;
    if pattern.len() > MAX_LEN || action.len() > MAX_LEN {
        return false;
    }
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let a: Vec<char> = action.to_ascii_lowercase().chars().collect();
    glob(&p, &a)
}

/// Why ARM refuses a request, with the error code and message it answers (HTTP 403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The caller lacks the request's own action over its scope.
    AuthorizationFailed {
        /// The action that was checked.
        action: String,
        /// The scope it was checked over.
        scope: String,
        /// ARM's message text.
        message: String,
    },
    /// The caller may perform the action but lacks `assign/action` on identities the request
    /// body links to.
    LinkedAuthorizationFailed {
        /// The request's own action.
        action: String,
        /// The request's scope.
        scope: String,
        /// The identity ids the caller may not assign.
        linked_scopes: Vec<String>,
        /// ARM's message text.
        message: String,
    },
}

impl Refusal {
    /// ARM's `error.code` for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::AuthorizationFailed { .. } => "AuthorizationFailed",
            Refusal::LinkedAuthorizationFailed { .. } => "LinkedAuthorizationFailed",
        }
    }

    /// ARM's `error.message` for this refusal.
    pub fn message(&self) -> &str {
        match self {
            Refusal::AuthorizationFailed { message, .. }
            | Refusal::LinkedAuthorizationFailed { message, .. } => message,
        }
    }
}

/// Authorises a whole ARM request the way ARM does: the action [`action_for`] derives, over
/// [`authorization_scope`], and, for `PUT`/`PATCH` with a body, [`IDENTITY_ASSIGN_ACTION`] on
/// every user-assigned identity the body links to (see [`linked_identity_ids`]).
pub fn authorize_request(
    assignments: &[RoleAssignment],
    definitions: &[RoleDefinition],
    principal_id: &str,
    method: &str,
    arm_path: &str,
    body: Option<&Value>,
) -> Result<(), Refusal> {
    let action = action_for(method, arm_path);
    let scope = authorization_scope(arm_path);
    if !is_authorized(assignments, definitions, principal_id, &action, &scope) {
        let message = authorization_failed_message(principal_id, &action, &scope);
        return Err(Refusal::AuthorizationFailed {
            action,
            scope,
            message,
        });
    }
    let writes = matches!(method.to_ascii_uppercase().as_str(), "PUT" | "PATCH");
    if let (true, Some(body)) = (writes, body) {
        let ids = linked_identity_ids(body);
        let refused = identities_not_assignable(assignments, definitions, principal_id, &ids);
        if !refused.is_empty() {
            let message = linked_authorization_failed_message(
                principal_id,
                &action,
                &scope,
                IDENTITY_ASSIGN_ACTION,
                &refused,
            );
            return Err(Refusal::LinkedAuthorizationFailed {
                action,
                scope,
                linked_scopes: refused.iter().map(|s| s.to_string()).collect(),
                message,
            });
        }
    }
    Ok(())
}

/// The user-assigned identity ids a resource body links to: the keys of
/// `identity.userAssignedIdentities` and any `properties.imageRegistryCredentials[].identity`
/// that is an identity id (ACI pulls images with those). Deduplicated case-insensitively, in
/// first-seen order.
pub fn linked_identity_ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut push = |id: &str| {
        if id
            .to_ascii_lowercase()
            .contains("/providers/microsoft.managedidentity/userassignedidentities/")
            && !ids.iter().any(|x| x.eq_ignore_ascii_case(id))
        {
            ids.push(id.to_string());
        }
    };
    if let Some(map) = body
        .pointer("/identity/userAssignedIdentities")
        .and_then(Value::as_object)
    {
        map.keys().for_each(|k| push(k));
    }
    if let Some(creds) = body
        .pointer("/properties/imageRegistryCredentials")
        .and_then(Value::as_array)
    {
        creds
            .iter()
            .filter_map(|c| c.get("identity").and_then(Value::as_str))
            .for_each(&mut push);
    }
    ids
}

/// ARM's `AuthorizationFailed` message, verbatim.
pub fn authorization_failed_message(principal_id: &str, action: &str, scope: &str) -> String {
    format!(
        "The client '{principal_id}' with object id '{principal_id}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
    )
}

/// ARM's `LinkedAuthorizationFailed` message: the caller may perform `action` on `scope` but
/// lacks `linked_action` on the linked scopes (listed comma-separated, as ARM does).
pub fn linked_authorization_failed_message(
    principal_id: &str,
    action: &str,
    scope: &str,
    linked_action: &str,
    linked_scopes: &[&str],
) -> String {
    format!(
        "The client '{principal_id}' with object id '{principal_id}' has permission to perform action '{action}' on scope '{scope}'; however, it does not have permission to perform action '{linked_action}' on the linked scope(s) '{}' or the linked scope(s) are invalid.",
        linked_scopes.join(",")
    )
}

/// A deterministic GUID from `parts`, computed like ARM's and Bicep's `guid(...)`: UUID
/// version 5 under ARM's namespace over the parts joined with `-`.
pub fn arm_guid(parts: &[&str]) -> Uuid {
    Uuid::new_v5(&ARM_GUID_NAMESPACE, parts.join("-").as_bytes())
}

/// The conventional name of a role assignment, Bicep's
/// `guid(scope, principalId, roleDefinitionId)`: re-running setup yields the same GUID, so the
/// PUT is idempotent instead of failing with `RoleAssignmentExists`.
pub fn role_assignment_name(scope: &str, principal_id: &str, role_definition_id: &str) -> Uuid {
    arm_guid(&[scope, principal_id, role_definition_id])
}

/// A stable GUID for a custom role definition: `guid(assignableScope, roleName)`. ARM rejects
/// a second definition with the same role name, so the GUID must not change between runs.
pub fn custom_role_definition_name(assignable_scope: &str, role_name: &str) -> Uuid {
    arm_guid(&[assignable_scope, role_name])
}

/// Maps an HTTP request on an ARM path to the action ARM authorises it with.
///
/// - `GET`/`HEAD` → `…/read`, `PUT`/`PATCH` → `…/write`, `DELETE` → `…/delete`.
/// - The action's resource type is the provider namespace followed by every type segment of
///   the path (names are dropped): `…/containerGroups/{cg}/containers/{c}/logs` →
///   `Microsoft.ContainerInstance/containerGroups/containers/logs/read`.
/// - `POST` to `{resource}/{verb}` → `…/{verb}/action`, e.g. `containerGroups/stop/action`
///   and, on `/subscriptions/{s}/providers/{ns}/register`, `{ns}/register/action`.
/// - Paths without `providers` are `Microsoft.Resources` types: subscriptions and resource
///   groups map to `Microsoft.Resources/subscriptions/resourceGroups/…`.
/// - The segment after the *last* `providers` names the namespace, so extension resources such
///   as role assignments on a registry map to `Microsoft.Authorization/roleAssignments/…`.
///
/// Query strings are ignored; well-known segments are re-cased to ARM's canonical spelling so
/// the action reads naturally in `AuthorizationFailed` messages.
pub fn action_for(method: &str, arm_path: &str) -> String {
    let segs = segments(strip_query(arm_path));
    let (namespace, rest): (String, &[&str]) = match last_providers(&segs) {
        // `…/providers/{namespace}/{type}…`: a provider resource (or extension resource).
        Some(i) if i + 2 < segs.len() => (canonical(segs[i + 1]), &segs[i + 2..]),
        // `/subscriptions/{s}/providers[/{namespace}]`: reading the provider registry, and
        // paths without `providers` at all (subscriptions, resource groups): both are
        // `Microsoft.Resources` types spelled out by the path itself.
        _ => ("Microsoft.Resources".to_string(), &segs[..]),
    };
    // Segments alternate type/name, so every other one is a type; an odd count means the path
    // ends on a type (a collection, or the verb of a POST action).
    let mut parts = vec![namespace];
    parts.extend(rest.iter().step_by(2).map(|s| canonical(s)));
    let method = method.to_ascii_uppercase();
    // Name checks are POSTs that only read, and ARM authorises them as reads.
    let name_check = rest
        .last()
        .is_some_and(|s| s.eq_ignore_ascii_case("checkNameAvailability"));
    let verb = match method.as_str() {
        "POST" if name_check => "read",
        "GET" | "HEAD" | "OPTIONS" => "read",
        "PUT" | "PATCH" => "write",
        "DELETE" => "delete",
        _ => "action",
    };
    parts.push(verb.to_string());
    parts.join("/")
}

/// The scope ARM checks a request's action over: the ARM id the request targets. A path that
/// ends on a type segment (a collection such as `GET …/containerGroups`, or the verb of
/// `POST …/containerGroups/{cg}/stop`) is checked over its parent, and a trailing
/// `providers/{namespace}` (provider registration) is checked over the subscription.
pub fn authorization_scope(arm_path: &str) -> String {
    let segs = segments(strip_query(arm_path));
    let types_start = match last_providers(&segs) {
        Some(i) => (i + 2).min(segs.len()),
        None => 0,
    };
    let mut keep = segs.len();
    if (segs.len() - types_start) % 2 == 1 {
        keep -= 1;
    }
    if keep >= 2 && segs[keep - 2].eq_ignore_ascii_case("providers") {
        keep -= 2;
    } else if keep >= 1 && segs[keep - 1].eq_ignore_ascii_case("providers") {
        keep -= 1;
    }
    if keep == 0 {
        "/".to_string()
    } else {
        format!("/{}", segs[..keep].join("/"))
    }
}

fn last_providers(segs: &[&str]) -> Option<usize> {
    segs.iter()
        .rposition(|s| s.eq_ignore_ascii_case("providers"))
}

fn grants(actions: &[String], not_actions: &[String], action: &str) -> bool {
    actions.iter().any(|p| action_matches(p, action))
        && !not_actions.iter().any(|p| action_matches(p, action))
}

/// Wildcard match, memoised over (pattern position, action position) so that custom roles with
/// many `*` cannot make a check exponential.
fn glob(p: &[char], a: &[char]) -> bool {
    let mut memo = vec![None; (p.len() + 1) * (a.len() + 1)];
    glob_at(p, a, 0, 0, &mut memo)
}

fn glob_at(p: &[char], a: &[char], i: usize, j: usize, memo: &mut [Option<bool>]) -> bool {
    let key = i * (a.len() + 1) + j;
    if let Some(known) = memo[key] {
        return known;
    }
    let result = match p.get(i) {
        None => j == a.len(),
        // `/*/` may also match a single `/` (an empty middle segment), which is how Azure
        // reads patterns like `userAssignedIdentities/*/assign/action`.
        Some('/') if p.get(i + 1) == Some(&'*') && p.get(i + 2) == Some(&'/') => {
            a.get(j) == Some(&'/')
                && (glob_at(p, a, i + 3, j + 1, memo) || glob_at(p, a, i + 1, j + 1, memo))
        }
        // `*` matches nothing, or one more character and stays.
        Some('*') => {
            glob_at(p, a, i + 1, j, memo) || (j < a.len() && glob_at(p, a, i, j + 1, memo))
        }
        Some(c) => a.get(j) == Some(c) && glob_at(p, a, i + 1, j + 1, memo),
    };
    memo[key] = Some(result);
    result
}

fn strip_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or("")
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

fn last_segment(id: &str) -> &str {
    id.rsplit('/').find(|s| !s.is_empty()).unwrap_or("")
}

/// ARM's canonical spelling of path segments that commonly arrive lower-cased.
fn canonical(segment: &str) -> String {
    const KNOWN: &[&str] = &[
        "Microsoft.Resources",
        "Microsoft.ContainerInstance",
        "Microsoft.ContainerRegistry",
        "Microsoft.ManagedIdentity",
        "Microsoft.Authorization",
        "Microsoft.Network",
        "Microsoft.Storage",
        "subscriptions",
        "resourceGroups",
        "resources",
        "providers",
        "tenants",
        "deployments",
        "operations",
        "operationStatuses",
        "operationresults",
        "containerGroups",
        "containers",
        "logs",
        "exec",
        "attach",
        "start",
        "stop",
        "restart",
        "locations",
        "userAssignedIdentities",
        "roleAssignments",
        "roleDefinitions",
        "registries",
        "register",
        "unregister",
        "listCredentials",
        "checkNameAvailability",
        "virtualNetworks",
        "subnets",
        "validate",
        "cancel",
    ];
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(segment))
        .map(|k| k.to_string())
        .unwrap_or_else(|| segment.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";
    const ALICE: &str = "11111111-1111-1111-1111-111111111111";
    const BOB: &str = "22222222-2222-2222-2222-222222222222";

    fn rg_scope(rg: &str) -> String {
        format!("/subscriptions/{SUB}/resourceGroups/{rg}")
    }

    fn cg(rg: &str, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.ContainerInstance/containerGroups/{name}",
            rg_scope(rg)
        )
    }

    fn identity(rg: &str, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
            rg_scope(rg)
        )
    }

    fn assign(principal: &str, scope: &str, role_guid: &str) -> RoleAssignment {
        let role_definition_id = subscription_role_definition_id(SUB, role_guid);
        let name = role_assignment_name(scope, principal, &role_definition_id).to_string();
        RoleAssignment {
            id: format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
            name,
            scope: scope.to_string(),
            role_definition_id,
            principal_id: principal.to_string(),
            principal_type: "ServicePrincipal".to_string(),
        }
    }

    fn custom(guid: &str, actions: &[&str], not_actions: &[&str]) -> RoleDefinition {
        RoleDefinition {
            id: subscription_role_definition_id(SUB, guid),
            name: guid.to_string(),
            role_name: "ACI Job Runner".to_string(),
            role_type: RoleType::Custom,
            description: "runs jobs".to_string(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
            not_actions: not_actions.iter().map(|s| s.to_string()).collect(),
            data_actions: Vec::new(),
            not_data_actions: Vec::new(),
            assignable_scopes: vec![rg_scope("rg")],
        }
    }

    fn allowed(assignments: &[RoleAssignment], action: &str, scope: &str) -> bool {
        is_authorized(
            assignments,
            &builtin_role_definitions(),
            ALICE,
            action,
            scope,
        )
    }

    #[test]
    fn wildcard_patterns() {
        let cases = [
            (
                "*",
                "Microsoft.ContainerInstance/containerGroups/write",
                true,
            ),
            (
                "*/read",
                "Microsoft.ContainerInstance/containerGroups/read",
                true,
            ),
            (
                "*/read",
                "Microsoft.ContainerInstance/containerGroups/write",
                false,
            ),
            (
                "*/read",
                "Microsoft.ContainerInstance/containerGroups/containers/logs/read",
                true,
            ),
            (
                "Microsoft.ContainerInstance/containerGroups/*",
                "Microsoft.ContainerInstance/containerGroups/stop/action",
                true,
            ),
            (
                "Microsoft.ContainerInstance/containerGroups/*",
                "Microsoft.ContainerInstance/locations/operations/read",
                false,
            ),
            (
                "Microsoft.Authorization/*/Write",
                "Microsoft.Authorization/roleAssignments/write",
                true,
            ),
            (
                "Microsoft.Authorization/*/Write",
                "Microsoft.Authorization/roleAssignments/read",
                false,
            ),
            (
                "Microsoft.Authorization/*",
                "Microsoft.Authorization/roleDefinitions/write",
                true,
            ),
            ("Microsoft.Storage/*", "Microsoft.StorageSync/x/read", false),
            // `/*/` also matches an empty segment (Managed Identity Operator's pattern).
            (
                "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
                "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
                true,
            ),
            (
                "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
                "Microsoft.ManagedIdentity/userAssignedIdentities/x/assign/action",
                true,
            ),
            (
                "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
                "Microsoft.ManagedIdentity/userAssignedIdentities/read",
                true,
            ),
            (
                "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
                "Microsoft.ManagedIdentity/userAssignedIdentities/write",
                false,
            ),
            ("a/*/b", "a/b/c", false),
            ("exact/read", "exact/read", true),
            ("exact/read", "exact/readx", false),
            ("exact/read", "exact/rea", false),
            ("", "", true),
            ("*", "", true),
            ("**/read", "x/read", true),
        ];
        for (pattern, action, expected) in cases {
            assert_eq!(
                action_matches(pattern, action),
                expected,
                "{pattern} vs {action}"
            );
        }
    }

    #[test]
    fn absurdly_long_actions_are_refused() {
        assert!(!action_matches("*", &"a".repeat(5000)));
    }

    #[test]
    fn many_stars_stay_fast() {
        let pattern = "*a".repeat(30) + "*b";
        let action = "a".repeat(200);
        assert!(!action_matches(&pattern, &action));
    }

    #[test]
    fn action_matching_ignores_case() {
        assert!(action_matches(
            "microsoft.containerinstance/CONTAINERGROUPS/Read",
            "Microsoft.ContainerInstance/containerGroups/read"
        ));
        assert!(action_matches(
            "MICROSOFT.AUTHORIZATION/*/DELETE",
            "microsoft.authorization/roleassignments/delete"
        ));
    }

    #[test]
    fn scope_inheritance_is_segment_prefix_and_case_insensitive() {
        let sub = format!("/subscriptions/{SUB}");
        assert!(scope_covers("/", &cg("rg", "a")));
        assert!(scope_covers(&sub, &cg("rg", "a")));
        assert!(scope_covers(&rg_scope("rg"), &cg("rg", "a")));
        assert!(scope_covers(&rg_scope("RG").to_uppercase(), &cg("rg", "a")));
        assert!(scope_covers(
            &format!("{}/", rg_scope("rg")),
            &rg_scope("rg")
        ));
        assert!(scope_covers(&cg("rg", "a"), &cg("rg", "a")));
        // `rg` is a string prefix of `rg2` but not a segment prefix.
        assert!(!scope_covers(&rg_scope("rg"), &cg("rg2", "a")));
        assert!(!scope_covers(&cg("rg", "a"), &rg_scope("rg")));
        assert!(!scope_covers(&rg_scope("rg"), &rg_scope("other")));
        assert!(!scope_covers("/subscriptions/other", &cg("rg", "a")));
    }

    #[test]
    fn owner_can_do_everything_including_rbac() {
        let a = [assign(
            ALICE,
            &format!("/subscriptions/{SUB}"),
            builtin_ids::OWNER,
        )];
        for action in [
            "Microsoft.ContainerInstance/containerGroups/write",
            "Microsoft.Authorization/roleAssignments/write",
            "Microsoft.Authorization/roleDefinitions/delete",
            "Microsoft.Resources/subscriptions/resourceGroups/delete",
        ] {
            assert!(allowed(&a, action, &cg("rg", "x")), "{action}");
        }
    }

    #[test]
    fn contributor_manages_resources_but_not_rbac() {
        let a = [assign(ALICE, &rg_scope("rg"), builtin_ids::CONTRIBUTOR)];
        assert!(allowed(
            &a,
            "Microsoft.ContainerInstance/containerGroups/write",
            &cg("rg", "x")
        ));
        assert!(allowed(
            &a,
            "Microsoft.ContainerInstance/containerGroups/delete",
            &cg("rg", "x")
        ));
        assert!(allowed(&a, IDENTITY_ASSIGN_ACTION, &identity("rg", "id")));
        assert!(allowed(
            &a,
            "Microsoft.Authorization/roleAssignments/read",
            &rg_scope("rg")
        ));
        assert!(!allowed(
            &a,
            "Microsoft.Authorization/roleAssignments/write",
            &rg_scope("rg")
        ));
        assert!(!allowed(
            &a,
            "Microsoft.Authorization/roleDefinitions/delete",
            &rg_scope("rg")
        ));
        assert!(!allowed(
            &a,
            "Microsoft.Authorization/elevateAccess/action",
            &rg_scope("rg")
        ));
        assert!(!allowed(
            &a,
            "Microsoft.Compute/galleries/share/action",
            &rg_scope("rg")
        ));
        assert!(!allowed(
            &a,
            "Microsoft.Blueprint/blueprintAssignments/write",
            &rg_scope("rg")
        ));
        // Assigned at the resource group, so nothing outside it.
        assert!(!allowed(
            &a,
            "Microsoft.ContainerInstance/containerGroups/write",
            &cg("rg2", "x")
        ));
        assert!(!allowed(
            &a,
            "Microsoft.Resources/subscriptions/resourceGroups/write",
            &rg_scope("rg2")
        ));
    }

    #[test]
    fn reader_only_reads() {
        let a = [assign(
            ALICE,
            &format!("/subscriptions/{SUB}"),
            builtin_ids::READER,
        )];
        assert!(allowed(
            &a,
            "Microsoft.ContainerInstance/containerGroups/read",
            &cg("rg", "x")
        ));
        assert!(allowed(
            &a,
            "Microsoft.ContainerInstance/containerGroups/containers/logs/read",
            &cg("rg", "x")
        ));
        assert!(!allowed(
            &a,
            "Microsoft.ContainerInstance/containerGroups/write",
            &cg("rg", "x")
        ));
        assert!(!allowed(
            &a,
            "Microsoft.ContainerInstance/containerGroups/stop/action",
            &cg("rg", "x")
        ));
    }

    #[test]
    fn acr_pull_only_pulls() {
        let reg = format!(
            "{}/providers/Microsoft.ContainerRegistry/registries/r",
            rg_scope("rg")
        );
        let a = [assign(ALICE, &reg, builtin_ids::ACR_PULL)];
        assert!(allowed(
            &a,
            "Microsoft.ContainerRegistry/registries/pull/read",
            &reg
        ));
        assert!(!allowed(
            &a,
            "Microsoft.ContainerRegistry/registries/push/write",
            &reg
        ));
        assert!(!allowed(
            &a,
            "Microsoft.ContainerRegistry/registries/read",
            &reg
        ));
        let other = format!(
            "{}/providers/Microsoft.ContainerRegistry/registries/other",
            rg_scope("rg")
        );
        assert!(!allowed(
            &a,
            "Microsoft.ContainerRegistry/registries/pull/read",
            &other
        ));
    }

    #[test]
    fn user_access_administrator_manages_rbac_and_reads() {
        let a = [assign(
            ALICE,
            &format!("/subscriptions/{SUB}"),
            builtin_ids::USER_ACCESS_ADMINISTRATOR,
        )];
        assert!(allowed(
            &a,
            "Microsoft.Authorization/roleAssignments/write",
            &rg_scope("rg")
        ));
        assert!(allowed(
            &a,
            "Microsoft.Authorization/roleDefinitions/write",
            &rg_scope("rg")
        ));
        assert!(allowed(
            &a,
            "Microsoft.ContainerInstance/containerGroups/read",
            &cg("rg", "x")
        ));
        assert!(!allowed(
            &a,
            "Microsoft.ContainerInstance/containerGroups/write",
            &cg("rg", "x")
        ));
    }

    #[test]
    fn managed_identity_operator_assigns_identities() {
        let a = [assign(
            ALICE,
            &rg_scope("rg"),
            builtin_ids::MANAGED_IDENTITY_OPERATOR,
        )];
        assert!(allowed(&a, IDENTITY_ASSIGN_ACTION, &identity("rg", "id")));
        assert!(allowed(
            &a,
            "Microsoft.ManagedIdentity/userAssignedIdentities/read",
            &identity("rg", "id")
        ));
        assert!(!allowed(
            &a,
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
            &identity("rg", "id")
        ));
    }

    #[test]
    fn not_actions_subtract_per_role_not_globally() {
        // Contributor alone cannot write role assignments; adding User Access Administrator
        // grants it, because Contributor's notActions only trim Contributor's own actions.
        let mut a = vec![assign(ALICE, &rg_scope("rg"), builtin_ids::CONTRIBUTOR)];
        assert!(!allowed(
            &a,
            "Microsoft.Authorization/roleAssignments/write",
            &rg_scope("rg")
        ));
        a.push(assign(
            ALICE,
            &rg_scope("rg"),
            builtin_ids::USER_ACCESS_ADMINISTRATOR,
        ));
        assert!(allowed(
            &a,
            "Microsoft.Authorization/roleAssignments/write",
            &rg_scope("rg")
        ));
    }

    #[test]
    fn custom_role_with_not_actions() {
        let guid = custom_role_definition_name(&rg_scope("rg"), "ACI Job Runner").to_string();
        let mut defs = builtin_role_definitions();
        defs.push(custom(
            &guid,
            &["Microsoft.ContainerInstance/containerGroups/*"],
            &["Microsoft.ContainerInstance/containerGroups/delete"],
        ));
        let a = [assign(ALICE, &rg_scope("rg"), &guid)];
        let ok = |action: &str| is_authorized(&a, &defs, ALICE, action, &cg("rg", "x"));
        assert!(ok("Microsoft.ContainerInstance/containerGroups/write"));
        assert!(ok(
            "Microsoft.ContainerInstance/containerGroups/stop/action"
        ));
        assert!(ok(
            "microsoft.containerinstance/containergroups/containers/logs/read"
        ));
        assert!(!ok("Microsoft.ContainerInstance/containerGroups/delete"));
        assert!(!ok("Microsoft.ContainerInstance/containerGroups/DELETE"));
        assert!(!ok(
            "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"
        ));
    }

    #[test]
    fn assignments_of_other_principals_and_unknown_roles_grant_nothing() {
        let a = [
            assign(BOB, &format!("/subscriptions/{SUB}"), builtin_ids::OWNER),
            assign(
                ALICE,
                &format!("/subscriptions/{SUB}"),
                "99999999-9999-9999-9999-999999999999",
            ),
        ];
        assert!(!allowed(
            &a,
            "Microsoft.ContainerInstance/containerGroups/read",
            &cg("rg", "x")
        ));
        assert!(is_authorized(
            &a,
            &builtin_role_definitions(),
            BOB,
            "x/read",
            &cg("rg", "x")
        ));
    }

    #[test]
    fn principal_ids_compare_case_insensitively() {
        let a = [assign(ALICE, "/", builtin_ids::READER)];
        assert!(is_authorized(
            &a,
            &builtin_role_definitions(),
            &ALICE.to_uppercase(),
            "a/b/read",
            &cg("rg", "x")
        ));
    }

    #[test]
    fn role_definition_ids_resolve_in_either_form() {
        let defs = builtin_role_definitions();
        let by_sub = find_definition(
            &defs,
            &subscription_role_definition_id(SUB, builtin_ids::ACR_PULL),
        );
        let by_tenant = find_definition(
            &defs,
            &tenant_role_definition_id(&builtin_ids::ACR_PULL.to_uppercase()),
        );
        let bare = find_definition(&defs, builtin_ids::ACR_PULL);
        assert_eq!(by_sub.map(|d| d.role_name.as_str()), Some("AcrPull"));
        assert_eq!(by_tenant.map(|d| d.role_name.as_str()), Some("AcrPull"));
        assert_eq!(bare.map(|d| d.role_name.as_str()), Some("AcrPull"));
        assert!(find_definition(&defs, "nope").is_none());
    }

    #[test]
    fn data_actions_are_separate_from_actions() {
        let mut def = custom("d0d0d0d0-0000-0000-0000-000000000000", &[], &[]);
        def.data_actions =
            vec!["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/*".into()];
        def.not_data_actions =
            vec!["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete".into()];
        let defs = vec![def];
        let a = [assign(
            ALICE,
            &rg_scope("rg"),
            "d0d0d0d0-0000-0000-0000-000000000000",
        )];
        let blob_read = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";
        assert!(is_data_action_authorized(
            &a,
            &defs,
            ALICE,
            blob_read,
            &rg_scope("rg")
        ));
        assert!(!is_data_action_authorized(
            &a,
            &defs,
            ALICE,
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
            &rg_scope("rg")
        ));
        assert!(!is_authorized(&a, &defs, ALICE, blob_read, &rg_scope("rg")));
        // Owner's `*` is a control-plane grant only.
        let owner = [assign(ALICE, "/", builtin_ids::OWNER)];
        assert!(!is_data_action_authorized(
            &owner,
            &builtin_role_definitions(),
            ALICE,
            blob_read,
            "/"
        ));
    }

    #[test]
    fn assignable_scopes() {
        let def = custom("c0c0c0c0-0000-0000-0000-000000000000", &["*"], &[]);
        assert!(def.is_assignable_at(&rg_scope("rg")));
        assert!(def.is_assignable_at(&cg("rg", "x")));
        assert!(!def.is_assignable_at(&format!("/subscriptions/{SUB}")));
        assert!(!def.is_assignable_at(&rg_scope("rg2")));
        assert!(builtin_role_definitions()
            .iter()
            .all(|d| d.is_assignable_at("/subscriptions/any")));
    }

    #[test]
    fn builtins_have_real_ids_and_types() {
        let defs = builtin_role_definitions();
        let names: Vec<(&str, &str)> = defs
            .iter()
            .map(|d| (d.name.as_str(), d.role_name.as_str()))
            .collect();
        assert!(names.contains(&("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner")));
        assert!(names.contains(&("b24988ac-6180-42a0-ab88-20f7382dd24c", "Contributor")));
        assert!(names.contains(&("acdd72a7-3385-48ef-bd42-f606fba81ae7", "Reader")));
        assert!(names.contains(&("7f951dda-4ed3-4680-a7ca-43fe172d538d", "AcrPull")));
        assert!(names.contains(&(
            "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
            "User Access Administrator"
        )));
        for d in &defs {
            assert_eq!(d.role_type, RoleType::BuiltIn);
            assert_eq!(
                d.id,
                format!(
                    "/providers/Microsoft.Authorization/roleDefinitions/{}",
                    d.name
                )
            );
            assert!(Uuid::parse_str(&d.name).is_ok());
        }
        assert_eq!(RoleType::BuiltIn.as_arm_str(), "BuiltInRole");
        assert_eq!(RoleType::from_arm_str("customrole"), Some(RoleType::Custom));
        assert_eq!(RoleType::from_arm_str("other"), None);
    }

    #[test]
    fn roles_granting_lists_the_roles_that_would_help() {
        let defs = builtin_role_definitions();
        let names = |action: &str| -> Vec<String> {
            roles_granting(action, &defs)
                .iter()
                .map(|d| d.role_name.clone())
                .collect()
        };
        assert_eq!(
            names("Microsoft.Authorization/roleAssignments/write"),
            ["Owner", "User Access Administrator"]
        );
        assert_eq!(
            names(IDENTITY_ASSIGN_ACTION),
            ["Owner", "Contributor", "Managed Identity Operator"]
        );
        assert_eq!(
            names("Microsoft.ContainerRegistry/registries/pull/read"),
            [
                "Owner",
                "Contributor",
                "Reader",
                "AcrPull",
                "User Access Administrator"
            ]
        );
        assert_eq!(
            names("Microsoft.ContainerInstance/containerGroups/write"),
            ["Owner", "Contributor"]
        );
    }

    #[test]
    fn identities_not_assignable_lists_the_refused_ones() {
        let ids = vec![identity("rg", "ok"), identity("other", "refused")];
        let a = [assign(
            ALICE,
            &identity("rg", "ok"),
            builtin_ids::MANAGED_IDENTITY_OPERATOR,
        )];
        let refused = identities_not_assignable(&a, &builtin_role_definitions(), ALICE, &ids);
        assert_eq!(refused, [identity("other", "refused").as_str()]);
    }

    #[test]
    fn messages_match_arm() {
        assert_eq!(
            authorization_failed_message(ALICE, "Microsoft.ContainerInstance/containerGroups/write", &cg("rg", "x")),
            format!(
                "The client '{ALICE}' with object id '{ALICE}' does not have authorization to perform action \
                 'Microsoft.ContainerInstance/containerGroups/write' over scope '{}' or the scope is invalid. \
                 If access was recently granted, please refresh your credentials.",
                cg("rg", "x")
            )
        );
        let linked = linked_authorization_failed_message(
            ALICE,
            "Microsoft.ContainerInstance/containerGroups/write",
            &cg("rg", "x"),
            IDENTITY_ASSIGN_ACTION,
            &[&identity("rg", "a"), &identity("rg", "b")],
        );
        assert!(linked.starts_with(&format!(
            "The client '{ALICE}' with object id '{ALICE}' has permission to perform action"
        )));
        assert!(linked.contains(&format!(
            "on the linked scope(s) '{},{}' or the linked scope(s) are invalid.",
            identity("rg", "a"),
            identity("rg", "b")
        )));
    }

    #[test]
    fn guids_are_deterministic_v5_under_the_arm_namespace() {
        let scope = rg_scope("rg");
        let role = subscription_role_definition_id(SUB, builtin_ids::ACR_PULL);
        let a = role_assignment_name(&scope, ALICE, &role);
        assert_eq!(a, role_assignment_name(&scope, ALICE, &role));
        assert_ne!(a, role_assignment_name(&scope, BOB, &role));
        assert_eq!(a.get_version_num(), 5);
        // Same as ARM's `guid(scope, principal, role)`: v5 over the `-`-joined parts.
        let expected = Uuid::new_v5(
            &Uuid::parse_str("11fb06fb-712d-4ddd-98c7-e71bbd588830").unwrap(),
            format!("{scope}-{ALICE}-{role}").as_bytes(),
        );
        assert_eq!(a, expected);
        assert_eq!(arm_guid(&["a", "b"]), arm_guid(&["a-b"]));
        assert_ne!(
            custom_role_definition_name(&scope, "x"),
            custom_role_definition_name(&scope, "y")
        );
    }

    #[test]
    fn linked_identity_ids_from_a_container_group_body() {
        let a = identity("rg", "a");
        let b = identity("rg", "b");
        let body = serde_json::json!({
            "identity": {"type": "UserAssigned", "userAssignedIdentities": {a.clone(): {}, b.clone(): {}}},
            "properties": {"imageRegistryCredentials": [
                {"server": "r.azurecr.io", "identity": a.to_uppercase()},
                {"server": "docker.io", "username": "u", "password": "p"},
                {"server": "x.azurecr.io", "identity": "[system]"}
            ]}
        });
        assert_eq!(linked_identity_ids(&body), [a, b]);
        assert!(linked_identity_ids(&serde_json::json!({"properties": {}})).is_empty());
    }

    #[test]
    fn authorize_request_checks_action_then_linked_identities() {
        let defs = builtin_role_definitions();
        let group = cg("rg", "flow");
        let body = serde_json::json!({
            "identity": {"type": "UserAssigned", "userAssignedIdentities": {identity("ids", "worker"): {}}}
        });
        // No role at all: AuthorizationFailed on the group.
        let none: [RoleAssignment; 0] = [];
        let refusal =
            authorize_request(&none, &defs, ALICE, "PUT", &group, Some(&body)).unwrap_err();
        assert_eq!(refusal.code(), "AuthorizationFailed");
        assert_eq!(
            refusal.message(),
            authorization_failed_message(
                ALICE,
                "Microsoft.ContainerInstance/containerGroups/write",
                &group
            )
        );

        // Contributor on the group's resource group only: the identity lives elsewhere.
        let mut a = vec![assign(ALICE, &rg_scope("rg"), builtin_ids::CONTRIBUTOR)];
        let refusal = authorize_request(&a, &defs, ALICE, "PUT", &group, Some(&body)).unwrap_err();
        assert_eq!(refusal.code(), "LinkedAuthorizationFailed");
        let Refusal::LinkedAuthorizationFailed {
            linked_scopes,
            message,
            ..
        } = &refusal
        else {
            panic!("{refusal:?}")
        };
        assert_eq!(linked_scopes, &[identity("ids", "worker")]);
        assert!(message.contains("Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"));
        // Without a body (or on GET) identities are not checked.
        assert!(authorize_request(&a, &defs, ALICE, "PUT", &group, None).is_ok());
        assert!(authorize_request(&a, &defs, ALICE, "GET", &group, Some(&body)).is_ok());

        a.push(assign(
            ALICE,
            &identity("ids", "worker"),
            builtin_ids::MANAGED_IDENTITY_OPERATOR,
        ));
        assert!(authorize_request(&a, &defs, ALICE, "PUT", &group, Some(&body)).is_ok());
    }

    #[test]
    fn action_mapping_table() {
        let rg = "/subscriptions/s/resourcegroups/rg";
        let cg = format!("{rg}/providers/Microsoft.ContainerInstance/containerGroups/cg");
        let cases: Vec<(&str, String, &str)> = vec![
            ("GET", cg.clone(), "Microsoft.ContainerInstance/containerGroups/read"),
            ("HEAD", cg.clone(), "Microsoft.ContainerInstance/containerGroups/read"),
            ("PUT", cg.clone(), "Microsoft.ContainerInstance/containerGroups/write"),
            ("PATCH", cg.clone(), "Microsoft.ContainerInstance/containerGroups/write"),
            ("DELETE", cg.clone(), "Microsoft.ContainerInstance/containerGroups/delete"),
            ("get", format!("{cg}?api-version=2023-05-01"), "Microsoft.ContainerInstance/containerGroups/read"),
            ("GET", format!("{rg}/providers/Microsoft.ContainerInstance/containerGroups"), "Microsoft.ContainerInstance/containerGroups/read"),
            ("POST", format!("{cg}/stop"), "Microsoft.ContainerInstance/containerGroups/stop/action"),
            ("POST", format!("{cg}/start"), "Microsoft.ContainerInstance/containerGroups/start/action"),
            ("POST", format!("{cg}/restart"), "Microsoft.ContainerInstance/containerGroups/restart/action"),
            ("GET", format!("{cg}/containers/job/logs?tail=10"), "Microsoft.ContainerInstance/containerGroups/containers/logs/read"),
            ("POST", format!("{cg}/containers/job/exec"), "Microsoft.ContainerInstance/containerGroups/containers/exec/action"),
            ("GET", "/subscriptions/s/providers/Microsoft.ContainerInstance/locations/eastus/operations/op1".into(), "Microsoft.ContainerInstance/locations/operations/read"),
            ("GET", rg.into(), "Microsoft.Resources/subscriptions/resourceGroups/read"),
            ("HEAD", rg.into(), "Microsoft.Resources/subscriptions/resourceGroups/read"),
            ("PUT", rg.into(), "Microsoft.Resources/subscriptions/resourceGroups/write"),
            ("DELETE", rg.into(), "Microsoft.Resources/subscriptions/resourceGroups/delete"),
            ("GET", "/subscriptions/s/resourcegroups".into(), "Microsoft.Resources/subscriptions/resourceGroups/read"),
            ("GET", "/subscriptions/s".into(), "Microsoft.Resources/subscriptions/read"),
            ("GET", "/subscriptions/s/providers".into(), "Microsoft.Resources/subscriptions/providers/read"),
            ("GET", "/subscriptions/s/providers/Microsoft.ContainerInstance".into(), "Microsoft.Resources/subscriptions/providers/read"),
            ("POST", "/subscriptions/s/providers/Microsoft.ContainerInstance/register".into(), "Microsoft.ContainerInstance/register/action"),
            ("POST", "/subscriptions/s/providers/microsoft.managedidentity/register".into(), "Microsoft.ManagedIdentity/register/action"),
            ("PUT", format!("{rg}/providers/Microsoft.Resources/deployments/d1"), "Microsoft.Resources/deployments/write"),
            ("GET", format!("{rg}/providers/Microsoft.Resources/deployments/d1"), "Microsoft.Resources/deployments/read"),
            ("DELETE", format!("{rg}/providers/Microsoft.Resources/deployments/d1"), "Microsoft.Resources/deployments/delete"),
            ("POST", format!("{rg}/providers/Microsoft.Resources/deployments/d1/cancel"), "Microsoft.Resources/deployments/cancel/action"),
            ("GET", format!("{rg}/providers/Microsoft.Resources/deployments/d1/operationStatuses/x"), "Microsoft.Resources/deployments/operationStatuses/read"),
            ("GET", format!("{rg}/providers/Microsoft.Resources/deployments/d1/operations"), "Microsoft.Resources/deployments/operations/read"),
            ("PUT", format!("{rg}/providers/Microsoft.Authorization/roleAssignments/g"), "Microsoft.Authorization/roleAssignments/write"),
            ("DELETE", format!("{rg}/providers/Microsoft.Authorization/roleAssignments/g"), "Microsoft.Authorization/roleAssignments/delete"),
            ("PUT", format!("{rg}/providers/Microsoft.Authorization/roleDefinitions/g"), "Microsoft.Authorization/roleDefinitions/write"),
            (
                "PUT",
                format!("{rg}/providers/Microsoft.ContainerRegistry/registries/r/providers/Microsoft.Authorization/roleAssignments/g"),
                "Microsoft.Authorization/roleAssignments/write",
            ),
            ("PUT", format!("{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id"), "Microsoft.ManagedIdentity/userAssignedIdentities/write"),
            ("PUT", format!("{rg}/providers/Microsoft.ContainerRegistry/registries/r"), "Microsoft.ContainerRegistry/registries/write"),
            ("POST", format!("{rg}/providers/Microsoft.ContainerRegistry/registries/r/listCredentials"), "Microsoft.ContainerRegistry/registries/listCredentials/action"),
            ("POST", "/subscriptions/s/providers/Microsoft.ContainerRegistry/checknameavailability".into(), "Microsoft.ContainerRegistry/checkNameAvailability/read"),
            ("GET", "/subscriptions/s/locations".into(), "Microsoft.Resources/subscriptions/locations/read"),
            ("GET", "/providers/Microsoft.ContainerInstance/operations".into(), "Microsoft.ContainerInstance/operations/read"),
            ("POST", format!("{cg}/containers/job/attach"), "Microsoft.ContainerInstance/containerGroups/containers/attach/action"),
            ("POST", format!("{rg}/providers/Microsoft.Resources/deployments/d1/validate"), "Microsoft.Resources/deployments/validate/action"),
        ];
        for (method, path, expected) in cases {
            assert_eq!(action_for(method, &path), expected, "{method} {path}");
        }
    }

    #[test]
    fn authorization_scope_table() {
        let rg = "/subscriptions/s/resourcegroups/rg";
        let cg = format!("{rg}/providers/Microsoft.ContainerInstance/containerGroups/cg");
        let cases: Vec<(String, String)> = vec![
            (cg.clone(), cg.clone()),
            (format!("{cg}?api-version=1"), cg.clone()),
            (format!("{cg}/stop"), cg.clone()),
            (
                format!("{cg}/containers/job/logs"),
                format!("{cg}/containers/job"),
            ),
            (
                format!("{rg}/providers/Microsoft.ContainerInstance/containerGroups"),
                rg.to_string(),
            ),
            (rg.to_string(), rg.to_string()),
            (
                "/subscriptions/s/resourcegroups".into(),
                "/subscriptions/s".into(),
            ),
            (
                "/subscriptions/s/providers/Microsoft.ContainerInstance/register".into(),
                "/subscriptions/s".into(),
            ),
            (
                "/subscriptions/s/providers/Microsoft.ContainerInstance".into(),
                "/subscriptions/s".into(),
            ),
            (
                "/subscriptions/s/providers".into(),
                "/subscriptions/s".into(),
            ),
            (
                format!("{rg}/providers/Microsoft.Authorization/roleAssignments"),
                rg.to_string(),
            ),
            ("/".into(), "/".into()),
        ];
        for (path, expected) in cases {
            assert_eq!(authorization_scope(&path), expected, "{path}");
        }
    }

    #[test]
    fn mapped_requests_authorise_end_to_end() {
        // The custom role setup creates, checked through the same mapping the server uses.
        let guid = "aaaaaaaa-0000-0000-0000-000000000000";
        let mut defs = builtin_role_definitions();
        defs.push(custom(
            guid,
            &[
                "Microsoft.ContainerInstance/containerGroups/read",
                "Microsoft.ContainerInstance/containerGroups/write",
                "Microsoft.ContainerInstance/containerGroups/delete",
                "Microsoft.ContainerInstance/containerGroups/containers/logs/read",
                "Microsoft.ContainerInstance/containerGroups/stop/action",
                "Microsoft.Resources/subscriptions/resourceGroups/read",
            ],
            &[],
        ));
        let a = [assign(ALICE, &rg_scope("rg"), guid)];
        let check = |method: &str, path: &str| {
            is_authorized(
                &a,
                &defs,
                ALICE,
                &action_for(method, path),
                &authorization_scope(path),
            )
        };
        let group = cg("rg", "flow");
        assert!(check("PUT", &group));
        assert!(check("GET", &format!("{group}/containers/flow/logs")));
        assert!(check("POST", &format!("{group}/stop")));
        assert!(check("GET", &rg_scope("rg")));
        assert!(!check("POST", &format!("{group}/restart")));
        assert!(!check("PUT", &rg_scope("rg")));
        assert!(!check("PUT", &cg("rg2", "flow")));
        assert!(!check(
            "PUT",
            &format!(
                "{}/providers/Microsoft.Authorization/roleAssignments/x",
                rg_scope("rg")
            )
        ));
    }
}
