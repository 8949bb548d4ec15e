//! The fault suite's bookkeeping: what a scenario submitted, what became of every run, and
//! the counts that must be zero — gathered from Prefect (states, `run_count`) and the emulator
//! (container groups left behind, `createOrUpdate` answers), then written as one row of
//! `docs/RELIABILITY.md`.
//!
//! Each scenario is its own test (they run in parallel), so rows are first written as JSON
//! files under `target/faults-report/` and the document is regenerated from all of them after
//! each scenario: the table always shows the latest result of every scenario.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::capture;
use crate::support::Api;

/// One scenario's numbers.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Row {
    pub scenario: String,
    pub what: String,
    pub submitted: usize,
    pub completed: usize,
    pub failed: usize,
    pub crashed: usize,
    pub cancelled: usize,
    /// Crash/cancel reasons seen (shortened, deduplicated).
    pub reasons: Vec<String>,
    /// Runs not in a final state when the scenario's deadline passed.
    pub lost: usize,
    /// Runs in Pending or Running with no container group.
    pub zombies: usize,
    /// Container groups still present after cleanup had its time.
    pub orphans: usize,
    /// Flow runs executed more than once, plus container group PUTs that replaced an
    /// existing group.
    pub duplicates: usize,
    /// Secret values found in worker logs, Prefect logs or ARM responses.
    pub secrets_found: usize,
    pub seconds: u64,
    pub mode: String,
}

impl Row {
    pub fn new(scenario: &str, what: &str) -> Self {
        Row {
            scenario: scenario.into(),
            what: what.into(),
            mode: if crate::soak() { "soak" } else { "ci" }.into(),
            ..Default::default()
        }
    }
}

/// What a scenario expects of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    /// Any final state is fine (e.g. a run whose worker was killed before launch may crash).
    AnyFinal,
    Completed,
    Crashed,
    Cancelled,
}

/// The runs of a scenario and what each must end as.
#[derive(Default)]
pub struct Ledger {
    pub runs: Vec<(Uuid, Expect)>,
    pub secrets: Vec<String>,
    /// Secret values the scenario itself found elsewhere (ARM GETs, health endpoints).
    pub extra_hits: usize,
    /// Log files of worker processes, searched for secrets like the captured tracing output.
    pub log_files: Vec<std::path::PathBuf>,
}

impl Ledger {
    pub fn add(&mut self, run: Uuid, expect: Expect) {
        self.runs.push((run, expect));
    }
}

fn short(msg: &str) -> String {
    // Every submission failure starts with the same words; the rest is the reason.
    let msg = msg
        .strip_prefix("Failed to submit flow run to infrastructure: ")
        .unwrap_or(msg);
    let one_line = msg.replace('\n', " ");
    let mut s: String = one_line.chars().take(110).collect();
    if one_line.chars().count() > 110 {
        s.push('…');
    }
    s
}

