//! ARM request paths → typed routes, and the api-versions each resource type accepts.
//!
//! ARM treats the fixed segments of a path case-insensitively (`resourcegroups` and
//! `resourceGroups` are the same) and resource names case-insensitively for most types, so
//! the parser lower-cases keywords for matching and keeps names as sent. Segments are
//! percent-decoded. Anything that is not one of the routes below becomes [`Route::Unknown`]
//! and is answered the way ARM answers unknown types.

/// A parsed ARM route (the subscription id is checked separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/subscriptions/{sub}`
    Subscription,
    /// `/subscriptions/{sub}/resourcegroups`
    ResourceGroups,
    /// `/subscriptions/{sub}/resourcegroups/{rg}`
    ResourceGroup { rg: String },
    /// `/subscriptions/{sub}/providers`
    Providers,
    /// `/subscriptions/{sub}/providers/{ns}`
    Provider { namespace: String },
    /// `/subscriptions/{sub}/providers/{ns}/register`
    ProviderRegister { namespace: String },
    /// `/subscriptions/{sub}/providers/Microsoft.ContainerInstance/containerGroups`
    ContainerGroupsInSubscription,
    /// `…/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups`
    ContainerGroupsInGroup { rg: String },
    /// `…/containerGroups/{name}`
    ContainerGroup { rg: String, name: String },
    /// `…/containerGroups/{name}/{start|stop|restart}`
    ContainerGroupAction {
        rg: String,
        name: String,
        action: GroupAction,
    },
    /// `…/containerGroups/{name}/containers/{container}/logs`
    ContainerLogs {
        rg: String,
        name: String,
        container: String,
    },
    /// `/subscriptions/{sub}/providers/Microsoft.ContainerInstance/locations/{loc}/usages`
    AciUsages { location: String },
    /// `/subscriptions/{sub}/providers/Microsoft.ContainerInstance/locations/{loc}/operations/{id}`
    AciOperation { location: String, id: String },
    /// `…/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities`
    IdentitiesInGroup { rg: String },
    /// `…/userAssignedIdentities/{name}`
    Identity { rg: String, name: String },
    /// `…/resourcegroups/{rg}/providers/Microsoft.Resources/deployments`
    Deployments { rg: String },
    /// `…/resourcegroups/{rg}/providers/Microsoft.Resources/deployments/{name}`
    Deployment { rg: String, name: String },
    /// `…/deployments/{name}/operationStatuses/{id}`
    DeploymentOperationStatus {
        rg: String,
        name: String,
        id: String,
    },
    /// `…/deployments/{name}/operations`: one entry per resource the deployment touched.
    DeploymentOperations { rg: String, name: String },
    /// `/subscriptions/{sub}/operationresults/{id}` (deployment deletes)
    OperationResult { id: String },
    /// `{scope}/providers/Microsoft.Authorization/roleDefinitions` (scope relative to the
    /// subscription: `""`, `resourceGroups/rg`, ...)
    RoleDefinitions { scope: String },
    /// `{scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}`
    RoleDefinition { scope: String, guid: String },
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments`
    RoleAssignments { scope: String },
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`
    RoleAssignment { scope: String, name: String },
    /// `…/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries`
    RegistriesInGroup { rg: String },
    /// `…/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}`
    Registry { rg: String, name: String },
    /// `POST /subscriptions/{sub}/providers/Microsoft.ContainerRegistry/checkNameAvailability`
    RegistryNameCheck,
    /// `/subscriptions/{sub}/providers/Microsoft.ContainerRegistry/locations/{loc}/operationResults/{id}`
    RegistryOperation { id: String },
    /// Anything else under the subscription; holds the provider namespace and type if any.
    Unknown {
        namespace: Option<String>,
        resource_type: Option<String>,
    },
}

/// Container group POST actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupAction {
    /// `POST …/start`
    Start,
    /// `POST …/stop`
    Stop,
    /// `POST …/restart`
    Restart,
}

