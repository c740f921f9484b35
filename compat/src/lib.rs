//! The compat sweep and the benchmark runner: every integration's scenarios run in-process and
//! sandboxed, compared step by step; the figures the mission's targets are about; and
//! integrations that misbehave on purpose.
//!
//! # Layout
//! - [`misbehaving`]: integrations that panic, abort, hang, flood, print to stdout, or forge.
//! - [`bench_lights`]: N plain lights and a `flood` service, for the benchmarks.
pub mod bench_lights;
pub mod misbehaving;
