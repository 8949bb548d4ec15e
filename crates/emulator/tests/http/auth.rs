//! AAD v2 token endpoint and the IMDS-compatible managed identity endpoint.

use aci_emulator::{EmulatorConfig, Faults, Principal};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

async fn token_request(env: &Env, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = env
        .http
        .post(env.emu.token_endpoint())
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// Client credentials: the AAD v2 response shape, and AADSTS errors for bad input.
#[tokio::test]
async fn client_credentials() {
    let env = start(config()).await;
    let c = env.emu.config().clone();
    let secret = c.admin.client_secret.clone().unwrap();
    let scope = "https://management.azure.com/.default";
    let (status, body) = token_request(
        &env,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &c.admin.client_id),
            ("client_secret", &secret),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["ext_expires_in"], 3600);
    assert!(body["access_token"].as_str().is_some_and(|t| t.len() > 20));

    let (status, body) = token_request(
        &env,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &c.admin.client_id),
            ("client_secret", "wrong"),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"], json!([7000215]));
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215:"));
    assert!(
        !body.to_string().contains("wrong"),
        "the bad secret is not echoed"
    );

    let (status, body) = token_request(
        &env,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "unknown"),
            ("client_secret", "x"),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client"))
    );

    let (status, body) = token_request(
        &env,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &c.admin.client_id),
            ("client_secret", &secret),
            ("scope", "https://management.azure.com/"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );

    let r = env
        .http
        .post(format!(
            "{}/other-tenant/oauth2/v2.0/token",
            env.emu.authority_host()
        ))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_codes"], json!([90002]));
}

