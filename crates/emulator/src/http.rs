//! The HTTP front: one axum fallback handler that dispatches by path, and the ARM pipeline.
//!
//! Routing is done by hand rather than with axum's router because ARM paths are matched
//! case-insensitively and share a common front (auth, throttling, api-version, faults) that
//! must run in ARM's order:
//!
//! 1. correlation ids: `x-ms-request-id` (new) and `x-ms-correlation-request-id` (echoed or
//!    new) on every response, whatever the outcome;
//! 2. authentication (401 `AuthenticationFailed` / `InvalidAuthenticationToken` /
//!    `ExpiredAuthenticationToken`);
//! 3. injected latency, then throttling (429 `TooManyRequests` + `Retry-After`);
//! 4. `api-version` presence and support (400 `MissingApiVersionParameter`,
//!    `InvalidApiVersionParameter`, `NoRegisteredProviderFound`);
//! 5. injected random 5xx;
//! 6. the subscription, then the resource handler.
//!
//! Non-ARM paths: `/{tenant}/oauth2/v2.0/token` and
//! `/{tenant}/v2.0/.well-known/openid-configuration` (AAD), `/metadata/identity/oauth2/token`
//! and `/_imds/{key}/metadata/identity/oauth2/token` (IMDS), `/_emulator/...` (admin).

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde::Serialize;

use crate::error::ArmError;
use crate::path::{looks_like_api_version, parse_arm, segments, Api, GroupAction, Route};
use crate::state::{lock, SharedRef};
use crate::throttle::{Kind, Take};
use crate::{aci, admin, auth, authz, deployments, registry, resources};

/// Largest request body accepted (ARM's own limit is 4 MB for most providers).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// A buffered request.
pub(crate) struct Req {
    /// HTTP method.
    pub method: Method,
    /// Raw path.
    pub path: String,
    /// Decoded query pairs.
    pub query: Vec<(String, String)>,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl Req {
    /// The first query parameter named `name` (case-insensitive, like ARM).
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The context of an authenticated, versioned ARM request.
pub(crate) struct ArmCtx {
    /// The request.
    pub req: Req,
    /// The validated `api-version`.
    pub api_version: String,
    /// Object id of the caller (or `anonymous` without auth); kept for authorization checks.
    #[allow(dead_code)]
    pub principal: String,
    /// The RBAC action the request needs ([`Route::action`]), for authorization checks.
    #[allow(dead_code)]
    pub action: Option<String>,
}

/// Builds a JSON response.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// Builds an empty response.
pub(crate) fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

/// Builds a plain-text response.
pub(crate) fn text(status: StatusCode, body: &str) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Sets a header, ignoring values that are not valid header text.
pub(crate) fn set_header(r: &mut Response, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        r.headers_mut().insert(n, v);
    }
}

impl ArmError {
    /// Renders the ARM error envelope.
    pub(crate) fn into_response(self) -> Response {
        let mut r = json(
            self.status,
            &arm_models::ErrorResponse::new(self.code, self.message),
        );
        for (k, v) in &self.headers {
            set_header(&mut r, k, v);
        }
        r
    }
}

/// The axum router: everything goes through [`dispatch`].
pub(crate) fn router(shared: SharedRef) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(shared)
}

async fn dispatch(State(shared): State<SharedRef>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let request_id = uuid::Uuid::new_v4().to_string();
    let correlation = parts
        .headers
        .get("x-ms-correlation-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| request_id.clone());
    let query = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let (op, mut response) = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => {
            let req = Req {
                method: parts.method,
                path: parts.uri.path().to_string(),
                query,
                headers: parts.headers,
                body,
            };
            route(&shared, req).await
        }
        Err(_) => (
            "request.body".to_string(),
            ArmError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!("The request body is larger than the {MAX_BODY} bytes allowed."),
            )
            .into_response(),
        ),
    };
    shared.record(&op, response.status().as_u16());
    // Paths and statuses only: bodies and query strings may carry secrets.
    tracing::debug!(%op, status = response.status().as_u16(), path = %path, %request_id, "request");
    set_header(&mut response, "x-ms-request-id", &request_id);
    set_header(&mut response, "x-ms-correlation-request-id", &correlation);
    response
}