/// Splits and percent-decodes a path into segments (empty segments dropped).
pub fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the segments after `/subscriptions/{sub}`.
pub fn parse_arm(rest: &[String]) -> Route {
    let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let r = rest;
    // Extension resources of Microsoft.Authorization live under any scope.
    if let Some(i) = l.iter().rposition(|s| *s == "providers") {
        if l.get(i + 1) == Some(&"microsoft.authorization") {
            let scope = r[..i].join("/");
            match (l.get(i + 2).copied(), r.get(i + 3), l.len() - i) {
                (Some("roledefinitions"), None, 3) => return Route::RoleDefinitions { scope },
                (Some("roledefinitions"), Some(g), 4) => {
                    return Route::RoleDefinition {
                        scope,
                        guid: g.clone(),
                    }
                }
                (Some("roleassignments"), None, 3) => return Route::RoleAssignments { scope },
                (Some("roleassignments"), Some(n), 4) => {
                    return Route::RoleAssignment {
                        scope,
                        name: n.clone(),
                    }
                }
                _ => return unknown(&l, r),
            }
        }
    }
    match l.as_slice() {
        ["operationresults", _] => Route::OperationResult { id: r[1].clone() },
        ["resourcegroups", _, "providers", "microsoft.resources", "deployments"] => {
            Route::Deployments { rg: r[1].clone() }
        }
        ["resourcegroups", _, "providers", "microsoft.resources", "deployments", _] => {
            Route::Deployment {
                rg: r[1].clone(),
                name: r[5].clone(),
            }
        }
        ["resourcegroups", _, "providers", "microsoft.resources", "deployments", _, "operations"] => {
            Route::DeploymentOperations {
                rg: r[1].clone(),
                name: r[5].clone(),
            }
        }
        ["resourcegroups", _, "providers", "microsoft.resources", "deployments", _, "operationstatuses", _] => {
            Route::DeploymentOperationStatus {
                rg: r[1].clone(),
                name: r[5].clone(),
                id: r[7].clone(),
            }
        }
        ["resourcegroups", _, "providers", "microsoft.containerregistry", "registries"] => {
            Route::RegistriesInGroup { rg: r[1].clone() }
        }
        ["resourcegroups", _, "providers", "microsoft.containerregistry", "registries", _] => {
            Route::Registry {
                rg: r[1].clone(),
                name: r[5].clone(),
            }
        }
        ["providers", "microsoft.containerregistry", "checknameavailability"] => {
            Route::RegistryNameCheck
        }
        ["providers", "microsoft.containerregistry", "locations", _, "operationresults", _] => {
            Route::RegistryOperation { id: r[5].clone() }
        }
        [] => Route::Subscription,
        ["resourcegroups"] => Route::ResourceGroups,
        ["resourcegroups", _] => Route::ResourceGroup { rg: r[1].clone() },
        ["providers"] => Route::Providers,
        ["providers", _] => Route::Provider {
            namespace: r[1].clone(),
        },
        ["providers", _, "register"] => Route::ProviderRegister {
            namespace: r[1].clone(),
        },
        ["providers", "microsoft.containerinstance", "containergroups"] => {
            Route::ContainerGroupsInSubscription
        }
        ["providers", "microsoft.containerinstance", "locations", _, "usages"] => {
            Route::AciUsages {
                location: r[3].clone(),
            }
        }
        ["providers", "microsoft.containerinstance", "locations", _, "operations", _] => {
            Route::AciOperation {
                location: r[3].clone(),
                id: r[5].clone(),
            }
        }
        ["resourcegroups", _, "providers", "microsoft.containerinstance", "containergroups"] => {
            Route::ContainerGroupsInGroup { rg: r[1].clone() }
        }
        ["resourcegroups", _, "providers", "microsoft.containerinstance", "containergroups", _] => {
            Route::ContainerGroup {
                rg: r[1].clone(),
                name: r[5].clone(),
            }
        }
        ["resourcegroups", _, "providers", "microsoft.containerinstance", "containergroups", _, action] =>
        {
            let action = match *action {
                "start" => GroupAction::Start,
                "stop" => GroupAction::Stop,
                "restart" => GroupAction::Restart,
                _ => return unknown(&l, r),
            };
            Route::ContainerGroupAction {
                rg: r[1].clone(),
                name: r[5].clone(),
                action,
            }
        }
        ["resourcegroups", _, "providers", "microsoft.containerinstance", "containergroups", _, "containers", _, "logs"] => {
            Route::ContainerLogs {
                rg: r[1].clone(),
                name: r[5].clone(),
                container: r[7].clone(),
            }
        }
        ["resourcegroups", _, "providers", "microsoft.managedidentity", "userassignedidentities"] => {
            Route::IdentitiesInGroup { rg: r[1].clone() }
        }
        ["resourcegroups", _, "providers", "microsoft.managedidentity", "userassignedidentities", _] => {
            Route::Identity {
                rg: r[1].clone(),
                name: r[5].clone(),
            }
        }
        _ => unknown(&l, r),
    }
}

