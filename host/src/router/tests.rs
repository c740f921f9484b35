//! Tests of the artifact pin check (the streamed hash equals the whole-file hash at every size
//! around the buffer, and each refusal keeps its message) and of the flow proxy against an
//! in-memory sandbox (unique ids mirrored, duplicates aborted in the sandbox too, unreadable
//! form schemas), and of an entry's removal (in a group main has not used since it started; a
//! removal hook the sandbox never answers).

use std::sync::Arc;

use serde_json::json;
use sha2::Digest;

use super::*;

fn custom(artifact: PathBuf, sha256: String) -> CustomIntegration {
    CustomIntegration {
        manifest: Manifest {
            domain: "acme".into(),
            name: "Acme".into(),
            version: semver::Version::new(1, 2, 3),
            integration_type: homecore::IntegrationType::Device,
            config_flow: true,
            platforms: vec!["climate".into()],
            dependencies: Vec::new(),
            iot_class: None,
            single_config_entry: false,
        },
        artifact,
        sha256,
    }
}

fn hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Deterministic bytes that differ from one buffer to the next.
fn content(len: usize) -> Vec<u8> {
    (0..len)
        .map(|index| u8::try_from((index * 31 + index / 997) % 251).expect("below 251"))
        .collect()
}

#[test]
fn the_streamed_hash_matches_the_whole_file_at_every_size_around_the_buffer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sizes = [
        0,
        1,
        ARTIFACT_HASH_BUFFER_LEN - 1,
        ARTIFACT_HASH_BUFFER_LEN,
        ARTIFACT_HASH_BUFFER_LEN + 1,
        3 * ARTIFACT_HASH_BUFFER_LEN + 12_345,
    ];
    for size in sizes {
        let path = dir.path().join(format!("artifact-{size}"));
        let bytes = content(size);
        std::fs::write(&path, &bytes).expect("writes");
        assert_eq!(
            sha256_of_file(&path).expect("reads"),
            hex(&bytes),
            "{size} bytes"
        );
        assert_eq!(verify_artifact(&custom(path.clone(), hex(&bytes))), Ok(()));
        // A pin written in capitals is the same pin.
        let upper = hex(&bytes).to_ascii_uppercase();
        assert_eq!(verify_artifact(&custom(path, upper)), Ok(()));
    }
    assert_eq!(
        hex(&[]),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn a_wrong_pin_is_refused_naming_both_digests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("artifact");
    let bytes = content(ARTIFACT_HASH_BUFFER_LEN * 2 + 7);
    std::fs::write(&path, &bytes).expect("writes");
    let pinned = "0".repeat(64);
    let error = verify_artifact(&custom(path, pinned.clone())).expect_err("refused");
    assert_eq!(
        error,
        format!(
            "the artifact of acme 1.2.3 does not match its pinned sha256 (expected {pinned}, found {}); refusing to run it",
            hex(&bytes)
        )
    );
}

#[test]
fn an_artifact_that_cannot_be_read_is_refused_with_the_io_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing =
        verify_artifact(&custom(dir.path().join("missing"), hex(b""))).expect_err("refused");
    assert!(
        missing.starts_with("cannot read the artifact of acme: ") && missing.contains("os error"),
        "{missing}"
    );
    // A folder opens but cannot be read: the error of the read, not of the open.
    let folder = verify_artifact(&custom(dir.path().to_owned(), hex(b""))).expect_err("refused");
    assert!(
        folder.starts_with("cannot read the artifact of acme: "),
        "{folder}"
    );
}

/// What the in-memory sandbox saw of its flows.
#[derive(Default)]
struct SandboxFlows {
    started: std::sync::atomic::AtomicUsize,
    aborted: parking_lot::Mutex<Vec<String>>,
}

/// A sandbox whose config flows show a form (with `schema`) setting the unique id `device-1`,
/// then create an entry.
fn sandbox_with_flows(
    schema: &'static str,
    seen: &Arc<SandboxFlows>,
) -> sandbox_proto::ChannelBuilder {
    let started = Arc::clone(seen);
    let aborted = Arc::clone(seen);
    sandbox_proto::ChannelBuilder::new(sandbox_proto::ChannelConfig::named("sandbox"))
        .on_call::<wire::FlowInit, _, _>(move |init, _| {
            let n = started
                .started
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                Ok(wire::FlowResult {
                    r#type: wire::FlowResultType::Form as i32,
                    flow_id: format!("remote-{n}"),
                    handler: init.handler,
                    step_id: "user".into(),
                    data_schema_json: schema.as_bytes().to_vec().into(),
                    unique_id: Some("device-1".into()),
                    ..Default::default()
                })
            }
        })
        .on_call::<wire::FlowStep, _, _>(|step, _| async move {
            Ok(wire::FlowResult {
                r#type: wire::FlowResultType::CreateEntry as i32,
                flow_id: step.flow_id,
                handler: "acme".into(),
                title: "Device".into(),
                version: 1,
                unique_id: Some("device-1".into()),
                ..Default::default()
            })
        })
        .on_call::<wire::FlowAbort, _, _>(move |abort, _| {
            aborted.aborted.lock().push(abort.flow_id);
            async { Ok(wire::FlowAbortResult {}) }
        })
}

