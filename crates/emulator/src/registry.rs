//! `Microsoft.ContainerRegistry`: registries, the global name check, and pull authorisation.
//!
//! Registry names are 5–50 alphanumerics and *globally* unique (they become the DNS name
//! `<name>.azurecr.io`), so the emulator keeps a list of names "taken" by other tenants
//! (`taken_registry_names` in the config) next to the registries it holds. Creating a registry
//! is asynchronous: 201 with `Azure-AsyncOperation`, `provisioningState` `Creating` →
//! `Succeeded`.
//!
//! Container groups pull `<name>.azurecr.io/...` images of a registry held here; with RBAC on,
//! the pulling identity needs `Microsoft.ContainerRegistry/registries/pull/read` (AcrPull) on
//! the registry, checked by [`pull_refused`].

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json as j, Value};

use crate::error::ArmError;
use crate::http::{empty, json, set_header, ArmCtx};
use crate::path::Route;
use crate::state::{lock, now_rfc3339, set_op, RegistryEntry, SharedRef};

const TYPE: &str = "Microsoft.ContainerRegistry/registries";
/// The action AcrPull grants.
pub(crate) const PULL_ACTION: &str = "Microsoft.ContainerRegistry/registries/pull/read";

fn method_not_allowed(m: &Method) -> ArmError {
    ArmError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("The requested resource does not support http method '{m}'."),
    )
}

