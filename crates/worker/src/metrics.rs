//! Worker metrics, served as Prometheus text at `/metrics` beside `/health`.
//!
//! One process-wide [`Metrics`] registry ([`global`]) collects counters from the places that
//! know them: the worker loop (submissions, polls), the run state
//! machine (steps, ends by Prefect state), pickup by events (socket up or down), and the ARM
//! clients of the ACI backend (requests by operation and status, retries, time waited for
//! client-side throttle tokens; registered with [`Metrics::register_arm`]). A global keeps the
//! hooks one line each in code that has no handle to pass around, the same choice Prometheus
//! client libraries make with their default registry; a process runs one worker.
//!
//! The exposition format is written by hand ([`Metrics::render`]): it is a few `# HELP`/`# TYPE`
//! lines and `name{label="value"} number` samples, not worth a dependency. Label values are
//! escaped as the format requires (`\\`, `"`, newline).
//!
//! Pickup latency is measured by the worker itself: from the moment a run became due (its
//! scheduled start, or its creation if that is later) to the moment the worker took it on.
//! The benchmark (`bench/`) measures the same thing from outside, up to the ARM PUT.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use prefect_client::models::StateType;

/// Upper bounds (seconds) of the pickup-latency histogram buckets.
pub const PICKUP_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0];

/// A cumulative histogram with fixed buckets.
#[derive(Debug, Default)]
struct Histogram {
    /// Counts per bucket of [`PICKUP_BUCKETS`] (non-cumulative; summed when rendered).
    buckets: [u64; PICKUP_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if let Some(i) = PICKUP_BUCKETS.iter().position(|b| v <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }
}

/// The registry. All methods take `&self` and are cheap enough for hot paths.
#[derive(Debug, Default)]
pub struct Metrics {
    runs_submitted: AtomicU64,
    runs_in_flight: AtomicI64,
    runs_finished: Mutex<BTreeMap<String, u64>>,
    steps: Mutex<BTreeMap<&'static str, u64>>,
    polls: AtomicU64,
    event_wakeups: AtomicU64,
    events_connected: AtomicI64,
    pickup: Mutex<Histogram>,
    arm: Mutex<Vec<Arc<azure_arm::ArmMetrics>>>,
}

/// The process-wide registry.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// A run was handed to a task. `due` is when it became due (for runs claimed from a
    /// poll); adopted runs pass `None` and are not part of the pickup histogram.
    pub fn run_submitted(&self, due: Option<DateTime<Utc>>) {
        self.runs_submitted.fetch_add(1, Ordering::Relaxed);
        self.runs_in_flight.fetch_add(1, Ordering::Relaxed);
        if let Some(due) = due {
            let secs = (Utc::now() - due).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
            lock(&self.pickup).observe(secs);
        }
    }

    /// When a run became due: its scheduled start, or its creation if that is later.
    pub fn due_time(
        created: Option<DateTime<Utc>>,
        expected_start: Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        match (created, expected_start) {
            (Some(c), Some(s)) => Some(c.max(s)),
            (c, s) => c.or(s),
        }
    }

    /// A run task ended; `last_state` is the last Prefect state the worker saw for it.
    pub fn run_ended(&self, last_state: Option<&StateType>) {
        self.runs_in_flight.fetch_sub(1, Ordering::Relaxed);
        let label = last_state
            .map(|s| s.as_str().to_ascii_lowercase())
            .unwrap_or_else(|| "unknown".into());
        *lock(&self.runs_finished).entry(label).or_insert(0) += 1;
    }

    /// The run state machine entered `phase`.
    pub fn step(&self, phase: &'static str) {
        *lock(&self.steps).entry(phase).or_insert(0) += 1;
    }

    /// The worker asked the server for scheduled runs.
    pub fn polled(&self) {
        self.polls.fetch_add(1, Ordering::Relaxed);
    }

    /// A flow-run event woke the worker.
    pub fn event_wakeup(&self) {
        self.event_wakeups.fetch_add(1, Ordering::Relaxed);
    }

    /// The events websocket of [`crate::pickup`] went up (`true`) or down.
    pub fn events_connected(&self, up: bool) {
        self.events_connected
            .store(i64::from(up), Ordering::Relaxed);
    }

    /// Count the requests of an ARM client from now on.
    pub fn register_arm(&self, m: Arc<azure_arm::ArmMetrics>) {
        let mut arm = lock(&self.arm);
        if !arm.iter().any(|x| Arc::ptr_eq(x, &m)) {
            arm.push(m);
        }
    }

    /// Runs submitted so far (tests, benchmarks).
    pub fn runs_submitted(&self) -> u64 {
        self.runs_submitted.load(Ordering::Relaxed)
    }

