//! Keeps a TLS server presenting the current certificate of its identity: the CA client
//! renews certificates at half-life, and a server built once would go on presenting the
//! old one until it expired (then every new client handshake fails).

use std::sync::Arc;
use std::time::Duration;

use hbone::tls::ServerTls;
use tokio::sync::watch;
use tracing::{info, warn};

use super::CertificateSource;

/// How often the source is asked; a renewal happens at half-life (12 h for 24 h
/// certificates), so this is far more often than needed and cheap (the source answers
/// from its cache).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Until `shutdown` turns true: every `interval`, asks `certs` for `tls`'s identity and,
/// when it answers with another certificate, has `tls` present that one.
pub async fn keep_fresh(
    tls: ServerTls,
    certs: Arc<dyn CertificateSource>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let identity = tls.identity().clone();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let cert = match certs.certificate(&identity).await {
            Ok(cert) => cert,
            Err(e) => {
                warn!(%identity, error = %e, "cannot refresh the server certificate; keeping the current one");
                continue;
            }
        };
        let held = tls.certificate();
        if Arc::ptr_eq(&held, &cert) || held.chain() == cert.chain() {
            continue;
        }
        match tls.replace(cert.clone()) {
            Ok(()) => info!(%identity, not_after = ?cert.not_after(), "server certificate renewed"),
            Err(e) => warn!(%identity, error = %e, "cannot present the renewed certificate"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_util::future::BoxFuture;
    use hbone::Identity;
    use hbone::testing::TestCa;
    use hbone::tls::WorkloadCertificate;

    use super::*;
    use crate::cert::CertError;

    /// Hands out whatever certificate the test last put in.
    struct Swappable(Mutex<Arc<WorkloadCertificate>>);

    impl CertificateSource for Swappable {
        fn certificate(
            &self,
            _identity: &Identity,
        ) -> BoxFuture<'_, Result<Arc<WorkloadCertificate>, CertError>> {
            let cert = self.0.lock().unwrap().clone();
            Box::pin(async move { Ok(cert) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewed_certificate_is_presented_at_the_next_check() {
        let ca = TestCa::new();
        let id: Identity = "spiffe://cluster.local/ns/shop/sa/waypoint"
            .parse()
            .unwrap();
        let first = ca.issue(&id);
        let tls = ServerTls::new(first.clone()).unwrap();
        let source = Arc::new(Swappable(Mutex::new(first.clone())));
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(keep_fresh(
            tls.clone(),
            source.clone(),
            Duration::from_secs(30),
            shutdown,
        ));
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(
            Arc::ptr_eq(&tls.certificate(), &first),
            "nothing changed yet"
        );
        let renewed = ca.issue(&id);
        *source.0.lock().unwrap() = renewed.clone();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(
            Arc::ptr_eq(&tls.certificate(), &renewed),
            "the renewal is presented"
        );
        // A certificate for another identity is never presented.
        let other: Identity = "spiffe://cluster.local/ns/shop/sa/other".parse().unwrap();
        *source.0.lock().unwrap() = ca.issue(&other);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(Arc::ptr_eq(&tls.certificate(), &renewed));
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
