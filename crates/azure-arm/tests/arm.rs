//! Integration tests of the ARM client and the credentials against tiny
//! in-test fake servers (axum on `127.0.0.1:0`).
//!
//! Each test scripts its fake with a closure from request to response, so the
//! server-side behaviour of one scenario sits next to its assertions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use azure_arm::credential::{TokenCredential, TokenFuture};
use azure_arm::{
    AccessToken, ArmClient, ArmClientConfig, ArmError, AzureEnvironmentConfig,
    ClientSecretCredential, CredentialError, DefaultAzureCredential, DefaultCredentialOptions,
    DeleteOutcome, ExplicitClientSecret, ManagedIdentityCredential, ManagedIdentityOptions,
    PollMode, PollingConfig, RetryPolicy, Secret, ThrottleConfig, WorkloadIdentityCredential,
};
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

// ---------------------------------------------------------------- fake server

/// One request as the fake saw it.
#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Req {
    fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Handler = Arc<dyn Fn(&Req, &str) -> Response + Send + Sync>;

struct Fake {
    base: String,
    log: Arc<Mutex<Vec<Req>>>,
}

impl Fake {
    fn url(&self) -> Url {
        Url::parse(&self.base).unwrap()
    }
    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
    fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }
}

async fn serve_on(listener: tokio::net::TcpListener, handler: Handler) -> Fake {
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let (log2, base2) = (log.clone(), base.clone());
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (handler, log, base) = (handler.clone(), log2.clone(), base2.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let query = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
            let r = Req {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query,
                headers: parts.headers,
                body,
            };
            log.lock().unwrap().push(r.clone());
            handler(&r, &base)
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Fake { base, log }
}

async fn serve(handler: impl Fn(&Req, &str) -> Response + Send + Sync + 'static) -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_on(listener, Arc::new(handler)).await
}

fn json_resp(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn empty(status: u16) -> Response {
    StatusCode::from_u16(status).unwrap().into_response()
}

fn with_header(mut r: Response, name: &'static str, value: &str) -> Response {
    r.headers_mut()
        .insert(name, HeaderValue::from_str(value).unwrap());
    r
}

// ---------------------------------------------------------------- helpers

/// A credential that hands out a fixed token and counts calls.
struct StaticCred {
    calls: AtomicU32,
    lifetime: Duration,
}

impl StaticCred {
    fn new(lifetime: Duration) -> Arc<Self> {
        Arc::new(StaticCred {
            calls: AtomicU32::new(0),
            lifetime,
        })
    }
}

impl TokenCredential for StaticCred {
    fn get_token<'a>(&'a self, _scope: &'a str) -> TokenFuture<'a> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(AccessToken::expiring_in(
                format!("token-{n}"),
                self.lifetime,
            ))
        })
    }
    fn name(&self) -> &'static str {
        "StaticCred"
    }
}

fn fast_config(endpoint: Url, cred: Arc<dyn TokenCredential>) -> ArmClientConfig {
    let mut c = ArmClientConfig::new(endpoint, cred);
    c.retry = RetryPolicy::fast_for_tests();
    c.throttle = ThrottleConfig::disabled();
    c.polling = PollingConfig {
        default_interval: Duration::from_millis(5),
        min_interval: Duration::from_millis(1),
        max_wait: Some(Duration::from_secs(10)),
    };
    c
}

fn client(fake: &Fake) -> ArmClient {
    ArmClient::new(fast_config(
        fake.url(),
        StaticCred::new(Duration::from_secs(3600)),
    ))
    .unwrap()
}

fn http() -> reqwest::Client {
    azure_arm::build_http_client(&Default::default()).unwrap()
}

const RES: &str =
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/cg";
const API: &str = "2025-09-01";