async fn route(shared: &SharedRef, req: Req) -> (String, Response) {
    let segs = segments(&req.path);
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    match l.as_slice() {
        ["_emulator", ..] => admin::handle(shared, req, &segs[1..]).await,
        [_, "oauth2", "v2.0", "token"] => {
            let tenant = segs[0].clone();
            (
                "aad.token".to_string(),
                auth::aad_token(shared, &req, &tenant),
            )
        }
        [_, "v2.0", ".well-known", "openid-configuration"] => {
            let tenant = segs[0].clone();
            (
                "aad.openidConfiguration".to_string(),
                auth::openid_configuration(shared, &tenant),
            )
        }
        ["metadata", "identity", "oauth2", "token"] => (
            "imds.token".to_string(),
            auth::imds_token(shared, &req, None),
        ),
        ["_imds", _, "metadata", "identity", "oauth2", "token"] => (
            "imds.token".to_string(),
            auth::imds_token(shared, &req, Some(&segs[1])),
        ),
        ["subscriptions", ..] => arm(shared, req, &segs).await,
        _ => (
            "unknown".to_string(),
            ArmError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("No route for '{}'.", req.path),
            )
            .into_response(),
        ),
    }
}

/// The stats name of an ARM operation.
fn operation_name(route: &Route, method: &Method) -> String {
    let verb = |get: &str, put: &str, delete: &str| -> String {
        match *method {
            Method::GET => get.to_string(),
            Method::HEAD => "head".to_string(),
            Method::PUT => put.to_string(),
            Method::DELETE => delete.to_string(),
            Method::PATCH => "update".to_string(),
            ref m => m.as_str().to_ascii_lowercase(),
        }
    };
    match route {
        Route::Subscription => "subscriptions.get".into(),
        Route::ResourceGroups => "resourceGroups.list".into(),
        Route::ResourceGroup { .. } => {
            format!("resourceGroups.{}", verb("get", "createOrUpdate", "delete"))
        }
        Route::Providers => "providers.list".into(),
        Route::Provider { .. } => "providers.get".into(),
        Route::ProviderRegister { .. } => "providers.register".into(),
        Route::ContainerGroupsInSubscription => "containerGroups.list".into(),
        Route::ContainerGroupsInGroup { .. } => "containerGroups.listByResourceGroup".into(),
        Route::ContainerGroup { .. } => format!(
            "containerGroups.{}",
            verb("get", "createOrUpdate", "delete")
        ),
        Route::ContainerGroupAction { action, .. } => match action {
            GroupAction::Start => "containerGroups.start".into(),
            GroupAction::Stop => "containerGroups.stop".into(),
            GroupAction::Restart => "containerGroups.restart".into(),
        },
        Route::ContainerLogs { .. } => "containers.listLogs".into(),
        Route::AciOperation { .. } => "operations.get".into(),
        Route::AciUsages { .. } => "usages.list".into(),
        Route::IdentitiesInGroup { .. } => "userAssignedIdentities.listByResourceGroup".into(),
        Route::Identity { .. } => format!(
            "userAssignedIdentities.{}",
            verb("get", "createOrUpdate", "delete")
        ),
        Route::Deployments { .. } => "deployments.listByResourceGroup".into(),
        Route::Deployment { .. } => {
            format!("deployments.{}", verb("get", "createOrUpdate", "delete"))
        }
        Route::DeploymentOperationStatus { .. } => "deployments.operationStatus".into(),
        Route::DeploymentOperations { .. } => "deploymentOperations.list".into(),
        Route::OperationResult { .. } => "operationResults.get".into(),
        Route::RoleDefinitions { .. } => "roleDefinitions.list".into(),
        Route::RoleDefinition { .. } => {
            format!(
                "roleDefinitions.{}",
                verb("get", "createOrUpdate", "delete")
            )
        }
        Route::RoleAssignments { .. } => "roleAssignments.list".into(),
        Route::RoleAssignment { .. } => {
            format!("roleAssignments.{}", verb("get", "create", "delete"))
        }
        Route::RegistriesInGroup { .. } => "registries.listByResourceGroup".into(),
        Route::Registry { .. } => format!("registries.{}", verb("get", "create", "delete")),
        Route::RegistryNameCheck => "registries.checkNameAvailability".into(),
        Route::RegistryOperation { .. } => "registries.operationStatus".into(),
        Route::Unknown { .. } => "unknown".into(),
    }
}

