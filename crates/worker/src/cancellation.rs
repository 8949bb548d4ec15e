//! Noticing cancellations as they happen, through Prefect 3's events websocket.
//!
//! When a user cancels a run, the server moves it to `Cancelling` and emits a
//! `prefect.flow-run.Cancelling` event related to the run's work pool. This task subscribes to
//! `/events/out` with a filter on exactly those events for our pool and hands the flow run ids
//! to the worker loop, which cancels the matching in-flight run at once. The websocket is an
//! accelerator, not the source of truth: the loop's periodic `flow_runs/filter` (the only
//! mechanism on Prefect 2) still sees every `Cancelling` state, so a dropped socket delays a
//! cancellation by at most one observe tick. The socket reconnects with backoff.

use std::time::Duration;

use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use prefect_client::events::{connect, websocket_url};
use prefect_client::Auth;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Subscribe for `pool_id`'s Cancelling events until `shutdown`; ids go to `tx`.
pub async fn watch_cancellations(
    api_url: String,
    auth: Auth,
    pool_id: Uuid,
    tx: mpsc::UnboundedSender<Uuid>,
    shutdown: CancellationToken,
) {
    let url = websocket_url(&api_url, "/events/out");
    let mut backoff = Duration::from_secs(1);
    loop {
        let session = async {
            let mut ws = connect(&url, &auth).await?;
            let filter = json!({"type": "filter", "filter": {
                "occurred": {
                    "since": (Utc::now() - chrono::Duration::minutes(1)).to_rfc3339(),
                    "until": (Utc::now() + chrono::Duration::days(365)).to_rfc3339(),
                },
                "event": {"name": ["prefect.flow-run.Cancelling"]},
                "any_resource": {"id": [format!("prefect.work-pool.{pool_id}")]},
                "order": "DESC",
            }});
            ws.send(Message::Text(filter.to_string().into()))
                .await
                .map_err(|e| prefect_client::events::EventsError::Socket {
                    url: url.clone(),
                    message: e.to_string(),
                })?;
            tracing::debug!("subscribed to cancellation events");
            while let Some(msg) = ws.next().await {
                let Ok(Message::Text(text)) = msg else {
                    if msg.is_err() {
                        break;
                    }
                    continue;
                };
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let resource = v["event"]["resource"]["prefect.resource.id"]
                    .as_str()
                    .unwrap_or("");
                if let Some(id) = resource
                    .strip_prefix("prefect.flow-run.")
                    .and_then(|s| s.parse().ok())
                {
                    if tx.send(id).is_err() {
                        break;
                    }
                }
            }
            Ok::<(), prefect_client::events::EventsError>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            res = session => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "cancellation events unavailable; relying on polling");
                } else {
                    backoff = Duration::from_secs(1);
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