fn unknown(l: &[&str], r: &[String]) -> Route {
    let at = l.iter().position(|s| *s == "providers");
    let namespace = at.and_then(|i| r.get(i + 1)).cloned();
    let resource_type = at.and_then(|i| r.get(i + 2)).cloned();
    Route::Unknown {
        namespace,
        resource_type,
    }
}

/// Which API a route belongs to, for api-version checks and error texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Microsoft.Resources (subscriptions, resource groups, providers).
    Resources,
    /// Microsoft.ContainerInstance.
    ContainerInstance,
    /// Microsoft.ManagedIdentity.
    ManagedIdentity,
    /// Microsoft.Authorization (role definitions and assignments).
    Authorization,
    /// Microsoft.ContainerRegistry.
    ContainerRegistry,
}

impl Api {
    /// The provider namespace.
    pub fn namespace(self) -> &'static str {
        match self {
            Api::Resources => "Microsoft.Resources",
            Api::ContainerInstance => "Microsoft.ContainerInstance",
            Api::ManagedIdentity => "Microsoft.ManagedIdentity",
            Api::Authorization => "Microsoft.Authorization",
            Api::ContainerRegistry => "Microsoft.ContainerRegistry",
        }
    }

    /// The api-versions this emulator accepts.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Api::Resources => &[
                "2016-09-01",
                "2018-05-01",
                "2019-05-01",
                "2019-10-01",
                "2020-06-01",
                "2021-04-01",
                "2022-09-01",
                "2023-07-01",
                "2024-03-01",
                "2024-07-01",
                "2024-11-01",
                "2025-01-01",
                "2025-03-01",
                "2025-04-01",
            ],
            Api::ContainerInstance => ACI_VERSIONS,
            Api::ManagedIdentity => &[
                "2018-11-30",
                "2021-09-30-preview",
                "2022-01-31-preview",
                "2023-01-31",
                "2023-07-31-preview",
                "2024-11-30",
                "2025-01-31-preview",
            ],
            Api::Authorization => &[
                "2015-07-01",
                "2018-01-01-preview",
                "2018-09-01-preview",
                "2020-04-01-preview",
                "2020-10-01-preview",
                "2022-04-01",
                "2022-05-01-preview",
            ],
            Api::ContainerRegistry => &[
                "2019-05-01",
                "2021-09-01",
                "2022-12-01",
                "2023-07-01",
                "2023-11-01-preview",
                "2025-04-01",
                "2025-11-01",
            ],
        }
    }

    /// The resource type named in `NoRegisteredProviderFound`.
    pub fn type_name(self) -> &'static str {
        match self {
            Api::Resources => "resourceGroups",
            Api::ContainerInstance => "containerGroups",
            Api::ManagedIdentity => "userAssignedIdentities",
            Api::Authorization => "roleAssignments",
            Api::ContainerRegistry => "registries",
        }
    }
}

