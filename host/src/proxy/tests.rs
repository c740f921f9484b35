//! Tests for joined entity calls (X4) over an in-memory sandbox: one RPC per fan-out, every
//! caller its own outcome, partial fan-outs and a cancelled leader.

use std::sync::Mutex as StdMutex;

use futures::future::join_all;
use homecore::entity::{Entity, EntityServiceCall};
use sandbox_proto::test_util::channel_pair;
use sandbox_proto::{ChannelBuilder, ChannelConfig, RemoteError};

use super::*;

/// What the in-memory sandbox received: the entity ids of every `call_service`.
type Received = Arc<StdMutex<Vec<Vec<String>>>>;

/// A sandbox answering joined calls per entity; `light.broken` fails.
fn sandbox(received: Received) -> ChannelBuilder {
    ChannelBuilder::new(ChannelConfig::named("sandbox")).on_call::<wire::CallService, _, _>(
        move |request, _| {
            let received = Arc::clone(&received);
            async move {
                received
                    .lock()
                    .expect("lock")
                    .push(request.entity_ids.clone());
                let outcomes = request
                    .entity_ids
                    .iter()
                    .map(|entity_id| wire::EntityOutcome {
                        entity_id: entity_id.clone(),
                        response_json: None,
                        error: (entity_id == "light.broken")
                            .then(|| RemoteError::bad_request("it is broken").to_wire()),
                    })
                    .collect();
                Ok(wire::CallServiceResult {
                    response_json: None,
                    outcomes,
                })
            }
        },
    )
}

fn proxies(link: &Arc<ProxyLink>, ids: &[&str]) -> Vec<ProxyEntity> {
    ids.iter()
        .map(|id| {
            ProxyEntity::new(
                Arc::clone(link),
                wire::EntityDescription {
                    entity_id: (*id).to_owned(),
                    domain: "light".into(),
                    platform: "demo".into(),
                    ..Default::default()
                },
                crate::proxy::Mirrored::default(),
            )
        })
        .collect()
}

fn call(fanned_out_to: usize, context: &Context) -> EntityServiceCall {
    EntityServiceCall {
        service: "turn_on".into(),
        data: Map::new(),
        context: context.clone(),
        return_response: false,
        fanned_out_to,
    }
}

fn link(channel: Channel) -> Arc<ProxyLink> {
    Arc::new(ProxyLink {
        group: "g".into(),
        channel,
        alive: AtomicBool::new(true),
        contexts: Arc::new(ContextCache::new()),
        refused: Arc::new(crate::refusals::GateCounters::new("g")),
        joins_entity_calls: true,
        open_batches: Mutex::default(),
    })
}

/// A main-side link to an in-memory sandbox, and proxies of `ids` on it.
struct Fixture {
    received: Received,
    link: Arc<ProxyLink>,
    lights: Vec<ProxyEntity>,
    _sandbox: Channel,
}

fn fixture(ids: &[&str]) -> Fixture {
    let received = Received::default();
    let (main, sandbox_side) = channel_pair(
        ChannelBuilder::new(ChannelConfig::named("main")),
        sandbox(Arc::clone(&received)),
    );
    let link = link(main);
    let lights = proxies(&link, ids);
    Fixture {
        received,
        link,
        lights,
        _sandbox: sandbox_side,
    }
}

#[tokio::test]
async fn a_fan_out_is_one_call_and_each_caller_gets_its_own_outcome() {
    let Fixture {
        received,
        link,
        lights,
        _sandbox,
    } = fixture(&["light.a", "light.broken", "light.c"]);
    let context = Context::new();
    let outcomes = join_all(
        lights
            .iter()
            .map(|light| light.call_service(call(3, &context))),
    )
    .await;
    assert_eq!(
        *received.lock().expect("lock"),
        vec![vec!["light.a", "light.broken", "light.c"]]
    );
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    let broken = outcomes[1].as_ref().unwrap_err().to_string();
    assert!(broken.contains("it is broken"), "{broken}");
    assert!(outcomes[2].is_ok(), "{:?}", outcomes[2]);
    assert!(link.open_batches.lock().is_empty());
}

