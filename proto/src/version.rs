//! The protocol version, the optional features, and the compatibility check of the handshake.
//!
//! Rules: peers of the same major version talk (a newer minor only adds optional fields, message
//! types and features, each announced by a feature string); features either side does not know
//! are ignored; a different major version is refused with a message that says which side to
//! upgrade.

use std::collections::BTreeSet;
use std::fmt;

use semver::Version;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: &str = "1.2.0";

/// Optional features this build supports, announced in `Ready` and `ReadyAck`.
pub const FEATURES: &[&str] = &[
    // `entity_query` calls for query-shaped entity APIs.
    "entity_query",
    // `get_translations` calls.
    "translations",
    // `update_entry` calls from the sandbox.
    "update_entry",
    // `Pong` carries memory and entity counts.
    "ping_stats",
    // `call_service` with `per_entity`: joined entity calls answered one outcome per entity
    // (since 1.1).
    "entity_outcomes",
    // Main sends its core configuration with `entry_setup` and `flow_init`, and pushes
    // `core_config_updated` when it changes (since 1.2).
    "core_config",
    // `entry_remove` calls: an entry's removal hook runs in its sandbox (since 1.2).
    "entry_remove",
];

/// Which side of the protocol a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Main: the hub that embeds the host plugin.
    Host,
    /// A sandbox subprocess.
    Sandbox,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Host => "the host (sandbox-host)",
            Role::Sandbox => "the sandbox (sandbox-runtime)",
        })
    }
}

/// Why two peers cannot talk.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VersionError {
    /// The peer's version is not semver text.
    #[error(
        "{peer} announced protocol version {text:?}, which is not a semver version such as \"1.0.0\""
    )]
    Unparsable {
        /// The peer's role.
        peer: Role,
        /// What it sent.
        text: String,
    },
    /// The major versions differ.
    #[error(
        "{peer} speaks protocol {peer_version} but {local} speaks {local_version}: \
         the major versions differ, so upgrade {upgrade} to a release that speaks protocol {wanted_major}.x"
    )]
    Incompatible {
        /// This side.
        local: Role,
        /// This side's version.
        local_version: Version,
        /// The peer's role.
        peer: Role,
        /// The peer's version.
        peer_version: Version,
        /// The side that must be upgraded (the one with the older major version).
        upgrade: Role,
        /// The major version the upgraded side must speak.
        wanted_major: u64,
    },
}

/// The outcome of a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's protocol version.
    pub peer_version: Version,
    /// Features both sides support.
    pub features: BTreeSet<String>,
}

impl Negotiated {
    /// Whether both sides support `feature`.
    pub fn has(&self, feature: &str) -> bool {
        self.features.contains(feature)
    }
}

/// This build's protocol version.
pub fn protocol_version() -> Version {
    Version::parse(PROTOCOL_VERSION).expect("PROTOCOL_VERSION is valid semver")
}

/// This build's features as owned strings, for `Ready` and `ReadyAck`.
pub fn features() -> Vec<String> {
    FEATURES
        .iter()
        .map(|feature| (*feature).to_owned())
        .collect()
}

/// Checks a peer's announced version and features against this build.
pub fn negotiate(
    local: Role,
    peer_version: &str,
    peer_features: &[String],
) -> Result<Negotiated, VersionError> {
    negotiate_with(
        local,
        &protocol_version(),
        FEATURES,
        peer_version,
        peer_features,
    )
}

/// [`negotiate`] with an explicit local version and feature list (for tests and for peers that
/// speak an older version on purpose).
pub fn negotiate_with(
    local: Role,
    local_version: &Version,
    local_features: &[&str],
    peer_version: &str,
    peer_features: &[String],
) -> Result<Negotiated, VersionError> {
    let peer = match local {
        Role::Host => Role::Sandbox,
        Role::Sandbox => Role::Host,
    };
    let parsed = Version::parse(peer_version.trim()).map_err(|_| VersionError::Unparsable {
        peer,
        text: peer_version.to_owned(),
    })?;
    if parsed.major != local_version.major {
        let (upgrade, wanted_major) = if parsed.major > local_version.major {
            (local, parsed.major)
        } else {
            (peer, local_version.major)
        };
        return Err(VersionError::Incompatible {
            local,
            local_version: local_version.clone(),
            peer,
            peer_version: parsed,
            upgrade,
            wanted_major,
        });
    }
    let features = peer_features
        .iter()
        .filter(|feature| local_features.contains(&feature.as_str()))
        .cloned()
        .collect();
    Ok(Negotiated {
        peer_version: parsed,
        features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn same_major_is_accepted_and_unknown_features_ignored() {
        let negotiated = negotiate(
            Role::Host,
            "1.7.3",
            &strings(&["entity_query", "telepathy"]),
        )
        .expect("compatible");
        assert_eq!(negotiated.peer_version, Version::new(1, 7, 3));
        assert!(negotiated.has("entity_query"));
        assert!(!negotiated.has("telepathy"));
        assert!(
            !negotiated.has("translations"),
            "only features both sides announced"
        );
    }

    #[test]
    fn newer_major_peer_asks_to_upgrade_this_side() {
        let error = negotiate(Role::Host, "2.0.0", &[]).expect_err("incompatible");
        let text = error.to_string();
        assert!(text.contains("upgrade the host (sandbox-host)"), "{text}");
        assert!(text.contains("protocol 2.x"), "{text}");
    }

    #[test]
    fn older_major_peer_is_told_to_upgrade() {
        let error = negotiate_with(Role::Sandbox, &Version::new(2, 1, 0), &[], "1.4.0", &[])
            .expect_err("incompatible");
        let text = error.to_string();
        assert!(text.contains("upgrade the host (sandbox-host)"), "{text}");
        assert!(text.contains("protocol 2.x"), "{text}");
    }

    #[test]
    fn garbage_version_is_refused_clearly() {
        let error = negotiate(Role::Host, "one point oh", &[]).expect_err("unparsable");
        assert!(
            error.to_string().contains("not a semver version"),
            "{error}"
        );
    }
}
