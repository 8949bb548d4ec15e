//! `prefect-aci setup` and `teardown`: everything an ACI work pool needs, in one idempotent run.
//!
//! The ACI worker guide has users run a dozen `az` commands, copy ids between them and edit the
//! work pool by hand. [`Setup`] does the same steps against Azure Resource Manager and the
//! Prefect API, in order:
//!
//! 1. the resource group;
//! 2. the custom role *Container Instances Contributor* (assignable at the resource group), under
//!    a stable GUID so re-runs update it;
//! 3. the user-assigned identity the worker runs as;
//! 4. the role assignment of that role to the identity at the resource group;
//! 5. the container registry (Basic) — its name is checked for global availability while
//!    planning, so a name taken by someone else stops the run before anything is created;
//! 6. the AcrPull assignment of the identity on the registry (it needs the registry, hence
//!    after step 5);
//! 7. the Prefect work pool, whose base job template gets the defaults the guide sets by hand
//!    (identities, the ACR managed identity, subscription id, resource group) — before the
//!    worker starts, so the worker never creates the pool itself with bare defaults;
//! 8. the worker's own container group (`restartPolicy: Always`, the identity, registry pulls
//!    by identity, `PREFECT_API_URL`/`PREFECT_API_KEY` as secure values, running
//!    `prefect-aci worker start --pool NAME`).
//!
//! # Idempotence and resumption
//!
//! Every step reads the current state first and writes only when the resource is missing or
//! differs from what setup wants, so a second run changes nothing and a run that failed midway
//! is resumed by running it again. [`Setup::plan`] is the same walk without writes: each step
//! reports [`Status::Exists`], [`Status::Create`] or [`Status::Change`] (with what differs).
//!
//! # Ownership
//!
//! Everything setup creates carries the tags `managed-by=prefect-aci-setup` and
//! `prefect-aci-pool=<pool>` (role definitions and work pools, which have no tags, carry the
//! marker in their description). [`Setup::teardown`] deletes only resources carrying those
//! marks, and a resource group only when nothing else is left in it. Resources that existed
//! before setup ran are used but never tagged, so teardown leaves them alone.
//!
//! # Permissions
//!
//! A 403 from ARM becomes [`SetupError::PermissionDenied`], naming the refused action, the
//! scope, and the built-in roles that grant it ([`roles::roles_granting`]).
//!
//! **Architecture Invariant:** the Prefect API key is only ever sent as a container
//! `secureValue`; it is never logged, printed or put in an error.

#![warn(missing_docs)]
#![allow(clippy::result_large_err)]

pub mod roles;
mod steps;
mod teardown;

use std::time::Duration;

use azure_arm::ArmClient;
use prefect_client::PrefectClient;

pub use steps::{Plan, PlanItem, Status, Step, Summary};
pub use teardown::{TeardownItem, TeardownPlan};

/// Tag (and description marker) key of everything setup creates.
pub const MANAGED_BY_TAG: &str = "managed-by";
/// Its value.
pub const MANAGED_BY_VALUE: &str = "prefect-aci-setup";
/// Tag holding the pool name, so several pools can share a resource group.
pub const POOL_TAG: &str = "prefect-aci-pool";

/// api-versions setup speaks.
pub mod api {
    /// Resource groups.
    pub const RESOURCES: &str = "2025-04-01";
    /// Role definitions and assignments.
    pub const AUTHORIZATION: &str = "2022-04-01";
    /// User-assigned identities.
    pub const IDENTITY: &str = "2024-11-30";
    /// Container registries.
    pub const REGISTRY: &str = "2025-04-01";
    /// Container groups.
    pub const ACI: &str = "2025-09-01";
}

