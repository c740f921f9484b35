//! Tests for entity platforms' bookkeeping of their live entities.

use super::*;

#[test]
fn ordered_ids_keep_the_order_of_adding_through_removals() {
    let mut ids = OrderedIds::default();
    for n in 0..1_000 {
        ids.push(format!("light.lamp_{n}"));
    }
    // Removing from anywhere, as a reset (newest first) or an unregistration does.
    for n in (0..1_000).rev().step_by(3) {
        ids.remove(&format!("light.lamp_{n}"));
    }
    ids.remove("light.never_added");
    ids.push("light.lamp_1".into());
    ids.push("light.late".into());
    let expected: Vec<String> = (0..1_000)
        .filter(|n| (999 - n) % 3 != 0)
        .map(|n| format!("light.lamp_{n}"))
        .chain(["light.late".to_owned()])
        .collect();
    assert_eq!(ids.to_vec(), expected);
    assert_eq!(ids.len(), expected.len());
    assert!(ids.contains("light.lamp_1"));
    assert!(!ids.contains("light.lamp_999"));
}
