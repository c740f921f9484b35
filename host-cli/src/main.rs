//! The `sandbox-host` program: `run` keeps a hub running on a config dir; `status`, `entries`,
//! `start`/`stop`/`restart`, `reload` and `add` talk to it over its control socket; `demo`
//! shows a hub recovering from crashes in a temporary directory.
//!
//! `config check --config DIR` checks the hub's configuration file
//! ([`sandbox_host_cli::config`]). The hidden `run-sandbox --name GROUP --url URL` runs the
//! built-in sandbox runtime from this same binary, so the hub and the demo work from a single
//! build.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use sandbox_host_cli::{client, commands, config, control, demo, hub, tokens};

#[derive(Debug, Parser)]
#[command(
    name = "sandbox-host",
    version,
    about = "Runs integrations of a home-automation hub in sandbox subprocesses"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the hub keeps its files.
#[derive(Debug, Clone, Args)]
struct ConfigDir {
    /// The hub's config dir (its configuration file, stores and control socket).
    #[arg(
        long = "config",
        value_name = "DIR",
        env = "SANDBOX_HOST_CONFIG",
        default_value = "."
    )]
    dir: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Exit code of `run` when the configuration file is refused: nothing was started.
const EXIT_BAD_CONFIG: u8 = 2;

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub on a config dir until SIGTERM or SIGINT (a second SIGINT stops at once).
    /// Reads DIR/sandbox-host.toml (writing a commented default when it is absent); a refused
    /// file is exit code 2 and nothing starts.
    Run {
        #[command(flatten)]
        config: ConfigDir,
        /// Log format (default: the configuration file's `log.format`).
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Show every sandbox group of a running hub: state, process, restarts, last exit, entries.
    /// Exit code 0 when no group failed, 1 when one did, 3 when the hub is not reachable.
    Status {
        #[command(flatten)]
        config: ConfigDir,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the hub's metrics as OpenMetrics (Prometheus) text, as `/metrics` serves them.
    Metrics {
        #[command(flatten)]
        config: ConfigDir,
    },
    /// List the hub's config entries.
    Entries {
        #[command(flatten)]
        config: ConfigDir,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Start a group (a failed one with a fresh restart budget).
    Start {
        /// The group (`built-in`, `custom-<domain>`).
        group: String,
        #[command(flatten)]
        config: ConfigDir,
    },
    /// Stop a group; its entities turn unavailable until it starts again.
    Stop {
        /// The group.
        group: String,
        #[command(flatten)]
        config: ConfigDir,
    },
    /// Restart a group with a fresh restart budget.
    Restart {
        /// The group.
        group: String,
        #[command(flatten)]
        config: ConfigDir,
    },
    /// Reload a config entry.
    Reload {
        /// The entry's id (see `entries`).
        entry_id: String,
        #[command(flatten)]
        config: ConfigDir,
    },
    /// Add an integration through its config flow: each field is asked for in the terminal,
    /// or given with `--data KEY=VALUE` (menus: `--data next_step_id=STEP`).
    Add {
        /// The integration's domain (`demo`, `command_line`, ...).
        integration: String,
        /// A form value or menu choice, `KEY=VALUE`; repeat for more.
        #[arg(long = "data", value_name = "KEY=VALUE")]
        data: Vec<String>,
        #[command(flatten)]
        config: ConfigDir,
    },
    /// Start a hub in a temporary directory, run the demo integration sandboxed, crash it and
    /// watch it recover.
    Demo {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check the hub's configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage the long-lived access tokens of the hub's HTTP API.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run the built-in sandbox runtime (what the host spawns per group).
    #[command(hide = true)]
    RunSandbox(sandbox_runtime::sdk::Args),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a token named NAME and print it (once: only its hash is kept).
    Create {
        /// A name saying who uses it (`dashboard`, `node-red`).
        name: String,
        #[command(flatten)]
        config: ConfigDir,
    },
    /// List the tokens by name.
    List {
        #[command(flatten)]
        config: ConfigDir,
    },
    /// Revoke the token named NAME: it stops working at its next use.
    Revoke {
        /// The token's name.
        name: String,
        #[command(flatten)]
        config: ConfigDir,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check DIR/sandbox-host.toml (writing the commented default when it is absent), print
    /// the effective settings; exit 2 if it is refused.
    Check {
        #[command(flatten)]
        config: ConfigDir,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    match cli.command {
        Command::RunSandbox(args) => ExitCode::from(sandbox_runtime::sdk::run_with_args(
            args,
            sandbox_runtime::Integrations::new(integrations::builtin()),
        )),
        Command::Config(ConfigCommand::Check { config }) => config::check_command(&config.dir),
        Command::Token(command) => token_command(command),
        Command::Demo { json } => with_runtime(Some(2), |_| async move {
            match demo::demo(json).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("sandbox-host demo failed: {error:#}");
                    ExitCode::from(1)
                }
            }
        }),
        Command::Run { config, log_format } => with_runtime(None, move |_| async move {
            match run(&config.dir, log_format).await {
                Ok(code) => code,
                Err(error) => {
                    eprintln!("sandbox-host run: {error:#}");
                    ExitCode::from(1)
                }
            }
        }),
        Command::Status { config, json } => {
            client_command(&config, move |client, dir| async move {
                commands::status(&client, &dir, json).await
            })
        }
        Command::Metrics { config } => client_command(&config, move |client, _| async move {
            commands::metrics(&client).await
        }),
        Command::Entries { config, json } => client_command(&config, move |client, _| async move {
            commands::entries(&client, json).await
        }),
        Command::Start { group, config } => client_command(&config, move |client, _| async move {
            commands::control_group(&client, &group, "start").await
        }),
        Command::Stop { group, config } => client_command(&config, move |client, _| async move {
            commands::control_group(&client, &group, "stop").await
        }),
        Command::Restart { group, config } => {
            client_command(&config, move |client, _| async move {
                commands::control_group(&client, &group, "restart").await
            })
        }
        Command::Reload { entry_id, config } => {
            client_command(&config, move |client, _| async move {
                commands::reload(&client, &entry_id).await
            })
        }
        Command::Add {
            integration,
            data,
            config,
        } => {
            let data = match commands::parse_data(&data) {
                Ok(data) => data,
                Err(error) => {
                    eprintln!("sandbox-host add: {error}");
                    return ExitCode::from(2);
                }
            };
            client_command(&config, move |client, _| async move {
                let mut terminal = commands::Terminal;
                let prompter: Option<&mut dyn commands::Prompter> =
                    commands::interactive().then_some(&mut terminal);
                commands::add(&client, &integration, &data, prompter).await
            })
        }
    }
}

/// `sandbox-host token create|list|revoke`: straight on the store file, whether or not the
/// hub runs (it reads the file again when it changes).
fn token_command(command: TokenCommand) -> ExitCode {
    let dir = match &command {
        TokenCommand::Create { config, .. }
        | TokenCommand::List { config }
        | TokenCommand::Revoke { config, .. } => absolute(&config.dir),
    };
    if !dir.is_dir() {
        eprintln!(
            "sandbox-host: the config dir {} does not exist",
            dir.display()
        );
        return ExitCode::from(2);
    }
    let store = tokens::TokenStore::new(&dir);
    let result = match command {
        TokenCommand::Create { name, .. } => store.create(&name).map(|token| {
            println!("{token}");
            eprintln!("token {name:?} created: it is shown this once, keep it now");
        }),
        TokenCommand::List { .. } => store.list().map(|tokens| {
            if tokens.is_empty() {
                println!("no token: make one with `sandbox-host token create NAME`");
            }
            for token in tokens {
                println!("{}  created {}", token.name, token.created_at);
            }
        }),
        TokenCommand::Revoke { name, .. } => store
            .revoke(&name)
            .map(|()| println!("token {name:?} revoked")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sandbox-host: {error}");
            ExitCode::from(1)
        }
    }
}

/// Runs `body` on a tokio runtime (`workers` threads, or one per CPU).
fn with_runtime<F, Fut>(workers: Option<usize>, body: F) -> ExitCode
where
    F: FnOnce(&tokio::runtime::Runtime) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sandbox-host: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let future = body(&runtime);
    runtime.block_on(future)
}

/// The config dir as an absolute path (the control socket's place derives from it, so the
/// hub and a command run from elsewhere agree on it).
fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned())
}

