//! The embedded broker (rumqttd) as a process of its own: `sandbox-mqtt-broker --port PORT
//! [--user NAME:PASSWORD]...` serves MQTT 3.1.1 on 127.0.0.1:PORT until killed.

use std::process::ExitCode;

use clap::Parser;
use sandbox_mqtt_broker::ServeArgs;

/// Serves MQTT 3.1.1 on 127.0.0.1 for the tests until killed; exits 1 when the port is taken.
#[derive(Debug, Parser)]
#[command(name = "sandbox-mqtt-broker", version)]
struct Command {
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> ExitCode {
    let command = Command::parse();
    // rumqttd logs every connection, and a dropped one as an error: warnings and errors by
    // default, RUST_LOG for more.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match sandbox_mqtt_broker::serve(command.serve.port, &command.serve.users) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sandbox-mqtt-broker: {error}");
            ExitCode::FAILURE
        }
    }
}