/// What to set up.
#[derive(Clone)]
pub struct SetupOptions {
    /// Azure subscription id.
    pub subscription_id: String,
    /// Resource group name.
    pub resource_group: String,
    /// Location of everything created, e.g. `eastus`.
    pub location: String,
    /// Name of the user-assigned identity.
    pub identity: String,
    /// Name of the container registry (5–50 alphanumerics, globally unique).
    pub registry: String,
    /// Prefect work pool name (also names the worker's container group).
    pub pool: String,
    /// The worker image; default `<registry>.azurecr.io/prefect-aci:latest`.
    pub worker_image: Option<String>,
    /// `PREFECT_API_URL` for the worker container.
    pub prefect_api_url: String,
    /// `PREFECT_API_KEY` for the worker container (Prefect Cloud), if any.
    pub prefect_api_key: Option<String>,
    /// How long a role assignment is retried while a fresh identity replicates.
    pub principal_retry: Duration,
    /// CPU and memory (GB) of the worker container.
    pub worker_resources: (f64, f64),
}

impl std::fmt::Debug for SetupOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupOptions")
            .field("subscription_id", &self.subscription_id)
            .field("resource_group", &self.resource_group)
            .field("location", &self.location)
            .field("identity", &self.identity)
            .field("registry", &self.registry)
            .field("pool", &self.pool)
            .field("worker_image", &self.worker_image)
            .field("prefect_api_url", &self.prefect_api_url)
            .field(
                "prefect_api_key",
                &self.prefect_api_key.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

impl SetupOptions {
    /// Options with defaults for the optional parts.
    pub fn new(
        subscription_id: impl Into<String>,
        resource_group: impl Into<String>,
        location: impl Into<String>,
        identity: impl Into<String>,
        registry: impl Into<String>,
        pool: impl Into<String>,
        prefect_api_url: impl Into<String>,
    ) -> Self {
        SetupOptions {
            subscription_id: subscription_id.into(),
            resource_group: resource_group.into(),
            location: location.into(),
            identity: identity.into(),
            registry: registry.into(),
            pool: pool.into(),
            worker_image: None,
            prefect_api_url: prefect_api_url.into(),
            prefect_api_key: None,
            principal_retry: Duration::from_secs(120),
            worker_resources: (1.0, 1.0),
        }
    }

    /// Checks names against Azure's rules before any call is made.
    pub fn validate(&self) -> Result<(), SetupError> {
        let bad = |flag: &'static str, value: &str, rule: &str| {
            Err(SetupError::InvalidOption {
                flag,
                message: format!("{value:?} is invalid: {rule}"),
            })
        };
        if uuid::Uuid::parse_str(&self.subscription_id).is_err() {
            return bad(
                "--subscription",
                &self.subscription_id,
                "a subscription id is a GUID (see `az account show --query id`)",
            );
        }
        let rg = &self.resource_group;
        if rg.is_empty()
            || rg.len() > 90
            || rg.ends_with('.')
            || !rg
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
        {
            return bad(
                "--resource-group",
                rg,
                "up to 90 letters, digits, '-', '_', '.', '(' and ')', not ending with '.'",
            );
        }
        if self.location.trim().is_empty()
            || !self.location.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return bad(
                "--location",
                &self.location,
                "a location name such as eastus (see `az account list-locations`)",
            );
        }
        let id = &self.identity;
        if !(3..=128).contains(&id.len())
            || !id.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad(
                "--identity",
                id,
                "3-128 letters, digits, '-' and '_', starting with a letter or digit",
            );
        }
        let reg = &self.registry;
        if !(5..=50).contains(&reg.len()) || !reg.chars().all(|c| c.is_ascii_alphanumeric()) {
            return bad(
                "--registry",
                reg,
                "5-50 letters and digits only (it becomes <name>.azurecr.io)",
            );
        }
        if steps::group_name(&self.pool).is_empty() || self.pool.len() > 200 {
            return bad(
                "--pool",
                &self.pool,
                "a work pool name with at least one letter or digit",
            );
        }
        if !(self.prefect_api_url.starts_with("http://")
            || self.prefect_api_url.starts_with("https://"))
        {
            return Err(SetupError::InvalidOption {
                flag: "PREFECT_API_URL",
                message:
                    "must be set to the Prefect API URL the worker should use (http:// or https://)"
                        .into(),
            });
        }
        Ok(())
    }

    /// `/subscriptions/{sub}/resourceGroups/{rg}`.
    pub fn rg_scope(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.subscription_id, self.resource_group
        )
    }

    /// `<registry>.azurecr.io`.
    pub fn login_server(&self) -> String {
        format!("{}.azurecr.io", self.registry.to_ascii_lowercase())
    }

    /// The worker image setup runs.
    pub fn worker_image(&self) -> String {
        self.worker_image
            .clone()
            .unwrap_or_else(|| format!("{}/prefect-aci:latest", self.login_server()))
    }
}

