//! Fault injection and introspection: throttling, quotas, capacity, 5xx, latency, stats.

use std::time::{Duration, Instant};

use aci_emulator::{AciQuotas, Bucket, CapacityFault, EmulatorConfig, Faults, ThrottleLimits};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

fn small_buckets() -> ThrottleLimits {
    ThrottleLimits {
        reads: Bucket {
            burst: 3,
            per_second: 0.5,
        },
        writes: Bucket {
            burst: 100,
            per_second: 10.0,
        },
        deletes: Bucket {
            burst: 100,
            per_second: 10.0,
        },
    }
}

/// The real limits are reported in headers; an empty bucket gives 429 + Retry-After.
#[tokio::test]
async fn arm_throttling() {
    let env = start(config()).await;
    let path = format!("{}/resourcegroups/rg?api-version={RG_API}", env.sub());
    let r = env.get(&path).await;
    assert_eq!(
        r.header("x-ms-ratelimit-remaining-subscription-reads"),
        Some("249")
    );
    assert_eq!(
        r.header("x-ms-ratelimit-remaining-subscription-global-reads"),
        Some("3735")
    );
    let r = env.put(&path, json!({"location": "eastus"})).await;
    assert_eq!(
        r.header("x-ms-ratelimit-remaining-subscription-writes"),
        Some("199")
    );

    env.emu.set_faults(Faults {
        arm_throttling: Some(small_buckets()),
        ..Faults::default()
    });
    // The bucket state persists; start from a fresh emulator for exact counts.
    let env = start(EmulatorConfig {
        faults: Faults {
            arm_throttling: Some(small_buckets()),
            ..Faults::default()
        },
        ..config()
    })
    .await;
    let path = format!("{}/resourcegroups/rg?api-version={RG_API}", env.sub());
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = env.get(&path).await;
        assert_eq!(r.status, StatusCode::OK);
        remaining.push(
            r.header("x-ms-ratelimit-remaining-subscription-reads")
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = env.get(&path).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests")
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Writes are a separate bucket.
    let r = env.put(&path, json!({"location": "eastus"})).await;
    assert_eq!(r.status, StatusCode::OK);
    // Another principal has its own bucket.
    let c = env.emu.config();
    let other = env
        .http
        .post(env.emu.token_endpoint())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", c.admin.client_id.as_str()),
            ("client_secret", c.admin.client_secret.as_deref().unwrap()),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "AAD is not throttled by ARM"
    );
    assert_eq!(env.emu.stats().count("resourceGroups.get", 429), 1);
}

