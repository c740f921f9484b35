//! Built-in integrations, each runnable in-process on main or inside a sandbox's private core.
//!
//! # Layout
//!
//! - [`demo`]: the demo integration: a config flow (form with a selector and a section, a
//!   menu, an options flow, entries at version 2), devices and entities in every proxyable
//!   entity domain with Home-Assistant-like service effects and queries, a domain service
//!   with a response, `demo_*` events, data in the store and state restored after a restart.
//! - [`command_line`]: a sensor, binary sensor or switch per entry, driven by shell commands
//!   (real subprocesses, timeout, capped output).
//! - [`systemmonitor`]: CPU, memory, disk, load and network sensors from `/proc` and `statvfs`.
//! - [`file`]: a sensor following a file's last line; a notifier appending to a file.
//! - [`template`]: a sensor computed from other entities' states (runs on main).
//! - [`group`]: light and switch groups over other entities (runs on main).
//!
//! [`builtin`] returns a fresh instance of every built-in integration, for one core.

#![forbid(unsafe_code)]

use std::sync::Arc;

use homecore::Integration;

pub mod command_line;
pub mod demo;
pub mod file;
pub mod group;
pub mod mqtt;
pub mod systemmonitor;
pub mod template;

/// Every built-in integration, freshly made: hand the result to one core
/// (`Core::builder(config).integrations(integrations::builtin())`).
pub fn builtin() -> Vec<Arc<dyn Integration>> {
    vec![
        Arc::new(demo::DemoIntegration::new()),
        Arc::new(command_line::CommandLineIntegration::new()),
        Arc::new(systemmonitor::SystemMonitorIntegration::new()),
        Arc::new(file::FileIntegration::new()),
        Arc::new(template::TemplateIntegration::new()),
        Arc::new(group::GroupIntegration::new()),
    ]
}

/// An integration's English strings (the shape of `strings.json`) for `language`; `None` for
/// other languages or unreadable strings (translations are cosmetic and must never fail).
pub(crate) fn english_strings(
    language: &str,
    strings_json: &str,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    if language != "en" {
        return None;
    }
    match serde_json::from_str(strings_json) {
        Ok(serde_json::Value::Object(strings)) => Some(strings),
        _ => None,
    }
}
