//! `Microsoft.Authorization`: role definitions, role assignments, and RBAC enforcement.
//!
//! The rules themselves (action strings, scope inheritance, wildcard patterns, linked identity
//! checks) live in the pure [`crate::rbac`] module; this module keeps the emulator's role
//! definitions and assignments and answers the REST API over them:
//!
//! - role definitions at any scope (`{scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}`):
//!   the built-ins are always there; custom ones are PUT with a caller-chosen GUID, and a
//!   `roleName` reused under another GUID is a 409 — the reason setup derives a stable GUID;
//! - role assignments: PUT with a GUID name; the same principal + role + scope under another
//!   name is 409 `RoleAssignmentExists`; a principal Entra does not know yet is 400
//!   `PrincipalNotFound` unless the body sets `principalType` (which makes ARM skip the
//!   lookup). A fresh identity stays unknown for `principal_replication_lag_ms`, emulating
//!   Entra's replication lag.
//!
//! With `rbac: true`, [`authorize`] runs for every ARM request; the bootstrap admin principal
//! holds Owner on the subscription through an implicit assignment that is not listed.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json as j, Value};

use crate::error::ArmError;
use crate::http::{empty, json, ArmCtx, Req};
use crate::path::Route;
use crate::rbac::{self, RoleAssignment, RoleDefinition, RoleType};
use crate::state::{lock, now_rfc3339, AssignmentEntry, SharedRef, State};

const DEF_TYPE: &str = "Microsoft.Authorization/roleDefinitions";
const ASSIGN_TYPE: &str = "Microsoft.Authorization/roleAssignments";

/// Every role definition: built-ins, then custom ones.
pub(crate) fn all_definitions(state: &State) -> Vec<RoleDefinition> {
    let mut defs = rbac::builtin_role_definitions();
    defs.extend(state.role_definitions.values().cloned());
    defs
}

/// Every role assignment, plus the implicit Owner of the bootstrap admin on the subscription.
pub(crate) fn all_assignments(shared: &SharedRef, state: &State) -> Vec<RoleAssignment> {
    let sub = shared.sub_id();
    let admin = crate::auth::object_id(&shared.config.admin);
    let mut out = vec![RoleAssignment {
        id: format!("{sub}/providers/{ASSIGN_TYPE}/bootstrap-admin"),
        name: "bootstrap-admin".into(),
        scope: sub.clone(),
        role_definition_id: rbac::subscription_role_definition_id(
            &shared.config.subscription_id,
            rbac::builtin_ids::OWNER,
        ),
        principal_id: admin,
        principal_type: "ServicePrincipal".into(),
    }];
    out.extend(
        state
            .role_assignments
            .values()
            .map(|a| a.assignment.clone()),
    );
    out
}

/// Authorises an ARM request as `principal` (403 `AuthorizationFailed` /
/// `LinkedAuthorizationFailed`, with ARM's messages naming the action and scope).
pub(crate) fn authorize(shared: &SharedRef, principal: &str, req: &Req) -> Result<(), ArmError> {
    let body: Option<Value> = if matches!(req.method, Method::PUT | Method::PATCH) {
        serde_json::from_slice(&req.body).ok()
    } else {
        None
    };
    let (assignments, definitions) = {
        let state = lock(&shared.state);
        (all_assignments(shared, &state), all_definitions(&state))
    };
    rbac::authorize_request(
        &assignments,
        &definitions,
        principal,
        req.method.as_str(),
        &req.path,
        body.as_ref(),
    )
    .map_err(|refusal| ArmError::new(StatusCode::FORBIDDEN, refusal.code(), refusal.message()))
}

/// Whether `principal` may perform `action` over `scope` (for checks the resource providers
/// make themselves, such as ACR pulls).
pub(crate) fn is_authorized(
    shared: &SharedRef,
    principal: &str,
    action: &str,
    scope: &str,
) -> bool {
    let state = lock(&shared.state);
    rbac::is_authorized(
        &all_assignments(shared, &state),
        &all_definitions(&state),
        principal,
        action,
        scope,
    )
}

