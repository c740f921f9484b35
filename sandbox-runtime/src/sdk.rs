//! The `main` of a sandbox binary: argument parsing, logging to stderr (plain `TIMESTAMP LEVEL
//! message` lines unless stderr is a terminal), stdio protection, the
//! runtime, and exit codes. The built-in `sandbox-runtime` binary and every custom integration's
//! own sandbox binary are a few lines around [`run_main`].
//!
//! Exit codes: [`EXIT_OK`] after a normal stop, [`EXIT_BAD_ARGUMENTS`] for bad arguments or an
//! unsupported `--url`, [`EXIT_FAILED_START`] when the sandbox could not start.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sandbox_proto::{Transport, TransportUrl};

use crate::runtime::{Integrations, RuntimeConfig, run};
use crate::stdio::take_stdio_for_channel;

/// A normal stop (main shut it down, went away, or SIGTERM).
pub const EXIT_OK: u8 = 0;
/// Bad arguments or an unsupported transport URL.
pub const EXIT_BAD_ARGUMENTS: u8 = 2;
/// The sandbox could not start (transport, private core, or handshake).
pub const EXIT_FAILED_START: u8 = 3;

/// The command line of a sandbox binary.
#[derive(Debug, Parser)]
#[command(version, about = "Runs integrations for one sandbox group of the hub")]
pub struct Args {
    /// The sandbox group this process serves (chosen by the host).
    #[arg(long)]
    pub name: String,
    /// How to reach main: stdio:// (default) or unix:///absolute/path.
    #[arg(long, default_value = "stdio://")]
    pub url: String,
    /// The private core's configuration directory (default: a directory under the system
    /// temp dir named after the group).
    #[arg(long)]
    pub config_dir: Option<PathBuf>,
}

/// Parses the arguments, runs the sandbox, and returns its exit code.
pub fn run_main(integrations: Integrations) -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            let code = if error.use_stderr() {
                EXIT_BAD_ARGUMENTS
            } else {
                EXIT_OK
            };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    ExitCode::from(run_with_args(args, integrations))
}

/// Runs the sandbox for already-parsed arguments; returns the exit code.
pub fn run_with_args(args: Args, integrations: Integrations) -> u8 {
    init_logging();
    if args.name.trim().is_empty() {
        tracing::error!("--name must not be empty");
        return EXIT_BAD_ARGUMENTS;
    }
    let url = match TransportUrl::parse(&args.url) {
        Ok(url) => url,
        Err(error) => {
            tracing::error!("--url {:?}: {error}", args.url);
            return EXIT_BAD_ARGUMENTS;
        }
    };
    // Take stdio over before anything else can print to stdout.
    let stdio = match url {
        TransportUrl::Stdio => match take_stdio_for_channel() {
            Ok(fds) => Some(fds),
            Err(error) => {
                tracing::error!("cannot take stdio over for the channel: {error}");
                return EXIT_FAILED_START;
            }
        },
        TransportUrl::Unix(_) => None,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("cannot start the async runtime: {error}");
            return EXIT_FAILED_START;
        }
    };
    let config_dir = args
        .config_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("sandbox-{}", args.name)));
    let config = RuntimeConfig {
        group: args.name.clone(),
        config_dir,
    };
    runtime.block_on(async move {
        let transport = match stdio {
            Some(fds) => Transport::from_fds(fds.input, fds.output, "stdio://"),
            None => Transport::open(&url).await,
        };
        let transport = match transport {
            Ok(transport) => transport,
            Err(error) => {
                tracing::error!("cannot open the channel to main: {error}");
                return EXIT_FAILED_START;
            }
        };
        match run(config, integrations, transport).await {
            Ok(ending) => {
                tracing::info!(?ending, "stopped");
                EXIT_OK
            }
            Err(error) => {
                tracing::error!("failed to start: {error}");
                EXIT_FAILED_START
            }
        }
    })
}

/// Logs to stderr, one plain line per event: `TIMESTAMP LEVEL message fields`. Main reads the
/// level of each line to forward it at that level (docs/PROTOCOL.md, "Stderr"), so colour
/// codes are written only when stderr is a terminal (a person running the binary by hand).
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SANDBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
