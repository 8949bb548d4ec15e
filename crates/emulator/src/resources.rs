//! Microsoft.Resources (subscription, resource groups, providers) and
//! Microsoft.ManagedIdentity (user-assigned identities).
//!
//! These are synchronous in ARM and simple here. Deleting a resource group deletes what it
//! contains (container groups are killed in the background) and answers 200 at once, where
//! ARM would answer 202 and finish later; clients treat both as success.

use std::collections::BTreeMap;

use arm_models::{
    ListResult, ResourceGroup, ResourceGroupProperties, UserAssignedIdentity,
    UserAssignedIdentityProperties,
};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::json as j;

use crate::error::ArmError;
use crate::http::{empty, json, ArmCtx};
use crate::path::{Api, Route};
use crate::runtime;
use crate::state::{lock, IdentityEntry, RgEntry, SharedRef};

const IDENTITY_TYPE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities";

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

/// Dispatches a non-ACI route.
pub(crate) async fn handle(
    shared: &SharedRef,
    ctx: &ArmCtx,
    route: Route,
) -> Result<Response, ArmError> {
    let m = &ctx.req.method;
    match route {
        Route::Subscription if *m == Method::GET => Ok(json(
            StatusCode::OK,
            &j!({
                "id": shared.sub_id(),
                "subscriptionId": shared.config.subscription_id,
                "tenantId": shared.config.tenant_id,
                "displayName": "ACI emulator subscription",
                "state": "Enabled",
            }),
        )),
        Route::ResourceGroups if *m == Method::GET => {
            let state = lock(&shared.state);
            let value: Vec<ResourceGroup> = state
                .resource_groups
                .values()
                .map(|rg| render_rg(shared, rg))
                .collect();
            Ok(json(
                StatusCode::OK,
                &ListResult {
                    value,
                    next_link: None,
                },
            ))
        }
        Route::ResourceGroup { rg } => resource_group(shared, ctx, &rg).await,
        Route::Providers if *m == Method::GET => {
            let value: Vec<serde_json::Value> = [
                "Microsoft.ContainerInstance",
                "Microsoft.ManagedIdentity",
                "Microsoft.Resources",
                "Microsoft.ContainerRegistry",
                "Microsoft.Authorization",
            ]
            .iter()
            .filter_map(|ns| provider(shared, ns))
            .collect();
            Ok(json(StatusCode::OK, &j!({ "value": value })))
        }
        Route::ProviderRegister { namespace } if *m == Method::POST => {
            let known = provider(shared, &namespace).is_some();
            if known {
                lock(&shared.state)
                    .registered
                    .insert(namespace.to_ascii_lowercase());
            }
            provider(shared, &namespace)
                .map(|p| json(StatusCode::OK, &p))
                .ok_or_else(|| {
                    ArmError::new(
                        StatusCode::NOT_FOUND,
                        "InvalidResourceNamespace",
                        format!("The resource namespace '{namespace}' is invalid."),
                    )
                })
        }
        Route::Provider { namespace } if *m == Method::GET => provider(shared, &namespace)
            .map(|p| json(StatusCode::OK, &p))
            .ok_or_else(|| {
                ArmError::new(
                    StatusCode::NOT_FOUND,
                    "InvalidResourceNamespace",
                    format!("The resource namespace '{namespace}' is invalid."),
                )
            }),
        Route::IdentitiesInGroup { rg } if *m == Method::GET => {
            require_rg(shared, &rg)?;
            let state = lock(&shared.state);
            let prefix = format!("{}/resourcegroups/{}/", shared.sub_id(), rg).to_ascii_lowercase();
            let value: Vec<UserAssignedIdentity> = state
                .identities
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(_, i)| render_identity(shared, i))
                .collect();
            Ok(json(
                StatusCode::OK,
                &ListResult {
                    value,
                    next_link: None,
                },
            ))
        }
        Route::Identity { rg, name } => identity(shared, ctx, &rg, &name),
        _ => Err(method_not_allowed(m)),
    }
}

fn require_rg(shared: &SharedRef, rg: &str) -> Result<(), ArmError> {
    if lock(&shared.state)
        .resource_groups
        .contains_key(&rg.to_ascii_lowercase())
    {
        Ok(())
    } else {
        Err(ArmError::resource_group_not_found(rg))
    }
}