/// Wait for every run to end and the emulator to be clean, then count.
///
/// `expected_groups` is how many groups are meant to stay (`keep_container_group`).
pub async fn audit(
    row: &mut Row,
    api: &Api,
    emu: &aci_emulator::Emulator,
    ledger: &Ledger,
    timeout: Duration,
    started: Instant,
) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    let mut finals: Vec<Value> = Vec::new();
    loop {
        finals.clear();
        let mut open = 0;
        for (id, _) in &ledger.runs {
            let fr = api.flow_run(*id).await;
            if !is_final(&fr) {
                open += 1;
            }
            finals.push(fr);
        }
        if open == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Give cleanup (and the periodic recovery pass) time to delete every group.
    let cleanup_deadline =
        Instant::now() + Duration::from_secs(if crate::soak() { 180 } else { 120 });
    while !emu.groups().is_empty() && Instant::now() < cleanup_deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let groups = emu.groups();
    row.submitted = ledger.runs.len();
    let mut reasons = BTreeSet::new();
    for ((id, expect), fr) in ledger.runs.iter().zip(&finals) {
        let t = state_type(fr);
        let msg = fr["state"]["message"].as_str().unwrap_or("");
        match t.as_str() {
            "COMPLETED" => row.completed += 1,
            "FAILED" => row.failed += 1,
            "CRASHED" => {
                row.crashed += 1;
                reasons.insert(short(msg));
            }
            "CANCELLED" => {
                row.cancelled += 1;
            }
            _ => {
                row.lost += 1;
                let has_group = groups.iter().any(|g| g.name.contains(&id.to_string()));
                if matches!(t.as_str(), "PENDING" | "RUNNING") && !has_group {
                    row.zombies += 1;
                }
                eprintln!("[faults] {}: run {id} not final: {t} {msg}", row.scenario);
            }
        }
        let ok = match expect {
            Expect::AnyFinal => true,
            Expect::Completed => t == "COMPLETED",
            Expect::Crashed => t == "CRASHED",
            Expect::Cancelled => t == "CANCELLED",
        };
        if !ok && is_final(fr) {
            eprintln!(
                "[faults] {}: run {id} expected {expect:?}, got {t}: {msg}",
                row.scenario
            );
            reasons.insert(format!(
                "UNEXPECTED {t} (wanted {expect:?}): {}",
                short(msg)
            ));
        }
        let run_count = fr["run_count"].as_u64().unwrap_or(0);
        if run_count > 1 {
            eprintln!(
                "[faults] {}: run {id} executed {run_count} times",
                row.scenario
            );
            row.duplicates += (run_count - 1) as usize;
        }
    }
    row.reasons = reasons.into_iter().collect();
    row.orphans = groups.len();
    for g in &groups {
        eprintln!(
            "[faults] {}: orphan group {} ({:?})",
            row.scenario, g.name, g.state
        );
    }
    // A PUT answered 200 replaced a group that already existed: a second launch.
    row.duplicates += emu.stats().count("containerGroups.createOrUpdate", 200) as usize;
    // Secrets: the worker's own tracing output, and the runs' logs as Prefect stored them.
    let mut haystack = capture::contents();
    for f in &ledger.log_files {
        haystack.push_str(&std::fs::read_to_string(f).unwrap_or_default());
    }
    for (id, _) in &ledger.runs {
        haystack.push_str(&api.logs(*id).await.join("\n"));
    }
    for fr in &finals {
        haystack.push_str(&fr.to_string());
    }
    row.secrets_found = ledger
        .secrets
        .iter()
        .filter(|s| !s.is_empty() && haystack.contains(s.as_str()))
        .count()
        + ledger.extra_hits;
    row.seconds = started.elapsed().as_secs();
    finals
}

pub fn is_final(fr: &Value) -> bool {
    matches!(
        state_type(fr).as_str(),
        "COMPLETED" | "FAILED" | "CRASHED" | "CANCELLED"
    )
}

pub fn state_type(fr: &Value) -> String {
    fr["state"]["type"]
        .as_str()
        .or(fr["state_type"].as_str())
        .unwrap_or("")
        .to_string()
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rows_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("faults-report")
}

/// Record the row, regenerate `docs/RELIABILITY.md`, and fail on a must-be-zero count.
pub fn finish(row: &Row) {
    let dir = rows_dir();
    std::fs::create_dir_all(&dir).expect("create the report directory");
    // One file per scenario and mode: the document shows the latest CI and soak results.
    let file = dir.join(format!("{}.{}.json", row.scenario, row.mode));
    std::fs::write(&file, serde_json::to_vec_pretty(row).expect("row json")).expect("write row");
    write_document(&dir);
    eprintln!("[faults] {row:?}");
    let unexpected: Vec<&String> = row
        .reasons
        .iter()
        .filter(|r| r.starts_with("UNEXPECTED"))
        .collect();
    assert!(
        row.lost == 0
            && row.zombies == 0
            && row.orphans == 0
            && row.duplicates == 0
            && row.secrets_found == 0,
        "scenario {} broke a must-be-zero count: {row:#?}",
        row.scenario
    );
    assert!(
        unexpected.is_empty(),
        "scenario {}: runs ended in unexpected states: {unexpected:#?}",
        row.scenario
    );
}

