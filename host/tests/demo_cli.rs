//! The `sandbox-host demo` command a newcomer runs first: it must succeed and report what it
//! mirrored, the service call, the crash recovery and the double-crash recovery.

#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;

#[test]
fn demo_json_reports_mirrored_entities_a_service_call_and_a_recovery() {
    let output = Command::new(env!("CARGO_BIN_EXE_sandbox-host"))
        .args(["demo", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["group"], "built-in");
    let proxyable = report["proxyable_domains"].as_u64().unwrap();
    assert!(proxyable >= 31);
    assert_eq!(
        report["entities_by_domain"].as_object().unwrap().len() as u64,
        proxyable
    );
    assert_ne!(
        report["service_call"]["before"],
        report["service_call"]["after"]
    );
    assert!(report["crash"]["proxies"].as_u64().unwrap() > 0);
    assert_ne!(report["crash"]["new_pid"], report["pid"]);
    // The double crash: the respawned sandbox killed at its ready, and a third one recovers.
    let double = &report["double_crash"];
    assert_eq!(double["entry_state"], "loaded");
    assert!(double["recovered_ms"].as_f64().unwrap() > 0.0);
    assert!(
        !double["killed_pids"]
            .as_array()
            .unwrap()
            .contains(&double["new_pid"])
    );
    assert_eq!(report["stopped_gracefully"], true);
}

#[test]
fn bad_arguments_exit_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_sandbox-host"))
        .arg("no-such-command")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}