pub(crate) async fn arm(shared: &SharedRef, req: Req, segs: &[String]) -> (String, Response) {
    let sub = segs.get(1).cloned().unwrap_or_default();
    let route = if segs.len() >= 2 {
        parse_arm(&segs[2..])
    } else {
        Route::Unknown {
            namespace: None,
            resource_type: None,
        }
    };
    let op = operation_name(&route, &req.method);
    let kind = Kind::of(&req.method);
    let response = match arm_front(shared, req, &sub, route, kind, &op).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    (op, response)
}

async fn arm_front(
    shared: &SharedRef,
    req: Req,
    sub: &str,
    route: Route,
    kind: Kind,
    op: &str,
) -> Result<Response, ArmError> {
    // 2. Authentication.
    let principal = match auth::authenticate_arm(shared, &req) {
        Ok(p) => p,
        Err(e) if shared.config.require_auth => return Err(e),
        Err(_) => "anonymous".to_string(),
    };
    let faults = shared.faults();
    // 3. Latency, then throttling.
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let mut remaining = None;
    if let Some(limits) = faults.arm_throttling {
        match lock(&shared.throttle).take(&limits, &principal, kind, Instant::now()) {
            Take::Allowed { remaining: n } => remaining = Some(n),
            Take::Throttled { retry_after_secs } => {
                return Err(ArmError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    format!(
                        "Number of '{}' requests for subscription '{sub}' actor '{principal}' exceeded. \
                         Please try again after '{retry_after_secs}' seconds after additional tokens are available. \
                         Refer to https://aka.ms/arm-throttling",
                        kind.as_str()
                    ),
                )
                .with_header("Retry-After", retry_after_secs.to_string())
                .with_header(&format!("x-ms-ratelimit-remaining-subscription-{}", kind.as_str()), "0"));
            }
        }
    }
    let mut response = arm_versioned(shared, req, sub, route, &principal, &faults, op)
        .await
        .unwrap_or_else(ArmError::into_response);
    if let Some(n) = remaining {
        let k = kind.as_str();
        set_header(
            &mut response,
            &format!("x-ms-ratelimit-remaining-subscription-{k}"),
            &n.to_string(),
        );
        set_header(
            &mut response,
            &format!("x-ms-ratelimit-remaining-subscription-global-{k}"),
            &(n * 15).to_string(),
        );
    }
    Ok(response)
}

