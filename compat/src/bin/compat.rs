//! The compat sweep: every scenario in `compat/scenarios/` played in-process and sandboxed,
//! compared step by step (scenarios and steps that can only run sandboxed are judged by their
//! own expectations), and every trust gate's check of the forged-frame suite
//! (`sandbox_forge::checks`); writes `compat/COMPAT.md` and a CSV, and exits non-zero when a
//! sandboxed run differs from its in-process baseline, a sandboxed-only expectation is not met,
//! or a gate check fails.
//!
//! `cargo run --release -p sandbox-compat --bin compat [-- --jobs 2]`. Hidden subcommands make
//! this binary its own sandbox runtime (`run-sandbox`, with the same integrations as main), the
//! sandbox of the custom integration (`run-custom-sandbox`, its SDK main; the sweep pins this
//! binary's own SHA-256, computed at start, as the custom integration's artifact), and the
//! forging child of the gate checks (`forge`), and the embedded MQTT broker of the scenarios
//! with a broker (`mqtt-broker`; `SANDBOX_TEST_MQTT_BROKER=mosquitto` runs Mosquitto instead); its first argument
//! [`sandbox_compat::misbehaving::escape::HELPER_FLAG`] makes it the helper of the
//! `misbehave_escape` integration run by that runtime.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use sandbox_compat::scenario::{
    self, BrokerLauncher, Outcome, PinnedCustom, Sandboxing, Scenario, StepRecord,
};
use sandbox_forge::GateCheck;

#[derive(Debug, Parser)]
#[command(
    name = "compat",
    about = "Runs every integration in-process and sandboxed and reports the difference"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Scenarios run at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// The folder of scenario files.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios"))]
    scenarios: PathBuf,
    /// The report to write.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/COMPAT.md"))]
    report: PathBuf,
    /// The CSV to write (machine output, git-ignored).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/compat.csv"))]
    csv: PathBuf,
    /// Skip the trust gate checks (for a run over a scenario folder of one's own).
    #[arg(long)]
    no_gates: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The sandbox runtime with the sweep's integrations.
    #[command(hide = true)]
    RunSandbox(sandbox_runtime::sdk::Args),
    /// The custom integration's own sandbox (its SDK main).
    #[command(hide = true)]
    RunCustomSandbox(sandbox_runtime::sdk::Args),
    /// The forging child of the trust gate checks.
    #[command(hide = true)]
    Forge(sandbox_forge::ForgerArgs),
    /// The embedded MQTT broker of the scenarios with a broker.
    #[command(hide = true)]
    MqttBroker(sandbox_mqtt_broker::ServeArgs),
}

/// One gate check's result.
struct GateOutcome {
    check: GateCheck,
    /// Why it failed, if it did.
    error: Option<String>,
}

/// What the sweep runs: a scenario, or a gate check.
enum Job {
    Scenario(Box<Scenario>),
    Gate(GateCheck),
}

/// A finished job.
enum Finished {
    Scenario(Box<Outcome>),
    Gate(GateOutcome),
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(code) = sandbox_compat::misbehaving::escape::helper_main(&args) {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    match cli.command {
        Some(Command::RunSandbox(args)) => {
            return ExitCode::from(sandbox_runtime::sdk::run_with_args(
                args,
                sandbox_runtime::Integrations::new(sandbox_compat::all_integrations()),
            ));
        }
        Some(Command::RunCustomSandbox(args)) => {
            return ExitCode::from(sandbox_runtime::sdk::run_with_args(
                args,
                sandbox_runtime::Integrations::new(sandbox_compat::custom_integrations()),
            ));
        }
        Some(Command::Forge(args)) => return sandbox_forge::forger_main(args),
        Some(Command::MqttBroker(args)) => {
            return match sandbox_mqtt_broker::serve(args.port, &args.users) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("mqtt-broker: {error}");
                    ExitCode::from(1)
                }
            };
        }
        None => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("compat: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(sweep(&cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("compat failed: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn load(folder: &PathBuf) -> Result<Vec<Scenario>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("cannot read {}", folder.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut scenario: Scenario = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid scenario", path.display()))?;
            scenario.name = path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned());
            Ok(scenario)
        })
        .collect()
}

