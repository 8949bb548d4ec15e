//! The one retry loop, and the policy that tunes it.
//!
//! Every HTTP call this crate makes (ARM requests, LRO polls, AAD and IMDS
//! token requests) goes through [`run`]. The loop itself knows nothing about
//! HTTP: a *classifier* looks at each attempt's result and says "done",
//! "retryable status" or "transient failure"; the [`RetryPolicy`] decides
//! whether that status is worth retrying and how long to wait. That mirrors
//! the Azure SDK design (one loop, pluggable strategies) without a middleware
//! framework.
//!
//! Defaults follow the Azure SDKs and the Python ACI worker: retry 408, 429,
//! 500, 502, 503 and 504 plus connection errors; wait 0.8 s, doubling up to
//! 60 s, with ±20 % jitter so many workers do not retry in lockstep; stop after
//! 10 attempts or 5 minutes. A server `Retry-After` (or `retry-after-ms` /
//! `x-ms-retry-after-ms`) replaces the computed backoff: the server knows when
//! its throttle window reopens, we do not.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderMap;

/// How the retry loop behaves. Plain data; clone and tweak it per use.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first one (1 = never retry).
    pub max_attempts: u32,
    /// Give up once this much time has passed since the first attempt (a
    /// planned wait that would cross it is not started).
    pub max_elapsed: Duration,
    /// The first backoff.
    pub initial_delay: Duration,
    /// Backoff growth factor per retry.
    pub multiplier: f64,
    /// Upper bound of the computed backoff (a server `Retry-After` may exceed it).
    pub max_delay: Duration,
    /// Relative jitter: the backoff is multiplied by a random factor in
    /// `[1 - jitter, 1 + jitter]` (then capped at `max_delay`).
    pub jitter: f64,
    /// HTTP statuses that are retried.
    pub retry_statuses: Vec<u16>,
    /// Whether connection/transport failures are retried.
    pub retry_transport_errors: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            max_elapsed: Duration::from_secs(300),
            initial_delay: Duration::from_millis(800),
            multiplier: 2.0,
            max_delay: Duration::from_secs(60),
            jitter: 0.2,
            retry_statuses: vec![408, 429, 500, 502, 503, 504],
            retry_transport_errors: true,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// A fast policy for tests: tiny delays, same statuses.
    pub fn fast_for_tests() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            max_elapsed: Duration::from_secs(10),
            ..Self::default()
        }
    }

    /// The computed (jittered, capped) backoff before retry number `retry`
    /// (1 = the wait after the first attempt).
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(retry.saturating_sub(1).min(64) as i32);
        let base = self.initial_delay.as_secs_f64() * exp;
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + fastrand::f64() * 2.0 * jitter;
        let secs = (base * factor).min(self.max_delay.as_secs_f64());
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(self.max_delay)
    }

    /// Whether `status` is in the retried set.
    pub fn retries_status(&self, status: u16) -> bool {
        self.retry_statuses.contains(&status)
    }
}

/// What the classifier says about one attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Hand the result to the caller.
    Done,
    /// The server answered with `status`; retry if the policy retries it.
    Status {
        /// HTTP status.
        status: u16,
        /// The server's requested wait, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The request failed in transport (connect, reset, timeout).
    Transient,
}

/// What happened to one attempt that will be retried; passed to the observer.
#[derive(Clone, Debug)]
pub struct RetryEvent {
    /// The attempt that failed (1-based).
    pub attempt: u32,
    /// The status that caused the retry, or `None` for a transport failure.
    pub status: Option<u16>,
    /// How long the loop will sleep.
    pub delay: Duration,
    /// Whether the delay came from the server (`Retry-After`).
    pub from_server: bool,
}