/// Federated (workload identity) assertions are accepted for configured principals only.
#[tokio::test]
async fn federated_assertion() {
    let fed = Principal {
        client_id: "11111111-1111-1111-1111-111111111111".into(),
        client_secret: None,
        federated_assertions: Some(vec!["the-jwt".into()]),
        object_id: None,
    };
    let env = start(EmulatorConfig {
        principals: vec![fed],
        ..config()
    })
    .await;
    let jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let form = |assertion: &'static str| {
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", "11111111-1111-1111-1111-111111111111"),
            ("client_assertion", assertion),
            ("client_assertion_type", jwt_bearer),
            ("scope", "https://management.azure.com/.default"),
        ]
    };
    let (status, body) = token_request(&env, &form("the-jwt")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let r = env
        .call(
            Method::GET,
            &format!("{}/resourcegroups/rg?api-version={RG_API}", env.sub()),
            None,
            Some(token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let (status, body) = token_request(&env, &form("another-jwt")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_client"))
    );
    // The admin has no federated credential.
    let admin = env.emu.config().admin.client_id.clone();
    let (status, _) = token_request(
        &env,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &admin),
            ("client_assertion", "the-jwt"),
            ("client_assertion_type", jwt_bearer),
            ("scope", "https://management.azure.com/.default"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn create_identity(env: &Env, name: &str) -> Value {
    let path = format!("{}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}?api-version={MI_API}", env.sub());
    let r = env.put(&path, json!({"location": "eastus"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
}

async fn imds(env: &Env, query: &str, metadata: bool) -> reqwest::Response {
    let mut req = env.http.get(format!("{}?{query}", env.emu.imds_endpoint()));
    if metadata {
        req = req.header("Metadata", "true");
    }
    req.send().await.unwrap()
}

/// User-assigned identities: ids assigned by the service, 200 on re-PUT, delete 200 then 204.
#[tokio::test]
async fn user_assigned_identities() {
    let env = start(config()).await;
    let id = create_identity(&env, "uami-1").await;
    assert_eq!(
        id["type"],
        "Microsoft.ManagedIdentity/userAssignedIdentities"
    );
    assert_eq!(id["properties"]["tenantId"], env.emu.config().tenant_id);
    let client_id = id["properties"]["clientId"].as_str().unwrap().to_string();
    assert_eq!(client_id.len(), 36);
    let path = format!("{}?api-version={MI_API}", id["id"].as_str().unwrap());
    let again = env
        .put(&path, json!({"location": "eastus", "tags": {"x": "y"}}))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.body["properties"]["clientId"],
        client_id.as_str(),
        "ids are stable"
    );
    let list = env.get(&format!("{}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities?api-version={MI_API}", env.sub())).await;
    assert_eq!(list.body["value"].as_array().unwrap().len(), 1);
    assert_eq!(env.delete(&path).await.status, StatusCode::OK);
    assert_eq!(env.delete(&path).await.status, StatusCode::NO_CONTENT);
    assert_eq!(env.get(&path).await.code(), "ResourceNotFound");
}

/// IMDS: the Metadata header, identity selection, string numbers, and ARM accepts the token.
#[tokio::test]
async fn imds_tokens() {
    let env = start(config()).await;
    let resource = "resource=https%3A%2F%2Fmanagement.azure.com%2F";
    let r = imds(&env, &format!("api-version=2018-02-01&{resource}"), true).await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "no identity exists yet"
    );

    let a = create_identity(&env, "uami-a").await;
    let r = imds(&env, &format!("api-version=2018-02-01&{resource}"), false).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));

    // One identity: selected without a selector. Numbers are strings.
    let r = imds(&env, &format!("api-version=2018-02-01&{resource}"), true).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    for k in ["expires_in", "expires_on", "not_before"] {
        assert!(
            body[k].as_str().is_some_and(|s| s.parse::<u64>().is_ok()),
            "{k} is a numeric string: {body}"
        );
    }
    assert_eq!(body["resource"], "https://management.azure.com/");
    assert_eq!(body["token_type"], "Bearer");
    let parsed: arm_models::ImdsTokenResponse = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(parsed.expires_in, 3600);
    let token = body["access_token"].as_str().unwrap();
    let r = env
        .call(
            Method::GET,
            &format!("{}/resourcegroups/rg?api-version={RG_API}", env.sub()),
            None,
            Some(token),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "an IMDS token for ARM works on ARM"
    );

    // Two identities: a selector is needed; client_id, object_id and msi_res_id all work.
    let b = create_identity(&env, "uami-b").await;
    let r = imds(&env, &format!("api-version=2019-08-01&{resource}"), true).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    for q in [
        format!(
            "client_id={}",
            b["properties"]["clientId"].as_str().unwrap()
        ),
        format!(
            "object_id={}",
            b["properties"]["principalId"].as_str().unwrap()
        ),
        format!("msi_res_id={}", b["id"].as_str().unwrap()),
    ] {
        let r = imds(
            &env,
            &format!("api-version=2019-08-01&{resource}&{q}"),
            true,
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK, "{q}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["client_id"], b["properties"]["clientId"]);
    }
    let r = imds(
        &env,
        &format!(
            "api-version=2018-02-01&{resource}&client_id=00000000-0000-0000-0000-000000000000"
        ),
        true,
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = imds(&env, &format!("api-version=2030-01-01&{resource}"), true).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = imds(&env, "api-version=2018-02-01", true).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let _ = a;
}

/// IMDS can be made unavailable for a while from its first request, like a warming-up endpoint.
#[tokio::test]
async fn imds_warm_up() {
    let faults = Faults {
        imds_unavailable_secs: 600,
        ..Faults::default()
    };
    let env = start(EmulatorConfig { faults, ..config() }).await;
    let r = imds(
        &env,
        "api-version=2018-02-01&resource=https://management.azure.com/",
        true,
    )
    .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    env.emu.set_faults(Faults::default());
    create_identity(&env, "uami").await;
    let r = imds(
        &env,
        "api-version=2018-02-01&resource=https://management.azure.com/",
        true,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// Identities can be seeded from the config with fixed ids; IMDS serves them at once.
#[tokio::test]
async fn seeded_identities() {
    let seed = aci_emulator::IdentitySeed {
        resource_group: "rg".into(),
        name: "worker".into(),
        location: None,
        client_id: Some("22222222-2222-2222-2222-222222222222".into()),
        principal_id: None,
    };
    let env = start(EmulatorConfig {
        identities: vec![seed.clone()],
        ..config()
    })
    .await;
    let ids = env.emu.identities();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].client_id, "22222222-2222-2222-2222-222222222222");
    let r = imds(&env, "api-version=2018-02-01&resource=https://management.azure.com/&client_id=22222222-2222-2222-2222-222222222222", true).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = env
        .get(&format!("{}?api-version={MI_API}", ids[0].id))
        .await;
    assert_eq!(
        r.body["properties"]["clientId"],
        "22222222-2222-2222-2222-222222222222"
    );
    assert_eq!(r.body["location"], "eastus");
    // A seed in a resource group that does not exist is a configuration error.
    let bad = aci_emulator::IdentitySeed {
        resource_group: "nope".into(),
        ..seed
    };
    let err = aci_emulator::start(EmulatorConfig {
        identities: vec![bad],
        ..config()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("resource group 'nope'"), "{err}");
}
