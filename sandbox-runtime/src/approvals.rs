//! Approved domains: the domains whose services and events this sandbox mirrors to main.
//!
//! A domain is approved while something holds it: a loaded entry (its integration's domain) or
//! a mirrored entity (its entity domain). Holds are counted, every hold is released on every
//! unregister path, and the domain is unapproved when the count drops to zero. Listeners hear
//! about each first approval, so services registered before their domain was approved are
//! replayed then.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Called with a domain when it becomes approved.
pub type ApprovalListener = Arc<dyn Fn(&str) + Send + Sync>;

/// Reference-counted approved domains.
#[derive(Default)]
pub struct Approvals {
    /// Holds per approved domain; a domain with no hold is absent.
    holds: Mutex<HashMap<String, usize>>,
    /// Told about every absent -> present transition.
    listeners: Mutex<Vec<ApprovalListener>>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("holds", &*self.holds.lock())
            .finish_non_exhaustive()
    }
}

impl Approvals {
    /// No approved domain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a hold on `domain`; returns whether it was newly approved.
    pub fn approve(&self, domain: &str) -> bool {
        let newly = {
            let mut holds = self.holds.lock();
            let count = holds.entry(domain.to_owned()).or_insert(0);
            *count += 1;
            *count == 1
        };
        if newly {
            let listeners = self.listeners.lock().clone();
            for listener in listeners {
                listener(domain);
            }
        }
        newly
    }

    /// Releases one hold on `domain`; returns whether it is no longer approved.
    pub fn release(&self, domain: &str) -> bool {
        let mut holds = self.holds.lock();
        match holds.get_mut(domain) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                holds.remove(domain);
                true
            }
            None => {
                tracing::warn!(domain, "released a domain that was not approved");
                false
            }
        }
    }

    /// Whether `domain` is approved.
    pub fn is_approved(&self, domain: &str) -> bool {
        self.holds.lock().contains_key(domain)
    }

    /// Whether `event_type` is `<approved_domain>_...` for some approved domain.
    pub fn covers_event(&self, event_type: &str) -> bool {
        self.holds.lock().keys().any(|domain| {
            event_type.len() > domain.len() + 1
                && event_type.starts_with(domain.as_str())
                && event_type.as_bytes()[domain.len()] == b'_'
        })
    }

    /// The holds on `domain`.
    pub fn holds(&self, domain: &str) -> usize {
        self.holds.lock().get(domain).copied().unwrap_or(0)
    }

    /// Calls `listener` on every future first approval.
    pub fn on_approved(&self, listener: ApprovalListener) {
        self.listeners.lock().push(listener);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn holds_are_counted_and_released_to_zero() {
        let approvals = Approvals::new();
        assert!(approvals.approve("demo"));
        assert!(!approvals.approve("demo"));
        assert_eq!(approvals.holds("demo"), 2);
        assert!(!approvals.release("demo"));
        assert!(approvals.is_approved("demo"));
        assert!(approvals.release("demo"));
        assert!(!approvals.is_approved("demo"));
        assert!(!approvals.release("demo"), "an extra release is harmless");
    }

    #[test]
    fn events_are_covered_by_their_domain_prefix() {
        let approvals = Approvals::new();
        approvals.approve("command_line");
        assert!(approvals.covers_event("command_line_ran"));
        assert!(!approvals.covers_event("command_line"));
        assert!(!approvals.covers_event("command_linex_ran"));
        assert!(!approvals.covers_event("hue_event"));
    }

    #[test]
    fn listeners_hear_only_first_approvals() {
        let approvals = Approvals::new();
        let heard = Arc::new(AtomicUsize::new(0));
        approvals.on_approved({
            let heard = heard.clone();
            Arc::new(move |domain| {
                assert_eq!(domain, "demo");
                heard.fetch_add(1, Ordering::SeqCst);
            })
        });
        approvals.approve("demo");
        approvals.approve("demo");
        assert_eq!(heard.load(Ordering::SeqCst), 1);
        approvals.release("demo");
        approvals.release("demo");
        approvals.approve("demo");
        assert_eq!(
            heard.load(Ordering::SeqCst),
            2,
            "approved again after full release"
        );
    }
}
