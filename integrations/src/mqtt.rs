//! The MQTT integration (Home Assistant MQTT discovery): pure parsing helpers.

pub mod abbreviations;
pub mod topic;
pub mod value_template;
