//! The `compat-sandbox` binary: a sandbox runtime hosting the built-in integrations and the
//! integrations that misbehave on purpose (`compat-sandbox --name GROUP --url URL`), for the
//! tests that prove the host survives them.

use std::process::ExitCode;

use sandbox_runtime::Integrations;

fn main() -> ExitCode {
    let mut list = integrations::builtin();
    list.extend(sandbox_compat::misbehaving::all());
    sandbox_runtime::sdk::run_main(Integrations::new(list))
}
