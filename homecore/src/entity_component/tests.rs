//! Tests for `entity_component`.