/// How the sandboxed runs start their groups: this binary as the built-in runtime, and as the
/// custom integration's sandbox, pinned at its own SHA-256 (computed now, as an installer's
/// `pin` step would).
fn sandboxing() -> Result<Sandboxing> {
    let this = std::env::current_exe().context("cannot find this program")?;
    let pinned = custom_example::pin::pin(&this)
        .with_context(|| format!("cannot pin {}", this.display()))?;
    let manifest =
        custom_example::manifest().context("the custom integration's manifest is invalid")?;
    Ok(Sandboxing {
        runtime: vec![this.clone().into_os_string(), "run-sandbox".into()],
        custom: vec![PinnedCustom {
            manifest,
            artifact: this.clone(),
            sha256: pinned.sha256,
            command: vec![this.clone().into_os_string(), "run-custom-sandbox".into()],
        }],
        mqtt_broker: BrokerLauncher::from_env_or(vec![this.into_os_string(), "mqtt-broker".into()])
            .context("cannot choose the MQTT broker")?,
    })
}

async fn sweep(cli: &Cli) -> Result<bool> {
    let scenarios = load(&cli.scenarios)?;
    let sandboxing = sandboxing()?;
    let forger: Vec<OsString> = vec![
        std::env::current_exe()
            .context("cannot find this program")?
            .into_os_string(),
        "forge".into(),
    ];
    let checks = if cli.no_gates {
        Vec::new()
    } else {
        sandbox_forge::checks()
    };
    let jobs: Vec<Job> = scenarios
        .into_iter()
        .map(|scenario| Job::Scenario(Box::new(scenario)))
        .chain(checks.into_iter().map(Job::Gate))
        .collect();
    let total = jobs.len();
    let mut done = 0;
    let runs = futures::stream::iter(jobs.into_iter().map(|job| {
        let sandboxing = &sandboxing;
        let forger = forger.clone();
        async move {
            match job {
                Job::Scenario(scenario) => {
                    let integration = scenario.label();
                    scenario::play(*scenario, sandboxing)
                        .await
                        .map(|outcome| Finished::Scenario(Box::new(outcome)))
                        .with_context(|| format!("cannot play the {integration} scenario"))
                }
                Job::Gate(check) => {
                    let error = (check.run)(forger)
                        .await
                        .err()
                        .map(|error| error.to_string());
                    Ok(Finished::Gate(GateOutcome { check, error }))
                }
            }
        }
    }))
    .buffer_unordered(cli.jobs.max(1));
    tokio::pin!(runs);
    let mut outcomes = Vec::new();
    let mut gates = Vec::new();
    while let Some(finished) = runs.next().await {
        done += 1;
        let bar: String = (0..20)
            .map(|cell| if cell * total < done * 20 { '#' } else { '.' })
            .collect();
        match finished? {
            Finished::Scenario(outcome) => {
                let only = outcome.sandboxed_only().len();
                let unmet = outcome.unmet().len();
                let line = match &outcome.baseline {
                    None => format!("(sandboxed only) {only} steps, {unmet} expectations unmet"),
                    Some(_) if only == 0 => format!(
                        "{} steps, {} differences",
                        outcome.compared().len(),
                        outcome.differences().len()
                    ),
                    Some(_) => format!(
                        "{} steps, {} differences; {only} sandboxed-only steps, {unmet} unmet",
                        outcome.compared().len(),
                        outcome.differences().len()
                    ),
                };
                eprintln!(
                    "[{bar}] {done}/{total} {}: {line}",
                    outcome.scenario.label()
                );
                outcomes.push(*outcome);
            }
            Finished::Gate(outcome) => {
                eprintln!(
                    "[{bar}] {done}/{total} gate {} {}: {}",
                    outcome.check.gate,
                    outcome.check.name,
                    outcome
                        .error
                        .as_deref()
                        .map_or("passed".to_owned(), |error| { format!("FAILED: {error}") })
                );
                gates.push(outcome);
            }
        }
    }
    outcomes.sort_by_key(|outcome| outcome.scenario.label());
    let order: Vec<&str> = sandbox_forge::checks()
        .iter()
        .map(|check| check.name)
        .collect();
    gates.sort_by_key(|outcome| order.iter().position(|name| *name == outcome.check.name));
    write_report(cli, &outcomes, &gates)?;
    Ok(outcomes.iter().all(Outcome::ok) && gates.iter().all(|outcome| outcome.error.is_none()))
}

