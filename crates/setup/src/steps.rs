//! The eight setup steps: each reads the current state, compares it with the desired one, and
//! (when applying) writes only the difference.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::roles::{self, ACR_PULL, ROLE_ACTIONS, ROLE_NAME};
use crate::{api, arm_error, Setup, SetupError, MANAGED_BY_TAG, MANAGED_BY_VALUE, POOL_TAG};

/// One step of setup, in execution order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The resource group.
    ResourceGroup,
    /// The custom role definition.
    RoleDefinition,
    /// The user-assigned identity.
    Identity,
    /// The custom role assigned to the identity at the resource group.
    RoleAssignment,
    /// The container registry.
    Registry,
    /// AcrPull for the identity on the registry.
    AcrPullAssignment,
    /// The worker's container group.
    WorkerGroup,
    /// The Prefect work pool.
    WorkPool,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 8] = [
        Step::ResourceGroup,
        Step::RoleDefinition,
        Step::Identity,
        Step::RoleAssignment,
        Step::Registry,
        Step::AcrPullAssignment,
        Step::WorkPool,
        Step::WorkerGroup,
    ];

    /// A short label for output.
    pub fn label(self) -> &'static str {
        match self {
            Step::ResourceGroup => "resource group",
            Step::RoleDefinition => "custom role",
            Step::Identity => "managed identity",
            Step::RoleAssignment => "role assignment (Container Instances Contributor)",
            Step::Registry => "container registry",
            Step::AcrPullAssignment => "role assignment (AcrPull)",
            Step::WorkerGroup => "worker container group",
            Step::WorkPool => "Prefect work pool",
        }
    }
}

/// What a step found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Already as wanted (`detail` says what it is).
    Exists(String),
    /// Missing: created (or, in a plan, will be created).
    Create(String),
    /// Different: updated (or will be); the differences.
    Change(Vec<String>),
}

impl Status {
    /// True unless the resource was already as wanted.
    pub fn is_change(&self) -> bool {
        !matches!(self, Status::Exists(_))
    }
}

/// One step's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanItem {
    /// The step.
    pub step: Step,
    /// Its status.
    pub status: Status,
}

/// What a run would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One item per step, in order.
    pub items: Vec<PlanItem>,
}

impl Plan {
    /// True when nothing would change.
    pub fn is_noop(&self) -> bool {
        !self.items.iter().any(|i| i.status.is_change())
    }
}

/// The values the guide asks users to echo, after a successful run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `RG_SCOPE`: `/subscriptions/{sub}/resourceGroups/{rg}`.
    pub rg_scope: String,
    /// `IDENTITY_ID`: the identity's resource id.
    pub identity_id: String,
    /// The identity's client id (the worker's `AZURE_CLIENT_ID`).
    pub identity_client_id: String,
    /// The identity's principal id.
    pub identity_principal_id: String,
    /// The custom role's id.
    pub role_definition_id: String,
    /// `<registry>.azurecr.io`.
    pub registry_login_server: String,
    /// The registry's resource id.
    pub registry_id: String,
    /// The worker container group's resource id.
    pub worker_group_id: String,
    /// The work pool name.
    pub pool: String,
}

/// Values discovered by earlier steps.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    /// (id, principal id, client id) once the identity exists.
    identity: Option<(String, String, String)>,
    /// Whether the registry exists (or, when applying, was created).
    registry_id: Option<String>,
}

