//! Client-side token buckets that keep one worker under ARM's request limits.
//!
//! ARM throttles per subscription × principal × operation class with token
//! buckets (since 2024: reads 250 burst / 25 per second, writes 200 / 10,
//! deletes 200 / 10). Hitting that limit costs a 429 and a `Retry-After`
//! that stalls every caller of the principal. So the client keeps its own
//! buckets with the same shape and makes a request *wait for a token* instead:
//! a short, local, predictable delay instead of a server-side penalty.
//!
//! The bucket uses reservations: taking a token may drive the balance
//! negative, and the caller sleeps until the refill would have covered its
//! debt. That gives first-come-first-served fairness without a queue, and the
//! lock is never held across an `.await`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Method;

/// ARM's operation classes, each with its own bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperationClass {
    /// GET and HEAD.
    Read,
    /// PUT, PATCH and POST.
    Write,
    /// DELETE.
    Delete,
}

impl OperationClass {
    /// The class ARM counts `method` in.
    pub fn of(method: &Method) -> Self {
        if method == Method::GET || method == Method::HEAD {
            OperationClass::Read
        } else if method == Method::DELETE {
            OperationClass::Delete
        } else {
            OperationClass::Write
        }
    }
}

/// Shape of one bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketConfig {
    /// Maximum tokens (burst size).
    pub capacity: f64,
    /// Tokens added per second.
    pub refill_per_sec: f64,
}

/// Bucket shapes per operation class; `enabled: false` turns throttling off.
#[derive(Clone, Debug, PartialEq)]
pub struct ThrottleConfig {
    /// Whether requests wait for tokens at all.
    pub enabled: bool,
    /// GET/HEAD bucket.
    pub reads: BucketConfig,
    /// PUT/PATCH/POST bucket.
    pub writes: BucketConfig,
    /// DELETE bucket.
    pub deletes: BucketConfig,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            enabled: true,
            reads: BucketConfig {
                capacity: 250.0,
                refill_per_sec: 25.0,
            },
            writes: BucketConfig {
                capacity: 200.0,
                refill_per_sec: 10.0,
            },
            deletes: BucketConfig {
                capacity: 200.0,
                refill_per_sec: 10.0,
            },
        }
    }
}

impl ThrottleConfig {
    /// No client-side throttling.
    pub fn disabled() -> Self {
        ThrottleConfig {
            enabled: false,
            ..Self::default()
        }
    }
}

/// One token bucket. Time is passed in so the math is testable.
#[derive(Debug)]
pub struct TokenBucket {
    config: BucketConfig,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(config: BucketConfig, now: Instant) -> Self {
        TokenBucket {
            config,
            tokens: config.capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.config.refill_per_sec).min(self.config.capacity);
        self.last = now.max(self.last);
    }

    /// Takes one token and returns how long the caller must wait before using it
    /// (zero when a token was available).
    pub fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 || self.config.refill_per_sec <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.tokens / self.config.refill_per_sec)
    }

    /// Tokens currently available (negative while callers are waiting).
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }
}

/// The three buckets of one client.
#[derive(Debug)]
pub struct Throttle {
    enabled: bool,
    reads: Mutex<TokenBucket>,
    writes: Mutex<TokenBucket>,
    deletes: Mutex<TokenBucket>,
}

impl Throttle {
    /// Buckets shaped by `config`, all full.
    pub fn new(config: &ThrottleConfig) -> Self {
        let now = Instant::now();
        Throttle {
            enabled: config.enabled,
            reads: Mutex::new(TokenBucket::new(config.reads, now)),
            writes: Mutex::new(TokenBucket::new(config.writes, now)),
            deletes: Mutex::new(TokenBucket::new(config.deletes, now)),
        }
    }

    /// Waits until a token of `class` is available; returns how long it waited.
    pub async fn acquire(&self, class: OperationClass) -> Duration {
        if !self.enabled {
            return Duration::ZERO;
        }
        let bucket = match class {
            OperationClass::Read => &self.reads,
            OperationClass::Write => &self.writes,
            OperationClass::Delete => &self.deletes,
        };
        // A poisoned lock only means another thread panicked mid-update of
        // plain numbers; the bucket is still usable.
        let wait = bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reserve(Instant::now());
        if !wait.is_zero() {
            tracing::debug!(
                ?class,
                wait_ms = wait.as_millis() as u64,
                "client-side throttle: waiting for a token"
            );
            tokio::time::sleep(wait).await;
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(OperationClass::of(&Method::GET), OperationClass::Read);
        assert_eq!(OperationClass::of(&Method::HEAD), OperationClass::Read);
        assert_eq!(OperationClass::of(&Method::PUT), OperationClass::Write);
        assert_eq!(OperationClass::of(&Method::POST), OperationClass::Write);
        assert_eq!(OperationClass::of(&Method::DELETE), OperationClass::Delete);
    }

    #[test]
    fn bucket_burst_then_refill_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            BucketConfig {
                capacity: 3.0,
                refill_per_sec: 10.0,
            },
            t0,
        );
        for _ in 0..3 {
            assert_eq!(b.reserve(t0), Duration::ZERO);
        }
        // Fourth and fifth must wait for 0.1 s and 0.2 s of refill.
        assert_eq!(b.reserve(t0), Duration::from_millis(100));
        assert_eq!(b.reserve(t0), Duration::from_millis(200));
        // One second later the debt of 2 is repaid and 8 tokens accrued, capped at 3.
        let t1 = t0 + Duration::from_secs(1);
        assert!((b.available(t1) - 3.0).abs() < 1e-9);
        // Idle time never overfills.
        assert!((b.available(t1 + Duration::from_secs(100)) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn default_shapes_match_arm() {
        let c = ThrottleConfig::default();
        assert_eq!((c.reads.capacity, c.reads.refill_per_sec), (250.0, 25.0));
        assert_eq!((c.writes.capacity, c.writes.refill_per_sec), (200.0, 10.0));
        assert_eq!(
            (c.deletes.capacity, c.deletes.refill_per_sec),
            (200.0, 10.0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_when_empty() {
        let cfg = ThrottleConfig {
            writes: BucketConfig {
                capacity: 1.0,
                refill_per_sec: 2.0,
            },
            ..ThrottleConfig::default()
        };
        let t = Throttle::new(&cfg);
        assert_eq!(t.acquire(OperationClass::Write).await, Duration::ZERO);
        let waited = t.acquire(OperationClass::Write).await;
        assert!(
            waited >= Duration::from_millis(490) && waited <= Duration::from_millis(500),
            "{waited:?}"
        );
        // Reads are a separate bucket.
        assert_eq!(t.acquire(OperationClass::Read).await, Duration::ZERO);
        assert_eq!(
            Throttle::new(&ThrottleConfig::disabled())
                .acquire(OperationClass::Write)
                .await,
            Duration::ZERO
        );
    }
}