/// Why setup or teardown stopped.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A flag has a value Azure would refuse.
    #[error("invalid {flag}: {message}")]
    InvalidOption {
        /// The flag or variable.
        flag: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// ARM refused an action for lack of a role.
    #[error(
        "{step}: permission denied: the caller may not perform '{action}' over scope '{scope}'. {}",
        hint_for(roles, scope)
    )]
    PermissionDenied {
        /// The step.
        step: String,
        /// The refused action.
        action: String,
        /// The scope it was refused over.
        scope: String,
        /// Built-in roles that grant it, least privileged first.
        roles: Vec<&'static str>,
        /// ARM's message.
        message: String,
    },
    /// The registry name belongs to someone else.
    #[error("the registry name '{name}' is not available: {message} Choose another --registry (5-50 letters and digits); nothing was created")]
    RegistryNameTaken {
        /// The name.
        name: String,
        /// ARM's reason.
        message: String,
    },
    /// A resource exists in a state setup cannot reconcile.
    #[error("{step}: {message}")]
    Conflict {
        /// The step.
        step: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Any other ARM failure.
    #[error("{step}: {source}")]
    Arm {
        /// The step.
        step: String,
        /// The ARM error.
        #[source]
        source: azure_arm::ArmError,
    },
    /// A Prefect API failure.
    #[error("{step}: {source}")]
    Prefect {
        /// The step.
        step: String,
        /// The Prefect error.
        #[source]
        source: prefect_client::ApiError,
    },
}

fn hint_for(roles: &[&str], scope: &str) -> String {
    match roles.first() {
        None => "No built-in role known to setup grants it; ask an administrator for a role that does.".to_string(),
        Some(first) => format!(
            "Roles that grant it: {}. Ask an administrator to run: az role assignment create --assignee <your principal id> --role \"{first}\" --scope {scope}",
            roles.join(", ")
        ),
    }
}

/// Turns an ARM error into a [`SetupError`], recognising permission refusals.
pub(crate) fn arm_error(step: &str, e: azure_arm::ArmError) -> SetupError {
    if e.status() == Some(403) {
        if let azure_arm::ArmError::Http { message, .. } = &e {
            let quoted = |after: &str| -> Option<String> {
                let rest = &message[message.find(after)? + after.len()..];
                let rest = rest.strip_prefix('\'')?;
                Some(rest[..rest.find('\'')?].to_string())
            };
            // LinkedAuthorizationFailed names the linked action after "perform action" twice;
            // the refused one is the last.
            let action = match e.code() {
                Some("LinkedAuthorizationFailed") => {
                    message.rfind("perform action '").and_then(|i| {
                        let rest = &message[i + "perform action '".len()..];
                        rest.find('\'').map(|j| rest[..j].to_string())
                    })
                }
                _ => quoted("perform action "),
            };
            let scope = match e.code() {
                Some("LinkedAuthorizationFailed") => quoted("linked scope(s) "),
                _ => quoted("over scope "),
            };
            if let Some(action) = action {
                return SetupError::PermissionDenied {
                    step: step.to_string(),
                    roles: roles::roles_granting(&action),
                    action,
                    scope: scope.unwrap_or_default(),
                    message: message.clone(),
                };
            }
        }
    }
    SetupError::Arm {
        step: step.to_string(),
        source: e,
    }
}

/// The setup and teardown engine.
pub struct Setup {
    arm: ArmClient,
    prefect: PrefectClient,
    options: SetupOptions,
}

impl Setup {
    /// Validates the options and keeps the clients.
    pub fn new(
        arm: ArmClient,
        prefect: PrefectClient,
        options: SetupOptions,
    ) -> Result<Self, SetupError> {
        options.validate()?;
        Ok(Setup {
            arm,
            prefect,
            options,
        })
    }

