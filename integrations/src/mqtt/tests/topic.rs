//! Tests of discovery topic parsing, filter matching and the topic checks.

use super::*;

fn discovery(component: &str, node_id: Option<&str>, object_id: &str) -> DiscoveryTopic {
    DiscoveryTopic {
        component: component.into(),
        node_id: node_id.map(Into::into),
        object_id: object_id.into(),
    }
}

#[test]
fn discovery_topics_parse_with_and_without_a_node_id() {
    assert_eq!(
        parse_discovery_topic("homeassistant", "homeassistant/sensor/bedroom_t/config"),
        Some(discovery("sensor", None, "bedroom_t"))
    );
    assert_eq!(
        parse_discovery_topic(
            "homeassistant",
            "homeassistant/light/0x00178801021b2d3e/light/config"
        ),
        Some(discovery("light", Some("0x00178801021b2d3e"), "light"))
    );
    assert_eq!(
        parse_discovery_topic("homeassistant", "homeassistant/device/dev-1_A/config"),
        Some(discovery("device", None, "dev-1_A"))
    );
    // A prefix of several levels.
    assert_eq!(
        parse_discovery_topic("site/ha", "site/ha/switch/node/obj/config"),
        Some(discovery("switch", Some("node"), "obj"))
    );
    // The object id may itself be `config`.
    assert_eq!(
        parse_discovery_topic("ha", "ha/sensor/config/config"),
        Some(discovery("sensor", None, "config"))
    );
}

#[test]
fn other_topics_under_the_prefix_are_not_discovery_topics() {
    let prefix = "homeassistant";
    for topic in [
        "homeassistant/status",
        "homeassistant/sensor/config",
        "homeassistant/sensor/a/state",
        "homeassistant/sensor/a/b/c/config",
        "homeassistant/sensor/a/config/extra",
        "homeassistant/sensor//config",
        "homeassistant/sensor/a//config",
        "homeassistant//a/config",
        "homeassistant/sensor/a b/config",
        "homeassistant/sensor/a.b/config",
        "homeassistant/sensor/a+/config",
        "homeassistant/sensor/caf\u{e9}/config",
        "homeassistant/sen-sor/a/config",
        "homeassistant/sensor/a/CONFIG",
        "homeassistantx/sensor/a/config",
        "other/sensor/a/config",
        "homeassistant",
        "",
    ] {
        assert_eq!(parse_discovery_topic(prefix, topic), None, "{topic}");
    }
}

#[test]
fn the_discovery_id_joins_node_and_object_with_a_space() {
    assert_eq!(discovery("sensor", None, "obj").discovery_id(), "obj");
    assert_eq!(
        discovery("sensor", Some("node"), "obj").discovery_id(),
        "node obj"
    );
}

#[test]
fn filters_match_as_mqtt_says() {
    let cases: &[(&str, &str, bool)] = &[
        ("a/b", "a/b", true),
        ("a/b", "a/c", false),
        ("a/b", "a/b/c", false),
        ("a/b/c", "a/b", false),
        ("a/+", "a/b", true),
        ("a/+", "a/", true),
        ("a/+", "a", false),
        ("a/+", "a/b/c", false),
        ("+/+", "/", true),
        ("+", "a", true),
        ("+", "/a", false),
        ("/+", "/a", true),
        ("a/+/c", "a/b/c", true),
        ("a/+/c", "a//c", true),
        ("a/#", "a", true),
        ("a/#", "a/", true),
        ("a/#", "a/b/c", true),
        ("a/#", "ab", false),
        ("a/#", "b/a", false),
        ("#", "a/b/c", true),
        ("#", "/", true),
        ("+/#", "a", true),
        ("a//b", "a//b", true),
        ("a//b", "a/b", false),
        // `$` topics are not matched by a leading wildcard, only by a literal first level.
        ("#", "$SYS/broker/uptime", false),
        ("+/b", "$SYS/b", false),
        ("+/#", "$SYS/b", false),
        ("$SYS/#", "$SYS/broker/uptime", true),
        ("$SYS/+", "$SYS/b", true),
        ("a/+", "a/$b", true),
        // Invalid filters and empty topics match nothing.
        ("a/b#", "a/b#", false),
        ("a/#/b", "a/x/b", false),
        ("a+", "a+", false),
        ("", "", false),
        ("#", "", false),
    ];
    for (filter, topic, expected) in cases {
        assert_eq!(
            filter_matches(filter, topic),
            *expected,
            "{filter:?} against {topic:?}"
        );
    }
}

#[test]
fn topics_to_publish_to_are_checked() {
    assert_eq!(check_topic("zigbee2mqtt/Kitchen light/set"), Ok(()));
    assert_eq!(check_topic("/"), Ok(()));
    assert_eq!(check_topic("$SYS/x"), Ok(()));
    assert_eq!(check_topic(""), Err(TopicError::Empty));
    assert_eq!(check_topic("a/+/b"), Err(TopicError::Wildcard('+')));
    assert_eq!(check_topic("a/#"), Err(TopicError::Wildcard('#')));
    assert_eq!(check_topic("a\0b"), Err(TopicError::Nul));
    assert_eq!(check_topic(&"a".repeat(MAX_TOPIC_BYTES)), Ok(()));
    assert_eq!(
        check_topic(&"a".repeat(MAX_TOPIC_BYTES + 1)),
        Err(TopicError::TooLong {
            len: MAX_TOPIC_BYTES + 1,
            max: MAX_TOPIC_BYTES
        })
    );
    // The bound is in bytes, not characters.
    let wide = "\u{e9}".repeat(MAX_TOPIC_BYTES / 2 + 1);
    assert!(matches!(
        check_topic(&wide),
        Err(TopicError::TooLong { .. })
    ));
}

#[test]
fn filters_are_checked() {
    for valid in ["#", "+", "a/#", "a/+/b", "+/+/#", "/", "a//b", "$SYS/#"] {
        assert_eq!(check_filter(valid), Ok(()), "{valid}");
    }
    assert_eq!(check_filter(""), Err(TopicError::Empty));
    assert_eq!(
        check_filter("a/#/b"),
        Err(TopicError::MultiLevelWildcardNotLast)
    );
    assert_eq!(
        check_filter("#/#"),
        Err(TopicError::MultiLevelWildcardNotLast)
    );
    assert_eq!(check_filter("a/b#"), Err(TopicError::WildcardNotAlone('#')));
    assert_eq!(check_filter("a/+b"), Err(TopicError::WildcardNotAlone('+')));
    assert_eq!(check_filter("a+/b"), Err(TopicError::WildcardNotAlone('+')));
    assert_eq!(check_filter("a\0/#"), Err(TopicError::Nul));
    assert!(matches!(
        check_filter(&"+/".repeat(MAX_TOPIC_BYTES)),
        Err(TopicError::TooLong { .. })
    ));
}

#[test]
fn error_messages_say_what_is_wrong() {
    assert_eq!(
        TopicError::Wildcard('+').to_string(),
        "the topic holds the wildcard `+`, which only filters may hold"
    );
    assert_eq!(
        TopicError::TooLong {
            len: 2000,
            max: 1024
        }
        .to_string(),
        "the topic is 2000 bytes long, more than 1024"
    );
}
