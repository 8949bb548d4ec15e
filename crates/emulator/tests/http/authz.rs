//! Role definitions, role assignments, container registries, and RBAC enforcement.

use std::time::Duration;

use aci_emulator::EmulatorConfig;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{config, start, Env, ACI, MI_API};

const AUTHZ: &str = "2022-04-01";
const ACR: &str = "2025-04-01";
const ACR_PULL: &str = "7f951dda-4ed3-4680-a7ca-43fe172d538d";

fn rg_scope(env: &Env) -> String {
    format!("{}/resourceGroups/rg", env.sub())
}

fn role_def(scope: &str, guid: &str) -> String {
    format!("{scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}?api-version={AUTHZ}")
}

fn assignment(scope: &str, name: &str) -> String {
    format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version={AUTHZ}")
}

fn custom_role(env: &Env, name: &str, actions: &[&str]) -> Value {
    json!({"properties": {
        "roleName": name,
        "description": "test role",
        "type": "CustomRole",
        "permissions": [{"actions": actions, "notActions": []}],
        "assignableScopes": [rg_scope(env)]
    }})
}

async fn identity(env: &Env, name: &str) -> Value {
    let r = env
        .put(
            &format!("{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}?api-version={MI_API}", rg_scope(env)),
            json!({"location": "eastus"}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    r.body
}

async fn assign(
    env: &Env,
    scope: &str,
    principal: &str,
    role_guid: &str,
    with_type: bool,
) -> crate::support::Resp {
    let mut props = json!({
        "roleDefinitionId": format!("{}/providers/Microsoft.Authorization/roleDefinitions/{role_guid}", env.sub()),
        "principalId": principal,
    });
    if with_type {
        props["principalType"] = json!("ServicePrincipal");
    }
    env.put(
        &assignment(scope, &uuid::Uuid::new_v4().to_string()),
        json!({"properties": props}),
    )
    .await
}

#[tokio::test]
async fn role_definitions_builtins_custom_and_name_conflicts() {
    let env = start(config()).await;
    let list = env
        .get(&format!(
            "{}/providers/Microsoft.Authorization/roleDefinitions?api-version={AUTHZ}",
            env.sub()
        ))
        .await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<&str> = list.body["value"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["properties"]["roleName"].as_str())
        .collect();
    for n in ["Owner", "Contributor", "AcrPull"] {
        assert!(names.contains(&n), "{names:?}");
    }
    let acr = env.get(&role_def(&env.sub(), ACR_PULL)).await;
    assert_eq!(
        acr.body["properties"]["permissions"][0]["actions"][0],
        "Microsoft.ContainerRegistry/registries/pull/read"
    );

    let guid = uuid::Uuid::new_v4().to_string();
    let r = env
        .put(
            &role_def(&rg_scope(&env), &guid),
            custom_role(
                &env,
                "Runner",
                &["Microsoft.ContainerInstance/containerGroups/*"],
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["properties"]["type"], "CustomRole");
    // Same GUID again: an update.
    let r = env
        .put(
            &role_def(&rg_scope(&env), &guid),
            custom_role(&env, "Runner", &["*/read"]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Created at a scope that does not contain its assignable scopes: refused.
    let elsewhere = format!("{}/resourceGroups/other", env.sub());
    let r = env
        .put(
            &role_def(&elsewhere, &uuid::Uuid::new_v4().to_string()),
            custom_role(&env, "Elsewhere", &["*/read"]),
        )
        .await;
    assert_eq!(r.code(), "InvalidRoleDefinitionScope", "{}", r.body);
    // Same name under another GUID: 409.
    let other = uuid::Uuid::new_v4().to_string();
    let r = env
        .put(
            &role_def(&rg_scope(&env), &other),
            custom_role(&env, "runner", &["*/read"]),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "RoleDefinitionWithSameNameExists");
    let filtered = env
        .get(&format!("{}/providers/Microsoft.Authorization/roleDefinitions?api-version={AUTHZ}&$filter=roleName%20eq%20'Runner'", rg_scope(&env)))
        .await;
    assert_eq!(
        filtered.body["value"].as_array().map(Vec::len),
        Some(1),
        "{}",
        filtered.body
    );
    assert_eq!(
        env.delete(&role_def(&rg_scope(&env), &guid)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        env.get(&role_def(&rg_scope(&env), &guid)).await.code(),
        "RoleDefinitionDoesNotExist"
    );
}

#[tokio::test]
async fn role_assignments_conflicts_and_principal_replication_lag() {
    let env = start(EmulatorConfig {
        principal_replication_lag_ms: 60_000,
        ..config()
    })
    .await;
    let id = identity(&env, "fresh").await;
    let principal = id["properties"]["principalId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // A fresh principal is unknown without principalType...
    let r = assign(&env, &rg_scope(&env), &principal, ACR_PULL, false).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "PrincipalNotFound");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("principalType"));
    // ...and accepted with it.
    let r = assign(&env, &rg_scope(&env), &principal, ACR_PULL, true).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let name = r.body["name"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        env.get(&assignment(&rg_scope(&env), &name)).await.status,
        StatusCode::OK
    );
    // The same principal + role + scope under another name: 409.
    let r = assign(&env, &rg_scope(&env), &principal, ACR_PULL, true).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "RoleAssignmentExists");
    // Listed with a principal filter.
    let list = env
        .get(&format!("{}/providers/Microsoft.Authorization/roleAssignments?api-version={AUTHZ}&$filter=principalId%20eq%20'{principal}'", rg_scope(&env)))
        .await;
    assert_eq!(list.body["value"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        env.delete(&assignment(&rg_scope(&env), &name)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        env.delete(&assignment(&rg_scope(&env), &name)).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        env.get(&assignment(&rg_scope(&env), &name)).await.code(),
        "RoleAssignmentNotFound"
    );
}

#[tokio::test]
async fn identities_become_known_after_the_lag() {
    let env = start(EmulatorConfig {
        principal_replication_lag_ms: 300,
        ..config()
    })
    .await;
    let id = identity(&env, "later").await;
    let principal = id["properties"]["principalId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = assign(&env, &rg_scope(&env), &principal, ACR_PULL, false).await;
        if r.status == StatusCode::CREATED {
            break;
        }
        assert_eq!(r.code(), "PrincipalNotFound");
        assert!(
            std::time::Instant::now() < deadline,
            "principal never replicated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn registries_names_async_create_and_checks() {
    let env = start(EmulatorConfig {
        taken_registry_names: vec!["takenreg".into()],
        ..config()
    })
    .await;
    let check = |name: &str| {
        let body = json!({"name": name, "type": "Microsoft.ContainerRegistry/registries"});
        let path = format!(
            "{}/providers/Microsoft.ContainerRegistry/checkNameAvailability?api-version={ACR}",
            env.sub()
        );
        let env = &env;
        async move {
            env.call(Method::POST, &path, Some(body), Some(&env.token))
                .await
                .body
        }
    };
    assert_eq!(check("takenreg").await["nameAvailable"], false);
    assert_eq!(check("takenreg").await["reason"], "AlreadyExists");
    assert_eq!(check("ab").await["reason"], "Invalid");
    assert_eq!(check("freereg1").await["nameAvailable"], true);

    let reg = format!(
        "{}/providers/Microsoft.ContainerRegistry/registries/freereg1?api-version={ACR}",
        rg_scope(&env)
    );
    let r = env
        .put(
            &reg,
            json!({"location": "eastus", "sku": {"name": "Basic"}, "tags": {"a": "b"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["properties"]["loginServer"], "freereg1.azurecr.io");
    let op = r
        .header("azure-asyncoperation")
        .expect("async op")
        .to_string();
    assert_eq!(env.wait_op(&op).await, "Succeeded");
    assert_eq!(
        env.get(&reg).await.body["properties"]["provisioningState"],
        "Succeeded"
    );
    assert_eq!(check("FreeReg1").await["nameAvailable"], false);
    let again = env
        .put(
            &reg,
            json!({"location": "eastus", "sku": {"name": "Basic"}}),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);

    let taken = format!(
        "{}/providers/Microsoft.ContainerRegistry/registries/takenreg?api-version={ACR}",
        rg_scope(&env)
    );
    let r = env
        .put(
            &taken,
            json!({"location": "eastus", "sku": {"name": "Basic"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "AlreadyInUse");
    let bad = format!(
        "{}/providers/Microsoft.ContainerRegistry/registries/bad-name?api-version={ACR}",
        rg_scope(&env)
    );
    assert_eq!(
        env.put(
            &bad,
            json!({"location": "eastus", "sku": {"name": "Basic"}})
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(env.delete(&reg).await.status, StatusCode::OK);
    assert_eq!(env.get(&reg).await.status, StatusCode::NOT_FOUND);
}

/// A token for a user-assigned identity from the emulator's IMDS.
async fn imds_token(env: &Env, client_id: &str) -> String {
    let r = env
        .http
        .get(format!(
            "{}?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F&client_id={client_id}",
            env.emu.imds_endpoint()
        ))
        .header("Metadata", "true")
        .send()
        .await
        .expect("imds");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    body["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn acr_group(identity_id: &str) -> Value {
    json!({
        "location": "eastus",
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {identity_id: {}}},
        "properties": {
            "osType": "Linux",
            "restartPolicy": "Never",
            "imageRegistryCredentials": [{"server": "myacr.azurecr.io", "identity": identity_id}],
            "containers": [{"name": "job", "properties": {
                "image": "myacr.azurecr.io/flows:1",
                "resources": {"requests": {"cpu": 1, "memoryInGB": 1}}
            }}]
        }
    })
}

#[tokio::test]
async fn rbac_refuses_without_assignments_and_allows_with_them() {
    let env = start(EmulatorConfig {
        rbac: true,
        principal_replication_lag_ms: 0,
        ..config()
    })
    .await;
    // The admin is Owner on the subscription.
    let id = identity(&env, "worker").await;
    let principal = id["properties"]["principalId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let client = id["properties"]["clientId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let identity_id = id["id"].as_str().unwrap_or_default().to_string();
    let reg = format!(
        "{}/providers/Microsoft.ContainerRegistry/registries/myacr?api-version={ACR}",
        rg_scope(&env)
    );
    let r = env
        .put(
            &reg,
            json!({"location": "eastus", "sku": {"name": "Basic"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    let token = imds_token(&env, &client).await;
    let cg = format!("{}?api-version={ACI}", env.cg("viaidentity"));
    // No role: 403 naming the action and the scope.
    let r = env
        .call(
            Method::PUT,
            &cg,
            Some(acr_group(&identity_id)),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.code(), "AuthorizationFailed");
    let msg = r.body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("Microsoft.ContainerInstance/containerGroups/write"),
        "{msg}"
    );
    assert!(msg.contains(&principal), "{msg}");

    // A custom role with containerGroups/* but no identity assign: linked refusal.
    let guid = uuid::Uuid::new_v4().to_string();
    let r = env
        .put(
            &role_def(&rg_scope(&env), &guid),
            custom_role(
                &env,
                "CI",
                &["Microsoft.ContainerInstance/containerGroups/*"],
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        assign(&env, &rg_scope(&env), &principal, &guid, true)
            .await
            .status,
        StatusCode::CREATED
    );
    let r = env
        .call(
            Method::PUT,
            &cg,
            Some(acr_group(&identity_id)),
            Some(&token),
        )
        .await;
    assert_eq!(r.code(), "LinkedAuthorizationFailed", "{}", r.body);

    // With assign/action but no AcrPull on the registry: the image is inaccessible.
    let r = env
        .put(
            &role_def(&rg_scope(&env), &guid),
            custom_role(
                &env,
                "CI",
                &[
                    "Microsoft.ContainerInstance/containerGroups/*",
                    "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
                ],
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = env
        .call(
            Method::PUT,
            &cg,
            Some(acr_group(&identity_id)),
            Some(&token),
        )
        .await;
    assert_eq!(r.code(), "InaccessibleImage", "{}", r.body);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("AcrPull"));

    // AcrPull on the registry: the identity creates and runs the group.
    let registry_scope = format!(
        "{}/providers/Microsoft.ContainerRegistry/registries/myacr",
        rg_scope(&env)
    );
    assert_eq!(
        assign(&env, &registry_scope, &principal, ACR_PULL, true)
            .await
            .status,
        StatusCode::CREATED
    );
    let r = env
        .call(
            Method::PUT,
            &cg,
            Some(acr_group(&identity_id)),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Operation polls are not separately authorised.
    let op = r
        .header("azure-asyncoperation")
        .expect("async op")
        .to_string();
    let status = env.call(Method::GET, &op, None, Some(&token)).await;
    assert_eq!(status.status, StatusCode::OK);
    // Outside the role's scope: refused.
    let r = env
        .call(
            Method::GET,
            &format!("{}/resourcegroups?api-version=2025-04-01", env.sub()),
            None,
            Some(&token),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The identity cannot grant itself more.
    let body = json!({"properties": {
        "roleDefinitionId": format!("{}/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635", env.sub()),
        "principalId": principal, "principalType": "ServicePrincipal"}});
    let r = env
        .call(
            Method::PUT,
            &assignment(&rg_scope(&env), &uuid::Uuid::new_v4().to_string()),
            Some(body),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("Microsoft.Authorization/roleAssignments/write"),
        "{}",
        r.body
    );
}
