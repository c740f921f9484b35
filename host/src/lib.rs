//! The host side of the sandbox: the plugin a home-automation core embeds to run integrations
//! in sandbox subprocesses.
//!
//! # Layout
//! - [`manager`]: the group manager, supervising one sandbox subprocess per group (spawn,
//!   handshake, restart budget, watchdog, stop).
//! - [`process`]: one child process with its hygiene (process group, parent-death signal,
//!   resource limits, `no_new_privs`), stderr forwarding, kill and reap on drop.
//! - [`budget`]: the restart budget and backoff.
//! - [`gates`]: the trust gates, decided from main's own state.
//! - [`context_cache`]: restores the contexts main issued; mints fresh ones otherwise.
//! - [`store_server`]: a group's store folder on main, atomic and under quotas.

pub mod budget;
pub mod context_cache;
pub mod gates;
pub mod manager;
pub mod process;
pub mod store_server;

pub use budget::{RestartBudget, RestartPolicy};
pub use manager::{
    CommandFactory, GroupConfig, GroupEvents, GroupManager, GroupState, GroupStatus, ManagerError,
    NoEvents, ReadyInfo, StopReport, WatchdogConfig,
};
pub use process::{ChildTransport, Credentials, ResourceLimits};
