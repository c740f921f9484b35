//! Tests for selectors.

use super::*;

#[test]
fn serializes_as_a_single_key_object() {
    let selector = Selector::number(1.0, 65535.0, 1.0, false);
    let json = serde_json::to_value(&selector).unwrap();
    assert_eq!(
        json,
        json!({"number": {"min": 1.0, "max": 65535.0, "step": 1.0, "mode": "box"}})
    );
    let back: Selector = serde_json::from_value(json).unwrap();
    assert_eq!(back, selector);
}

#[test]
fn select_keeps_option_order_and_labels() {
    let selector = Selector::select(&[("z", "Zulu"), ("a", "Alpha")], false);
    let text = serde_json::to_string(&selector).unwrap();
    assert!(text.find("Zulu").unwrap() < text.find("Alpha").unwrap());
    let back: Selector = serde_json::from_str(&text).unwrap();
    assert_eq!(back.config["options"][0]["label"], "Zulu");
}

#[test]
fn null_config_reads_as_empty_and_unknown_kinds_are_refused() {
    let selector: Selector = serde_json::from_value(json!({"boolean": null})).unwrap();
    assert_eq!(selector, Selector::boolean());
    let err = serde_json::from_value::<Selector>(json!({"teleport": {}})).unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown selector kind \"teleport\""),
        "{err}"
    );
    for bad in [
        json!({}),
        json!({"text": {}, "number": {}}),
        json!("text"),
        json!({"text": 3}),
    ] {
        assert!(matches!(
            Selector::try_from(bad),
            Err(SelectorError::Malformed(_))
        ));
    }
}

#[test]
fn entity_selector_with_domain() {
    let selector = Selector::entity(Some("light"), true);
    assert_eq!(selector.config["domain"], "light");
    assert_eq!(selector.config["multiple"], true);
}
