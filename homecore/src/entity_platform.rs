//! Entity platforms: one integration's entities of one domain for one config entry.
//!
//! An [`EntityPlatform`] is created by the integration (or, for remote entities, by a host),
//! registered with the core's [`crate::entity_component::EntityComponents`] (which claims its
//! `(domain, config entry)` slot), and then fed entities. Unloading the platform removes its
//! entities and frees the slot, so a later setup of the same entry works.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::entity::{EntityError, EntityRef};
use crate::entity_component::ComponentsInner;

#[cfg(test)]
mod tests;

/// Where a registered platform is attached.
#[derive(Clone)]
pub(crate) struct Attachment {
    /// The components holding its slot.
    pub(crate) components: Weak<ComponentsInner>,
    /// Whether it was registered through the remote platform seam.
    pub(crate) remote: bool,
}

/// Entity ids in the order they were added, where adding, finding and removing one costs the
/// same with N live entities as with one (a list made removing all N quadratic: a reset of
/// 40 000 took seconds).
#[derive(Debug, Default)]
pub(crate) struct OrderedIds {
    /// Ids by the order they were added in.
    by_order: BTreeMap<u64, String>,
    /// Each id's place in `by_order`.
    order_of: HashMap<String, u64>,
    /// The place of the next id added.
    next: u64,
}

impl OrderedIds {
    /// Adds `entity_id` last; an id already there keeps its place.
    pub(crate) fn push(&mut self, entity_id: String) {
        if self.order_of.contains_key(&entity_id) {
            return;
        }
        self.order_of.insert(entity_id.clone(), self.next);
        self.by_order.insert(self.next, entity_id);
        self.next += 1;
    }

    /// Whether `entity_id` is there.
    pub(crate) fn contains(&self, entity_id: &str) -> bool {
        self.order_of.contains_key(entity_id)
    }

    /// Removes `entity_id`.
    pub(crate) fn remove(&mut self, entity_id: &str) {
        if let Some(order) = self.order_of.remove(entity_id) {
            self.by_order.remove(&order);
        }
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.order_of.len()
    }

    /// The ids, in the order they were added.
    pub(crate) fn to_vec(&self) -> Vec<String> {
        self.by_order.values().cloned().collect()
    }
}

/// The shared part of a platform.
pub(crate) struct PlatformInner {
    /// The entity domain (`light`).
    pub(crate) domain: String,
    /// The integration providing the entities (`demo`).
    pub(crate) platform: String,
    /// The config entry the entities belong to.
    pub(crate) config_entry_id: Option<String>,
    /// Set while registered with a core.
    pub(crate) attachment: Mutex<Option<Attachment>>,
    /// Live entities, in the order they were added.
    pub(crate) entity_ids: Mutex<OrderedIds>,
}

/// One integration's entities of one domain for one config entry (Home Assistant's
/// `EntityPlatform`). A cheap-to-clone handle.
#[derive(Clone)]
pub struct EntityPlatform {
    /// Shared state.
    pub(crate) inner: Arc<PlatformInner>,
}

impl std::fmt::Debug for EntityPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityPlatform")
            .field("domain", &self.inner.domain)
            .field("platform", &self.inner.platform)
            .field("config_entry_id", &self.inner.config_entry_id)
            .field("entities", &self.inner.entity_ids.lock().len())
            .finish()
    }
}

impl EntityPlatform {
    /// A platform of `platform`'s (an integration domain) entities of entity domain `domain`,
    /// belonging to config entry `config_entry_id`. Register it before adding entities.
    pub fn new(domain: &str, platform: &str, config_entry_id: Option<&str>) -> Self {
        Self {
            inner: Arc::new(PlatformInner {
                domain: domain.to_owned(),
                platform: platform.to_owned(),
                config_entry_id: config_entry_id.map(str::to_owned),
                attachment: Mutex::new(None),
                entity_ids: Mutex::new(OrderedIds::default()),
            }),
        }
    }

    /// The entity domain.
    pub fn domain(&self) -> &str {
        &self.inner.domain
    }

    /// The integration providing the entities.
    pub fn platform(&self) -> &str {
        &self.inner.platform
    }

    /// The config entry the entities belong to.
    pub fn config_entry_id(&self) -> Option<&str> {
        self.inner.config_entry_id.as_deref()
    }

    /// The key of its slot within its domain: the config entry id, or the platform name without one.
    pub fn slot_key(&self) -> &str {
        self.inner
            .config_entry_id
            .as_deref()
            .unwrap_or(&self.inner.platform)
    }

    /// Whether it is registered with a core.
    pub fn is_registered(&self) -> bool {
        self.inner
            .attachment
            .lock()
            .as_ref()
            .is_some_and(|attachment| attachment.components.strong_count() > 0)
    }

    /// Whether it was registered through the remote platform seam.
    pub fn is_remote(&self) -> bool {
        self.inner
            .attachment
            .lock()
            .as_ref()
            .is_some_and(|attachment| attachment.remote)
    }

    /// Its live entities, in the order they were added.
    pub fn entity_ids(&self) -> Vec<String> {
        self.inner.entity_ids.lock().to_vec()
    }

    fn components(&self) -> Result<Arc<ComponentsInner>, EntityError> {
        self.inner
            .attachment
            .lock()
            .as_ref()
            .and_then(|attachment| attachment.components.upgrade())
            .ok_or_else(|| EntityError::PlatformNotRegistered {
                domain: self.inner.domain.clone(),
                platform: self.inner.platform.clone(),
            })
    }

    /// Adds one entity: registers it (and its device) when it has a unique id, announces it
    /// to entity observers, runs its `added_to_core` hook and writes its first state.
    /// Returns its entity id, or `None` when its registry entry is disabled (it is then not added).
    pub async fn add_entity(&self, entity: EntityRef) -> Result<Option<String>, EntityError> {
        let components = self.components()?;
        components.add_entity(self, entity).await
    }

    /// Adds entities in order, stopping at the first failure; returns the ids added.
    pub async fn add_entities(
        &self,
        entities: impl IntoIterator<Item = EntityRef>,
    ) -> Result<Vec<String>, EntityError> {
        let mut added = Vec::new();
        for entity in entities {
            if let Some(entity_id) = self.add_entity(entity).await? {
                added.push(entity_id);
            }
        }
        Ok(added)
    }

    /// Removes one of its entities: runs its removal hook, keeps its state for restore when
    /// it asked, removes its state and announces the removal.
    pub async fn remove_entity(&self, entity_id: &str) -> Result<(), EntityError> {
        if !self.inner.entity_ids.lock().contains(entity_id) {
            return Err(EntityError::NotFound(entity_id.to_owned()));
        }
        let components = self.components()?;
        components.remove_entity(entity_id).await
    }

    /// Removes every entity; the platform stays registered.
    pub async fn reset(&self) {
        let Ok(components) = self.components() else {
            return;
        };
        for entity_id in self.entity_ids().into_iter().rev() {
            if let Err(err) = components.remove_entity(&entity_id).await {
                tracing::warn!(%entity_id, %err, "could not remove entity");
            }
        }
    }
}