async fn arm_versioned(
    shared: &SharedRef,
    req: Req,
    sub: &str,
    route: Route,
    principal: &str,
    faults: &crate::config::Faults,
    op: &str,
) -> Result<Response, ArmError> {
    // 4. api-version.
    let Some(api_version) = req.q("api-version").map(str::to_string) else {
        return Err(ArmError::bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    match route.api() {
        Some(api) => check_api_version(shared, api, &api_version)?,
        None => {
            let (ns, ty) = match &route {
                Route::Unknown {
                    namespace,
                    resource_type,
                } => (namespace.clone(), resource_type.clone()),
                _ => (None, None),
            };
            return Err(match (ns, ty) {
                (Some(ns), Some(ty)) => ArmError::bad_request(
                    "InvalidResourceType",
                    format!("The resource type '{ty}' could not be found in the namespace '{ns}' for api version '{api_version}'."),
                ),
                _ => ArmError::new(StatusCode::NOT_FOUND, "NotFound", format!("No HTTP resource was found that matches the request URI '{}'.", req.path)),
            });
        }
    }
    // 5. Random 5xx.
    let targeted = faults.error_operations.is_empty()
        || faults
            .error_operations
            .iter()
            .any(|p| crate::config::glob_match(p, op));
    if targeted && faults.error_rate > 0.0 && fastrand::f64() < faults.error_rate {
        return Err(if fastrand::bool() {
            ArmError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "Encountered internal server error. Diagnostic information: timestamp '', subscription id '', tracking id '', request correlation id ''.",
            )
        } else {
            ArmError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The server is currently unable to handle the request. Please retry.",
            )
            .with_header("Retry-After", "1")
        });
    }
    // 6. Subscription, then the handler.
    if !sub.eq_ignore_ascii_case(&shared.config.subscription_id) {
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("The subscription '{sub}' could not be found."),
        ));
    }
    let action = route.action(&req.method);
    // 7. Azure RBAC (when enforced): the caller's role assignments must grant the action
    //    over the request's scope, and any identity the body links to must be assignable.
    if shared.config.rbac && !route.is_operation_status() {
        crate::authz::authorize(shared, principal, &req)?;
    }
    tracing::trace!(
        principal,
        action = action.as_deref().unwrap_or(""),
        "authorizing"
    );
    let ctx = ArmCtx {
        req,
        api_version,
        principal: principal.to_string(),
        action,
    };
    // Resource providers must be registered before their resources can be used.
    if let Some(api) = route.api().filter(|a| *a != Api::Resources) {
        let ns = api.namespace();
        if !lock(&shared.state)
            .registered
            .contains(&ns.to_ascii_lowercase())
        {
            return Err(ArmError::new(
                StatusCode::CONFLICT,
                "MissingSubscriptionRegistration",
                format!("The subscription is not registered to use namespace '{ns}'. See https://aka.ms/rps-not-found for how to register subscriptions."),
            ));
        }
    }
    match route {
        Route::ContainerGroupsInSubscription
        | Route::AciUsages { .. }
        | Route::ContainerGroupsInGroup { .. }
        | Route::ContainerGroup { .. }
        | Route::ContainerGroupAction { .. }
        | Route::ContainerLogs { .. }
        | Route::AciOperation { .. } => aci::handle(shared, &ctx, route).await,
        Route::Deployments { .. }
        | Route::Deployment { .. }
        | Route::DeploymentOperationStatus { .. }
        | Route::DeploymentOperations { .. }
        | Route::OperationResult { .. } => deployments::handle(shared, &ctx, route).await,
        Route::RoleDefinitions { .. }
        | Route::RoleDefinition { .. }
        | Route::RoleAssignments { .. }
        | Route::RoleAssignment { .. } => authz::handle(shared, &ctx, route),
        Route::RegistriesInGroup { .. }
        | Route::Registry { .. }
        | Route::RegistryNameCheck
        | Route::RegistryOperation { .. } => registry::handle(shared, &ctx, route),
        _ => resources::handle(shared, &ctx, route).await,
    }
}

fn check_api_version(shared: &SharedRef, api: Api, v: &str) -> Result<(), ArmError> {
    let supported = api.versions();
    if supported.contains(&v) {
        return Ok(());
    }
    let list = supported.join(", ");
    if !looks_like_api_version(v) {
        return Err(ArmError::bad_request(
            "InvalidApiVersionParameter",
            format!("The api-version '{v}' is invalid. The supported versions are '{list}'."),
        ));
    }
    let ns = api.namespace();
    Err(ArmError::bad_request(
        "NoRegisteredProviderFound",
        format!(
            "No registered resource provider found for location '{}' and API version '{v}' for type '{}' in namespace '{ns}'. \
             The supported api-versions are '{list}'. The supported locations are '{}'.",
            shared.config.locations.first().map(String::as_str).unwrap_or(""),
            api.type_name(),
            shared.config.locations.join(", ")
        ),
    ))
}
