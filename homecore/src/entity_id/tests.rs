//! Tests for entity id validation and slugs.

use super::*;

#[test]
fn accepts_well_formed_ids() {
    for id in ["light.kitchen", "sensor.t_1", "a.b", "binary_sensor.door_2"] {
        assert!(is_valid_entity_id(id), "{id}");
    }
}

#[test]
fn refuses_malformed_ids_with_a_clear_error() {
    for id in [
        "",
        "light",
        "light.",
        ".kitchen",
        "Light.kitchen",
        "light.Kitchen",
        "light.kit chen",
        "light._kitchen",
        "light.kitchen_",
        "light.kit__chen",
        "_light.kitchen",
        "light.kitchen.extra",
        "light.küche",
    ] {
        let err = validate_entity_id(id).unwrap_err();
        assert_eq!(err, EntityIdError::InvalidFormat(id.to_owned()), "{id}");
        assert!(err.to_string().contains("invalid entity id"));
    }
}

#[test]
fn refuses_overlong_ids() {
    let id = format!("light.{}", "a".repeat(MAX_ENTITY_ID_LENGTH));
    assert!(matches!(
        validate_entity_id(&id),
        Err(EntityIdError::TooLong { .. })
    ));
    let at_limit = format!("light.{}", "a".repeat(MAX_ENTITY_ID_LENGTH - 6));
    assert!(is_valid_entity_id(&at_limit));
}

#[test]
fn domains() {
    assert!(is_valid_domain("hue"));
    assert!(is_valid_domain("media_player"));
    assert!(!is_valid_domain("Hue"));
    assert!(!is_valid_domain("a.b"));
    assert!(!is_valid_domain(&"a".repeat(MAX_DOMAIN_LENGTH + 1)));
}

#[test]
fn split() {
    assert_eq!(
        split_entity_id("light.kitchen").unwrap(),
        ("light", "kitchen")
    );
    assert!(split_entity_id("nope").is_err());
}

#[test]
fn slugify_like_home_assistant() {
    assert_eq!(slugify("Living Room Lamp"), "living_room_lamp");
    assert_eq!(slugify("  --Hello,  World!! "), "hello_world");
    assert_eq!(slugify("Küche Decke"), "kueche_decke");
    assert_eq!(slugify("Café"), "cafe");
    assert_eq!(slugify("温度"), "");
    assert_eq!(slugify("Temp 2"), "temp_2");
}

proptest::proptest! {
    #[test]
    fn slugs_of_anything_are_valid_object_ids(text in ".{0,40}") {
        let slug = slugify(&text);
        if !slug.is_empty() {
            let id = format!("sensor.{slug}");
            proptest::prop_assert!(is_valid_entity_id(&id), "{}", id);
        }
    }
}
