//! Refusals of what a sandbox sends: counted per group and gate, logged within a budget.
//!
//! Every gate of the bridge and the store server refuses through [`GateCounters::refuse`], so
//! a refusal is always counted (operators and tests read the counts) and a flood of them costs
//! one log line per gate per [`LOG_WINDOW`] plus a summary, never a line each.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use sandbox_proto::RemoteError;
use sandbox_proto::error::ErrorKind;

use crate::limits::{MAX_MESSAGE_BYTES, bounded_text};
use crate::log_limit::{Admit, LogBudget, Suppressed};

/// The gates, each with its own count and log budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gate {
    /// `register_entity` or `update_entry` for an entry of another group (or none) (B4).
    ForeignEntry,
    /// A device merging into a device owned outside the group, with an identifier of another
    /// integration, a `via_device` of another group, or a bad configuration URL (B2).
    ForeignDevice,
    /// An entity of a domain that cannot be proxied (B1).
    Unproxyable,
    /// `register_service` outside the owned domains, over an existing service or with an
    /// invalid name; `unregister_service` of a service of someone else (B5).
    Service,
    /// `fire_event` of a core or unowned event, an over-long type, or data that is not an
    /// object (B6).
    Event,
    /// Store requests over quota or with bad keys or values (B10).
    Store,
    /// Context ids longer than a ULID (B7).
    Context,
    /// State pushes, unregistrations and re-descriptions of entities the group did not
    /// register, re-descriptions changing an entity's domain, entry, platform or unique id,
    /// unknown device classes.
    Entity,
    /// Values over a size, count or depth bound of [`crate::limits`], replies and flow results
    /// included, and the group's mirrored and registry byte budgets.
    Bounds,
    /// Registrations past the group's entity cap, or past its registry entry or device caps.
    EntityCap,
    /// Requests of the bridge before the group said `ready`.
    NotReady,
}

impl Gate {
    /// Every gate, in the order of [`GateCounters::snapshot`].
    pub const ALL: [Gate; 11] = [
        Gate::ForeignEntry,
        Gate::ForeignDevice,
        Gate::Unproxyable,
        Gate::Service,
        Gate::Event,
        Gate::Store,
        Gate::Context,
        Gate::Entity,
        Gate::Bounds,
        Gate::EntityCap,
        Gate::NotReady,
    ];

    /// Its name in status output and logs.
    pub fn name(self) -> &'static str {
        match self {
            Gate::ForeignEntry => "foreign_entry",
            Gate::ForeignDevice => "foreign_device",
            Gate::Unproxyable => "unproxyable",
            Gate::Service => "service",
            Gate::Event => "event",
            Gate::Store => "store",
            Gate::Context => "context",
            Gate::Entity => "entity",
            Gate::Bounds => "bounds",
            Gate::EntityCap => "entity_cap",
            Gate::NotReady => "not_ready",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Log lines per gate per [`LOG_WINDOW`]: the first refusal is logged whole, the rest of the
/// window is one summary line.
pub const REFUSAL_LOG_LINES_PER_WINDOW: u32 = 1;

/// Refusals of one group, per gate, across every bridge (process generation) of the group.
pub struct GateCounters {
    group: String,
    counts: [AtomicU64; Gate::ALL.len()],
    logs: Mutex<[LogBudget; Gate::ALL.len()]>,
}

impl GateCounters {
    /// No refusal yet.
    pub fn new(group: &str) -> Self {
        Self {
            group: group.to_owned(),
            counts: Default::default(),
            logs: Mutex::new(std::array::from_fn(|_| {
                LogBudget::new(REFUSAL_LOG_LINES_PER_WINDOW, usize::MAX)
            })),
        }
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Refusals counted at `gate`.
    pub fn count(&self, gate: Gate) -> u64 {
        self.counts[gate.index()].load(Ordering::Relaxed)
    }

    /// Every gate's count, in [`Gate::ALL`] order.
    pub fn snapshot(&self) -> Vec<(Gate, u64)> {
        Gate::ALL
            .iter()
            .map(|&gate| (gate, self.count(gate)))
            .collect()
    }

    /// Counts a refusal at `gate`, logs it within the gate's budget, and returns the error the
    /// sandbox gets (kind `refused`).
    pub fn refuse(&self, gate: Gate, error: &dyn std::fmt::Display) -> RemoteError {
        self.refuse_as(gate, ErrorKind::Refused, error)
    }

    /// As [`Self::refuse`], with another error kind (`quota`, `bad_request`).
    pub fn refuse_as(
        &self,
        gate: Gate,
        kind: ErrorKind,
        error: &dyn std::fmt::Display,
    ) -> RemoteError {
        self.counts[gate.index()].fetch_add(1, Ordering::Relaxed);
        let message = bounded_text(&error.to_string(), MAX_MESSAGE_BYTES);
        let admit = self.logs.lock()[gate.index()].admit(message.len());
        if let Admit::Log { suppressed } = admit {
            if let Some(suppressed) = suppressed {
                self.log_summary(gate, suppressed);
            }
            tracing::warn!(group = %self.group, gate = gate.name(), error = %message, "refused a sandbox request");
        }
        RemoteError::new(kind, message)
    }

    /// Counts a value over one of [`crate::limits`]' bounds at the `bounds` gate.
    pub fn over_bound(&self, error: crate::limits::LimitError) -> RemoteError {
        self.refuse(Gate::Bounds, &crate::gates::GateError::Limit(error))
    }

    /// Logs what the budgets suppressed and has not summarised yet (when a bridge goes away).
    pub fn flush_log(&self) {
        let mut logs = self.logs.lock();
        for gate in Gate::ALL {
            if let Some(suppressed) = logs[gate.index()].take_suppressed() {
                self.log_summary(gate, suppressed);
            }
        }
    }

    fn log_summary(&self, gate: Gate, suppressed: Suppressed) {
        tracing::warn!(
            group = %self.group,
            gate = gate.name(),
            "{} more refusals at gate {} in the last {} s",
            suppressed.lines,
            gate.name(),
            suppressed.over.as_secs()
        );
    }
}

impl std::fmt::Debug for GateCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (gate, count) in self.snapshot() {
            map.entry(&gate.name(), &count);
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_refusal_quoting_a_huge_value_is_bounded() {
        let counters = GateCounters::new("g");
        let error = counters.refuse(
            Gate::Entity,
            &format!("entity {} is unknown", "x\n".repeat(1 << 20)),
        );
        assert!(error.message.len() <= MAX_MESSAGE_BYTES);
        assert!(!error.message.contains('\n'));
    }

    #[tokio::test(start_paused = true)]
    async fn every_refusal_is_counted_at_its_gate() {
        let counters = GateCounters::new("g");
        for _ in 0..1000 {
            let error = counters.refuse(Gate::Event, &"no");
            assert_eq!(error.kind, ErrorKind::Refused);
        }
        let quota = counters.refuse_as(Gate::Store, ErrorKind::Quota, &"full");
        assert_eq!(quota.kind, ErrorKind::Quota);
        assert_eq!(counters.count(Gate::Event), 1000);
        assert_eq!(counters.count(Gate::Store), 1);
        assert_eq!(
            counters.snapshot().iter().map(|(_, n)| n).sum::<u64>(),
            1001
        );
        // The budget kept the rest out of the log; the flush summarises them once.
        assert_eq!(
            counters.logs.lock()[Gate::Event.index()]
                .clone()
                .take_suppressed()
                .map(|s| s.lines),
            Some(999)
        );
        counters.flush_log();
        assert_eq!(
            counters.logs.lock()[Gate::Event.index()].take_suppressed(),
            None
        );
    }
}