/// ACI's create quota answers 429 with Retry-After; deletes have their own quota.
#[tokio::test]
async fn aci_create_quota() {
    let quotas = AciQuotas {
        creates_per_5m: 1,
        creates_per_hour: 10,
        deletes_per_5m: 1,
        deletes_per_hour: 10,
        ..AciQuotas::default()
    };
    let env = start(EmulatorConfig {
        faults: Faults {
            aci_quotas: Some(quotas),
            ..Faults::default()
        },
        ..config()
    })
    .await;
    let r = env
        .put(
            &format!("{}?api-version={ACI}", env.cg("q1")),
            shell_group("true", "Never"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.header("x-ms-ratelimit-remaining-subscription-resource-requests-pt5m"),
        Some("0")
    );
    assert_eq!(
        r.header("x-ms-ratelimit-remaining-subscription-resource-requests-pt1h"),
        Some("9")
    );
    let r = env
        .put(
            &format!("{}?api-version={ACI}", env.cg("q2")),
            shell_group("true", "Never"),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "ResourceRequestsThrottled")
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exceeded the limit of '1' for time interval '00:05:00'"),
        "{}",
        r.body
    );
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() > 200);
    // Updates are not creates.
    let r = env
        .put(
            &format!("{}?api-version={ACI}", env.cg("q1")),
            shell_group("true", "Never"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = env
        .delete(&format!("{}?api-version={ACI}", env.cg("q1")))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
}

/// Capacity errors: 409 ServiceUnavailable with the service's message, for a count.
#[tokio::test]
async fn capacity_errors() {
    let faults = Faults {
        capacity: vec![CapacityFault {
            location: "eastus".into(),
            count: Some(2),
        }],
        ..Faults::default()
    };
    let env = start(EmulatorConfig { faults, ..config() }).await;
    for _ in 0..2 {
        let r = env
            .put(
                &format!("{}?api-version={ACI}", env.cg("cap")),
                shell_group("true", "Never"),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::CONFLICT, "ServiceUnavailable")
        );
        let msg = r.body["error"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with(
                "The requested resource is not available in the location 'eastus' at this moment."
            ),
            "{msg}"
        );
        assert!(msg.contains("'1' CPU '1.5' GB memory 'Linux' OS"), "{msg}");
    }
    let r = env
        .put(
            &format!("{}?api-version={ACI}", env.cg("cap")),
            shell_group("true", "Never"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // `count: None` fails every create in that location only.
    env.emu.set_faults(Faults {
        capacity: vec![CapacityFault {
            location: "westus".into(),
            count: None,
        }],
        ..Faults::default()
    });
    let mut west = shell_group("true", "Never");
    west["location"] = json!("West US");
    for _ in 0..3 {
        let r = env
            .put(
                &format!("{}?api-version={ACI}", env.cg("west")),
                west.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
    }
}

/// error_rate 1.0 fails every ARM request with 500 or 503 and an ARM error body.
#[tokio::test]
async fn random_server_errors() {
    let env = start(EmulatorConfig {
        faults: Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
        ..config()
    })
    .await;
    for _ in 0..6 {
        let r = env
            .get(&format!(
                "{}/resourcegroups/rg?api-version={RG_API}",
                env.sub()
            ))
            .await;
        assert!(matches!(r.status.as_u16(), 500 | 503), "{}", r.status);
        assert!(matches!(
            r.code(),
            "InternalServerError" | "ServiceUnavailable"
        ));
    }
}

/// Added latency applies to ARM requests.
#[tokio::test]
async fn latency() {
    let env = start(EmulatorConfig {
        faults: Faults {
            latency_ms: 200,
            ..Faults::default()
        },
        ..config()
    })
    .await;
    let t0 = Instant::now();
    env.get(&format!(
        "{}/resourcegroups/rg?api-version={RG_API}",
        env.sub()
    ))
    .await;
    assert!(t0.elapsed() >= Duration::from_millis(200));
}

/// The admin API: faults round-trip, stats and groups are visible.
#[tokio::test]
async fn admin_api() {
    let env = start(config()).await;
    let admin = format!("{}/_emulator", env.emu.arm_url());
    let health: Value = env
        .http
        .get(format!("{admin}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let faults = json!({"error_rate": 0.25, "latency_ms": 5, "capacity": [{"location": "eastus", "count": 1}]});
    let r = env
        .http
        .put(format!("{admin}/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(env.emu.faults().error_rate, 0.25);
    let back: Value = env
        .http
        .get(format!("{admin}/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(back["latency_ms"], 5);
    let r = env
        .http
        .put(format!("{admin}/faults"))
        .json(&json!({"nope": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    env.emu.set_faults(Faults::default());

    env.create("seen", shell_group("exit 0", "Never")).await;
    let stats: Value = env
        .http
        .get(format!("{admin}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = stats["requests"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["operation"] == "containerGroups.createOrUpdate"
                && r["status"] == 201
                && r["count"] == 1),
        "{stats}"
    );
    assert!(env.emu.stats().total("operations.get") >= 1);
    assert_eq!(env.emu.stats().count("aad.token", 200), 1);
    let groups: Value = env
        .http
        .get(format!("{admin}/groups"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(groups[0]["name"], "seen");
    assert_eq!(groups[0]["resource_group"], "rg");
}

/// Regional quotas: container group count and cores, reported by the usages endpoint.
#[tokio::test]
async fn regional_quotas_and_usages() {
    let quotas = AciQuotas {
        container_groups_per_region: 2,
        cores_per_region: 3,
        ..AciQuotas::default()
    };
    let env = start(EmulatorConfig {
        faults: Faults {
            aci_quotas: Some(quotas),
            ..Faults::default()
        },
        ..config()
    })
    .await;
    assert_eq!(
        env.put(
            &format!("{}?api-version={ACI}", env.cg("u1")),
            shell_group("true", "Never")
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let mut big = shell_group("true", "Never");
    big["properties"]["containers"][0]["properties"]["resources"]["requests"]["cpu"] = json!(2.5);
    let r = env
        .put(&format!("{}?api-version={ACI}", env.cg("u2")), big)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "ContainerGroupQuotaReached")
    );
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains(
            "'StandardCores' exceeded in region 'eastus'. Limit: '3', Usage: '1' Requested: '3'"
        ),
        "{}",
        r.body
    );
    assert_eq!(
        env.put(
            &format!("{}?api-version={ACI}", env.cg("u2")),
            shell_group("true", "Never")
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let r = env
        .put(
            &format!("{}?api-version={ACI}", env.cg("u3")),
            shell_group("true", "Never"),
        )
        .await;
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'ContainerGroups'"),
        "{}",
        r.body
    );
    let usages = env
        .get(&format!(
            "{}/providers/Microsoft.ContainerInstance/locations/eastus/usages?api-version={ACI}",
            env.sub()
        ))
        .await
        .body;
    assert_eq!(usages["value"][0]["name"]["value"], "ContainerGroups");
    assert_eq!(usages["value"][0]["currentValue"], 2);
    assert_eq!(usages["value"][1]["currentValue"], 2);
    // Another region has its own quota.
    let mut west = shell_group("true", "Never");
    west["location"] = json!("westus");
    assert_eq!(
        env.put(&format!("{}?api-version={ACI}", env.cg("w1")), west)
            .await
            .status,
        StatusCode::CREATED
    );
}

/// `error_operations` narrows random errors to chosen operations.
#[tokio::test]
async fn targeted_server_errors() {
    let faults = Faults {
        error_rate: 1.0,
        error_operations: vec!["containerGroups.get".into()],
        ..Faults::default()
    };
    let env = start(EmulatorConfig { faults, ..config() }).await;
    let r = env.get(&format!("{}?api-version={ACI}", env.cg("x"))).await;
    assert!(matches!(r.status.as_u16(), 500 | 503), "{}", r.status);
    let r = env
        .get(&format!(
            "{}/resourcegroups/rg?api-version={RG_API}",
            env.sub()
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = env
        .put(
            &format!("{}?api-version={ACI}", env.cg("x")),
            shell_group("true", "Never"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}
