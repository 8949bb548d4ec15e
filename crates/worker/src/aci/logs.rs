//! Container output and ACI events, turned into Prefect log lines and crash messages.
//!
//! ACI returns a container's whole log (up to its limit) on every read, each line prefixed
//! with an RFC 3339 timestamp when `timestamps=true`. [`LogCursor`] remembers how far it has
//! forwarded — the last timestamp and how many lines carried it — so repeated reads forward
//! each line exactly once, even when several lines share a timestamp.

use arm_models::container_group::ContainerGroup;
use chrono::{DateTime, Utc};

/// Position in a container's log.
#[derive(Debug, Default)]
pub struct LogCursor {
    last: Option<DateTime<Utc>>,
    /// Lines already forwarded that carry exactly `last`.
    at_last: usize,
    /// Untimestamped logs: how many lines were forwarded.
    plain_lines: usize,
}

impl LogCursor {
    /// The lines of `content` not forwarded yet, with their timestamps.
    pub fn take_new(&mut self, content: &str) -> Vec<(Option<DateTime<Utc>>, String)> {
        let mut out = Vec::new();
        let mut seen_at_last = 0usize;
        let mut plain = 0usize;
        for raw in content.lines() {
            let (ts, text) = split_timestamp(raw);
            match ts {
                Some(t) => {
                    match self.last {
                        Some(last) if t < last => continue,
                        Some(last) if t == last => {
                            seen_at_last += 1;
                            if seen_at_last <= self.at_last {
                                continue;
                            }
                            self.at_last += 1;
                        }
                        _ => {
                            self.last = Some(t);
                            self.at_last = 1;
                            seen_at_last = 1;
                        }
                    }
                    out.push((Some(t), text.to_string()));
                }
                None => {
                    plain += 1;
                    if plain > self.plain_lines {
                        self.plain_lines = plain;
                        out.push((None, raw.to_string()));
                    }
                }
            }
        }
        out
    }
}

fn split_timestamp(line: &str) -> (Option<DateTime<Utc>>, &str) {
    if let Some((head, rest)) = line.split_once(' ') {
        if let Ok(t) = DateTime::parse_from_rfc3339(head) {
            return (Some(t.with_timezone(&Utc)), rest);
        }
    }
    (None, line)
}

/// A one-line summary of why a group or its container ended: states, restarts and events.
pub fn describe_group(g: &ContainerGroup) -> String {
    let mut parts = Vec::new();
    if let Some(c) = g.properties.containers.first() {
        if let Some(v) = &c.properties.instance_view {
            if let Some(cur) = &v.current_state {
                if let Some(d) = cur.detail_status.as_deref().filter(|d| !d.is_empty()) {
                    parts.push(format!("Container state: {} ({d}).", cur.state));
                }
                if cur.exit_code == Some(137) {
                    parts.push("Exit code 137 means the container was killed (SIGKILL), often for running out of memory; consider a larger 'memory'.".into());
                }
            }
            if v.restart_count > 0 {
                parts.push(format!(
                    "The container was restarted {} time(s) by ACI.",
                    v.restart_count
                ));
            }
            for e in &v.events {
                if e.event_type.eq_ignore_ascii_case("Warning")
                    || matches!(
                        e.name.as_str(),
                        "Failed" | "BackOff" | "Killing" | "OOMKilled"
                    )
                {
                    parts.push(format!("ACI event {}: {}", e.name, e.message));
                }
            }
        }
    }
    if let Some(v) = &g.properties.instance_view {
        for e in &v.events {
            if e.event_type.eq_ignore_ascii_case("Warning") || e.name == "Failed" {
                parts.push(format!("ACI event {}: {}", e.name, e.message));
            }
        }
    }
    parts.dedup();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_each_line_once_across_reads() {
        let mut c = LogCursor::default();
        let first = "2026-11-28T03:11:26.1Z a\n2026-11-28T03:11:26.1Z b\n";
        let got: Vec<String> = c.take_new(first).into_iter().map(|l| l.1).collect();
        assert_eq!(got, ["a", "b"]);
        let second = format!("{first}2026-11-28T03:11:26.1Z c\n2026-11-28T03:11:27Z d\n");
        let got: Vec<String> = c.take_new(&second).into_iter().map(|l| l.1).collect();
        assert_eq!(got, ["c", "d"]);
        assert!(c.take_new(&second).is_empty());
    }

    #[test]
    fn plain_lines_are_counted() {
        let mut c = LogCursor::default();
        assert_eq!(c.take_new("x\ny\n").len(), 2);
        let got: Vec<String> = c.take_new("x\ny\nz\n").into_iter().map(|l| l.1).collect();
        assert_eq!(got, ["z"]);
    }
}
