//! Unit tests of the scenario format: every shipped scenario parses, unknown fields are
//! refused, and expectations judge outcomes as documented.

#![allow(clippy::unwrap_used)]

use super::*;

fn shipped() -> Vec<(String, Scenario)> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut scenarios = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let scenario: Scenario = serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        scenarios.push((path.display().to_string(), scenario));
    }
    scenarios
}

#[test]
fn every_shipped_scenario_parses_and_says_why_it_is_sandboxed_only() {
    let scenarios = shipped();
    assert!(scenarios.len() >= 6);
    for (path, scenario) in &scenarios {
        assert!(!scenario.description.is_empty(), "{path}");
        if let Some(why) = &scenario.sandboxed_only {
            assert!(!why.trim().is_empty(), "{path}");
        }
    }
}

#[test]
fn every_misbehaving_integration_and_the_custom_one_have_a_scenario() {
    let covered: Vec<String> = shipped()
        .into_iter()
        .map(|(_, scenario)| scenario.integration)
        .collect();
    for domain in crate::misbehaving::DOMAINS {
        assert!(covered.iter().any(|covered| covered == domain), "{domain}");
    }
    for integration in crate::custom_integrations() {
        let domain = &integration.manifest().domain;
        assert!(covered.contains(domain), "{domain}");
    }
}

#[test]
fn unknown_fields_are_refused() {
    let typo = r#"{"integration": "demo", "sandboxed_onyl": "typo"}"#;
    let error = serde_json::from_str::<Scenario>(typo).unwrap_err();
    assert!(error.to_string().contains("sandboxed_onyl"), "{error}");
    let step = r#"{"integration": "demo", "steps": [{"expect_group": {"state": "running", "restart": 0}}]}"#;
    let error = serde_json::from_str::<Scenario>(step).unwrap_err();
    assert!(error.to_string().contains("restart"), "{error}");
}

#[test]
fn defaults_expect_a_loaded_entry_and_compare_states() {
    let scenario: Scenario = serde_json::from_str(r#"{"integration": "demo"}"#).unwrap();
    assert_eq!(scenario.setup.state, "loaded");
    assert!(scenario.compare_states);
    assert!(!scenario.is_sandboxed_only());
    assert!(scenario.sandbox.watchdog.is_none());
}

#[test]
fn only_steps_about_the_sandbox_are_sandboxed_only() {
    let steps: Vec<Step> = serde_json::from_str(
        r#"[{"expect_group": {"state": "failed"}}, {"wrong_pin": {}}, {"probe_main": {}},
            {"expect_entry": {"state": "loaded"}}, {"unload": {}}]"#,
    )
    .unwrap();
    let sandboxed: Vec<bool> = steps.iter().map(Step::is_sandboxed_only).collect();
    assert_eq!(sandboxed, [true, true, false, false, false]);
}

#[test]
fn a_call_expectation_keeps_the_outcome_when_met_and_says_why_not() {
    let success = CallExpectation {
        ok: Some(true),
        contains: vec!["\"a\":1".into()],
    };
    assert_eq!(success.judge("ok: {\"a\":1}".into()), "ok: {\"a\":1}");
    let failed = success.judge("error: boom".into());
    assert!(
        failed.starts_with("expectation failed: expected success"),
        "{failed}"
    );
    let missing = success.judge("ok: {\"a\":2}".into());
    assert!(missing.starts_with("expectation failed:"), "{missing}");
    let error = CallExpectation {
        ok: Some(false),
        contains: vec!["boom".into()],
    };
    assert_eq!(error.judge("error: boom".into()), "error: boom");
    assert!(error.judge("ok".into()).starts_with("expectation failed"));
    assert_eq!(
        CallExpectation::default().judge("error: x".into()),
        "error: x"
    );
}

#[test]
fn a_wrong_pin_differs_from_the_right_one_in_one_digit() {
    let right = "0123456789abcdef".repeat(4);
    let wrong_pin = wrong(&right);
    assert_ne!(wrong_pin, right);
    assert_eq!(wrong_pin.len(), right.len());
    assert_eq!(wrong_pin[1..], right[1..]);
    assert_ne!(wrong(&wrong_pin), wrong_pin);
}

#[test]
fn files_are_found_by_name_anywhere_under_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    std::fs::write(dir.path().join("a/b/escape_here"), "x").unwrap();
    std::fs::write(dir.path().join("a/other"), "x").unwrap();
    let found = files_named(dir.path(), "escape");
    assert_eq!(found, vec![dir.path().join("a/b/escape_here")]);
    assert!(files_named(dir.path(), "nothing").is_empty());
}
