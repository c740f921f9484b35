//! The `sandbox-runtime` binary: the built-in integrations in a sandbox subprocess.
//!
//! `sandbox-runtime --name GROUP [--url stdio://|unix:///path]`; see [`sandbox_runtime::sdk`].

use std::process::ExitCode;

use sandbox_runtime::Integrations;

fn main() -> ExitCode {
    sandbox_runtime::sdk::run_main(Integrations::new(integrations::builtin()))
}
