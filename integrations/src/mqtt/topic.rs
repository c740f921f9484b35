//! MQTT topics: Home Assistant's discovery topic (`<prefix>/<component>/[<node_id>/]<object_id>/config`),
//! MQTT 3.1.1 topic filter matching, and the checks of a topic one may publish to and of a filter
//! one may subscribe to. Pure; every function is linear in its inputs.

#[cfg(test)]
#[path = "tests/topic.rs"]
mod tests;

/// The longest topic or filter accepted by [`check_topic`] and [`check_filter`], in bytes. MQTT
/// allows 65,535; real topics are well under 200 bytes (a prefix, a device name, a few levels).
/// Topics from discovery are kept per entity, logged and subscribed to, so one kilobyte is the
/// bound past which a topic is a hostile or broken configuration rather than a device's.
pub const MAX_TOPIC_BYTES: usize = 1024;

/// The last level of a discovery topic.
pub const DISCOVERY_CONFIG_LEVEL: &str = "config";

/// A discovery topic's parts: `<prefix>/<component>/[<node_id>/]<object_id>/config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryTopic {
    /// The component (`sensor`, `light`, ... or `device` for a device discovery payload).
    pub component: String,
    /// The optional node id, which only structures the topic.
    pub node_id: Option<String>,
    /// The object id.
    pub object_id: String,
}

impl DiscoveryTopic {
    /// Home Assistant's discovery id: `"<node_id> <object_id>"`, or `"<object_id>"` without a
    /// node id. With the component it identifies a discovered item (its "discovery hash").
    pub fn discovery_id(&self) -> String {
        match &self.node_id {
            Some(node_id) => format!("{node_id} {}", self.object_id),
            None => self.object_id.clone(),
        }
    }
}

/// Parses `topic` as a discovery topic under `prefix` (the discovery prefix, `homeassistant` by
/// default; it may have several levels). `None` for any other topic under the prefix, as Home
/// Assistant ignores them: the levels after the prefix must be exactly component, optional node
/// id, object id and `config`; the component `[a-zA-Z0-9_]+` and the ids `[a-zA-Z0-9_-]+`.
pub fn parse_discovery_topic(prefix: &str, topic: &str) -> Option<DiscoveryTopic> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let mut levels = rest.split('/');
    let component = levels.next()?;
    let second = levels.next()?;
    let third = levels.next()?;
    let (node_id, object_id, last) = match levels.next() {
        None => (None, second, third),
        Some(fourth) => (Some(second), third, fourth),
    };
    if levels.next().is_some() || last != DISCOVERY_CONFIG_LEVEL {
        return None;
    }
    let is_component = |level: &str| {
        !level.is_empty()
            && level
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if !is_component(component) || !is_discovery_id(object_id) {
        return None;
    }
    if let Some(node_id) = node_id
        && !is_discovery_id(node_id)
    {
        return None;
    }
    Some(DiscoveryTopic {
        component: component.to_owned(),
        node_id: node_id.map(str::to_owned),
        object_id: object_id.to_owned(),
    })
}

fn is_discovery_id(level: &str) -> bool {
    !level.is_empty()
        && level
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `topic` matches the MQTT 3.1.1 topic `filter`: `+` matches exactly one level (which
/// may be empty), `#` (last) matches the rest, the parent level included (`a/#` matches `a`);
/// a filter starting with a wildcard does not match a topic starting with `$` (`$SYS/...`).
/// An invalid filter (see [`check_filter`]) or an empty topic matches nothing.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.is_empty() || check_filter(filter).is_err() {
        return false;
    }
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for filter_level in filter.split('/') {
        if filter_level == "#" {
            return true;
        }
        match topic_levels.next() {
            Some(topic_level) if filter_level == "+" || filter_level == topic_level => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// Why a topic or a filter is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty (MQTT requires at least one character).
    #[error("the topic is empty")]
    Empty,
    /// Longer than [`MAX_TOPIC_BYTES`].
    #[error("the topic is {len} bytes long, more than {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// [`MAX_TOPIC_BYTES`].
        max: usize,
    },
    /// Holds a NUL character, which MQTT forbids.
    #[error("the topic holds a NUL character")]
    Nul,
    /// A topic to publish to holds a wildcard.
    #[error("the topic holds the wildcard `{0}`, which only filters may hold")]
    Wildcard(char),
    /// A filter's `#` is not the last level.
    #[error("the filter's `#` is not its last level")]
    MultiLevelWildcardNotLast,
    /// A filter's wildcard shares its level with other characters.
    #[error("the filter's wildcard `{0}` does not fill its level alone")]
    WildcardNotAlone(char),
}

/// Checks a topic one may publish to: not empty, at most [`MAX_TOPIC_BYTES`], no NUL, no
/// wildcard (`+`, `#`).
pub fn check_topic(topic: &str) -> Result<(), TopicError> {
    check_common(topic)?;
    match topic.chars().find(|c| *c == '+' || *c == '#') {
        Some(wildcard) => Err(TopicError::Wildcard(wildcard)),
        None => Ok(()),
    }
}

/// Checks a filter one may subscribe to: not empty, at most [`MAX_TOPIC_BYTES`], no NUL, `+`
/// and `#` alone in their level, `#` only as the last level.
pub fn check_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "+" => {}
            "#" if levels.peek().is_none() => {}
            "#" => return Err(TopicError::MultiLevelWildcardNotLast),
            _ => {
                if let Some(wildcard) = level.chars().find(|c| *c == '+' || *c == '#') {
                    return Err(TopicError::WildcardNotAlone(wildcard));
                }
            }
        }
    }
    Ok(())
}

fn check_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong {
            len: topic.len(),
            max: MAX_TOPIC_BYTES,
        });
    }
    if topic.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}
