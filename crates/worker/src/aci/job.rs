//! From a rendered job configuration to a validated ACI job.
//!
//! Every check runs before any ARM call, so a bad value crashes only its own flow run with a
//! message that names the job variable, says what was wrong and how to fix it. The rules follow
//! ACI's own validation (names, environment variable names, cpu/memory bounds) so users see
//! our message instead of an ARM error after a round trip — and GPU variables, which
//! prefect-azure silently ignored, are refused because ACI retired GPU containers.

use std::collections::BTreeMap;
use std::time::Duration;

use arm_models::container_group::{
    Container, ContainerGroup, ContainerGroupIdentity, ContainerGroupProperties,
    ContainerProperties, EnvironmentVariable, ImageRegistryCredential, ResourceRequests,
    ResourceRequirements, SubnetId, UserAssignedIdentityRef,
};
use azure_arm::{ExplicitClientSecret, Secret};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::infrastructure::{InfraError, JobContext};

/// The container group api-version we call (stable, identity-based registry credentials).
pub const ACI_API_VERSION: &str = "2025-09-01";

/// A validated flow-run job for ACI.
#[derive(Debug, Clone)]
pub struct AciSpec {
    pub flow_run_id: Uuid,
    pub subscription_id: String,
    pub resource_group: String,
    pub group_name: String,
    pub container_name: String,
    /// The PUT body, without `location` (resolved at launch).
    pub body: ContainerGroup,
    pub fallback_locations: Vec<String>,
    /// `None` waits forever (a `task_start_timeout_seconds` of 0, as in prefect-azure).
    pub start_timeout: Option<Duration>,
    pub poll_interval: Duration,
    pub stream_output: bool,
    pub keep_container_group: bool,
    pub max_run: Option<Duration>,
    pub cancel_grace: Duration,
    pub credentials: ExplicitClientSecret,
    /// A custom `arm_template` (different from the default): deployed through ARM.
    pub custom_template: Option<Value>,
}

impl AciSpec {
    /// The ARM deployment used for a custom `arm_template` (prefect-azure's name).
    pub fn deployment_path(&self) -> String {
        let mut name = format!("prefect-{}", self.group_name);
        name.truncate(64);
        format!(
            "/subscriptions/{}/resourcegroups/{}/providers/Microsoft.Resources/deployments/{}",
            self.subscription_id, self.resource_group, name
        )
    }

    /// A custom template with this job's container settings applied, as prefect-azure does:
    /// environment, command and image of the first container, identities, registry
    /// credentials, subnets and DNS of the first resource, plus our tags.
    pub fn patched_template(&self) -> Option<Value> {
        let mut t = self.custom_template.clone()?;
        let ours = serde_json::to_value(&self.body).ok()?;
        let res = t.pointer_mut("/resources/0")?;
        if let Some(identity) = ours.get("identity") {
            res["identity"] = identity.clone();
        }
        if let Some(tags) = ours.get("tags") {
            res["tags"] = tags.clone();
        }
        for key in ["imageRegistryCredentials", "subnetIds", "dnsConfig"] {
            if let Some(v) = ours["properties"].get(key) {
                res["properties"][key] = v.clone();
            }
        }
        let container = &ours["properties"]["containers"][0]["properties"];
        let target = res.pointer_mut("/properties/containers/0/properties")?;
        for key in ["environmentVariables", "command", "image"] {
            match container.get(key) {
                Some(v) => target[key] = v.clone(),
                None => {
                    if let Some(o) = target.as_object_mut() {
                        o.remove(key);
                    }
                }
            }
        }
        Some(t)
    }

    /// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups/{name}`.
    pub fn group_path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerInstance/containerGroups/{}",
            self.subscription_id, self.resource_group, self.group_name
        )
    }
    /// The flow run's `infrastructure_pid`, as prefect-azure formats it.
    pub fn identifier(&self) -> String {
        format!("{}:{}", self.flow_run_id, self.group_name)
    }
}

/// Tag names the worker puts on container groups (Azure tag names may not hold `/` or `:`).
pub mod tags {
    pub const MANAGED_BY: &str = "managed-by";
    pub const MANAGED_BY_VALUE: &str = "prefect-aci";
    pub const FLOW_RUN_ID: &str = "prefect.flow-run-id";
    pub const FLOW_ID: &str = "prefect.flow-id";
    pub const DEPLOYMENT_ID: &str = "prefect.deployment-id";
    pub const WORK_POOL: &str = "prefect.work-pool";
    pub const WORKER: &str = "prefect.worker";
}

