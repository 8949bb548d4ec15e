//! Request counters the worker can read: [`ArmMetrics`].
//!
//! Counts are keyed by an *operation label* (method plus the resource types in
//! the path, e.g. `PUT containerGroups`, with names and ids left out so the
//! key space stays small) and the final HTTP status (0 = no response). Also
//! counted: retries and the total time spent waiting for client-side
//! throttle tokens, which tells an operator when the worker runs at ARM's
//! request limits.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Shared counters of one [`crate::ArmClient`].
#[derive(Debug, Default)]
pub struct ArmMetrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    retries: AtomicU64,
    throttle_wait_micros: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArmMetricsSnapshot {
    /// `(operation label, status) → count`; status 0 means no response.
    pub requests: BTreeMap<(String, u16), u64>,
    /// Retries performed (each retried attempt counts once).
    pub retries: u64,
    /// Total time requests waited for client-side throttle tokens.
    pub throttle_wait: Duration,
}

impl ArmMetrics {
    pub(crate) fn record_response(&self, operation: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((operation.to_owned(), status)).or_insert(0) += 1;
    }

    pub(crate) fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_throttle_wait(&self, wait: Duration) {
        if !wait.is_zero() {
            self.throttle_wait_micros
                .fetch_add(wait.as_micros() as u64, Ordering::Relaxed);
        }
    }

    /// Count for one `(operation, status)` pair.
    pub fn count(&self, operation: &str, status: u16) -> u64 {
        let m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&(operation.to_owned(), status)).copied().unwrap_or(0)
    }

    /// Total requests with `status` across operations.
    pub fn count_status(&self, status: u16) -> u64 {
        let m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .filter(|((_, s), _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// Total time spent waiting for client-side throttle tokens.
    pub fn throttle_wait(&self) -> Duration {
        Duration::from_micros(self.throttle_wait_micros.load(Ordering::Relaxed))
    }

    /// Number of retries performed.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// A consistent copy of all counters.
    pub fn snapshot(&self) -> ArmMetricsSnapshot {
        ArmMetricsSnapshot {
            requests: self
                .requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            retries: self.retries(),
            throttle_wait: self.throttle_wait(),
        }
    }
}

/// The operation label of a request: method plus the resource-type segments
/// after the last `providers/<Namespace>` (or the last type when there is no
/// provider), without names or ids: `GET containerGroups/containers/logs`.
pub fn operation_label(method: &str, path: &str) -> String {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut types: Vec<&str> = Vec::new();
    let mut saw_provider = false;
    let mut i = 0;
    while i < segs.len() {
        if segs[i].eq_ignore_ascii_case("providers") {
            // `providers/<Namespace>`, then type/name pairs.
            types.clear();
            saw_provider = true;
            i += 2;
            continue;
        }
        types.push(segs[i]);
        i += 2; // skip the name that follows a type
    }
    let kind = match (types.last(), saw_provider) {
        (None, true) => "providers".to_owned(),
        (None, false) => "/".to_owned(),
        (Some(_), true) => types.join("/"),
        (Some(last), false) => (*last).to_owned(),
    };
    format!("{method} {kind}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_drop_names() {
        let cg = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/cg1";
        assert_eq!(operation_label("PUT", cg), "PUT containerGroups");
        assert_eq!(
            operation_label("GET", &format!("{cg}/containers/c/logs")),
            "GET containerGroups/containers/logs"
        );
        assert_eq!(
            operation_label("GET", "/subscriptions/s/providers/Microsoft.ContainerInstance/locations/eastus/operations/op1"),
            "GET locations/operations"
        );
        assert_eq!(
            operation_label("POST", &format!("{cg}/stop")),
            "POST containerGroups/stop"
        );
        assert_eq!(
            operation_label("PUT", "/subscriptions/s/resourcegroups/rg"),
            "PUT resourcegroups"
        );
        assert_eq!(
            operation_label(
                "POST",
                "/subscriptions/s/providers/Microsoft.ContainerInstance/register"
            ),
            "POST register"
        );
        assert_eq!(
            operation_label(
                "GET",
                "/subscriptions/s/providers/Microsoft.ContainerInstance"
            ),
            "GET providers"
        );
    }

    #[test]
    fn counters() {
        let m = ArmMetrics::default();
        m.record_response("GET x", 200);
        m.record_response("GET x", 200);
        m.record_response("PUT x", 429);
        m.record_throttle_wait(Duration::from_millis(3));
        assert_eq!(m.count("GET x", 200), 2);
        assert_eq!(m.count_status(429), 1);
        assert_eq!(m.throttle_wait(), Duration::from_millis(3));
        assert_eq!(m.snapshot().requests.len(), 2);
    }
}
