//! `Microsoft.ContainerInstance`: container groups, their actions, logs and operations.
//!
//! Validation mirrors the service's error codes (`InvalidOsType`,
//! `ResourceRequestsNotSpecified`, `InaccessibleImage`, `InvalidImageRegistryCredentialType`,
//! ...) so a client's error handling is exercised against realistic answers. Writes are
//! asynchronous like ACI: PUT answers 201/200 with `Azure-AsyncOperation` and a body in
//! `Pending`; DELETE answers 202; the [`crate::runtime`] does the work in the background.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use arm_models::{AsyncOperationStatus, ContainerGroup, ListResult, Logs, UserAssignedIdentityRef};
use axum::http::{Method, StatusCode};
use axum::response::Response;

use crate::error::ArmError;
use crate::http::{empty, json, set_header, ArmCtx};
use crate::path::{GroupAction, Route};
use crate::runtime;
use crate::state::{lock, set_op, GroupEntry, SharedRef};

const TYPE: &str = "Microsoft.ContainerInstance/containerGroups";

/// Lower-cased map key of a group.
pub(crate) fn group_key(shared: &SharedRef, rg: &str, name: &str) -> String {
    format!(
        "{}/resourcegroups/{}/providers/{}/{}",
        shared.sub_id(),
        rg,
        TYPE,
        name
    )
    .to_ascii_lowercase()
}

fn method_not_allowed(m: &Method) -> ArmError {
    ArmError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("The requested resource does not support http method '{m}'."),
    )
}

