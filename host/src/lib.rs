//! The host side of the sandbox: the plugin a home-automation core embeds to run integrations
//! in sandbox subprocesses.
//!
//! # Layout
//! - [`manager`]: the group manager, supervising one sandbox subprocess per group (spawn,
//!   handshake, restart budget, watchdog, stop).
//! - [`process`]: one child process with its hygiene (process group, parent-death signal,
//!   resource limits, `no_new_privs`), stderr forwarding, kill and reap on drop.
//! - [`budget`]: the restart budget and backoff.

pub mod budget;
pub mod manager;
pub mod process;

pub use budget::{RestartBudget, RestartPolicy};
pub use manager::{
    CommandFactory, GroupConfig, GroupEvents, GroupManager, GroupState, GroupStatus, ManagerError,
    NoEvents, ReadyInfo, StopReport, WatchdogConfig,
};
pub use process::{ChildTransport, Credentials, ResourceLimits};