/// Runs a command against the hub of `config`, printing its output and ending with its code.
fn client_command<F, Fut>(config: &ConfigDir, command: F) -> ExitCode
where
    F: FnOnce(client::Client, PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<commands::Outcome, client::ClientError>>,
{
    let dir = absolute(&config.dir);
    let socket = socket_for_commands(&dir);
    with_runtime(Some(1), move |_| async move {
        match command(client::Client::new(&socket), dir).await {
            Ok(outcome) => {
                print!("{}", outcome.stdout);
                ExitCode::from(outcome.code)
            }
            Err(error) => {
                let (message, code) = commands::failure(&error);
                eprintln!("sandbox-host: {message}");
                ExitCode::from(code)
            }
        }
    })
}

/// Logging to stderr: `RUST_LOG` when set, else the configuration's level.
fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `sandbox-host run --config DIR`.
async fn run(dir: &Path, log_format: Option<LogFormat>) -> Result<ExitCode> {
    // The dir must exist (a mistyped --config is an error, never a new hub elsewhere).
    let dir = absolute(dir);
    let loaded = match config::load_or_create(&dir) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("sandbox-host: configuration refused: {error}");
            return Ok(ExitCode::from(EXIT_BAD_CONFIG));
        }
    };
    let format = log_format.unwrap_or(match loaded.config.log.format {
        config::LogFormat::Text => LogFormat::Text,
        config::LogFormat::Json => LogFormat::Json,
    });
    init_logging(&loaded.config.log.level, format);
    if loaded.created {
        tracing::info!(file = %loaded.path.display(), "wrote the default configuration file");
    } else {
        tracing::info!(file = %loaded.path.display(), "configuration read");
    }
    let config = loaded.config;
    let options = hub::RunOptions {
        control_socket: control_socket(&dir, &config),
        http: Some(config.listen.http),
        groups: config.groups_config(dir.clone(), hub::runtime_command()?),
        custom: config.custom_integrations().to_vec(),
        config_dir: dir,
    };
    Ok(match hub::run(options).await? {
        hub::RunEnd::Stopped => ExitCode::SUCCESS,
        hub::RunEnd::Forced => ExitCode::from(hub::FORCED_STOP_EXIT_CODE),
        hub::RunEnd::GraceExceeded => ExitCode::from(hub::GRACE_EXCEEDED_EXIT_CODE),
    })
}

/// The control socket of the hub on `dir`: the configuration's, else the default place.
fn control_socket(dir: &Path, config: &config::HubConfig) -> PathBuf {
    config
        .listen
        .control_socket
        .clone()
        .unwrap_or_else(|| control::default_socket_path(dir))
}

/// Where a command finds the hub on `dir`: the configuration file's socket when the file is
/// there and reads, else the default place (what a hub with no such setting uses).
fn socket_for_commands(dir: &Path) -> PathBuf {
    let file = dir.join(config::CONFIG_FILE_NAME);
    std::fs::read_to_string(&file)
        .ok()
        .and_then(|text| config::parse(&text, &file, dir).ok())
        .map(|config| control_socket(dir, &config))
        .unwrap_or_else(|| control::default_socket_path(dir))
}
