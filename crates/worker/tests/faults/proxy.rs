//! A loopback HTTP proxy that corrupts some answers, to prove the worker survives malformed
//! responses from Prefect or ARM: it forwards every request to the real server and, for a
//! share of the requests whose path matches, replaces the answer with one of several broken
//! shapes (truncated JSON, an HTML error page, JSON of the wrong type, an empty body, a 200
//! with garbage). Only idempotent reads are corrupted, so a corrupted answer never hides a
//! write that happened (that would be a different fault: a lost response, tested by 5xx).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::http::{Request, Response, StatusCode};
use tokio::net::TcpListener;

/// The kinds of breakage, cycled through.
pub const KINDS: &[&str] = &[
    "truncated JSON",
    "HTML 502 page",
    "JSON of the wrong type",
    "empty 200 body",
    "200 with non-JSON garbage",
    "object missing every field",
];

pub struct Proxy {
    pub url: String,
    pub corrupted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Inner {
    target: String,
    /// This proxy's own base URL, written over the target's in `Location`-style headers.
    own: String,
    client: reqwest::Client,
    /// Corrupt one in `every` matching requests.
    every: u64,
    seen: AtomicU64,
    corrupted: Arc<AtomicU64>,
    matches: fn(&str, &str) -> bool,
    all_clients: bool,
}

/// Start a proxy to `target` (scheme://host:port, no path). `matches(method, path)` picks the
/// requests that may be corrupted (one in `every`); `all_clients` also corrupts requests that
/// are not the worker's (ARM has only the worker as client).
pub async fn start(
    target: &str,
    every: u64,
    all_clients: bool,
    matches: fn(&str, &str) -> bool,
) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    serve(
        listener,
        format!("http://{addr}"),
        target,
        every,
        all_clients,
        matches,
    )
}

/// A transparent HTTPS proxy to `target` whose certificate comes from the private CA in
/// `tests/data` (issued for 127.0.0.1): trusted only by a client told to trust that CA.
pub async fn start_tls(target: &str) -> Proxy {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = CertificateDer::pem_file_iter(tls_data("server.pem"))
        .expect("server.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(tls_data("server.key")).expect("server.key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("tls config");
    let tcp = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind tls proxy");
    let addr = tcp.local_addr().expect("addr");
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    serve(
        listener,
        format!("https://{addr}"),
        target,
        u64::MAX,
        false,
        |_, _| false,
    )
}

/// The private CA and server certificate the ARM client's own tests use.
pub fn tls_data(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../azure-arm/tests/data")
        .join(name)
}

/// Accepts TCP, completes the TLS handshake, hands the stream to axum.
struct TlsListener {
    tcp: TcpListener,
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
            // A client that rejects the certificate fails the handshake; keep serving.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn serve<L>(
    listener: L,
    own: String,
    target: &str,
    every: u64,
    all_clients: bool,
    matches: fn(&str, &str) -> bool,
) -> Proxy
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    // reqwest is built without a default TLS provider in this workspace.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let corrupted = Arc::new(AtomicU64::new(0));
    let inner = Arc::new(Inner {
        target: target.trim_end_matches('/').to_string(),
        own: own.clone(),
        client: reqwest::Client::new(),
        every,
        seen: AtomicU64::new(0),
        corrupted: corrupted.clone(),
        matches,
        all_clients,
    });
    let app = axum::Router::new().fallback(move |req: Request<Body>| {
        let inner = inner.clone();
        async move { forward(inner, req).await }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Proxy {
        url: own,
        corrupted,
        task,
    }
}

async fn forward(inner: Arc<Inner>, req: Request<Body>) -> Response<Body> {
    let method = req.method().clone();
    let path_q = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let body = to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    let mut out = inner
        .client
        .request(method.clone(), format!("{}{}", inner.target, path_q))
        .body(body);
    for (k, v) in headers.iter() {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    let resp = match out.send().await {
        Ok(r) => r,
        Err(_) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from("upstream unreachable"))
                .unwrap_or_default()
        }
    };
    let status = resp.status();
    let rheaders = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    // Only the worker's own requests (it names itself in a header): the engine inside the
    // container talks to the same API and is not what this proxy tests.
    let from_worker = headers.contains_key("x-prefect-worker-name") || inner.all_clients;
    if from_worker && (inner.matches)(method.as_str(), &path) {
        let n = inner.seen.fetch_add(1, Ordering::Relaxed);
        if n % inner.every == inner.every - 1 {
            let k = inner.corrupted.fetch_add(1, Ordering::Relaxed) as usize % KINDS.len();
            return corrupt(k, &bytes);
        }
    }
    let mut b = Response::builder().status(status);
    for (k, v) in rheaders.iter() {
        if k == "content-length" || k == "transfer-encoding" || k == "connection" {
            continue;
        }
        // Operation URLs (Azure-AsyncOperation, Location) must point back through the proxy:
        // the ARM client rightly refuses to send its token anywhere but its own endpoint.
        match v.to_str() {
            Ok(text) if text.contains(&inner.target) => {
                b = b.header(k, text.replace(&inner.target, &inner.own));
            }
            _ => b = b.header(k, v),
        }
    }
    b.body(Body::from(bytes)).unwrap_or_default()
}

fn corrupt(kind: usize, original: &[u8]) -> Response<Body> {
    let json = |status: StatusCode, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap_or_default()
    };
    match kind {
        0 => json(StatusCode::OK, original[..original.len() / 2].to_vec()),
        1 => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .header("content-type", "text/html")
            .body(Body::from(
                "<html><body><h1>502 Bad Gateway</h1>nginx</body></html>",
            ))
            .unwrap_or_default(),
        2 => json(StatusCode::OK, b"\"surprise\"".to_vec()),
        3 => json(StatusCode::OK, Vec::new()),
        4 => json(StatusCode::OK, b"\x00\xffnot json at all{{".to_vec()),
        _ => json(StatusCode::OK, b"{}".to_vec()),
    }
}