/// Routes every flow of `acme` to a flow proxy over `channel`; entries "set up" at once.
struct ChannelRouter {
    groups: Groups,
    channel: Channel,
}

impl ConfigEntryRouter for ChannelRouter {
    fn create_flow<'a>(
        &'a self,
        domain: &'a str,
        _context: &'a FlowContext,
        _data: Option<&'a Map<String, Value>>,
    ) -> BoxFuture<'a, Result<Routed<RoutedFlow>, FlowError>> {
        Box::pin(async move {
            let mut proxy = FlowProxy::new(self.groups.clone(), "built-in", domain, None);
            proxy.channel = Some(self.channel.clone());
            Ok(Routed::Taken(RoutedFlow {
                handler: Box::new(proxy),
                sandbox: Some("built-in".into()),
            }))
        })
    }

    fn setup_entry<'a>(
        &'a self,
        _entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Routed<Result<(), SetupError>>> {
        Box::pin(async { Routed::Taken(Ok(())) })
    }

    fn unload_entry<'a>(
        &'a self,
        _entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Routed<Result<(), String>>> {
        Box::pin(async { Routed::Taken(Ok(())) })
    }
}

struct FlowHub {
    core: homecore::Core,
    main: Channel,
    sandbox: Channel,
    seen: Arc<SandboxFlows>,
    _dir: tempfile::TempDir,
}

async fn flow_hub(schema: &'static str) -> FlowHub {
    let dir = tempfile::tempdir().expect("tempdir");
    let core = homecore::Core::builder(homecore::CoreConfig::new(dir.path()))
        .build()
        .expect("core");
    core.start().await.expect("starts");
    let seen = Arc::new(SandboxFlows::default());
    let (main, sandbox) = sandbox_proto::test_util::channel_pair(
        sandbox_proto::ChannelBuilder::new(sandbox_proto::ChannelConfig::named("main")),
        sandbox_with_flows(schema, &seen),
    );
    let groups = Groups::new(
        core.clone(),
        crate::groups::GroupsConfig {
            config_dir: dir.path().to_owned(),
            runtime_command: vec!["unused".into()],
            custom_commands: Default::default(),
            group_defaults: crate::GroupConfig::new("built-in"),
            group_overrides: Default::default(),
        },
    );
    core.config_entries()
        .set_router(Some(Arc::new(ChannelRouter {
            groups,
            channel: main.clone(),
        })));
    FlowHub {
        core,
        main,
        sandbox,
        seen,
        _dir: dir,
    }
}

impl FlowHub {
    async fn close(self) {
        self.core.config_entries().set_router(None);
        self.main.close().await;
        self.sandbox.close().await;
    }
}

const HOST_SCHEMA: &str = r#"{"fields": [{"name": "host", "type": "string", "required": true}]}"#;

#[tokio::test]
async fn the_flow_proxy_mirrors_the_unique_id_and_a_duplicate_flow_ends_in_the_sandbox_too() {
    let hub = flow_hub(HOST_SCHEMA).await;
    let flows = hub.core.config_entries().flow();
    let first = flows
        .init("acme", FlowContext::new("user"), None)
        .await
        .expect("form");
    let second = flows
        .init("acme", FlowContext::new("user"), None)
        .await
        .expect("form");
    assert!(
        matches!(&first.step, FlowStep::Form { data_schema: Some(schema), .. } if !schema.fields.is_empty()),
        "{first:?}"
    );
    // Main's flows carry the unique id the sandbox's flows set.
    let progress = flows.progress_by_handler("acme");
    assert_eq!(progress.len(), 2);
    assert!(
        progress
            .iter()
            .all(|flow| flow.context.unique_id.as_deref() == Some("device-1")),
        "{progress:?}"
    );
    // The first creates the entry: main aborts the other flow configuring the same device,
    // and the proxy ends its sandbox flow, which would otherwise hold the unique id.
    let created = flows
        .configure(
            &first.flow_id,
            Some(Map::from_iter([("host".into(), json!("10.0.0.2"))])),
        )
        .await
        .expect("created");
    assert!(
        matches!(created.step, FlowStep::CreateEntry { .. }),
        "{created:?}"
    );
    assert!(flows.progress_by_handler("acme").is_empty());
    assert!(
        flows.configure(&second.flow_id, None).await.is_err(),
        "the duplicate flow is gone on main"
    );
    assert_eq!(
        *hub.seen.aborted.lock(),
        ["remote-1"],
        "only the duplicate is aborted in the sandbox; the created one ended there"
    );
    hub.close().await;
}