fn write_document(dir: &PathBuf) {
    let mut rows: Vec<Row> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| std::fs::read(e.path()).ok())
                .filter_map(|b| serde_json::from_slice(&b).ok())
                .collect()
        })
        .unwrap_or_default();
    rows.sort_by(|a, b| (&a.scenario, &a.mode).cmp(&(&b.scenario, &b.mode)));
    let mut doc = String::from(DOC_HEAD);
    doc.push_str("| Scenario | What is done to the worker | Mode | Submitted | Completed | Failed | Crashed | Cancelled | Lost | Zombies | Orphan groups | Duplicate submissions | Secrets found | Seconds | Crash reasons seen |\n");
    doc.push_str("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
    for r in &rows {
        let reasons = if r.reasons.is_empty() {
            "—".to_string()
        } else {
            r.reasons
                .iter()
                .map(|s| s.replace('|', "\\|"))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        doc.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.what.replace('|', "\\|"),
            r.mode,
            r.submitted,
            r.completed,
            r.failed,
            r.crashed,
            r.cancelled,
            r.lost,
            r.zombies,
            r.orphans,
            r.duplicates,
            r.secrets_found,
            r.seconds,
            reasons
        ));
    }
    doc.push_str(DOC_TAIL);
    // The fuzzing results (written by `make fuzz`'s last recorded run) belong to the same
    // story: the parsers and the templating engine facing bad input.
    if let Ok(fuzz) = std::fs::read_to_string(repo_root().join("fuzz/RESULTS.md")) {
        doc.push('\n');
        doc.push_str(&fuzz);
    }
    let path = repo_root().join("docs/RELIABILITY.md");
    let tmp = path.with_extension(format!("md.{}", std::process::id()));
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    // Write-then-rename: parallel scenarios never leave a half-written document.
    if std::fs::write(&tmp, doc).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}

const DOC_HEAD: &str = "# Reliability: the fault matrix

<!-- Generated by `cargo test -p prefect-aci-worker --test faults` (run through `make test`,
     or `make soak` for the long mode). Do not edit by hand: the suite rewrites this file. -->

Every scenario drives the real worker against a real Prefect server and the ACI emulator,
injects one kind of fault, then waits for every flow run to end and for cleanup to finish, and
counts. A scenario **fails** when any of these is not zero:

- **Lost**: a flow run not in a final state (Completed, Failed, Crashed, Cancelled) when the
  scenario's deadline passed.
- **Zombies**: a flow run left Pending or Running with no container group behind it.
- **Orphan groups**: a container group still in the emulator after the runs ended and cleanup
  (including the periodic recovery pass) had its time.
- **Duplicate submissions**: a flow run whose engine ran more than once (`run_count` > 1), or a
  container group PUT that replaced an existing group (ARM answered 200, not 201).