#[tokio::test]
async fn a_fan_out_partly_elsewhere_is_sent_by_its_first_call_after_one_yield() {
    let Fixture {
        received,
        link,
        lights,
        _sandbox,
    } = fixture(&["light.a", "light.b"]);
    let context = Context::new();
    // The service call runs on three entities; the third is not in this group.
    let outcomes = join_all(
        lights
            .iter()
            .map(|light| light.call_service(call(3, &context))),
    )
    .await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(
        *received.lock().expect("lock"),
        vec![vec!["light.a", "light.b"]]
    );
    // A call on one entity is never joined.
    let single = lights[0].call_service(call(1, &context)).await;
    assert!(single.is_ok(), "{single:?}");
    assert_eq!(received.lock().expect("lock").len(), 2);
    assert!(link.open_batches.lock().is_empty());
}

#[tokio::test]
async fn calls_joined_to_a_leader_cancelled_before_sending_fail_at_once() {
    let Fixture {
        received,
        link,
        lights,
        _sandbox,
    } = fixture(&["light.a", "light.b"]);
    let context = Context::new();
    let mut leader = Box::pin(lights[0].call_service(call(3, &context)));
    // Polled once: it opens the batch and yields.
    assert!(futures::poll!(leader.as_mut()).is_pending());
    let mut joined = Box::pin(lights[1].call_service(call(3, &context)));
    assert!(futures::poll!(joined.as_mut()).is_pending());
    drop(leader);
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(30), joined)
        .await
        .expect("the joined call ends");
    let error = outcome.unwrap_err().to_string();
    assert!(error.contains("cancelled"), "{error}");
    assert!(
        received.lock().expect("lock").is_empty(),
        "nothing was sent"
    );
    assert!(link.open_batches.lock().is_empty());
}

/// A sandbox answering every entity query with what it was asked.
fn querying_sandbox() -> ChannelBuilder {
    ChannelBuilder::new(ChannelConfig::named("sandbox")).on_call::<wire::EntityQuery, _, _>(
        |request, _| async move {
            let args = json::from_bytes(&request.args_json)
                .map_err(|error| RemoteError::bad_request(error.to_string()))?;
            let asked = serde_json::json!({
                "entity_id": request.entity_id,
                "method": request.method,
                "args": args,
                "context_id": request.context_id,
            });
            Ok(wire::EntityQueryResult {
                result_json: json::to_bytes(&asked),
            })
        },
    )
}

#[tokio::test]
async fn an_entity_query_through_a_proxy_crosses_the_channel_with_the_callers_context() {
    let (main, sandbox_side) = channel_pair(
        ChannelBuilder::new(ChannelConfig::named("main")),
        querying_sandbox(),
    );
    let link = link(main.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let core = homecore::Core::builder(homecore::CoreConfig::new(dir.path()))
        .build()
        .expect("core");
    core.start().await.expect("starts");
    let entry = core
        .config_entries()
        .add(homecore::ConfigEntry::new(
            "demo",
            "Demo",
            Map::new(),
            "user",
        ))
        .await
        .expect("entry");
    let platform =
        homecore::entity_platform::EntityPlatform::new("calendar", "demo", Some(&entry.entry_id));
    core.entities().add_platform(&platform).expect("platform");
    let proxy = ProxyEntity::new(
        Arc::clone(&link),
        wire::EntityDescription {
            entity_id: "calendar.family_in_the_sandbox".into(),
            entry_id: entry.entry_id.clone(),
            domain: "calendar".into(),
            platform: "demo".into(),
            unique_id: Some("family".into()),
            name: Some("Family".into()),
            entity_registry_enabled_default: true,
            ..Default::default()
        },
        Mirrored {
            state: "off".into(),
            attributes: Map::new(),
            available: true,
        },
    );
    let entity_id = platform
        .add_entity(Arc::new(proxy))
        .await
        .expect("added")
        .expect("an entity id");

    let caller = Context::with_user("user-1");
    let args = serde_json::json!({"start_date_time": "2024-06-01T00:00:00+00:00"});
    let asked = core
        .entities()
        .query_entity_as(
            &entity_id,
            "get_events",
            args.as_object().cloned().expect("object"),
            caller.clone(),
        )
        .await
        .expect("answered");
    assert_eq!(asked["entity_id"], "calendar.family_in_the_sandbox");
    assert_eq!(asked["method"], "get_events");
    assert_eq!(asked["args"], args);
    assert_eq!(
        asked["context_id"],
        caller.id.to_string(),
        "the caller's context, not a fresh one"
    );
    // Main remembers it: what the query causes comes back attributed to the caller.
    let restored = link.contexts.resolve(Some(&caller.id.to_string()));
    assert_eq!(restored, caller);
    assert_eq!(restored.user_id.as_deref(), Some("user-1"));
    main.close().await;
    sandbox_side.close().await;
}
