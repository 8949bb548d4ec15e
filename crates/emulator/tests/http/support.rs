//! Shared helpers: a configured emulator, an authenticated client, polling with deadlines.

use std::time::{Duration, Instant};

use aci_emulator::{Emulator, EmulatorConfig, ImageRule, ResourceGroupSeed};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

pub const ACI: &str = "2025-09-01";
pub const RG_API: &str = "2025-04-01";
pub const MI_API: &str = "2024-11-30";

/// A config with a shell image, one resource group `rg` in `eastus` and short delays.
pub fn config() -> EmulatorConfig {
    EmulatorConfig {
        resource_groups: vec![ResourceGroupSeed {
            name: "rg".into(),
            location: "eastus".into(),
        }],
        images: vec![
            ImageRule {
                image: "shell:*".into(),
                command: vec!["/bin/sh".into(), "-c".into(), "echo default".into()],
                ..Default::default()
            },
            ImageRule {
                image: "myacr.azurecr.io/*".into(),
                command: vec!["/bin/sh".into(), "-c".into(), "echo acr".into()],
                ..Default::default()
            },
        ],
        pull_delay_ms: 20,
        provisioning_delay_ms: 20,
        restart_delay_ms: 50,
        kill_grace_ms: 500,
        ..EmulatorConfig::default()
    }
}

/// A running emulator plus an admin token.
pub struct Env {
    pub emu: Emulator,
    pub http: reqwest::Client,
    pub token: String,
}

pub async fn start(config: EmulatorConfig) -> Env {
    let emu = aci_emulator::start(config).await.expect("emulator starts");
    // reqwest is built without a default rustls provider; install ring once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let token = admin_token(&http, &emu).await;
    Env { emu, http, token }
}

pub async fn admin_token(http: &reqwest::Client, emu: &Emulator) -> String {
    let c = emu.config();
    let resp = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            emu.authority_host(),
            c.tenant_id
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", c.admin.client_id.as_str()),
            (
                "client_secret",
                c.admin.client_secret.as_deref().unwrap_or(""),
            ),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Env {
    pub fn sub(&self) -> String {
        format!("/subscriptions/{}", self.emu.config().subscription_id)
    }

    /// Path of a container group in `rg`.
    pub fn cg(&self, name: &str) -> String {
        format!(
            "{}/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/{name}",
            self.sub()
        )
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.emu.arm_url(), path)
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Resp {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(reqwest::Method::GET, path, None, Some(&self.token))
            .await
    }
    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.call(reqwest::Method::PUT, path, Some(body), Some(&self.token))
            .await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.call(reqwest::Method::DELETE, path, None, Some(&self.token))
            .await
    }
    pub async fn post(&self, path: &str) -> Resp {
        self.call(reqwest::Method::POST, path, None, Some(&self.token))
            .await
    }

    /// Creates a group and waits until its async operation is terminal; returns the status.
    pub async fn create(&self, name: &str, body: Value) -> String {
        let r = self
            .put(&format!("{}?api-version={ACI}", self.cg(name)), body)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "create {name}: {}", r.body);
        let op = r
            .header("azure-asyncoperation")
            .expect("Azure-AsyncOperation")
            .to_string();
        self.wait_op(&op).await
    }

    /// Polls an async operation URL until it is terminal.
    pub async fn wait_op(&self, url: &str) -> String {
        let body = self
            .poll(url, |b| {
                matches!(
                    b["status"].as_str(),
                    Some("Succeeded" | "Failed" | "Canceled")
                )
            })
            .await;
        body["status"].as_str().unwrap_or_default().to_string()
    }

    /// GETs `path` until `cond` holds (10 s deadline); returns the last body.
    pub async fn poll(&self, path: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.get(path).await;
            if cond(&r.body) {
                return r.body;
            }
            assert!(
                Instant::now() < deadline,
                "condition not met before the deadline; last: {} {}",
                r.status,
                r.body
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for a group's instance view state.
    pub async fn wait_state(&self, name: &str, states: &[&str]) -> Value {
        let path = format!("{}?api-version={ACI}", self.cg(name));
        self.poll(&path, |b| {
            b["properties"]["instanceView"]["state"]
                .as_str()
                .is_some_and(|s| states.contains(&s))
        })
        .await
    }

    pub async fn logs(&self, group: &str, container: &str, query: &str) -> String {
        let r = self
            .get(&format!(
                "{}/containers/{container}/logs?api-version={ACI}{query}",
                self.cg(group)
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["content"].as_str().unwrap_or_default().to_string()
    }
}

/// A minimal job group running `script` under `/bin/sh -c` with the given restart policy.
pub fn shell_group(script: &str, restart: &str) -> Value {
    json!({
        "location": "eastus",
        "tags": {"job": "test"},
        "properties": {
            "osType": "Linux",
            "restartPolicy": restart,
            "containers": [{"name": "job", "properties": {
                "image": "shell:1",
                "command": ["/bin/sh", "-c", script],
                "resources": {"requests": {"cpu": 1.0, "memoryInGB": 1.5}}
            }}]
        }
    })
}

/// True when the process exists and is not a zombie.
pub fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z' | 'X') | None)
        }
    }
}

/// Waits until `cond` holds (5 s deadline).
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
