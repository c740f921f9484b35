//! Integrations that misbehave on purpose, to prove the host survives them (being written).

use std::sync::Arc;

use homecore::Integration;

/// Every misbehaving integration, freshly made.
pub fn all() -> Vec<Arc<dyn Integration>> {
    Vec::new()
}
