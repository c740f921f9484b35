//! The compat sweep and the benchmark runner: every integration's scenarios run in-process and
//! sandboxed, compared step by step; the figures the mission's targets are about; and
//! integrations that misbehave on purpose.
//!
//! # Layout
//! - [`misbehaving`]: integrations that panic, abort, hang, flood, print to stdout, or forge.
//! - [`bench_lights`]: N plain lights and a `flood` service, for the benchmarks.
//! - [`scenario`]: scenario files and the runner playing one in-process or sandboxed.
//! - [`custom_integrations`]: the custom integration the sweep installs from a pinned artifact.
pub mod bench_lights;
pub mod misbehaving;
pub mod scenario;

use std::sync::Arc;

/// Every integration the sweep and the benchmarks know: the built-in ones, the benchmark
/// lights, and the misbehaving ones (the same set on main and in the sandboxes).
pub fn all_integrations() -> Vec<Arc<dyn homecore::Integration>> {
    let mut list = integrations::builtin();
    list.push(Arc::new(bench_lights::BenchLights::new()));
    list.extend(misbehaving::all());
    list
}

/// The custom integrations the sweep knows (the `custom-example` crate's `acme_thermostat`):
/// on main for the in-process baseline; sandboxed, never on main, but in their own group from
/// a pinned artifact (the sweep binary's hidden `run-custom-sandbox`).
pub fn custom_integrations() -> Vec<Arc<dyn homecore::Integration>> {
    custom_example::integrations()
}