/// A CSV field, quoted.
fn field(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "'"))
}

/// A markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The sentence naming the core configuration every hub of the sweep runs with.
fn home_sentence() -> String {
    let home = sandbox_compat::scenario::sweep_home(std::path::Path::new("."));
    format!(
        "Every hub, in-process and sandboxed, runs with the same core configuration, no field of \
         it at the core's default (so a sandbox that ignored main's would differ): {} \
         ({}, {}, elevation {} m, radius {} m), unit system {:?}, time zone {}, language {}, \
         currency {}, country {}.",
        home.location_name,
        home.latitude,
        home.longitude,
        home.elevation,
        home.radius,
        home.unit_system,
        home.time_zone,
        home.language,
        home.currency,
        home.country.as_deref().unwrap_or("none"),
    )
}

fn write_report(cli: &Cli, outcomes: &[Outcome], gates: &[GateOutcome]) -> Result<()> {
    let mut report = format!(
        "# Compat sweep\n\nEvery scenario in `compat/scenarios/` played twice — in-process (no sandbox) and \
         sandboxed (the host plugin with the real runtime; the custom integration through the \
         custom-integration path, from an artifact pinned by its SHA-256) — and compared after \
         every step: the step's outcome (errors included) and every state with its attributes. \
         Integrations that would harm the sweep's own process in-process, and steps about the \
         sandbox itself, run sandboxed only and are judged by their own expectations. Then every \
         trust gate's check of the forged-frame suite.\n\n{home}\n\nGenerated by \
         `cargo run --release -p sandbox-compat --bin compat`.\n\n| integration | steps | passed in-process | passed sandboxed | equal to baseline | differences |\n|---|---|---|---|---|---|\n",
        home = home_sentence(),
    );
    let mut csv = String::from("integration,step,label,in_process,sandboxed,ok\n");
    let (mut steps, mut passed_base, mut passed_sand, mut equal_total) = (0, 0, 0, 0);
    for outcome in outcomes.iter().filter(|outcome| outcome.baseline.is_some()) {
        let differences = outcome.differences();
        let compared = outcome.compared();
        let count = compared.len();
        let base = compared
            .iter()
            .filter(|(base, _)| base.is_some_and(StepRecord::passed))
            .count();
        let sand = compared
            .iter()
            .filter(|(_, sand)| sand.is_some_and(StepRecord::passed))
            .count();
        let equal = count.saturating_sub(differences.len());
        steps += count;
        passed_base += base;
        passed_sand += sand;
        equal_total += equal;
        let _ = writeln!(
            report,
            "| {} | {count} | {base} | {sand} | {equal} | {} |",
            outcome.scenario.label(),
            differences.len()
        );
        for (index, (base, sand)) in compared.iter().enumerate() {
            let same = matches!((base, sand), (Some(base), Some(sand)) if base == sand);
            let label = base.or(*sand).map_or("", |record| record.label.as_str());
            let _ = writeln!(
                csv,
                "{},{index},{},{},{},{same}",
                outcome.scenario.label(),
                field(label),
                field(base.map_or("", |record| record.outcome.as_str())),
                field(sand.map_or("", |record| record.outcome.as_str())),
            );
        }
    }
    let ratio = if steps == 0 {
        0.0
    } else {
        equal_total as f64 * 100.0 / steps as f64
    };
    let _ = writeln!(
        report,
        "| **total** | {steps} | {passed_base} | {passed_sand} | {equal_total} | {} |\n\nSandboxed equal to baseline: **{ratio:.2} %** of {steps} steps.\n",
        steps - equal_total
    );

    report.push_str(
        "## Sandboxed only\n\nIntegrations that cannot run in-process without harming the sweep's own \
         process (or with nothing to compare, since in-process nothing refuses what the sandbox \
         must), and steps about the sandbox itself (a group's state, a wrong pin), each judged by \
         its own expectation: an entry's state, a group's state and restarts after a crash or a \
         hang, main still answering its own service, other groups' entities still working, \
         nothing forbidden reaching main.\n\n| integration | why | steps | expectations met |\n|---|---|---|---|\n",
    );
    let (mut only_total, mut met_total) = (0, 0);
    for outcome in outcomes {
        let only = outcome.sandboxed_only();
        if only.is_empty() {
            continue;
        }
        let met = only.iter().filter(|record| record.passed()).count();
        only_total += only.len();
        met_total += met;
        let why = outcome
            .scenario
            .sandboxed_only
            .clone()
            .unwrap_or_else(|| "steps about the sandbox itself".to_owned());
        let _ = writeln!(
            report,
            "| {} | {} | {} | {met} |",
            outcome.scenario.label(),
            cell(&why),
            only.len()
        );
        for (index, record) in only.iter().enumerate() {
            let _ = writeln!(
                csv,
                "{},{index},{},{},{},{}",
                outcome.scenario.label(),
                field(&record.label),
                field(""),
                field(&record.outcome),
                record.passed()
            );
        }
    }
    let _ = writeln!(
        report,
        "| **total** | | {only_total} | {met_total} |\n\nSandboxed-only expectations met: **{met_total} of {only_total}**.\n"
    );
    write_sandboxed_only_steps(&mut report, outcomes);

    write_gates(&mut report, cli, gates);
    for outcome in outcomes {
        let problems: Vec<String> = outcome
            .differences()
            .into_iter()
            .chain(outcome.unmet())
            .collect();
        if !problems.is_empty() {
            let _ = writeln!(report, "## {}\n", outcome.scenario.label());
            for problem in problems.iter().take(20) {
                let _ = writeln!(report, "- {problem}");
            }
            report.push('\n');
        }
    }
    std::fs::write(&cli.report, report)
        .with_context(|| format!("cannot write {}", cli.report.display()))?;
    std::fs::write(&cli.csv, csv).with_context(|| format!("cannot write {}", cli.csv.display()))?;
    Ok(())
}

