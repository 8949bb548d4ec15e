//! `--with-healthcheck`: `GET /health` like Prefect's worker webserver.
//!
//! 200 `{"message":"OK"}` while the last successful poll is recent (within 30 × the query
//! interval, Prefect's rule), else 503 `{"message":"Worker may be unresponsive at this time"}`.
//! It starts before any API call so orchestrators see the process come up.
//!
//! `GET /metrics` beside it serves [`crate::metrics`] in Prometheus text format.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Shared liveness state, updated by the poll loop.
#[derive(Clone)]
pub struct Health {
    last_poll: Arc<Mutex<Option<Instant>>>,
    max_age: Duration,
}

impl Health {
    /// Healthy while a poll happened within `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Health {
            last_poll: Arc::new(Mutex::new(None)),
            max_age,
        }
    }

    /// Record a successful poll.
    pub fn polled(&self) {
        *self.last_poll.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Whether the worker counts as healthy now. Before the first poll it is healthy (it is
    /// starting), like Prefect's.
    pub fn is_healthy(&self) -> bool {
        match *self.last_poll.lock().unwrap_or_else(|e| e.into_inner()) {
            None => true,
            Some(t) => t.elapsed() <= self.max_age,
        }
    }
}

async fn health(State(h): State<Health>) -> (StatusCode, Json<Value>) {
    if h.is_healthy() {
        (StatusCode::OK, Json(json!({"message": "OK"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"message": "Worker may be unresponsive at this time"})),
        )
    }
}

async fn metrics() -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::global().render(),
    )
}

/// Bind `addr` and serve `/health` and `/metrics` until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    health_state: Health,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(health_state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(local)
}