fn full_scope(shared: &SharedRef, scope: &str) -> String {
    if scope.is_empty() {
        shared.sub_id()
    } else {
        format!("{}/{scope}", shared.sub_id())
    }
}

fn method_not_allowed(m: &Method) -> ArmError {
    ArmError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("The requested resource does not support http method '{m}'."),
    )
}

fn invalid_body(e: serde_json::Error) -> ArmError {
    ArmError::bad_request(
        "InvalidRequestContent",
        format!("The request content was invalid and could not be deserialized: '{e}'."),
    )
}

/// Dispatches a `Microsoft.Authorization` route.
pub(crate) fn handle(shared: &SharedRef, ctx: &ArmCtx, route: Route) -> Result<Response, ArmError> {
    let m = &ctx.req.method;
    match route {
        Route::RoleDefinitions { scope } if *m == Method::GET => {
            list_definitions(shared, ctx, &scope)
        }
        Route::RoleDefinition { scope, guid } => match *m {
            Method::GET => get_definition(shared, &guid),
            Method::PUT => put_definition(shared, ctx, &scope, &guid),
            Method::DELETE => delete_definition(shared, &guid),
            _ => Err(method_not_allowed(m)),
        },
        Route::RoleAssignments { scope } if *m == Method::GET => {
            list_assignments(shared, ctx, &scope)
        }
        Route::RoleAssignment { scope, name } => {
            let scope = full_scope(shared, &scope);
            match *m {
                Method::GET => get_assignment(shared, &scope, &name),
                Method::PUT => put_assignment(shared, ctx, &scope, &name),
                Method::DELETE => delete_assignment(shared, &scope, &name),
                _ => Err(method_not_allowed(m)),
            }
        }
        _ => Err(method_not_allowed(m)),
    }
}

fn render_definition(shared: &SharedRef, d: &RoleDefinition) -> Value {
    let id = match d.role_type {
        RoleType::BuiltIn => {
            rbac::subscription_role_definition_id(&shared.config.subscription_id, &d.name)
        }
        RoleType::Custom => d.id.clone(),
    };
    j!({
        "id": id,
        "name": d.name,
        "type": DEF_TYPE,
        "properties": {
            "roleName": d.role_name,
            "type": d.role_type.as_arm_str(),
            "description": d.description,
            "assignableScopes": d.assignable_scopes,
            "permissions": [{
                "actions": d.actions,
                "notActions": d.not_actions,
                "dataActions": d.data_actions,
                "notDataActions": d.not_data_actions,
            }],
        }
    })
}

fn definition_not_found(guid: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "RoleDefinitionDoesNotExist",
        format!("The specified role definition with ID '{guid}' does not exist."),
    )
}

fn get_definition(shared: &SharedRef, guid: &str) -> Result<Response, ArmError> {
    let state = lock(&shared.state);
    let defs = all_definitions(&state);
    let d = rbac::find_definition(&defs, guid).ok_or_else(|| definition_not_found(guid))?;
    Ok(json(StatusCode::OK, &render_definition(shared, d)))
}

/// `$filter=roleName eq 'X'` and `$filter=type eq 'CustomRole'`, the filters `az` uses.
fn filter_value<'a>(filter: &'a str, field: &str) -> Option<&'a str> {
    let rest = filter.trim();
    let (k, v) = rest.split_once(" eq ")?;
    if !k.trim().eq_ignore_ascii_case(field) {
        return None;
    }
    Some(v.trim().trim_matches('\''))
}

