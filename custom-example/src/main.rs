//! `acme-thermostat-sandbox --name GROUP --url URL`: the `acme_thermostat` custom integration's
//! own sandbox binary, built with the SDK.

use std::process::ExitCode;

use sandbox_runtime::Integrations;

fn main() -> ExitCode {
    sandbox_runtime::sdk::run_main(Integrations::new(custom_example::integrations()))
}
