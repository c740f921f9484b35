//! The sandbox runtime: a private core hosting integrations, mirrored to main over one channel.
//!
//! Start order matters (the reference lost entry setups to a race here): every handler is
//! registered before the channel reads its first frame, the store backend routes through main,
//! the restore state is warm-loaded (a `store_load` call), the mirrors are installed, and `ready`
//! is the last thing sent, so whatever main sends after it finds everything in place.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use homecore::integration::Integration;
use homecore::{Core, CoreConfig, IntegrationHandlers, ServiceRequest, ServiceTarget};
use sandbox_proto::version::{self, Negotiated, Role};
use sandbox_proto::wire;
use sandbox_proto::{Channel, ChannelBuilder, ChannelConfig, RemoteError, Transport, json};
use tokio::sync::Notify;

use crate::approvals::Approvals;
use crate::entities::EntityBridge;
use crate::entries::EntryRunner;
use crate::entry_updates::EntryUpdates;
use crate::flows::FlowRunner;
use crate::mirror::Mirror;
use crate::store::ChannelStoreBackend;
use sandbox_wire::service_error_to_remote;

/// How long main has to acknowledge `ready`.
pub const READY_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the shutdown reply (and anything else in flight) has to reach the wire before the
/// channel is closed.
pub const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What a runtime hosts: the integrations whose code is in this binary.
#[derive(Clone, Default)]
pub struct Integrations {
    /// The integrations, announced to main in `ready` and set up on its request.
    pub list: Vec<Arc<dyn Integration>>,
}

impl Integrations {
    /// A set of integrations.
    pub fn new(list: Vec<Arc<dyn Integration>>) -> Self {
        Self { list }
    }
}

/// How a runtime is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The group main started it for.
    pub group: String,
    /// The private core's configuration directory (nothing is stored there: store IO goes to
    /// main; integrations may keep caches in it).
    pub config_dir: PathBuf,
}

