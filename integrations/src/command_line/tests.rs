//! Tests of the command_line integration: the flow, the configuration checks, polling with
//! paused time through a scripted runner, switch services, unload, and real subprocesses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use homecore::config_entries::SOURCE_USER;
use homecore::{
    ConfigEntryState, Core, CoreConfig, FlowContext, FlowError, FlowStep, MemoryStoreBackend,
    ServiceError, ServiceRequest, ServiceTarget,
};

use super::entity::{binary_state, sensor_state};
use super::*;

/// Generous bound on waits for real subprocesses and the core's own tasks.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// What the scripted runner answers for one command.
#[derive(Debug, Clone)]
enum Reply {
    /// The command ran and exited with this code and output.
    Exit(i32, &'static str),
    /// The command timed out.
    Timeout,
}

/// A runner answering from a script, recording every command it was asked to run.
#[derive(Debug, Default)]
struct ScriptedRunner {
    /// Answers by command; an unscripted command exits 127.
    replies: Mutex<HashMap<String, Reply>>,
    /// Commands run, in order.
    ran: Mutex<Vec<String>>,
}

impl ScriptedRunner {
    fn reply(&self, command: &str, reply: Reply) {
        self.replies.lock().insert(command.to_owned(), reply);
    }

    fn runs_of(&self, command: &str) -> usize {
        self.ran.lock().iter().filter(|ran| *ran == command).count()
    }
}

impl CommandRunner for ScriptedRunner {
    fn run(
        &self,
        command: &str,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<CommandOutput, CommandError>> {
        self.ran.lock().push(command.to_owned());
        let reply = self
            .replies
            .lock()
            .get(command)
            .cloned()
            .unwrap_or(Reply::Exit(127, ""));
        let command = command.to_owned();
        Box::pin(async move {
            match reply {
                Reply::Exit(code, stdout) => Ok(CommandOutput {
                    exit_code: Some(code),
                    stdout: stdout.to_owned(),
                    truncated: false,
                    stderr: if code == 0 {
                        String::new()
                    } else {
                        "boom".to_owned()
                    },
                }),
                Reply::Timeout => Err(CommandError::Timeout { command, timeout }),
            }
        })
    }
}

fn map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
    }
}

