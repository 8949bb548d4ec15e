//! Shared helpers for integration tests: the real Prefect servers started by `make test`,
//! API shortcuts to create flows, deployments and runs, and condition waits.

#![allow(dead_code)]

pub mod aci;

use std::future::Future;
use std::time::Duration;

use prefect_client::{Auth, ClientConfig, PrefectClient};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

/// The workers' tracing goes to the test's captured output, which libtest shows only for a
/// failing test: a flaky integration test then explains itself in the CI log. `RUST_LOG`
/// overrides the default filter.
pub fn init_test_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| {
            "prefect_aci_worker=debug,prefect_client=debug,azure_arm=debug".into()
        });
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

/// The Prefect 3 server `make test` started.
pub fn api_url() -> String {
    env_or_explain("PREFECT_ACI_TEST_API_URL")
}

/// The Prefect 2 server `make test` started.
pub fn p2_api_url() -> String {
    env_or_explain("PREFECT_ACI_TEST_P2_API_URL")
}

/// The Prefect 3 server started with PREFECT_SERVER_API_AUTH_STRING, and that string.
pub fn auth_api() -> (String, String) {
    (
        env_or_explain("PREFECT_ACI_TEST_AUTH_API_URL"),
        env_or_explain("PREFECT_ACI_TEST_AUTH_STRING"),
    )
}

fn env_or_explain(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: these tests need the real Prefect servers that `make test` starts; run `make test`")
    })
}

/// A unique name for test resources.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..10])
}

/// A client for test set-up.
pub fn client(url: &str, auth: Auth) -> PrefectClient {
    let mut c = ClientConfig::new(url);
    c.auth = auth;
    PrefectClient::new(c).expect("client")
}

/// Test-side shortcuts over the raw API.
pub struct Api(pub PrefectClient);

impl Api {
    pub fn new(url: &str) -> Self {
        Api(client(url, Auth::None))
    }

    /// Wait until the pool exists (a started worker creates it).
    pub async fn wait_pool(&self, pool: &str) {
        wait_for(Duration::from_secs(60), "the pool", || async {
            self.0.read_work_pool(pool).await.ok().flatten()
        })
        .await;
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.0
            .raw_json(Method::POST, path, Some(&body))
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    pub async fn create_flow(&self, name: &str) -> Uuid {
        let v = self.post("/flows/", json!({"name": name})).await;
        v["id"].as_str().unwrap().parse().unwrap()
    }

    /// A deployment of a new flow in `pool`, with `job_variables`.
    /// The ACI template requires `resource_group_name` and `subscription_id`; tests that do
    /// not care get placeholders.
    pub async fn create_deployment(
        &self,
        pool: &str,
        queue: Option<&str>,
        mut job_variables: Value,
    ) -> Uuid {
        for (k, v) in [("resource_group_name", "rg"), ("subscription_id", "sub")] {
            if job_variables.get(k).is_none() {
                job_variables[k] = json!(v);
            }
        }
        let flow_id = self.create_flow(&unique("flow")).await;
        let mut body = json!({
            "name": unique("dep"),
            "flow_id": flow_id,
            "work_pool_name": pool,
            "job_variables": job_variables,
            "entrypoint": "flows.py:my_flow",
        });
        if let Some(q) = queue {
            body["work_queue_name"] = json!(q);
        }
        let v = self.post("/deployments/", body).await;
        v["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn create_flow_run(&self, deployment: Uuid, job_variables: Value) -> Uuid {
        let v = self
            .post(
                &format!("/deployments/{deployment}/create_flow_run"),
                json!({"job_variables": job_variables}),
            )
            .await;
        v["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn create_flow_run_with_parameters(
        &self,
        deployment: Uuid,
        parameters: Value,
    ) -> Uuid {
        let v = self
            .post(
                &format!("/deployments/{deployment}/create_flow_run"),
                json!({"parameters": parameters}),
            )
            .await;
        v["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn flow_run(&self, id: Uuid) -> Value {
        self.0
            .raw_json(Method::GET, &format!("/flow_runs/{id}"), None)
            .await
            .expect("read flow run")
    }

    pub async fn state_type(&self, id: Uuid) -> String {
        let fr = self.flow_run(id).await;
        fr["state"]["type"]
            .as_str()
            .or(fr["state_type"].as_str())
            .unwrap_or("")
            .to_string()
    }

    pub async fn logs(&self, id: Uuid) -> Vec<String> {
        let v = self
            .post(
                "/logs/filter",
                json!({"logs": {"flow_run_id": {"any_": [id]}}, "limit": 200}),
            )
            .await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| l["message"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

/// Poll `cond` every 100 ms until it returns `Some`, or panic after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
