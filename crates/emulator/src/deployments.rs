//! `Microsoft.Resources/deployments`: ARM template deployments at resource group scope.
//!
//! A deployment PUT is validated up front, as ARM's pre-flight does: the template is evaluated
//! with [`crate::arm_template::evaluate`] and every resource type must be one this emulator
//! implements; anything else is a 400 `InvalidTemplate` naming what is unsupported, so nothing
//! is half-applied. The PUT then answers 201 with `provisioningState: Accepted` and an
//! `Azure-AsyncOperation` URL (`…/deployments/{name}/operationStatuses/{id}`), and a background
//! task deploys the resources in dependency order.
//!
//! **Architecture Invariant:** each resource is created by sending its PUT through the same
//! ARM front door a client's direct PUT takes (authentication with the deployment caller's own
//! token, RBAC, api-version checks, validation, quotas), so a template can do exactly what the
//! caller could do by hand. Asynchronous resources (container groups, registries) are awaited
//! until their `provisioningState` is terminal. The first failure fails the deployment with
//! `DeploymentFailed` and the resource's error in `details`.
//!
//! Deleting a deployment removes only the record, never the resources it created.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{json as j, Map, Value};

use crate::arm_template::{self, DeploymentContext, EvaluatedResource};
use crate::error::ArmError;
use crate::http::{empty, json, set_header, ArmCtx, Req};
use crate::path::Route;
use crate::state::{lock, now_rfc3339, set_op, DeploymentEntry, SharedRef};

const TYPE: &str = "Microsoft.Resources/deployments";

/// Resource types a template may contain (compared case-insensitively).
const SUPPORTED_TYPES: &[&str] = &[
    "Microsoft.ContainerInstance/containerGroups",
    "Microsoft.ManagedIdentity/userAssignedIdentities",
    "Microsoft.ContainerRegistry/registries",
    "Microsoft.Authorization/roleDefinitions",
    "Microsoft.Authorization/roleAssignments",
];

/// How long a deployment waits for one asynchronous resource to reach a terminal state.
const RESOURCE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

fn method_not_allowed(m: &Method) -> ArmError {
    ArmError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("The requested resource does not support http method '{m}'."),
    )
}

fn key(shared: &SharedRef, rg: &str, name: &str) -> String {
    format!(
        "{}/resourcegroups/{rg}/providers/{TYPE}/{name}",
        shared.sub_id()
    )
    .to_ascii_lowercase()
}

fn not_found(name: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "DeploymentNotFound",
        format!("Deployment '{name}' could not be found."),
    )
}