/// Runs `op` until the classifier says done, the policy gives up, or the
/// budget runs out; returns the last result either way.
///
/// `op` receives the 1-based attempt number. `on_retry` is called before each
/// sleep (for logs and metrics).
pub async fn run<T, F, Fut, C, O>(
    policy: &RetryPolicy,
    classify: C,
    mut on_retry: O,
    mut op: F,
) -> T
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = T>,
    C: Fn(&T) -> Verdict,
    O: FnMut(&RetryEvent),
{
    let started = Instant::now();
    let mut attempt = 1u32;
    loop {
        let result = op(attempt).await;
        let (status, server_delay) = match classify(&result) {
            Verdict::Done => return result,
            Verdict::Status {
                status,
                retry_after,
            } => {
                if !policy.retries_status(status) {
                    return result;
                }
                (Some(status), retry_after)
            }
            Verdict::Transient => {
                if !policy.retry_transport_errors {
                    return result;
                }
                (None, None)
            }
        };
        if attempt >= policy.max_attempts {
            return result;
        }
        let delay = server_delay.unwrap_or_else(|| policy.backoff(attempt));
        if started.elapsed() + delay > policy.max_elapsed {
            return result;
        }
        on_retry(&RetryEvent {
            attempt,
            status,
            delay,
            from_server: server_delay.is_some(),
        });
        drop(result);
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// Reads the server's requested wait from `retry-after-ms`, `x-ms-retry-after-ms`
/// or `Retry-After` (delta seconds or an HTTP date), relative to `now`.
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
        {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    parse_retry_after_value(value, now)
}

/// Parses one `Retry-After` value: delta seconds or an HTTP date (past dates give zero).
pub fn parse_retry_after_value(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at: SystemTime = at.with_timezone(&chrono::Utc).into();
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn jitter_stays_in_bounds_and_caps() {
        let p = RetryPolicy::default();
        for _ in 0..500 {
            let d1 = p.backoff(1).as_secs_f64();
            assert!((0.64..=0.96).contains(&d1), "first backoff {d1}");
            let d3 = p.backoff(3).as_secs_f64();
            assert!((2.56..=3.84).contains(&d3), "third backoff {d3}");
            assert!(p.backoff(30) <= p.max_delay);
        }
        let no_jitter = RetryPolicy { jitter: 0.0, ..p };
        assert_eq!(no_jitter.backoff(2), Duration::from_millis(1600));
        assert_eq!(no_jitter.backoff(20), Duration::from_secs(60));
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470); // 2015-10-21 07:27:50 UTC
        assert_eq!(
            parse_retry_after_value("7", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after_value("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after_value("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after_value("soon", now), None);
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(3)));
        h.insert("x-ms-retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_millis(250)));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_wins_over_backoff() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(1),
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let calls = AtomicU32::new(0);
        let mut waits = Vec::new();
        let started = tokio::time::Instant::now();
        let out: u16 = run(
            &policy,
            |s: &u16| match *s {
                429 => Verdict::Status {
                    status: 429,
                    retry_after: Some(Duration::from_secs(7)),
                },
                _ => Verdict::Done,
            },
            |e| waits.push((e.delay, e.from_server)),
            |_| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        429
                    } else {
                        200
                    }
                }
            },
        )
        .await;
        assert_eq!(out, 200);
        assert_eq!(waits, vec![(Duration::from_secs(7), true)]);
        assert!(started.elapsed() >= Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_max_attempts_and_skips_unlisted_statuses() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::fast_for_tests()
        };
        let calls = AtomicU32::new(0);
        let out: u16 = run(
            &policy,
            |s: &u16| Verdict::Status {
                status: *s,
                retry_after: None,
            },
            |_| {},
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { 503 }
            },
        )
        .await;
        assert_eq!((out, calls.load(Ordering::SeqCst)), (503, 3));

        calls.store(0, Ordering::SeqCst);
        let out: u16 = run(
            &policy,
            |s: &u16| Verdict::Status {
                status: *s,
                retry_after: None,
            },
            |_| {},
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { 409 }
            },
        )
        .await;
        assert_eq!((out, calls.load(Ordering::SeqCst)), (409, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn max_elapsed_stops_a_long_server_wait() {
        let policy = RetryPolicy {
            max_elapsed: Duration::from_secs(5),
            ..RetryPolicy::default()
        };
        let calls = AtomicU32::new(0);
        let _: u16 = run(
            &policy,
            |_: &u16| Verdict::Status {
                status: 429,
                retry_after: Some(Duration::from_secs(60)),
            },
            |_| {},
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { 429 }
            },
        )
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
