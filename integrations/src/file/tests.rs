//! Tests of the file integration: path checks, the last line of a file, the sensor polled with
//! paused time, and the notifier appending lines.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use homecore::config_entries::SOURCE_USER;
use homecore::{
    Core, CoreConfig, FlowContext, FlowError, FlowStep, MemoryStoreBackend, ServiceRequest,
    ServiceTarget,
};

use super::entity::line_state;
use super::*;

fn map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
    }
}

#[test]
fn paths_must_be_absolute_files_and_a_notifier_needs_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let inside = dir.path().join("log.txt").display().to_string();
    assert_eq!(check_path(" ", false), Err(PathError::Empty));
    assert_eq!(
        check_path("logs/x.txt", false),
        Err(PathError::NotAbsolute("logs/x.txt".to_owned()))
    );
    assert_eq!(check_path("/a\0b", false), Err(PathError::Invalid));
    assert!(matches!(
        check_path(&dir.path().display().to_string(), false),
        Err(PathError::IsDirectory(_))
    ));
    let orphan = dir.path().join("missing/log.txt").display().to_string();
    assert!(check_path(&orphan, false).is_ok());
    assert!(matches!(
        check_path(&orphan, true),
        Err(PathError::NoParent(_))
    ));
    assert_eq!(
        check_path(&inside, true).unwrap(),
        dir.path().join("log.txt")
    );
}

