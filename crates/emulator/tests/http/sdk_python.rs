//! Azure's own Python SDK against the emulator: model (de)serialization, LRO polling,
//! paging, error mapping and `ManagedIdentityCredential` through the emulator's IMDS.
//!
//! Needs the pinned prefect3 venv with azure-identity and azure-mgmt-containerinstance
//! (python/requirements-prefect3.txt). `scripts/test.sh` exports `PREFECT_ACI_VENV3`; when
//! it is set the venv is required, otherwise the default venv location is tried and the test
//! reports that it did not run when the venv is absent.

use std::path::PathBuf;

use aci_emulator::EmulatorConfig;
use serde_json::json;

use crate::support::*;

pub fn venv_python() -> Option<PathBuf> {
    let required = std::env::var_os("PREFECT_ACI_VENV3");
    let dir = required.clone().map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/prefect-aci/venvs/prefect3"))
    })?;
    let python = dir.join("bin/python");
    let has_sdk = std::process::Command::new(&python)
        .args(["-c", "import azure.mgmt.containerinstance, azure.identity"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_sdk {
        assert!(
            required.is_none(),
            "PREFECT_ACI_VENV3={} lacks the Azure SDK; reinstall python/requirements-prefect3.txt",
            dir.display()
        );
        eprintln!(
            "sdk_python: NOT RUN (no venv with the Azure SDK at {})",
            dir.display()
        );
        return None;
    }
    Some(python)
}

/// The Python SDK creates, inspects, lists, stops, starts and deletes container groups.
#[tokio::test]
async fn azure_python_sdk_drives_the_emulator() {
    let Some(python) = venv_python() else { return };
    let env = start(EmulatorConfig {
        page_size: 2,
        ..config()
    })
    .await;
    let uami = env
        .put(
            &format!("{}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/sdk?api-version={MI_API}", env.sub()),
            json!({"location": "eastus"}),
        )
        .await
        .body;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/http/sdk_aci.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .env("ARM_URL", env.emu.arm_url())
        .env("SUBSCRIPTION_ID", &env.emu.config().subscription_id)
        .env(
            "UAMI_CLIENT_ID",
            uami["properties"]["clientId"].as_str().unwrap(),
        )
        .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", env.emu.arm_url())
        .env_remove("AZURE_CLIENT_ID")
        .env_remove("IDENTITY_ENDPOINT")
        .env_remove("MSI_ENDPOINT")
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("SDK OK"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let stats = env.emu.stats();
    assert!(stats.count("imds.token", 200) >= 1);
    assert!(
        stats.total("operations.get") >= 3,
        "the SDK polled Azure-AsyncOperation"
    );
    assert!(env.emu.groups().is_empty());
}