    /// The registry in Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut s = String::new();
        header(
            &mut s,
            "prefect_aci_runs_submitted_total",
            "counter",
            "Flow runs the worker took on (claimed or adopted).",
        );
        let _ = writeln!(
            s,
            "prefect_aci_runs_submitted_total {}",
            self.runs_submitted.load(Ordering::Relaxed)
        );
        header(
            &mut s,
            "prefect_aci_runs_in_flight",
            "gauge",
            "Flow runs the worker is driving now.",
        );
        let _ = writeln!(
            s,
            "prefect_aci_runs_in_flight {}",
            self.runs_in_flight.load(Ordering::Relaxed).max(0)
        );
        header(
            &mut s,
            "prefect_aci_runs_finished_total",
            "counter",
            "Flow runs the worker stopped driving, by the last Prefect state it saw.",
        );
        for (state, c) in lock(&self.runs_finished).iter() {
            let _ = writeln!(
                s,
                "prefect_aci_runs_finished_total{{state=\"{}\"}} {c}",
                escape(state)
            );
        }
        header(
            &mut s,
            "prefect_aci_run_steps_total",
            "counter",
            "Steps of the flow-run state machine, by phase.",
        );
        for (phase, c) in lock(&self.steps).iter() {
            let _ = writeln!(
                s,
                "prefect_aci_run_steps_total{{phase=\"{}\"}} {c}",
                escape(phase)
            );
        }
        header(
            &mut s,
            "prefect_aci_polls_total",
            "counter",
            "Requests for scheduled flow runs (on the interval or woken by an event).",
        );
        let _ = writeln!(
            s,
            "prefect_aci_polls_total {}",
            self.polls.load(Ordering::Relaxed)
        );
        header(
            &mut s,
            "prefect_aci_event_wakeups_total",
            "counter",
            "Flow-run events from the events websocket that woke the worker.",
        );
        let _ = writeln!(
            s,
            "prefect_aci_event_wakeups_total {}",
            self.event_wakeups.load(Ordering::Relaxed)
        );
        header(
            &mut s,
            "prefect_aci_events_connected",
            "gauge",
            "1 while the events websocket used for pickup is connected.",
        );
        let _ = writeln!(
            s,
            "prefect_aci_events_connected {}",
            self.events_connected.load(Ordering::Relaxed)
        );
        header(&mut s, "prefect_aci_pickup_latency_seconds", "histogram", "From a flow run becoming due (scheduled start, or creation if later) to the worker taking it on.");
        {
            let h = lock(&self.pickup);
            let mut cum = 0;
            for (b, c) in PICKUP_BUCKETS.iter().zip(h.buckets.iter()) {
                cum += c;
                let _ = writeln!(
                    s,
                    "prefect_aci_pickup_latency_seconds_bucket{{le=\"{b}\"}} {cum}"
                );
            }
            let _ = writeln!(
                s,
                "prefect_aci_pickup_latency_seconds_bucket{{le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(s, "prefect_aci_pickup_latency_seconds_sum {}", h.sum);
            let _ = writeln!(s, "prefect_aci_pickup_latency_seconds_count {}", h.count);
        }
        let mut requests: BTreeMap<(String, u16), u64> = BTreeMap::new();
        let (mut retries, mut wait) = (0u64, 0f64);
        for m in lock(&self.arm).iter() {
            let snap = m.snapshot();
            for (k, c) in snap.requests {
                *requests.entry(k).or_insert(0) += c;
            }
            retries += snap.retries;
            wait += snap.throttle_wait.as_secs_f64();
        }
        header(
            &mut s,
            "prefect_aci_arm_requests_total",
            "counter",
            "Azure Resource Manager requests, by operation and final HTTP status (0: no response).",
        );
        for ((op, status), c) in &requests {
            let _ = writeln!(
                s,
                "prefect_aci_arm_requests_total{{operation=\"{}\",status=\"{status}\"}} {c}",
                escape(op)
            );
        }
        header(
            &mut s,
            "prefect_aci_arm_retries_total",
            "counter",
            "Retried ARM request attempts.",
        );
        let _ = writeln!(s, "prefect_aci_arm_retries_total {retries}");
        header(
            &mut s,
            "prefect_aci_arm_throttle_wait_seconds_total",
            "counter",
            "Time ARM requests waited for client-side throttle tokens.",
        );
        let _ = writeln!(s, "prefect_aci_arm_throttle_wait_seconds_total {wait}");
        s
    }
}

fn header(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escape a label value: backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_escaped_labels() {
        let m = Metrics::default();
        m.run_submitted(Some(Utc::now() - chrono::Duration::milliseconds(700)));
        m.run_submitted(None);
        m.run_ended(Some(&StateType::Completed));
        m.step("launch");
        m.polled();
        m.events_connected(true);
        let text = m.render();
        assert!(
            text.contains("prefect_aci_runs_submitted_total 2\n"),
            "{text}"
        );
        assert!(text.contains("prefect_aci_runs_in_flight 1\n"), "{text}");
        assert!(
            text.contains("prefect_aci_runs_finished_total{state=\"completed\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("prefect_aci_polls_total 1\n"), "{text}");
        // 0.7 s falls in the 1 s bucket, not the 0.5 s one; buckets are cumulative.
        assert!(
            text.contains("prefect_aci_pickup_latency_seconds_bucket{le=\"0.5\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("prefect_aci_pickup_latency_seconds_bucket{le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("prefect_aci_pickup_latency_seconds_bucket{le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("prefect_aci_pickup_latency_seconds_count 1\n"),
            "{text}"
        );
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        // Every sample line belongs to a family declared before it.
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = name
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_sum")
                    .trim_end_matches("_count");
                assert!(
                    declared.contains(name) || declared.contains(base),
                    "undeclared {name}"
                );
            }
        }
    }

    #[test]
    fn due_time_is_the_later_of_creation_and_schedule() {
        let c = Utc::now();
        let s = c + chrono::Duration::seconds(30);
        assert_eq!(Metrics::due_time(Some(c), Some(s)), Some(s));
        assert_eq!(Metrics::due_time(Some(s), Some(c)), Some(s));
        assert_eq!(Metrics::due_time(None, Some(c)), Some(c));
    }
}