#[derive(Debug, Deserialize, PartialEq)]
struct Thing {
    name: String,
    properties: Props,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Props {
    #[serde(rename = "provisioningState")]
    provisioning_state: String,
}

fn thing(state: &str) -> Value {
    json!({"name": "cg", "properties": {"provisioningState": state}})
}

// ---------------------------------------------------------------- LRO

/// PUT answered 201 + `Azure-AsyncOperation`: the poller follows the
/// operation URL until `Succeeded`, then GETs the final resource.
#[tokio::test]
async fn lro_via_azure_async_operation() {
    let polls = Arc::new(AtomicU32::new(0));
    let p = polls.clone();
    let fake = serve(move |r, base| match (r.method.as_str(), r.path.as_str()) {
        ("PUT", RES) => with_header(
            json_resp(201, thing("Creating")),
            "azure-asyncoperation",
            &format!("{base}/subscriptions/s/providers/Microsoft.ContainerInstance/locations/eastus/operations/op1?api-version={API}"),
        ),
        ("GET", "/subscriptions/s/providers/Microsoft.ContainerInstance/locations/eastus/operations/op1") => {
            let n = p.fetch_add(1, Ordering::SeqCst);
            json_resp(200, json!({"status": if n < 2 { "Pending" } else { "Succeeded" }}))
        }
        ("GET", RES) => json_resp(200, thing("Succeeded")),
        _ => empty(500),
    })
    .await;
    let c = client(&fake);
    let out = c
        .put::<_, Thing>(RES, API, &json!({"location": "eastus"}))
        .await
        .unwrap();
    assert_eq!(out.status, 201);
    assert_eq!(
        out.body.as_ref().unwrap().properties.provisioning_state,
        "Creating"
    );
    assert!(matches!(
        out.poller.as_ref().unwrap().mode(),
        PollMode::AsyncOperation(_)
    ));
    let done = out.wait().await.unwrap();
    assert_eq!(done.properties.provisioning_state, "Succeeded");
    assert_eq!(polls.load(Ordering::SeqCst), 3);
    assert_eq!(fake.count("GET", RES), 1, "one final GET of the resource");
    let put = &fake.requests()[0];
    assert_eq!(put.query.get("api-version").map(String::as_str), Some(API));
    assert_eq!(put.header("authorization"), Some("Bearer token-0"));
    assert_eq!(put.header("content-type"), Some("application/json"));
    assert!(put.header("x-ms-client-request-id").is_some());
}

/// A failed async operation surfaces its `error` as `OperationFailed`.
#[tokio::test]
async fn lro_failure_carries_the_operation_error() {
    let fake = serve(|r, base| match (r.method.as_str(), r.path.as_str()) {
        ("PUT", RES) => with_header(json_resp(201, thing("Creating")), "azure-asyncoperation", &format!("{base}/ops/x")),
        ("GET", "/ops/x") => with_header(
            json_resp(200, json!({"status": "Failed", "error": {"code": "InaccessibleImage", "message": "The image 'x' is not accessible."}})),
            "x-ms-request-id",
            "rid-op",
        ),
        _ => empty(500),
    })
    .await;
    let err = client(&fake)
        .put::<_, Value>(RES, API, &json!({}))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap_err();
    match &err {
        ArmError::OperationFailed {
            status,
            code,
            message,
            request_id,
            ..
        } => {
            assert_eq!(status, "Failed");
            assert_eq!(code.as_deref(), Some("InaccessibleImage"));
            assert!(message.as_deref().unwrap().contains("not accessible"));
            assert_eq!(request_id, "rid-op");
        }
        other => panic!("expected OperationFailed, got {other:?}"),
    }
    assert_eq!(err.code(), Some("InaccessibleImage"));
}

/// DELETE answered 202 + `Location`: polled until it stops answering 202.
#[tokio::test]
async fn lro_via_location_for_delete() {
    let polls = Arc::new(AtomicU32::new(0));
    let p = polls.clone();
    let fake = serve(move |r, base| match (r.method.as_str(), r.path.as_str()) {
        ("DELETE", RES) => with_header(
            with_header(empty(202), "location", &format!("{base}/loc/1")),
            "retry-after",
            "0",
        ),
        ("GET", "/loc/1") => {
            if p.fetch_add(1, Ordering::SeqCst) < 2 {
                empty(202)
            } else {
                empty(204)
            }
        }
        _ => empty(500),
    })
    .await;
    let out = client(&fake).delete(RES, API).await.unwrap();
    let DeleteOutcome::Accepted(poller) = out else {
        panic!("expected Accepted, got {out:?}")
    };
    assert!(matches!(poller.mode(), PollMode::Location(_)));
    poller.wait().await.unwrap();
    assert_eq!(polls.load(Ordering::SeqCst), 3);
}

/// DELETE of something absent (204) and synchronous delete (200).
#[tokio::test]
async fn delete_absent_and_synchronous() {
    let fake = serve(|r, _| match r.path.as_str() {
        "/gone" => empty(204),
        "/sync" => json_resp(200, json!({})),
        _ => empty(500),
    })
    .await;
    let c = client(&fake);
    assert!(matches!(
        c.delete("/gone", API).await.unwrap(),
        DeleteOutcome::NotFound
    ));
    assert!(matches!(
        c.delete("/sync", API).await.unwrap(),
        DeleteOutcome::Deleted
    ));
}

/// PUT with no operation headers but a non-terminal provisioningState: poll
/// the resource until `Succeeded`.
#[tokio::test]
async fn lro_via_resource_get() {
    let gets = Arc::new(AtomicU32::new(0));
    let g = gets.clone();
    let fake = serve(move |r, _| match r.method.as_str() {
        "PUT" => json_resp(201, thing("Creating")),
        "GET" => {
            let n = g.fetch_add(1, Ordering::SeqCst);
            json_resp(200, thing(if n < 2 { "Creating" } else { "Succeeded" }))
        }
        _ => empty(500),
    })
    .await;
    let out = client(&fake)
        .put::<_, Thing>(RES, API, &json!({}))
        .await
        .unwrap();
    assert_eq!(out.poller.as_ref().unwrap().mode(), &PollMode::ResourceGet);
    assert_eq!(
        out.wait().await.unwrap().properties.provisioning_state,
        "Succeeded"
    );
    assert_eq!(
        gets.load(Ordering::SeqCst),
        3,
        "the last poll's body is the result; no extra GET"
    );
}

/// A synchronous PUT (terminal state, no headers) has no poller.
#[tokio::test]
async fn synchronous_put_has_no_poller() {
    let fake = serve(|_, _| json_resp(200, thing("Succeeded"))).await;
    let out = client(&fake)
        .put::<_, Thing>(RES, API, &json!({}))
        .await
        .unwrap();
    assert!(out.poller.is_none());
    assert_eq!(out.wait().await.unwrap().name, "cg");
}

/// POST action answered 202 + Location is polled to completion.
#[tokio::test]
async fn post_action_with_location() {
    let fake = serve(|r, base| match (r.method.as_str(), r.path.as_str()) {
        ("POST", p) if p.ends_with("/start") => {
            with_header(empty(202), "location", &format!("{base}/op/start"))
        }
        ("GET", "/op/start") => json_resp(200, json!({"status": "Succeeded"})),
        ("POST", p) if p.ends_with("/stop") => empty(204),
        _ => empty(500),
    })
    .await;
    let c = client(&fake);
    let started = c.post_empty(&format!("{RES}/start"), API).await.unwrap();
    assert_eq!(started.status, 202);
    assert!(started.poller.is_some());
    started.wait().await.unwrap();
    let stopped = c.post_empty(&format!("{RES}/stop"), API).await.unwrap();
    assert_eq!(
        (
            stopped.status,
            stopped.poller.is_none(),
            stopped.body.is_none()
        ),
        (204, true, true)
    );
}

/// Operation URLs on another host are refused: the token must not leak.
#[tokio::test]
async fn foreign_operation_url_is_refused() {
    let fake = serve(|_, _| {
        with_header(
            json_resp(201, thing("Creating")),
            "azure-asyncoperation",
            "https://evil.example/op?sig=x",
        )
    })
    .await;
    let err = client(&fake)
        .put::<_, Value>(RES, API, &json!({}))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ArmError::InvalidUrl { .. }), "{err:?}");
    assert!(
        msg.contains("evil.example") && !msg.contains("sig=x"),
        "{msg}"
    );
}