    /// The options.
    pub fn options(&self) -> &SetupOptions {
        &self.options
    }

    /// Reads the current state and reports what [`Setup::apply`] would do; changes nothing.
    /// Fails (before anything is created) when the registry name is taken by someone else.
    pub async fn plan(&self) -> Result<Plan, SetupError> {
        let mut ctx = steps::Ctx::default();
        let mut items = Vec::new();
        for step in Step::ALL {
            let status = self.step(step, &mut ctx, false).await?;
            items.push(PlanItem { step, status });
        }
        Ok(Plan { items })
    }

    /// Runs every step, writing what is missing or different; `progress` hears each step's
    /// outcome as it completes. Safe to re-run; a failed run is resumed by running again.
    pub async fn apply(&self, progress: &mut dyn FnMut(&PlanItem)) -> Result<Summary, SetupError> {
        // A registry name taken by someone else must stop the run before step 1 creates
        // anything, not halfway through.
        self.registry_name_precheck().await?;
        let mut ctx = steps::Ctx::default();
        for step in Step::ALL {
            let status = self.step(step, &mut ctx, true).await?;
            progress(&PlanItem { step, status });
        }
        Ok(self.summary(&ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_403(code: &str, message: &str) -> azure_arm::ArmError {
        azure_arm::ArmError::Http {
            method: "PUT".into(),
            path: "/x".into(),
            status: 403,
            code: Some(code.into()),
            message: message.into(),
            details: Vec::new(),
            request_id: "r".into(),
            retry_after: None,
        }
    }

    #[test]
    fn authorization_failures_name_the_action_scope_and_roles() {
        let e = arm_error(
            "custom role",
            http_403(
                "AuthorizationFailed",
                "The client 'p' with object id 'p' does not have authorization to perform action 'Microsoft.Authorization/roleDefinitions/write' over scope '/subscriptions/s/resourceGroups/rg' or the scope is invalid.",
            ),
        );
        match &e {
            SetupError::PermissionDenied {
                action,
                scope,
                roles,
                ..
            } => {
                assert_eq!(action, "Microsoft.Authorization/roleDefinitions/write");
                assert_eq!(scope, "/subscriptions/s/resourceGroups/rg");
                assert_eq!(roles, &vec!["User Access Administrator", "Owner"]);
            }
            other => panic!("{other:?}"),
        }
        let text = e.to_string();
        assert!(
            text.contains(
                "--role \"User Access Administrator\" --scope /subscriptions/s/resourceGroups/rg"
            ),
            "{text}"
        );
    }

    #[test]
    fn linked_failures_name_the_linked_action() {
        let e = arm_error(
            "worker container group",
            http_403(
                "LinkedAuthorizationFailed",
                "The client 'p' with object id 'p' has permission to perform action 'Microsoft.ContainerInstance/containerGroups/write' on scope '/s/cg'; however, it does not have permission to perform action 'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked scope(s) '/s/id' or the linked scope(s) are invalid.",
            ),
        );
        match e {
            SetupError::PermissionDenied {
                action,
                scope,
                roles,
                ..
            } => {
                assert_eq!(
                    action,
                    "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"
                );
                assert_eq!(scope, "/s/id");
                assert_eq!(roles.first().copied(), Some("Managed Identity Operator"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn options_are_validated_with_the_flag_at_fault() {
        let ok = SetupOptions::new(
            "00000000-0000-0000-0000-000000000001",
            "rg",
            "eastus",
            "id-1",
            "myreg1",
            "pool",
            "http://127.0.0.1:4200/api",
        );
        assert!(ok.validate().is_ok());
        let mut bad = ok.clone();
        bad.registry = "my-reg".into();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("invalid --registry"));
        let mut bad = ok.clone();
        bad.subscription_id = "sub".into();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("invalid --subscription"));
        let mut bad = ok;
        bad.prefect_api_key = Some("pnu_secret".into());
        assert!(!format!("{bad:?}").contains("pnu_secret"));
    }
}
