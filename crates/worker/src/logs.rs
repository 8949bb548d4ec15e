//! Worker logs about a flow run, shipped to Prefect's `POST /logs/`.
//!
//! Every line a worker writes about a run goes two ways: to the worker's own output (tracing)
//! and, tagged with the run's `flow_run_id`, to the Prefect API so it appears in the run's
//! logs in the UI. Lines are batched: a background [`LogShipper`] flushes every two seconds or
//! when a batch nears Prefect's 4 MB limit (single lines are truncated at 1 MB, as Prefect does).
//! A failed flush is retried by the client; if the API stays down the batch is dropped with a
//! warning rather than growing without bound.

use std::time::Duration;

use chrono::Utc;
use prefect_client::models::LogCreate;
use prefect_client::PrefectClient;
use tokio::sync::mpsc;
use uuid::Uuid;

const MAX_LINE: usize = 1_000_000;
const MAX_BATCH: usize = 3_500_000;
const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Python logging levels, as Prefect stores them.
#[derive(Debug, Clone, Copy)]
pub enum Level {
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
}

/// A logger bound to one flow run.
#[derive(Debug, Clone)]
pub struct RunLogger {
    flow_run_id: Uuid,
    name: &'static str,
    tx: Option<mpsc::UnboundedSender<LogCreate>>,
}

impl RunLogger {
    /// A logger that only writes to the worker's own output (tests, no API).
    pub fn local(flow_run_id: Uuid) -> Self {
        RunLogger {
            flow_run_id,
            name: "prefect.flow_runs.worker",
            tx: None,
        }
    }

    /// The same run's logger under another logger name (e.g. container output).
    pub fn named(&self, name: &'static str) -> Self {
        RunLogger {
            name,
            ..self.clone()
        }
    }

    /// The run this logger belongs to.
    pub fn flow_run_id(&self) -> Uuid {
        self.flow_run_id
    }

    /// Log at `level` with the current time.
    pub fn log(&self, level: Level, message: impl Into<String>) {
        self.log_at(level, message, Utc::now());
    }

    /// Log with an explicit timestamp (container lines keep their own time).
    pub fn log_at(&self, level: Level, message: impl Into<String>, at: chrono::DateTime<Utc>) {
        let mut message = message.into();
        match level {
            Level::Error => tracing::error!(flow_run_id = %self.flow_run_id, "{message}"),
            Level::Warning => tracing::warn!(flow_run_id = %self.flow_run_id, "{message}"),
            Level::Info => tracing::info!(flow_run_id = %self.flow_run_id, "{message}"),
            Level::Debug => tracing::debug!(flow_run_id = %self.flow_run_id, "{message}"),
        }
        if let Some(tx) = &self.tx {
            if message.len() > MAX_LINE {
                let mut end = MAX_LINE;
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                message.truncate(end);
            }
            let _ = tx.send(LogCreate {
                name: self.name.to_string(),
                level: level as u8,
                message,
                timestamp: at,
                flow_run_id: Some(self.flow_run_id),
                task_run_id: None,
            });
        }
    }

    pub fn info(&self, m: impl Into<String>) {
        self.log(Level::Info, m)
    }
    pub fn warning(&self, m: impl Into<String>) {
        self.log(Level::Warning, m)
    }
    pub fn error(&self, m: impl Into<String>) {
        self.log(Level::Error, m)
    }
}

/// The background task that batches and sends logs.
pub struct LogShipper {
    tx: mpsc::UnboundedSender<LogCreate>,
    task: tokio::task::JoinHandle<()>,
}

impl LogShipper {
    /// Start shipping to `client`.
    pub fn start(client: PrefectClient) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(ship(client, rx));
        LogShipper { tx, task }
    }

    /// A logger for one run.
    pub fn logger(&self, flow_run_id: Uuid) -> RunLogger {
        RunLogger {
            flow_run_id,
            name: "prefect.flow_runs.worker",
            tx: Some(self.tx.clone()),
        }
    }

    /// Flush what is queued and stop. Loggers still alive afterwards only write locally.
    pub async fn close(self) {
        drop(self.tx);
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

async fn ship(client: PrefectClient, mut rx: mpsc::UnboundedReceiver<LogCreate>) {
    let mut batch: Vec<LogCreate> = Vec::new();
    let mut size = 0usize;
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some(log) => {
                    size += log.message.len() + 200;
                    batch.push(log);
                    if size >= MAX_BATCH {
                        flush(&client, &mut batch).await;
                        size = 0;
                    }
                }
                None => {
                    flush(&client, &mut batch).await;
                    return;
                }
            },
            _ = tick.tick() => {
                flush(&client, &mut batch).await;
                size = 0;
            }
        }
    }
}

async fn flush(client: &PrefectClient, batch: &mut Vec<LogCreate>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = client.create_logs(batch).await {
        tracing::warn!(error = %e, lines = batch.len(), "could not send flow run logs to Prefect; dropping this batch");
    }
    batch.clear();
}
