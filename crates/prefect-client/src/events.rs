//! Prefect 3 events over websockets.
//!
//! Workers report `prefect.worker.*` events on `ws(s)://<api>/events/in`. The socket speaks
//! the `prefect` subprotocol: the first frame is `{"type":"auth","token":..}` (the raw auth
//! string or API key, or null), answered by `{"type":"auth_success"}`; after that each
//! message is one event as JSON. [`EventEmitter`] owns one connection in a background task,
//! reconnects with backoff, and never blocks the caller: events queue in a bounded channel and
//! the oldest are dropped when the server is unreachable for long (events are telemetry; a
//! lost event must never stall a flow run).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

use crate::client::Auth;
use crate::models::Event;

/// Errors while talking to an events websocket.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The websocket could not be opened or failed.
    #[error("events websocket {url}: {message}")]
    Socket { url: String, message: String },
    /// The server refused our credentials.
    #[error("events websocket {url}: authentication failed")]
    Auth { url: String },
}

/// The websocket URL for `path` under a Prefect API URL (`http` → `ws`, `https` → `wss`).
pub fn websocket_url(api_url: &str, path: &str) -> String {
    let base = api_url.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{base}{path}")
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open a Prefect websocket and complete the auth handshake.
pub async fn connect(url: &str, auth: &Auth) -> Result<Socket, EventsError> {
    let err = |m: String| EventsError::Socket {
        url: url.to_string(),
        message: m,
    };
    let mut request = url.into_client_request().map_err(|e| err(e.to_string()))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "prefect".parse().expect("static header"),
    );
    if let Some(h) = auth.header() {
        if let Ok(v) = h.parse() {
            request.headers_mut().insert("Authorization", v);
        }
    }
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .map_err(|_| err("timed out connecting".into()))?
    .map_err(|e| err(e.to_string()))?;
    let frame = json!({"type": "auth", "token": auth.websocket_token()});
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .map_err(|e| err(e.to_string()))?;
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .map_err(|_| err("timed out waiting for auth_success".into()))?;
    match reply {
        Some(Ok(Message::Text(t))) => {
            let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
            if v["type"] == "auth_success" {
                Ok(ws)
            } else {
                Err(EventsError::Auth { url: url.into() })
            }
        }
        Some(Ok(Message::Close(_))) | None => Err(EventsError::Auth { url: url.into() }),
        Some(Ok(other)) => Err(err(format!("unexpected frame {other:?}"))),
        Some(Err(e)) => Err(err(e.to_string())),
    }
}

/// A handle that queues events for `/events/in`; cheap to clone.
#[derive(Clone)]
pub struct EventEmitter {
    tx: Option<mpsc::Sender<Event>>,
}

impl EventEmitter {
    /// An emitter that drops everything (servers without events, e.g. Prefect 2).
    pub fn disabled() -> Self {
        EventEmitter { tx: None }
    }

    /// Start the background sender for `api_url`; it stops when every handle is dropped.
    pub fn start(api_url: &str, auth: Auth) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let url = websocket_url(api_url, "/events/in");
        tokio::spawn(run_sender(url, auth, rx));
        EventEmitter { tx: Some(tx) }
    }

    /// Queue one event; never waits.
    pub fn emit(&self, event: Event) {
        if let Some(tx) = &self.tx {
            if tx.try_send(event).is_err() {
                tracing::debug!("event queue full or closed; dropping an event");
            }
        }
    }

    /// Wait until queued events are flushed (best effort, bounded by `timeout`) and stop.
    pub async fn close(self, timeout: Duration) {
        if let Some(tx) = self.tx {
            let deadline = tokio::time::Instant::now() + timeout;
            while tx.capacity() < tx.max_capacity() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn run_sender(url: String, auth: Auth, mut rx: mpsc::Receiver<Event>) {
    let mut backoff = Duration::from_millis(500);
    let mut pending: Option<Event> = None;
    loop {
        let first = match pending.take() {
            Some(e) => e,
            None => match rx.recv().await {
                Some(e) => e,
                None => return,
            },
        };
        let mut ws = match connect(&url, &auth).await {
            Ok(ws) => {
                backoff = Duration::from_millis(500);
                ws
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot open the events websocket; will retry");
                pending = Some(first);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let mut next = Some(first);
        loop {
            let ev = match next.take() {
                Some(e) => e,
                None => match rx.recv().await {
                    Some(e) => e,
                    None => {
                        let _ = ws.close(None).await;
                        return;
                    }
                },
            };
            let text = match serde_json::to_string(&ev) {
                Ok(t) => t,
                Err(_) => continue,
            };
            if let Err(e) = ws.send(Message::Text(text.into())).await {
                tracing::debug!(error = %e, "events websocket dropped; reconnecting");
                pending = Some(ev);
                break;
            }
        }
    }
}
