//! The home-automation core that main and every sandbox run.
pub mod context;
pub mod entity_id;
pub mod event;
pub mod state;
pub mod schema;
pub mod selector;
pub mod service;
pub mod file_backend;
pub mod store;
pub mod area_registry;
pub mod device_registry;
pub mod entity_registry;
pub mod registry;
pub mod config_entries;
pub mod core;
pub mod data_entry_flow;
pub mod restore_state;