fn list_definitions(shared: &SharedRef, ctx: &ArmCtx, scope: &str) -> Result<Response, ArmError> {
    let scope = full_scope(shared, scope);
    let filter = ctx.req.q("$filter").unwrap_or("");
    let state = lock(&shared.state);
    let value: Vec<Value> = all_definitions(&state)
        .iter()
        .filter(|d| {
            // Definitions usable at the scope, or defined under it.
            d.is_assignable_at(&scope)
                || d.assignable_scopes
                    .iter()
                    .any(|s| rbac::scope_covers(&scope, s))
        })
        .filter(|d| {
            filter_value(filter, "roleName").is_none_or(|n| d.role_name.eq_ignore_ascii_case(n))
        })
        .filter(|d| {
            filter_value(filter, "type")
                .is_none_or(|t| d.role_type.as_arm_str().eq_ignore_ascii_case(t))
        })
        .map(|d| render_definition(shared, d))
        .collect();
    Ok(json(StatusCode::OK, &j!({ "value": value })))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn put_definition(
    shared: &SharedRef,
    ctx: &ArmCtx,
    scope: &str,
    guid: &str,
) -> Result<Response, ArmError> {
    let Ok(parsed) = uuid::Uuid::parse_str(guid) else {
        return Err(ArmError::bad_request(
            "InvalidRoleDefinitionId",
            format!("The role definition ID '{guid}' is not valid. It must be a GUID."),
        ));
    };
    let guid = parsed.to_string();
    let body: Value = serde_json::from_slice(&ctx.req.body).map_err(invalid_body)?;
    let props = body.get("properties").cloned().unwrap_or(Value::Null);
    let role_name = props
        .get("roleName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_string();
    if role_name.is_empty() {
        return Err(ArmError::bad_request(
            "RoleDefinitionNameNullOrEmpty",
            "The role definition name cannot be null or empty.",
        ));
    }
    if rbac::builtin_role_definitions()
        .iter()
        .any(|d| d.name == guid)
    {
        return Err(ArmError::bad_request(
            "RoleDefinitionCannotBeModified",
            format!("The built-in role definition '{guid}' cannot be modified."),
        ));
    }
    let assignable_scopes = strings(props.get("assignableScopes"));
    if assignable_scopes.is_empty() {
        return Err(ArmError::bad_request(
            "InvalidAssignableScopes",
            "The role definition must have at least one assignable scope in properties.assignableScopes.",
        ));
    }
    let sub = shared.sub_id();
    if let Some(bad) = assignable_scopes
        .iter()
        .find(|s| !rbac::scope_covers(&sub, s))
    {
        return Err(ArmError::bad_request(
            "InvalidAssignableScopes",
            format!("The assignable scope '{bad}' is not under subscription '{sub}'."),
        ));
    }
    // The definition is created at its URL scope, which must contain its assignable scopes.
    let url_scope = full_scope(shared, scope);
    if !assignable_scopes
        .iter()
        .any(|s| rbac::scope_covers(&url_scope, s))
    {
        return Err(ArmError::bad_request(
            "InvalidRoleDefinitionScope",
            format!("The role definition is created at scope '{url_scope}', which does not contain any of its assignable scopes; PUT it at its first assignable scope."),
        ));
    }
    let perms = props
        .get("permissions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut actions = Vec::new();
    let mut not_actions = Vec::new();
    let mut data_actions = Vec::new();
    let mut not_data_actions = Vec::new();
    for p in &perms {
        actions.extend(strings(p.get("actions")));
        not_actions.extend(strings(p.get("notActions")));
        data_actions.extend(strings(p.get("dataActions")));
        not_data_actions.extend(strings(p.get("notDataActions")));
    }
    let def = RoleDefinition {
        id: rbac::subscription_role_definition_id(&shared.config.subscription_id, &guid),
        name: guid.clone(),
        role_name: role_name.clone(),
        role_type: RoleType::Custom,
        description: props
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        actions,
        not_actions,
        data_actions,
        not_data_actions,
        assignable_scopes,
    };
    let mut state = lock(&shared.state);
    let clash = all_definitions(&state).into_iter().find(|d| {
        d.role_name.eq_ignore_ascii_case(&role_name) && !d.name.eq_ignore_ascii_case(&guid)
    });
    if let Some(other) = clash {
        return Err(ArmError::new(
            StatusCode::CONFLICT,
            "RoleDefinitionWithSameNameExists",
            format!(
                "A custom role with the same name '{role_name}' already exists in this directory (role definition '{}'). Use a different name, or update that definition.",
                other.name
            ),
        ));
    }
    let exists = state
        .role_definitions
        .insert(guid.clone(), def.clone())
        .is_some();
    let mut rendered = render_definition(shared, &def);
    rendered["properties"]["updatedOn"] = j!(now_rfc3339());
    Ok(json(
        if exists {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        &rendered,
    ))
}

fn delete_definition(shared: &SharedRef, guid: &str) -> Result<Response, ArmError> {
    let key = guid.to_ascii_lowercase();
    let mut state = lock(&shared.state);
    let Some(def) = state.role_definitions.get(&key).cloned() else {
        return Ok(empty(StatusCode::NO_CONTENT));
    };
    let in_use = state.role_assignments.values().any(|a| {
        a.assignment
            .role_definition_id
            .rsplit('/')
            .next()
            .is_some_and(|g| g.eq_ignore_ascii_case(guid))
    });
    if in_use {
        return Err(ArmError::new(
            StatusCode::CONFLICT,
            "RoleDefinitionHasAssignments",
            format!("There are existing role assignments referencing role '{}'. Delete them before deleting the role definition.", def.role_name),
        ));
    }
    state.role_definitions.remove(&key);
    Ok(json(StatusCode::OK, &render_definition(shared, &def)))
}

fn render_assignment(a: &AssignmentEntry) -> Value {
    let r = &a.assignment;
    j!({
        "id": r.id,
        "name": r.name,
        "type": ASSIGN_TYPE,
        "properties": {
            "roleDefinitionId": r.role_definition_id,
            "principalId": r.principal_id,
            "principalType": r.principal_type,
            "scope": r.scope,
            "description": a.description,
            "createdOn": a.created_on,
            "updatedOn": a.created_on,
        }
    })
}

fn assignment_key(scope: &str, name: &str) -> String {
    format!("{scope}/providers/{ASSIGN_TYPE}/{name}").to_ascii_lowercase()
}

fn get_assignment(shared: &SharedRef, scope: &str, name: &str) -> Result<Response, ArmError> {
    let state = lock(&shared.state);
    let a = state
        .role_assignments
        .get(&assignment_key(scope, name))
        .ok_or_else(|| {
            ArmError::new(
                StatusCode::NOT_FOUND,
                "RoleAssignmentNotFound",
                format!("The role assignment '{name}' is not found."),
            )
        })?;
    Ok(json(StatusCode::OK, &render_assignment(a)))
}

/// Whether Entra knows `principal_id` yet: configured principals and identities whose
/// creation is older than the replication lag.
fn principal_known(shared: &SharedRef, state: &State, principal_id: &str) -> bool {
    let lag = std::time::Duration::from_millis(shared.config.principal_replication_lag_ms);
    std::iter::once(&shared.config.admin)
        .chain(shared.config.principals.iter())
        .any(|p| crate::auth::object_id(p).eq_ignore_ascii_case(principal_id))
        || state.identities.values().any(|i| {
            i.principal_id.eq_ignore_ascii_case(principal_id)
                && i.created.is_none_or(|c| c.elapsed() >= lag)
        })
}

fn put_assignment(
    shared: &SharedRef,
    ctx: &ArmCtx,
    scope: &str,
    name: &str,
) -> Result<Response, ArmError> {
    if uuid::Uuid::parse_str(name).is_err() {
        return Err(ArmError::bad_request(
            "InvalidRoleAssignmentId",
            format!("The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."),
        ));
    }
    let body: Value = serde_json::from_slice(&ctx.req.body).map_err(invalid_body)?;
    let props = body.get("properties").cloned().unwrap_or(Value::Null);
    let role_definition_id = props
        .get("roleDefinitionId")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let principal_id = props
        .get("principalId")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let principal_type = props
        .get("principalType")
        .and_then(Value::as_str)
        .map(str::to_string);
    if role_definition_id.is_empty() || principal_id.is_empty() {
        return Err(ArmError::bad_request(
            "InvalidRoleAssignmentRequest",
            "properties.roleDefinitionId and properties.principalId are required.",
        ));
    }
    let mut state = lock(&shared.state);
    // The scope must exist (resource group level checks are enough for the emulator).
    let segs: Vec<&str> = scope.split('/').filter(|s| !s.is_empty()).collect();
    if segs.len() >= 4
        && segs[2].eq_ignore_ascii_case("resourceGroups")
        && !state
            .resource_groups
            .contains_key(&segs[3].to_ascii_lowercase())
    {
        return Err(ArmError::resource_group_not_found(segs[3]));
    }
    let defs = all_definitions(&state);
    let def = rbac::find_definition(&defs, &role_definition_id).ok_or_else(|| {
        ArmError::bad_request(
            "RoleDefinitionDoesNotExist",
            format!(
                "The specified role definition with ID '{}' does not exist.",
                role_definition_id.rsplit('/').next().unwrap_or("")
            ),
        )
    })?;
    if !def.is_assignable_at(scope) {
        return Err(ArmError::new(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The role definition '{}' ('{}') is not assignable at scope '{scope}'; its assignable scopes are '{}'.",
                def.role_name,
                def.name,
                def.assignable_scopes.join("', '")
            ),
        ));
    }
    if principal_type.is_none() && !principal_known(shared, &state, &principal_id) {
        return Err(ArmError::bad_request(
            "PrincipalNotFound",
            format!("Principal {} does not exist in the directory {}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype", principal_id.replace('-', ""), shared.config.tenant_id),
        ));
    }
    let key = assignment_key(scope, name);
    let def_guid = def.name.clone();
    let same = |a: &RoleAssignment| {
        a.principal_id.eq_ignore_ascii_case(&principal_id)
            && a.scope.eq_ignore_ascii_case(scope)
            && a.role_definition_id
                .rsplit('/')
                .next()
                .is_some_and(|g| g.eq_ignore_ascii_case(&def_guid))
    };
    if let Some(existing) = state.role_assignments.get(&key) {
        if same(&existing.assignment) {
            return Ok(json(StatusCode::CREATED, &render_assignment(existing)));
        }
        return Err(ArmError::bad_request(
            "RoleAssignmentUpdateNotPermitted",
            "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
        ));
    }
    if let Some((_, other)) = state
        .role_assignments
        .iter()
        .find(|(_, a)| same(&a.assignment))
    {
        return Err(ArmError::new(
            StatusCode::CONFLICT,
            "RoleAssignmentExists",
            format!(
                "The role assignment already exists. The ID of the existing role assignment is {}.",
                other.assignment.name
            ),
        ));
    }
    let entry = AssignmentEntry {
        assignment: RoleAssignment {
            id: format!("{scope}/providers/{ASSIGN_TYPE}/{name}"),
            name: name.to_string(),
            scope: scope.to_string(),
            role_definition_id: rbac::subscription_role_definition_id(
                &shared.config.subscription_id,
                &def_guid,
            ),
            principal_id,
            principal_type: principal_type.unwrap_or_else(|| "ServicePrincipal".into()),
        },
        description: props
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string),
        created_on: now_rfc3339(),
    };
    let rendered = render_assignment(&entry);
    state.role_assignments.insert(key, entry);
    Ok(json(StatusCode::CREATED, &rendered))
}

fn delete_assignment(shared: &SharedRef, scope: &str, name: &str) -> Result<Response, ArmError> {
    match lock(&shared.state)
        .role_assignments
        .remove(&assignment_key(scope, name))
    {
        Some(a) => Ok(json(StatusCode::OK, &render_assignment(&a))),
        None => Ok(empty(StatusCode::NO_CONTENT)),
    }
}

fn list_assignments(shared: &SharedRef, ctx: &ArmCtx, scope: &str) -> Result<Response, ArmError> {
    let scope = full_scope(shared, scope);
    let filter = ctx.req.q("$filter").unwrap_or("");
    let principal = filter_value(filter, "principalId");
    let at_scope_only = filter.trim().eq_ignore_ascii_case("atScope()");
    let state = lock(&shared.state);
    let value: Vec<Value> = state
        .role_assignments
        .values()
        .filter(|a| {
            let s = &a.assignment.scope;
            if at_scope_only {
                rbac::scope_covers(s, &scope)
            } else {
                rbac::scope_covers(s, &scope) || rbac::scope_covers(&scope, s)
            }
        })
        .filter(|a| principal.is_none_or(|p| a.assignment.principal_id.eq_ignore_ascii_case(p)))
        .map(render_assignment)
        .collect();
    Ok(json(StatusCode::OK, &j!({ "value": value })))
}
