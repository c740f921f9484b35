//! The sweep binary end to end: scenarios played in-process and sandboxed (the real runtime;
//! the custom integration from its pinned artifact), sandboxed-only scenarios judged by their
//! own expectations, and every trust gate checked (the binary as its own forging child), a
//! report and a CSV written; an unmet expectation fails the sweep; a malformed scenario is a
//! clear error.

#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;

fn sweep(scenarios: &std::path::Path, out: &std::path::Path, gates: bool) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_compat"));
    if !gates {
        command.arg("--no-gates");
    }
    command
        .arg("--scenarios")
        .arg(scenarios)
        .arg("--report")
        .arg(out.join("COMPAT.md"))
        .arg("--csv")
        .arg(out.join("compat.csv"))
        .output()
        .unwrap()
}

#[test]
fn the_shipped_scenarios_are_equal_sandboxed_and_in_process() {
    let out = tempfile::tempdir().unwrap();
    let scenarios = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let output = sweep(&scenarios, out.path(), true);
    let progress = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{progress}");
    let report = std::fs::read_to_string(out.path().join("COMPAT.md")).unwrap();
    assert!(
        report.contains("Sandboxed equal to baseline: **100.00 %**"),
        "{report}"
    );
    // Every gate check ran, was shown in the progress, and passed.
    let checks = sandbox_forge::checks();
    assert!(
        report.contains(&format!("Trust gates passed: **{0} of {0}**", checks.len())),
        "{report}"
    );
    for check in &checks {
        assert!(
            report.contains(&format!("| {} | `{}` |", check.gate, check.name)),
            "{report}"
        );
        assert!(
            progress.contains(&format!("gate {} {}: passed", check.gate, check.name)),
            "{progress}"
        );
    }
    assert!(report.contains("| demo |"), "{report}");
    // The custom integration is compared like the others; every misbehaving one is played.
    assert!(report.contains("| acme_thermostat | "), "{report}");
    for domain in sandbox_compat::misbehaving::DOMAINS {
        assert!(
            report.contains(&format!("| {domain} | ")),
            "{domain}: {report}"
        );
    }
    let met = report
        .split("Sandboxed-only expectations met: **")
        .nth(1)
        .and_then(|rest| rest.split("**").next())
        .unwrap();
    let (met, of) = met.split_once(" of ").unwrap();
    assert_eq!(met, of, "{report}");
    assert!(of.parse::<usize>().unwrap() > 0, "{report}");
    let csv = std::fs::read_to_string(out.path().join("compat.csv")).unwrap();
    assert!(csv.lines().count() > 100, "{csv}");
    assert!(
        csv.lines().skip(1).all(|line| line.ends_with(",true")),
        "{csv}"
    );
}

#[test]
fn a_failed_expectation_is_counted_in_both_modes() {
    let scenarios = tempfile::tempdir().unwrap();
    std::fs::write(
        scenarios.path().join("command_line.json"),
        r#"{"integration": "command_line", "flow": [{"next_step_id": "sensor"}, {"name": "Answer", "command": "echo 41"}],
            "steps": [{"expect_state": {"entity_id": "sensor.answer", "state": "42"}}]}"#,
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let output = sweep(scenarios.path(), out.path(), false);
    assert!(
        output.status.success(),
        "the same failure in both modes is no difference"
    );
    let report = std::fs::read_to_string(out.path().join("COMPAT.md")).unwrap();
    assert!(
        report.contains("| command_line | 2 | 1 | 1 | 2 | 0 |"),
        "{report}"
    );
}

#[test]
fn a_malformed_scenario_is_a_clear_error() {
    let scenarios = tempfile::tempdir().unwrap();
    std::fs::write(scenarios.path().join("broken.json"), "{\"integration\": 3}").unwrap();
    let out = tempfile::tempdir().unwrap();
    let output = sweep(scenarios.path(), out.path(), false);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("broken.json is not a valid scenario")
    );
}

#[test]
fn an_unmet_sandboxed_only_expectation_fails_the_sweep() {
    let scenarios = tempfile::tempdir().unwrap();
    std::fs::write(
        scenarios.path().join("misbehave_flood.json"),
        r#"{"integration": "misbehave_flood", "description": "a wrong expectation",
            "sandboxed_only": "to test the sweep", "flow_init": {"count": 3},
            "steps": [{"expect_service": {"domain": "compat_probe", "service": "echo", "exists": false}},
                      {"probe_main": {}}]}"#,
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let output = sweep(scenarios.path(), out.path(), false);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = std::fs::read_to_string(out.path().join("COMPAT.md")).unwrap();
    assert!(
        report.contains("| misbehave_flood | to test the sweep | 3 | 2 |"),
        "{report}"
    );
    assert!(
        report.contains("Sandboxed-only expectations met: **2 of 3**"),
        "{report}"
    );
    assert!(
        report.contains("compat_probe.echo exists on main"),
        "{report}"
    );
}