/// Dispatches a registry route.
pub(crate) fn handle(shared: &SharedRef, ctx: &ArmCtx, route: Route) -> Result<Response, ArmError> {
    let m = &ctx.req.method;
    match route {
        Route::RegistriesInGroup { rg } if *m == Method::GET => {
            require_rg(shared, &rg)?;
            let state = lock(&shared.state);
            let value: Vec<Value> = state
                .registries
                .values()
                .filter(|r| r.resource_group.eq_ignore_ascii_case(&rg))
                .map(render)
                .collect();
            Ok(json(StatusCode::OK, &j!({ "value": value })))
        }
        Route::Registry { rg, name } => match *m {
            Method::GET => {
                require_rg(shared, &rg)?;
                let state = lock(&shared.state);
                let r = state
                    .registries
                    .get(&key(shared, &rg, &name))
                    .ok_or_else(|| ArmError::resource_not_found(TYPE, &name, &rg))?;
                Ok(json(StatusCode::OK, &render(r)))
            }
            Method::PUT | Method::PATCH => put(shared, ctx, &rg, &name),
            Method::DELETE => {
                require_rg(shared, &rg)?;
                let removed = lock(&shared.state)
                    .registries
                    .remove(&key(shared, &rg, &name));
                Ok(empty(if removed.is_some() {
                    StatusCode::OK
                } else {
                    StatusCode::NO_CONTENT
                }))
            }
            _ => Err(method_not_allowed(m)),
        },
        Route::RegistryNameCheck if *m == Method::POST => name_check(shared, ctx),
        Route::RegistryOperation { id } if *m == Method::GET => {
            let state = lock(&shared.state);
            let op = state.operations.get(&id).ok_or_else(|| {
                ArmError::new(
                    StatusCode::NOT_FOUND,
                    "OperationNotFound",
                    format!("The operation '{id}' could not be found."),
                )
            })?;
            Ok(json(
                StatusCode::OK,
                &j!({"status": op.status, "startTime": op.start_time, "endTime": op.end_time}),
            ))
        }
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

fn key(shared: &SharedRef, rg: &str, name: &str) -> String {
    format!(
        "{}/resourcegroups/{rg}/providers/{TYPE}/{name}",
        shared.sub_id()
    )
    .to_ascii_lowercase()
}

fn render(r: &RegistryEntry) -> Value {
    j!({
        "id": r.id,
        "name": r.name,
        "type": TYPE,
        "location": r.location,
        "tags": r.tags,
        "sku": {"name": r.sku, "tier": r.sku},
        "properties": {
            "loginServer": format!("{}.azurecr.io", r.name.to_ascii_lowercase()),
            "creationDate": r.creation_date,
            "provisioningState": r.provisioning_state,
            "adminUserEnabled": r.admin_user_enabled,
            "publicNetworkAccess": "Enabled",
            "anonymousPullEnabled": false,
        }
    })
}

fn valid_name(name: &str) -> bool {
    (5..=50).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Why a name cannot be used: `(reason, message)`; `None` when it is free. A registry in this
/// emulator counts as taken too (as in Azure, even for the caller's own registry).
fn unavailable(
    shared: &SharedRef,
    name: &str,
    except_id: Option<&str>,
) -> Option<(&'static str, String)> {
    if !valid_name(name) {
        return Some((
            "Invalid",
            format!("The registry name '{name}' is invalid: it must be 5-50 characters of letters and digits only."),
        ));
    }
    let taken_elsewhere = shared
        .config
        .taken_registry_names
        .iter()
        .any(|t| t.eq_ignore_ascii_case(name));
    let taken_here = lock(&shared.state).registries.values().any(|r| {
        r.name.eq_ignore_ascii_case(name)
            && except_id.is_none_or(|id| !r.id.eq_ignore_ascii_case(id))
    });
    (taken_elsewhere || taken_here).then(|| {
        (
            "AlreadyExists",
            format!(
                "The registry {} is already in use.",
                name.to_ascii_lowercase()
            ),
        )
    })
}

fn name_check(shared: &SharedRef, ctx: &ArmCtx) -> Result<Response, ArmError> {
    let body: Value = serde_json::from_slice(&ctx.req.body).map_err(|e| {
        ArmError::bad_request(
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{e}'."),
        )
    })?;
    let name = body.get("name").and_then(Value::as_str).unwrap_or("");
    let ty = body.get("type").and_then(Value::as_str).unwrap_or("");
    if !ty.eq_ignore_ascii_case(TYPE) {
        return Err(ArmError::bad_request(
            "InvalidResourceType",
            format!("The resource type '{ty}' is not valid for a name check; use '{TYPE}'."),
        ));
    }
    Ok(json(
        StatusCode::OK,
        &match unavailable(shared, name, None) {
            None => j!({"nameAvailable": true}),
            Some((reason, message)) => {
                j!({"nameAvailable": false, "reason": reason, "message": message})
            }
        },
    ))
}

fn put(shared: &SharedRef, ctx: &ArmCtx, rg: &str, name: &str) -> Result<Response, ArmError> {
    require_rg(shared, rg)?;
    let body: Value = serde_json::from_slice(&ctx.req.body).map_err(|e| {
        ArmError::bad_request(
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{e}'."),
        )
    })?;
    let k = key(shared, rg, name);
    let existing = lock(&shared.state).registries.get(&k).cloned();
    let id = existing.as_ref().map(|e| e.id.clone()).unwrap_or_else(|| {
        format!(
            "{}/resourceGroups/{rg}/providers/{TYPE}/{name}",
            shared.sub_id()
        )
    });
    if let Some((reason, message)) = unavailable(shared, name, Some(&id)) {
        return Err(if reason == "Invalid" {
            ArmError::bad_request("RegistryNameInvalid", message)
        } else {
            ArmError::new(StatusCode::CONFLICT, "AlreadyInUse", format!("The registry DNS name {}.azurecr.io is already in use. You can check if the name is already claimed using following API: https://docs.microsoft.com/en-us/rest/api/containerregistry/registries/checknameavailability", name.to_ascii_lowercase()))
        });
    }
    let tags: Option<BTreeMap<String, String>> = body
        .get("tags")
        .and_then(|t| serde_json::from_value(t.clone()).ok());
    let sku = body
        .pointer("/sku/name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let admin = body
        .pointer("/properties/adminUserEnabled")
        .and_then(Value::as_bool);
    if let Some(mut e) = existing {
        if let Some(t) = tags {
            e.tags = t;
        }
        if let Some(s) = sku {
            e.sku = s;
        }
        if let Some(a) = admin {
            e.admin_user_enabled = a;
        }
        lock(&shared.state).registries.insert(k, e.clone());
        return Ok(json(StatusCode::OK, &render(&e)));
    }
    if ctx.req.method == Method::PATCH {
        return Err(ArmError::resource_not_found(TYPE, name, rg));
    }
    let Some(location) = body
        .get("location")
        .and_then(Value::as_str)
        .filter(|l| !l.trim().is_empty())
    else {
        return Err(ArmError::bad_request(
            "LocationRequired",
            "The location property is required for this definition.",
        ));
    };
    let sku = match sku {
        Some(s)
            if ["Basic", "Standard", "Premium"]
                .iter()
                .any(|v| v.eq_ignore_ascii_case(&s)) =>
        {
            s
        }
        other => {
            return Err(ArmError::bad_request(
                "InvalidSku",
                format!(
                "The sku '{}' is not valid. Use one of 'Basic', 'Standard', 'Premium' in sku.name.",
                other.unwrap_or_default()
            ),
            ))
        }
    };
    let entry = RegistryEntry {
        id: id.clone(),
        name: name.to_string(),
        resource_group: rg.to_string(),
        location: location
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase(),
        sku,
        tags: tags.unwrap_or_default(),
        admin_user_enabled: admin.unwrap_or(false),
        provisioning_state: "Creating".into(),
        creation_date: now_rfc3339(),
    };
    let op_id = {
        let mut state = lock(&shared.state);
        state.registries.insert(k.clone(), entry.clone());
        shared.new_operation(&mut state, &id)
    };
    let shared2 = shared.clone();
    let op2 = op_id.clone();
    let delay = Duration::from_millis(shared.config.provisioning_delay_ms.min(2000));
    shared.tasks.spawn(async move {
        tokio::time::sleep(delay).await;
        let mut state = lock(&shared2.state);
        if let Some(r) = state.registries.get_mut(&k) {
            r.provisioning_state = "Succeeded".into();
        }
        set_op(&mut state, &op2, "Succeeded", None);
    });
    let mut r = json(StatusCode::CREATED, &render(&entry));
    let url = format!(
        "{}{}/providers/Microsoft.ContainerRegistry/locations/{}/operationResults/{op_id}?api-version={}",
        shared.base_url,
        shared.sub_id(),
        entry.location,
        ctx.api_version
    );
    set_header(&mut r, "Azure-AsyncOperation", &url);
    Ok(r)
}

/// With RBAC on, why a container group may not pull `image` (host `<name>.azurecr.io` of a
/// registry held here): the credential for the host must use an identity of the group whose
/// principal has AcrPull on the registry. `None` when the pull is allowed or not ours to judge.
pub(crate) fn pull_refused(
    shared: &SharedRef,
    host: &str,
    creds: &[arm_models::ImageRegistryCredential],
) -> Option<String> {
    if !shared.config.rbac {
        return None;
    }
    let name = host.strip_suffix(".azurecr.io")?;
    let (registry_id, identity_principal) = {
        let state = lock(&shared.state);
        let reg = state
            .registries
            .values()
            .find(|r| r.name.eq_ignore_ascii_case(name))?;
        let cred = creds.iter().find(|c| c.server.eq_ignore_ascii_case(host))?;
        // Admin-user credentials are the registry's own business: accept them.
        let identity = cred.identity.as_ref()?;
        let principal = state
            .identities
            .get(&identity.to_ascii_lowercase())
            .map(|i| i.principal_id.clone());
        (reg.id.clone(), principal)
    };
    let Some(principal) = identity_principal else {
        return Some(format!(
            "the credential identity for '{host}' does not exist"
        ));
    };
    if crate::authz::is_authorized(shared, &principal, PULL_ACTION, &registry_id) {
        None
    } else {
        Some(format!(
            "the identity (principal '{principal}') is not authorized to pull from registry '{registry_id}': it needs the AcrPull role (action '{PULL_ACTION}') on the registry"
        ))
    }
}
