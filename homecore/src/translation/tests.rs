//! Tests for `translation`.
