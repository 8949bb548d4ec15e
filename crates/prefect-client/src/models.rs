//! Serde models of the JSON the Prefect server sends to and accepts from workers.
//!
//! Only the fields a worker reads are typed; everything else is kept in `extra` maps where a
//! round trip matters (a flow run's state is copied back on cancellation, so its details must
//! survive untouched). Unknown enum values become `Unknown(..)` instead of failing the decode:
//! a newer server must not crash an older worker.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The type of a flow run state, as the server spells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StateType {
    Scheduled,
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
    Crashed,
    Paused,
    Cancelling,
    /// A state type this worker does not know.
    Unknown(String),
}

impl StateType {
    /// The wire spelling (`"PENDING"`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            StateType::Scheduled => "SCHEDULED",
            StateType::Pending => "PENDING",
            StateType::Running => "RUNNING",
            StateType::Completed => "COMPLETED",
            StateType::Failed => "FAILED",
            StateType::Cancelled => "CANCELLED",
            StateType::Crashed => "CRASHED",
            StateType::Paused => "PAUSED",
            StateType::Cancelling => "CANCELLING",
            StateType::Unknown(s) => s,
        }
    }

    /// Completed, Failed, Cancelled and Crashed end a run.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            StateType::Completed | StateType::Failed | StateType::Cancelled | StateType::Crashed
        )
    }
}

impl std::fmt::Display for StateType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for StateType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StateType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "SCHEDULED" => StateType::Scheduled,
            "PENDING" => StateType::Pending,
            "RUNNING" => StateType::Running,
            "COMPLETED" => StateType::Completed,
            "FAILED" => StateType::Failed,
            "CANCELLED" => StateType::Cancelled,
            "CRASHED" => StateType::Crashed,
            "PAUSED" => StateType::Paused,
            "CANCELLING" => StateType::Cancelling,
            _ => StateType::Unknown(s),
        })
    }
}

/// A flow run state as read from the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub id: Option<Uuid>,
    #[serde(rename = "type")]
    pub state_type: StateType,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    pub message: Option<String>,
    /// Kept verbatim: copied into Cancelled states proposed by the worker.
    #[serde(default)]
    pub state_details: Map<String, Value>,
    /// The result reference of a final state, kept so the state can be re-proposed intact.
    #[serde(default)]
    pub data: Option<Value>,
}

/// A state the worker proposes through `set_state`.
#[derive(Debug, Clone, Serialize)]
pub struct StateCreate {
    #[serde(rename = "type")]
    pub state_type: StateType,
    pub name: String,
    pub message: Option<String>,
    pub state_details: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl StateCreate {
    /// A fresh state of `state_type` named `name`, with a new transition id.
    pub fn new(state_type: StateType, name: &str, flow_run_id: Uuid) -> Self {
        let mut details = Map::new();
        details.insert("flow_run_id".into(), Value::String(flow_run_id.to_string()));
        details.insert(
            "transition_id".into(),
            Value::String(Uuid::new_v4().to_string()),
        );
        StateCreate {
            state_type,
            name: name.to_string(),
            message: None,
            state_details: details,
            data: None,
        }
    }

    /// A copy of `state` to propose again (same type, name, message, details and result).
    pub fn copy_of(state: &State) -> Self {
        let mut details = state.state_details.clone();
        details.insert(
            "transition_id".into(),
            Value::String(Uuid::new_v4().to_string()),
        );
        StateCreate {
            state_type: state.state_type.clone(),
            name: state.name.clone().unwrap_or_else(|| {
                // Prefect's default names are the type in title case ("Crashed").
                let mut t = state.state_type.as_str().chars();
                t.next()
                    .map(|f| f.to_string() + &t.as_str().to_lowercase())
                    .unwrap_or_default()
            }),
            message: state.message.clone(),
            state_details: details,
            data: state.data.clone(),
        }
    }

    /// Attach a human-readable message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

/// The server's verdict on a proposed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetStateStatus {
    Accept,
    Reject,
    Abort,
    Wait,
    Unknown(String),
}

impl<'de> Deserialize<'de> for SetStateStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "ACCEPT" => SetStateStatus::Accept,
            "REJECT" => SetStateStatus::Reject,
            "ABORT" => SetStateStatus::Abort,
            "WAIT" => SetStateStatus::Wait,
            _ => SetStateStatus::Unknown(s),
        })
    }
}

/// Why the server did not simply accept.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SetStateDetails {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub delay_seconds: Option<f64>,
}

/// Response of `POST /flow_runs/{id}/set_state`.
#[derive(Debug, Clone, Deserialize)]
pub struct SetStateResponse {
    #[serde(default)]
    pub state: Option<State>,
    pub status: SetStateStatus,
    #[serde(default)]
    pub details: SetStateDetails,
}

impl SetStateResponse {
    /// Whether this answers a proposal the server had already committed: every proposal
    /// carries a fresh `transition_id`, and when a retried request repeats one whose first
    /// attempt committed (its response lost to a timeout or a dropped connection), the
    /// server's duplicate-transition rule REJECTs it and returns the run's current state,
    /// which is the proposal itself. Such a REJECT is an acceptance.
    pub fn is_duplicate_of(&self, proposed: &StateCreate) -> bool {
        let id = |d: &Map<String, Value>| d.get("transition_id").cloned();
        self.status == SetStateStatus::Reject
            && id(&proposed.state_details).is_some()
            && self.state.as_ref().map(|s| id(&s.state_details))
                == Some(id(&proposed.state_details))
    }
}