/// Dispatches a Container Instance route.
pub(crate) async fn handle(
    shared: &SharedRef,
    ctx: &ArmCtx,
    route: Route,
) -> Result<Response, ArmError> {
    let m = &ctx.req.method;
    match route {
        Route::ContainerGroupsInSubscription if *m == Method::GET => list(shared, ctx, None),
        Route::ContainerGroupsInGroup { rg } if *m == Method::GET => list(shared, ctx, Some(&rg)),
        Route::ContainerGroup { rg, name } => match *m {
            Method::PUT => put(shared, ctx, &rg, &name),
            Method::GET => get(shared, &rg, &name),
            Method::PATCH => patch(shared, ctx, &rg, &name),
            Method::DELETE => delete(shared, ctx, &rg, &name),
            _ => Err(method_not_allowed(m)),
        },
        Route::ContainerGroupAction { rg, name, action } if *m == Method::POST => {
            action_handler(shared, ctx, &rg, &name, action).await
        }
        Route::ContainerLogs {
            rg,
            name,
            container,
        } if *m == Method::GET => logs(shared, ctx, &rg, &name, &container),
        Route::AciUsages { location } if *m == Method::GET => Ok(usages(shared, &location)),
        Route::AciOperation { location, id } if *m == Method::GET => {
            operation(shared, &location, &id)
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

/// True for a valid ACI resource name: 1–63 of `[a-z0-9-]`, not starting or ending with `-`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

fn normalize_location(l: &str) -> String {
    l.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Validates a PUT body; returns the normalized location.
fn validate(
    shared: &SharedRef,
    api_version: &str,
    name: &str,
    cg: &ContainerGroup,
) -> Result<String, ArmError> {
    let bad = ArmError::bad_request;
    if !valid_name(name) {
        return Err(bad(
            "ContainerGroupNameInvalid",
            format!(
                "The container group name '{name}' is invalid. A container group name must contain no more than 63 characters and only lowercase alphanumeric characters and '-'; it must not start or end with '-' or contain '--'."
            ),
        ));
    }
    let Some(location) = cg.location.as_deref().filter(|l| !l.trim().is_empty()) else {
        return Err(bad(
            "LocationRequired",
            "The location property is required for this definition.".to_string(),
        ));
    };
    let location = normalize_location(location);
    if !shared
        .config
        .locations
        .iter()
        .any(|l| normalize_location(l) == location)
    {
        return Err(bad(
            "LocationNotAvailableForResourceType",
            format!(
                "The provided location '{location}' is not available for resource type '{TYPE}'. List of available regions for the resource type is '{}'.",
                shared.config.locations.join(",")
            ),
        ));
    }
    let p = &cg.properties;
    match p.os_type.as_deref() {
        Some(os) if os.eq_ignore_ascii_case("Linux") || os.eq_ignore_ascii_case("Windows") => {}
        other => {
            return Err(bad(
                "InvalidOsType",
                format!(
                    "The OS type '{}' is not valid. The valid OS types are 'Linux' and 'Windows'.",
                    other.unwrap_or("")
                ),
            ))
        }
    }
    if let Some(rp) = p.restart_policy.as_deref() {
        if !["Always", "OnFailure", "Never"]
            .iter()
            .any(|v| v.eq_ignore_ascii_case(rp))
        {
            return Err(bad(
                "InvalidRestartPolicy",
                format!("The restart policy '{rp}' is not valid. The valid restart policies are 'Always', 'OnFailure' and 'Never'."),
            ));
        }
    }
    if p.containers.is_empty() {
        return Err(bad(
            "ContainerGroupContainersMissing",
            format!("The container group '{name}' must contain at least one container."),
        ));
    }
    if p.containers.len() > 60 {
        return Err(bad(
            "ContainerGroupTooManyContainers",
            format!(
                "The container group '{name}' has {} containers; the limit is 60.",
                p.containers.len()
            ),
        ));
    }
    // Identities: each must exist; registry identities must be attached to the group.
    let attached: BTreeSet<String> = cg
        .identity
        .as_ref()
        .and_then(|i| i.user_assigned_identities.as_ref())
        .map(|m| m.keys().map(|k| k.to_ascii_lowercase()).collect())
        .unwrap_or_default();
    {
        let state = lock(&shared.state);
        for id in &attached {
            if !state.identities.contains_key(id) {
                return Err(bad("FailedIdentityOperation", format!("Identity operation for resource '{}/resourceGroups/…/{TYPE}/{name}' failed with error 'Resource '{id}' was not found.'.", shared.sub_id())));
            }
        }
    }
    let creds = p.image_registry_credentials.clone().unwrap_or_default();
    for cred in &creds {
        if cred.server.contains("://") || cred.server.trim().is_empty() {
            return Err(bad(
                "InvalidImageRegistryServer",
                format!("The image registry server '{}' is invalid. It should be a valid host name without protocol.", cred.server),
            ));
        }
        if let Some(identity) = &cred.identity {
            if api_version < "2021-07-01" {
                return Err(bad(
                    "InvalidImageRegistryCredentialType",
                    format!("The image registry credential for server '{}' uses a managed identity, which requires api-version '2021-07-01' or later.", cred.server),
                ));
            }
            if !attached.contains(&identity.to_ascii_lowercase()) {
                return Err(bad(
                    "InaccessibleImage",
                    format!(
                        "The image registry credential identity '{identity}' for server '{}' in container group '{name}' is not one of the group's user-assigned identities. Add it to identity.userAssignedIdentities.",
                        cred.server
                    ),
                ));
            }
        } else if cred.username.is_none() {
            return Err(bad(
                "InvalidImageRegistryCredential",
                format!("The image registry credential for server '{}' needs either 'username' and 'password' or 'identity'.", cred.server),
            ));
        }
    }
    let mut names = BTreeSet::new();
    let (mut total_cpu, mut total_mem) = (0.0f64, 0.0f64);
    for c in &p.containers {
        if !valid_name(&c.name) {
            return Err(bad(
                "InvalidContainerName",
                format!("The container name '{}' is invalid. A container name must contain no more than 63 characters and only lowercase alphanumeric characters and '-'; it must not start or end with '-'.", c.name),
            ));
        }
        if !names.insert(c.name.clone()) {
            return Err(bad(
                "DuplicateContainerName",
                format!(
                    "The container name '{}' is used more than once in container group '{name}'.",
                    c.name
                ),
            ));
        }
        let cp = &c.properties;
        if cp.image.trim().is_empty() {
            return Err(bad(
                "InvalidContainerImage",
                format!("The image of container '{}' is not specified.", c.name),
            ));
        }
        let req = cp.resources.as_ref().and_then(|r| r.requests.as_ref());
        let (Some(cpu), Some(mem)) = (req.and_then(|r| r.cpu), req.and_then(|r| r.memory_in_gb))
        else {
            return Err(bad(
                "ResourceRequestsNotSpecified",
                format!("The resource requests of container '{}' in container group '{name}' are not specified. Both 'cpu' and 'memoryInGB' are required.", c.name),
            ));
        };
        if !(cpu.is_finite() && cpu > 0.0 && cpu <= 31.0) {
            return Err(bad("InvalidCpuRequest", format!("The CPU request '{cpu}' of container '{}' is invalid. It must be greater than 0 and at most 31.", c.name)));
        }
        if !(mem.is_finite() && mem > 0.0 && mem <= 240.0) {
            return Err(bad("InvalidMemoryRequest", format!("The memory request '{mem}' GB of container '{}' is invalid. It must be greater than 0 and at most 240.", c.name)));
        }
        total_cpu += cpu;
        total_mem += mem;
        if let Some(l) = cp.resources.as_ref().and_then(|r| r.limits.as_ref()) {
            if l.cpu.is_some_and(|v| v > cpu.max(total_cpu))
                || l.memory_in_gb.is_some_and(|v| v > mem.max(total_mem))
            {
                return Err(bad(
                    "ContainerLimitGreaterThanContainerGroupTotalRequest",
                    format!("The resource limits of container '{}' are greater than the container group's total resource requests.", c.name),
                ));
            }
        }
        let mut env_names = BTreeSet::new();
        for v in cp.environment_variables.iter().flatten() {
            let ok = !v.name.is_empty()
                && v.name.len() <= 63
                && v.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(bad(
                    "InvalidEnvironmentVariableName",
                    format!("The environment variable name '{}' of container '{}' is invalid. Names must be 1-63 characters of letters, digits and '_'.", v.name, c.name),
                ));
            }
            if !env_names.insert(v.name.clone()) {
                return Err(bad("DuplicateEnvironmentVariables", format!("The environment variable '{}' of container '{}' is specified more than once.", v.name, c.name)));
            }
        }
        // Image access: the image table, and ACR images need a credential for their server.
        let host = image_host(&cp.image);
        if let Some(host) = &host {
            if host.ends_with(".azurecr.io")
                && !creds.iter().any(|cr| cr.server.eq_ignore_ascii_case(host))
            {
                return Err(inaccessible(&cp.image, name));
            }
            if let Some(why) = crate::registry::pull_refused(shared, host, &creds) {
                return Err(ArmError::bad_request(
                    "InaccessibleImage",
                    format!(
                        "The image '{}' in container group '{name}' is not accessible: {why}.",
                        cp.image
                    ),
                ));
            }
        }
        if shared.config.check_images_on_create
            && runtime::find_rule(&shared.config.images, &cp.image).is_none()
        {
            return Err(inaccessible(&cp.image, name));
        }
    }
    if total_cpu > 31.0 || total_mem > 240.0 {
        return Err(bad(
            "ContainerGroupResourceRequestsExceedLimit",
            format!("The container group '{name}' requests {total_cpu} CPU and {total_mem} GB memory; the limit is 31 CPU and 240 GB."),
        ));
    }
    Ok(location)
}

fn inaccessible(image: &str, group: &str) -> ArmError {
    ArmError::bad_request(
        "InaccessibleImage",
        format!("The image '{image}' in container group '{group}' is not accessible. Please check the image and registry credential."),
    )
}

/// The registry host of an image reference (`myacr.azurecr.io/x:1` → `myacr.azurecr.io`).
fn image_host(image: &str) -> Option<String> {
    let first = image.split('/').next()?;
    (image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost"))
        .then(|| first.to_ascii_lowercase())
}

fn put(shared: &SharedRef, ctx: &ArmCtx, rg: &str, name: &str) -> Result<Response, ArmError> {
    require_rg(shared, rg)?;
    let cg: ContainerGroup = serde_json::from_slice(&ctx.req.body).map_err(|e| {
        ArmError::bad_request(
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{e}'."),
        )
    })?;
    let location = validate(shared, &ctx.api_version, name, &cg)?;
    let key = group_key(shared, rg, name);
    let exists = lock(&shared.state).groups.contains_key(&key);
    let faults = shared.faults();
    let mut quota_headers = None;
    if !exists {
        // Capacity faults: fail this create when a matching fault still has failures left.
        {
            let mut state = lock(&shared.state);
            for (i, f) in faults.capacity.iter().enumerate() {
                if f.location != "*" && normalize_location(&f.location) != location {
                    continue;
                }
                let fail = match f.count {
                    None => true,
                    Some(n) => {
                        let used = state
                            .capacity_used
                            .entry(format!("{i}:{}", f.location))
                            .or_insert(0);
                        if *used < n {
                            *used += 1;
                            true
                        } else {
                            false
                        }
                    }
                };
                if fail {
                    let (cpu, mem) = totals(&cg);
                    return Err(ArmError::new(
                        StatusCode::CONFLICT,
                        "ServiceUnavailable",
                        format!(
                            "The requested resource is not available in the location '{location}' at this moment. Please retry with a different resource request or in another location. Resource requested: '{cpu}' CPU '{mem}' GB memory '{}' OS",
                            cg.properties.os_type.as_deref().unwrap_or("Linux")
                        ),
                    ));
                }
            }
        }
        if let Some(q) = faults.aci_quotas {
            let (groups, cores) = region_usage(shared, &location);
            let (cpu, _) = totals(&cg);
            let exceeded = if groups + 1 > u64::from(q.container_groups_per_region) {
                Some(("ContainerGroups", q.container_groups_per_region, groups, 1))
            } else if cores + cpu.ceil() as u64 > u64::from(q.cores_per_region) {
                Some((
                    "StandardCores",
                    q.cores_per_region,
                    cores,
                    cpu.ceil() as u64,
                ))
            } else {
                None
            };
            if let Some((quota, limit, usage, requested)) = exceeded {
                return Err(ArmError::bad_request(
                    "ContainerGroupQuotaReached",
                    format!(
                        "Resource type 'Microsoft.ContainerInstance/containerGroups' container group quota '{quota}' exceeded in region '{location}'. Limit: '{limit}', Usage: '{usage}' Requested: '{requested}'."
                    ),
                ));
            }
            match lock(&shared.throttle).take_quota(&q, false, Instant::now()) {
                Ok(rem) => quota_headers = Some(rem),
                Err(e) => return Err(quota_error("write", e)),
            }
        }
    } else {
        let state = lock(&shared.state);
        if state
            .groups
            .get(&key)
            .is_some_and(|g| g.provisioning_state == "Deleting")
        {
            return Err(ArmError::new(
                StatusCode::CONFLICT,
                "ContainerGroupTransitioning",
                format!("The container group '{name}' is being deleted. Please retry after the deletion completes."),
            ));
        }
    }
    let id = format!(
        "{}/resourceGroups/{rg}/providers/{TYPE}/{name}",
        shared.sub_id()
    );
    let op_id = {
        let mut state = lock(&shared.state);
        let op_id = shared.new_operation(&mut state, &id);
        let mut spec = cg.properties.clone();
        spec.provisioning_state = None;
        spec.instance_view = None;
        for c in &mut spec.containers {
            c.properties.instance_view = None;
        }
        let tags = cg.tags.clone().unwrap_or_default();
        match state.groups.get_mut(&key) {
            Some(g) => {
                g.location = location.clone();
                g.tags = tags;
                g.zones = cg.zones.clone();
                g.identity = cg.identity.clone();
                g.spec = spec;
            }
            None => {
                state.groups.insert(
                    key.clone(),
                    GroupEntry {
                        id: id.clone(),
                        name: name.to_string(),
                        resource_group: rg.to_string(),
                        location: location.clone(),
                        tags,
                        zones: cg.zones.clone(),
                        identity: cg.identity.clone(),
                        spec,
                        provisioning_state: "Pending".into(),
                        instance_state: None,
                        events: Vec::new(),
                        containers: Vec::new(),
                        generation: 0,
                        cancel: shared.shutdown.child_token(),
                        tracker: tokio_util::task::TaskTracker::new(),
                        current_op: None,
                        imds_key: uuid::Uuid::new_v4().simple().to_string(),
                        created_at: crate::state::now_rfc3339(),
                    },
                );
            }
        }
        op_id
    };
    runtime::deploy(shared, &key, Some(op_id.clone()));
    let body = {
        let state = lock(&shared.state);
        let ids = identity_ids(&state);
        state.groups.get(&key).map(|g| {
            let mut cg = render(g, false);
            fill_identities(&mut cg, &ids);
            cg
        })
    };
    let status = if exists {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut r = json(status, &body.unwrap_or_default());
    set_header(
        &mut r,
        "Azure-AsyncOperation",
        &shared.aci_operation_url(&location, &op_id, &ctx.api_version),
    );
    if let Some((p5, p60)) = quota_headers {
        set_header(
            &mut r,
            "x-ms-ratelimit-remaining-subscription-resource-requests-pt5m",
            &p5.to_string(),
        );
        set_header(
            &mut r,
            "x-ms-ratelimit-remaining-subscription-resource-requests-pt1h",
            &p60.to_string(),
        );
    }
    Ok(r)
}

/// Container groups and (rounded-up) cores in use in a region.
fn region_usage(shared: &SharedRef, location: &str) -> (u64, u64) {
    let state = lock(&shared.state);
    state
        .groups
        .values()
        .filter(|g| g.location == location)
        .fold((0, 0), |(n, cores), g| {
            let cpu: f64 = g
                .spec
                .containers
                .iter()
                .filter_map(|c| c.properties.resources.as_ref()?.requests.as_ref()?.cpu)
                .sum();
            (n + 1, cores + cpu.ceil() as u64)
        })
}

/// `GET .../locations/{loc}/usages`: the region's quota usage, shaped like ACI's answer.
fn usages(shared: &SharedRef, location: &str) -> Response {
    let location = normalize_location(location);
    let (groups, cores) = region_usage(shared, &location);
    let q = shared.faults().aci_quotas.unwrap_or_default();
    let row = |name: &str, localized: &str, current: u64, limit: u32| {
        serde_json::json!({
            "id": format!("{}/providers/Microsoft.ContainerInstance/locations/{location}/usages/{name}", shared.sub_id()),
            "unit": "Count",
            "currentValue": current,
            "limit": limit,
            "name": {"value": name, "localizedValue": localized},
        })
    };
    json(
        StatusCode::OK,
        &serde_json::json!({"value": [
            row("ContainerGroups", "Container Groups", groups, q.container_groups_per_region),
            row("StandardCores", "Standard Cores", cores, q.cores_per_region),
        ]}),
    )
}

fn totals(cg: &ContainerGroup) -> (f64, f64) {
    cg.properties
        .containers
        .iter()
        .fold((0.0, 0.0), |(c, m), x| {
            let r = x
                .properties
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref());
            (
                c + r.and_then(|r| r.cpu).unwrap_or(0.0),
                m + r.and_then(|r| r.memory_in_gb).unwrap_or(0.0),
            )
        })
}

/// The resource provider's throttling answer (the shape RPs use for their own limits).
fn quota_error(action: &str, q: crate::throttle::QuotaExceeded) -> ArmError {
    ArmError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "ResourceRequestsThrottled",
        format!(
            "Number of requests for action 'Microsoft.ContainerInstance/containerGroups/{action}' exceeded the limit of '{}' for time interval '{}'. Please try again after '{}' seconds.",
            q.limit, q.interval, q.retry_after_secs
        ),
    )
    .with_header("Retry-After", q.retry_after_secs.to_string())
}

/// Renders a group for a response; secrets are stripped, instance views only when asked.
pub(crate) fn render(g: &GroupEntry, with_instance_view: bool) -> ContainerGroup {
    let mut props = g.spec.clone();
    props.provisioning_state = Some(g.provisioning_state.clone());
    if props.sku.is_none() {
        props.sku = Some("Standard".into());
    }
    if props.restart_policy.is_none() {
        props.restart_policy = Some("Always".into());
    }
    for cred in props.image_registry_credentials.iter_mut().flatten() {
        cred.password = None;
    }
    for (i, c) in props.containers.iter_mut().enumerate() {
        for v in c.properties.environment_variables.iter_mut().flatten() {
            v.secure_value = None;
        }
        if with_instance_view {
            c.properties.instance_view = g.containers.get(i).map(|rt| rt.view.clone());
        }
    }
    if with_instance_view {
        props.instance_view = Some(arm_models::ContainerGroupInstanceView {
            events: g.events.clone(),
            state: g.instance_state.clone(),
        });
    }
    ContainerGroup {
        id: Some(g.id.clone()),
        name: Some(g.name.clone()),
        resource_type: Some(TYPE.into()),
        location: Some(g.location.clone()),
        tags: Some(g.tags.clone()),
        zones: g.zones.clone(),
        identity: g.identity.clone(),
        properties: props,
    }
}

fn get(shared: &SharedRef, rg: &str, name: &str) -> Result<Response, ArmError> {
    require_rg(shared, rg)?;
    let key = group_key(shared, rg, name);
    let body = {
        let state = lock(&shared.state);
        let g = state
            .groups
            .get(&key)
            .ok_or_else(|| ArmError::resource_not_found(TYPE, name, rg))?;
        let ids = identity_ids(&state);
        let mut cg = render(g, true);
        fill_identities(&mut cg, &ids);
        cg
    };
    Ok(json(StatusCode::OK, &body))
}

/// (lower-cased id, principal id, client id) of every identity.
fn identity_ids(state: &crate::state::State) -> Vec<(String, String, String)> {
    state
        .identities
        .iter()
        .map(|(k, v)| (k.clone(), v.principal_id.clone(), v.client_id.clone()))
        .collect()
}

/// Fills `principalId`/`clientId` of the group's user-assigned identities.
fn fill_identities(cg: &mut ContainerGroup, ids: &[(String, String, String)]) {
    if let Some(map) = cg
        .identity
        .as_mut()
        .and_then(|i| i.user_assigned_identities.as_mut())
    {
        for (id, v) in map.iter_mut() {
            if let Some((_, p, c)) = ids.iter().find(|(k, _, _)| *k == id.to_ascii_lowercase()) {
                *v = UserAssignedIdentityRef {
                    principal_id: Some(p.clone()),
                    client_id: Some(c.clone()),
                };
            }
        }
    }
}

fn patch(shared: &SharedRef, ctx: &ArmCtx, rg: &str, name: &str) -> Result<Response, ArmError> {
    require_rg(shared, rg)?;
    #[derive(serde::Deserialize)]
    struct Patch {
        #[serde(default)]
        tags: Option<BTreeMap<String, String>>,
    }
    let p: Patch = serde_json::from_slice(&ctx.req.body).map_err(|e| {
        ArmError::bad_request(
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{e}'."),
        )
    })?;
    let key = group_key(shared, rg, name);
    let mut state = lock(&shared.state);
    let ids = identity_ids(&state);
    let g = state
        .groups
        .get_mut(&key)
        .ok_or_else(|| ArmError::resource_not_found(TYPE, name, rg))?;
    if let Some(tags) = p.tags {
        g.tags = tags;
    }
    let mut cg = render(g, false);
    fill_identities(&mut cg, &ids);
    Ok(json(StatusCode::OK, &cg))
}

fn delete(shared: &SharedRef, ctx: &ArmCtx, rg: &str, name: &str) -> Result<Response, ArmError> {
    require_rg(shared, rg)?;
    let key = group_key(shared, rg, name);
    let location = {
        let state = lock(&shared.state);
        match state.groups.get(&key) {
            None => return Ok(empty(StatusCode::NO_CONTENT)),
            Some(g) => g.location.clone(),
        }
    };
    let mut quota_headers = None;
    if let Some(q) = shared.faults().aci_quotas {
        match lock(&shared.throttle).take_quota(&q, true, Instant::now()) {
            Ok(rem) => quota_headers = Some(rem),
            Err(e) => return Err(quota_error("delete", e)),
        }
    }
    let op_id = {
        let mut state = lock(&shared.state);
        let id = state
            .groups
            .get(&key)
            .map(|g| g.id.clone())
            .unwrap_or_default();
        let op_id = shared.new_operation(&mut state, &id);
        set_op(&mut state, &op_id, "Running", None);
        if let Some(g) = state.groups.get_mut(&key) {
            g.provisioning_state = "Deleting".into();
        }
        op_id
    };
    let shared2 = shared.clone();
    let op2 = op_id.clone();
    shared.tasks.spawn(async move {
        runtime::stop_group(&shared2, &key, false).await;
        let removed = lock(&shared2.state).groups.remove(&key);
        if let Some(g) = removed {
            let dir = shared2
                .work_root
                .join(runtime_dir(&g.resource_group))
                .join(&g.name);
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
        set_op(&mut lock(&shared2.state), &op2, "Succeeded", None);
    });
    let url = shared.aci_operation_url(&location, &op_id, &ctx.api_version);
    let mut r = empty(StatusCode::ACCEPTED);
    set_header(&mut r, "Azure-AsyncOperation", &url);
    set_header(&mut r, "Location", &url);
    set_header(&mut r, "Retry-After", "1");
    if let Some((p5, p60)) = quota_headers {
        set_header(
            &mut r,
            "x-ms-ratelimit-remaining-subscription-resource-requests-pt5m",
            &p5.to_string(),
        );
        set_header(
            &mut r,
            "x-ms-ratelimit-remaining-subscription-resource-requests-pt1h",
            &p60.to_string(),
        );
    }
    Ok(r)
}

fn runtime_dir(rg: &str) -> String {
    rg.to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn action_handler(
    shared: &SharedRef,
    ctx: &ArmCtx,
    rg: &str,
    name: &str,
    action: GroupAction,
) -> Result<Response, ArmError> {
    require_rg(shared, rg)?;
    let key = group_key(shared, rg, name);
    let (location, id, deleting) = {
        let state = lock(&shared.state);
        let g = state
            .groups
            .get(&key)
            .ok_or_else(|| ArmError::resource_not_found(TYPE, name, rg))?;
        (
            g.location.clone(),
            g.id.clone(),
            g.provisioning_state == "Deleting",
        )
    };
    if deleting {
        return Err(ArmError::new(
            StatusCode::CONFLICT,
            "ContainerGroupTransitioning",
            format!("The container group '{name}' is being deleted."),
        ));
    }
    match action {
        GroupAction::Stop => {
            {
                let mut state = lock(&shared.state);
                if let Some(g) = state.groups.get_mut(&key) {
                    crate::state::add_event(
                        &mut g.events,
                        "Stopping",
                        "Stopping container group".into(),
                        "Normal",
                    );
                }
            }
            runtime::stop_group(shared, &key, true).await;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        GroupAction::Start | GroupAction::Restart => {
            let op_id = {
                let mut state = lock(&shared.state);
                shared.new_operation(&mut state, &id)
            };
            runtime::deploy(shared, &key, Some(op_id.clone()));
            let url = shared.aci_operation_url(&location, &op_id, &ctx.api_version);
            let status = if action == GroupAction::Start {
                StatusCode::ACCEPTED
            } else {
                StatusCode::NO_CONTENT
            };
            let mut r = empty(status);
            set_header(&mut r, "Azure-AsyncOperation", &url);
            set_header(&mut r, "Location", &url);
            set_header(&mut r, "Retry-After", "1");
            Ok(r)
        }
    }
}

fn list(shared: &SharedRef, ctx: &ArmCtx, rg: Option<&str>) -> Result<Response, ArmError> {
    if let Some(rg) = rg {
        require_rg(shared, rg)?;
    }
    let skip: usize = ctx
        .req
        .q("$skipToken")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let page = shared.config.page_size.max(1);
    let (items, total) = {
        let state = lock(&shared.state);
        let ids = identity_ids(&state);
        let all: Vec<&GroupEntry> = state
            .groups
            .values()
            .filter(|g| rg.is_none_or(|rg| g.resource_group.eq_ignore_ascii_case(rg)))
            .collect();
        let total = all.len();
        let items: Vec<ContainerGroup> = all
            .into_iter()
            .skip(skip)
            .take(page)
            .map(|g| {
                let mut cg = render(g, false);
                fill_identities(&mut cg, &ids);
                cg
            })
            .collect();
        (items, total)
    };
    let next_link = (skip + page < total).then(|| {
        format!(
            "{}{}?api-version={}&$skipToken={}",
            shared.base_url,
            ctx.req.path,
            ctx.api_version,
            skip + page
        )
    });
    Ok(json(
        StatusCode::OK,
        &ListResult {
            value: items,
            next_link,
        },
    ))
}

fn logs(
    shared: &SharedRef,
    ctx: &ArmCtx,
    rg: &str,
    name: &str,
    container: &str,
) -> Result<Response, ArmError> {
    require_rg(shared, rg)?;
    let key = group_key(shared, rg, name);
    let tail = match ctx.req.q("tail") {
        None => None,
        Some(t) => Some(t.parse::<usize>().map_err(|_| {
            ArmError::bad_request(
                "InvalidParameter",
                format!("The value '{t}' of parameter 'tail' is not a valid non-negative integer."),
            )
        })?),
    };
    let timestamps = ctx
        .req
        .q("timestamps")
        .is_some_and(|t| t.eq_ignore_ascii_case("true"));
    let buffer = {
        let state = lock(&shared.state);
        let g = state
            .groups
            .get(&key)
            .ok_or_else(|| ArmError::resource_not_found(TYPE, name, rg))?;
        let c =
            g.containers
                .iter()
                .find(|c| c.name == container)
                .ok_or_else(|| {
                    ArmError::new(
                StatusCode::NOT_FOUND,
                "ContainerNotFound",
                format!("The container '{container}' cannot be found in container group '{name}'."),
            )
                })?;
        c.logs.clone()
    };
    let content = lock(&buffer).render(tail, timestamps);
    Ok(json(StatusCode::OK, &Logs { content }))
}

fn operation(shared: &SharedRef, location: &str, id: &str) -> Result<Response, ArmError> {
    let state = lock(&shared.state);
    let op = state.operations.get(id).ok_or_else(|| {
        ArmError::new(
            StatusCode::NOT_FOUND,
            "OperationNotFound",
            format!("The operation '{id}' in location '{location}' could not be found."),
        )
    })?;
    let body = AsyncOperationStatus {
        id: Some(op.resource_id.clone()),
        name: Some(id.to_string()),
        status: op.status.clone(),
        start_time: Some(op.start_time.clone()),
        end_time: op.end_time.clone(),
        error: op.error.clone(),
        properties: Some(serde_json::json!({"events": []})),
    };
    Ok(json(StatusCode::OK, &body))
}
