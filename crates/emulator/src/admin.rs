//! The admin API under `/_emulator/` (no authentication; loopback only).
//!
//! - `GET /_emulator/health`: `{"status":"ok"}` once serving (for scripts that wait).
//! - `GET /_emulator/stats`: request counters ([`crate::Stats`]).
//! - `GET /_emulator/groups`: container groups with process ids and exit codes
//!   ([`crate::GroupSummary`]).
//! - `GET /_emulator/identities`: user-assigned identities with client and principal ids.
//! - `GET|PUT /_emulator/faults`: read or replace the [`crate::Faults`].
//! - `POST /_emulator/groups/{rg}/{name}/kill[?container=c]`: SIGKILL running containers
//!   as if they crashed; the restart policy applies.

use axum::http::{Method, StatusCode};
use axum::response::Response;

use crate::config::Faults;
use crate::error::ArmError;
use crate::http::{json, Req};
use crate::state::{lock, SharedRef};

/// Handles `/_emulator/{rest...}`; returns the stats name and response.
pub(crate) async fn handle(shared: &SharedRef, req: Req, rest: &[String]) -> (String, Response) {
    let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let m = req.method.clone();
    let result = match (m, l.as_slice()) {
        (Method::GET, ["health"]) => (
            "admin.health",
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({"status": "ok", "arm": shared.base_url}),
            )),
        ),
        (Method::GET, ["identities"]) => (
            "admin.identities",
            Ok(json(StatusCode::OK, &shared.identities())),
        ),
        (Method::GET, ["stats"]) => ("admin.stats", Ok(json(StatusCode::OK, &shared.stats()))),
        (Method::GET, ["groups"]) => ("admin.groups", Ok(json(StatusCode::OK, &shared.groups()))),
        (Method::GET, ["faults"]) => ("admin.faults", Ok(json(StatusCode::OK, &shared.faults()))),
        (Method::PUT, ["faults"]) => (
            "admin.faults",
            match serde_json::from_slice::<Faults>(&req.body) {
                Ok(f) => {
                    *lock(&shared.faults) = f.clone();
                    lock(&shared.state).capacity_used.clear();
                    Ok(json(StatusCode::OK, &f))
                }
                Err(e) => Err(ArmError::bad_request(
                    "InvalidFaults",
                    format!("The faults document is invalid: {e}"),
                )),
            },
        ),
        (Method::POST, ["groups", _, _, "kill"]) => {
            let key = crate::aci::group_key(shared, &rest[1], &rest[2]);
            (
                "admin.kill",
                match crate::runtime::crash(shared, &key, req.q("container")) {
                    Some(n) => Ok(json(StatusCode::OK, &serde_json::json!({ "killed": n }))),
                    None => Err(ArmError::new(
                        StatusCode::NOT_FOUND,
                        "ResourceNotFound",
                        format!(
                            "No container group '{}' in resource group '{}'.",
                            rest[2], rest[1]
                        ),
                    )),
                },
            )
        }
        _ => (
            "admin.unknown",
            Err(ArmError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("No admin route for '{}'.", req.path),
            )),
        ),
    };
    (
        result.0.to_string(),
        result.1.unwrap_or_else(ArmError::into_response),
    )
}