/// Container Instance api-versions accepted (oldest first). Versions before 2021-07-01 are
/// accepted so clients get the service's `InvalidImageRegistryCredentialType` for identity
/// credentials rather than a version error.
pub const ACI_VERSIONS: &[&str] = &[
    "2018-10-01",
    "2019-12-01",
    "2020-11-01",
    "2021-03-01",
    "2021-07-01",
    "2021-09-01",
    "2021-10-01",
    "2022-04-01-preview",
    "2022-09-01",
    "2022-10-01-preview",
    "2023-02-01-preview",
    "2023-05-01",
    "2024-05-01-preview",
    "2024-09-01-preview",
    "2024-10-01-preview",
    "2024-11-01-preview",
    "2025-09-01",
    "2026-05-01",
];

impl Route {
    /// The API that owns the route; `None` for unknown routes.
    pub fn api(&self) -> Option<Api> {
        match self {
            Route::Subscription
            | Route::ResourceGroups
            | Route::ResourceGroup { .. }
            | Route::Providers
            | Route::Provider { .. }
            | Route::ProviderRegister { .. }
            | Route::Deployments { .. }
            | Route::Deployment { .. }
            | Route::DeploymentOperationStatus { .. }
            | Route::DeploymentOperations { .. }
            | Route::OperationResult { .. } => Some(Api::Resources),
            Route::RoleDefinitions { .. }
            | Route::RoleDefinition { .. }
            | Route::RoleAssignments { .. }
            | Route::RoleAssignment { .. } => Some(Api::Authorization),
            Route::RegistriesInGroup { .. }
            | Route::Registry { .. }
            | Route::RegistryNameCheck
            | Route::RegistryOperation { .. } => Some(Api::ContainerRegistry),
            Route::ContainerGroupsInSubscription
            | Route::ContainerGroupsInGroup { .. }
            | Route::ContainerGroup { .. }
            | Route::ContainerGroupAction { .. }
            | Route::ContainerLogs { .. }
            | Route::AciUsages { .. }
            | Route::AciOperation { .. } => Some(Api::ContainerInstance),
            Route::IdentitiesInGroup { .. } | Route::Identity { .. } => Some(Api::ManagedIdentity),
            Route::Unknown { .. } => None,
        }
    }
}

impl Route {
    /// Operation status polls: ARM does not authorise them separately (whoever holds the
    /// operation URL started the operation), so RBAC skips them.
    pub fn is_operation_status(&self) -> bool {
        matches!(
            self,
            Route::AciOperation { .. }
                | Route::DeploymentOperationStatus { .. }
                | Route::OperationResult { .. }
                | Route::RegistryOperation { .. }
        )
    }

    /// The Azure RBAC action a request needs (`Microsoft.ContainerInstance/containerGroups/read`,
    /// ...), for authorization checks. `None` for unknown routes. Creating a group with
    /// user-assigned identities additionally needs
    /// `Microsoft.ManagedIdentity/userAssignedIdentities/assign/action` on each identity
    /// (a linked access check), which is not part of this mapping.
    pub fn action(&self, method: &axum::http::Method) -> Option<String> {
        use axum::http::Method;
        let rwd = |base: &str| -> String {
            let verb = match *method {
                Method::GET | Method::HEAD => "read",
                Method::DELETE => "delete",
                _ => "write",
            };
            format!("{base}/{verb}")
        };
        Some(match self {
            Route::Subscription => "Microsoft.Resources/subscriptions/read".into(),
            Route::ResourceGroups => "Microsoft.Resources/subscriptions/resourceGroups/read".into(),
            Route::ResourceGroup { .. } => rwd("Microsoft.Resources/subscriptions/resourceGroups"),
            Route::Providers | Route::Provider { .. } => {
                "Microsoft.Resources/subscriptions/providers/read".into()
            }
            Route::ProviderRegister { namespace } => format!("{namespace}/register/action"),
            Route::ContainerGroupsInSubscription | Route::ContainerGroupsInGroup { .. } => {
                "Microsoft.ContainerInstance/containerGroups/read".into()
            }
            Route::ContainerGroup { .. } => rwd("Microsoft.ContainerInstance/containerGroups"),
            Route::ContainerGroupAction { action, .. } => format!(
                "Microsoft.ContainerInstance/containerGroups/{}/action",
                match action {
                    GroupAction::Start => "start",
                    GroupAction::Stop => "stop",
                    GroupAction::Restart => "restart",
                }
            ),
            Route::ContainerLogs { .. } => {
                "Microsoft.ContainerInstance/containerGroups/containers/logs/read".into()
            }
            Route::AciOperation { .. } => {
                "Microsoft.ContainerInstance/locations/operations/read".into()
            }
            Route::AciUsages { .. } => "Microsoft.ContainerInstance/locations/usages/read".into(),
            Route::IdentitiesInGroup { .. } => {
                "Microsoft.ManagedIdentity/userAssignedIdentities/read".into()
            }
            Route::Identity { .. } => rwd("Microsoft.ManagedIdentity/userAssignedIdentities"),
            Route::Unknown { .. } => return None,
            // The newer routes use the general mapping (`rbac::action_for`) directly.
            _ => return None,
        })
    }
}

