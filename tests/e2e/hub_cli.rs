//! The hub as an operator runs it, over the real `sandbox-host` program: `run` on a config
//! dir, `add` the demo integration from the command line, `status` through a crash, a spent
//! restart budget and `start`, a SIGTERM that stops every group and leaves no process behind,
//! and a second run that brings back the same entities.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sandbox_tests::hub::{HANG_GUARD, RunningHub as Hub, text};
use serde_json::Value;

fn program() -> PathBuf {
    sandbox_tests::binary(sandbox_tests::SANDBOX_HOST)
}

fn add_demo(hub: &Hub) -> String {
    let said = hub.add_demo();
    assert!(said.starts_with("created demo entry"), "{said}");
    said
}

fn alive(pid: u64) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Every entity id in main's entity registry file.
fn registered_entities(dir: &Path) -> BTreeSet<(String, String)> {
    let registry: Value =
        serde_json::from_slice(&std::fs::read(dir.join(".storage/core.entity_registry")).unwrap())
            .unwrap();
    registry["data"]["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entity| {
            (
                entity["entity_id"].as_str().unwrap().to_owned(),
                entity["unique_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn status_follows_a_crash_a_spent_budget_and_a_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let hub = Hub::start_in(dir.path(), log.path());
    add_demo(&hub);
    hub.wait_for("every demo entity", |hub| {
        let group = hub.group("built-in");
        group["state"] == "running" && group["entities"].as_u64() == Some(37)
    });
    let group = hub.group("built-in");
    assert_eq!(group["entries"].as_array().unwrap().len(), 1);
    assert!(group["rss_bytes"].as_u64().unwrap() > 0);
    assert!(
        group["landlock_abi"].is_u64(),
        "which confinement applied: {group}"
    );
    assert_eq!(group["confinement"], "default", "{group}");
    assert_eq!(group["seccomp"], true, "{group}");
    // The same figures as Prometheus text, with the traffic per message type.
    let metrics = hub.cli(&["metrics"]);
    assert_eq!(metrics.status.code(), Some(0), "{}", text(&metrics));
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    for line in [
        "sandbox_group_state{group=\"built-in\",state=\"running\"} 1",
        "sandbox_group_entities{group=\"built-in\"} 37",
        "sandbox_messages_total{group=\"built-in\",type=\"register_entity\",direction=\"received\"} 37",
        "sandbox_messages_total{group=\"built-in\",type=\"entry_setup\",direction=\"sent\"} 1",
    ] {
        assert!(
            metrics.lines().any(|written| written == line),
            "{line} in\n{metrics}"
        );
    }
    assert!(
        group["channel"]["call_latency"]["count"].as_u64().unwrap() >= 1,
        "{group}"
    );

    // A crash: the group is respawned, and status says how the last one ended.
    let first = group["pid"].as_u64().unwrap();
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    hub.wait_for("the respawn", |hub| {
        let group = hub.group("built-in");
        group["state"] == "running" && group["pid"].as_u64() != Some(first)
    });
    let group = hub.group("built-in");
    assert_eq!(group["restarts"], 1);
    assert_eq!(group["last_exit_cause"], "crashed");
    assert!(
        group["last_exit"].as_str().unwrap().contains("SIGKILL"),
        "{group}"
    );
    let shown = hub.cli(&["status"]);
    assert_eq!(shown.status.code(), Some(0));
    assert!(
        text(&shown).contains("last exit: crashed: killed by SIGKILL"),
        "{}",
        text(&shown)
    );
    assert!(
        text(&shown).contains("confinement: default (seccomp, "),
        "{}",
        text(&shown)
    );

    // Spend the budget (three starts in its window): the group fails, status exits 1 and says
    // how to start it again.
    while hub.group("built-in")["state"] != "failed" {
        let group = hub.group("built-in");
        if let Some(pid) = group["pid"]
            .as_u64()
            .filter(|_| group["state"] == "running")
        {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            hub.wait_for("the next start or the failure", |hub| {
                let now = hub.group("built-in");
                now["pid"].as_u64() != Some(pid) || now["state"] == "failed"
            });
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let (status, code) = hub.status();
    assert_eq!(code, Some(1), "{status}");
    let failed = hub.cli(&["status"]);
    assert_eq!(failed.status.code(), Some(1));
    let said = text(&failed);
    assert!(
        said.contains("gave up after 3 starts in 1 min 0 s"),
        "{said}"
    );
    assert!(
        said.contains("start it again: sandbox-host start built-in --config"),
        "{said}"
    );

    // `start` clears the failure and the budget, and the entry's entities come back.
    let started = hub.cli(&["start", "built-in"]);
    assert_eq!(started.status.code(), Some(0), "{}", text(&started));
    hub.wait_for("the group and its entities back", |hub| {
        let group = hub.group("built-in");
        group["state"] == "running" && group["entities"].as_u64() == Some(37)
    });
    assert_eq!(hub.status().1, Some(0));
    let entries = hub.cli(&["entries"]);
    assert!(
        text(&entries).contains("demo  \"Demo\"  loaded  built-in"),
        "{}",
        text(&entries)
    );

    hub.signal(Signal::SIGTERM);
    assert!(hub.wait().success());
}

#[test]
fn sigterm_stops_every_group_and_the_next_run_has_the_same_entities() {
    let dir = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let hub = Hub::start_in(dir.path(), log.path());
    add_demo(&hub);
    hub.wait_for("every demo entity", |hub| {
        hub.group("built-in")["entities"].as_u64() == Some(37)
    });
    let sandbox = hub.group("built-in")["pid"].as_u64().unwrap();

    // Requests in flight while the hub stops: each gets an answer or a clean refusal.
    let askers: Vec<_> = (0..4)
        .map(|_| {
            let dir = dir.path().to_owned();
            std::thread::spawn(move || {
                Command::new(program())
                    .args(["status", "--json", "--config"])
                    .arg(dir)
                    .output()
                    .unwrap()
                    .status
                    .code()
            })
        })
        .collect();
    hub.signal(Signal::SIGTERM);
    let stopped = hub.wait();
    assert!(stopped.success(), "{stopped:?}");
    for asker in askers {
        let code = asker.join().unwrap();
        assert!(matches!(code, Some(0) | Some(3)), "{code:?}");
    }
    assert!(!alive(sandbox), "the sandbox outlived the hub");
    assert!(
        !dir.path().join("control.sock").exists(),
        "the socket file is removed"
    );
    let log_text = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        log_text.contains("group stopped group=\"built-in\" graceful=true"),
        "{log_text}"
    );
    let before = registered_entities(dir.path());
    assert_eq!(before.len(), 37);
    assert!(
        dir.path()
            .join(".storage/sandbox/built-in/core.restore_state")
            .exists(),
        "the sandbox saved its restore state through main"
    );

    // A second run sets the stored entry up again: the same entities under the same ids.
    let log = tempfile::NamedTempFile::new().unwrap();
    let hub = Hub::start_in(dir.path(), log.path());
    hub.wait_for("every demo entity again", |hub| {
        hub.group("built-in")["entities"].as_u64() == Some(37)
    });
    hub.signal(Signal::SIGTERM);
    assert!(hub.wait().success());
    assert_eq!(registered_entities(dir.path()), before);
}

#[test]
fn a_command_without_a_hub_names_the_socket_it_tried_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(program())
        .args(["status", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let said = text(&output);
    assert!(said.contains("the hub is not reachable on"), "{said}");
    assert!(said.contains("control.sock"), "{said}");
}

#[test]
fn a_second_hub_on_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let hub = Hub::start_in(dir.path(), log.path());
    let second = Command::new(program())
        .args(["run", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        text(&second).contains("another hub is running"),
        "{}",
        text(&second)
    );
    assert_eq!(
        hub.cli(&["status"]).status.code(),
        Some(0),
        "the first one still answers"
    );
    hub.signal(Signal::SIGINT);
    assert!(hub.wait().success());
}

#[test]
fn a_refused_configuration_starts_nothing_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sandbox-host.toml");
    std::fs::write(&file, "[defaults]\nready_timeout = \"0s\"\n").unwrap();
    let output = Command::new(program())
        .args(["run", "--config"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("defaults.ready_timeout"),
        "{}",
        text(&output)
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(left, ["sandbox-host.toml"], "nothing else under the dir");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "[defaults]\nready_timeout = \"0s\"\n"
    );
}

#[test]
fn a_mistyped_config_dir_is_refused_and_not_created() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("typo");
    let output = Command::new(program())
        .args(["run", "--config"])
        .arg(&missing)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(!missing.exists());
}

#[test]
fn stop_start_restart_and_reload_steer_a_group_and_an_entry() {
    let dir = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let hub = Hub::start_in(dir.path(), log.path());
    let created = add_demo(&hub);
    let entry_id = created
        .trim_end()
        .rsplit('(')
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_owned();
    hub.wait_for("every demo entity", |hub| {
        hub.group("built-in")["entities"].as_u64() == Some(37)
    });
    let first = hub.group("built-in")["pid"].as_u64().unwrap();

    let stopped = hub.cli(&["stop", "built-in"]);
    assert_eq!(stopped.status.code(), Some(0), "{}", text(&stopped));
    assert_eq!(
        String::from_utf8_lossy(&stopped.stdout),
        "built-in: stopped\n"
    );
    let group = hub.group("built-in");
    assert_eq!(group["pid"], Value::Null);
    assert_eq!(group["last_exit_cause"], "stopped", "{group}");
    assert!(!alive(first), "the stopped process is gone");

    assert_eq!(hub.cli(&["start", "built-in"]).status.code(), Some(0));
    hub.wait_for("the group and its entities back", |hub| {
        let group = hub.group("built-in");
        group["state"] == "running" && group["entities"].as_u64() == Some(37)
    });
    assert_eq!(
        hub.group("built-in")["total_starts"],
        2,
        "starts are counted across stops"
    );

    let before = hub.group("built-in")["pid"].as_u64().unwrap();
    assert_eq!(hub.cli(&["restart", "built-in"]).status.code(), Some(0));
    hub.wait_for("a new process", |hub| {
        let group = hub.group("built-in");
        group["state"] == "running" && group["pid"].as_u64().is_some_and(|pid| pid != before)
    });
    assert_eq!(
        hub.group("built-in")["restarts"],
        0,
        "a restart by hand is no crash"
    );

    let reloaded = hub.cli(&["reload", &entry_id]);
    assert_eq!(reloaded.status.code(), Some(0), "{}", text(&reloaded));
    assert!(
        text(&reloaded).contains("demo): loaded"),
        "{}",
        text(&reloaded)
    );

    let unknown = hub.cli(&["stop", "no-such-group"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown).contains("no group \"no-such-group\" (groups: built-in)"),
        "{}",
        text(&unknown)
    );
    let unknown_entry = hub.cli(&["reload", "no-such-entry"]);
    assert_eq!(unknown_entry.status.code(), Some(1));
    assert!(
        text(&unknown_entry).contains("no config entry"),
        "{}",
        text(&unknown_entry)
    );

    hub.signal(Signal::SIGTERM);
    assert!(hub.wait().success());
}

#[test]
fn a_second_sigint_stops_at_once_and_takes_the_sandboxes_along() {
    let dir = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let hub = Hub::start_in(dir.path(), log.path());
    add_demo(&hub);
    hub.wait_for("every demo entity", |hub| {
        hub.group("built-in")["entities"].as_u64() == Some(37)
    });
    let sandbox = hub.group("built-in")["pid"].as_u64().unwrap();
    // A frozen sandbox answers no shutdown: the clean stop would wait out its grace.
    kill(Pid::from_raw(sandbox as i32), Signal::SIGSTOP).unwrap();
    hub.signal(Signal::SIGINT);
    hub.wait_for("the stop to begin", |hub| {
        hub.log().contains("hub stopping")
    });
    let asked = Instant::now();
    hub.signal(Signal::SIGINT);
    let stopped = hub.wait();
    assert_eq!(stopped.code(), Some(130), "{stopped:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "a forced stop does not wait out the grace: {:?}",
        asked.elapsed()
    );
    let started = Instant::now();
    while alive(sandbox) {
        assert!(
            started.elapsed() < HANG_GUARD,
            "the sandbox outlived a forced stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
