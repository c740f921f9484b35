//! The group integration (a helper, run on main: it reads and drives entities it does not own):
//! light and switch groups whose state follows their members and whose services reach them.
//!
//! - `entity`: the group entity and the pure summary of its members.
//! - `config_flow`: a menu picks the group type, one form names the members.

use std::sync::LazyLock;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use homecore::{
    ConfigEntry, Core, FlowHandler, Integration, IntegrationType, Manifest, SetupError,
};

mod config_flow;
mod entity;

#[cfg(test)]
mod tests;

use entity::GroupEntity;

/// The integration's domain (in the host's ALWAYS_MAIN list: it must stay `group`).
pub const DOMAIN: &str = "group";
/// Most members one group may have: bounds the work per member state change and per call.
pub const MAX_MEMBERS: usize = 256;

/// The manifest.
static MANIFEST: LazyLock<Manifest> = LazyLock::new(|| Manifest {
    domain: DOMAIN.to_owned(),
    name: "Group".to_owned(),
    version: semver::Version::new(1, 0, 0),
    integration_type: IntegrationType::Helper,
    config_flow: true,
    platforms: vec!["light".to_owned(), "switch".to_owned()],
    dependencies: Vec::new(),
    iot_class: Some("calculated".to_owned()),
    single_config_entry: false,
});

/// The English strings.
const STRINGS_EN: &str = include_str!("group/strings.json");

/// The member entity ids in entry data, lower-cased, duplicates dropped, order kept.
pub fn members_of(data: &Map<String, Value>) -> Vec<String> {
    let mut members: Vec<String> = Vec::new();
    for id in data
        .get("entities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let id = id.trim().to_lowercase();
        if !members.contains(&id) {
            members.push(id);
        }
    }
    members
}

/// The group integration. One instance serves one core.
#[derive(Debug, Default)]
pub struct GroupIntegration {}

impl GroupIntegration {
    /// A fresh instance, for one core.
    pub fn new() -> Self {
        Self::default()
    }

    async fn setup(&self, core: &Core, entry: &ConfigEntry) -> Result<(), SetupError> {
        let domain = match entry.data.get("group_type").and_then(Value::as_str) {
            Some("light") => "light",
            Some("switch") => "switch",
            other => {
                return Err(SetupError::Failed(format!(
                    "invalid group entry: group_type {other:?} is neither light nor switch"
                )));
            }
        };
        let members = members_of(&entry.data);
        if members.is_empty() || members.len() > MAX_MEMBERS {
            return Err(SetupError::Failed(format!(
                "invalid group entry: it needs 1 to {MAX_MEMBERS} members"
            )));
        }
        let all = entry
            .data
            .get("all")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let group = GroupEntity::new(&entry.entry_id, domain, entry.title.clone(), members, all);
        let platform = core
            .entities()
            .forward_entry_setup(entry, domain)
            .map_err(|err| SetupError::Failed(err.to_string()))?;
        platform
            .add_entities([group as homecore::EntityRef])
            .await
            .map_err(|err| SetupError::Failed(err.to_string()))?;
        Ok(())
    }
}

impl Integration for GroupIntegration {
    fn manifest(&self) -> &Manifest {
        &MANIFEST
    }

    fn config_flow(&self) -> Option<Box<dyn FlowHandler>> {
        Some(Box::new(config_flow::GroupConfigFlow))
    }

    fn setup_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(self.setup(core, entry))
    }

    fn translations(&self, language: &str) -> Option<Map<String, Value>> {
        crate::english_strings(language, STRINGS_EN)
    }
}
