//! HTTPS mode: a generated CA that clients trust, the same API over TLS, and MSAL-based
//! credentials (which require an https authority) working against it.

use aci_emulator::EmulatorConfig;
use reqwest::StatusCode;
use serde_json::Value;

use crate::sdk_python::venv_python;
use crate::support::*;

fn tls_client(ca_pem: &[u8]) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(ca_pem).expect("ca pem");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("client")
}

/// The CA is written to disk; tokens, discovery and ARM work over https with it trusted.
#[tokio::test]
async fn https_with_generated_ca() {
    let emu = aci_emulator::start(EmulatorConfig {
        tls: true,
        ..config()
    })
    .await
    .expect("starts");
    assert!(emu.arm_url().starts_with("https://127.0.0.1:"));
    let ca_path = emu.ca_pem_path().expect("ca path");
    let ca = std::fs::read(&ca_path).unwrap();
    assert!(String::from_utf8_lossy(&ca).contains("BEGIN CERTIFICATE"));
    let bundle = std::fs::read_to_string(emu.ca_bundle_path().unwrap()).unwrap();
    assert!(bundle.contains(String::from_utf8_lossy(&ca).trim()));
    let http = tls_client(&ca);
    let c = emu.config();
    let oidc: Value = http
        .get(format!(
            "{}/{}/v2.0/.well-known/openid-configuration",
            emu.authority_host(),
            c.tenant_id
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(oidc["token_endpoint"], emu.token_endpoint());
    let token = admin_token(&http, &emu).await;
    let r = http
        .get(format!(
            "{}/subscriptions/{}/resourcegroups/rg?api-version={RG_API}",
            emu.arm_url(),
            c.subscription_id
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A container reaches the scoped IMDS over https, trusting the CA through SSL_CERT_FILE.
    let env = Env { emu, http, token };
    let uami = env
        .put(
            &format!("{}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/tls?api-version={MI_API}", env.sub()),
            serde_json::json!({"location": "eastus"}),
        )
        .await
        .body;
    let script = "import json,os,urllib.request as u; r=u.Request(os.environ['AZURE_POD_IDENTITY_AUTHORITY_HOST']+'/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/', headers={'Metadata':'true'}); print(json.load(u.urlopen(r))['client_id'])";
    let mut body = shell_group("", "Never");
    body["identity"] = serde_json::json!({"type": "UserAssigned", "userAssignedIdentities": {uami["id"].as_str().unwrap(): {}}});
    body["properties"]["containers"][0]["properties"]["command"] =
        serde_json::json!(["python3", "-c", script]);
    env.create("tls-imds", body).await;
    let g = env.wait_state("tls-imds", &["Succeeded", "Failed"]).await;
    let logs = env.logs("tls-imds", "job", "").await;
    assert_eq!(
        g["properties"]["instanceView"]["state"], "Succeeded",
        "{logs}"
    );
    assert_eq!(
        logs.trim(),
        uami["properties"]["clientId"].as_str().unwrap()
    );
    let emu = env.emu;
    // A client that does not trust the CA fails the handshake.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let untrusting = reqwest::Client::builder()
        .tls_certs_only([])
        .build()
        .unwrap();
    assert!(untrusting.get(emu.arm_url()).send().await.is_err());
    emu.shutdown().await;
    assert!(
        !ca_path.exists(),
        "the temporary working directory is removed at shutdown"
    );
}

/// Azure's Python SDK with `ClientSecretCredential` (MSAL) and the stock https-only
/// bearer policy runs a job end to end; `WorkloadIdentityCredential` (federated assertion
/// from a file) lists groups.
#[tokio::test]
async fn azure_python_sdk_over_https() {
    let Some(python) = venv_python() else { return };
    let federated = aci_emulator::Principal {
        client_id: "33333333-3333-3333-3333-333333333333".into(),
        client_secret: None,
        federated_assertions: Some(vec!["projected-service-account-token".into()]),
        object_id: None,
    };
    let emu = aci_emulator::start(EmulatorConfig {
        tls: true,
        principals: vec![federated],
        ..config()
    })
    .await
    .expect("starts");
    let token_file = emu.work_dir().join("federated-token");
    std::fs::write(&token_file, "projected-service-account-token").unwrap();
    let c = emu.config();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/http/sdk_https.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .env("ARM_URL", emu.arm_url())
        .env("SUBSCRIPTION_ID", &c.subscription_id)
        .env("TENANT_ID", &c.tenant_id)
        .env("CLIENT_ID", &c.admin.client_id)
        .env("CLIENT_SECRET", c.admin.client_secret.as_deref().unwrap())
        .env("REQUESTS_CA_BUNDLE", emu.ca_bundle_path().unwrap())
        .env(
            "FEDERATED_CLIENT_ID",
            "33333333-3333-3333-3333-333333333333",
        )
        .env("FEDERATED_TOKEN_FILE", &token_file)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("SDK HTTPS OK"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        emu.stats().count("aad.token", 200) >= 2,
        "{:?}",
        emu.stats()
    );
    emu.shutdown().await;
}
