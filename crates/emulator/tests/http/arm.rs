//! ARM plumbing: api-version checks, case-insensitive paths, ids, auth, resource groups.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

/// `api-version` is required, must be well-formed, and must be supported for the type.
#[tokio::test]
async fn api_version_is_required_and_checked() {
    let env = start(config()).await;
    let base = env.cg("x");
    let cases = [
        (
            "".to_string(),
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
        ),
        (
            "?api-version=2020-01-01".to_string(),
            StatusCode::BAD_REQUEST,
            "NoRegisteredProviderFound",
        ),
        (
            "?api-version=latest".to_string(),
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
        ),
        (
            format!("?api-version={ACI}"),
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
        ),
        (
            "?api-version=2023-05-01".to_string(),
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
        ),
        // Resource group api-versions are not ACI api-versions.
        (
            "?api-version=2025-04-01".to_string(),
            StatusCode::BAD_REQUEST,
            "NoRegisteredProviderFound",
        ),
    ];
    for (query, status, code) in cases {
        let r = env.get(&format!("{base}{query}")).await;
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "query {query:?}: {}",
            r.body
        );
        assert!(r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
}

/// Fixed path segments match case-insensitively; resource names keep their case.
#[tokio::test]
async fn path_segments_are_case_insensitive() {
    let env = start(config()).await;
    assert_eq!(
        env.create("cg1", shell_group("exit 0", "Never")).await,
        "Succeeded"
    );
    let sub = env.sub();
    for path in [
        format!(
            "{sub}/resourcegroups/rg/providers/microsoft.containerinstance/containergroups/cg1"
        ),
        format!(
            "{sub}/RESOURCEGROUPS/RG/PROVIDERS/Microsoft.ContainerInstance/containerGroups/cg1"
        ),
    ] {
        let r = env.get(&format!("{path}?api-version={ACI}")).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        assert_eq!(r.body["name"], "cg1");
    }
}

/// Every response carries a request id and echoes the caller's correlation id.
#[tokio::test]
async fn request_and_correlation_ids() {
    let env = start(config()).await;
    let r = env
        .http
        .get(env.url(&format!(
            "{}/resourcegroups/rg?api-version={RG_API}",
            env.sub()
        )))
        .bearer_auth(&env.token)
        .header("x-ms-correlation-request-id", "corr-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-ms-correlation-request-id"], "corr-123");
    let id = r.headers()["x-ms-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 36);
    // Errors carry them too, and a fresh correlation id when none was sent.
    let r = env
        .call(
            Method::GET,
            &format!("{}/resourcegroups/rg", env.sub()),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("x-ms-request-id").is_some());
    assert!(r.header("x-ms-correlation-request-id").is_some());
}

/// Missing, malformed, unknown, expired and wrong-audience tokens are rejected like ARM.
#[tokio::test]
async fn bearer_tokens_are_validated() {
    let env = start(config()).await;
    let path = format!("{}/resourcegroups/rg?api-version={RG_API}", env.sub());
    let r = env.call(Method::GET, &path, None, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "AuthenticationFailed")
    );
    assert!(r
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("Bearer")));
    let r = env
        .call(Method::GET, &path, None, Some("not-a-token"))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken")
    );
    let r = env.call(Method::GET, &path, None, Some(&env.token)).await;
    assert_eq!(r.status, StatusCode::OK);

    // A token for another audience is not an ARM token.
    let c = env.emu.config();
    let other: serde_json::Value = env
        .http
        .post(env.emu.token_endpoint())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", c.admin.client_id.as_str()),
            ("client_secret", c.admin.client_secret.as_deref().unwrap()),
            ("scope", "https://vault.azure.net/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = env
        .call(Method::GET, &path, None, other["access_token"].as_str())
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken")
    );
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("wrong audience"));

    // Tokens that expire immediately.
    let expired = start(aci_emulator::EmulatorConfig {
        token_lifetime_secs: 0,
        ..config()
    })
    .await;
    let path = format!("{}/resourcegroups/rg?api-version={RG_API}", expired.sub());
    let r = expired.get(&path).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "ExpiredAuthenticationToken")
    );
}