/// The container group name prefect-azure uses: the flow name slugified to at most
/// 55 − 36 = 19 characters, a dash, and the flow run id. An empty slug becomes `flow`
/// (prefect-azure would produce an invalid leading dash).
pub fn container_group_name(flow_name: &str, flow_run_id: Uuid) -> String {
    let mut slug = String::new();
    let mut dash = false;
    for c in flow_name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() || c == '-' {
            if c == '-' {
                if !dash && !slug.is_empty() {
                    slug.push('-');
                }
                dash = true;
            } else {
                slug.push(c);
                dash = false;
            }
        } else if !dash && !slug.is_empty() {
            slug.push('-');
            dash = true;
        }
    }
    let mut slug: String = slug.trim_matches('-').chars().take(19).collect();
    while slug.ends_with('-') {
        slug.pop();
    }
    if slug.is_empty() {
        slug = "flow".into();
    }
    format!("{slug}-{flow_run_id}")
}

/// Whether a variable's value must be sent as a `secureValue`.
pub fn is_secret_name(name: &str, extra: &[String]) -> bool {
    let upper = name.to_ascii_uppercase();
    matches!(
        upper.as_str(),
        "PREFECT_API_KEY" | "PREFECT_API_AUTH_STRING"
    ) || [
        "KEY",
        "SECRET",
        "TOKEN",
        "PASSWORD",
        "AUTH_STRING",
        "CREDENTIAL",
    ]
    .iter()
    .any(|w| upper.contains(w))
        || extra.iter().any(|e| e.eq_ignore_ascii_case(name))
}

fn err(var: &str, what: impl std::fmt::Display) -> InfraError {
    InfraError::invalid(format!("invalid job variable '{var}': {what}"))
}

fn opt<'a>(c: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    c.get(key).filter(|v| !v.is_null())
}

fn string(c: &Map<String, Value>, key: &str) -> Result<Option<String>, InfraError> {
    match opt(c, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(err(key, format!("expected a string, got {other}"))),
    }
}

fn number(c: &Map<String, Value>, key: &str) -> Result<Option<f64>, InfraError> {
    match opt(c, key) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| err(key, format!("expected a number, got {s:?}"))),
        Some(other) => Err(err(key, format!("expected a number, got {other}"))),
    }
}

fn boolean(c: &Map<String, Value>, key: &str, default: bool) -> Result<bool, InfraError> {
    match opt(c, key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(err(key, format!("expected true or false, got {other}"))),
    }
}

fn strings(c: &Map<String, Value>, key: &str) -> Result<Vec<String>, InfraError> {
    match opt(c, key) {
        None => Ok(vec![]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(err(
                    key,
                    format!("expected a list of strings, found {other}"),
                )),
            })
            .collect(),
        Some(other) => Err(err(key, format!("expected a list of strings, got {other}"))),
    }
}

