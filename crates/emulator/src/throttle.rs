//! ARM token-bucket throttling and ACI create/delete quotas.
//!
//! ARM (since 2024) throttles per subscription × principal × operation kind with token
//! buckets: reads 250 tokens refilled at 25/s, writes and deletes 200 at 10/s. Every answered
//! request reports what is left in `x-ms-ratelimit-remaining-subscription-{reads,writes,deletes}`
//! (and a `-global-` variant 15× larger). An empty bucket gives 429 with `Retry-After`.
//!
//! ACI adds its own resource-provider limits on container group creates and deletes
//! (100 per 5 minutes, 300 per hour per subscription), reported in
//! `x-ms-ratelimit-remaining-subscription-resource-requests-pt5m`/`-pt1h`. Those are
//! sliding windows here, and a full window answers 429 `ResourceRequestsThrottled` (the code
//! resource providers use for their own limits) with `Retry-After`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::{AciQuotas, Bucket, ThrottleLimits};

/// The ARM operation kind a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// GET, HEAD.
    Reads,
    /// PUT, PATCH, POST.
    Writes,
    /// DELETE.
    Deletes,
}

impl Kind {
    /// The header suffix (`reads`, `writes`, `deletes`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Reads => "reads",
            Kind::Writes => "writes",
            Kind::Deletes => "deletes",
        }
    }

    /// The kind of an HTTP method.
    pub fn of(method: &axum::http::Method) -> Kind {
        match *method {
            axum::http::Method::GET | axum::http::Method::HEAD => Kind::Reads,
            axum::http::Method::DELETE => Kind::Deletes,
            _ => Kind::Writes,
        }
    }
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    last: Instant,
}

/// Outcome of taking a token.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Take {
    /// Allowed; this many tokens remain.
    Allowed { remaining: u32 },
    /// Throttled; retry after this many seconds.
    Throttled { retry_after_secs: u64 },
}

/// A full ACI quota window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuotaExceeded {
    /// Seconds until the oldest request leaves the window.
    pub retry_after_secs: u64,
    /// The window's limit.
    pub limit: u32,
    /// The window as ARM prints it (`00:05:00`, `01:00:00`).
    pub interval: &'static str,
}

/// Throttling state.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    buckets: HashMap<(String, Kind), BucketState>,
    creates: VecDeque<Instant>,
    deletes: VecDeque<Instant>,
}

impl Throttle {
    /// Takes one token from `principal`'s bucket of `kind`.
    pub fn take(
        &mut self,
        limits: &ThrottleLimits,
        principal: &str,
        kind: Kind,
        now: Instant,
    ) -> Take {
        let bucket: Bucket = match kind {
            Kind::Reads => limits.reads,
            Kind::Writes => limits.writes,
            Kind::Deletes => limits.deletes,
        };
        let burst = f64::from(bucket.burst);
        let rate = if bucket.per_second.is_finite() && bucket.per_second > 0.0 {
            bucket.per_second
        } else {
            0.0
        };
        let state = self
            .buckets
            .entry((principal.to_string(), kind))
            .or_insert(BucketState {
                tokens: burst,
                last: now,
            });
        let elapsed = now.saturating_duration_since(state.last).as_secs_f64();
        state.tokens = (state.tokens + elapsed * rate).min(burst);
        state.last = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            Take::Allowed {
                remaining: state.tokens.floor() as u32,
            }
        } else {
            let retry_after_secs = if rate > 0.0 {
                ((1.0 - state.tokens) / rate).ceil().max(1.0) as u64
            } else {
                60
            };
            Take::Throttled { retry_after_secs }
        }
    }

    /// Records one ACI create (or delete) against the quota windows. Returns the remaining
    /// counts `(pt5m, pt1h)` when allowed, or which window is full and how long to wait.
    pub fn take_quota(
        &mut self,
        quotas: &AciQuotas,
        delete: bool,
        now: Instant,
    ) -> Result<(u32, u32), QuotaExceeded> {
        let (q5, q60, window) = if delete {
            (
                quotas.deletes_per_5m,
                quotas.deletes_per_hour,
                &mut self.deletes,
            )
        } else {
            (
                quotas.creates_per_5m,
                quotas.creates_per_hour,
                &mut self.creates,
            )
        };
        let hour = Duration::from_secs(3600);
        let five = Duration::from_secs(300);
        while window
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= hour)
        {
            window.pop_front();
        }
        let in_5m: Vec<&Instant> = window
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < five)
            .collect();
        let n5 = in_5m.len() as u32;
        let n60 = window.len() as u32;
        if n5 >= q5 {
            let oldest = in_5m
                .first()
                .map(|t| five.saturating_sub(now.saturating_duration_since(**t)));
            return Err(QuotaExceeded {
                retry_after_secs: oldest.map(|d| d.as_secs().max(1)).unwrap_or(1),
                limit: q5,
                interval: "00:05:00",
            });
        }
        if n60 >= q60 {
            let oldest = window
                .front()
                .map(|t| hour.saturating_sub(now.saturating_duration_since(*t)));
            return Err(QuotaExceeded {
                retry_after_secs: oldest.map(|d| d.as_secs().max(1)).unwrap_or(1),
                limit: q60,
                interval: "01:00:00",
            });
        }
        window.push_back(now);
        Ok((q5 - n5 - 1, q60 - n60 - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_and_refills() {
        let limits = ThrottleLimits {
            reads: Bucket {
                burst: 2,
                per_second: 1.0,
            },
            ..ThrottleLimits::default()
        };
        let mut t = Throttle::default();
        let t0 = Instant::now();
        assert!(matches!(
            t.take(&limits, "p", Kind::Reads, t0),
            Take::Allowed { remaining: 1 }
        ));
        assert!(matches!(
            t.take(&limits, "p", Kind::Reads, t0),
            Take::Allowed { remaining: 0 }
        ));
        assert!(matches!(
            t.take(&limits, "p", Kind::Reads, t0),
            Take::Throttled {
                retry_after_secs: 1
            }
        ));
        // Another principal has its own bucket.
        assert!(matches!(
            t.take(&limits, "q", Kind::Reads, t0),
            Take::Allowed { .. }
        ));
        let later = t0 + Duration::from_millis(1100);
        assert!(matches!(
            t.take(&limits, "p", Kind::Reads, later),
            Take::Allowed { .. }
        ));
    }

    #[test]
    fn quota_window() {
        let q = AciQuotas {
            creates_per_5m: 2,
            creates_per_hour: 3,
            ..AciQuotas::default()
        };
        let mut t = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(t.take_quota(&q, false, t0), Ok((1, 2)));
        assert_eq!(t.take_quota(&q, false, t0), Ok((0, 1)));
        assert!(t.take_quota(&q, false, t0).is_err());
        assert!(
            t.take_quota(&q, true, t0).is_ok(),
            "deletes have their own window"
        );
        let later = t0 + Duration::from_secs(301);
        assert_eq!(t.take_quota(&q, false, later), Ok((1, 0)));
        assert!(t.take_quota(&q, false, later).is_err());
    }
}