/// Dispatches a deployment route.
pub(crate) async fn handle(
    shared: &SharedRef,
    ctx: &ArmCtx,
    route: Route,
) -> Result<Response, ArmError> {
    let m = &ctx.req.method;
    match route {
        Route::Deployments { rg } if *m == Method::GET => {
            require_rg(shared, &rg)?;
            let state = lock(&shared.state);
            let value: Vec<Value> = state
                .deployments
                .values()
                .filter(|d| d.resource_group.eq_ignore_ascii_case(&rg))
                .map(render)
                .collect();
            Ok(json(StatusCode::OK, &j!({ "value": value })))
        }
        Route::Deployment { rg, name } => match *m {
            Method::PUT => put(shared, ctx, &rg, &name),
            Method::GET => {
                require_rg(shared, &rg)?;
                let state = lock(&shared.state);
                let d = state
                    .deployments
                    .get(&key(shared, &rg, &name))
                    .ok_or_else(|| not_found(&name))?;
                Ok(json(StatusCode::OK, &render(d)))
            }
            Method::HEAD => {
                let exists = lock(&shared.state)
                    .deployments
                    .contains_key(&key(shared, &rg, &name));
                Ok(empty(if exists {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::NOT_FOUND
                }))
            }
            Method::DELETE => delete(shared, ctx, &rg, &name),
            _ => Err(method_not_allowed(m)),
        },
        Route::DeploymentOperationStatus { name, id, .. } if *m == Method::GET => {
            let state = lock(&shared.state);
            let op = state.operations.get(&id).ok_or_else(|| not_found(&name))?;
            let mut body = j!({"status": op.status});
            if let Some(e) = &op.error {
                body["error"] = serde_json::to_value(e).unwrap_or(Value::Null);
            }
            Ok(json(StatusCode::OK, &body))
        }
        Route::DeploymentOperations { rg, name } if *m == Method::GET => {
            require_rg(shared, &rg)?;
            let state = lock(&shared.state);
            let d = state
                .deployments
                .get(&key(shared, &rg, &name))
                .ok_or_else(|| not_found(&name))?;
            Ok(json(StatusCode::OK, &j!({ "value": d.operations })))
        }
        // Deletes finish before they are answered; their result URL only confirms that.
        Route::OperationResult { id } if *m == Method::GET => {
            let known = lock(&shared.state).operations.contains_key(&id);
            if known {
                Ok(empty(StatusCode::NO_CONTENT))
            } else {
                Err(ArmError::new(
                    StatusCode::NOT_FOUND,
                    "OperationNotFound",
                    format!("The operation '{id}' could not be found."),
                ))
            }
        }
        _ => Err(method_not_allowed(m)),
    }
}

fn require_rg(shared: &SharedRef, rg: &str) -> Result<String, ArmError> {
    lock(&shared.state)
        .resource_groups
        .get(&rg.to_ascii_lowercase())
        .map(|e| e.location.clone())
        .ok_or_else(|| ArmError::resource_group_not_found(rg))
}

fn render(d: &DeploymentEntry) -> Value {
    let mut props = j!({
        "provisioningState": d.provisioning_state,
        "mode": d.mode,
        "timestamp": d.timestamp,
        "correlationId": d.correlation_id,
        "parameters": d.parameters,
        "outputs": d.outputs,
        "outputResources": d.output_resources.iter().map(|id| j!({"id": id})).collect::<Vec<_>>(),
        "dependencies": [],
    });
    if let Some(e) = &d.error {
        props["error"] = e.clone();
    }
    j!({"id": d.id, "name": d.name, "type": TYPE, "properties": props})
}

/// A 400 `InvalidTemplate` with ARM's `error` object.
fn invalid_template(message: String) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        &j!({"error": {"code": "InvalidTemplate", "message": message}}),
    )
}

/// The ARM path a template resource is PUT to: its id, or for extension resources with a
/// `scope` property, `{scope}/providers/{type}/{name}`.
fn resource_path(r: &EvaluatedResource, rg_id: &str) -> String {
    match r.body.get("scope").and_then(Value::as_str) {
        Some(scope) if scope.starts_with('/') => {
            format!(
                "{}/providers/{}/{}",
                scope.trim_end_matches('/'),
                r.type_,
                r.name
            )
        }
        Some(scope) if !scope.is_empty() => {
            format!("{rg_id}/providers/{scope}/providers/{}/{}", r.type_, r.name)
        }
        _ => r.id.clone(),
    }
}