/// True when `v` looks like an api-version (`YYYY-MM-DD` with an optional `-suffix`).
pub fn looks_like_api_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
        && (b.len() == 10 || (b[10] == b'-' && b.len() > 11))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &str) -> Route {
        let s = segments(path);
        parse_arm(&s[2..])
    }

    #[test]
    fn keywords_are_case_insensitive_and_names_kept() {
        assert_eq!(
            p("/subscriptions/s/resourcegroups/MyRG/providers/microsoft.containerinstance/CONTAINERGROUPS/cg1"),
            Route::ContainerGroup { rg: "MyRG".into(), name: "cg1".into() }
        );
        assert_eq!(
            p("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/cg/containers/c%2D1/logs"),
            Route::ContainerLogs { rg: "rg".into(), name: "cg".into(), container: "c-1".into() }
        );
        assert_eq!(
            p("/subscriptions/s/providers/Microsoft.ContainerInstance/locations/eastus/operations/op"),
            Route::AciOperation { location: "eastus".into(), id: "op".into() }
        );
        assert!(matches!(
            p("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Foo/bars/x"),
            Route::Unknown { .. }
        ));
    }

    #[test]
    fn rbac_actions() {
        use axum::http::Method;
        let cg = p("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/cg");
        assert_eq!(
            cg.action(&Method::GET).as_deref(),
            Some("Microsoft.ContainerInstance/containerGroups/read")
        );
        assert_eq!(
            cg.action(&Method::PUT).as_deref(),
            Some("Microsoft.ContainerInstance/containerGroups/write")
        );
        assert_eq!(
            cg.action(&Method::DELETE).as_deref(),
            Some("Microsoft.ContainerInstance/containerGroups/delete")
        );
        let stop = p("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/cg/stop");
        assert_eq!(
            stop.action(&Method::POST).as_deref(),
            Some("Microsoft.ContainerInstance/containerGroups/stop/action")
        );
        let logs = p("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/cg/containers/c/logs");
        assert_eq!(
            logs.action(&Method::GET).as_deref(),
            Some("Microsoft.ContainerInstance/containerGroups/containers/logs/read")
        );
        let rg = p("/subscriptions/s/resourcegroups/rg");
        assert_eq!(
            rg.action(&Method::HEAD).as_deref(),
            Some("Microsoft.Resources/subscriptions/resourceGroups/read")
        );
    }

    #[test]
    fn api_version_shape() {
        assert!(looks_like_api_version("2025-09-01"));
        assert!(looks_like_api_version("2024-10-01-preview"));
        assert!(!looks_like_api_version("2025-9-01"));
        assert!(!looks_like_api_version("latest"));
        assert!(!looks_like_api_version("2025-09-01-"));
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%41b"), "Ab");
    }
}
