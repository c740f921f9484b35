//! `sandbox-forger --name GROUP --url URL --forge SCENARIO --forge-report PATH [...]`: the
//! forging child of the forged-frame suite, for this crate's tests (see
//! [`sandbox_forge::forger`]). Exit codes: 0 after a normal stop, 2 for bad arguments, 3 when
//! it could not run.

use std::process::ExitCode;

use clap::Parser;
use sandbox_forge::ForgerArgs;

fn main() -> ExitCode {
    match ForgerArgs::try_parse() {
        Ok(args) => sandbox_forge::forger_main(args),
        Err(error) => {
            let _ = error.print();
            ExitCode::from(if error.use_stderr() { 2 } else { 0 })
        }
    }
}
