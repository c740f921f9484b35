//! Topics: discovery topics, filter matching and topic checks (placeholder until merged).

/// A parsed discovery topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryTopic {
    /// The component.
    pub component: String,
    /// The node id.
    pub node_id: Option<String>,
    /// The object id.
    pub object_id: String,
}

impl DiscoveryTopic {
    /// The discovery id.
    pub fn discovery_id(&self) -> String {
        match &self.node_id {
            Some(node) => format!("{node} {}", self.object_id),
            None => self.object_id.clone(),
        }
    }
}

/// Parses a discovery topic.
pub fn parse_discovery_topic(prefix: &str, topic: &str) -> Option<DiscoveryTopic> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [component, object, "config"] => Some(DiscoveryTopic {
            component: (*component).to_owned(),
            node_id: None,
            object_id: (*object).to_owned(),
        }),
        [component, node, object, "config"] => Some(DiscoveryTopic {
            component: (*component).to_owned(),
            node_id: Some((*node).to_owned()),
            object_id: (*object).to_owned(),
        }),
        _ => None,
    }
}

/// Whether a filter matches a topic.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            exact => {
                if topic_levels.next() != Some(exact) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

/// A topic problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Bad.
    #[error("invalid topic")]
    Invalid,
}

/// Checks a topic to publish to.
pub fn check_topic(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() || topic.contains(['+', '#', '\0']) || topic.len() > 1024 {
        return Err(TopicError::Invalid);
    }
    Ok(())
}

/// Checks a filter.
pub fn check_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() || filter.contains('\0') || filter.len() > 1024 {
        return Err(TopicError::Invalid);
    }
    Ok(())
}
