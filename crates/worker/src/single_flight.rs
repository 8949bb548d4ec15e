//! Single-flight reads: concurrent requests for the same object share one API call.
//!
//! A burst of flow runs from one deployment makes every run read the same deployment and
//! flow at the same moment, on a server that is busiest exactly then. Sharing the request
//! among the callers that are waiting for it removes those duplicates without caching: a
//! caller never gets an answer older than a request that was still in flight when it asked,
//! so a deployment edited a second ago is seen by the next run, as with one read per run.
//! Failures are not shared: the next waiter makes its own attempt.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;
use uuid::Uuid;

/// Requests in flight, by object id.
pub struct SingleFlight<T> {
    inflight: Mutex<HashMap<Uuid, Arc<OnceCell<T>>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        SingleFlight {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> SingleFlight<T> {
    /// The object `key`: the answer of a request already in flight for it, or `fetch`'s.
    pub async fn get<E, F, Fut>(&self, key: Uuid, fetch: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let cell = self
            .lock()
            .entry(key)
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let result = cell.get_or_try_init(fetch).await.cloned();
        // The answer is only for callers that were already waiting: forget it.
        let mut inflight = self.lock();
        if inflight.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            inflight.remove(&key);
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<OnceCell<T>>>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch_and_later_ones_fetch_again() {
        let flight = SingleFlight::<u32>::default();
        let calls = AtomicUsize::new(0);
        let (tx, rx) = tokio::sync::watch::channel(false);
        let fetch = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            rx.clone().wait_for(|open| *open).await.unwrap();
            Ok::<_, ()>(7)
        };
        let key = Uuid::now_v7();
        let waiters = async {
            tokio::join!(
                flight.get(key, fetch),
                flight.get(key, fetch),
                flight.get(key, fetch)
            )
        };
        let release = async {
            tokio::task::yield_now().await;
            tx.send(true).unwrap();
        };
        let ((a, b, c), ()) = tokio::join!(waiters, release);
        assert_eq!((a, b, c), (Ok(7), Ok(7), Ok(7)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(flight.get(key, fetch).await, Ok(7));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "nothing is cached after the flight"
        );
    }

    #[tokio::test]
    async fn a_failure_is_not_shared() {
        let flight = SingleFlight::<u32>::default();
        let key = Uuid::now_v7();
        assert_eq!(
            flight.get(key, || async { Err::<u32, _>("down") }).await,
            Err("down")
        );
        assert_eq!(flight.get(key, || async { Ok::<_, &str>(1) }).await, Ok(1));
    }
}
