//! What a request's upstream service resolves to before an endpoint is chosen: its
//! endpoints (healthy, in the subset, at the target port), its cluster key and its cluster
//! (DestinationRule policy, load balancer, outlier detection, connection pool). That
//! depends only on the workload state, the L7 configuration, the cluster table and the
//! upstream (service, subset, port), so each thread keeps what it resolved for the ones in
//! force and resolves again once any of them is replaced. Requests to a service then skip
//! building its endpoint list, merging its DestinationRule policy and looking up its
//! cluster. An endpoint holds its workload (no lookup per pick), so a thread's entries
//! keep the workloads they name alive until the thread's next request after a state
//! change empties them.

use std::any::Any;
use std::cell::RefCell;
use std::sync::{Arc, Weak};

use crate::context::Endpoint;
use crate::upstream::{Cluster, ClusterKey};

/// An upstream, resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub endpoints: Arc<[Endpoint]>,
    pub key: Arc<ClusterKey>,
    pub cluster: Arc<Cluster>,
}

/// Resolutions kept per thread at most; beyond it they are dropped and built again.
const MAX_ENTRIES: usize = 64;

/// An object by its allocation, held weakly: the allocation cannot be reused for another
/// object while the cache names it (what it held is dropped as usual).
struct Identity(Weak<dyn Any + Send + Sync>);

impl Identity {
    fn of<T: Any + Send + Sync>(object: &Arc<T>) -> Self {
        let weak: Weak<T> = Arc::downgrade(object);
        Identity(weak)
    }

    fn is<T>(&self, object: &Arc<T>) -> bool {
        std::ptr::addr_eq(self.0.as_ptr(), Arc::as_ptr(object))
    }
}

struct Entry {
    service: Identity,
    subset: Option<String>,
    port: u16,
    resolved: Resolved,
}

#[derive(Default)]
struct Cache {
    /// The state, configuration and cluster table the entries were resolved under.
    against: Option<[Identity; 3]>,
    entries: Vec<Entry>,
}

impl Cache {
    fn is_under<A, B, C>(&self, (a, b, c): (&Arc<A>, &Arc<B>, &Arc<C>)) -> bool {
        self.against
            .as_ref()
            .is_some_and(|[x, y, z]| x.is(a) && y.is(b) && z.is(c))
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::default();
}

/// `service`'s resolution (with `subset`, at `port`) under `against` (the workload state
/// the service is from, the L7 configuration and the cluster table): the one this thread
/// kept, else `resolve()`'s, kept when it succeeds.
pub fn cached<A, B, C, S, E>(
    against: (&Arc<A>, &Arc<B>, &Arc<C>),
    service: &Arc<S>,
    subset: Option<&str>,
    port: u16,
    resolve: impl FnOnce() -> Result<Resolved, E>,
) -> Result<Resolved, E>
where
    A: Any + Send + Sync,
    B: Any + Send + Sync,
    C: Any + Send + Sync,
    S: Any + Send + Sync,
{
    let kept = CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if !cache.is_under(against) {
            let (a, b, c) = against;
            cache.against = Some([Identity::of(a), Identity::of(b), Identity::of(c)]);
            cache.entries.clear();
            return None;
        }
        cache
            .entries
            .iter()
            .find(|e| e.service.is(service) && e.subset.as_deref() == subset && e.port == port)
            .map(|e| e.resolved.clone())
    });
    if let Some(resolved) = kept {
        return Ok(resolved);
    }
    let resolved = resolve()?;
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        // Unless `resolve` itself resolved under something newer.
        if cache.is_under(against) {
            if cache.entries.len() >= MAX_ENTRIES {
                cache.entries.clear();
            }
            cache.entries.push(Entry {
                service: Identity::of(service),
                subset: subset.map(str::to_owned),
                port,
                resolved: resolved.clone(),
            });
        }
    });
    Ok(resolved)
}

#[cfg(test)]
mod tests;
