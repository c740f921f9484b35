//! Tests for `Context`.

use super::*;

#[test]
fn new_contexts_have_distinct_ids() {
    let a = Context::new();
    let b = Context::new();
    assert_ne!(a.id, b.id);
    assert_ne!(a, b);
}

#[test]
fn equality_is_by_id_only() {
    let a = Context::with_user("alice");
    let mut b = a.clone();
    b.user_id = Some("bob".into());
    b.parent_id = Some(Ulid::new());
    assert_eq!(a, b);
}

#[test]
fn child_keeps_user_and_points_at_parent() {
    let parent = Context::with_user("alice");
    let child = parent.child();
    assert_eq!(child.parent_id, Some(parent.id));
    assert_eq!(child.user_id.as_deref(), Some("alice"));
    assert_ne!(child.id, parent.id);
}

#[test]
fn serde_round_trip_and_missing_optional_fields() {
    let ctx = Context::with_user("alice").child();
    let json = serde_json::to_value(&ctx).unwrap();
    let back: Context = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back.user_id, ctx.user_id);
    assert_eq!(back.parent_id, ctx.parent_id);
    let id_only: Context = serde_json::from_value(serde_json::json!({"id": json["id"]})).unwrap();
    assert_eq!(id_only, ctx);
    assert_eq!(id_only.user_id, None);
}
