//! Sharing equal values between objects. The pods of one ReplicaSet have the same labels,
//! owner, containers, node names and service account; at 10,000 pods, one copy of each
//! instead of one per pod is most of the difference between kilobytes and hundreds of
//! bytes per pod.
//!
//! A pool hands out `Arc`s: equal values get the same allocation. Values no object uses
//! any more are dropped from the pool when it has doubled since it was last swept, so the
//! pool never holds more than twice what is in use.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// The smallest size at which a pool is swept.
const FIRST_SWEEP: usize = 1024;

#[derive(Debug)]
pub struct Pool<T: ?Sized> {
    inner: Mutex<Inner<T>>,
}

#[derive(Debug)]
struct Inner<T: ?Sized> {
    values: HashSet<Arc<T>>,
    sweep_at: usize,
}

impl<T: ?Sized + Eq + Hash> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            inner: Mutex::new(Inner {
                values: HashSet::new(),
                sweep_at: FIRST_SWEEP,
            }),
        }
    }
}

impl<T: ?Sized + Eq + Hash> Pool<T> {
    /// The pool's copy of what `value` refers to, or `make(value)` added to the pool.
    fn share<V: std::borrow::Borrow<T>>(&self, value: V, make: impl FnOnce(V) -> Arc<T>) -> Arc<T> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = inner.values.get(value.borrow()) {
            return shared.clone();
        }
        if inner.values.len() >= inner.sweep_at {
            // Only the pool holds them: no object uses them any more.
            inner.values.retain(|v| Arc::strong_count(v) > 1);
            inner.sweep_at = (inner.values.len() * 2).max(FIRST_SWEEP);
        }
        let shared = make(value);
        inner.values.insert(shared.clone());
        shared
    }

    /// How many values the pool holds (in use, or unused and not yet swept).
    pub fn len(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Pool<str> {
    pub fn str(&self, value: &str) -> Arc<str> {
        self.share(value, Arc::from)
    }
}

impl<T: Eq + Hash> Pool<[T]> {
    pub fn slice(&self, value: Vec<T>) -> Arc<[T]> {
        self.share(value, Arc::from)
    }
}

impl<T: Eq + Hash> Pool<T> {
    pub fn value(&self, value: T) -> Arc<T> {
        self.share(value, Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_allocation() {
        let pool: Pool<str> = Pool::default();
        let a = pool.str("shop");
        let b = pool.str(&String::from("shop"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &pool.str("payments")));
        let slices: Pool<[u8]> = Pool::default();
        assert!(Arc::ptr_eq(
            &slices.slice(vec![1, 2]),
            &slices.slice(vec![1, 2])
        ));
        let values: Pool<(u8, u8)> = Pool::default();
        assert!(Arc::ptr_eq(&values.value((1, 2)), &values.value((1, 2))));
    }

    #[test]
    fn values_no_one_uses_are_swept_once_the_pool_doubles() {
        let pool: Pool<str> = Pool::default();
        let kept: Vec<Arc<str>> = (0..10).map(|i| pool.str(&format!("kept-{i}"))).collect();
        for i in 0..FIRST_SWEEP - 10 {
            pool.str(&format!("dropped-{i}")); // the Arc is dropped at once
        }
        assert_eq!(
            pool.len(),
            FIRST_SWEEP,
            "not swept before it reaches the threshold"
        );
        pool.str("one more");
        assert_eq!(pool.len(), kept.len() + 1, "only what is in use is left");
        assert!(
            Arc::ptr_eq(&kept[3], &pool.str("kept-3")),
            "and it is still shared"
        );
        assert!(!pool.is_empty());
    }
}
