//! An example custom integration built as its own sandbox binary (being written).
