//! Home Assistant's compressed states for `subscribe_entities`: a state as
//! `{"s", "a", "c", "lc", "lu"}` and the difference between two states of one entity as
//! `{"+": {changed keys}, "-": {"a": [removed attributes]}}`, so a dashboard following every
//! entity receives a few bytes per change instead of both full states.

use chrono::{DateTime, Utc};
use homecore::{Context, State};
use serde_json::{Map, Value, json};

/// An entity appeared (or the subscription's first snapshot): `{"a": {entity_id: state}}`.
pub const ADDED: &str = "a";
/// An entity changed: `{"c": {entity_id: diff}}`.
pub const CHANGED: &str = "c";
/// An entity was removed: `{"r": [entity_id]}`.
pub const REMOVED: &str = "r";

/// Seconds since the epoch with microseconds, as Home Assistant's `*_timestamp`.
pub fn timestamp(time: &DateTime<Utc>) -> f64 {
    time.timestamp_micros() as f64 / 1_000_000.0
}

/// A context as the compressed form carries it: its id alone when it has no user and no
/// parent, the whole object otherwise.
fn context_value(context: &Context) -> Value {
    if context.user_id.is_none() && context.parent_id.is_none() {
        Value::String(context.id.to_string())
    } else {
        json!({
            "id": context.id.to_string(),
            "parent_id": context.parent_id.map(|id| id.to_string()),
            "user_id": context.user_id,
        })
    }
}

/// One state, compressed: `lu` only when it differs from `lc`.
pub fn compressed_state(state: &State) -> Value {
    let mut compressed = Map::new();
    compressed.insert("s".into(), Value::String(state.state.clone()));
    compressed.insert("a".into(), Value::Object(state.attributes.clone()));
    compressed.insert("c".into(), context_value(&state.context));
    compressed.insert("lc".into(), json!(timestamp(&state.last_changed)));
    if state.last_updated != state.last_changed {
        compressed.insert("lu".into(), json!(timestamp(&state.last_updated)));
    }
    Value::Object(compressed)
}

/// What changed from `old` to `new` (two states of one entity): `None` when nothing a
/// subscriber sees did.
pub fn state_diff(old: &State, new: &State) -> Option<Value> {
    let mut additions = Map::new();
    if old.state != new.state {
        additions.insert("s".into(), Value::String(new.state.clone()));
    }
    if old.last_changed != new.last_changed {
        additions.insert("lc".into(), json!(timestamp(&new.last_changed)));
    } else if old.last_updated != new.last_updated {
        additions.insert("lu".into(), json!(timestamp(&new.last_updated)));
    }
    let (old_context, new_context) = (&old.context, &new.context);
    let mut context = Map::new();
    if old_context.parent_id != new_context.parent_id {
        context.insert(
            "parent_id".into(),
            json!(new_context.parent_id.map(|id| id.to_string())),
        );
    }
    if old_context.user_id != new_context.user_id {
        context.insert("user_id".into(), json!(new_context.user_id));
    }
    if old_context.id != new_context.id {
        if context.is_empty() {
            additions.insert("c".into(), Value::String(new_context.id.to_string()));
        } else {
            context.insert("id".into(), Value::String(new_context.id.to_string()));
        }
    }
    if !context.is_empty() {
        additions.insert("c".into(), Value::Object(context));
    }
    let mut diff = Map::new();
    if old.attributes != new.attributes {
        let changed: Map<String, Value> = new
            .attributes
            .iter()
            .filter(|(key, value)| old.attributes.get(*key) != Some(*value))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        if !changed.is_empty() {
            additions.insert("a".into(), Value::Object(changed));
        }
        let removed: Vec<Value> = old
            .attributes
            .keys()
            .filter(|key| !new.attributes.contains_key(*key))
            .map(|key| Value::String(key.clone()))
            .collect();
        if !removed.is_empty() {
            diff.insert("-".into(), json!({ "a": removed }));
        }
    }
    if additions.is_empty() && diff.is_empty() {
        return None;
    }
    diff.insert("+".into(), Value::Object(additions));
    Some(Value::Object(diff))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(value: &str, attributes: Value) -> State {
        let now = Utc::now();
        State {
            entity_id: "light.kitchen".into(),
            state: value.into(),
            attributes: attributes.as_object().cloned().unwrap_or_default(),
            last_changed: now,
            last_reported: now,
            last_updated: now,
            context: Context::new(),
        }
    }

    #[test]
    fn a_state_compresses_to_short_keys_with_lu_only_when_it_differs() {
        let mut on = state("on", json!({"brightness": 180}));
        let compressed = compressed_state(&on);
        assert_eq!(compressed["s"], "on");
        assert_eq!(compressed["a"], json!({"brightness": 180}));
        assert_eq!(compressed["c"], on.context.id.to_string());
        assert_eq!(compressed["lc"], json!(timestamp(&on.last_changed)));
        assert!(compressed.get("lu").is_none());

        on.last_updated += chrono::Duration::seconds(1);
        on.context = Context::with_user("person");
        let compressed = compressed_state(&on);
        assert_eq!(compressed["lu"], json!(timestamp(&on.last_updated)));
        assert_eq!(compressed["c"]["user_id"], "person");
        assert_eq!(compressed["c"]["id"], on.context.id.to_string());
    }

    #[test]
    fn the_diff_names_what_changed_and_what_was_removed() {
        let old = state(
            "off",
            json!({"friendly_name": "Kitchen", "effect": "rainbow"}),
        );
        let mut new = state("on", json!({"friendly_name": "Kitchen", "brightness": 180}));
        new.last_changed = old.last_changed + chrono::Duration::seconds(2);
        new.last_updated = new.last_changed;
        let diff = state_diff(&old, &new).expect("changed");
        assert_eq!(
            diff,
            json!({
                "+": {
                    "s": "on",
                    "lc": timestamp(&new.last_changed),
                    "c": new.context.id.to_string(),
                    "a": {"brightness": 180},
                },
                "-": {"a": ["effect"]},
            })
        );
    }

    #[test]
    fn an_attribute_only_change_moves_lu_and_a_same_state_has_no_diff() {
        let old = state("on", json!({"brightness": 10}));
        let mut new = old.clone();
        assert_eq!(state_diff(&old, &new), None, "nothing changed");
        new.attributes.insert("brightness".into(), json!(20));
        new.last_updated = old.last_updated + chrono::Duration::seconds(1);
        let diff = state_diff(&old, &new).expect("changed");
        assert_eq!(
            diff,
            json!({"+": {"lu": timestamp(&new.last_updated), "a": {"brightness": 20}}})
        );
    }

    #[test]
    fn a_context_gaining_a_parent_is_sent_as_an_object() {
        let old = state("on", json!({}));
        let mut new = old.clone();
        new.context = old.context.child();
        let diff = state_diff(&old, &new).expect("changed");
        assert_eq!(
            diff["+"]["c"],
            json!({"parent_id": old.context.id.to_string(), "id": new.context.id.to_string()})
        );
    }
}