/// The worker container group's name: the pool name as an ACI name (lowercase alphanumerics
/// and single dashes, at most 63 characters).
pub(crate) fn group_name(pool: &str) -> String {
    let mut out = String::new();
    for c in pool.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out: String = out.chars().take(63).collect();
    while out.ends_with('-') {
        out.pop();
    }
    out
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn tags_match(v: &Value, pool: &str) -> bool {
    str_at(v, &format!("/tags/{MANAGED_BY_TAG}")) == MANAGED_BY_VALUE
        && str_at(v, &format!("/tags/{POOL_TAG}")) == pool
}

fn sorted_lower(v: &[String]) -> Vec<String> {
    let mut out: Vec<String> = v.iter().map(|s| s.to_ascii_lowercase()).collect();
    out.sort();
    out.dedup();
    out
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

impl Setup {
    fn tags(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY_TAG.to_string(), MANAGED_BY_VALUE.to_string()),
            (POOL_TAG.to_string(), self.options.pool.clone()),
        ])
    }

    pub(crate) fn marker(&self) -> String {
        format!(
            "{MANAGED_BY_TAG}={MANAGED_BY_VALUE} {POOL_TAG}={}",
            self.options.pool
        )
    }

    fn rg_path(&self) -> String {
        format!(
            "/subscriptions/{}/resourcegroups/{}",
            self.options.subscription_id, self.options.resource_group
        )
    }

    pub(crate) fn role_guid(&self) -> String {
        roles::custom_role_guid(&self.options.rg_scope()).to_string()
    }

    pub(crate) fn role_id(&self) -> String {
        roles::role_definition_id(&self.options.subscription_id, &self.role_guid())
    }

    pub(crate) fn acr_pull_id(&self) -> String {
        roles::role_definition_id(&self.options.subscription_id, ACR_PULL)
    }

    pub(crate) fn identity_path(&self) -> String {
        format!(
            "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{}",
            self.options.rg_scope(),
            self.options.identity
        )
    }

    pub(crate) fn registry_path(&self) -> String {
        format!(
            "{}/providers/Microsoft.ContainerRegistry/registries/{}",
            self.options.rg_scope(),
            self.options.registry
        )
    }

    pub(crate) fn group_path(&self) -> String {
        format!(
            "{}/providers/Microsoft.ContainerInstance/containerGroups/{}",
            self.options.rg_scope(),
            group_name(&self.options.pool)
        )
    }

    pub(crate) async fn step(
        &self,
        step: Step,
        ctx: &mut Ctx,
        apply: bool,
    ) -> Result<Status, SetupError> {
        match step {
            Step::ResourceGroup => self.resource_group(apply).await,
            Step::RoleDefinition => self.role_definition(apply).await,
            Step::Identity => self.identity(ctx, apply).await,
            Step::RoleAssignment => {
                let scope = self.options.rg_scope();
                let role = self.role_id();
                self.assignment(step, ctx, &scope, &role, apply).await
            }
            Step::Registry => self.registry(ctx, apply).await,
            Step::AcrPullAssignment => {
                let scope = ctx
                    .registry_id
                    .clone()
                    .unwrap_or_else(|| self.registry_path());
                let role = self.acr_pull_id();
                self.assignment(step, ctx, &scope, &role, apply).await
            }
            Step::WorkerGroup => self.worker_group(ctx, apply).await,
            Step::WorkPool => self.work_pool(ctx, apply).await,
        }
    }

    async fn get(
        &self,
        step: Step,
        path: &str,
        api_version: &str,
    ) -> Result<Option<Value>, SetupError> {
        self.arm
            .get_opt::<Value>(path, api_version)
            .await
            .map_err(|e| arm_error(step.label(), e))
    }

    async fn resource_group(&self, apply: bool) -> Result<Status, SetupError> {
        let step = Step::ResourceGroup;
        let path = self.rg_path();
        let location = self.options.location.to_ascii_lowercase();
        match self.get(step, &path, api::RESOURCES).await? {
            Some(rg) => {
                let have = str_at(&rg, "/location")
                    .replace(' ', "")
                    .to_ascii_lowercase();
                if have != location {
                    return Err(SetupError::Conflict {
                        step: step.label().into(),
                        message: format!(
                            "resource group '{}' already exists in '{have}', not '{location}'; use --location {have} or another --resource-group",
                            self.options.resource_group
                        ),
                    });
                }
                let owner = if tags_match(&rg, &self.options.pool) {
                    ""
                } else {
                    " (not created by setup: kept as is)"
                };
                Ok(Status::Exists(format!(
                    "{}{owner}",
                    self.options.rg_scope()
                )))
            }
            None => {
                if apply {
                    self.arm
                        .put::<_, Value>(
                            &path,
                            api::RESOURCES,
                            &json!({"location": location, "tags": self.tags()}),
                        )
                        .await
                        .map_err(|e| arm_error(step.label(), e))?;
                }
                Ok(Status::Create(format!(
                    "{} in {location}",
                    self.options.rg_scope()
                )))
            }
        }
    }

    fn role_body(&self) -> Value {
        json!({"properties": {
            "roleName": ROLE_NAME,
            "description": format!("Can create, delete, and monitor container instances. {}", self.marker()),
            "type": "CustomRole",
            "permissions": [{"actions": ROLE_ACTIONS, "notActions": [], "dataActions": [], "notDataActions": []}],
            "assignableScopes": [self.options.rg_scope()],
        }})
    }

    async fn role_definition(&self, apply: bool) -> Result<Status, SetupError> {
        let step = Step::RoleDefinition;
        let path = format!(
            "{}/providers/Microsoft.Authorization/roleDefinitions/{}",
            self.options.rg_scope(),
            self.role_guid()
        );
        let want = self.role_body();
        let status = match self.get(step, &path, api::AUTHORIZATION).await? {
            None => Status::Create(format!("'{ROLE_NAME}' ({})", self.role_guid())),
            Some(have) => {
                let mut diffs = Vec::new();
                let actions: Vec<String> = have
                    .pointer("/properties/permissions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .flat_map(|p| strings(p.get("actions")))
                    .collect();
                let want_actions: Vec<String> =
                    ROLE_ACTIONS.iter().map(|s| s.to_string()).collect();
                if sorted_lower(&actions) != sorted_lower(&want_actions) {
                    diffs.push(format!("actions: {actions:?} → {want_actions:?}"));
                }
                let scopes = strings(have.pointer("/properties/assignableScopes"));
                if sorted_lower(&scopes) != sorted_lower(&[self.options.rg_scope()]) {
                    diffs.push(format!(
                        "assignableScopes: {scopes:?} → [{:?}]",
                        self.options.rg_scope()
                    ));
                }
                if str_at(&have, "/properties/roleName") != ROLE_NAME {
                    diffs.push(format!(
                        "roleName: {:?} → {ROLE_NAME:?}",
                        str_at(&have, "/properties/roleName")
                    ));
                }
                if diffs.is_empty() {
                    Status::Exists(format!("'{ROLE_NAME}' ({})", self.role_guid()))
                } else {
                    Status::Change(diffs)
                }
            }
        };
        if apply && status.is_change() {
            self.arm
                .put::<_, Value>(&path, api::AUTHORIZATION, &want)
                .await
                .map_err(|e| match e.code() {
                    Some("RoleDefinitionWithSameNameExists") => SetupError::Conflict {
                        step: step.label().into(),
                        message: format!(
                            "a custom role named '{ROLE_NAME}' already exists in this directory under another id (probably created by hand following the guide, or by setup for another resource group). Delete it (az role definition delete --name \"{ROLE_NAME}\") or remove its assignments first, then re-run setup"
                        ),
                    },
                    _ => arm_error(step.label(), e),
                })?;
        }
        Ok(status)
    }

    async fn identity(&self, ctx: &mut Ctx, apply: bool) -> Result<Status, SetupError> {
        let step = Step::Identity;
        let path = self.identity_path();
        let (found, status) = match self.get(step, &path, api::IDENTITY).await? {
            Some(v) => {
                let owner = if tags_match(&v, &self.options.pool) {
                    ""
                } else {
                    " (not created by setup: kept as is)"
                };
                let status = Status::Exists(format!("{}{owner}", str_at(&v, "/id")));
                (Some(v), status)
            }
            None if apply => {
                let body = json!({"location": self.options.location, "tags": self.tags()});
                let v: Value = self
                    .arm
                    .put::<_, Value>(&path, api::IDENTITY, &body)
                    .await
                    .map_err(|e| arm_error(step.label(), e))?
                    .wait()
                    .await
                    .map_err(|e| arm_error(step.label(), e))?;
                let id = str_at(&v, "/id").to_string();
                (Some(v), Status::Create(id))
            }
            None => (None, Status::Create(path.clone())),
        };
        if let Some(v) = found {
            ctx.identity = Some((
                str_at(&v, "/id").to_string(),
                str_at(&v, "/properties/principalId").to_string(),
                str_at(&v, "/properties/clientId").to_string(),
            ));
        }
        Ok(status)
    }

    /// Whether `principal` holds `role` exactly at `scope` (under any assignment name).
    async fn has_assignment(
        &self,
        step: Step,
        scope: &str,
        principal: &str,
        role: &str,
    ) -> Result<bool, SetupError> {
        let path = format!("{scope}/providers/Microsoft.Authorization/roleAssignments");
        let filter = format!("principalId eq '{principal}'");
        let page: Value = match self
            .arm
            .get_with_query::<Value>(&path, api::AUTHORIZATION, &[("$filter", filter.as_str())])
            .await
        {
            Ok(v) => v,
            // The scope itself does not exist yet (dry run before the registry exists).
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(arm_error(step.label(), e)),
        };
        let role_guid = role.rsplit('/').next().unwrap_or("");
        Ok(page["value"].as_array().into_iter().flatten().any(|a| {
            str_at(a, "/properties/scope").eq_ignore_ascii_case(scope)
                && str_at(a, "/properties/roleDefinitionId")
                    .rsplit('/')
                    .next()
                    .is_some_and(|g| g.eq_ignore_ascii_case(role_guid))
        }))
    }

    async fn assignment(
        &self,
        step: Step,
        ctx: &Ctx,
        scope: &str,
        role: &str,
        apply: bool,
    ) -> Result<Status, SetupError> {
        let role_label = if role.ends_with(ACR_PULL) {
            "AcrPull"
        } else {
            ROLE_NAME
        };
        let Some((_, principal, _)) = ctx.identity.clone() else {
            return Ok(Status::Create(format!(
                "{role_label} for the new identity on {scope}"
            )));
        };
        let what = format!("{role_label} for principal {principal} on {scope}");
        if self.has_assignment(step, scope, &principal, role).await? {
            return Ok(Status::Exists(what));
        }
        if !apply {
            return Ok(Status::Create(what));
        }
        let name = roles::assignment_name(scope, &principal, role);
        let path = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
        let body = json!({"properties": {
            "roleDefinitionId": role,
            "principalId": principal,
            // Set so ARM does not look the fresh identity up in Entra (replication lag).
            "principalType": "ServicePrincipal",
            "description": self.marker(),
        }});
        let deadline = Instant::now() + self.options.principal_retry;
        let mut wait = Duration::from_secs(1);
        loop {
            match self
                .arm
                .put::<_, Value>(&path, api::AUTHORIZATION, &body)
                .await
            {
                Ok(_) => return Ok(Status::Create(what)),
                Err(e) if e.code() == Some("RoleAssignmentExists") => {
                    return Ok(Status::Exists(what))
                }
                Err(e)
                    if e.code() == Some("PrincipalNotFound")
                        && Instant::now() + wait < deadline =>
                {
                    tracing::info!(
                        step = step.label(),
                        "the new identity has not replicated yet; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(arm_error(step.label(), e)),
            }
        }
    }

    /// Fails with [`SetupError::RegistryNameTaken`] when the registry is not in the resource
    /// group and its name is not available; returns the registry when it exists there.
    pub(crate) async fn registry_name_precheck(&self) -> Result<Option<Value>, SetupError> {
        let step = Step::Registry;
        let path = self.registry_path();
        if let Some(v) = self.get(step, &path, api::REGISTRY).await? {
            return Ok(Some(v));
        }
        // Not ours: the name must be free globally, or nothing can be created.
        let check = format!(
            "/subscriptions/{}/providers/Microsoft.ContainerRegistry/checkNameAvailability",
            self.options.subscription_id
        );
        let request = json!({"name": self.options.registry, "type": "Microsoft.ContainerRegistry/registries"});
        let answer = self
            .arm
            .post_action(&check, api::REGISTRY, Some(&request))
            .await
            .map_err(|e| arm_error(step.label(), e))?;
        let body = answer.body.unwrap_or(Value::Null);
        if body["nameAvailable"] == json!(false) {
            return Err(SetupError::RegistryNameTaken {
                name: self.options.registry.clone(),
                message: body["message"]
                    .as_str()
                    .unwrap_or("it is already in use.")
                    .to_string(),
            });
        }
        Ok(None)
    }

    async fn registry(&self, ctx: &mut Ctx, apply: bool) -> Result<Status, SetupError> {
        let step = Step::Registry;
        let path = self.registry_path();
        if let Some(v) = self.registry_name_precheck().await? {
            ctx.registry_id = Some(str_at(&v, "/id").to_string());
            let owner = if tags_match(&v, &self.options.pool) {
                ""
            } else {
                " (not created by setup: kept as is)"
            };
            return Ok(Status::Exists(format!(
                "{}{owner}",
                str_at(&v, "/properties/loginServer")
            )));
        }
        if apply {
            let body = json!({
                "location": self.options.location,
                "sku": {"name": "Basic"},
                "properties": {"adminUserEnabled": false},
                "tags": self.tags(),
            });
            let v: Value = self
                .arm
                .put::<_, Value>(&path, api::REGISTRY, &body)
                .await
                .map_err(|e| arm_error(step.label(), e))?
                .wait()
                .await
                .map_err(|e| arm_error(step.label(), e))?;
            ctx.registry_id = Some(str_at(&v, "/id").to_string());
        }
        Ok(Status::Create(format!(
            "{} (Basic)",
            self.options.login_server()
        )))
    }

    fn group_body(&self, identity_id: &str, client_id: &str) -> Value {
        let image = self.options.worker_image();
        let mut env = vec![
            json!({"name": "PREFECT_API_URL", "secureValue": self.options.prefect_api_url}),
            // Selects the user-assigned identity for managed identity tokens.
            json!({"name": "AZURE_CLIENT_ID", "value": client_id}),
        ];
        if let Some(key) = &self.options.prefect_api_key {
            env.push(json!({"name": "PREFECT_API_KEY", "secureValue": key}));
        }
        let mut props = json!({
            "osType": "Linux",
            "restartPolicy": "Always",
            "sku": "Standard",
            "containers": [{"name": "prefect-aci-worker", "properties": {
                "image": image,
                "command": ["prefect-aci", "worker", "start", "--pool", self.options.pool],
                "environmentVariables": env,
                "resources": {"requests": {"cpu": self.options.worker_resources.0, "memoryInGB": self.options.worker_resources.1}},
            }}],
        });
        if image
            .to_ascii_lowercase()
            .starts_with(&format!("{}/", self.options.login_server()))
        {
            props["imageRegistryCredentials"] =
                json!([{"server": self.options.login_server(), "identity": identity_id}]);
        }
        json!({
            "location": self.options.location,
            "tags": self.tags(),
            "identity": {"type": "UserAssigned", "userAssignedIdentities": {identity_id: {}}},
            "properties": props,
        })
    }

    /// What differs between the worker group as it is and as wanted (secure values cannot be
    /// compared: ARM never returns them).
    fn group_diffs(have: &Value, want: &Value) -> Vec<String> {
        let mut diffs = Vec::new();
        let c = "/properties/containers/0/properties";
        for (label, p) in [
            ("image", format!("{c}/image")),
            ("restartPolicy", "/properties/restartPolicy".to_string()),
        ] {
            let (a, b) = (str_at(have, &p), str_at(want, &p));
            if !a.eq_ignore_ascii_case(b) {
                diffs.push(format!("{label}: {a:?} → {b:?}"));
            }
        }
        let cmd = |v: &Value| strings(v.pointer(&format!("{c}/command")));
        if cmd(have) != cmd(want) {
            diffs.push(format!("command: {:?} → {:?}", cmd(have), cmd(want)));
        }
        let ids = |v: &Value| -> Vec<String> {
            let mut k: Vec<String> = v
                .pointer("/identity/userAssignedIdentities")
                .and_then(Value::as_object)
                .map(|m| m.keys().map(|k| k.to_ascii_lowercase()).collect())
                .unwrap_or_default();
            k.sort();
            k
        };
        if ids(have) != ids(want) {
            diffs.push(format!("identities: {:?} → {:?}", ids(have), ids(want)));
        }
        let env = |v: &Value| -> Vec<(String, String)> {
            let mut e: Vec<(String, String)> = v
                .pointer(&format!("{c}/environmentVariables"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|x| {
                    (
                        str_at(x, "/name").to_string(),
                        str_at(x, "/value").to_string(),
                    )
                })
                .collect();
            e.sort();
            e
        };
        if env(have) != env(want) {
            diffs.push("environment variables".to_string());
        }
        let creds = |v: &Value| -> Vec<String> {
            v.pointer("/properties/imageRegistryCredentials")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|x| {
                    format!("{}|{}", str_at(x, "/server"), str_at(x, "/identity"))
                        .to_ascii_lowercase()
                })
                .collect()
        };
        if creds(have) != creds(want) {
            diffs.push(format!(
                "imageRegistryCredentials: {:?} → {:?}",
                creds(have),
                creds(want)
            ));
        }
        diffs
    }

    async fn worker_group(&self, ctx: &Ctx, apply: bool) -> Result<Status, SetupError> {
        let step = Step::WorkerGroup;
        let path = self.group_path();
        let (identity_id, client_id) = match &ctx.identity {
            Some((id, _, client)) => (id.clone(), client.clone()),
            None => (self.identity_path(), String::new()),
        };
        let want = self.group_body(&identity_id, &client_id);
        let what = format!(
            "{} running {}",
            group_name(&self.options.pool),
            self.options.worker_image()
        );
        let status = match self.get(step, &path, api::ACI).await? {
            None => Status::Create(what),
            Some(have) => {
                let diffs = Self::group_diffs(&have, &want);
                if diffs.is_empty() {
                    Status::Exists(what)
                } else {
                    Status::Change(diffs)
                }
            }
        };
        if apply && status.is_change() {
            self.arm
                .put::<_, Value>(&path, api::ACI, &want)
                .await
                .map_err(|e| arm_error(step.label(), e))?
                .wait()
                .await
                .map_err(|e| arm_error(step.label(), e))?;
        }
        Ok(status)
    }

    /// The pool's base job template with the defaults the guide sets by hand.
    fn desired_template(&self, mut template: Value, identity_id: &str) -> Value {
        let props = &mut template["variables"]["properties"];
        props["identities"]["default"] = json!([identity_id]);
        props["image_registry"]["default"] =
            json!({"registry_url": self.options.login_server(), "identity": identity_id});
        props["subscription_id"]["default"] = json!(self.options.subscription_id);
        props["resource_group_name"]["default"] = json!(self.options.resource_group);
        template
    }

    async fn work_pool(&self, ctx: &Ctx, apply: bool) -> Result<Status, SetupError> {
        let step = Step::WorkPool;
        let label = step.label();
        let identity_id = ctx
            .identity
            .as_ref()
            .map(|i| i.0.clone())
            .unwrap_or_else(|| self.identity_path());
        let pool = self
            .prefect
            .read_work_pool(&self.options.pool)
            .await
            .map_err(|source| SetupError::Prefect {
                step: label.into(),
                source,
            })?;
        match pool {
            None => {
                if apply {
                    let template = self.desired_template(
                        prefect_aci_worker::template::base_job_template(),
                        &identity_id,
                    );
                    let description =
                        format!("Azure Container Instances work pool. {}", self.marker());
                    self.prefect
                        .create_work_pool(
                            &self.options.pool,
                            "azure-container-instance",
                            Some(&template),
                            Some(&description),
                        )
                        .await
                        .map_err(|source| SetupError::Prefect {
                            step: label.into(),
                            source,
                        })?;
                }
                Ok(Status::Create(format!(
                    "'{}' (azure-container-instance)",
                    self.options.pool
                )))
            }
            Some(p) => {
                if p.pool_type != "azure-container-instance" {
                    return Err(SetupError::Conflict {
                        step: label.into(),
                        message: format!(
                            "work pool '{}' exists with type '{}', not 'azure-container-instance'; choose another --pool",
                            self.options.pool, p.pool_type
                        ),
                    });
                }
                let current = if p.base_job_template.is_object() {
                    p.base_job_template.clone()
                } else {
                    prefect_aci_worker::template::base_job_template()
                };
                let want = self.desired_template(current.clone(), &identity_id);
                let mut diffs = Vec::new();
                for key in [
                    "identities",
                    "image_registry",
                    "subscription_id",
                    "resource_group_name",
                ] {
                    let pointer = format!("/variables/properties/{key}/default");
                    if current.pointer(&pointer) != want.pointer(&pointer) {
                        diffs.push(format!("{key} default"));
                    }
                }
                if diffs.is_empty() {
                    return Ok(Status::Exists(format!("'{}'", self.options.pool)));
                }
                if apply {
                    self.prefect
                        .update_work_pool(&self.options.pool, &json!({"base_job_template": want}))
                        .await
                        .map_err(|source| SetupError::Prefect {
                            step: label.into(),
                            source,
                        })?;
                }
                Ok(Status::Change(diffs))
            }
        }
    }

    pub(crate) fn summary(&self, ctx: &Ctx) -> Summary {
        let (identity_id, principal, client) = ctx.identity.clone().unwrap_or_default();
        Summary {
            rg_scope: self.options.rg_scope(),
            identity_id,
            identity_client_id: client,
            identity_principal_id: principal,
            role_definition_id: self.role_id(),
            registry_login_server: self.options.login_server(),
            registry_id: ctx
                .registry_id
                .clone()
                .unwrap_or_else(|| self.registry_path()),
            worker_group_id: self.group_path(),
            pool: self.options.pool.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_follow_aci_rules() {
        assert_eq!(group_name("My Pool_1"), "my-pool-1");
        assert_eq!(group_name("--x--"), "x");
        assert_eq!(group_name(&"a".repeat(80)).len(), 63);
        assert_eq!(group_name("ü"), "");
    }
}
