//! The real `sandbox-runtime` binary over stdio, with the demo integration: handshake, config
//! flow, entry setup mirroring entities in every proxyable domain, a service call, shutdown.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeSet, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sandbox_proto::{ChannelBuilder, ChannelConfig, Transport, json, wire};
use serde_json::json;

const HANG_GUARD: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Main {
    store: Mutex<HashMap<String, bytes::Bytes>>,
    entities: Mutex<Vec<wire::EntityDescription>>,
    states: Mutex<HashMap<String, String>>,
    services: Mutex<Vec<String>>,
}

#[tokio::test]
async fn the_binary_runs_the_demo_over_stdio() {
    let config_dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox-runtime"))
        .args(["--name", "built-in", "--url", "stdio://", "--config-dir"])
        .arg(config_dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let transport = Transport::new(
        child.stdout.take().unwrap(),
        child.stdin.take().unwrap(),
        "child",
    );
    let main = Arc::new(Main::default());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let ready_tx = Arc::new(Mutex::new(Some(ready_tx)));
    let m = main.clone();
    let builder = ChannelBuilder::new(ChannelConfig::named("main"))
        .on_call::<wire::Ready, _, _>(move |ready, _| {
            let ready_tx = ready_tx.clone();
            async move {
                if let Some(tx) = ready_tx.lock().unwrap().take() {
                    let _ = tx.send(ready.clone());
                }
                Ok(wire::ReadyAck {
                    protocol_version: ready.protocol_version,
                    features: ready.features,
                })
            }
        })
        .on_call::<wire::StoreLoad, _, _>({
            let m = m.clone();
            move |load, _| {
                let m = m.clone();
                async move {
                    Ok(wire::StoreLoadResult {
                        envelope_json: m.store.lock().unwrap().get(&load.key).cloned(),
                    })
                }
            }
        })
        .on_call::<wire::StoreSave, _, _>({
            let m = m.clone();
            move |save, _| {
                let m = m.clone();
                async move {
                    m.store.lock().unwrap().insert(save.key, save.envelope_json);
                    Ok(wire::StoreSaveResult {})
                }
            }
        })
        .on_call::<wire::RegisterEntity, _, _>({
            let m = m.clone();
            move |register, _| {
                let m = m.clone();
                async move {
                    let description = register.description.unwrap();
                    let entity_id = description.entity_id.clone();
                    m.states
                        .lock()
                        .unwrap()
                        .insert(entity_id.clone(), register.state.unwrap_or_default().state);
                    m.entities.lock().unwrap().push(description);
                    Ok(wire::RegisterEntityResult { entity_id })
                }
            }
        })
        .on_call::<wire::UnregisterEntity, _, _>(|_, _| async {
            Ok(wire::UnregisterEntityResult {})
        })
        .on_call::<wire::RegisterService, _, _>({
            let m = m.clone();
            move |register, _| {
                let m = m.clone();
                async move {
                    m.services
                        .lock()
                        .unwrap()
                        .push(format!("{}.{}", register.domain, register.service));
                    Ok(wire::RegisterServiceResult {})
                }
            }
        })
        .on_call::<wire::UnregisterService, _, _>(|_, _| async {
            Ok(wire::UnregisterServiceResult {})
        })
        .on_push::<wire::FireEvent, _, _>(|_, _| async {})
        .on_push_inline::<wire::StateChanged, _>({
            let m = m.clone();
            move |change| {
                m.states
                    .lock()
                    .unwrap()
                    .insert(change.entity_id, change.state);
            }
        });
    let channel = builder.start(transport);
    let ready = tokio::time::timeout(HANG_GUARD, ready_rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ready.group, "built-in");
    assert!(
        ready
            .integrations
            .iter()
            .any(|integration| integration.domain == "demo")
    );

    // The config flow: a menu first, then the defaults.
    let init = wire::FlowInit {
        kind: wire::FlowKind::Config as i32,
        handler: "demo".into(),
        source: "user".into(),
        ..Default::default()
    };
    let menu = channel.call_timeout(&init, HANG_GUARD).await.unwrap();
    assert_eq!(menu.r#type, wire::FlowResultType::Menu as i32, "{menu:?}");
    let choice = menu
        .menu_options
        .iter()
        .find(|option| option.id == "defaults")
        .expect("a defaults option")
        .id
        .clone();
    let step = wire::FlowStep {
        flow_id: menu.flow_id.clone(),
        user_input_json: json::to_bytes(&json!({"next_step_id": choice})),
    };
    let created = channel.call_timeout(&step, HANG_GUARD).await.unwrap();
    assert_eq!(
        created.r#type,
        wire::FlowResultType::CreateEntry as i32,
        "{created:?}"
    );
    assert_eq!(created.version, 2);

    // The entry, as main would store and send it.
    let entry = wire::ConfigEntry {
        entry_id: "demo-entry".into(),
        domain: "demo".into(),
        title: created.title.clone(),
        data_json: created.data_json.clone(),
        options_json: created.options_json.clone(),
        source: "user".into(),
        unique_id: created.unique_id.clone(),
        version: created.version,
        minor_version: created.minor_version,
        disabled_by: None,
    };
    let setup = channel
        .call_timeout(
            &wire::EntrySetup {
                entry: Some(entry),
                ..Default::default()
            },
            HANG_GUARD,
        )
        .await
        .unwrap();
    assert_eq!(
        setup.outcome,
        wire::SetupOutcome::Loaded as i32,
        "{setup:?}"
    );
    let proxyable: BTreeSet<String> = homecore::catalog::catalog()
        .domains()
        .filter(|spec| spec.proxyable)
        .map(|spec| spec.domain.clone())
        .collect();
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            let domains: BTreeSet<String> = main
                .entities
                .lock()
                .unwrap()
                .iter()
                .map(|e| e.domain.clone())
                .collect();
            if domains.is_superset(&proxyable) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("an entity in every proxyable domain is mirrored");
    assert!(proxyable.len() >= 31);

    // A service call on one light changes its state on main.
    let light = main
        .entities
        .lock()
        .unwrap()
        .iter()
        .find(|e| e.domain == "light")
        .unwrap()
        .entity_id
        .clone();
    let before = main.states.lock().unwrap()[&light].clone();
    let service = if before == "on" {
        "turn_off"
    } else {
        "turn_on"
    };
    let call = wire::CallService {
        domain: "light".into(),
        service: service.into(),
        entity_ids: vec![light.clone()],
        ..Default::default()
    };
    channel.call_timeout(&call, HANG_GUARD).await.unwrap();
    let wanted = if before == "on" { "off" } else { "on" };
    tokio::time::timeout(HANG_GUARD, async {
        while main.states.lock().unwrap()[&light] != wanted {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the light's new state reaches main");

    // Shutdown: restore state in the reply, then a clean exit.
    let result = channel
        .call_timeout(
            &wire::Shutdown {
                reason: "test".into(),
            },
            HANG_GUARD,
        )
        .await
        .unwrap();
    let restore = json::from_bytes(&result.restore_state_json).unwrap();
    assert!(
        restore.as_array().is_some_and(|states| !states.is_empty()),
        "{restore}"
    );
    let status = tokio::time::timeout(HANG_GUARD, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        main.store
            .lock()
            .unwrap()
            .contains_key("core.restore_state"),
        "final write through main"
    );
    channel.close().await;
}

#[tokio::test]
async fn bad_arguments_exit_2_and_an_unreachable_main_exits_3() {
    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox-runtime"))
        .args(["--name", "g", "--url", "tcp://127.0.0.1:1"])
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not supported"));
    let missing = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox-runtime"))
        .output()
        .await
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let unreachable = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox-runtime"))
        .args(["--name", "g", "--url", "unix:///nonexistent-dir/ch.sock"])
        .output()
        .await
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(3));
}

#[tokio::test]
async fn version_prints_the_version_and_exits_0() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox-runtime"))
        .arg("--version")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("sandbox-runtime {}", env!("CARGO_PKG_VERSION"))
    );
}
