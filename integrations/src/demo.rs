//! The demo integration (being written).

/// The demo integration.
#[derive(Debug, Default)]
pub struct DemoIntegration;