fn provider(shared: &SharedRef, namespace: &str) -> Option<serde_json::Value> {
    let (ns, types): (&str, Vec<(&str, Api)>) = match namespace.to_ascii_lowercase().as_str() {
        "microsoft.containerinstance" => (
            "Microsoft.ContainerInstance",
            vec![
                ("containerGroups", Api::ContainerInstance),
                ("locations/operations", Api::ContainerInstance),
            ],
        ),
        "microsoft.managedidentity" => (
            "Microsoft.ManagedIdentity",
            vec![("userAssignedIdentities", Api::ManagedIdentity)],
        ),
        "microsoft.resources" => (
            "Microsoft.Resources",
            vec![
                ("resourceGroups", Api::Resources),
                ("deployments", Api::Resources),
            ],
        ),
        "microsoft.containerregistry" => (
            "Microsoft.ContainerRegistry",
            vec![("registries", Api::ContainerRegistry)],
        ),
        "microsoft.authorization" => (
            "Microsoft.Authorization",
            vec![
                ("roleDefinitions", Api::Authorization),
                ("roleAssignments", Api::Authorization),
            ],
        ),
        _ => return None,
    };
    let resource_types: Vec<serde_json::Value> = types
        .iter()
        .map(|(t, api)| {
            let mut versions: Vec<&str> = api.versions().to_vec();
            versions.reverse();
            j!({"resourceType": t, "locations": shared.config.locations, "apiVersions": versions})
        })
        .collect();
    Some(j!({
        "id": format!("{}/providers/{ns}", shared.sub_id()),
        "namespace": ns,
        "registrationState": if lock(&shared.state).registered.contains(&ns.to_ascii_lowercase()) { "Registered" } else { "NotRegistered" },
        "registrationPolicy": "RegistrationRequired",
        "resourceTypes": resource_types,
    }))
}

fn render_rg(shared: &SharedRef, rg: &RgEntry) -> ResourceGroup {
    ResourceGroup {
        id: Some(format!("{}/resourceGroups/{}", shared.sub_id(), rg.name)),
        name: Some(rg.name.clone()),
        resource_type: Some("Microsoft.Resources/resourceGroups".into()),
        location: rg.location.clone(),
        tags: rg.tags.clone(),
        properties: Some(ResourceGroupProperties {
            provisioning_state: "Succeeded".into(),
        }),
    }
}

fn valid_rg_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 90
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
}

async fn resource_group(shared: &SharedRef, ctx: &ArmCtx, rg: &str) -> Result<Response, ArmError> {
    let key = rg.to_ascii_lowercase();
    match ctx.req.method {
        Method::GET => {
            let state = lock(&shared.state);
            let entry = state
                .resource_groups
                .get(&key)
                .ok_or_else(|| ArmError::resource_group_not_found(rg))?;
            Ok(json(StatusCode::OK, &render_rg(shared, entry)))
        }
        Method::HEAD => Ok(empty(
            if lock(&shared.state).resource_groups.contains_key(&key) {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::NOT_FOUND
            },
        )),
        Method::PUT | Method::PATCH => {
            if !valid_rg_name(rg) {
                return Err(ArmError::bad_request(
                    "InvalidResourceGroupName",
                    format!("The resource group name '{rg}' is invalid. It can contain up to 90 letters, digits, '-', '_', '.', '(' and ')', and cannot end with '.'."),
                ));
            }
            let body: ResourceGroup = if ctx.req.body.is_empty() && ctx.req.method == Method::PATCH
            {
                ResourceGroup {
                    id: None,
                    name: None,
                    resource_type: None,
                    location: String::new(),
                    tags: BTreeMap::new(),
                    properties: None,
                }
            } else {
                serde_json::from_slice(&ctx.req.body).map_err(invalid_body)?
            };
            let mut state = lock(&shared.state);
            let exists = state.resource_groups.contains_key(&key);
            if ctx.req.method == Method::PATCH {
                let entry = state
                    .resource_groups
                    .get_mut(&key)
                    .ok_or_else(|| ArmError::resource_group_not_found(rg))?;
                entry.tags = body.tags;
                return Ok(json(StatusCode::OK, &render_rg(shared, entry)));
            }
            if body.location.trim().is_empty() {
                return Err(ArmError::bad_request(
                    "LocationRequired",
                    "The location property is required for this definition.",
                ));
            }
            let location = body
                .location
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_lowercase();
            if let Some(existing) = state.resource_groups.get(&key) {
                if existing.location != location {
                    return Err(ArmError::new(
                        StatusCode::CONFLICT,
                        "InvalidResourceGroupLocation",
                        format!("Invalid resource group location '{location}'. The Resource group already exists in location '{}'.", existing.location),
                    ));
                }
            }
            let name = state
                .resource_groups
                .get(&key)
                .map(|e| e.name.clone())
                .unwrap_or_else(|| rg.to_string());
            let entry = RgEntry {
                name,
                location,
                tags: body.tags,
            };
            let rendered = render_rg(shared, &entry);
            state.resource_groups.insert(key, entry);
            Ok(json(
                if exists {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                },
                &rendered,
            ))
        }
        Method::DELETE => {
            let keys: Vec<String> = {
                let mut state = lock(&shared.state);
                if state.resource_groups.remove(&key).is_none() {
                    return Ok(empty(StatusCode::NO_CONTENT));
                }
                let prefix =
                    format!("{}/resourcegroups/{}/", shared.sub_id(), rg).to_ascii_lowercase();
                state.identities.retain(|k, _| !k.starts_with(&prefix));
                state.registries.retain(|k, _| !k.starts_with(&prefix));
                state.deployments.retain(|k, _| !k.starts_with(&prefix));
                let rg_scope = prefix.trim_end_matches('/').to_string();
                state
                    .role_assignments
                    .retain(|_, a| !crate::rbac::scope_covers(&rg_scope, &a.assignment.scope));
                state
                    .groups
                    .keys()
                    .filter(|k| k.starts_with(&prefix))
                    .cloned()
                    .collect()
            };
            for k in keys {
                let shared2 = shared.clone();
                shared.tasks.spawn(async move {
                    runtime::stop_group(&shared2, &k, false).await;
                    lock(&shared2.state).groups.remove(&k);
                });
            }
            Ok(empty(StatusCode::OK))
        }
        ref m => Err(method_not_allowed(m)),
    }
}

