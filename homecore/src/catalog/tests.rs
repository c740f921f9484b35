//! Tests for `catalog`.
