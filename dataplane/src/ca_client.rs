//! Workload certificates from the controller's CA (`IstioCertificateService`).
//!
//! Per identity, one task owns the certificate: it makes the first request (every caller
//! asking meanwhile waits for that same answer), then renews at half-life. While the CA
//! is unreachable the current certificate keeps being served until it expires, and the
//! task retries with exponential backoff. [`CaClient::forget`] ends an identity no pod
//! needs any more, so the cache stays the size of the node's workloads.

mod request;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use hbone::Identity;
use hbone::tls::WorkloadCertificate;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::cert::{CertError, CertificateSource, CertificateState, CertificateStatus};
use crate::control_plane::ControlPlane;

/// Lifetime asked for when not configured (the CA's own default, as upstream).
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Metadata key naming the identity requested on a pod's behalf (as upstream ztunnel).
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";
/// How many identities' last failed first request are remembered for `config_dump`.
const FAILURES_KEPT: usize = 256;

/// How certificates are requested and renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaClientConfig {
    /// Lifetime requested; the CA may shorten it.
    pub ttl: Duration,
    /// First wait after a failed renewal; doubles on each failure up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// A CA that does not answer within this is treated as unreachable.
    pub request_timeout: Duration,
}

impl Default for CaClientConfig {
    fn default() -> Self {
        CaClientConfig {
            ttl: DEFAULT_CERT_TTL,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A [`CertificateSource`] backed by the controller's CA.
pub struct CaClient {
    shared: Arc<Shared>,
}

struct Shared {
    control_plane: ControlPlane,
    config: CaClientConfig,
    entries: Mutex<HashMap<Identity, Entry>>,
    /// Why the last first request for an identity failed, and when; kept (bounded) only
    /// to be shown, until the identity is fetched or forgotten.
    failures: Mutex<HashMap<Identity, (String, SystemTime)>>,
}

/// The task owning one identity's certificate, and where it publishes it.
struct Entry {
    state: watch::Receiver<Slot>,
    task: AbortHandle,
}

#[derive(Clone)]
enum Slot {
    /// The first request is in flight.
    Pending,
    /// `renewal_error` is set while renewals fail; the certificate is served regardless
    /// until it expires.
    Ready {
        cert: Arc<WorkloadCertificate>,
        renewal_error: Option<CertError>,
    },
    /// The first request failed; the entry is already gone so the next caller retries.
    Failed(CertError),
}

impl std::fmt::Debug for CaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaClient")
            .field("ca", &self.shared.control_plane.address())
            .field("config", &self.shared.config)
            .field("identities", &self.identities().len())
            .finish()
    }
}

impl CaClient {
    /// Nothing is requested (and no task spawned) until the first
    /// [`CertificateSource::certificate`] call, which must run inside a Tokio runtime.
    pub fn new(control_plane: ControlPlane, config: CaClientConfig) -> Self {
        CaClient {
            shared: Arc::new(Shared {
                control_plane,
                config,
                entries: Mutex::new(HashMap::new()),
                failures: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Drops `identity`'s certificate and stops renewing it; true if it was held. A later
    /// request fetches a new one.
    pub fn forget(&self, identity: &Identity) -> bool {
        self.shared.failures().remove(identity);
        let entry = self.shared.lock().remove(identity);
        entry.map(|e| e.task.abort()).is_some()
    }

    /// The identities currently held or being fetched.
    pub fn identities(&self) -> Vec<Identity> {
        self.shared.lock().keys().cloned().collect()
    }

    async fn get(&self, identity: &Identity) -> Result<Arc<WorkloadCertificate>, CertError> {
        let mut state = {
            let mut entries = self.shared.lock();
            match entries.get(identity) {
                Some(entry) => entry.state.clone(),
                None => {
                    let (tx, rx) = watch::channel(Slot::Pending);
                    let task =
                        tokio::spawn(own_certificate(self.shared.clone(), identity.clone(), tx));
                    entries.insert(
                        identity.clone(),
                        Entry {
                            state: rx.clone(),
                            task: task.abort_handle(),
                        },
                    );
                    rx
                }
            }
        };
        loop {
            let slot = state.borrow_and_update().clone();
            match slot {
                Slot::Ready {
                    cert,
                    renewal_error,
                } => {
                    if !cert.is_expired(SystemTime::now()) {
                        return Ok(cert);
                    }
                    return Err(CertError::Expired {
                        identity: identity.clone(),
                        address: self.shared.control_plane.address().to_owned(),
                        reason: renewal_error.map_or_else(
                            || "the renewal has not completed yet".to_owned(),
                            |e| e.to_string(),
                        ),
                    });
                }
                Slot::Failed(err) => return Err(err),
                Slot::Pending => {}
            }
            if state.changed().await.is_err() {
                return Err(CertError::Cancelled {
                    identity: identity.clone(),
                });
            }
        }
    }
}

impl Drop for CaClient {
    fn drop(&mut self) {
        for (_, entry) in self.shared.lock().drain() {
            entry.task.abort();
        }
    }
}

impl CertificateSource for CaClient {
    fn certificate(
        &self,
        identity: &Identity,
    ) -> BoxFuture<'_, Result<Arc<WorkloadCertificate>, CertError>> {
        let identity = identity.clone();
        Box::pin(async move { self.get(&identity).await })
    }

    fn release(&self, identity: &Identity) {
        if self.forget(identity) {
            tracing::info!(%identity, "no pod needs this identity any more; its certificate is dropped");
        }
    }

    fn certificates(&self) -> Vec<CertificateStatus> {
        let mut by_identity: BTreeMap<Identity, CertificateState> = self
            .shared
            .failures()
            .iter()
            .map(|(identity, (error, at))| {
                let state = CertificateState::Failed {
                    error: error.clone(),
                    at: *at,
                };
                (identity.clone(), state)
            })
            .collect();
        // A live entry (a request in flight, a certificate held) says more than an old
        // failure.
        for (identity, entry) in self.shared.lock().iter() {
            let state = match &*entry.state.borrow() {
                Slot::Pending => CertificateState::Pending,
                Slot::Ready {
                    cert,
                    renewal_error,
                } => CertificateState::held(cert, renewal_error.as_ref().map(|e| e.to_string())),
                Slot::Failed(error) => CertificateState::Failed {
                    error: error.to_string(),
                    at: SystemTime::now(),
                },
            };
            by_identity.insert(identity.clone(), state);
        }
        by_identity
            .into_iter()
            .map(|(identity, state)| CertificateStatus { identity, state })
            .collect()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Identity, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<Identity, (String, SystemTime)>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers why `identity`'s first request failed, dropping the oldest remembered
    /// failure when [`FAILURES_KEPT`] are held.
    fn record_failure(&self, identity: &Identity, error: &CertError) {
        let mut failures = self.failures();
        if failures.len() >= FAILURES_KEPT && !failures.contains_key(identity) {
            let oldest = failures
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                failures.remove(&oldest);
            }
        }
        failures.insert(identity.clone(), (error.to_string(), SystemTime::now()));
    }
}

/// Fetches `identity`'s first certificate, then renews it for as long as the entry lives.
async fn own_certificate(shared: Arc<Shared>, identity: Identity, tx: watch::Sender<Slot>) {
    let config = &shared.config;
    let mut cert = match request::fetch(&shared.control_plane, &shared.config, &identity).await {
        Ok(cert) => {
            shared.failures().remove(&identity);
            cert
        }
        Err(err) => {
            tracing::warn!(%identity, error = %err, "could not get a workload certificate");
            shared.record_failure(&identity, &err);
            let mut entries = shared.lock();
            let ours = tx.subscribe();
            if entries
                .get(&identity)
                .is_some_and(|e| e.state.same_channel(&ours))
            {
                entries.remove(&identity);
            }
            drop(entries);
            tx.send_replace(Slot::Failed(err));
            return;
        }
    };
    let mut fetched_at = SystemTime::now();
    tx.send_replace(Slot::Ready {
        cert: cert.clone(),
        renewal_error: None,
    });
    loop {
        let wait = renew_at(&cert, fetched_at)
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::sleep(wait).await;
        let mut backoff = config.retry_initial;
        loop {
            match request::fetch(&shared.control_plane, &shared.config, &identity).await {
                Ok(renewed) => {
                    tracing::debug!(%identity, "renewed workload certificate");
                    (cert, fetched_at) = (renewed, SystemTime::now());
                    tx.send_replace(Slot::Ready {
                        cert: cert.clone(),
                        renewal_error: None,
                    });
                    break;
                }
                Err(err) => {
                    tracing::warn!(
                        %identity,
                        error = %err,
                        retry_in = ?backoff,
                        expired = cert.is_expired(SystemTime::now()),
                        "certificate renewal failed; serving the current certificate until it expires"
                    );
                    tx.send_replace(Slot::Ready {
                        cert: cert.clone(),
                        renewal_error: Some(err),
                    });
                    tokio::time::sleep(backoff).await;
                    backoff = next_backoff(backoff, config.retry_max);
                }
            }
        }
    }
}

/// Half-life, counted from when the certificate arrived if that is later: the CA backdates
/// `not_before` for clock skew, which for short lifetimes puts the nominal half-life in
/// the past and would renew in a loop.
fn renew_at(cert: &WorkloadCertificate, fetched_at: SystemTime) -> SystemTime {
    let remaining = cert
        .not_after()
        .duration_since(fetched_at)
        .unwrap_or_default();
    cert.refresh_at().max(fetched_at + remaining / 2)
}

fn next_backoff(current: Duration, max: Duration) -> Duration {
    current.saturating_mul(2).min(max)
}
