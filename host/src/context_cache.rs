//! The context cache: main restores who-did-what from the contexts it issued.
//!
//! Only a context id crosses the wire. Every context main sends to a sandbox (with a service
//! call or an entity query) is remembered here; when a sandbox reports a change with that id,
//! main gets the original context back (user, parent). An id main did not issue, or one that
//! expired, gets a fresh context minted by main — never one carrying the sandbox's id, whose
//! embedded timestamp main cannot trust (history orders by it). The minted context is cached
//! under the sandbox's id so one sandbox-side cause keeps one main-side context.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use homecore::Context;
use parking_lot::Mutex;
use tokio::time::Instant;

/// How long an issued context can be restored. Sandboxes echo ids back within seconds; this is
/// generous for slow integrations and bounded for memory.
pub const CONTEXT_TTL: Duration = Duration::from_secs(15 * 60);

/// The most contexts kept, whatever the TTL: a sandbox flooding unknown ids cannot grow the
/// cache past this (the oldest are dropped first).
pub const MAX_CONTEXTS: usize = 2048;

struct Cached {
    context: Context,
    stored_at: Instant,
}

/// Contexts by the id the sandbox sees, bounded by [`CONTEXT_TTL`] and [`MAX_CONTEXTS`].
#[derive(Default)]
pub struct ContextCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Cached>,
    /// Ids in storage order, for pruning from the front; may hold ids already replaced.
    order: VecDeque<(String, Instant)>,
}

impl ContextCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers a context main is sending to a sandbox; returns the id to put on the wire.
    pub fn remember(&self, context: &Context) -> String {
        let id = context.id.to_string();
        self.store(id.clone(), context.clone());
        id
    }

    /// The context for an id a sandbox sent: the original for an id main issued, otherwise a
    /// fresh one minted by main (and cached under the sandbox's id). No id at all, or one
    /// longer than a ULID ([`crate::limits::MAX_CONTEXT_ID_LEN`]), gets a fresh, uncached
    /// context: the cache holds at most [`MAX_CONTEXTS`] ids of at most 26 bytes each.
    pub fn resolve(&self, sandbox_id: Option<&str>) -> Context {
        let Some(sandbox_id) =
            sandbox_id.filter(|id| !id.is_empty() && id.len() <= crate::limits::MAX_CONTEXT_ID_LEN)
        else {
            return Context::new();
        };
        {
            let mut inner = self.inner.lock();
            inner.prune(Instant::now());
            if let Some(cached) = inner.by_id.get(sandbox_id) {
                return cached.context.clone();
            }
        }
        let minted = Context::new();
        self.store(sandbox_id.to_owned(), minted.clone());
        minted
    }

    /// Contexts cached now.
    pub fn len(&self) -> usize {
        self.inner.lock().by_id.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn store(&self, id: String, context: Context) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.prune(now);
        inner.by_id.insert(
            id.clone(),
            Cached {
                context,
                stored_at: now,
            },
        );
        inner.order.push_back((id, now));
        while inner.by_id.len() > MAX_CONTEXTS {
            inner.evict_oldest();
        }
        // The order queue may hold stale duplicates; keep it bounded too.
        while inner.order.len() > 2 * MAX_CONTEXTS {
            inner.evict_oldest();
        }
    }
}

impl Inner {
    fn prune(&mut self, now: Instant) {
        while let Some((_, stored_at)) = self.order.front() {
            if now.saturating_duration_since(*stored_at) < CONTEXT_TTL {
                break;
            }
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((id, stored_at)) = self.order.pop_front() {
            // Only drop the entry if this queue slot is the one that stored it.
            if self
                .by_id
                .get(&id)
                .is_some_and(|cached| cached.stored_at == stored_at)
            {
                self.by_id.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_known_id_restores_the_original_context() {
        let cache = ContextCache::new();
        let original = Context::with_user("user-1").child();
        let id = cache.remember(&original);
        let restored = cache.resolve(Some(&id));
        assert_eq!(restored, original);
        assert_eq!(restored.user_id.as_deref(), Some("user-1"));
        assert_eq!(restored.parent_id, original.parent_id);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_id_gets_a_fresh_main_context_never_the_sandbox_id() {
        let cache = ContextCache::new();
        let forged = ulid::Ulid::new().to_string();
        let minted = cache.resolve(Some(&forged));
        assert_ne!(minted.id.to_string(), forged);
        assert_eq!(minted.user_id, None);
        assert_eq!(minted.parent_id, None);
        assert_eq!(
            cache.resolve(Some(&forged)),
            minted,
            "one sandbox cause, one main context"
        );
        assert_ne!(cache.resolve(None), cache.resolve(None));
    }

    #[tokio::test(start_paused = true)]
    async fn contexts_expire_after_the_ttl() {
        let cache = ContextCache::new();
        let original = Context::with_user("user-1");
        let id = cache.remember(&original);
        tokio::time::advance(CONTEXT_TTL - Duration::from_secs(1)).await;
        assert_eq!(cache.resolve(Some(&id)), original);
        tokio::time::advance(Duration::from_secs(2)).await;
        let after = cache.resolve(Some(&id));
        assert_ne!(after, original);
        assert_eq!(after.user_id, None);
    }

    #[tokio::test(start_paused = true)]
    async fn ids_longer_than_a_ulid_are_never_cached() {
        let cache = ContextCache::new();
        let long = "x".repeat(1024 * 1024);
        let first = cache.resolve(Some(&long));
        assert_ne!(cache.resolve(Some(&long)), first, "not cached");
        assert!(cache.is_empty());
        let ulid = ulid::Ulid::new().to_string();
        assert_eq!(ulid.len(), crate::limits::MAX_CONTEXT_ID_LEN);
        let minted = cache.resolve(Some(&ulid));
        assert_eq!(cache.resolve(Some(&ulid)), minted);
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_unknown_ids_stays_bounded() {
        let cache = ContextCache::new();
        let kept = Context::with_user("user-1");
        let kept_id = cache.remember(&kept);
        for _ in 0..(MAX_CONTEXTS * 3) {
            cache.resolve(Some(&ulid::Ulid::new().to_string()));
        }
        assert_eq!(cache.len(), MAX_CONTEXTS);
        assert!(cache.inner.lock().order.len() <= 2 * MAX_CONTEXTS);
        // The oldest went first.
        assert_ne!(cache.resolve(Some(&kept_id)), kept);
    }
}