/// A work pool.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkPool {
    pub id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub pool_type: String,
    #[serde(default)]
    pub base_job_template: Value,
    #[serde(default)]
    pub is_paused: bool,
    #[serde(default)]
    pub concurrency_limit: Option<u64>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub default_queue_id: Option<Uuid>,
}

/// Only a flow run's id and current state: what watching many runs at once needs. Reading
/// this instead of [`FlowRun`] skips the maps (labels, state details, job variables) that
/// would otherwise be built and dropped for every run on every observation.
#[derive(Debug, Clone, Deserialize)]
pub struct FlowRunHead {
    pub id: Uuid,
    #[serde(default)]
    pub state_type: Option<StateType>,
    #[serde(default)]
    pub state_name: Option<String>,
    #[serde(default)]
    pub state: Option<StateHead>,
}

/// A state's type and name.
#[derive(Debug, Clone, Deserialize)]
pub struct StateHead {
    #[serde(rename = "type")]
    pub state_type: StateType,
    #[serde(default)]
    pub name: Option<String>,
}

impl FlowRunHead {
    /// The current state's type.
    pub fn current_state_type(&self) -> Option<&StateType> {
        self.state
            .as_ref()
            .map(|s| &s.state_type)
            .or(self.state_type.as_ref())
    }

    /// The current state's name.
    pub fn current_state_name(&self) -> Option<&str> {
        self.state
            .as_ref()
            .and_then(|s| s.name.as_deref())
            .or(self.state_name.as_deref())
    }
}

/// A flow run, as returned by reads and by `get_scheduled_flow_runs`.
#[derive(Debug, Clone, Deserialize)]
pub struct FlowRun {
    pub id: Uuid,
    pub name: String,
    pub flow_id: Uuid,
    #[serde(default)]
    pub deployment_id: Option<Uuid>,
    #[serde(default)]
    pub state: Option<State>,
    #[serde(default)]
    pub state_type: Option<StateType>,
    #[serde(default)]
    pub state_name: Option<String>,
    #[serde(default)]
    pub job_variables: Option<Value>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub labels: Option<Map<String, Value>>,
    #[serde(default)]
    pub infrastructure_pid: Option<String>,
    #[serde(default)]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub created: Option<DateTime<Utc>>,
    #[serde(default)]
    pub expected_start_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub work_queue_name: Option<String>,
    #[serde(default)]
    pub work_queue_id: Option<Uuid>,
}

impl FlowRun {
    /// The current state type, from the embedded state or the flat field (2.x sends `state: null`).
    pub fn current_state_type(&self) -> Option<&StateType> {
        self.state
            .as_ref()
            .map(|s| &s.state_type)
            .or(self.state_type.as_ref())
    }
}

/// One item of `get_scheduled_flow_runs`.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerFlowRunResponse {
    pub work_pool_id: Uuid,
    #[serde(default)]
    pub work_queue_id: Option<Uuid>,
    pub flow_run: FlowRun,
}

/// A deployment (the fields a worker reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Deployment {
    pub id: Uuid,
    pub name: String,
    pub flow_id: Uuid,
    #[serde(default, alias = "infra_overrides")]
    pub job_variables: Option<Value>,
    #[serde(default)]
    pub updated: Option<DateTime<Utc>>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub work_pool_name: Option<String>,
}

/// A flow (the fields a worker reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Flow {
    pub id: Uuid,
    pub name: String,
}

/// A log line for `POST /logs/`.
#[derive(Debug, Clone, Serialize)]
pub struct LogCreate {
    pub name: String,
    pub level: u8,
    pub message: String,
    pub timestamp: DateTime<Utc>,
    pub flow_run_id: Option<Uuid>,
    pub task_run_id: Option<Uuid>,
}

/// A Prefect event (`/events/in`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub occurred: DateTime<Utc>,
    pub event: String,
    pub id: Uuid,
    #[serde(default)]
    pub follows: Option<Uuid>,
    #[serde(default)]
    pub payload: Map<String, Value>,
    pub resource: BTreeMap<String, String>,
    #[serde(default)]
    pub related: Vec<BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: &str, details: Value) -> SetStateResponse {
        serde_json::from_value(serde_json::json!({
            "status": status,
            "state": {"id": Uuid::new_v4(), "type": "PENDING", "name": "Pending", "state_details": details},
        }))
        .unwrap()
    }

    #[test]
    fn a_reject_carrying_our_transition_id_is_a_committed_duplicate() {
        let ours = StateCreate::new(StateType::Pending, "Pending", Uuid::new_v4());
        let tid = ours.state_details["transition_id"].clone();
        assert!(
            response("REJECT", serde_json::json!({"transition_id": tid})).is_duplicate_of(&ours)
        );
        // Someone else's transition, no transition id, or a status other than REJECT: not ours.
        let other = serde_json::json!({"transition_id": Uuid::new_v4().to_string()});
        assert!(!response("REJECT", other).is_duplicate_of(&ours));
        assert!(!response("REJECT", serde_json::json!({})).is_duplicate_of(&ours));
        assert!(
            !response("ABORT", serde_json::json!({"transition_id": tid})).is_duplicate_of(&ours)
        );
        let mut anonymous = ours.clone();
        anonymous.state_details.remove("transition_id");
        assert!(!response("REJECT", serde_json::json!({})).is_duplicate_of(&anonymous));
    }
}
