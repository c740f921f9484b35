//! The `sandbox-host` binary: `demo` shows a hub running the demo integration sandboxed —
//! what was mirrored, a service call, a crash and the recovery, a double crash (the respawned
//! sandbox killed at its ready) and that recovery, with the times taken.
//!
//! `sandbox-host demo [--json]`. The hidden `run-sandbox --name GROUP --url URL` runs the
//! built-in sandbox runtime from this same binary, so the demo works from a single build.
//!
//! `sandbox-host config check --config DIR` checks the hub's configuration file (see
//! [`config`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use homecore::{Context, Core, CoreConfig, FlowContext, FlowStep, ServiceRequest, ServiceTarget};
use sandbox_host::groups::GroupsConfig;
use sandbox_host::plugin::{PluginConfig, SandboxPlugin};
use sandbox_host::{GroupConfig, GroupState};
use serde_json::{Map, json};

mod config;

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a hub in a temporary directory, run the demo integration sandboxed, crash it and
    /// watch it recover.
    Demo {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Work with the hub's configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run the built-in sandbox runtime (what the host spawns per group).
    #[command(hide = true)]
    RunSandbox(sandbox_runtime::sdk::Args),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check DIR/sandbox-host.toml (writing the commented default when it is absent), print
    /// the effective settings; exit 2 if it is refused.
    Check {
        /// The configuration directory.
        #[arg(long, value_name = "DIR")]
        config: std::path::PathBuf,
    },
}

/// How long the demo waits for any one thing before it gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

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
        Command::Config(ConfigCommand::Check { config }) => config::check_command(&config),
        Command::Demo { json } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("sandbox-host: {error}");
                    return ExitCode::from(1);
                }
            };
            match runtime.block_on(demo(json)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("sandbox-host demo failed: {error:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn wait_for(what: &str, condition: impl Fn() -> bool) -> Result<Duration> {
    let started = Instant::now();
    tokio::time::timeout(STEP_TIMEOUT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    })
    .await
    .with_context(|| format!("timed out waiting for {what}"))?;
    Ok(started.elapsed())
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// The demo's standard output. A reader that goes away (`sandbox-host demo | head`) ends the
/// output, not the demo: the rest is not written, and the demo still stops its hub and
/// sandboxes and exits 0, where `println!` would panic on the broken pipe.
#[derive(Default)]
struct Output {
    closed: std::cell::Cell<bool>,
}

impl Output {
    fn line(&self, line: &str) -> Result<()> {
        use std::io::Write as _;
        if self.closed.get() {
            return Ok(());
        }
        let mut stdout = std::io::stdout().lock();
        match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed.set(true);
                Ok(())
            }
            Err(error) => Err(error).context("cannot write to stdout"),
        }
    }
}