#[test]
fn the_last_line_skips_trailing_blank_lines_and_reads_only_the_tail() {
    assert_eq!(last_line_of("a\nb\n\n  \n"), Some("b".to_owned()));
    assert_eq!(last_line_of(" only \r\n"), Some("only".to_owned()));
    assert_eq!(last_line_of("\n\n"), None);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.log");
    let mut text = "x".repeat(usize::try_from(MAX_TAIL_BYTES).unwrap() * 2);
    text.push_str("\nlast 7\n");
    std::fs::write(&path, text).unwrap();
    assert_eq!(last_line(&path).unwrap(), Some("last 7".to_owned()));
    std::fs::write(&path, "").unwrap();
    assert_eq!(last_line(&path).unwrap(), None);
    assert_eq!(
        last_line(&dir.path().join("none")).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
}

#[test]
fn line_states_follow_the_numeric_option_and_the_state_length_limit() {
    assert_eq!(
        line_state(Some("21.5".into()), true),
        Ok(Some("21.5".into()))
    );
    assert_eq!(line_state(Some("warm".into()), true), Ok(None));
    assert_eq!(
        line_state(Some("warm".into()), false),
        Ok(Some("warm".into()))
    );
    assert_eq!(line_state(None, false), Ok(None));
    assert!(line_state(Some("y".repeat(300)), false).is_err());
}

#[test]
fn messages_become_one_line_each() {
    assert_eq!(message_line("hi", None), "hi\n");
    assert_eq!(message_line("a\nb\r\nc", None), "a\\nb\\nc\n");
    assert_eq!(message_line("hi", Some("T")), "T hi\n");
}

async fn core() -> Core {
    let core = Core::builder(CoreConfig::new("unused"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .integrations(vec![
            Arc::new(FileIntegration::new()) as Arc<dyn Integration>
        ])
        .build()
        .unwrap();
    core.start().await.unwrap();
    core
}

async fn submit(core: &Core, platform: &str, input: Value) -> Result<FlowStep, FlowError> {
    let flows = core.config_entries().flow();
    let menu = flows
        .init(DOMAIN, FlowContext::new(SOURCE_USER), None)
        .await?;
    let form = flows
        .configure(&menu.flow_id, Some(map(json!({"next_step_id": platform}))))
        .await?;
    Ok(flows.configure(&form.flow_id, Some(map(input))).await?.step)
}

async fn create(core: &Core, platform: &str, input: Value) -> String {
    let step = submit(core, platform, input).await.unwrap();
    let FlowStep::CreateEntry {
        entry_id: Some(entry_id),
        ..
    } = step
    else {
        panic!("expected an entry, got {step:?}");
    };
    core.entity_registry()
        .entity_id_for(platform, DOMAIN, &entry_id)
        .unwrap()
}

fn state_of(core: &Core, entity_id: &str) -> String {
    core.states().get(entity_id).unwrap().state.clone()
}

#[tokio::test(start_paused = true)]
async fn the_flow_refuses_bad_paths_and_a_second_entry_for_the_same_file() {
    let core = core().await;
    let dir = tempfile::tempdir().unwrap();
    let step = submit(
        &core,
        "sensor",
        json!({"name": "Log", "file_path": "log.txt"}),
    )
    .await
    .unwrap();
    let FlowStep::Form { errors, .. } = step else {
        panic!("expected the form again, got {step:?}");
    };
    assert_eq!(errors["file_path"], "path_not_absolute");
    let orphan = dir.path().join("missing/out.txt").display().to_string();
    let step = submit(&core, "notify", json!({"name": "Out", "file_path": orphan}))
        .await
        .unwrap();
    let FlowStep::Form { errors, .. } = step else {
        panic!("expected the form again, got {step:?}");
    };
    assert_eq!(errors["file_path"], "parent_missing");
    let path = dir.path().join("out.txt").display().to_string();
    create(&core, "notify", json!({"name": "Out", "file_path": path})).await;
    let again = submit(&core, "notify", json!({"name": "Out 2", "file_path": path}))
        .await
        .unwrap();
    assert_eq!(again, FlowStep::abort("already_configured"));
    // The same file as a sensor is another entry.
    create(
        &core,
        "sensor",
        json!({"name": "Out reader", "file_path": path}),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_sensor_follows_the_last_line_and_is_unavailable_while_the_file_is_missing() {
    let core = core().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("temp.log");
    let entity_id = create(
        &core,
        "sensor",
        json!({"name": "Temp", "file_path": path.display().to_string(), "numeric": true, "unit_of_measurement": "°C", "scan_interval": 5}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(state_of(&core, &entity_id), "unavailable");

    std::fs::write(&path, "20.0\n21.5\n").unwrap();
    tokio::time::sleep(Duration::from_millis(4998)).await;
    assert_eq!(state_of(&core, &entity_id), "unavailable");
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(state_of(&core, &entity_id), "21.5");
    let attributes = core.states().get(&entity_id).unwrap().attributes.clone();
    assert_eq!(attributes["unit_of_measurement"], json!("°C"));
    assert_eq!(attributes["file_path"], json!(path.display().to_string()));

    append_line(&path, "not a number\n").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(state_of(&core, &entity_id), "unknown");

    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(state_of(&core, &entity_id), "unavailable");
}

async fn send(core: &Core, entity_id: &str, message: &str) -> Result<(), homecore::ServiceError> {
    core.services()
        .call(
            ServiceRequest::new("notify", "send_message")
                .with_data(map(json!({"message": message})))
                .with_target(ServiceTarget::entities([entity_id])),
        )
        .await
        .map(|_| ())
}

#[tokio::test]
async fn the_notifier_creates_the_file_and_appends_one_line_per_message() {
    let core = core().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    let entity_id = create(
        &core,
        "notify",
        json!({"name": "Notes", "file_path": path.display().to_string()}),
    )
    .await;
    assert_eq!(state_of(&core, &entity_id), "unknown");
    send(&core, &entity_id, "first").await.unwrap();
    send(&core, &entity_id, "two\nlines").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "first\ntwo\\nlines\n"
    );
    let sent = state_of(&core, &entity_id);
    assert!(
        chrono::DateTime::parse_from_rfc3339(&sent).is_ok(),
        "{sent}"
    );

    let stamped_path = dir.path().join("stamped.txt");
    let stamped = create(
        &core,
        "notify",
        json!({"name": "Stamped", "file_path": stamped_path.display().to_string(), "timestamp": true}),
    )
    .await;
    send(&core, &stamped, "hello").await.unwrap();
    let text = std::fs::read_to_string(&stamped_path).unwrap();
    let (stamp, message) = text.trim_end().split_once(' ').unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
        "{text}"
    );
    assert_eq!(message, "hello");

    // The folder disappears: the call fails and says where it could not write.
    drop(dir);
    let err = send(&core, &entity_id, "lost").await.unwrap_err();
    assert!(
        err.to_string().contains("cannot write the message to"),
        "{err}"
    );
}
