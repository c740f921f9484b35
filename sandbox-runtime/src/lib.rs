//! The sandbox side: runs integrations in a subprocess against a private core and mirrors
//! what they do to main over the channel.
//!
//! # Layout
//! - [`runtime`]: start order, the channel's handlers, shutdown; [`runtime::run`].
//! - [`entities`]: the entity bridge: registrations, ordered state pushes, removals.
//! - [`entries`]: entry setup and unload for main, with domain approvals.
//! - [`flows`]: config and options flows for main; `create_entry` goes to main, not the core.
//! - [`mirror`]: services and events of approved domains, mirrored to main.
//! - [`approvals`]: reference-counted approved domains.
//! - [`store`]: the private core's store backend, routed to main.
//! - [`stdio`]: protects the stdio channel from integration output.
//! - [`sdk`]: the `main` of a sandbox binary, for the built-in runtime and custom integrations.

pub mod approvals;
pub mod entities;
pub mod entries;
pub mod entry_updates;
pub mod flows;
pub mod mirror;
pub mod runtime;
pub mod sdk;
pub mod stdio;
pub mod store;

pub use runtime::{Ending, Integrations, RuntimeConfig, RuntimeError, run};
