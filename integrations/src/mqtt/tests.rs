//! Tests of the mqtt integration.
