//! Tests for the domain catalog: every row parses, Home Assistant's values, lookups.

use super::*;

#[test]
fn the_embedded_catalog_has_every_platform_and_31_proxyable_domains() {
    let catalog = catalog();
    let proxyable = catalog.proxyable_domains();
    assert_eq!(proxyable.len(), 31);
    for domain in [
        "alarm_control_panel",
        "light",
        "weather",
        "water_heater",
        "valve",
    ] {
        assert!(catalog.is_proxyable(domain), "{domain}");
    }
    for domain in [
        "stt",
        "tts",
        "conversation",
        "assist_satellite",
        "wake_word",
        "camera",
        "image",
        "todo",
    ] {
        let spec = catalog.domain(domain).unwrap();
        assert!(!spec.proxyable, "{domain} must not be proxyable");
    }
    assert!(catalog.domain("no_such_domain").is_none());
}

#[test]
fn rows_carry_home_assistant_bits_services_and_responses() {
    let cover = catalog().domain("cover").unwrap();
    assert_eq!(cover.feature_bit("SET_TILT_POSITION"), Some(128));
    assert_eq!(cover.feature_names(5), ["OPEN", "SET_POSITION"]);
    let toggle = cover.service("toggle").unwrap();
    assert_eq!(toggle.required_features_mask, 3);
    assert!(toggle.is_supported_by(2));
    assert!(!toggle.is_supported_by(4));
    let media = catalog().domain("media_player").unwrap();
    assert_eq!(media.feature_bit("SEARCH_MEDIA"), Some(4_194_304));
    let responding: Vec<&str> = media
        .services_with_response()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(responding, ["browse_media", "search_media"]);
    assert!(media.has_query("browse_media"));
    let weather = catalog().domain("weather").unwrap();
    assert_eq!(
        weather.service("get_forecasts").unwrap().supports_response,
        SupportsResponse::Only
    );
    let light = catalog().domain("light").unwrap();
    assert_eq!(light.all_features(), 4 | 8 | 32);
    let turn_on = light.service("turn_on").unwrap();
    assert_eq!(turn_on.required_features_mask, 0);
    assert_eq!(turn_on.field_features["effect"], "EFFECT");
    let validated = turn_on
        .schema
        .validate(&serde_json::json!({"brightness": "12", "flash": "short"}))
        .unwrap();
    assert_eq!(validated["brightness"], serde_json::json!(12));
    assert!(
        turn_on
            .schema
            .validate(&serde_json::json!({"brightness": 300}))
            .is_err()
    );
    assert!(catalog().domain("fan").unwrap().state.allows("on"));
    assert!(!catalog().domain("fan").unwrap().state.allows("spinning"));
    assert!(
        catalog()
            .domain("device_tracker")
            .unwrap()
            .state
            .allows("office")
    );
    assert!(
        catalog()
            .domain("number")
            .unwrap()
            .state
            .allows("unavailable")
    );
}

#[test]
fn bad_sources_are_refused_with_a_reason() {
    let unknown_flag = r#"{"domains": [{"domain": "x", "proxyable": true, "state": {"kind": "any"},
        "services": [{"name": "go", "features": ["NOPE"]}]}]}"#;
    assert!(matches!(
        Catalog::parse(unknown_flag),
        Err(CatalogError::UnknownFeature { .. })
    ));
    let twice = r#"{"domains": [{"domain": "x", "proxyable": true, "state": {"kind": "any"}},
        {"domain": "x", "proxyable": true, "state": {"kind": "any"}}]}"#;
    assert!(matches!(
        Catalog::parse(twice),
        Err(CatalogError::DuplicateDomain(_))
    ));
    assert!(matches!(
        Catalog::parse("[]"),
        Err(CatalogError::Malformed(_))
    ));
}

#[test]
fn the_catalog_round_trips_as_data() {
    let json = serde_json::to_string(catalog()).unwrap();
    let back: Catalog = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, catalog());
}