async fn core_with(runner: Arc<dyn CommandRunner>) -> Core {
    let core = Core::builder(CoreConfig::new("unused"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .integrations(vec![
            Arc::new(CommandLineIntegration::with_runner(runner)) as Arc<dyn homecore::Integration>
        ])
        .build()
        .unwrap();
    core.start().await.unwrap();
    core
}

/// Runs the flow for `platform` with `input`; returns the step the form answered with.
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

/// Creates an entry through the flow; returns its entity id.
async fn create(core: &Core, platform: &str, input: Value) -> String {
    let step = submit(core, platform, input).await.unwrap();
    let FlowStep::CreateEntry {
        entry_id: Some(entry_id),
        ..
    } = step
    else {
        panic!("expected an entry, got {step:?}");
    };
    assert_eq!(
        core.config_entries().entry(&entry_id).unwrap().state,
        ConfigEntryState::Loaded
    );
    core.entity_registry()
        .entity_id_for(platform, DOMAIN, &entry_id)
        .unwrap()
}

fn state_of(core: &Core, entity_id: &str) -> Option<String> {
    core.states()
        .get(entity_id)
        .map(|state| state.state.clone())
}

/// Lets the entity's tasks run (1 ms of paused time per turn) until `entity_id` is `expected`.
async fn settle(core: &Core, entity_id: &str, expected: &str) {
    for _ in 0..1000 {
        if state_of(core, entity_id).as_deref() == Some(expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!(
        "{entity_id} is {:?}, expected {expected}",
        state_of(core, entity_id)
    );
}

async fn call(core: &Core, service: &str, entity_id: &str) -> Result<(), ServiceError> {
    core.services()
        .call(
            ServiceRequest::new("switch", service)
                .with_target(ServiceTarget::entities([entity_id])),
        )
        .await
        .map(|_| ())
}

#[tokio::test(start_paused = true)]
async fn the_menu_offers_the_three_platforms_and_each_form_asks_for_its_commands() {
    let core = core_with(Arc::new(ScriptedRunner::default())).await;
    let flows = core.config_entries().flow();
    let menu = flows
        .init(DOMAIN, FlowContext::new(SOURCE_USER), None)
        .await
        .unwrap();
    let FlowStep::Menu { menu_options, .. } = &menu.step else {
        panic!("expected a menu, got {:?}", menu.step);
    };
    let offered: Vec<&str> = menu_options.iter().map(|o| o.step_id.as_str()).collect();
    assert_eq!(offered, ["sensor", "binary_sensor", "switch"]);
    for (platform, commands) in [
        ("sensor", vec!["command"]),
        (
            "binary_sensor",
            vec!["command", "payload_on", "payload_off"],
        ),
        ("switch", vec!["command_on", "command_off", "command_state"]),
    ] {
        let schema = config_flow::platform_schema(platform).unwrap();
        for field in commands
            .into_iter()
            .chain(["name", "command_timeout", "scan_interval"])
        {
            assert!(schema.field(field).is_some(), "{platform} has no {field}");
        }
        schema.check().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn bad_commands_and_timeouts_are_refused_with_a_specific_error() {
    let core = core_with(Arc::new(ScriptedRunner::default())).await;
    let step = submit(&core, "sensor", json!({"name": "Load", "command": "   "}))
        .await
        .unwrap();
    let FlowStep::Form { errors, .. } = step else {
        panic!("expected the form again, got {step:?}");
    };
    assert_eq!(
        errors.get("command").map(String::as_str),
        Some("command_empty")
    );

    let step = submit(
        &core,
        "binary_sensor",
        json!({"name": "Door", "command": "cat door", "payload_on": "1", "payload_off": "1"}),
    )
    .await
    .unwrap();
    let FlowStep::Form { errors, .. } = step else {
        panic!("expected the form again, got {step:?}");
    };
    assert_eq!(
        errors.get("payload_off").map(String::as_str),
        Some("payloads_equal")
    );

    let too_long = "x".repeat(MAX_COMMAND_LENGTH + 1);
    let step = submit(
        &core,
        "switch",
        json!({"name": "Fan", "command_on": too_long, "command_off": "off"}),
    )
    .await
    .unwrap();
    let FlowStep::Form { errors, .. } = step else {
        panic!("expected the form again, got {step:?}");
    };
    assert_eq!(
        errors.get("command_on").map(String::as_str),
        Some("command_too_long")
    );

    let err = submit(
        &core,
        "sensor",
        json!({"name": "Load", "command": "uptime", "command_timeout": MAX_COMMAND_TIMEOUT_SECS + 1}),
    )
    .await
    .unwrap_err();
    let FlowError::InvalidData(errors) = err else {
        panic!("expected invalid data, got {err:?}");
    };
    assert_eq!(errors.first().unwrap().path_strings(), ["command_timeout"]);
    assert!(core.config_entries().entries(Some(DOMAIN)).is_empty());
}

#[test]
fn entry_data_is_checked_before_setup() {
    let base = json!({"platform": "sensor", "name": "Load", "command": " uptime "});
    let config = EntryConfig::from_data(&map(base.clone())).unwrap();
    assert_eq!(
        config.platform,
        PlatformConfig::Sensor {
            command: "uptime".to_owned(),
            unit_of_measurement: None
        }
    );
    assert_eq!(
        config.command_timeout,
        Duration::from_secs(DEFAULT_COMMAND_TIMEOUT_SECS.unsigned_abs())
    );
    assert_eq!(
        config.scan_interval,
        Duration::from_secs(DEFAULT_SCAN_INTERVAL_SECS.unsigned_abs())
    );
    let mut nul = map(base.clone());
    nul.insert("command".to_owned(), json!("echo \0"));
    assert_eq!(
        EntryConfig::from_data(&nul),
        Err(ConfigError::Command {
            field: "command",
            problem: CommandProblem::NulByte
        })
    );
    let mut platform = map(base.clone());
    platform.insert("platform".to_owned(), json!("cover"));
    assert_eq!(
        EntryConfig::from_data(&platform),
        Err(ConfigError::UnknownPlatform("cover".to_owned()))
    );
    let mut zero = map(base);
    zero.insert("scan_interval".to_owned(), json!(0));
    assert!(matches!(
        EntryConfig::from_data(&zero),
        Err(ConfigError::OutOfRange {
            field: "scan_interval",
            ..
        })
    ));
}

#[test]
fn sensor_and_binary_sensor_states_follow_home_assistant() {
    assert_eq!(sensor_state(" 21.5\n", true), Ok(Some("21.5".to_owned())));
    assert_eq!(sensor_state("\n", false), Ok(None));
    assert!(
        sensor_state("warm", true)
            .unwrap_err()
            .contains("not a number")
    );
    assert!(sensor_state("NaN", true).is_err());
    assert_eq!(sensor_state("warm", false), Ok(Some("warm".to_owned())));
    assert!(
        sensor_state(&"x".repeat(256), false)
            .unwrap_err()
            .contains("256")
    );
    assert_eq!(binary_state("ON\n", "ON", "OFF"), Some("on".to_owned()));
    assert_eq!(binary_state("OFF", "ON", "OFF"), Some("off".to_owned()));
    assert_eq!(binary_state("maybe", "ON", "OFF"), None);
}

#[tokio::test(start_paused = true)]
async fn a_sensor_polls_at_start_and_every_scan_interval() {
    let runner = Arc::new(ScriptedRunner::default());
    runner.reply("read temp", Reply::Exit(0, "21.5\n"));
    let core = core_with(runner.clone()).await;
    let entity_id = create(
        &core,
        "sensor",
        json!({"name": "Temp", "command": "read temp", "unit_of_measurement": "°C", "scan_interval": 30}),
    )
    .await;
    assert_eq!(entity_id, "sensor.temp");
    settle(&core, &entity_id, "21.5").await;
    let state = core.states().get(&entity_id).unwrap();
    assert_eq!(state.attributes["unit_of_measurement"], json!("°C"));
    assert_eq!(runner.runs_of("read temp"), 1);

    runner.reply("read temp", Reply::Exit(0, "22"));
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(state_of(&core, &entity_id).as_deref(), Some("21.5"));
    assert_eq!(runner.runs_of("read temp"), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle(&core, &entity_id, "22").await;
    assert_eq!(runner.runs_of("read temp"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_or_timed_out_command_makes_the_sensor_unavailable_until_it_recovers() {
    let runner = Arc::new(ScriptedRunner::default());
    runner.reply("probe", Reply::Exit(0, "ok"));
    let core = core_with(runner.clone()).await;
    let entity_id = create(
        &core,
        "sensor",
        json!({"name": "Probe", "command": "probe"}),
    )
    .await;
    settle(&core, &entity_id, "ok").await;

    runner.reply("probe", Reply::Exit(2, "partial"));
    tokio::time::sleep(Duration::from_secs(60)).await;
    settle(&core, &entity_id, "unavailable").await;

    runner.reply("probe", Reply::Exit(0, "ok"));
    tokio::time::sleep(Duration::from_secs(60)).await;
    settle(&core, &entity_id, "ok").await;

    runner.reply("probe", Reply::Timeout);
    tokio::time::sleep(Duration::from_secs(60)).await;
    settle(&core, &entity_id, "unavailable").await;

    runner.reply("probe", Reply::Exit(0, "not a number"));
    let numeric = create(
        &core,
        "sensor",
        json!({"name": "Numeric", "command": "probe", "unit_of_measurement": "W"}),
    )
    .await;
    settle(&core, &numeric, "unavailable").await;
}

#[tokio::test(start_paused = true)]
async fn a_binary_sensor_maps_its_payloads_and_anything_else_to_unknown() {
    let runner = Arc::new(ScriptedRunner::default());
    runner.reply("door", Reply::Exit(0, "open\n"));
    let core = core_with(runner.clone()).await;
    let entity_id = create(
        &core,
        "binary_sensor",
        json!({"name": "Door", "command": "door", "payload_on": "open", "payload_off": "closed"}),
    )
    .await;
    settle(&core, &entity_id, "on").await;
    runner.reply("door", Reply::Exit(0, "closed"));
    tokio::time::sleep(Duration::from_secs(60)).await;
    settle(&core, &entity_id, "off").await;
    runner.reply("door", Reply::Exit(0, "ajar"));
    tokio::time::sleep(Duration::from_secs(60)).await;
    settle(&core, &entity_id, "unknown").await;
}

#[tokio::test(start_paused = true)]
async fn an_optimistic_switch_assumes_its_state_and_a_failing_command_errors_clearly() {
    let runner = Arc::new(ScriptedRunner::default());
    runner.reply("fan on", Reply::Exit(0, ""));
    runner.reply("fan off", Reply::Exit(1, ""));
    let core = core_with(runner.clone()).await;
    let entity_id = create(
        &core,
        "switch",
        json!({"name": "Fan", "command_on": "fan on", "command_off": "fan off"}),
    )
    .await;
    settle(&core, &entity_id, "off").await;
    assert_eq!(
        core.states().get(&entity_id).unwrap().attributes["assumed_state"],
        json!(true)
    );
    call(&core, "turn_on", &entity_id).await.unwrap();
    assert_eq!(state_of(&core, &entity_id).as_deref(), Some("on"));
    assert_eq!(runner.runs_of("fan on"), 1);

    let err = call(&core, "toggle", &entity_id).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("switch.fan could not turn off")
            && message.contains("exit code 1")
            && message.contains("boom"),
        "{message}"
    );
    assert_eq!(state_of(&core, &entity_id).as_deref(), Some("on"));
    // No state command: nothing is polled.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(runner.ran.lock().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_switch_with_a_state_command_reads_its_state_after_every_command() {
    let runner = Arc::new(ScriptedRunner::default());
    runner.reply("is on", Reply::Exit(1, ""));
    runner.reply("on", Reply::Exit(0, ""));
    runner.reply("off", Reply::Exit(0, ""));
    let core = core_with(runner.clone()).await;
    let entity_id = create(
        &core,
        "switch",
        json!({"name": "Pump", "command_on": "on", "command_off": "off", "command_state": "is on"}),
    )
    .await;
    settle(&core, &entity_id, "off").await;
    assert!(
        !core
            .states()
            .get(&entity_id)
            .unwrap()
            .attributes
            .contains_key("assumed_state")
    );
    runner.reply("is on", Reply::Exit(0, ""));
    call(&core, "toggle", &entity_id).await.unwrap();
    assert_eq!(state_of(&core, &entity_id).as_deref(), Some("on"));
    assert_eq!(runner.runs_of("on"), 1);
    assert_eq!(runner.runs_of("is on"), 2);

    runner.reply("is on", Reply::Timeout);
    tokio::time::sleep(Duration::from_secs(60)).await;
    settle(&core, &entity_id, "unavailable").await;
}

#[tokio::test(start_paused = true)]
async fn unloading_stops_polling_and_removes_the_entity() {
    let runner = Arc::new(ScriptedRunner::default());
    runner.reply("tick", Reply::Exit(0, "1"));
    let core = core_with(runner.clone()).await;
    let entity_id = create(&core, "sensor", json!({"name": "Tick", "command": "tick"})).await;
    settle(&core, &entity_id, "1").await;
    let entry_id = core.config_entries().entries(Some(DOMAIN))[0]
        .entry_id
        .clone();
    assert!(core.config_entries().unload(&entry_id).await.unwrap());
    assert!(
        core.states()
            .get(&entity_id)
            .is_none_or(|state| state.state == "unavailable")
    );
    let runs = runner.runs_of("tick");
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(runner.runs_of("tick"), runs);
}

#[tokio::test]
async fn a_real_command_prints_its_trimmed_output_and_reports_failures() {
    let output = tokio::time::timeout(
        HANG_GUARD,
        run_shell("echo ' 42 '; echo oops >&2", HANG_GUARD),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(output.success());
    assert_eq!(output.stdout, " 42 \n");
    assert_eq!(output.stderr, "oops\n");

    let failed = tokio::time::timeout(HANG_GUARD, run_shell("echo nope >&2; exit 3", HANG_GUARD))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.exit_code, Some(3));
    let err = failed.into_success("x").unwrap_err();
    assert_eq!(err.to_string(), "command \"x\" failed (exit code 3): nope");
}

#[tokio::test]
async fn real_output_is_capped_and_the_rest_drained() {
    let command = format!("head -c {} /dev/zero | tr '\\0' a", MAX_OUTPUT_BYTES * 4);
    let output = tokio::time::timeout(HANG_GUARD, run_shell(&command, HANG_GUARD))
        .await
        .unwrap()
        .unwrap();
    assert!(output.success());
    assert!(output.truncated);
    assert_eq!(output.stdout.len(), MAX_OUTPUT_BYTES);
}

/// Whether process `pid` is gone (or a zombie about to be reaped by someone else).
fn is_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn a_timed_out_command_is_killed_with_everything_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // The shell records its own pid and a background child's, then hangs.
    let command = format!("sleep 300 & echo $$ $! > '{}'; wait", pids.display());
    let err = tokio::time::timeout(HANG_GUARD, run_shell(&command, Duration::from_millis(500)))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, CommandError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("did not finish within 500ms"));
    let recorded = std::fs::read_to_string(&pids).unwrap();
    let recorded: Vec<&str> = recorded.split_whitespace().collect();
    assert_eq!(recorded.len(), 2);
    // The shell was reaped by us: no zombie of ours remains.
    assert!(!std::path::Path::new(&format!("/proc/{}", recorded[0])).exists());
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while !is_gone(recorded[1]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the background sleep survived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_missing_shell_program_is_a_failure_not_a_panic() {
    let output = tokio::time::timeout(
        HANG_GUARD,
        run_shell("/nonexistent/definitely-not-here", HANG_GUARD),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(output.exit_code, Some(127));
}

#[tokio::test]
async fn a_real_sensor_runs_its_command_in_a_subprocess() {
    let core = Core::builder(CoreConfig::new("unused"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .integrations(vec![
            Arc::new(CommandLineIntegration::new()) as Arc<dyn homecore::Integration>
        ])
        .build()
        .unwrap();
    core.start().await.unwrap();
    let entity_id = create(
        &core,
        "sensor",
        json!({"name": "Answer", "command": "expr 40 + 2", "unit_of_measurement": "pcs"}),
    )
    .await;
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while state_of(&core, &entity_id).as_deref() != Some("42") {
        assert!(
            std::time::Instant::now() < deadline,
            "{entity_id} is {:?}",
            state_of(&core, &entity_id)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
