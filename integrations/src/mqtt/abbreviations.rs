//! Discovery abbreviations (placeholder until merged).

use serde_json::{Map, Value};

/// Expands abbreviations.
pub fn expand(payload: &mut Map<String, Value>) {
    for (short, long) in [
        ("stat_t", "state_topic"),
        ("cmd_t", "command_topic"),
        ("avty_t", "availability_topic"),
        ("uniq_id", "unique_id"),
        ("dev", "device"),
        ("val_tpl", "value_template"),
    ] {
        if let Some(value) = payload.remove(short) {
            payload.entry(long.to_owned()).or_insert(value);
        }
    }
    if let Some(Value::String(base)) = payload.remove("~") {
        for (key, value) in payload.iter_mut() {
            if let Value::String(text) = value
                && key.ends_with("_topic")
                && (text.starts_with('~') || text.ends_with('~'))
            {
                *text = text.replace('~', &base);
            }
        }
    }
}