// ---------------------------------------------------------------- paging & errors

/// `list` follows `nextLink` verbatim across pages.
#[tokio::test]
async fn paging_follows_next_link() {
    let fake = serve(|r, base| {
        let page = r.query.get("$skiptoken").cloned().unwrap_or_default();
        let (items, next) = match page.as_str() {
            "" => (json!([{"name": "a"}, {"name": "b"}]), Some("p2")),
            "p2" => (json!([{"name": "c"}]), Some("p3")),
            "p3" => (json!([{"name": "d"}, {"name": "e"}]), None),
            _ => return empty(400),
        };
        let mut body = json!({"value": items});
        if let Some(n) = next {
            body["nextLink"] = json!(format!("{base}{}?api-version={API}&$skiptoken={n}", r.path));
        }
        json_resp(200, body)
    })
    .await;
    #[derive(Deserialize)]
    struct Named {
        name: String,
    }
    let items: Vec<Named> = client(&fake)
        .list("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups", API)
        .await
        .unwrap();
    let names: Vec<_> = items.into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    assert_eq!(fake.requests().len(), 3);
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.query.get("api-version").map(String::as_str) == Some(API)));
}

/// ARM error envelopes become `ArmError::Http` with code, message, details
/// and request id; `get_opt` maps 404 to `None`.
#[tokio::test]
async fn error_envelope_and_not_found() {
    let fake = serve(|r, _| match r.path.as_str() {
        "/missing" => with_header(
            json_resp(404, json!({"error": {"code": "ResourceNotFound", "message": "The Resource 'x' was not found."}})),
            "x-ms-request-id",
            "rid-404",
        ),
        _ => json_resp(
            400,
            json!({"error": {"code": "InvalidOsType", "message": "bad os", "details": [{"code": "Inner", "message": "why"}]}}),
        ),
    })
    .await;
    let c = client(&fake);
    assert!(c.get_opt::<Value>("/missing", API).await.unwrap().is_none());
    let err = c.get::<Value>("/missing", API).await.unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(err.request_id(), Some("rid-404"));
    let err = c
        .put::<_, Value>("/bad", API, &json!({}))
        .await
        .unwrap_err();
    match &err {
        ArmError::Http {
            status,
            code,
            message,
            details,
            ..
        } => {
            assert_eq!(
                (*status, code.as_deref(), message.as_str()),
                (400, Some("InvalidOsType"), "bad os")
            );
            assert_eq!(details[0].code.as_deref(), Some("Inner"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_transient());
    assert!(
        !err.to_string().contains("token-"),
        "no token in error text"
    );
}

// ---------------------------------------------------------------- retries & throttling

/// 429 with `Retry-After: 1` is retried after the server's wait, then succeeds.
#[tokio::test]
async fn throttled_429_waits_for_retry_after() {
    let n = Arc::new(AtomicU32::new(0));
    let n2 = n.clone();
    let fake = serve(move |_, _| {
        if n2.fetch_add(1, Ordering::SeqCst) == 0 {
            with_header(
                json_resp(
                    429,
                    json!({"error": {"code": "TooManyRequests", "message": "slow down"}}),
                ),
                "retry-after",
                "1",
            )
        } else {
            json_resp(200, thing("Succeeded"))
        }
    })
    .await;
    let c = client(&fake);
    let started = Instant::now();
    let got: Thing = c.get(RES, API).await.unwrap();
    assert_eq!(got.name, "cg");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After wins over the 5 ms backoff"
    );
    let m = c.metrics();
    assert_eq!(m.count("GET containerGroups", 429), 1);
    assert_eq!(m.count("GET containerGroups", 200), 1);
    assert_eq!(m.retries(), 1);
    let reqs = fake.requests();
    assert_eq!(
        reqs[0].header("x-ms-client-request-id"),
        reqs[1].header("x-ms-client-request-id")
    );
}

/// 503s are retried with backoff; when they persist the error keeps the
/// status and the server's request id.
#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let n = Arc::new(AtomicU32::new(0));
    let n2 = n.clone();
    let fake = serve(move |r, _| match r.path.as_str() {
        "/flaky" if n2.fetch_add(1, Ordering::SeqCst) < 2 => empty(503),
        "/flaky" => json_resp(200, json!({"ok": true})),
        _ => with_header(empty(503), "x-ms-request-id", "rid-503"),
    })
    .await;
    let mut cfg = fast_config(fake.url(), StaticCred::new(Duration::from_secs(3600)));
    cfg.retry.max_attempts = 4;
    let c = ArmClient::new(cfg).unwrap();
    let v: Value = c.get("/flaky", API).await.unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(fake.count("GET", "/flaky"), 3);
    let err = c.get::<Value>("/down", API).await.unwrap_err();
    assert_eq!(
        (err.status(), err.request_id()),
        (Some(503), Some("rid-503"))
    );
    assert!(err.is_transient());
    assert_eq!(fake.count("GET", "/down"), 4);
}

/// Connection failures are retried and end as `Transport` with the client request id.
#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    drop(listener);
    let mut cfg = fast_config(url, StaticCred::new(Duration::from_secs(3600)));
    cfg.retry.max_attempts = 2;
    let c = ArmClient::new(cfg).unwrap();
    let err = c.get::<Value>(RES, API).await.unwrap_err();
    assert!(
        matches!(
            err,
            ArmError::Transport {
                kind: "connection failed",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.request_id().is_some());
    assert_eq!(c.metrics().count("GET containerGroups", 0), 2);
}

/// Client-side buckets make requests wait instead of hitting ARM's limit,
/// and the wait is counted.
#[tokio::test]
async fn client_side_throttle_delays_writes() {
    let fake = serve(|_, _| json_resp(200, thing("Succeeded"))).await;
    let mut cfg = fast_config(fake.url(), StaticCred::new(Duration::from_secs(3600)));
    cfg.throttle = ThrottleConfig {
        writes: azure_arm::BucketConfig {
            capacity: 1.0,
            refill_per_sec: 10.0,
        },
        ..ThrottleConfig::default()
    };
    let c = ArmClient::new(cfg).unwrap();
    let started = Instant::now();
    // Three writes at once: the first takes the only token, the others
    // reserve the next refills and wait ~100 ms and ~200 ms.
    let body = json!({});
    let put = || c.put::<_, Thing>(RES, API, &body);
    let (a, b, d) = tokio::join!(put(), put(), put());
    for r in [a, b, d] {
        r.unwrap();
    }
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "{:?}",
        started.elapsed()
    );
    assert!(
        c.metrics().throttle_wait() >= Duration::from_millis(250),
        "{:?}",
        c.metrics().throttle_wait()
    );
    // Reads have their own bucket and did not wait.
    let before = c.metrics().throttle_wait();
    let _: Thing = c.get(RES, API).await.unwrap();
    assert_eq!(c.metrics().throttle_wait(), before);
}

// ---------------------------------------------------------------- credentials

fn fake_aad(
    expires_in: u64,
    log: Arc<Mutex<Vec<HashMap<String, String>>>>,
) -> impl Fn(&Req, &str) -> Response + Send + Sync + 'static {
    let n = AtomicU32::new(0);
    move |r, _| {
        if r.path != "/tenant-1/oauth2/v2.0/token" || r.method != "POST" {
            return json_resp(404, json!({"error": "not_found"}));
        }
        let form = r.form();
        log.lock().unwrap().push(form.clone());
        let ok = form.get("grant_type").map(String::as_str) == Some("client_credentials")
            && form.get("client_id").map(String::as_str) == Some("app-1")
            && (form.get("client_secret").map(String::as_str) == Some("s3cret")
                || form.contains_key("client_assertion"));
        if !ok {
            return json_resp(
                401,
                json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: t"}),
            );
        }
        let k = n.fetch_add(1, Ordering::SeqCst);
        json_resp(
            200,
            json!({"token_type": "Bearer", "expires_in": expires_in, "access_token": format!("aad-{k}")}),
        )
    }
}