fn render_identity(shared: &SharedRef, i: &IdentityEntry) -> UserAssignedIdentity {
    UserAssignedIdentity {
        id: Some(i.id.clone()),
        name: Some(i.name.clone()),
        resource_type: Some(IDENTITY_TYPE.into()),
        location: i.location.clone(),
        tags: i.tags.clone(),
        properties: Some(UserAssignedIdentityProperties {
            tenant_id: shared.config.tenant_id.clone(),
            principal_id: i.principal_id.clone(),
            client_id: i.client_id.clone(),
        }),
    }
}

fn identity(shared: &SharedRef, ctx: &ArmCtx, rg: &str, name: &str) -> Result<Response, ArmError> {
    require_rg(shared, rg)?;
    let id = format!(
        "{}/resourcegroups/{rg}/providers/{IDENTITY_TYPE}/{name}",
        shared.sub_id()
    );
    let key = id.to_ascii_lowercase();
    match ctx.req.method {
        Method::GET => {
            let state = lock(&shared.state);
            let i = state
                .identities
                .get(&key)
                .ok_or_else(|| ArmError::resource_not_found(IDENTITY_TYPE, name, rg))?;
            Ok(json(StatusCode::OK, &render_identity(shared, i)))
        }
        Method::PUT | Method::PATCH => {
            let valid = (3..=128).contains(&name.len())
                && name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(ArmError::bad_request(
                    "InvalidResourceName",
                    format!("Resource name '{name}' is invalid. It must be 3-128 characters of letters, digits, '-' and '_', starting with a letter or digit."),
                ));
            }
            let body: UserAssignedIdentity =
                serde_json::from_slice(&ctx.req.body).map_err(invalid_body)?;
            let mut state = lock(&shared.state);
            let exists = state.identities.contains_key(&key);
            if !exists && ctx.req.method == Method::PATCH {
                return Err(ArmError::resource_not_found(IDENTITY_TYPE, name, rg));
            }
            if !exists && body.location.trim().is_empty() {
                return Err(ArmError::bad_request(
                    "LocationRequired",
                    "The location property is required for this definition.",
                ));
            }
            let entry = state
                .identities
                .entry(key)
                .or_insert_with(|| IdentityEntry {
                    id: format!(
                        "{}/resourceGroups/{rg}/providers/{IDENTITY_TYPE}/{name}",
                        shared.sub_id()
                    ),
                    name: name.to_string(),
                    location: body.location.to_ascii_lowercase(),
                    tags: BTreeMap::new(),
                    client_id: uuid::Uuid::new_v4().to_string(),
                    principal_id: uuid::Uuid::new_v4().to_string(),
                    created: Some(std::time::Instant::now()),
                });
            entry.tags = body.tags;
            let rendered = render_identity(shared, entry);
            Ok(json(
                if exists {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                },
                &rendered,
            ))
        }
        Method::DELETE => {
            let removed = lock(&shared.state).identities.remove(&key);
            Ok(empty(if removed.is_some() {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            }))
        }
        ref m => Err(method_not_allowed(m)),
    }
}
