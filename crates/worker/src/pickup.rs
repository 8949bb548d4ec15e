//! Pickup by events: wake the worker loop the moment Prefect schedules or ends a run of the pool.
//!
//! Polling every `PREFECT_WORKER_QUERY_SECONDS` (10 s) makes a new run wait 5 s on average
//! before the worker even asks for it, and a finished run wait up to the observe tick before
//! its container group is deleted (and stops billing). Polling harder would load the server
//! for every idle worker. Instead the worker subscribes to Prefect's events websocket
//! (`/events/out`, the `prefect` subprotocol; [`prefect_client::events::connect`] does the auth
//! handshake) with a filter for flow-run state events related to its pool:
//!
//! ```json
//! {"type":"filter","filter":{"occurred":{"since":<now>,"until":<now + 1 year>},
//!   "event":{"name":["prefect.flow-run.Scheduled", "prefect.flow-run.Completed", ...]},
//!   "any_resource":{"id":["prefect.work-pool.<pool id>"]},"order":"ASC"}}
//! ```
//!
//! and the server pushes `{"type":"event","event":{...}}` frames. An event only *wakes* the
//! loop — `Scheduled` triggers a poll now, a final or `Cancelling` state triggers the
//! in-flight observation now — so the worker's decisions still come from the API exactly as
//! when polling; events never carry authority. A burst of events becomes at most one wake-up
//! per [`MIN_GAP`] (the first at once): each poll then claims a batch instead of every event
//! costing the server one more scheduled-runs query while it is busiest.
//!
//! **Fallback.** While the socket is down the interval timers alone drive the loop, as before;
//! the task reconnects with backoff (1 s doubling to 30 s) and wakes a poll after each
//! (re)connect to cover events missed while it was down. `PREFECT_ACI_EVENTS_PICKUP=false`
//! turns the subscription off (benchmarks use it for before/after figures); servers without
//! events (Prefect 2) never start it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use prefect_client::events::{connect, websocket_url};
use prefect_client::Auth;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics;

/// Shortest time between two wake-ups of the same kind.
pub const MIN_GAP: Duration = Duration::from_millis(250);

/// The event that means "a run of this pool can be picked up".
pub const SCHEDULED: &str = "prefect.flow-run.Scheduled";
/// Events after which an in-flight run's infrastructure should be looked at now.
pub const OBSERVE: [&str; 5] = [
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Crashed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Cancelling",
];

/// Wake-ups for the worker loop; both stay silent when the subscription is off or down.
#[derive(Clone, Default)]
pub struct Pickup {
    /// Notified when a run of the pool was scheduled: poll now.
    pub poll: Arc<Notify>,
    /// Notified when a run of the pool reached a final state or Cancelling: observe now.
    pub observe: Arc<Notify>,
}

/// Whether pickup by events is on (`PREFECT_ACI_EVENTS_PICKUP`, default true).
pub fn enabled_from_env() -> bool {
    switch(std::env::var("PREFECT_ACI_EVENTS_PICKUP").ok().as_deref())
}

/// On unless set to a false-like value.
fn switch(v: Option<&str>) -> bool {
    !v.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "false" | "no" | "off"
        )
    })
}

/// The filter frame for `/events/out`: flow-run state events related to `pool_id`.
pub fn filter_frame(pool_id: Uuid) -> Value {
    let now = Utc::now();
    let mut names = vec![SCHEDULED];
    names.extend(OBSERVE);
    json!({"type": "filter", "filter": {
        "occurred": {"since": now.to_rfc3339(), "until": (now + chrono::Duration::days(365)).to_rfc3339()},
        "event": {"prefix": null, "exclude_prefix": null, "name": names, "exclude_name": null},
        "resource": null,
        "related": null,
        "any_resource": {"id": [format!("prefect.work-pool.{pool_id}")], "id_prefix": null, "labels": null},
        "id": {"id": []},
        "text": null,
        "order": "ASC",
    }})
}

