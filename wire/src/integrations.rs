//! Manifests as a sandbox's `ready` announces them to main.

use homecore::integration::Manifest;
use sandbox_proto::wire::IntegrationInfo;

use crate::enum_name;

/// A manifest as `ready` announces it.
pub fn manifest_to_wire(manifest: &Manifest) -> IntegrationInfo {
    IntegrationInfo {
        domain: manifest.domain.clone(),
        name: manifest.name.clone(),
        version: manifest.version.to_string(),
        integration_type: enum_name(&manifest.integration_type),
        config_flow: manifest.config_flow,
        platforms: manifest.platforms.clone(),
        dependencies: manifest.dependencies.clone(),
    }
}
