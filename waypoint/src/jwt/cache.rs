//! [`JwksCache`]: remote key sets, fetched in the background and kept fresh.
//!
//! A key set is fetched when first needed (or on [`JwksCache::refresh`]), refetched
//! every [`REFRESH_INTERVAL`] (Istio's default) when used, and refetched when a token
//! names a `kid` the set lacks, at most once per [`RETRY_INTERVAL`]; a failed first
//! fetch is retried at that pace too. Requests never wait for a fetch: until a key set
//! has been fetched once, tokens that need it are refused (fail closed). A failed
//! refresh keeps the last good set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::fetch::{FetchError, JwksFetcher};
use super::jwks::KeySet;

/// How often a key set in use is refetched.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(20 * 60);
/// The least time between two fetches of one URI outside the periodic refresh (unknown
/// `kid`, failed fetches).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(60);

/// What the cache has for a URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// The last fetched key set.
    Ready(Arc<KeySet>),
    /// Never fetched successfully; the last error, if a fetch finished.
    Unavailable(Option<String>),
}

#[derive(Debug, Default)]
struct Entry {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    in_flight: bool,
    last_error: Option<String>,
}

/// Remote JWKS documents by URI.
#[derive(Debug)]
pub struct JwksCache {
    fetcher: Arc<dyn JwksFetcher>,
    entries: Mutex<HashMap<String, Entry>>,
    updates: watch::Sender<u64>,
}

/// Why a background fetch may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// The key set is being used.
    Use,
    /// A token names a `kid` the key set lacks.
    UnknownKid,
}

impl JwksCache {
    /// A cache fetching with `fetcher`.
    pub fn new(fetcher: Arc<dyn JwksFetcher>) -> Arc<Self> {
        Arc::new(JwksCache {
            fetcher,
            entries: Mutex::new(HashMap::new()),
            updates: watch::channel(0).0,
        })
    }

    /// Counts finished fetches (successful or not): wait on it to see one complete.
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.updates.subscribe()
    }

    /// What the cache has for `uri`.
    pub fn state(&self, uri: &str) -> KeyState {
        let entries = self.entries.lock().expect("JWKS cache lock");
        match entries.get(uri) {
            Some(Entry {
                keys: Some(keys), ..
            }) => KeyState::Ready(keys.clone()),
            Some(e) => KeyState::Unavailable(e.last_error.clone()),
            None => KeyState::Unavailable(None),
        }
    }

    /// Fetches `uri` now and waits for the result (the background fetches use the same
    /// path). A fetch already running for `uri` is not deduplicated.
    pub async fn refresh(&self, uri: &str, timeout: Duration) -> Result<Arc<KeySet>, FetchError> {
        self.entries
            .lock()
            .expect("JWKS cache lock")
            .entry(uri.to_owned())
            .or_default()
            .last_attempt = Some(Instant::now());
        let result = match tokio::time::timeout(timeout, self.fetcher.fetch(uri)).await {
            Err(_) => Err(FetchError(format!("{uri}: timed out after {timeout:?}"))),
            Ok(Err(e)) => Err(e),
            Ok(Ok(doc)) => KeySet::parse(&doc)
                .map(Arc::new)
                .map_err(|e| FetchError(format!("{uri}: {e}"))),
        };
        {
            let mut entries = self.entries.lock().expect("JWKS cache lock");
            let entry = entries.entry(uri.to_owned()).or_default();
            entry.in_flight = false;
            match &result {
                Ok(keys) => {
                    entry.keys = Some(keys.clone());
                    entry.fetched_at = Some(Instant::now());
                    entry.last_error = None;
                }
                Err(e) => {
                    tracing::warn!("JWKS fetch failed: {e}");
                    entry.last_error = Some(e.to_string());
                }
            }
        }
        self.updates.send_modify(|n| *n += 1);
        result
    }

    /// Starts a background fetch of `uri` when one is due for `need`. Must be called
    /// within a Tokio runtime.
    pub(crate) fn poll(self: &Arc<Self>, uri: &str, timeout: Duration, need: Need) {
        let now = Instant::now();
        {
            let mut entries = self.entries.lock().expect("JWKS cache lock");
            let entry = entries.entry(uri.to_owned()).or_default();
            let since = |t: Option<Instant>, d: Duration| t.is_none_or(|t| now - t >= d);
            let due = match (entry.fetched_at, need) {
                _ if entry.in_flight => false,
                (None, _) | (Some(_), Need::UnknownKid) => {
                    since(entry.last_attempt, RETRY_INTERVAL)
                }
                (Some(at), Need::Use) => {
                    since(Some(at), REFRESH_INTERVAL) && since(entry.last_attempt, RETRY_INTERVAL)
                }
            };
            if !due {
                return;
            }
            entry.in_flight = true;
            entry.last_attempt = Some(now);
        }
        let cache = self.clone();
        let uri = uri.to_owned();
        tokio::spawn(async move {
            // The outcome is recorded in the cache (and logged there).
            let _ = cache.refresh(&uri, timeout).await;
        });
    }
}