/// What an incoming frame asks of the loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    Poll,
    Observe,
    Nothing,
}

/// Classify one text frame from `/events/out`.
pub fn classify(frame: &str) -> Wake {
    let Ok(v) = serde_json::from_str::<Value>(frame) else {
        return Wake::Nothing;
    };
    if v["type"] != "event" {
        return Wake::Nothing;
    }
    match v["event"]["event"].as_str() {
        Some(SCHEDULED) => Wake::Poll,
        Some(e) if OBSERVE.contains(&e) => Wake::Observe,
        _ => Wake::Nothing,
    }
}

/// Subscribe in the background until `shutdown`; returns the wake-ups to select on.
pub fn start(api_url: &str, auth: Auth, pool_id: Uuid, shutdown: CancellationToken) -> Pickup {
    let pickup = Pickup::default();
    let url = websocket_url(api_url, "/events/out");
    // Events land on `raw`; a pacer per kind forwards them to the loop at most every MIN_GAP.
    let raw = Pickup::default();
    for (from, to) in [
        (raw.poll.clone(), pickup.poll.clone()),
        (raw.observe.clone(), pickup.observe.clone()),
    ] {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = from.notified() => to.notify_one(),
                }
                tokio::time::sleep(MIN_GAP).await;
            }
        });
    }
    let wake = raw;
    tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            let session = async {
                let mut ws = connect(&url, &auth).await.map_err(|e| e.to_string())?;
                ws.send(Message::Text(filter_frame(pool_id).to_string().into()))
                    .await
                    .map_err(|e| e.to_string())?;
                metrics::global().events_connected(true);
                tracing::debug!("subscribed to flow-run events of the pool for pickup");
                // Anything scheduled while we were not listening is found by this poll.
                wake.poll.notify_one();
                while let Some(msg) = ws.next().await {
                    match msg.map_err(|e| e.to_string())? {
                        Message::Text(t) => match classify(&t) {
                            Wake::Poll => {
                                metrics::global().event_wakeup();
                                wake.poll.notify_one();
                            }
                            Wake::Observe => {
                                metrics::global().event_wakeup();
                                wake.observe.notify_one();
                            }
                            Wake::Nothing => {}
                        },
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                Ok::<(), String>(())
            };
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = session => r,
            };
            metrics::global().events_connected(false);
            match outcome {
                // A clean close after a long session: reconnect promptly.
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => {
                    tracing::debug!(error = %e, "events websocket for pickup is down; polling on the interval until it is back")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    });
    pickup
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_wake_the_right_thing() {
        let ev = |name: &str| {
            json!({"type": "event", "event": {"event": name, "resource": {}}}).to_string()
        };
        assert_eq!(classify(&ev("prefect.flow-run.Scheduled")), Wake::Poll);
        assert_eq!(classify(&ev("prefect.flow-run.Completed")), Wake::Observe);
        assert_eq!(classify(&ev("prefect.flow-run.Cancelling")), Wake::Observe);
        assert_eq!(classify(&ev("prefect.flow-run.Running")), Wake::Nothing);
        assert_eq!(classify(r#"{"type":"auth_success"}"#), Wake::Nothing);
        assert_eq!(classify("not json"), Wake::Nothing);
    }

    #[test]
    fn filter_names_the_pool_and_the_events() {
        let id = Uuid::new_v4();
        let f = filter_frame(id);
        assert_eq!(f["type"], "filter");
        assert_eq!(
            f["filter"]["any_resource"]["id"][0],
            format!("prefect.work-pool.{id}")
        );
        let names: Vec<&str> = f["filter"]["event"]["name"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(names.contains(&SCHEDULED) && names.contains(&"prefect.flow-run.Crashed"));
    }

    #[test]
    fn env_switch() {
        assert!(switch(None));
        for (v, on) in [
            ("false", false),
            ("0", false),
            (" OFF ", false),
            ("true", true),
            ("1", true),
        ] {
            assert_eq!(switch(Some(v)), on, "{v:?}");
        }
    }
}