async fn demo(as_json: bool) -> Result<()> {
    let output = Output::default();
    let say = |line: String| -> Result<()> {
        if as_json {
            return Ok(());
        }
        output.line(&line)
    };
    let dir = tempfile::tempdir().context("cannot create a temporary config dir")?;
    let this = std::env::current_exe().context("cannot find this program")?;
    let mut group_defaults = GroupConfig::new("template");
    group_defaults.restart.backoff_initial = Duration::from_millis(10);
    // Four starts: the first, the respawn after the crash, and two after the double crash.
    group_defaults.restart.max_starts = 4;
    let core = Core::builder(CoreConfig::new(dir.path()))
        .integrations(integrations::builtin())
        .build()?;
    let plugin = SandboxPlugin::install(
        &core,
        PluginConfig {
            groups: GroupsConfig {
                config_dir: dir.path().to_owned(),
                runtime_command: vec![this.into_os_string(), OsString::from("run-sandbox")],
                custom_commands: Default::default(),
                group_defaults,
                group_overrides: Default::default(),
            },
            custom: vec![],
        },
    );
    core.start().await?;
    say("hub started in a temporary directory".to_owned())?;

    // The demo's config flow, run in its sandbox group through main's flow manager.
    let started = Instant::now();
    let flows = core.config_entries().flow();
    let menu = flows.init("demo", FlowContext::new("user"), None).await?;
    let choice = Map::from_iter([("next_step_id".to_owned(), json!("defaults"))]);
    let created = flows.configure(&menu.flow_id, Some(choice)).await?;
    let FlowStep::CreateEntry {
        entry_id: Some(entry_id),
        title,
        ..
    } = created.step
    else {
        bail!(
            "the demo's flow did not create an entry: {:?}",
            created.step
        );
    };
    let entry = core
        .config_entries()
        .entry(&entry_id)
        .context("the entry exists")?;
    let group_name = entry
        .sandbox
        .clone()
        .context("the demo runs in a sandbox group")?;
    let proxyable = homecore::catalog::catalog()
        .domains()
        .filter(|spec| spec.proxyable)
        .count();
    let domains_seen = |core: &Core| {
        let mut by_domain: BTreeMap<String, usize> = BTreeMap::new();
        for state in core.states().all(None) {
            *by_domain.entry(state.domain().to_owned()).or_default() += 1;
        }
        by_domain
    };
    wait_for("proxies in every proxyable domain", || {
        let seen = domains_seen(&core);
        homecore::catalog::catalog()
            .domains()
            .filter(|spec| spec.proxyable)
            .all(|spec| seen.contains_key(&spec.domain))
    })
    .await?;
    let configured_in = started.elapsed();
    let group = plugin
        .groups()
        .get(&group_name)
        .context("the group exists")?;
    let pid = group.manager.status().pid.context("the group runs")?;
    let entities = domains_seen(&core);
    let services: Vec<String> = core
        .services()
        .services()
        .get("demo")
        .map(|services| {
            services
                .keys()
                .map(|service| format!("demo.{service}"))
                .collect()
        })
        .unwrap_or_default();
    say(format!(
        "configured \"{title}\" (entry {entry_id}) in group `{group_name}` in {:.1} ms",
        millis(configured_in)
    ))?;
    say(format!(
        "group `{group_name}`: pid {pid}, protocol {}",
        group.manager.status().protocol_version.unwrap_or_default()
    ))?;
    say(format!(
        "mirrored {} entities in {} domains ({proxyable} proxyable):",
        entities.values().sum::<usize>(),
        entities.len()
    ))?;
    for (domain, count) in &entities {
        say(format!("  {domain:<22} {count}"))?;
    }
    say(format!("mirrored services: {}", services.join(", ")))?;

    // A service call through a proxy.
    let light = core
        .states()
        .entity_ids(Some("light"))
        .into_iter()
        .next()
        .context("a light")?;
    let before = core
        .states()
        .get(&light)
        .map(|state| state.state.clone())
        .unwrap_or_default();
    let (service, wanted) = if before == "on" {
        ("turn_off", "off")
    } else {
        ("turn_on", "on")
    };
    let called = Instant::now();
    let request = ServiceRequest::new("light", service)
        .with_target(ServiceTarget::entities([light.clone()]))
        .with_context(Context::with_user("demo-user"));
    core.services().call(request).await?;
    let call_took = called.elapsed();
    wait_for("the light's new state", || {
        core.states()
            .get(&light)
            .is_some_and(|state| state.state == wanted)
    })
    .await?;
    let after = core.states().get(&light).context("the light")?;
    say(format!(
        "light.{service} on {light}: {before} -> {} in {:.2} ms (context user {})",
        after.state,
        millis(call_took),
        after.context.user_id.as_deref().unwrap_or("none")
    ))?;

    // Crash the sandbox and watch the proxies.
    let proxies = plugin
        .groups()
        .bridge(&group_name)
        .context("the bridge")?
        .proxy_entity_ids();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let crashed = Instant::now();
    say(format!("killed the sandbox (pid {pid}) with SIGKILL"))?;
    wait_for("every proxy unavailable", || {
        proxies.iter().all(|id| {
            core.states()
                .get(id)
                .is_some_and(|state| state.state == "unavailable")
        })
    })
    .await?;
    let unavailable_in = crashed.elapsed();
    say(format!(
        "all {} proxies unavailable after {:.2} ms",
        proxies.len(),
        millis(unavailable_in)
    ))?;
    wait_for("the respawn", || {
        let status = group.manager.status();
        status.state == GroupState::Running && status.pid.is_some_and(|new| new != pid)
    })
    .await?;
    wait_for("the proxies back", || {
        proxies.iter().all(|id| {
            core.states()
                .get(id)
                .is_some_and(|state| state.state != "unavailable")
        })
    })
    .await?;
    let recovered_in = crashed.elapsed();
    let new_pid = group.manager.status().pid.unwrap_or_default();
    say(format!(
        "recovered in {:.1} ms (new pid {new_pid}, {} restart)",
        millis(recovered_in),
        group.manager.status().restarts
    ))?;

    // A double crash: kill the sandbox, then kill its successor as soon as it is ready, while
    // main is setting the entry up again in it; the third process must bring every proxy back.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(new_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    wait_for("the successor's ready", || {
        let status = group.manager.status();
        status.state == GroupState::Running && status.pid.is_some_and(|pid| pid != new_pid)
    })
    .await?;
    let successor = group.manager.status().pid.context("the successor runs")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(successor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let second_kill = Instant::now();
    say(format!(
        "double crash: killed pid {new_pid}, then its successor {successor} at its ready"
    ))?;
    wait_for("the third process", || {
        let status = group.manager.status();
        status.state == GroupState::Running
            && status
                .pid
                .is_some_and(|pid| pid != new_pid && pid != successor)
    })
    .await?;
    wait_for("the proxies back after the double crash", || {
        proxies.iter().all(|id| {
            core.states()
                .get(id)
                .is_some_and(|state| state.state != "unavailable")
        })
    })
    .await?;
    let double_recovered_in = second_kill.elapsed();
    let third_pid = group.manager.status().pid.unwrap_or_default();
    let entry_state = core
        .config_entries()
        .entry(&entry_id)
        .map(|entry| entry.state.as_str())
        .unwrap_or("missing");
    say(format!(
        "recovered from the double crash in {:.1} ms after the second kill (pid {third_pid}, entry {entry_state})",
        millis(double_recovered_in)
    ))?;

    let reports = plugin.stop().await;
    core.stop().await?;
    plugin.uninstall();
    let graceful = reports.iter().all(|(_, report)| report.graceful);
    say(format!(
        "stopped: every group shut down {}",
        if graceful {
            "gracefully"
        } else {
            "(some forcibly)"
        }
    ))?;

    if as_json {
        let out = json!({
            "entry_id": entry_id,
            "group": group_name,
            "pid": pid,
            "configured_ms": millis(configured_in),
            "entities_by_domain": entities,
            "proxyable_domains": proxyable,
            "services": services,
            "service_call": {"entity_id": light, "service": service, "before": before, "after": after.state, "ms": millis(call_took)},
            "crash": {
                "proxies": proxies.len(),
                "unavailable_ms": millis(unavailable_in),
                "recovered_ms": millis(recovered_in),
                "new_pid": new_pid,
            },
            "double_crash": {
                "killed_pids": [new_pid, successor],
                "recovered_ms": millis(double_recovered_in),
                "new_pid": third_pid,
                "entry_state": entry_state,
            },
            "stopped_gracefully": graceful,
        });
        output.line(&out.to_string())?;
    }
    Ok(())
}