/// Client secret against a fake AAD, through the client's token cache: many
/// concurrent ARM calls cost one token request, and ARM sees that token.
#[tokio::test]
async fn client_secret_token_is_cached_across_calls() {
    let forms = Arc::new(Mutex::new(Vec::new()));
    let aad = serve(fake_aad(3600, forms.clone())).await;
    let arm = serve(|_, _| json_resp(200, thing("Succeeded"))).await;
    let cred = ClientSecretCredential::new(
        http(),
        &aad.url(),
        "tenant-1",
        "app-1",
        Secret::new("s3cret"),
    )
    .unwrap();
    assert!(!format!("{cred:?}").contains("s3cret"));
    let c = ArmClient::new(fast_config(arm.url(), Arc::new(cred))).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let c = c.clone();
        tasks.spawn(async move { c.get::<Thing>(RES, API).await.map(|_| ()) });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let forms = forms.lock().unwrap().clone();
    assert_eq!(
        forms.len(),
        1,
        "single-flight: one token request for 20 calls"
    );
    assert_eq!(
        forms[0].get("scope").map(String::as_str),
        Some("https://management.azure.com/.default")
    );
    assert!(arm
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer aad-0")));
}

/// Tokens that expire within the refresh margin are fetched again.
#[tokio::test]
async fn token_near_expiry_is_refreshed() {
    let cred = StaticCred::new(Duration::from_secs(240)); // inside the 5-minute margin
    let arm = serve(|_, _| json_resp(200, json!({}))).await;
    let c = ArmClient::new(fast_config(arm.url(), cred.clone())).unwrap();
    for _ in 0..3 {
        c.get::<Value>(RES, API).await.unwrap();
    }
    assert_eq!(cred.calls.load(Ordering::SeqCst), 3);
    let tokens: Vec<_> = arm
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    assert_eq!(
        tokens,
        ["Bearer token-0", "Bearer token-1", "Bearer token-2"]
    );

    let long = StaticCred::new(Duration::from_secs(3600));
    let c = ArmClient::new(fast_config(arm.url(), long.clone())).unwrap();
    for _ in 0..3 {
        c.get::<Value>(RES, API).await.unwrap();
    }
    assert_eq!(long.calls.load(Ordering::SeqCst), 1);
}

/// A rejected secret is an authentication error with AAD's reason and no secret.
#[tokio::test]
async fn wrong_client_secret_is_reported_without_the_secret() {
    let aad = serve(fake_aad(3600, Arc::default())).await;
    let cred = ClientSecretCredential::new(
        http(),
        &aad.url(),
        "tenant-1",
        "app-1",
        Secret::new("wrong-pass"),
    )
    .unwrap();
    let err = cred
        .get_token("https://management.azure.com/.default")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            CredentialError::Authentication {
                status: Some(401),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        msg.contains("AADSTS7000215") && !msg.contains("wrong-pass"),
        "{msg}"
    );
}

/// The federated token file is read again for every token request, so a
/// rotated assertion is used.
#[tokio::test]
async fn workload_identity_rereads_the_token_file() {
    let forms = Arc::new(Mutex::new(Vec::new()));
    let aad = serve(fake_aad(3600, forms.clone())).await;
    let file = std::env::temp_dir().join(format!("fed-token-{}", uuid::Uuid::new_v4()));
    std::fs::write(&file, "assertion-1\n").unwrap();
    let cred =
        WorkloadIdentityCredential::new(http(), &aad.url(), "tenant-1", "app-1", file.clone())
            .unwrap();
    cred.get_token("https://management.azure.com/.default")
        .await
        .unwrap();
    std::fs::write(&file, "assertion-2").unwrap();
    let t = cred
        .get_token("https://management.azure.com/.default")
        .await
        .unwrap();
    assert_eq!(t.token.expose(), "aad-1");
    std::fs::remove_file(&file).unwrap();
    let err = cred
        .get_token("https://management.azure.com/.default")
        .await
        .unwrap_err();
    assert!(
        err.is_unavailable() && err.to_string().contains("AZURE_FEDERATED_TOKEN_FILE"),
        "{err}"
    );
    let forms = forms.lock().unwrap();
    let assertions: Vec<_> = forms
        .iter()
        .map(|f| f["client_assertion"].clone())
        .collect();
    assert_eq!(assertions, ["assertion-1", "assertion-2"]);
    assert_eq!(
        forms[0]["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert!(!forms[0].contains_key("client_secret"));
}

fn imds_ok(r: &Req) -> Response {
    if r.header("metadata") != Some("true") {
        return (
            StatusCode::BAD_REQUEST,
            "Required metadata header not specified",
        )
            .into_response();
    }
    let expires_on = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 28_799;
    json_resp(
        200,
        json!({"access_token": "mi-token", "refresh_token": "", "expires_in": "28799",
               "expires_on": expires_on.to_string(), "not_before": "0",
               "resource": r.query.get("resource"), "token_type": "Bearer"}),
    )
}

fn mi_options(endpoint: Url) -> ManagedIdentityOptions {
    ManagedIdentityOptions {
        endpoint,
        client_id: Some("uami-client".into()),
        warmup: Duration::from_secs(10),
        warmup_initial_delay: Duration::from_millis(10),
        attempt_timeout: Duration::from_secs(2),
    }
}

/// IMDS answering 503 and 404 while warming up is retried until it serves a
/// token (string-typed numbers, `Metadata: true`, `client_id`, v1 resource).
#[tokio::test]
async fn imds_warm_up_is_retried() {
    let n = AtomicU32::new(0);
    let imds = serve(move |r, _| match n.fetch_add(1, Ordering::SeqCst) {
        0 | 1 => empty(503),
        2 => empty(404),
        _ => imds_ok(r),
    })
    .await;
    let cred = ManagedIdentityCredential::new(http(), mi_options(imds.url())).unwrap();
    let t = cred
        .get_token("https://management.azure.com/.default")
        .await
        .unwrap();
    assert_eq!(t.token.expose(), "mi-token");
    assert!(t.expires_on > SystemTime::now() + Duration::from_secs(28_000));
    let reqs = imds.requests();
    assert_eq!(reqs.len(), 4);
    let last = reqs.last().unwrap();
    assert_eq!(last.path, "/metadata/identity/oauth2/token");
    assert_eq!(last.query["api-version"], "2018-02-01");
    assert_eq!(last.query["resource"], "https://management.azure.com/");
    assert_eq!(last.query["client_id"], "uami-client");
}

/// IMDS that refuses connections at first (not listening yet) is waited for.
#[tokio::test]
async fn imds_not_yet_listening_is_waited_for() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    // The "container start": IMDS begins listening a little later.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        serve_on(listener, Arc::new(|r: &Req, _: &str| imds_ok(r))).await;
    });
    let cred = ManagedIdentityCredential::new(
        http(),
        mi_options(Url::parse(&format!("http://{addr}")).unwrap()),
    )
    .unwrap();
    let t = cred
        .get_token("https://management.azure.com/.default")
        .await
        .unwrap();
    assert_eq!(t.token.expose(), "mi-token");
}

