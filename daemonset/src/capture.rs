//! Capture: everything installed in a pod's namespace so that its TCP goes through
//! ztunnel. A trait so that the agent's ordering and retry logic can be tested without
//! namespaces; [`NftCapture`] is the real thing ([`crate::rules`] + [`crate::routing`]).

use std::future::Future;
use std::path::PathBuf;

use inpod::Netns;

use crate::routing::{self, RoutingError};
use crate::rules::{self, RulesError};

/// Why capture could not be installed in, or removed from, a pod.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("nftables: {0}")]
    Rules(#[from] RulesError),
    #[error("policy routing: {0}")]
    Routing(#[from] RoutingError),
    #[error("cannot duplicate the namespace handle: {0}")]
    Handle(#[source] std::io::Error),
    #[error("the nft worker thread panicked")]
    Panicked,
}

/// Installs and removes capture in a pod's namespace. Both must be idempotent:
/// installing twice replaces, removing what is absent succeeds.
pub trait Capture: Send + Sync + 'static {
    fn install(&self, netns: &Netns) -> impl Future<Output = Result<(), CaptureError>> + Send;
    fn remove(&self, netns: &Netns) -> impl Future<Output = Result<(), CaptureError>> + Send;
}

/// Capture with nftables (run as `nft -f -` in the pod) and rtnetlink policy routing.
#[derive(Debug, Clone)]
pub struct NftCapture {
    nft: PathBuf,
}

impl NftCapture {
    /// `nft` is the binary to run (`nft`, looked up in `PATH`, by default).
    pub fn new(nft: impl Into<PathBuf>) -> Self {
        Self { nft: nft.into() }
    }

    async fn nft(&self, netns: &Netns, script: String) -> Result<(), CaptureError> {
        let netns = netns.try_clone().map_err(CaptureError::Handle)?;
        let nft = self.nft.clone();
        // Spawning a process and waiting for it blocks; keep it off the runtime threads.
        tokio::task::spawn_blocking(move || rules::apply(&nft, &netns, &script))
            .await
            .map_err(|_| CaptureError::Panicked)??;
        Ok(())
    }
}

impl Default for NftCapture {
    fn default() -> Self {
        Self::new("nft")
    }
}

impl Capture for NftCapture {
    /// Rules first, then routing: the routing only matters for connections the rules
    /// redirect, and a failure in either is retried whole.
    async fn install(&self, netns: &Netns) -> Result<(), CaptureError> {
        self.nft(netns, rules::install_script()).await?;
        routing::install(netns).await?;
        Ok(())
    }

    /// Rules first, so that no new connection is redirected while routing goes.
    async fn remove(&self, netns: &Netns) -> Result<(), CaptureError> {
        self.nft(netns, rules::remove_script()).await?;
        routing::remove(netns).await?;
        Ok(())
    }
}
