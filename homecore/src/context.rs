//! `Context`: who or what caused a change, carried by every event, state and service call.

use serde::{Deserialize, Serialize};
use ulid::Ulid;

#[cfg(test)]
mod tests;

/// The origin of a change, threaded from a trigger through every effect it causes.
///
/// Two contexts are equal when their ids are equal: the user and parent are
/// facts about the id, not part of its identity (as in Home Assistant).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Context {
    /// Unique, time-ordered id; what crosses process boundaries and what equality compares.
    pub id: Ulid,
    /// The user that caused the change, when a person did.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The context this one was derived from, so automations can trace causality.
    #[serde(default)]
    pub parent_id: Option<Ulid>,
}

impl Context {
    /// A fresh context with a new ULID and no user or parent.
    pub fn new() -> Self {
        Self {
            id: Ulid::new(),
            user_id: None,
            parent_id: None,
        }
    }

    /// A fresh context caused by `user_id`.
    pub fn with_user(user_id: impl Into<String>) -> Self {
        Self {
            user_id: Some(user_id.into()),
            ..Self::new()
        }
    }

    /// A fresh context whose parent is `self`, keeping the user.
    pub fn child(&self) -> Self {
        Self {
            id: Ulid::new(),
            user_id: self.user_id.clone(),
            parent_id: Some(self.id),
        }
    }
}

impl Default for Context {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for Context {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Context {}

impl std::hash::Hash for Context {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}
