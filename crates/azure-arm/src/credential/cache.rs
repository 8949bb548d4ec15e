//! Token caching with early refresh and single-flight.
//!
//! [`CachedCredential`] keeps the last token per scope and hands it out until
//! it is within `refresh_margin` (default 5 minutes) of expiry. Each scope has
//! its own async mutex, held while a refresh runs: concurrent callers queue on
//! it and then find the fresh token, so a burst of requests costs one token
//! request, not one per request. If a refresh fails while the old token is
//! still valid, the old token is returned (and the failure logged): a brief
//! AAD hiccup must not fail ARM calls that could still authenticate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{AccessToken, TokenCredential, TokenFuture};

type Slot = Arc<tokio::sync::Mutex<Option<AccessToken>>>;

/// Caches tokens of an inner credential per scope.
pub struct CachedCredential {
    inner: Arc<dyn TokenCredential>,
    refresh_margin: Duration,
    slots: Mutex<HashMap<String, Slot>>,
}

impl CachedCredential {
    /// Default time before expiry at which a token is refreshed.
    pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(300);

    /// Caches `inner` with the default 5-minute refresh margin.
    pub fn new(inner: Arc<dyn TokenCredential>) -> Self {
        Self::with_refresh_margin(inner, Self::DEFAULT_REFRESH_MARGIN)
    }

    /// Caches `inner`, refreshing `refresh_margin` before expiry.
    pub fn with_refresh_margin(inner: Arc<dyn TokenCredential>, refresh_margin: Duration) -> Self {
        CachedCredential {
            inner,
            refresh_margin,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, scope: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(scope.to_owned()).or_default().clone()
    }
}

impl TokenCredential for CachedCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> TokenFuture<'a> {
        Box::pin(async move {
            let slot = self.slot(scope);
            let mut cached = slot.lock().await;
            let now = SystemTime::now();
            if let Some(t) = cached.as_ref() {
                if !t.expires_within(self.refresh_margin, now) {
                    return Ok(t.clone());
                }
            }
            match self.inner.get_token(scope).await {
                Ok(fresh) => {
                    tracing::debug!(
                        credential = self.inner.name(),
                        scope,
                        "acquired a new access token"
                    );
                    *cached = Some(fresh.clone());
                    Ok(fresh)
                }
                Err(e) => match cached.as_ref() {
                    Some(old) if !old.expires_within(Duration::ZERO, SystemTime::now()) => {
                        tracing::warn!(credential = self.inner.name(), error = %e, "token refresh failed; using the still-valid token");
                        Ok(old.clone())
                    }
                    _ => Err(e),
                },
            }
        })
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::CredentialError;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Slow source whose first call succeeds and later calls fail.
    struct Flaky {
        calls: AtomicU32,
        lifetime: Duration,
    }

    impl TokenCredential for Flaky {
        fn get_token<'a>(&'a self, _scope: &'a str) -> TokenFuture<'a> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                if n == 0 {
                    Ok(AccessToken::expiring_in(format!("t{n}"), self.lifetime))
                } else {
                    Err(CredentialError::Unavailable {
                        credential: "Flaky",
                        reason: "down".into(),
                    })
                }
            })
        }
        fn name(&self) -> &'static str {
            "Flaky"
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let inner = Arc::new(Flaky {
            calls: AtomicU32::new(0),
            lifetime: Duration::from_secs(3600),
        });
        let cache = Arc::new(CachedCredential::new(inner.clone()));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let c = cache.clone();
            set.spawn(async move { c.get_token("s").await.map(|t| t.token.expose().to_owned()) });
        }
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap().unwrap(), "t0");
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
        // Another scope is another slot.
        assert!(cache.get_token("other").await.is_err());
    }

    #[tokio::test]
    async fn failed_refresh_falls_back_to_the_still_valid_token() {
        // 200 s left: inside the 5-minute margin, so every call tries to refresh.
        let inner = Arc::new(Flaky {
            calls: AtomicU32::new(0),
            lifetime: Duration::from_secs(200),
        });
        let cache = CachedCredential::new(inner.clone());
        assert_eq!(cache.get_token("s").await.unwrap().token.expose(), "t0");
        assert_eq!(cache.get_token("s").await.unwrap().token.expose(), "t0");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
    }
}