/// Every step of each sandboxed-only scenario and what it got (what a misbehaving integration
/// tried and how main and the kernel answered).
fn write_sandboxed_only_steps(report: &mut String, outcomes: &[Outcome]) {
    for outcome in outcomes {
        if !outcome.scenario.is_sandboxed_only() {
            continue;
        }
        let _ = writeln!(
            report,
            "### {}\n\n{}\n\n| step | outcome |\n|---|---|",
            outcome.scenario.label(),
            cell(&outcome.scenario.description)
        );
        for record in outcome.sandboxed_only() {
            let _ = writeln!(
                report,
                "| {} | {} |",
                cell(&record.label),
                cell(&record.outcome)
            );
        }
        report.push('\n');
    }
}

/// The "Trust gates" section: one row per gate check.
fn write_gates(report: &mut String, cli: &Cli, gates: &[GateOutcome]) {
    report.push_str("## Trust gates\n\n");
    if cli.no_gates {
        report.push_str("Not run (`--no-gates`).\n\n");
        return;
    }
    report.push_str(
        "The forged-frame suite (`tests/forge`, crate `sandbox-forge`), run against this binary: \
         for each gate, a hub whose `built-in` group is a real child process forging the frames \
         the gate must refuse. A check passes when main refused every forgery with the right \
         error kind, counted it on the bridge, let nothing into its bus, services, states, \
         registries or disk, accepted the allowed control request, and the group still runs on \
         the same process and answers a ping.\n\n| gate | check | rule | result |\n|---|---|---|---|\n",
    );
    for outcome in gates {
        let result = match &outcome.error {
            None => "passed".to_owned(),
            Some(error) => format!("**failed**: {}", cell(error)),
        };
        let _ = writeln!(
            report,
            "| {} | `{}` | {} | {result} |",
            outcome.check.gate, outcome.check.name, outcome.check.rule
        );
    }
    let passed = gates
        .iter()
        .filter(|outcome| outcome.error.is_none())
        .count();
    let _ = writeln!(
        report,
        "\nTrust gates passed: **{passed} of {}**.\n",
        gates.len()
    );
}
