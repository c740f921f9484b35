//! Tests for `entity`.
