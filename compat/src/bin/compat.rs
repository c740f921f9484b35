//! The compat sweep: every scenario in `compat/scenarios/` played in-process and sandboxed,
//! compared step by step, and every trust gate's check of the forged-frame suite
//! (`sandbox_forge::checks`); writes `compat/COMPAT.md` and a CSV, and exits non-zero when the
//! sandboxed run differs from the in-process baseline or a gate check fails.
//!
//! `cargo run --release -p sandbox-compat --bin compat [-- --jobs 2]`. The hidden `run-sandbox`
//! makes this binary its own sandbox runtime (with the same integrations as main), and the
//! hidden `forge` its own forging child for the gate checks.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use sandbox_compat::scenario::{self, Mode, Scenario, StepRecord};
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
    /// The forging child of the trust gate checks.
    #[command(hide = true)]
    Forge(sandbox_forge::ForgerArgs),
}

/// One gate check's result.
struct GateOutcome {
    check: GateCheck,
    /// Why it failed, if it did.
    error: Option<String>,
}

/// What the sweep runs: a scenario in both modes, or a gate check.
enum Job {
    Scenario(Scenario),
    Gate(GateCheck),
}

/// A finished job.
enum Finished {
    Scenario(Outcome),
    Gate(GateOutcome),
}

/// One scenario's two runs.
struct Outcome {
    scenario: Scenario,
    baseline: Vec<StepRecord>,
    sandboxed: Vec<StepRecord>,
}

impl Outcome {
    fn differences(&self) -> Vec<String> {
        let mut differences = Vec::new();
        let longest = self.baseline.len().max(self.sandboxed.len());
        for index in 0..longest {
            match (self.baseline.get(index), self.sandboxed.get(index)) {
                (Some(base), Some(sand)) if base.label != sand.label => {
                    differences.push(format!(
                        "step {index}: `{}` in-process but `{}` sandboxed",
                        base.label, sand.label
                    ));
                }
                (Some(base), Some(sand)) if base.outcome != sand.outcome => {
                    differences.push(format!(
                        "{}: `{}` in-process, `{}` sandboxed",
                        base.label, base.outcome, sand.outcome
                    ))
                }
                (Some(base), Some(sand)) if base.states != sand.states => {
                    let differing: Vec<&String> = base
                        .states
                        .iter()
                        .filter(|(id, value)| sand.states.get(*id) != Some(value))
                        .map(|(id, _)| id)
                        .chain(
                            sand.states
                                .keys()
                                .filter(|id| !base.states.contains_key(*id)),
                        )
                        .take(5)
                        .collect();
                    differences.push(format!("{}: states differ ({differing:?})", base.label));
                }
                (Some(_), Some(_)) => {}
                (Some(base), None) => {
                    differences.push(format!("{}: missing sandboxed", base.label))
                }
                (None, Some(sand)) => {
                    differences.push(format!("{}: missing in-process", sand.label))
                }
                (None, None) => {}
            }
        }
        differences
    }
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
        Some(Command::RunSandbox(args)) => {
            return ExitCode::from(sandbox_runtime::sdk::run_with_args(
                args,
                sandbox_runtime::Integrations::new(sandbox_compat::all_integrations()),
            ));
        }
        Some(Command::Forge(args)) => return sandbox_forge::forger_main(args),
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
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid scenario", path.display()))
        })
        .collect()
}

