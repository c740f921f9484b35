//! The classifier: where an integration runs, decided by main alone at flow creation.
//!
//! First match wins:
//! 1. `system` integrations run on main;
//! 2. the [`ALWAYS_MAIN`] list runs on main (integrations that read entities or registries they
//!    do not own, which a sandbox cannot see);
//! 3. an integration with a platform that cannot be proxied (camera, tts, todo, ...) runs on main;
//! 4. a custom integration runs in its own group, `custom-<domain>`;
//! 5. every other built-in runs in the [`BUILT_IN_GROUP`].

use homecore::integration::{IntegrationType, Manifest};

/// The group of the built-in integrations.
pub const BUILT_IN_GROUP: &str = "built-in";

/// The prefix of a custom integration's own group.
pub const CUSTOM_GROUP_PREFIX: &str = "custom-";

/// Integrations that always run on main: automations and scripts, and helpers that read
/// entities, states or registries they do not own.
pub const ALWAYS_MAIN: &[&str] = &[
    // Run the home's logic over every entity.
    "automation",
    "script",
    "scene",
    // Broad readers.
    "template",
    "group",
    "homekit",
    // Exposes every entity to voice assistants and the remote front end.
    "cloud",
    // Helpers computed from other entities.
    "min_max",
    "statistics",
    "trend",
    "threshold",
    "derivative",
    "integration",
    "utility_meter",
    "filter",
    "mold_indicator",
    "bayesian",
    "generic_thermostat",
    "generic_hygrostat",
    "switch_as_x",
    "history_stats",
    "proximity",
    // Consumers of media and AI pipelines that live on main.
    "ai_task",
    "image",
    "media_source",
];

/// Where an integration runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// In the main process; the reason, for logs.
    Main(&'static str),
    /// In this sandbox group.
    Group(String),
}

/// Decides where `manifest`'s integration runs; `custom` marks integrations that are not
/// built in (delivered as a pinned artifact).
pub fn classify(manifest: &Manifest, custom: bool) -> Placement {
    if manifest.integration_type == IntegrationType::System {
        return Placement::Main("a system integration");
    }
    if ALWAYS_MAIN.contains(&manifest.domain.as_str()) {
        return Placement::Main("reads entities it does not own");
    }
    if !manifest.unproxyable_platforms().is_empty() {
        return Placement::Main("has a platform that cannot be proxied");
    }
    if custom {
        return Placement::Group(format!("{CUSTOM_GROUP_PREFIX}{}", manifest.domain));
    }
    Placement::Group(BUILT_IN_GROUP.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(domain: &str, integration_type: IntegrationType, platforms: &[&str]) -> Manifest {
        Manifest {
            domain: domain.into(),
            name: domain.into(),
            version: semver::Version::new(1, 0, 0),
            integration_type,
            config_flow: true,
            platforms: platforms
                .iter()
                .map(|platform| (*platform).to_owned())
                .collect(),
            dependencies: vec![],
            iot_class: None,
            single_config_entry: false,
        }
    }

    #[test]
    fn first_match_wins() {
        let system = manifest("demo", IntegrationType::System, &["light"]);
        assert_eq!(
            classify(&system, true),
            Placement::Main("a system integration")
        );
        let template = manifest("template", IntegrationType::Helper, &["sensor"]);
        assert_eq!(
            classify(&template, false),
            Placement::Main("reads entities it does not own")
        );
        let camera = manifest(
            "doorbell",
            IntegrationType::Device,
            &["camera", "binary_sensor"],
        );
        assert_eq!(
            classify(&camera, true),
            Placement::Main("has a platform that cannot be proxied")
        );
        let custom = manifest("acme", IntegrationType::Hub, &["light"]);
        assert_eq!(
            classify(&custom, true),
            Placement::Group("custom-acme".into())
        );
        let demo = manifest("demo", IntegrationType::Hub, &["light", "sensor"]);
        assert_eq!(classify(&demo, false), Placement::Group("built-in".into()));
    }

    #[test]
    fn cloud_runs_on_main_even_with_only_proxyable_platforms() {
        let cloud = manifest("cloud", IntegrationType::Service, &["binary_sensor"]);
        assert_eq!(
            classify(&cloud, false),
            Placement::Main("reads entities it does not own")
        );
    }

    #[test]
    fn the_always_main_list_has_no_duplicates() {
        let mut sorted = ALWAYS_MAIN.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALWAYS_MAIN.len());
    }
}