/// With `require_auth: false` anonymous requests are served.
#[tokio::test]
async fn auth_can_be_disabled() {
    let env = start(aci_emulator::EmulatorConfig {
        require_auth: false,
        ..config()
    })
    .await;
    let r = env
        .call(
            Method::GET,
            &format!("{}/resourcegroups/rg?api-version={RG_API}", env.sub()),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

/// Resource groups: create 201, update 200, HEAD, GET, 404s, delete; unknown subscription.
#[tokio::test]
async fn resource_groups() {
    let env = start(config()).await;
    let path = format!("{}/resourcegroups/jobs?api-version={RG_API}", env.sub());
    let r = env.get(&path).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "ResourceGroupNotFound")
    );
    let r = env.call(Method::HEAD, &path, None, Some(&env.token)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = env
        .put(&path, json!({"location": "eastus", "tags": {"a": "b"}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["id"], format!("{}/resourceGroups/jobs", env.sub()));
    assert_eq!(r.body["properties"]["provisioningState"], "Succeeded");
    let r = env.put(&path, json!({"location": "eastus"})).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = env.put(&path, json!({"location": "westus"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = env.call(Method::HEAD, &path, None, Some(&env.token)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // A container group in an unknown resource group.
    let r = env
        .put(
            &format!("{}/resourceGroups/nope/providers/Microsoft.ContainerInstance/containerGroups/x?api-version={ACI}", env.sub()),
            shell_group("true", "Never"),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "ResourceGroupNotFound")
    );
    let r = env.delete(&path).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = env.get(&path).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = env.get(&format!("/subscriptions/00000000-0000-0000-0000-00000000ffff/resourcegroups/rg?api-version={RG_API}")).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "SubscriptionNotFound")
    );
}

/// Provider registration and metadata list the supported api-versions.
#[tokio::test]
async fn providers() {
    let env = start(config()).await;
    let r = env
        .post(&format!(
            "{}/providers/Microsoft.ContainerInstance/register?api-version={RG_API}",
            env.sub()
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["registrationState"], "Registered");
    let r = env
        .get(&format!(
            "{}/providers/microsoft.containerinstance?api-version={RG_API}",
            env.sub()
        ))
        .await;
    let types = r.body["resourceTypes"].as_array().unwrap();
    let cg = types
        .iter()
        .find(|t| t["resourceType"] == "containerGroups")
        .unwrap();
    assert!(cg["apiVersions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == ACI));
}

/// Unknown resource types answer like ARM rather than 500.
#[tokio::test]
async fn unknown_types() {
    let env = start(config()).await;
    let r = env
        .get(&format!(
            "{}/resourceGroups/rg/providers/Microsoft.Foo/bars/x?api-version=2024-01-01",
            env.sub()
        ))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "InvalidResourceType")
    );
    let r = env.get("/nothing/here").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// Unregistered providers answer MissingSubscriptionRegistration until registered.
#[tokio::test]
async fn provider_registration_is_required_when_configured() {
    let env = start(aci_emulator::EmulatorConfig {
        unregistered_providers: vec!["Microsoft.ContainerInstance".into()],
        ..config()
    })
    .await;
    let path = format!("{}?api-version={ACI}", env.cg("early"));
    let r = env.get(&path).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "MissingSubscriptionRegistration")
    );
    let provider = format!(
        "{}/providers/Microsoft.ContainerInstance?api-version={RG_API}",
        env.sub()
    );
    assert_eq!(
        env.get(&provider).await.body["registrationState"],
        "NotRegistered"
    );
    let r = env
        .post(&format!(
            "{}/providers/Microsoft.ContainerInstance/register?api-version={RG_API}",
            env.sub()
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        env.get(&provider).await.body["registrationState"],
        "Registered"
    );
    assert_eq!(env.get(&path).await.code(), "ResourceNotFound");
    // Other providers were registered from the start.
    let r = env.get(&format!("{}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x?api-version={MI_API}", env.sub())).await;
    assert_eq!(r.code(), "ResourceNotFound");
}