/// Nothing configured and nothing reachable: the error lists every source in
/// order with its reason, and contains no secret.
#[tokio::test]
async fn credential_chain_lists_every_source() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", probe.local_addr().unwrap());
    drop(probe);
    let env: HashMap<&str, String> = [
        ("AZURE_CLIENT_SECRET", "top-secret-value".to_owned()),
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", dead),
    ]
    .into_iter()
    .collect();
    let env = AzureEnvironmentConfig::from_env(&|k| env.get(k).cloned()).unwrap();
    let options = DefaultCredentialOptions {
        imds_warmup: Duration::from_millis(100),
        cli_program: "/nonexistent/az".into(),
        ..Default::default()
    };
    let chain =
        DefaultAzureCredential::from_env(&env, &ExplicitClientSecret::default(), http(), &options)
            .unwrap();
    assert_eq!(
        chain.labels(),
        [
            "EnvironmentCredential",
            "WorkloadIdentityCredential",
            "ManagedIdentityCredential",
            "AzureCliCredential"
        ]
    );
    let err = chain
        .get_token("https://management.azure.com/.default")
        .await
        .unwrap_err();
    let CredentialError::ChainExhausted { attempts } = &err else {
        panic!("{err:?}")
    };
    let names: Vec<_> = attempts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, chain.labels());
    let msg = err.to_string();
    assert!(
        msg.contains("AZURE_CLIENT_ID and/or AZURE_TENANT_ID are not"),
        "{msg}"
    );
    assert!(
        msg.contains("AZURE_FEDERATED_TOKEN_FILE is not set"),
        "{msg}"
    );
    assert!(
        msg.contains("no managed identity endpoint answered"),
        "{msg}"
    );
    assert!(msg.contains("not found on PATH"), "{msg}");
    assert!(!msg.contains("top-secret-value"), "{msg}");
}