fn put(shared: &SharedRef, ctx: &ArmCtx, rg: &str, name: &str) -> Result<Response, ArmError> {
    let location = require_rg(shared, rg)?;
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'));
    if !valid_name {
        return Err(ArmError::bad_request(
            "InvalidDeploymentName",
            format!("The deployment name '{name}' is invalid. It must be 1-64 characters of letters, digits, '-', '_', '.', '(' and ')'."),
        ));
    }
    let body: Value = serde_json::from_slice(&ctx.req.body).map_err(|e| {
        ArmError::bad_request(
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{e}'."),
        )
    })?;
    let props = body.get("properties").cloned().unwrap_or(Value::Null);
    let mode = props
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !mode.eq_ignore_ascii_case("Incremental") {
        return Ok(invalid_template(format!(
            "Deployment mode '{mode}' is not supported by the emulator: use properties.mode 'Incremental' (Complete mode would delete resources that are not in the template)."
        )));
    }
    if props.get("templateLink").is_some() || props.get("parametersLink").is_some() {
        return Ok(invalid_template(
            "templateLink and parametersLink are not supported by the emulator (it cannot fetch URLs): send the template inline in properties.template and the values in properties.parameters.".into(),
        ));
    }
    let Some(template) = props.get("template") else {
        return Ok(invalid_template(
            "The request content has no properties.template.".into(),
        ));
    };
    let dctx = DeploymentContext {
        subscription_id: shared.config.subscription_id.clone(),
        tenant_id: shared.config.tenant_id.clone(),
        resource_group: rg.to_string(),
        location,
        deployment_name: name.to_string(),
    };
    let parameters = props.get("parameters").cloned().unwrap_or(Value::Null);
    let evaluated = match arm_template::evaluate(template, &parameters, &dctx) {
        Ok(t) => t,
        Err(e) => {
            return Ok(json(
                StatusCode::BAD_REQUEST,
                &j!({ "error": e.to_arm_error() }),
            ))
        }
    };
    for (i, r) in evaluated.resources.iter().enumerate() {
        if !SUPPORTED_TYPES
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&r.type_))
        {
            return Ok(invalid_template(format!(
                "Deployment template validation failed: 'The resource type '{}' of resource '{}' (resources[{i}]) is not supported by the emulator. Supported types: {}.'.",
                r.type_,
                r.name,
                SUPPORTED_TYPES.join(", ")
            )));
        }
    }
    let k = key(shared, rg, name);
    let id = format!(
        "{}/resourceGroups/{rg}/providers/{TYPE}/{name}",
        shared.sub_id()
    );
    let (op_id, exists) = {
        let mut state = lock(&shared.state);
        let existing = state.deployments.get(&k);
        if existing.is_some_and(|d| matches!(d.provisioning_state.as_str(), "Accepted" | "Running"))
        {
            return Err(ArmError::new(
                StatusCode::CONFLICT,
                "DeploymentActive",
                format!("The deployment '{name}' is still active. Wait for it to finish before deploying again under that name."),
            ));
        }
        let exists = existing.is_some();
        let op_id = shared.new_operation(&mut state, &id);
        state.deployments.insert(
            k.clone(),
            DeploymentEntry {
                id: id.clone(),
                name: name.to_string(),
                resource_group: rg.to_string(),
                provisioning_state: "Accepted".into(),
                mode: "Incremental".into(),
                parameters: evaluated.parameters.clone(),
                outputs: Map::new(),
                output_resources: Vec::new(),
                error: None,
                timestamp: now_rfc3339(),
                correlation_id: ctx
                    .req
                    .header("x-ms-correlation-request-id")
                    .unwrap_or("")
                    .to_string(),
                op_id: op_id.clone(),
                operations: Vec::new(),
            },
        );
        (op_id, exists)
    };
    // The deployment engine acts as the caller: it forwards the caller's own credentials.
    let mut headers = HeaderMap::new();
    if let Some(a) = ctx.req.headers.get("authorization") {
        headers.insert("authorization", a.clone());
    }
    let job = Job {
        shared: shared.clone(),
        key: k.clone(),
        op_id: op_id.clone(),
        headers,
        rg_id: dctx.resource_group_id(),
        resources: evaluated.resources,
        outputs: evaluated.outputs,
    };
    shared.tasks.spawn(job.run());
    let body = render(
        lock(&shared.state)
            .deployments
            .get(&k)
            .ok_or_else(|| not_found(name))?,
    );
    let mut r = json(
        if exists {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        &body,
    );
    set_header(
        &mut r,
        "Azure-AsyncOperation",
        &format!(
            "{}{id}/operationStatuses/{op_id}?api-version={}",
            shared.base_url, ctx.api_version
        ),
    );
    Ok(r)
}

