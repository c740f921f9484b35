//! The forged-frame suite: for every trust gate, a real child process forges the frames main
//! must refuse, and a check proves main did.
//!
//! The suite has two halves, used from two places with one implementation:
//!
//! - the child ([`forger`]): [`run_forger`] speaks the protocol just enough for main to route an
//!   entry to it, forges one [`ForgeScenario`] and reports what main answered. It runs as this
//!   crate's `sandbox-forger` binary, or as the compat sweep's hidden `forge` subcommand;
//! - main's side ([`gates`]): [`checks`] lists one [`GateCheck`] per gate; each builds a hub
//!   (homecore + the host plugin) whose `built-in` group is the child, and returns
//!   [`CheckError`] naming what went wrong instead of panicking. This crate's tests run each
//!   against `sandbox-forger`; the compat sweep runs all of them against itself.

use std::ffi::OsString;
use std::future::Future;
use std::pin::Pin;

pub mod forger;
pub mod gates;
mod hub;

pub use forger::{ForgeError, ForgeScenario, ForgerArgs, forger_main, run_forger};
pub use gates::checks;
pub use hub::{HANG_GUARD, MAX_RECORDED_EVENTS};

/// A running gate check.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<(), CheckError>> + Send>>;

/// One trust gate's check.
#[derive(Debug, Clone, Copy)]
pub struct GateCheck {
    /// The check's name (also the name of its test).
    pub name: &'static str,
    /// The mission's capability id of the gate (`B4`, ...).
    pub gate: &'static str,
    /// The rule the check proves, in a few words.
    pub rule: &'static str,
    /// Runs the check against the forging child started by the given command prefix (main's
    /// group manager appends the forge flags, then `--name` and `--url`).
    pub run: fn(Vec<OsString>) -> CheckFuture,
}

/// Why a gate check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The hub or its fixtures could not be set up.
    #[error("cannot set the hub up: {0}")]
    Setup(String),
    /// Something did not happen within [`HANG_GUARD`].
    #[error("timed out after {HANG_GUARD:?} waiting for {0}")]
    Hung(String),
    /// The forging child's report is missing, unreadable or says it could not forge.
    #[error("the forging child's report: {0}")]
    Report(String),
    /// Main did not do what the gate requires.
    #[error("{0}")]
    Failed(String),
}
