//! The `compat-sandbox` binary: a sandbox runtime hosting the built-in integrations and the
//! integrations that misbehave on purpose (`compat-sandbox --name GROUP --url URL`), for the
//! tests that prove the host survives them. Started with
//! [`sandbox_compat::misbehaving::escape::HELPER_FLAG`] it is instead the helper making that
//! integration's escape attempts.

use std::process::ExitCode;

use sandbox_runtime::Integrations;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = sandbox_compat::misbehaving::escape::helper_main(&args) {
        return code;
    }
    let mut list = integrations::builtin();
    list.extend(sandbox_compat::misbehaving::all());
    sandbox_runtime::sdk::run_main(Integrations::new(list))
}