#[tokio::test]
async fn removing_a_proxied_flow_aborts_it_in_the_sandbox() {
    let hub = flow_hub(HOST_SCHEMA).await;
    let flows = hub.core.config_entries().flow();
    let form = flows
        .init("acme", FlowContext::new("user"), None)
        .await
        .expect("form");
    flows.abort(&form.flow_id).await.expect("aborted");
    assert_eq!(*hub.seen.aborted.lock(), ["remote-0"]);
    hub.close().await;
}

#[tokio::test]
async fn a_form_whose_schema_main_cannot_read_is_shown_without_one() {
    // Valid JSON and within bounds, but no schema main knows.
    let hub = flow_hub(r#"{"fields": [{"name": "host", "type": "hologram"}]}"#).await;
    let flows = hub.core.config_entries().flow();
    let form = flows
        .init("acme", FlowContext::new("user"), None)
        .await
        .expect("the form is shown, not failed");
    let FlowStep::Form {
        step_id,
        data_schema,
        ..
    } = &form.step
    else {
        panic!("a form: {form:?}")
    };
    assert_eq!(step_id, "user");
    assert!(data_schema.is_none(), "{data_schema:?}");
    // The flow goes on: the input goes to the sandbox, whose own schema validates it.
    let created = flows
        .configure(
            &form.flow_id,
            Some(Map::from_iter([("host".into(), json!("10.0.0.2"))])),
        )
        .await
        .expect("created");
    assert!(
        matches!(created.step, FlowStep::CreateEntry { .. }),
        "{created:?}"
    );
    hub.close().await;
}

#[tokio::test]
async fn removing_an_entry_of_a_group_not_used_since_main_started_deletes_its_store_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let core = homecore::Core::builder(homecore::CoreConfig::new(dir.path()))
        .build()
        .expect("core");
    let groups = Groups::new(
        core,
        crate::groups::GroupsConfig {
            config_dir: dir.path().to_owned(),
            runtime_command: vec!["unused".into()],
            custom_commands: Default::default(),
            group_defaults: crate::GroupConfig::new("built-in"),
            group_overrides: Default::default(),
        },
    );
    let mut entry = ConfigEntry::new("demo", "Demo", Map::new(), "user");
    entry.sandbox = Some("built-in".into());
    // What a sandbox of the group stored in an earlier run of main.
    let earlier = crate::store_server::GroupStore::new(dir.path(), "built-in").expect("store");
    let envelope = br#"{"version": 1, "key": "k", "data": null}"#;
    let entry_key = format!("demo.{}", entry.entry_id);
    earlier.save(&entry_key, envelope).await.expect("saves");
    earlier
        .save("core.restore_state", envelope)
        .await
        .expect("saves");

    let router = SandboxRouter::new(groups.clone(), Vec::new(), Vec::new());
    assert!(groups.get("built-in").is_none());
    assert!(matches!(
        router.remove_entry(&entry).await,
        Routed::Taken(())
    ));
    assert!(!earlier.dir().join(&entry_key).exists());
    assert!(earlier.dir().join("core.restore_state").exists());
    // The group was not started for it.
    let handle = groups.get("built-in").expect("the handle exists now");
    assert_eq!(handle.manager.status().state, crate::GroupState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_removal_hook_the_sandbox_never_answers_holds_main_only_for_the_removal_timeout() {
    let (main, sandbox) = sandbox_proto::test_util::channel_pair(
        sandbox_proto::ChannelBuilder::new(sandbox_proto::ChannelConfig::named("main")),
        sandbox_proto::ChannelBuilder::new(sandbox_proto::ChannelConfig::named("sandbox"))
            .on_call::<wire::EntryRemove, _, _>(|_, _| async {
            std::future::pending::<Result<wire::EntryRemoveResult, sandbox_proto::RemoteError>>()
                .await
        }),
    );
    let entry = ConfigEntry::new("demo", "Demo", Map::new(), "user");
    let started = tokio::time::Instant::now();
    let error = run_removal_hook(&main, &entry)
        .await
        .expect_err("never answered");
    assert!(
        matches!(error, CallError::Timeout { after, .. } if after == ENTRY_REMOVE_TIMEOUT),
        "{error}"
    );
    assert!(started.elapsed() < ENTRY_CALL_TIMEOUT);
    main.close().await;
    sandbox.close().await;
}