/// Why a runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Main closed the channel (or was never there) before the sandbox was ready: the cause of
    /// whatever else failed on the way, reported instead of it.
    #[error("main closed the channel before the sandbox was ready ({0})")]
    MainGone(sandbox_proto::CloseReason),
    /// The private core could not be built or loaded.
    #[error("the private core could not start: {0}")]
    Core(#[from] homecore::CoreError),
    /// Main refused `ready` or did not answer it.
    #[error("main did not accept ready: {0}")]
    Ready(sandbox_proto::CallError),
    /// Main's version is incompatible.
    #[error(transparent)]
    Version(#[from] version::VersionError),
    /// A bus listener could not be installed.
    #[error("cannot listen on the private bus: {0}")]
    Bus(#[from] homecore::event::EventError),
}

/// How a runtime ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Main asked it to shut down.
    Shutdown,
    /// Main closed the channel (or went away).
    MainGone,
    /// The process was told to terminate.
    Terminated,
}

/// The parts every handler reaches.
struct Parts {
    core: Core,
    /// The entity bridge, once installed (before `ready`).
    bridge: parking_lot::Mutex<Option<Arc<EntityBridge>>>,
    entries: EntryRunner,
    flows: FlowRunner,
    /// Entry changes made here, told to main once it acknowledged `update_entry`.
    updates: Arc<EntryUpdates>,
    group: String,
    /// Rung by the `shutdown` handler once its reply is ready.
    shutdown: Notify,
}

/// Runs a sandbox until main shuts it down or goes away.
pub async fn run(
    config: RuntimeConfig,
    integrations: Integrations,
    transport: Transport,
) -> Result<Ending, RuntimeError> {
    let backend = ChannelStoreBackend::new();
    let core = Core::builder(CoreConfig::new(config.config_dir.clone()))
        .store_backend(Arc::new(backend.clone()))
        .integrations(integrations.list.iter().cloned())
        .build()?;
    let approvals = Arc::new(Approvals::new());
    let loader: Arc<dyn IntegrationHandlers> = Arc::new(core.integrations().clone());
    let (flows, wrapped) = FlowRunner::new(core.clone(), loader);
    core.config_entries().set_handlers(wrapped.clone());
    let updates = Arc::new(EntryUpdates::install(&core));
    let entries = EntryRunner::new(
        core.clone(),
        wrapped,
        Arc::clone(&approvals),
        Arc::clone(&updates),
        &config.group,
    );
    let parts = Arc::new(Parts {
        core: core.clone(),
        bridge: parking_lot::Mutex::new(None),
        entries,
        flows,
        updates,
        group: config.group.clone(),
        shutdown: Notify::new(),
    });

    let channel = handlers(
        ChannelBuilder::new(ChannelConfig::named(config.group.clone())),
        &parts,
    )
    .start(transport);
    backend.attach(channel.clone());

    let started = start(&parts, &channel, &approvals).await;
    let _mirror = match started {
        Ok(mirror) => mirror,
        Err(error) => {
            // A start that failed because main is gone (a store read or `ready` found the
            // channel closed) reports that, not the step it happened to break.
            let main_gone = channel.close_reason();
            channel.close().await;
            return Err(match main_gone {
                Some(reason) => RuntimeError::MainGone(reason),
                None => error,
            });
        }
    };

    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let ending = tokio::select! {
        () = parts.shutdown.notified() => Ending::Shutdown,
        _ = channel.closed() => Ending::MainGone,
        () = terminate => Ending::Terminated,
    };
    match ending {
        Ending::Shutdown => {
            // The reply carries the restore state: it must be on the wire before we close.
            if !channel.drain_inflight(SHUTDOWN_DRAIN_TIMEOUT).await {
                tracing::warn!("the shutdown reply was not written within the drain timeout");
            }
        }
        Ending::MainGone | Ending::Terminated => {
            tracing::info!(?ending, "stopping");
            parts.entries.unload_all().await;
            if let Err(error) = parts.core.stop().await {
                tracing::warn!(%error, "the private core did not stop cleanly");
            }
        }
    }
    channel.close().await;
    Ok(ending)
}

async fn start(
    parts: &Arc<Parts>,
    channel: &Channel,
    approvals: &Arc<Approvals>,
) -> Result<Arc<Mirror>, RuntimeError> {
    // Warm-load before ready: the restore state is in place before the first entry setup.
    parts.core.load().await?;
    let mirror = Mirror::install(
        parts.core.clone(),
        channel.clone(),
        Arc::clone(approvals),
        homecore::catalog::catalog()
            .domains()
            .map(|spec| spec.domain.clone())
            .collect(),
    )?;
    let bridge = EntityBridge::install(parts.core.clone(), channel.clone(), Arc::clone(approvals))?;
    *parts.bridge.lock() = Some(Arc::new(bridge));
    let ready = wire::Ready {
        protocol_version: version::PROTOCOL_VERSION.to_owned(),
        features: version::features(),
        group: parts.group.clone(),
        runtime: format!("sandbox-runtime {}", env!("CARGO_PKG_VERSION")),
        integrations: parts
            .core
            .integrations()
            .available()
            .iter()
            .map(sandbox_wire::manifest_to_wire)
            .collect(),
    };
    let ack = channel
        .call_timeout(&ready, READY_ACK_TIMEOUT)
        .await
        .map_err(RuntimeError::Ready)?;
    let negotiated: Negotiated =
        version::negotiate(Role::Sandbox, &ack.protocol_version, &ack.features)?;
    tracing::info!(group = %parts.group, host_version = %negotiated.peer_version, "ready");
    if negotiated.has("update_entry") {
        parts.updates.start(channel.clone());
    }
    Ok(mirror)
}

fn handlers(builder: ChannelBuilder, parts: &Arc<Parts>) -> ChannelBuilder {
    let on = |parts: &Arc<Parts>| Arc::clone(parts);
    let p = on(parts);
    let builder = builder.on_call::<wire::Ping, _, _>(move |ping, _| {
        let p = Arc::clone(&p);
        async move {
            Ok(wire::Pong {
                nonce: ping.nonce,
                rss_bytes: resident_bytes(),
                entities: p
                    .bridge
                    .lock()
                    .as_ref()
                    .map_or(0, |bridge| bridge.registered()) as u32,
            })
        }
    });
    let p = on(parts);
    let builder = builder.on_call::<wire::EntrySetup, _, _>(move |request, _| {
        let p = Arc::clone(&p);
        async move { p.entries.setup(request).await }
    });
    let p = on(parts);
    let builder = builder.on_call::<wire::EntryUnload, _, _>(move |request, _| {
        let p = Arc::clone(&p);
        async move { p.entries.unload(request).await }
    });
    let p = on(parts);
    let builder = builder.on_call::<wire::EntryRemove, _, _>(move |request, _| {
        let p = Arc::clone(&p);
        async move { p.entries.remove(request).await }
    });
    let p = on(parts);
    let builder = builder.on_call::<wire::FlowInit, _, _>(move |request, _| {
        let p = Arc::clone(&p);
        async move { p.flows.init(request).await }
    });
    let p = on(parts);
    let builder = builder.on_call::<wire::FlowStep, _, _>(move |request, _| {
        let p = Arc::clone(&p);
        async move { p.flows.step(request).await }
    });
    let p = on(parts);
    let builder = builder.on_call::<wire::FlowAbort, _, _>(move |request, _| {
        let p = Arc::clone(&p);
        async move { p.flows.abort(request).await }
    });
    let p = on(parts);
    let builder = builder.on_call::<wire::CallService, _, _>(move |request, _| {
        let p = Arc::clone(&p);
        async move {
            let outcome = call_service(&p.core, request).await;
            // What the call wrote reaches main before the reply does.
            let bridge = p.bridge.lock().clone();
            if let Some(bridge) = bridge {
                bridge.flush_states().await;
            }
            outcome
        }
    });
    let p = on(parts);
    let builder = builder.on_call::<wire::EntityQuery, _, _>(move |request, _| {
        let p = Arc::clone(&p);
        async move { entity_query(&p.core, request).await }
    });
    let p = on(parts);
    let builder = builder.on_call::<wire::GetTranslations, _, _>(move |request, _| {
        let p = Arc::clone(&p);
        async move {
            let domains: Vec<&str> = request.domains.iter().map(String::as_str).collect();
            let strings = p.core.translations().get(&request.language, &domains).await;
            let strings: serde_json::Map<String, serde_json::Value> = strings.into_iter().collect();
            Ok(wire::GetTranslationsResult {
                language: request.language,
                strings_json: json::object_to_bytes(&strings),
            })
        }
    });
    let p = on(parts);
    let builder = builder.on_push_inline::<wire::CoreConfigUpdated, _>(move |update| {
        if let Err(error) = crate::entries::adopt_core_config(&p.core, update.core_config.as_ref())
        {
            tracing::warn!(%error, "main's core configuration was not taken");
        }
    });
    let p = on(parts);
    builder.on_call::<wire::Shutdown, _, _>(move |request, _| {
        let p = Arc::clone(&p);
        async move { shutdown(&p, request).await }
    })
}

async fn call_service(
    core: &Core,
    request: wire::CallService,
) -> Result<wire::CallServiceResult, RemoteError> {
    let data = json::object_from_bytes(&request.data_json)
        .map_err(|error| RemoteError::bad_request(format!("field `data_json`: {error}")))?;
    let context = sandbox_wire::context_from_wire(&request.context_id);
    let is_entity_domain = homecore::catalog::catalog()
        .domain(&request.domain)
        .is_some();
    if request.per_entity && is_entity_domain {
        // Proxies' calls main joined into one: every entity answers on its own, concurrently
        // (as the calls would have run on main), and one failure fails only its entity.
        let calls = request.entity_ids.iter().map(|entity_id| {
            core.entities().call_entity_service(
                entity_id,
                &request.service,
                data.clone(),
                Some(context.clone()),
                request.return_response,
            )
        });
        let results = futures::future::join_all(calls).await;
        let outcomes = request
            .entity_ids
            .iter()
            .zip(results)
            .map(|(entity_id, result)| match result {
                Ok(response) => wire::EntityOutcome {
                    entity_id: entity_id.clone(),
                    response_json: request.return_response.then(|| {
                        json::to_bytes(response.as_ref().unwrap_or(&serde_json::Value::Null))
                    }),
                    error: None,
                },
                Err(error) => wire::EntityOutcome {
                    entity_id: entity_id.clone(),
                    response_json: None,
                    error: Some(service_error_to_remote(&error).to_wire()),
                },
            })
            .collect();
        return Ok(wire::CallServiceResult {
            response_json: None,
            outcomes,
        });
    }
    if !request.entity_ids.is_empty() && is_entity_domain {
        // A proxy's call: straight to the entities, each answering for itself.
        let mut responses = serde_json::Map::new();
        for entity_id in &request.entity_ids {
            let response = core
                .entities()
                .call_entity_service(
                    entity_id,
                    &request.service,
                    data.clone(),
                    Some(context.clone()),
                    request.return_response,
                )
                .await
                .map_err(|error| service_error_to_remote(&error))?;
            if let Some(response) = response {
                responses.insert(entity_id.clone(), response);
            }
        }
        let response_json = request.return_response.then(|| {
            if request.entity_ids.len() == 1 {
                let only = responses.into_iter().next().map(|(_, value)| value);
                json::to_bytes(only.as_ref().unwrap_or(&serde_json::Value::Null))
            } else {
                json::object_to_bytes(&responses)
            }
        });
        return Ok(wire::CallServiceResult {
            response_json,
            outcomes: Vec::new(),
        });
    }
    let mut call = ServiceRequest::new(request.domain.clone(), request.service.clone())
        .with_data(data)
        .with_context(context);
    if !request.entity_ids.is_empty() {
        call = call.with_target(ServiceTarget::entities(request.entity_ids.iter().cloned()));
    }
    if request.return_response {
        call = call.with_response();
    }
    let response = core
        .services()
        .call(call)
        .await
        .map_err(|error| service_error_to_remote(&error))?;
    Ok(wire::CallServiceResult {
        response_json: response.map(|response| json::object_to_bytes(&response)),
        outcomes: Vec::new(),
    })
}

async fn entity_query(
    core: &Core,
    request: wire::EntityQuery,
) -> Result<wire::EntityQueryResult, RemoteError> {
    let args = json::object_from_bytes(&request.args_json)
        .map_err(|error| RemoteError::bad_request(format!("field `args_json`: {error}")))?;
    let result = core
        .entities()
        .query_entity_as(
            &request.entity_id,
            &request.method,
            args,
            sandbox_wire::context_from_wire(&request.context_id),
        )
        .await
        .map_err(|error| service_error_to_remote(&error))?;
    Ok(wire::EntityQueryResult {
        result_json: json::to_bytes(&result),
    })
}

async fn shutdown(
    parts: &Parts,
    request: wire::Shutdown,
) -> Result<wire::ShutdownResult, RemoteError> {
    tracing::info!(reason = %request.reason, "main asked to shut down");
    // Capture the last states while the entities still exist, then unload and stop the core
    // (which writes the restore state and every pending save through main).
    let restore_state = json::to_json_safe(&parts.core.restore_state().dump());
    parts.entries.unload_all().await;
    let bridge = parts.bridge.lock().clone();
    if let Some(bridge) = bridge
        && !bridge.wait_settled(SHUTDOWN_DRAIN_TIMEOUT).await
    {
        tracing::warn!("entity removals were still being told to main at shutdown");
    }
    if let Err(error) = parts.core.stop().await {
        tracing::warn!(%error, "the private core did not stop cleanly");
    }
    parts.shutdown.notify_one();
    Ok(wire::ShutdownResult {
        restore_state_json: json::to_bytes(&restore_state),
    })
}

/// This process's resident memory in bytes, 0 if unknown.
pub fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let resident_pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(0);
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    resident_pages * page_size
}