fn valid_env_name(name: &str) -> bool {
    // ACI accepts 1-63 characters of letters, digits and underscores, not starting with a digit.
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

fn valid_resource_group(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 90
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
}

fn is_identity_id(id: &str) -> bool {
    let l = id.to_ascii_lowercase();
    l.starts_with("/subscriptions/")
        && l.contains("/resourcegroups/")
        && l.contains("/providers/microsoft.managedidentity/userassignedidentities/")
        && !l.ends_with('/')
}

/// Validate `ctx.configuration` and build the container group.
pub fn build(
    ctx: &JobContext,
    default_image: &str,
    default_template: &Value,
) -> Result<AciSpec, InfraError> {
    let c = &ctx.configuration;

    let subscription_id = string(c, "subscription_id")?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err("subscription_id", "it is required; set it on the work pool or the deployment (the id in /subscriptions/<id>)"))?;
    if !subscription_id
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
    {
        return Err(err("subscription_id", format!("{subscription_id:?} is not a subscription id (letters, digits and dashes, e.g. a GUID)")));
    }
    let resource_group = string(c, "resource_group_name")?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            err(
                "resource_group_name",
                "it is required; set it on the work pool or the deployment",
            )
        })?;
    if !valid_resource_group(&resource_group) {
        return Err(err("resource_group_name", format!("{resource_group:?} is not a valid resource group name (1-90 letters, digits, '-', '_', '.', '(', ')'; not ending in '.')")));
    }

    if opt(c, "gpu_count").is_some_and(|v| v.as_i64() != Some(0)) || opt(c, "gpu_sku").is_some() {
        return Err(err("gpu_count", "Azure Container Instances retired GPU containers on 14 July 2025; remove gpu_count and gpu_sku (consider Azure Container Apps serverless GPUs)"));
    }

    let image = string(c, "image")?.unwrap_or_else(|| default_image.to_string());
    let image = image.trim().to_string();
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return Err(err(
            "image",
            format!(
                "{image:?} is not an image reference (e.g. myregistry.azurecr.io/flows:latest)"
            ),
        ));
    }

    let cpu = number(c, "cpu")?.unwrap_or(1.0);
    if !(cpu > 0.0 && cpu <= 31.0) {
        return Err(err("cpu", format!("{cpu} vCPU is outside ACI's range (more than 0, at most 31; above 4 capacity is rare)")));
    }
    let memory = number(c, "memory")?.unwrap_or(1.0);
    if !(memory > 0.0 && memory <= 240.0) {
        return Err(err(
            "memory",
            format!("{memory} GB is outside ACI's range (more than 0, at most 240)"),
        ));
    }
    if ((memory * 10.0).round() - memory * 10.0).abs() > 1e-9 {
        return Err(err(
            "memory",
            format!("{memory} GB must be a multiple of 0.1 GB"),
        ));
    }

    // Command: the entrypoint, then the shell-split command (prefect-azure's command_from_string).
    let command_str = string(c, "command")?.unwrap_or_default();
    let mut command = shlex::split(&command_str)
        .ok_or_else(|| err("command", format!("{command_str:?} has unbalanced quotes")))?;
    if let Some(ep) = string(c, "entrypoint")?.filter(|s| !s.trim().is_empty()) {
        command.insert(0, ep);
    }

    let secure_env = strings(c, "secure_env")?;
    let mut env_vars = Vec::new();
    match opt(c, "env") {
        None => {}
        Some(Value::Object(env)) => {
            for (name, value) in env {
                if !valid_env_name(name) {
                    return Err(err("env", format!("{name:?} is not a valid environment variable name for ACI (1-63 letters, digits or '_', not starting with a digit)")));
                }
                let value = match value {
                    Value::Null => continue,
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => {
                        if *b {
                            "True".into()
                        } else {
                            "False".into()
                        }
                    }
                    _ => {
                        return Err(err(
                            "env",
                            format!("the value of {name} must be a string, not a list or object"),
                        ))
                    }
                };
                let secure = is_secret_name(name, &secure_env);
                env_vars.push(EnvironmentVariable {
                    name: name.clone(),
                    value: (!secure).then(|| value.clone()),
                    secure_value: secure.then_some(value),
                    secure_value_reference: None,
                });
            }
        }
        Some(other) => {
            return Err(err(
                "env",
                format!("expected an object of NAME: value, got {other}"),
            ))
        }
    }

    let identities = strings(c, "identities")?;
    for id in &identities {
        if !is_identity_id(id) {
            return Err(err("identities", format!("{id:?} is not a user-assigned identity resource id (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>)")));
        }
    }

    let registry = match opt(c, "image_registry") {
        None => None,
        Some(Value::Object(r)) => {
            let url = r
                .get("registry_url")
                .and_then(Value::as_str)
                .map(str::trim)
                .unwrap_or("");
            let server = url
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            if server.is_empty() {
                return Err(err(
                    "image_registry",
                    "registry_url is required (e.g. myregistry.azurecr.io)",
                ));
            }
            if let Some(identity) = r.get("identity").and_then(Value::as_str) {
                if !is_identity_id(identity) {
                    return Err(err(
                        "image_registry",
                        format!(
                            "identity {identity:?} is not a user-assigned identity resource id"
                        ),
                    ));
                }
                if !identities.iter().any(|i| i.eq_ignore_ascii_case(identity)) {
                    return Err(err("image_registry", format!("the registry identity {identity:?} must also be listed in 'identities' (ACI pulls with identities attached to the group)")));
                }
                Some(ImageRegistryCredential {
                    server: server.into(),
                    identity: Some(identity.into()),
                    ..Default::default()
                })
            } else {
                let username = r.get("username").and_then(Value::as_str).unwrap_or("");
                let password = r.get("password").and_then(Value::as_str).unwrap_or("");
                if username.is_empty() || password.is_empty() {
                    return Err(err("image_registry", "set either identity (ACRManagedIdentity) or username and password (DockerRegistryCredentials)"));
                }
                Some(ImageRegistryCredential {
                    server: server.into(),
                    username: Some(username.into()),
                    password: Some(password.into()),
                    ..Default::default()
                })
            }
        }
        Some(other) => {
            return Err(err(
                "image_registry",
                format!(
                "expected an ACRManagedIdentity or DockerRegistryCredentials object, got {other}"
            ),
            ))
        }
    };

    let subnet_ids = strings(c, "subnet_ids")?;
    for id in &subnet_ids {
        let l = id.to_ascii_lowercase();
        if !(l.starts_with("/subscriptions/")
            && l.contains("/providers/microsoft.network/virtualnetworks/")
            && l.contains("/subnets/"))
        {
            return Err(err("subnet_ids", format!("{id:?} is not a subnet resource id (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Network/virtualNetworks/<vnet>/subnets/<subnet>)")));
        }
    }
    let dns_servers = strings(c, "dns_servers")?;
    for ip in &dns_servers {
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(err("dns_servers", format!("{ip:?} is not an IP address")));
        }
    }
    let fallback_locations = strings(c, "fallback_locations")?;

    let start_timeout = match number(c, "task_start_timeout_seconds")? {
        None => Some(Duration::from_secs(240)),
        Some(s) if s < 0.0 => {
            return Err(err(
                "task_start_timeout_seconds",
                "must be zero (no limit) or a positive number of seconds",
            ))
        }
        Some(0.0) => None,
        Some(s) => Some(Duration::from_secs_f64(s)),
    };
    let poll_interval = match number(c, "task_watch_poll_interval")? {
        None => Duration::from_secs(5),
        Some(s) if s > 0.0 => Duration::from_secs_f64(s.max(1.0)),
        Some(s) => {
            return Err(err(
                "task_watch_poll_interval",
                format!("{s} must be a positive number of seconds"),
            ))
        }
    };
    let max_run = match number(c, "max_run_seconds")? {
        None => None,
        Some(s) if s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            return Err(err(
                "max_run_seconds",
                format!("{s} must be a positive number of seconds, or empty for no limit"),
            ))
        }
    };
    let cancel_grace = match number(c, "cancel_grace_seconds")? {
        None => Duration::from_secs(30),
        Some(s) if s >= 0.0 => Duration::from_secs_f64(s),
        Some(s) => {
            return Err(err(
                "cancel_grace_seconds",
                format!("{s} must be zero or more seconds"),
            ))
        }
    };

    let credentials = match opt(c, "aci_credentials") {
        None => ExplicitClientSecret::default(),
        Some(Value::Object(b)) => {
            let field = |k: &str| {
                b.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .filter(|s| !s.is_empty())
            };
            let creds = ExplicitClientSecret {
                client_id: field("client_id"),
                tenant_id: field("tenant_id"),
                client_secret: field("client_secret").map(Secret::new),
            };
            creds.validate().map_err(|e| err("aci_credentials", e))?;
            creds
        }
        Some(_) => {
            return Err(err(
                "aci_credentials",
                "expected an AzureContainerInstanceCredentials block",
            ))
        }
    };

    // Compare the pool's template as written (before rendering) with the default one.
    let written = ctx
        .work_pool
        .base_job_template
        .pointer("/job_configuration/arm_template");
    let custom_template = match written.filter(|t| !t.is_null()) {
        Some(t) if t != default_template => match opt(c, "arm_template") {
            Some(rendered @ Value::Object(_)) => {
                let ok = rendered
                    .pointer("/resources/0/properties/containers/0/properties")
                    .is_some_and(Value::is_object);
                if !ok {
                    return Err(err("arm_template", "the template's first resource must be a container group with at least one container (resources[0].properties.containers[0].properties)"));
                }
                Some(rendered.clone())
            }
            _ => return Err(err("arm_template", "expected an ARM template object")),
        },
        _ => None,
    };

    let group_name = container_group_name(&ctx.flow.name, ctx.flow_run.id);
    let mut tags = BTreeMap::new();
    tags.insert(
        tags::MANAGED_BY.to_string(),
        tags::MANAGED_BY_VALUE.to_string(),
    );
    tags.insert(tags::FLOW_RUN_ID.to_string(), ctx.flow_run.id.to_string());
    tags.insert(tags::FLOW_ID.to_string(), ctx.flow.id.to_string());
    if let Some(d) = &ctx.deployment {
        tags.insert(tags::DEPLOYMENT_ID.to_string(), d.id.to_string());
    }
    tags.insert(
        tags::WORK_POOL.to_string(),
        ctx.work_pool.name.chars().take(256).collect(),
    );
    tags.insert(
        tags::WORKER.to_string(),
        ctx.worker_name.chars().take(256).collect(),
    );

    let mut extra = Map::new();
    if !dns_servers.is_empty() {
        extra.insert("dnsConfig".into(), json!({"nameServers": dns_servers}));
    }
    let container_name = "flow-run".to_string();
    let body = ContainerGroup {
        tags: Some(tags),
        identity: (!identities.is_empty()).then(|| ContainerGroupIdentity {
            identity_type: Some("UserAssigned".into()),
            user_assigned_identities: Some(
                identities
                    .iter()
                    .map(|i| (i.clone(), UserAssignedIdentityRef::default()))
                    .collect(),
            ),
            ..Default::default()
        }),
        properties: ContainerGroupProperties {
            containers: vec![Container {
                name: container_name.clone(),
                properties: ContainerProperties {
                    image,
                    command: (!command.is_empty()).then_some(command),
                    environment_variables: Some(env_vars),
                    resources: Some(ResourceRequirements {
                        requests: Some(ResourceRequests {
                            cpu: Some(cpu),
                            memory_in_gb: Some(memory),
                            gpu: None,
                        }),
                        limits: None,
                    }),
                    ..Default::default()
                },
            }],
            image_registry_credentials: registry.map(|r| vec![r]),
            restart_policy: Some("Never".into()),
            os_type: Some("Linux".into()),
            sku: Some("Standard".into()),
            subnet_ids: (!subnet_ids.is_empty()).then(|| {
                subnet_ids
                    .into_iter()
                    .map(|id| SubnetId { id, name: None })
                    .collect()
            }),
            extra,
            ..Default::default()
        },
        ..Default::default()
    };

    Ok(AciSpec {
        flow_run_id: ctx.flow_run.id,
        subscription_id,
        resource_group,
        group_name,
        container_name,
        body,
        fallback_locations,
        start_timeout,
        poll_interval,
        stream_output: boolean(c, "stream_output", false)?,
        keep_container_group: boolean(c, "keep_container_group", false)?,
        max_run,
        cancel_grace,
        credentials,
        custom_template,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_follow_prefect_azure() {
        let id: Uuid = "1af30530-e77a-4bca-ab72-d2b6ff5e6632".parse().unwrap();
        assert_eq!(container_group_name("my_flow", id), format!("my-flow-{id}"));
        assert_eq!(
            container_group_name("A Very Long Flow Name Indeed!!", id),
            format!("a-very-long-flow-na-{id}")
        );
        assert_eq!(container_group_name("!!!", id), format!("flow-{id}"));
        for name in ["x", "hello world", "-lead", "trail-------------------x"] {
            let g = container_group_name(name, id);
            assert!(
                g.len() <= 63 && !g.starts_with('-') && !g.contains("--"),
                "{g}"
            );
        }
    }

    #[test]
    fn secret_names() {
        for n in [
            "PREFECT_API_KEY",
            "prefect_api_auth_string",
            "DB_PASSWORD",
            "GITHUB_TOKEN",
            "MY_SECRET",
            "API_KEY_2",
        ] {
            assert!(is_secret_name(n, &[]), "{n}");
        }
        for n in ["PREFECT_API_URL", "HOME", "MONKEY_BUSINESS_X"] {
            // "MONKEY" contains KEY: names that merely contain a word are secure too, by design.
            assert_eq!(is_secret_name(n, &[]), n.contains("KEY"), "{n}");
        }
        assert!(is_secret_name("CONN", &["conn".into()]));
    }
}
