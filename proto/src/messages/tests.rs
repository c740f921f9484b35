//! Tests of the message catalog.

use super::*;
use std::collections::HashSet;

#[test]
fn type_names_are_unique() {
    let mut seen = HashSet::new();
    for spec in CATALOG {
        assert!(
            seen.insert(spec.type_name),
            "duplicate type {}",
            spec.type_name
        );
    }
}

#[test]
fn trait_constants_match_catalog() {
    assert_eq!(
        spec(<wire::Ready as Call>::TYPE).map(|s| s.shape),
        Some(Shape::Call)
    );
    assert_eq!(
        spec(<wire::StateChanged as Push>::TYPE).map(|s| s.shape),
        Some(Shape::Push)
    );
    assert_eq!(spec("no_such_type"), None);
}

#[test]
fn protocol_doc_lists_every_message_type() {
    let doc = include_str!("../../../docs/PROTOCOL.md");
    for spec in CATALOG {
        let needle = format!("`{}`", spec.type_name);
        assert!(
            doc.contains(&needle),
            "docs/PROTOCOL.md does not document {}",
            spec.type_name
        );
    }
}
