//! `pin ARTIFACT`: prints the pinned manifest of a built `acme-thermostat-sandbox` binary,
//! `{"domain":…,"version":…,"sha256":…}`, for the host's custom integration settings.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("usage: pin ARTIFACT");
        return ExitCode::from(2);
    };
    match custom_example::pin::pin(&PathBuf::from(path)) {
        Ok(pinned) => match serde_json::to_string(&pinned) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("pin: {error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("pin: {error}");
            ExitCode::FAILURE
        }
    }
}