/// An explicit secret that AAD rejects stops the chain (no silent fallback
/// to another identity); a partial explicit block is refused up front.
#[tokio::test]
async fn explicit_secret_failure_stops_the_chain() {
    let aad = serve(fake_aad(3600, Arc::default())).await;
    let imds = serve(|r, _| imds_ok(r)).await;
    let env = AzureEnvironmentConfig {
        cloud: azure_arm::AzureCloud {
            authority_host: aad.url(),
            ..Default::default()
        },
        imds_endpoint: imds.url(),
        ..Default::default()
    };
    let explicit = ExplicitClientSecret {
        client_id: Some("app-1".into()),
        tenant_id: Some("tenant-1".into()),
        client_secret: Some(Secret::new("bad-secret")),
    };
    let chain = DefaultAzureCredential::from_env(
        &env,
        &explicit,
        http(),
        &DefaultCredentialOptions::default(),
    )
    .unwrap();
    let err = chain
        .get_token("https://management.azure.com/.default")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("aci_credentials") && msg.contains("invalid_client"),
        "{msg}"
    );
    assert!(!msg.contains("bad-secret"), "{msg}");
    assert!(
        imds.requests().is_empty(),
        "managed identity must not be tried"
    );

    let partial = ExplicitClientSecret {
        client_id: Some("app-1".into()),
        ..Default::default()
    };
    let Err(err) = DefaultAzureCredential::from_env(
        &env,
        &partial,
        http(),
        &DefaultCredentialOptions::default(),
    ) else {
        panic!("partial block accepted")
    };
    assert!(
        err.to_string()
            .contains("missing: tenant_id, client_secret"),
        "{err}"
    );
}

