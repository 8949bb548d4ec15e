//! ARM template deployments: async lifecycle, resources created through the normal handlers,
//! `InvalidTemplate` for what the emulator cannot do, and delete keeping the resources.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{config, start, Env, ACI, RG_API};

fn deployment(env: &Env, name: &str) -> String {
    format!(
        "{}/resourcegroups/rg/providers/Microsoft.Resources/deployments/{name}?api-version=2025-04-01",
        env.sub()
    )
}

fn template(image: &str) -> Value {
    json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {"container_group_name": {"type": "string"}},
        "variables": {"idName": "[concat('id-', parameters('container_group_name'))]"},
        "resources": [
            {
                "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
                "apiVersion": "2023-01-31",
                "name": "[variables('idName')]",
                "location": "[resourceGroup().location]"
            },
            {
                "type": "Microsoft.ContainerInstance/containerGroups",
                "apiVersion": "2023-05-01",
                "name": "[parameters('container_group_name')]",
                "location": "[resourceGroup().location]",
                "dependsOn": ["[resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', variables('idName'))]"],
                "identity": {"type": "UserAssigned", "userAssignedIdentities": {
                    "[resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', variables('idName'))]": {}
                }},
                "properties": {
                    "osType": "Linux",
                    "restartPolicy": "Never",
                    "containers": [{"name": "job", "properties": {
                        "image": image,
                        "command": ["/bin/sh", "-c", "echo from-template"],
                        "resources": {"requests": {"cpu": 1, "memoryInGB": 1}}
                    }}]
                }
            }
        ],
        "outputs": {"groupName": {"type": "string", "value": "[parameters('container_group_name')]"}}
    })
}

fn body(template: Value, group: &str) -> Value {
    json!({"properties": {
        "mode": "Incremental",
        "template": template,
        "parameters": {"container_group_name": {"value": group}}
    }})
}

#[tokio::test]
async fn deployment_creates_resources_through_the_normal_paths_and_delete_keeps_them() {
    let env = start(config()).await;
    let r = env
        .put(&deployment(&env, "d1"), body(template("shell:1"), "tg"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["properties"]["provisioningState"], "Accepted");
    let op = r
        .header("azure-asyncoperation")
        .expect("async op")
        .to_string();
    assert!(op.contains("/deployments/d1/operationStatuses/"), "{op}");
    assert_eq!(env.wait_op(&op).await, "Succeeded");

    let d = env.get(&deployment(&env, "d1")).await;
    assert_eq!(d.body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(d.body["properties"]["outputs"]["groupName"]["value"], "tg");
    let resources = d.body["properties"]["outputResources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(resources.len(), 2, "{}", d.body);
    let ops = env
        .get(&deployment(&env, "d1").replace("?api-version", "/operations?api-version"))
        .await;
    let states: Vec<&str> = ops.body["value"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["properties"]["provisioningState"].as_str())
        .collect();
    assert_eq!(states, ["Succeeded", "Succeeded"], "{}", ops.body);

    // The group is a real one: it ran, and its identity is the template's identity.
    let g = env.wait_state("tg", &["Succeeded"]).await;
    let ids = g["identity"]["userAssignedIdentities"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(
        ids.keys()
            .any(|k| k.ends_with("/userAssignedIdentities/id-tg")),
        "{g}"
    );
    assert!(env.logs("tg", "job", "").await.contains("from-template"));

    // Deleting the deployment removes the record only.
    let del = env.delete(&deployment(&env, "d1")).await;
    assert_eq!(del.status, StatusCode::ACCEPTED);
    let loc = del.header("location").expect("Location").to_string();
    assert_eq!(env.get(&loc).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        env.get(&deployment(&env, "d1")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.get(&format!("{}?api-version={ACI}", env.cg("tg")))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        env.delete(&deployment(&env, "d1")).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn a_failing_resource_fails_the_deployment_with_details() {
    let env = start(config()).await;
    // An image the table does not know: the group PUT is refused with InaccessibleImage.
    let r = env
        .put(&deployment(&env, "bad"), body(template("nowhere:1"), "tg2"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let op = r
        .header("azure-asyncoperation")
        .expect("async op")
        .to_string();
    assert_eq!(env.wait_op(&op).await, "Failed");
    let d = env.get(&deployment(&env, "bad")).await;
    assert_eq!(d.body["properties"]["provisioningState"], "Failed");
    assert_eq!(d.body["properties"]["error"]["code"], "DeploymentFailed");
    assert_eq!(
        d.body["properties"]["error"]["details"][0]["code"], "InaccessibleImage",
        "{}",
        d.body
    );
    // The failed resource is listed among the deployment's operations with its error.
    let ops_path = deployment(&env, "bad").replace("?api-version", "/operations?api-version");
    let ops = env.get(&ops_path).await;
    assert_eq!(ops.status, StatusCode::OK);
    let failed: Vec<&Value> = ops.body["value"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["properties"]["provisioningState"] == "Failed")
        .collect();
    assert_eq!(failed.len(), 1, "{}", ops.body);
    assert_eq!(
        failed[0]["properties"]["statusMessage"]["error"]["code"],
        "InaccessibleImage"
    );
    assert_eq!(
        failed[0]["properties"]["targetResource"]["resourceType"],
        "Microsoft.ContainerInstance/containerGroups"
    );
    let status = env.get(&op).await;
    assert_eq!(status.body["error"]["code"], "DeploymentFailed");
}

#[tokio::test]
async fn unsupported_things_are_invalid_template() {
    let env = start(config()).await;
    let mut t = template("shell:1");
    t["resources"] = json!([{"type": "Microsoft.Storage/storageAccounts", "apiVersion": "2023-01-01",
        "name": "[parameters('container_group_name')]", "location": "eastus"}]);
    let r = env.put(&deployment(&env, "x"), body(t, "g")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "InvalidTemplate");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("Microsoft.Storage/storageAccounts"));

    let mut t = template("shell:1");
    t["outputs"]["x"] = json!({"type": "string", "value": "[reference('foo').bar]"});
    let r = env.put(&deployment(&env, "x"), body(t, "g")).await;
    assert_eq!(r.code(), "InvalidTemplate", "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("reference"),
        "{}",
        r.body
    );

    let r = env
        .put(&deployment(&env, "x"), json!({"properties": {"mode": "Incremental", "templateLink": {"uri": "https://example.com/t.json"}}}))
        .await;
    assert_eq!(r.code(), "InvalidTemplate");
    // Nothing was recorded or created.
    assert_eq!(
        env.get(&deployment(&env, "x")).await.status,
        StatusCode::NOT_FOUND
    );
    let rg = env.get(&format!("{}/resourcegroups/nope/providers/Microsoft.Resources/deployments/x?api-version={RG_API}", env.sub())).await;
    assert_eq!(rg.code(), "ResourceGroupNotFound");
}
