//! The emulator and an ACI worker wired together for end-to-end tests.

use std::path::PathBuf;
use std::time::Duration;

use aci_emulator::config::{EmulatorConfig, ImageRule, ResourceGroupSeed};
use aci_emulator::Emulator;
use azure_arm::{AzureCloud, AzureEnvironmentConfig, Secret};
use prefect_aci_worker::aci::{AciInfrastructure, AciOptions};
use prefect_aci_worker::WorkerConfig;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const RG: &str = "prefect-rg";

/// The pinned Prefect 3 venv `make test` prepared.
pub fn venv3() -> PathBuf {
    std::env::var_os("PREFECT_ACI_VENV3")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/prefect-aci/venvs/prefect3")
        })
}

/// The pinned Prefect 2 venv `make test` prepared.
pub fn venv2() -> PathBuf {
    std::env::var_os("PREFECT_ACI_VENV2")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/prefect-aci/venvs/prefect2")
        })
}

/// Directory with the test flows (the "image" contents).
pub fn flows_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// An emulator whose Prefect images run Prefect 3 with the test flows.
pub async fn emulator() -> Emulator {
    emulator_with(venv3()).await
}

/// An emulator whose Prefect images run Prefect 2 with the test flows.
pub async fn emulator2() -> Emulator {
    emulator_with(venv2()).await
}

/// An emulator whose Prefect images run the given venv's Prefect with the test flows.
pub async fn emulator_with(venv: PathBuf) -> Emulator {
    let mut config = EmulatorConfig::default();
    config.resource_groups.push(ResourceGroupSeed {
        name: RG.into(),
        location: "eastus".into(),
    });
    let mut rule = ImageRule {
        image: "prefecthq/prefect:*".into(),
        working_dir: Some(flows_dir()),
        path_prepend: vec![venv.join("bin")],
        ..Default::default()
    };
    rule.entrypoint_aliases
        .insert("/opt/prefect/entrypoint.sh".into(), vec![]);
    rule.env
        .insert("PREFECT_LOGGING_LEVEL".into(), "INFO".into());
    let mut flows_image = rule.clone();
    flows_image.image = "testacr.azurecr.io/flows:*".into();
    config.images = vec![rule, flows_image];
    config.pull_delay_ms = 50;
    config.provisioning_delay_ms = 50;
    aci_emulator::start(config).await.expect("emulator starts")
}

/// ACI options pointing at `emu` with its admin principal.
pub fn options(emu: &Emulator) -> AciOptions {
    let c = emu.config();
    let mut o = AciOptions::from_env().expect("options");
    o.environment = AzureEnvironmentConfig {
        cloud: AzureCloud {
            authority_host: emu.authority_host().parse().unwrap(),
            resource_manager: emu.arm_url().parse().unwrap(),
            token_scope: "https://management.azure.com/.default".into(),
        },
        client_id: Some(c.admin.client_id.clone()),
        tenant_id: Some(c.tenant_id.clone()),
        client_secret: c.admin.client_secret.clone().map(Secret::new),
        ..AzureEnvironmentConfig::default()
    };
    o.credential_options.exclude_cli = true;
    o.credential_options.exclude_managed_identity = true;
    o.liveness_interval = Duration::from_secs(3);
    o
}

/// Job variables every e2e deployment needs on this emulator.
pub fn base_vars(emu: &Emulator) -> Value {
    json!({
        "subscription_id": emu.config().subscription_id,
        "resource_group_name": RG,
        "image": "prefecthq/prefect:3.9.1-python3.11",
        "task_watch_poll_interval": 1,
    })
}

/// Worker config with fast polling.
pub fn worker_config(url: &str, pool: &str) -> WorkerConfig {
    let mut c = WorkerConfig::new(url, pool);
    c.name = super::unique("aci-worker");
    c.query_interval = Duration::from_millis(500);
    c.heartbeat_interval = Duration::from_secs(5);
    c.shutdown_grace = Duration::from_secs(10);
    c
}

/// A worker task and its stop token.
pub struct Worker {
    pub token: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), prefect_aci_worker::WorkerError>>,
}

pub fn start_worker(config: WorkerConfig, emu: &Emulator) -> Worker {
    let infra = AciInfrastructure::new(options(emu)).expect("infra");
    let token = CancellationToken::new();
    let task = tokio::spawn(prefect_aci_worker::run(config, infra, token.clone()));
    Worker { token, task }
}

impl Worker {
    pub async fn stop(self) {
        self.token.cancel();
        self.task.await.expect("join").expect("worker ok");
    }
}

/// A worker on its own runtime: dropping the runtime stops every task it spawned at its next
/// await, with no cleanup code running — the in-process equivalent of SIGKILL.
pub struct Killable {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Killable {
    pub fn start(config: WorkerConfig, emu: &Emulator) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let infra = AciInfrastructure::new(options(emu)).unwrap();
        runtime.spawn(prefect_aci_worker::run(
            config,
            infra,
            CancellationToken::new(),
        ));
        Killable {
            runtime: Some(runtime),
        }
    }

    pub fn kill(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// An admin ARM token from the emulator's AAD endpoint, for direct checks of what ARM returns
/// and for creating resources the test needs.
pub async fn admin_token(emu: &Emulator) -> String {
    reqwest::Client::new()
        .post(emu.token_endpoint())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", emu.config().admin.client_id.as_str()),
            (
                "client_secret",
                emu.config().admin.client_secret.as_deref().unwrap_or(""),
            ),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .expect("token request")
        .json::<Value>()
        .await
        .expect("token json")["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}
