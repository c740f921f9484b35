//! The `sandbox-host` program's parts, thin over the host library: the long-lived hub
//! ([`hub`]) and its configuration file ([`config`]), its control API ([`control`], [`metrics`]) and the commands that talk to it ([`client`],
//! [`commands`]), and the demo ([`demo`]). The binary (`src/main.rs`) parses the command line
//! and calls them.

pub mod api;
pub mod client;
pub mod commands;
pub mod config;
pub mod control;
pub mod demo;
pub mod hub;
pub mod metrics;
pub mod tokens;