/// With nothing else configured, the chain falls through to managed identity
/// and then sticks to it.
#[tokio::test]
async fn chain_falls_through_to_managed_identity_and_sticks() {
    let imds = serve(|r, _| imds_ok(r)).await;
    let env = AzureEnvironmentConfig {
        imds_endpoint: imds.url(),
        ..Default::default()
    };
    let chain = DefaultAzureCredential::from_env(
        &env,
        &ExplicitClientSecret::default(),
        http(),
        &DefaultCredentialOptions::default(),
    )
    .unwrap();
    for _ in 0..2 {
        let t = chain
            .get_token("https://management.azure.com/.default")
            .await
            .unwrap();
        assert_eq!(t.token.expose(), "mi-token");
    }
    assert_eq!(chain.selected(), Some("ManagedIdentityCredential"));
    assert!(
        !imds.requests()[0].query.contains_key("client_id"),
        "system-assigned without AZURE_CLIENT_ID"
    );
}

// ---------------------------------------------------------------- TLS with a private CA

/// A TLS listener for axum: accepts TCP, completes the handshake, hands over the stream.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that rejects our certificate fails the handshake; keep serving.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn test_data(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

async fn serve_tls(handler: impl Fn(&Req) -> Response + Send + Sync + 'static) -> Url {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = CertificateDer::pem_file_iter(test_data("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(test_data("server.key")).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    let handler = Arc::new(handler);
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let handler = handler.clone();
        async move {
            let (parts, _) = req.into_parts();
            let r = Req {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: HashMap::new(),
                headers: parts.headers,
                body: Bytes::new(),
            };
            handler(&r)
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Url::parse(&format!("https://127.0.0.1:{port}/")).unwrap()
}

/// `ca_file` makes a server certificate from a private CA (like the
/// emulator's `--tls`) trusted; without it the connection is refused.
#[tokio::test]
async fn private_ca_file_is_trusted() {
    let url = serve_tls(|_| json_resp(200, thing("Succeeded"))).await;
    let mut cfg = fast_config(url.clone(), StaticCred::new(Duration::from_secs(3600)));
    cfg.ca_file = Some(test_data("ca.pem"));
    let got: Thing = ArmClient::new(cfg).unwrap().get(RES, API).await.unwrap();
    assert_eq!(got.name, "cg");

    let mut cfg = fast_config(url, StaticCred::new(Duration::from_secs(3600)));
    cfg.retry = RetryPolicy::none();
    let err = ArmClient::new(cfg)
        .unwrap()
        .get::<Value>(RES, API)
        .await
        .unwrap_err();
    assert!(matches!(err, ArmError::Transport { .. }), "{err:?}");
}

// ---------------------------------------------------------------- Azure CLI

fn fake_az(script_body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::temp_dir().join(format!("fake-az-{}", uuid::Uuid::new_v4()));
    std::fs::write(&path, format!("#!/bin/sh\n{script_body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The CLI credential runs `az account get-access-token` with the scope and
/// tenant, and reads `accessToken`/`expires_on`.
#[tokio::test]
async fn azure_cli_credential_runs_az() {
    let args_file = std::env::temp_dir().join(format!("fake-az-args-{}", uuid::Uuid::new_v4()));
    let az = fake_az(&format!(
        "echo \"$@\" > {}\necho '{{\"accessToken\":\"cli-token\",\"expiresOn\":\"2099-01-01 00:00:00.000000\",\"expires_on\":4070908800,\"tokenType\":\"Bearer\"}}'",
        args_file.display()
    ));
    let cred = azure_arm::AzureCliCredential::new()
        .with_program(&az)
        .with_tenant(Some("tenant-1".into()));
    let t = cred
        .get_token("https://management.azure.com/.default")
        .await
        .unwrap();
    assert_eq!(t.token.expose(), "cli-token");
    assert_eq!(
        t.expires_on,
        SystemTime::UNIX_EPOCH + Duration::from_secs(4_070_908_800)
    );
    let args = std::fs::read_to_string(&args_file).unwrap();
    assert_eq!(
        args.trim(),
        "account get-access-token --output json --scope https://management.azure.com/.default --tenant tenant-1"
    );

    let not_logged_in =
        fake_az("echo \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1");
    let err = azure_arm::AzureCliCredential::new()
        .with_program(&not_logged_in)
        .get_token("https://management.azure.com/.default")
        .await
        .unwrap_err();
    assert!(
        err.is_unavailable() && err.to_string().contains("(run `az login`)"),
        "{err}"
    );
    for f in [az, not_logged_in, args_file] {
        let _ = std::fs::remove_file(f);
    }
}

/// DELETE answered 202 without operation headers: poll the resource until 404.
#[tokio::test]
async fn delete_without_headers_polls_until_gone() {
    let gets = Arc::new(AtomicU32::new(0));
    let g = gets.clone();
    let fake = serve(move |r, _| match r.method.as_str() {
        "DELETE" => empty(202),
        "GET" => match g.fetch_add(1, Ordering::SeqCst) {
            0 => json_resp(200, thing("Deleting")),
            1 => json_resp(200, thing("Succeeded")),
            _ => json_resp(
                404,
                json!({"error": {"code": "ResourceNotFound", "message": "gone"}}),
            ),
        },
        _ => empty(500),
    })
    .await;
    let out = client(&fake).delete(RES, API).await.unwrap();
    let DeleteOutcome::Accepted(poller) = out else {
        panic!("{out:?}")
    };
    assert_eq!(poller.mode(), &PollMode::ResourceGet);
    poller.wait().await.unwrap();
    assert_eq!(gets.load(Ordering::SeqCst), 3);
}