- **Secrets found**: a secret value (the run's secret env values, the Azure client secret)
  found in the worker's tracing output at debug level, in the run's logs in Prefect, or in the
  flow run records.

A run may end Crashed when the scenario makes that the right outcome (bad job variables,
capacity with no fallback, a worker killed before the container existed); the reasons seen
are listed so a reader can judge them. Any run ending in a state the scenario did not expect
is reported as `UNEXPECTED` and fails the scenario too.

Modes: `ci` is what `make test` runs (sized to stay within a few minutes on 2 cores);
`soak` is `make soak` (`PREFECT_ACI_SOAK=1`: 20 worker kills, more runs, a 60 s Prefect
outage).

";

const DOC_TAIL: &str = "
## How each fault is made

- **Worker process SIGKILLed**: the real `prefect-aci worker start` binary (built by the test
  with `cargo build -p prefect-aci`, configured for the emulator through `AZURE_*` and
  `PREFECT_*` variables like a user's) is SIGKILLed at a random moment 0–12 s after each new
  run, and a fresh process started; its debug-level output is searched for secrets too.
- **Worker killed** (in-process, at chosen points): the worker runs on its own Tokio runtime, which is dropped at the kill
  point (`shutdown_background`): every task stops at its next await, no cleanup, no
  hand-back — the in-process equivalent of SIGKILL. Kill points cycle through: a random delay
  after the run is created, as soon as the run is Pending, as soon as its container group
  exists, while it is Running, and right after it reached its final state (before cleanup).
  Each kill is followed by a fresh worker that has to adopt what the dead one left.
- **ARM 429 storm**: the emulator's per-principal token buckets shrunk to a burst of 2–3 and
  1 request/s; every answer beyond that is 429 with `Retry-After`.
- **ARM 5xx**: the emulator fails 10% of ARM requests (half 500, half 503 with `Retry-After`)
  before handling them.
- **Prefect outage**: a dedicated Prefect server is stopped (SIGTERM) while a run is in its
  container and another is waiting, then restarted on the same port and SQLite database.
- **Capacity**: the emulator answers container group creation in `eastus` with ACI's
  `ServiceUnavailable`; with `fallback_locations: [\"westus\"]` the run must complete there,
  without it the run must be Crashed with Azure's message within `task_start_timeout_seconds`.
- **IMDS unavailable at start**: the worker authenticates with a user-assigned managed
  identity through the emulator's IMDS, which answers 503 for its first seconds.
- **Two workers**: two workers poll the same pool; every run must be launched exactly once.
- **Bad job variables**: more than 20 kinds of invalid values; each run must be Crashed with a
  message naming the variable while the worker keeps serving a good run.
- **Malformed responses**: a loopback proxy between the worker and Prefect (and another in
  front of ARM) replaces a share of answers with truncated JSON, HTML error pages, wrong JSON
  types and empty bodies.
- **Cancellation**: a run cancelled while Scheduled, while its group is provisioning, and
  while Running.
- **Secrets**: a wrong `aci_credentials` secret for the same client id as a good deployment,
  secret env values with `keep_container_group` (the kept group is read back through ARM),
  a failing flow with secrets in env, `/health` and `/metrics` read.
- **TLS**: ARM behind an HTTPS proxy whose certificate comes from a private CA; Prefect behind
  the same kind of proxy.

## What the suite found (and what was changed)

- A run with a wrong `aci_credentials` client secret **completed**: ARM clients were cached by
  client id and tenant only, so it borrowed the client another deployment had authenticated
  with the right secret. The cache key now includes a (randomly keyed) hash of the secret.
- With two workers on one pool, **every run was adopted by the other, live worker** (two
  watchers, two cleanups per run): recovery adopted any non-final run of the pool that had a
  container group. Recovery now skips runs whose `prefect.worker.name` is another online worker.
- A worker killed after claiming a run but before reporting its identifier left the run
  **Pending forever** (Prefect does not reap Pending runs). Recovery now hands such runs back
  (Scheduled) once they have been Pending without an identifier for 10 heartbeats (≥ 60 s), unless
  their claimer is online.
- A worker killed after reporting the identifier but before the group existed had its run
  **crashed** by the successor (`exited with -1`) although nothing had run. An adopted run whose
  group does not exist while it is still Pending is now launched (same deterministic name).
- One malformed 200 from Prefect (undecodable body) or from an ARM GET **crashed the run**.
  Undecodable Prefect answers get a few retries; undecodable ARM reads are transient; a transient
  launch failure is retried a few times (launch is idempotent).
- `env` given as a non-object, `subnet_ids` that are not subnet ids and `dns_servers` that are
  not IP addresses were **silently accepted** (the first was dropped); each is now refused with a
  message naming the variable.
- In soak mode (10 runs, 1 in 3 ARM reads garbled) a retried launch found its group still
  provisioning and **PUT it again** (ARM answered 200: a duplicate launch). A retried launch now
  follows the existing group's provisioning instead of sending a second PUT.
- A worker stopping while a recovery pass waited on ARM did not stop until the pass ended;
  recovery is now abandoned on shutdown (it is idempotent).
";