/// One deployment's background work.
struct Job {
    shared: SharedRef,
    key: String,
    op_id: String,
    headers: HeaderMap,
    rg_id: String,
    resources: Vec<EvaluatedResource>,
    outputs: Map<String, Value>,
}

/// Sends a request through the ARM front door. Boxed: the front door leads back here.
fn internal(shared: SharedRef, req: Req) -> Pin<Box<dyn Future<Output = Response> + Send>> {
    Box::pin(async move {
        let segs = crate::path::segments(&req.path);
        crate::http::arm(&shared, req, &segs).await.1
    })
}

async fn read_json(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

impl Job {
    fn request(&self, method: Method, path: &str, api_version: &str, body: Bytes) -> Req {
        let mut headers = self.headers.clone();
        headers.insert(
            "content-type",
            axum::http::HeaderValue::from_static("application/json"),
        );
        Req {
            method,
            path: path.to_string(),
            query: vec![("api-version".into(), api_version.to_string())],
            headers,
            body,
        }
    }

    fn update(&self, f: impl FnOnce(&mut DeploymentEntry)) {
        let mut state = lock(&self.shared.state);
        if let Some(d) = state.deployments.get_mut(&self.key) {
            if d.op_id == self.op_id {
                f(d);
                d.timestamp = now_rfc3339();
            }
        }
    }

    async fn run(self) {
        set_op(&mut lock(&self.shared.state), &self.op_id, "Running", None);
        self.update(|d| d.provisioning_state = "Running".into());
        let mut created = Vec::new();
        let mut failure = None;
        for r in &self.resources {
            let outcome = self.deploy_one(r).await;
            self.record_operation(r, &outcome);
            match outcome {
                Ok(id) => created.push(id),
                Err(detail) => {
                    failure = Some(detail);
                    break;
                }
            }
        }
        let outputs = self.outputs.clone();
        match failure {
            None => {
                self.update(|d| {
                    d.provisioning_state = "Succeeded".into();
                    d.outputs = outputs;
                    d.output_resources = created;
                });
                set_op(
                    &mut lock(&self.shared.state),
                    &self.op_id,
                    "Succeeded",
                    None,
                );
            }
            Some(detail) => {
                let error = j!({
                    "code": "DeploymentFailed",
                    "message": "At least one resource deployment operation failed. Please list deployment operations for details. Please see https://aka.ms/arm-deployment-operations for usage details.",
                    "details": [detail],
                });
                let detail_model: arm_models::ErrorDetail = serde_json::from_value(error.clone())
                    .unwrap_or_else(|_| {
                        arm_models::ErrorDetail::new("DeploymentFailed", "deployment failed")
                    });
                self.update(|d| {
                    d.provisioning_state = "Failed".into();
                    d.error = Some(error);
                    d.output_resources = created;
                });
                set_op(
                    &mut lock(&self.shared.state),
                    &self.op_id,
                    "Failed",
                    Some(detail_model),
                );
            }
        }
    }

    /// Appends the deployment operation of one resource (what `…/operations` lists).
    fn record_operation(&self, r: &EvaluatedResource, outcome: &Result<String, Value>) {
        let operation_id = uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .to_ascii_uppercase();
        let (state, status_code, message) = match outcome {
            Ok(_) => ("Succeeded", "OK", Value::Null),
            Err(e) => ("Failed", "BadRequest", j!({ "error": e })),
        };
        let target = match outcome {
            Ok(id) => id.clone(),
            Err(_) => resource_path(r, &self.rg_id),
        };
        self.update(|d| {
            let mut props = j!({
                "provisioningOperation": "Create",
                "provisioningState": state,
                "timestamp": now_rfc3339(),
                "statusCode": status_code,
                "targetResource": {"id": target, "resourceType": r.type_, "resourceName": r.name},
            });
            if !message.is_null() {
                props["statusMessage"] = message.clone();
            }
            d.operations.push(j!({
                "id": format!("{}/operations/{operation_id}", d.id),
                "operationId": operation_id,
                "properties": props,
            }));
        });
    }

    /// PUTs one resource and waits for a terminal state; `Err` holds the error detail.
    async fn deploy_one(&self, r: &EvaluatedResource) -> Result<String, Value> {
        let path = resource_path(r, &self.rg_id);
        let mut body = r.body.clone();
        if let Some(o) = body.as_object_mut() {
            for k in ["apiVersion", "scope", "dependsOn", "comments"] {
                o.remove(k);
            }
        }
        let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let req = self.request(Method::PUT, &path, &r.api_version, bytes);
        let (status, answer) = read_json(internal(self.shared.clone(), req).await).await;
        if !status.is_success() {
            let mut detail = answer.get("error").cloned().unwrap_or_else(|| {
                j!({"code": "ResourceDeploymentFailure", "message": format!("The resource operation returned status {}.", status.as_u16())})
            });
            detail["target"] = j!(path);
            return Err(detail);
        }
        let mut state_now = answer
            .pointer("/properties/provisioningState")
            .and_then(Value::as_str)
            .map(str::to_string);
        let deadline = Instant::now() + RESOURCE_TIMEOUT;
        while let Some(s) = state_now.as_deref() {
            if matches!(s, "Succeeded" | "Failed" | "Canceled") {
                break;
            }
            if Instant::now() > deadline || self.shared.shutdown.is_cancelled() {
                return Err(
                    j!({"code": "ResourceDeploymentFailure", "target": path, "message": format!("The resource operation did not finish in time (last provisioningState '{s}').")}),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let req = self.request(Method::GET, &path, &r.api_version, Bytes::new());
            let (status, answer) = read_json(internal(self.shared.clone(), req).await).await;
            if !status.is_success() {
                let detail = answer.get("error").cloned().unwrap_or(Value::Null);
                return Err(
                    j!({"code": "ResourceDeploymentFailure", "target": path, "message": format!("The resource disappeared while being provisioned: {detail}")}),
                );
            }
            state_now = answer
                .pointer("/properties/provisioningState")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        match state_now.as_deref() {
            Some("Failed") | Some("Canceled") => Err(j!({
                "code": "ResourceDeploymentFailure",
                "target": path,
                "message": format!("The resource write operation failed to complete successfully, because it reached terminal provisioning state '{}'.", state_now.as_deref().unwrap_or("")),
            })),
            _ => Ok(answer
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or(path)),
        }
    }
}

fn delete(shared: &SharedRef, ctx: &ArmCtx, rg: &str, name: &str) -> Result<Response, ArmError> {
    require_rg(shared, rg)?;
    let k = key(shared, rg, name);
    let mut state = lock(&shared.state);
    let Some(d) = state.deployments.get(&k) else {
        return Ok(empty(StatusCode::NO_CONTENT));
    };
    if matches!(d.provisioning_state.as_str(), "Accepted" | "Running") {
        return Err(ArmError::new(
            StatusCode::CONFLICT,
            "DeploymentActive",
            format!("The deployment '{name}' is still running and cannot be deleted. Wait for it to finish or cancel it first."),
        ));
    }
    let id = d.id.clone();
    // Only the record goes; the resources it created stay.
    state.deployments.remove(&k);
    let op_id = shared.new_operation(&mut state, &id);
    set_op(&mut state, &op_id, "Succeeded", None);
    drop(state);
    let mut r = empty(StatusCode::ACCEPTED);
    set_header(
        &mut r,
        "Location",
        &format!(
            "{}{}/operationresults/{op_id}?api-version={}",
            shared.base_url,
            shared.sub_id(),
            ctx.api_version
        ),
    );
    set_header(&mut r, "Retry-After", "1");
    Ok(r)
}