async fn sweep(cli: &Cli) -> Result<bool> {
    let scenarios = load(&cli.scenarios)?;
    let this = std::env::current_exe()
        .context("cannot find this program")?
        .into_os_string();
    let runtime: Vec<OsString> = vec![this.clone(), "run-sandbox".into()];
    let forger: Vec<OsString> = vec![this, "forge".into()];
    let checks = if cli.no_gates {
        Vec::new()
    } else {
        sandbox_forge::checks()
    };
    let jobs: Vec<Job> = scenarios
        .into_iter()
        .map(Job::Scenario)
        .chain(checks.into_iter().map(Job::Gate))
        .collect();
    let total = jobs.len();
    let mut done = 0;
    let runs = futures::stream::iter(jobs.into_iter().map(|job| {
        let runtime = runtime.clone();
        let forger = forger.clone();
        async move {
            match job {
                Job::Scenario(scenario) => {
                    let baseline = scenario::run(&scenario, Mode::InProcess, &runtime).await;
                    let sandboxed = scenario::run(&scenario, Mode::Sandboxed, &runtime).await;
                    Ok(Finished::Scenario(Outcome {
                        scenario,
                        baseline: baseline?,
                        sandboxed: sandboxed?,
                    }))
                }
                Job::Gate(check) => {
                    let error = (check.run)(forger)
                        .await
                        .err()
                        .map(|error| error.to_string());
                    Ok::<_, anyhow::Error>(Finished::Gate(GateOutcome { check, error }))
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
                eprintln!(
                    "[{bar}] {done}/{total} {}: {} steps, {} differences",
                    outcome.scenario.integration,
                    outcome.baseline.len(),
                    outcome.differences().len()
                );
                outcomes.push(outcome);
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
    outcomes.sort_by(|a, b| a.scenario.integration.cmp(&b.scenario.integration));
    let order: Vec<&str> = sandbox_forge::checks()
        .iter()
        .map(|check| check.name)
        .collect();
    gates.sort_by_key(|outcome| order.iter().position(|name| *name == outcome.check.name));
    write_report(cli, &outcomes, &gates)?;
    Ok(outcomes
        .iter()
        .all(|outcome| outcome.differences().is_empty())
        && gates.iter().all(|outcome| outcome.error.is_none()))
}

fn write_report(cli: &Cli, outcomes: &[Outcome], gates: &[GateOutcome]) -> Result<()> {
    let mut report = String::from(
        "# Compat sweep\n\nEvery scenario in `compat/scenarios/` played twice — in-process (no sandbox) and \
         sandboxed (the host plugin with the real runtime) — and compared after every step: the \
         step's outcome (errors included) and every state with its attributes.\n\nGenerated by \
         `cargo run --release -p sandbox-compat --bin compat`.\n\n| integration | steps | passed in-process | passed sandboxed | equal to baseline | differences |\n|---|---|---|---|---|---|\n",
    );
    let mut csv = String::from("integration,step,label,in_process,sandboxed,equal\n");
    let (mut steps, mut passed_base, mut passed_sand, mut equal_total) = (0, 0, 0, 0);
    for outcome in outcomes {
        let differences = outcome.differences();
        let count = outcome.baseline.len();
        let base = outcome
            .baseline
            .iter()
            .filter(|record| record.passed())
            .count();
        let sand = outcome
            .sandboxed
            .iter()
            .filter(|record| record.passed())
            .count();
        let equal = count.saturating_sub(differences.len());
        steps += count;
        passed_base += base;
        passed_sand += sand;
        equal_total += equal;
        let _ = writeln!(
            report,
            "| {} | {count} | {base} | {sand} | {equal} | {} |",
            outcome.scenario.integration,
            differences.len()
        );
        for (index, record) in outcome.baseline.iter().enumerate() {
            let sandboxed = outcome.sandboxed.get(index);
            let same = sandboxed.is_some_and(|other| other == record);
            let _ = writeln!(
                csv,
                "{},{index},\"{}\",\"{}\",\"{}\",{same}",
                outcome.scenario.integration,
                record.label.replace('"', "'"),
                record.outcome.replace('"', "'"),
                sandboxed
                    .map(|other| other.outcome.replace('"', "'"))
                    .unwrap_or_default()
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
    write_gates(&mut report, cli, gates);
    for outcome in outcomes {
        let differences = outcome.differences();
        if !differences.is_empty() {
            let _ = writeln!(report, "## {}\n", outcome.scenario.integration);
            for difference in differences.iter().take(20) {
                let _ = writeln!(report, "- {difference}");
            }
            report.push('\n');
        }
    }
    std::fs::write(&cli.report, report)
        .with_context(|| format!("cannot write {}", cli.report.display()))?;
    std::fs::write(&cli.csv, csv).with_context(|| format!("cannot write {}", cli.csv.display()))?;
    Ok(())
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
            Some(error) => format!(
                "**failed**: {}",
                error.replace('|', "\\|").replace('\n', " ")
            ),
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
