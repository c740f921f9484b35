//! Tests for `integration`.
