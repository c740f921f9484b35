//! The `sandbox-host demo` command a newcomer runs first: it must succeed and report what it
//! mirrored, the service call, the crash recovery and the double-crash recovery.

#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;

#[test]
fn demo_json_reports_mirrored_entities_a_service_call_and_a_recovery() {
    let output = Command::new(sandbox_tests::binary(sandbox_tests::SANDBOX_HOST))
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
    let output = Command::new(sandbox_tests::binary(sandbox_tests::SANDBOX_HOST))
        .arg("no-such-command")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn a_reader_that_goes_away_ends_the_output_not_the_demo() {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(sandbox_tests::binary(sandbox_tests::SANDBOX_HOST))
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `sandbox-host demo | head -c 10`: read ten bytes, then close the pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0_u8; 10];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn version_prints_the_version_and_exits_0() {
    let output = Command::new(sandbox_tests::binary(sandbox_tests::SANDBOX_HOST))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("sandbox-host {}", env!("CARGO_PKG_VERSION"))
    );
}
