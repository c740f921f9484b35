//! The host side of the sandbox: the plugin a home-automation core embeds to run integrations
//! in sandbox subprocesses.
//!
//! # Layout
//! - [`manager`]: the group manager, supervising one sandbox subprocess per group (spawn,
//!   handshake, restart budget, watchdog, stop).
//! - [`process`]: one child process with its hygiene (process group, parent-death signal,
//!   resource limits, `no_new_privs`), stderr forwarding, kill and reap on drop.
//! - [`budget`]: the restart budget and backoff.
//! - [`bridge`]: main's side of one group channel: gates, proxies, services, events, store.
//! - [`proxy`]: the generic proxy entity, driven by the domain catalog.
//! - [`classifier`]: where an integration runs (main, `built-in`, `custom-<domain>`).
//! - [`groups`]: every group's manager and bridge slot, and the hooks joining them.
//! - [`router`]: the config entries seam and the flow proxy.
//! - [`plugin`]: [`plugin::SandboxPlugin::install`], the entry point for a core.
//! - [`gates`]: the trust gates, decided from main's own state.
//! - [`limits`]: the size, count and depth bounds on everything a sandbox sends.
//! - [`refusals`]: refusals counted per group and gate, logged within a budget.
//! - [`log_limit`] (from `sandbox-proto`): the log budget every log line about a sandbox goes
//!   through.
//! - [`context_cache`]: restores the contexts main issued; mints fresh ones otherwise.
//! - [`store_server`]: a group's store folder on main, atomic and under quotas.
//! - [`report`]: what an operator sees of each group (state, budget, last exit, counters).

pub mod bridge;
pub mod budget;
pub mod classifier;
pub mod confinement;
pub mod context_cache;
pub mod cpu_share;
pub mod gates;
pub mod groups;
pub mod limits;
pub mod manager;
pub mod plugin;
pub mod process;
pub mod proxy;
pub mod refusals;
pub mod report;

pub use sandbox_proto::log_limit;
pub mod router;
pub mod store_server;

pub use budget::{RestartBudget, RestartPolicy};
pub use manager::{
    CommandFactory, ExitCause, GroupConfig, GroupEvents, GroupManager, GroupState, GroupStatus,
    ManagerError, NoEvents, ReadyInfo, StopReport, WatchdogConfig,
};
pub use process::{ChildTransport, Credentials, ResourceLimits};
