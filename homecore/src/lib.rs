//! The home-automation core that main and every sandbox run.
//!
//! One [`Core`] is a complete, private home-automation model: states, events,
//! services, registries, config entries and their flows, and versioned storage.
//! It knows nothing about sandboxes; it exposes seams a host plugs into: the
//! [`ConfigEntryRouter`] (where flows and entries run), the [`StoreBackend`]
//! (where storage IO goes) and [`IntegrationHandlers`] (where local integration
//! code is found, implemented by the [`IntegrationLoader`]). Entities of every domain are
//! served by one generic code path driven by the data-driven domain [`catalog`]; a host
//! attaches remote entities through the remote platform seam, observes entities through
//! [`EntityObserver`]s, and supplies translations and integration listings through providers.
//! Semantics follow Home Assistant's.
//!
//! # Layout
//!
//! - [`core`]: [`Core`], its configuration and lifecycle (start, stop stages, final write).
//! - [`catalog`]: every entity domain's states, services, feature flags and queries, as data.
//! - [`context`]: [`Context`], the ULID-identified cause of every change.
//! - [`entity_id`]: entity id and domain validation, `slugify`.
//! - [`event`]: the event bus with bounded per-listener queues; event type names.
//! - [`state`]: the state machine, `state_changed` and `state_reported`.
//! - [`service`]: the service registry, calls, targets, response modes, typed errors.
//! - [`schema`]: declarative, JSON-serializable schemas validated with precise paths.
//! - [`selector`]: UI selector descriptions carried by schema fields.
//! - [`store`]: [`Store`], versioned envelopes, delayed saves, the backend seam.
//! - [`file_backend`]: the default backend, atomic files under `<config_dir>/.storage`.
//! - [`registry`]: what the three registries share, and [`Registries`].
//! - [`entity_registry`], [`device_registry`], [`area_registry`]: the registries.
//! - [`config_entries`]: config entries, their lifecycle, config and options flows, the router seam.
//! - [`data_entry_flow`]: the flow engine, [`FlowHandler`], flow results.
//! - [`restore_state`]: entities' last states across restarts.
//! - [`entity`]: the [`Entity`] trait, [`EntityInfo`], [`EntityDescription`], [`EntityHandle`].
//! - [`entity_platform`]: [`EntityPlatform`], one integration's entities of a domain for an entry.
//! - [`entity_component`]: per-domain components, service dispatch, target resolution, the
//!   observer, call-by-id and remote platform seams.
//! - [`integration`]: the [`Integration`] trait, [`Manifest`], the [`IntegrationLoader`] and
//!   the catalog provider seam.
//! - [`translation`]: translation strings and the translation provider seam.

#![forbid(unsafe_code)]

pub mod area_registry;
pub mod catalog;
pub mod config_entries;
pub mod context;
pub mod core;
pub mod data_entry_flow;
pub mod device_registry;
pub mod entity;
pub mod entity_component;
pub mod entity_id;
pub mod entity_platform;
pub mod entity_registry;
pub mod event;
pub mod file_backend;
pub mod integration;
pub mod registry;
pub mod restore_state;
pub mod schema;
pub mod selector;
pub mod service;
pub mod state;
pub mod store;
pub mod translation;
mod unwind;

pub use crate::area_registry::{AreaEntry, AreaRegistry};
pub use crate::catalog::{
    Catalog, DomainSpec, FeatureFlag, ServiceSpec, StateKind, StateVocabulary, catalog,
};
pub use crate::config_entries::{
    ConfigEntries, ConfigEntry, ConfigEntryError, ConfigEntryRouter, ConfigEntryState,
    ConfigEntryUpdate, EntrySetupHandler, HandlerTable, IntegrationHandlers, Routed, RoutedFlow,
    SetupError,
};
pub use crate::context::Context;
pub use crate::core::{
    Core, CoreBuilder, CoreConfig, CoreConfigUpdate, CoreError, CoreState, UnitSystem,
};
pub use crate::data_entry_flow::{
    FlowContext, FlowError, FlowHandler, FlowResult, FlowStep, FlowStepContext, MenuOption,
};
pub use crate::device_registry::{DeviceEntry, DeviceInfo, DeviceRegistry};
pub use crate::entity::{
    Entity, EntityDescription, EntityDeviceInfo, EntityError, EntityHandle, EntityInfo, EntityRef,
    EntityServiceCall,
};
pub use crate::entity_component::{
    EntityComponent, EntityComponents, EntityObserver, ObserverHandle,
};
pub use crate::entity_platform::EntityPlatform;
pub use crate::entity_registry::{EntityRegistration, EntityRegistry, RegistryEntry};
pub use crate::event::{Event, EventBus, EventOrigin, ListenerHandle};
pub use crate::file_backend::FileStoreBackend;
pub use crate::integration::{
    CatalogProviderHandle, Integration, IntegrationCatalogProvider, IntegrationDescriptor,
    IntegrationError, IntegrationLoader, IntegrationType, Manifest,
};
pub use crate::registry::{Registries, RegistryError};
pub use crate::restore_state::{RestoreState, StoredState};
pub use crate::schema::{Field, FieldType, Schema, SchemaError, ValidationErrors};
pub use crate::selector::Selector;
pub use crate::service::{
    ServiceCall, ServiceError, ServiceRegistry, ServiceRequest, ServiceResponse, ServiceTarget,
    SupportsResponse,
};
pub use crate::state::{State, StateMachine};
pub use crate::store::{
    MemoryStoreBackend, Store, StoreBackend, StoreEnvelope, StoreError, StoreKey, Stores,
};
pub use crate::translation::{TranslationProvider, TranslationProviderHandle, Translations};
