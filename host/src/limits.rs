//! The bounds on what a sandbox sends: every value main keeps, stores or logs is checked here
//! first, in size, count and nesting depth, against a named constant.
//!
//! The frame limit (`MAX_FRAME_LEN`, 16 MiB) bounds one message; these bound what main does
//! with its parts, so a million small messages or one message a million times too big cost a
//! refusal, never main's memory or disk. Each refusal is a [`LimitError`], counted by the
//! bridge under the `bounds` gate.

use serde_json::{Map, Value};

/// Deepest nesting of arrays and objects main accepts in any JSON a sandbox sends (store
/// values, attributes, capabilities, entry data, event data, service schemas). Real payloads
/// nest a handful of levels; a bound keeps parsing, serializing and pretty-printing linear and
/// the stack shallow (a deeply nested 1 MiB value pretty-printed grows ~120 times).
pub const MAX_JSON_DEPTH: usize = 32;

/// Levels a store envelope puts around a value main accepted within [`MAX_JSON_DEPTH`]: the
/// restore state keeps an entity's attributes at `envelope.data[i].state.attributes`, four
/// levels below the envelope's top (the envelope, the list of states, a stored state, the
/// state). Without them a state main took would fail to be stored and be lost at a restart.
pub const STORE_ENVELOPE_LEVELS: usize = 4;

/// Deepest nesting of a store envelope a sandbox saves: [`MAX_JSON_DEPTH`] plus
/// [`STORE_ENVELOPE_LEVELS`], so a restore state whose entities' attributes and extra data are
/// within the bound is stored whole.
pub const MAX_STORED_JSON_DEPTH: usize = MAX_JSON_DEPTH + STORE_ENVELOPE_LEVELS;

/// Largest state attributes JSON of one entity, in bytes. Home Assistant's recorder stops
/// recording attributes past 16 KiB; four times that leaves room for long lists (media
/// sources, effect lists) while a group's entities cannot pin more than
/// [`MAX_GROUP_MIRRORED_BYTES`].
pub const MAX_STATE_ATTRIBUTES_BYTES: usize = 64 * 1024;

/// Largest `capabilities_json` of one entity description, in bytes. Capabilities (min/max,
/// option and effect lists) are static and stored in main's entity registry.
pub const MAX_CAPABILITIES_BYTES: usize = 16 * 1024;

/// Largest `data_json` and `options_json` of one `update_entry`, each, in bytes. Entry data is
/// settings and credentials, stored in main's own `core.config_entries`, which has no quota.
pub const MAX_ENTRY_DATA_BYTES: usize = 64 * 1024;

/// Largest event data JSON, in bytes (Home Assistant's recorder limit for event data).
pub const MAX_EVENT_DATA_BYTES: usize = 32 * 1024;

/// Most services one group may register on main. Integrations register a handful each; each
/// service keeps its parsed schema (up to [`MAX_SCHEMA_BYTES`]) on main.
pub const MAX_SERVICES_PER_GROUP: usize = 256;

/// Largest schema JSON a sandbox sends (a service's, or a flow form's), in bytes.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// Largest `errors_json` and `description_placeholders_json` of a flow result, each, in bytes.
pub const MAX_FLOW_JSON_BYTES: usize = 16 * 1024;

/// Longest description of a flow result, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 4 * 1024;

/// Most options of a flow menu.
pub const MAX_MENU_OPTIONS: usize = 64;

/// Largest service response or entity query result JSON main takes from a sandbox, in bytes.
/// A response goes to the caller (a script keeps it as a variable, the API sends it on); a calendar's month or a week of forecasts is tens of KiB.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Largest translations JSON main takes from a sandbox for one request, in bytes (main caches
/// the strings it asked for).
pub const MAX_TRANSLATIONS_BYTES: usize = 1024 * 1024;

/// Longest setup or unload failure reason main keeps from a sandbox, in bytes (it is the
/// entry's reason, shown and logged on every retry).
pub const MAX_REASON_BYTES: usize = 1024;

/// Longest context id a sandbox may send: a ULID is 26 characters. A longer id is refused
/// (counted) and gets a fresh main context, so an id can never grow main's context cache.
pub const MAX_CONTEXT_ID_LEN: usize = 26;

/// Most entities one group may have proxied on main at once (the default of
/// `GroupConfig::max_entities`). Generous for any real integration set (a large Zigbee or
/// MQTT install has a few thousand); a sandbox registering without end is refused past it.
pub const MAX_ENTITIES_PER_GROUP: usize = 10_000;

/// Entity registry entries a group's config entries may have on main per entity of its cap:
/// registry entries outlive their entities (a removed entity keeps its id and settings), so
/// some churn is normal; a group registering ever new unique ids is refused past this. The
/// group's devices are held to its entity cap.
pub const REGISTRY_ENTRIES_PER_ENTITY: usize = 2;

/// Most memory the entity registry entries and devices of one group's config entries may take
/// on main, estimated ([`registry_entry_size`], [`device_size`]). They outlive proxies and are
/// written to main's registry files; with the count caps alone, 20,000 entries with full
/// capabilities would be gigabytes.
pub const MAX_GROUP_REGISTRY_BYTES: usize = 64 * 1024 * 1024;

/// What an entity registry entry costs besides the texts and capabilities it copies from a
/// description: its fixed fields (ids, timestamps, options), in bytes.
pub const REGISTRY_RECORD_OVERHEAD: usize = 1024;

/// The estimated size of the entity registry entry `description` creates.
pub fn registry_entry_size(description: &sandbox_proto::wire::EntityDescription) -> usize {
    let texts = [
        Some(&description.entity_id),
        Some(&description.platform),
        description.unique_id.as_ref(),
        description.name.as_ref(),
        description.translation_key.as_ref(),
        description.icon.as_ref(),
        description.device_class.as_ref(),
        description.unit_of_measurement.as_ref(),
    ];
    REGISTRY_RECORD_OVERHEAD
        + held_size(&description.capabilities_json)
        + texts.into_iter().flatten().map(String::len).sum::<usize>()
}

/// The estimated size of the device `device` creates.
pub fn device_size(device: &sandbox_proto::wire::DeviceInfo) -> usize {
    let keys: usize = device
        .identifiers
        .iter()
        .chain(&device.connections)
        .chain(&device.via_device)
        .map(|pair| pair.first.len() + pair.second.len() + JSON_VALUE_OVERHEAD)
        .sum();
    let texts = [
        &device.name,
        &device.manufacturer,
        &device.model,
        &device.model_id,
        &device.sw_version,
        &device.hw_version,
        &device.serial_number,
        &device.entry_type,
        &device.configuration_url,
        &device.suggested_area,
    ];
    REGISTRY_RECORD_OVERHEAD + keys + texts.into_iter().flatten().map(String::len).sum::<usize>()
}

/// The estimated size of entity registry entry `entry` as main holds it, on the basis of
/// [`refreshed_entry_size`]: what a re-description or a new registration of its unique id
/// changes is charged as the difference of the two.
pub fn registered_entry_size(entry: &homecore::RegistryEntry) -> usize {
    registry_fields_size(
        [&entry.entity_id, &entry.platform, &entry.unique_id],
        [
            entry.original_name.as_ref(),
            entry.translation_key.as_ref(),
            entry.original_icon.as_ref(),
            entry.original_device_class.as_ref(),
            entry.unit_of_measurement.as_ref(),
        ],
        entry.capabilities.as_ref(),
    )
}

/// The estimated size of entity registry entry `entry` once `description` refreshed it: its
/// ids stay, its texts and capabilities become the description's (as the core's registration
/// of a known unique id does).
pub fn refreshed_entry_size(
    entry: &homecore::RegistryEntry,
    description: &sandbox_proto::wire::EntityDescription,
) -> usize {
    let capabilities =
        sandbox_proto::json::object_from_bytes(&description.capabilities_json).unwrap_or_default();
    registry_fields_size(
        [&entry.entity_id, &entry.platform, &entry.unique_id],
        [
            description.name.as_ref(),
            description.translation_key.as_ref(),
            description.icon.as_ref(),
            description.device_class.as_ref(),
            description.unit_of_measurement.as_ref(),
        ],
        (!capabilities.is_empty()).then_some(&capabilities),
    )
}

/// [`REGISTRY_RECORD_OVERHEAD`] plus the texts and the parsed capabilities of a registry entry;
/// capabilities are measured as main serializes them, so two descriptions of equal content
/// cost the same whatever their whitespace.
fn registry_fields_size(
    ids: [&String; 3],
    texts: [Option<&String>; 5],
    capabilities: Option<&Map<String, Value>>,
) -> usize {
    let capabilities = capabilities.map_or(0, |capabilities| {
        serde_json::to_vec(capabilities).map_or(0, |json| held_size(&json))
    });
    REGISTRY_RECORD_OVERHEAD
        + capabilities
        + ids.into_iter().map(String::len).sum::<usize>()
        + texts.into_iter().flatten().map(String::len).sum::<usize>()
}

/// The estimated size of device `device` as main holds it, on the basis of
/// [`merged_device_size`].
pub fn registered_device_size(device: &homecore::DeviceEntry) -> usize {
    let keys: usize = device
        .identifiers
        .iter()
        .chain(&device.connections)
        .map(|(kind, value)| kind.len() + value.len() + JSON_VALUE_OVERHEAD)
        .sum();
    let texts = [
        &device.name,
        &device.manufacturer,
        &device.model,
        &device.model_id,
        &device.sw_version,
        &device.hw_version,
        &device.serial_number,
        &device.configuration_url,
        &device.suggested_area,
        &device.via_device_id,
    ];
    REGISTRY_RECORD_OVERHEAD + keys + texts.into_iter().flatten().map(String::len).sum::<usize>()
}

/// The estimated size of device `held` once `device` merged into it, as the core's device
/// registry merges: identifiers and connections joined, each text the description gives
/// replacing the one held.
pub fn merged_device_size(
    held: &homecore::DeviceEntry,
    device: &sandbox_proto::wire::DeviceInfo,
) -> usize {
    use homecore::device_registry::normalize_connection;
    let mut merged = held.clone();
    let pair = |pair: &sandbox_proto::wire::StringPair| (pair.first.clone(), pair.second.clone());
    for key in device.identifiers.iter().map(pair) {
        if !merged.identifiers.contains(&key) {
            merged.identifiers.push(key);
        }
    }
    for key in device
        .connections
        .iter()
        .map(|key| normalize_connection(&pair(key)))
    {
        if !merged.connections.contains(&key) {
            merged.connections.push(key);
        }
    }
    let texts = [
        (&mut merged.name, &device.name),
        (&mut merged.manufacturer, &device.manufacturer),
        (&mut merged.model, &device.model),
        (&mut merged.model_id, &device.model_id),
        (&mut merged.sw_version, &device.sw_version),
        (&mut merged.hw_version, &device.hw_version),
        (&mut merged.serial_number, &device.serial_number),
        (&mut merged.configuration_url, &device.configuration_url),
    ];
    for (held, given) in texts {
        if given.is_some() {
            held.clone_from(given);
        }
    }
    registered_device_size(&merged)
}

/// Most memory the attributes and capabilities of one group's proxies may take on main
/// together, as [`held_size`] estimates it from their JSON. With [`MAX_ENTITIES_PER_GROUP`]
/// entities at their own bounds a group could pin gigabytes; this keeps a group's mirrored
/// data to a known size whatever it registers.
pub const MAX_GROUP_MIRRORED_BYTES: usize = 64 * 1024 * 1024;

/// Longest short text of a description (ids, names, icons, units, device fields), a state, a
/// title, in bytes: Home Assistant's 255-character limit of entity ids and states, at up to 4
/// bytes a character (a name in Greek or Chinese is as welcome as one in English).
pub const MAX_TEXT_BYTES: usize = 4 * homecore::state::MAX_STATE_LENGTH;

/// Longest `configuration_url` of a device, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Most identifiers, and most connections, of one device.
pub const MAX_DEVICE_KEYS: usize = 16;

/// Longest message main logs or sends back about a refusal, in bytes: a refusal quotes what the
/// sandbox sent (an id, a name), and a quote must not carry a 16 MiB id into main's log or
/// into a reply larger than a frame.
pub const MAX_MESSAGE_BYTES: usize = 512;

/// Whether a character must not reach a log line as it is: control characters (a line break
/// would let a sandbox forge log lines), line and paragraph separators, and the bidirectional
/// overrides that make a line read other than it is.
fn must_escape(character: char) -> bool {
    character.is_control()
        || matches!(
            character,
            '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` cut to at most `max` bytes at a character boundary (with `…` when cut), the
/// characters of [`must_escape`] shown escaped: safe to log and bounded.
pub fn bounded_text(text: &str, max: usize) -> String {
    let shown_len = |character: char| {
        if must_escape(character) {
            character.escape_default().len()
        } else {
            character.len_utf8()
        }
    };
    let fits = text
        .chars()
        .try_fold(0usize, |len, character| {
            let len = len + shown_len(character);
            (len <= max).then_some(len)
        })
        .is_some();
    let budget = if fits {
        max
    } else {
        max.saturating_sub('…'.len_utf8())
    };
    let mut out = String::with_capacity(text.len().min(max));
    for character in text.chars() {
        if out.len() + shown_len(character) > budget {
            out.push('…');
            break;
        }
        if must_escape(character) {
            out.extend(character.escape_default());
        } else {
            out.push(character);
        }
    }
    out
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Too many bytes.
    #[error("{field} is {len} bytes; the limit is {max}")]
    TooLarge {
        /// What was sent.
        field: String,
        /// Its size.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Nested too deep.
    #[error("{field} nests deeper than {max} levels")]
    TooDeep {
        /// What was sent.
        field: String,
        /// The bound.
        max: usize,
    },
    /// Too many items.
    #[error("{field} has {count} items; the limit is {max}")]
    TooMany {
        /// What was sent.
        field: String,
        /// How many.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A link of a scheme a front end must not follow (`javascript:`, `data:`, `file:`).
    #[error("{field} {url:?} is not an http, https or homeassistant:// link")]
    UnsafeUrl {
        /// What was sent.
        field: String,
        /// The link, cut to [`MAX_MESSAGE_BYTES`].
        url: String,
    },
    /// Not JSON, or not the JSON shape expected.
    #[error("{field} is not {expected}: {message}")]
    NotJson {
        /// What was sent.
        field: String,
        /// What it should be.
        expected: &'static str,
        /// Why.
        message: String,
    },
}

/// The bytes of `json` outside its strings (quotes included): where its structure is. One pass,
/// no allocation: the scans below run before any parsing, so a hostile value costs its length
/// and nothing more.
fn structure(json: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let (mut in_string, mut escaped) = (false, false);
    json.iter().copied().filter(move |&byte| {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            false
        } else {
            in_string = byte == b'"';
            true
        }
    })
}

/// Whether `json` nests arrays and objects deeper than `max`.
pub fn nests_deeper_than(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    for byte in structure(json) {
        match byte {
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// What one parsed JSON value or object entry costs in memory besides its text, in bytes: a
/// `serde_json::Value` is 32 bytes, an ordered map entry about twice that with its index.
pub const JSON_VALUE_OVERHEAD: usize = 64;

/// The memory a JSON text takes once parsed, estimated from its text: its bytes plus
/// [`JSON_VALUE_OVERHEAD`] per value (counted by its separators). `[0,0,0,…]` is 2 bytes a
/// value as text and about 32 parsed; budgets of what main keeps are charged this, not the
/// text's length.
pub fn held_size(json: &[u8]) -> usize {
    if json.is_empty() {
        return 0;
    }
    let separators = structure(json)
        .filter(|byte| matches!(byte, b'[' | b'{' | b',' | b':'))
        .count();
    json.len() + (separators + 1) * JSON_VALUE_OVERHEAD
}

/// Checks size and depth of a JSON value before it is parsed.
pub fn check_json(field: &str, json: &[u8], max_bytes: usize) -> Result<(), LimitError> {
    if json.len() > max_bytes {
        return Err(LimitError::TooLarge {
            field: field.to_owned(),
            len: json.len(),
            max: max_bytes,
        });
    }
    if nests_deeper_than(json, MAX_JSON_DEPTH) {
        return Err(LimitError::TooDeep {
            field: field.to_owned(),
            max: MAX_JSON_DEPTH,
        });
    }
    Ok(())
}

/// A JSON object within `max_bytes` and [`MAX_JSON_DEPTH`]; empty bytes (a proto3 default) are
/// the empty object.
pub fn bounded_object(
    field: &str,
    json: &[u8],
    max_bytes: usize,
) -> Result<Map<String, Value>, LimitError> {
    check_json(field, json, max_bytes)?;
    sandbox_proto::json::object_from_bytes(json).map_err(|error| LimitError::NotJson {
        field: field.to_owned(),
        expected: "a JSON object",
        message: error.to_string(),
    })
}

/// Any JSON value within `max_bytes` and [`MAX_JSON_DEPTH`].
pub fn bounded_value(field: &str, json: &[u8], max_bytes: usize) -> Result<Value, LimitError> {
    check_json(field, json, max_bytes)?;
    sandbox_proto::json::from_bytes(json).map_err(|error| LimitError::NotJson {
        field: field.to_owned(),
        expected: "JSON",
        message: error.to_string(),
    })
}

/// A short text within `max` bytes.
pub fn check_text(field: &str, text: &str, max: usize) -> Result<(), LimitError> {
    if text.len() > max {
        return Err(LimitError::TooLarge {
            field: field.to_owned(),
            len: text.len(),
            max,
        });
    }
    Ok(())
}

/// The schemes a link from a sandbox may have, as in Home Assistant: a web page, or a page of
/// the hub itself. Anything else (`javascript:`, `file:`, `data:`) a front end would open in the
/// user's browser.
pub const SAFE_LINK_SCHEMES: &[&str] = &["http", "https", "homeassistant"];

/// Whether `url` is `<safe scheme>://<something>`.
pub fn is_safe_link(url: &str) -> bool {
    url.split_once(':').is_some_and(|(scheme, rest)| {
        SAFE_LINK_SCHEMES
            .iter()
            .any(|allowed| scheme.eq_ignore_ascii_case(allowed))
            && rest.starts_with("//")
            && rest.len() > 2
    })
}

/// Every bound of a flow result: what main shows (forms, menus, placeholders) and what becomes
/// main's config entry (`create_entry` title, data and options).
pub fn check_flow_result(result: &sandbox_proto::wire::FlowResult) -> Result<(), LimitError> {
    let texts = [
        ("flow_id", Some(&result.flow_id), MAX_TEXT_BYTES),
        ("handler", Some(&result.handler), MAX_TEXT_BYTES),
        ("step_id", Some(&result.step_id), MAX_TEXT_BYTES),
        ("title", Some(&result.title), MAX_TEXT_BYTES),
        (
            "description",
            Some(&result.description),
            MAX_DESCRIPTION_BYTES,
        ),
        ("unique_id", result.unique_id.as_ref(), MAX_TEXT_BYTES),
        ("reason", Some(&result.reason), MAX_TEXT_BYTES),
        ("url", Some(&result.url), MAX_URL_BYTES),
        (
            "progress_action",
            Some(&result.progress_action),
            MAX_TEXT_BYTES,
        ),
    ];
    for (field, text, max) in texts {
        if let Some(text) = text {
            check_text(field, text, max)?;
        }
    }
    let external = sandbox_proto::wire::FlowResultType::ExternalStep as i32;
    if result.r#type == external && !is_safe_link(&result.url) {
        return Err(LimitError::UnsafeUrl {
            field: "url".to_owned(),
            url: bounded_text(&result.url, MAX_MESSAGE_BYTES),
        });
    }
    check_json(
        "data_schema_json",
        &result.data_schema_json,
        MAX_SCHEMA_BYTES,
    )?;
    check_json("errors_json", &result.errors_json, MAX_FLOW_JSON_BYTES)?;
    check_json(
        "description_placeholders_json",
        &result.description_placeholders_json,
        MAX_FLOW_JSON_BYTES,
    )?;
    check_json("data_json", &result.data_json, MAX_ENTRY_DATA_BYTES)?;
    check_json("options_json", &result.options_json, MAX_ENTRY_DATA_BYTES)?;
    check_count("menu_options", result.menu_options.len(), MAX_MENU_OPTIONS)?;
    for option in &result.menu_options {
        check_text("menu option", &option.id, MAX_TEXT_BYTES)?;
        check_text("menu option label", &option.label, MAX_TEXT_BYTES)?;
    }
    Ok(())
}

/// Every bound of a config entry a sandbox hands back (a migration's result).
pub fn check_entry(entry: &sandbox_proto::wire::ConfigEntry) -> Result<(), LimitError> {
    check_text("title", &entry.title, MAX_TEXT_BYTES)?;
    if let Some(unique_id) = &entry.unique_id {
        check_text("unique_id", unique_id, MAX_TEXT_BYTES)?;
    }
    check_json("data_json", &entry.data_json, MAX_ENTRY_DATA_BYTES)?;
    check_json("options_json", &entry.options_json, MAX_ENTRY_DATA_BYTES)
}

/// Longest protocol version or feature name in `ready`, in bytes (semver text and feature
/// names are short; a long one is kept in the group's status and logged).
pub const MAX_READY_WORD_BYTES: usize = 64;

/// Most features, and most integrations, a `ready` may list.
pub const MAX_READY_ITEMS: usize = 256;

/// Every bound of a `ready`: main keeps its version and features in the group's status and
/// logs them.
pub fn check_ready(ready: &sandbox_proto::wire::Ready) -> Result<(), LimitError> {
    check_text(
        "protocol_version",
        &ready.protocol_version,
        MAX_READY_WORD_BYTES,
    )?;
    check_count("features", ready.features.len(), MAX_READY_ITEMS)?;
    for feature in &ready.features {
        check_text("feature", feature, MAX_READY_WORD_BYTES)?;
    }
    check_text("group", &ready.group, MAX_TEXT_BYTES)?;
    check_text("runtime", &ready.runtime, MAX_TEXT_BYTES)?;
    check_count("integrations", ready.integrations.len(), MAX_READY_ITEMS)?;
    for integration in &ready.integrations {
        for (field, text) in [
            ("integration domain", &integration.domain),
            ("integration name", &integration.name),
            ("integration version", &integration.version),
            ("integration type", &integration.integration_type),
        ] {
            check_text(field, text, MAX_TEXT_BYTES)?;
        }
        for (field, list) in [
            ("integration platforms", &integration.platforms),
            ("integration dependencies", &integration.dependencies),
        ] {
            check_count(field, list.len(), MAX_READY_ITEMS)?;
            for text in list {
                check_text(field, text, MAX_TEXT_BYTES)?;
            }
        }
    }
    Ok(())
}

fn check_count(field: &str, count: usize, max: usize) -> Result<(), LimitError> {
    if count > max {
        return Err(LimitError::TooMany {
            field: field.to_owned(),
            count,
            max,
        });
    }
    Ok(())
}

/// Every size bound of an entity description: its texts, its capabilities, its device.
pub fn check_description(
    description: &sandbox_proto::wire::EntityDescription,
) -> Result<(), LimitError> {
    let texts = [
        ("entity_id", Some(&description.entity_id)),
        ("entry_id", Some(&description.entry_id)),
        ("platform", Some(&description.platform)),
        ("domain", Some(&description.domain)),
        ("unique_id", description.unique_id.as_ref()),
        ("name", description.name.as_ref()),
        ("translation_key", description.translation_key.as_ref()),
        ("icon", description.icon.as_ref()),
        ("device_class", description.device_class.as_ref()),
        ("entity_category", description.entity_category.as_ref()),
        (
            "unit_of_measurement",
            description.unit_of_measurement.as_ref(),
        ),
        ("state_class", description.state_class.as_ref()),
    ];
    for (field, text) in texts {
        if let Some(text) = text {
            check_text(field, text, MAX_TEXT_BYTES)?;
        }
    }
    check_json(
        "capabilities_json",
        &description.capabilities_json,
        MAX_CAPABILITIES_BYTES,
    )?;
    if let Some(device) = &description.device {
        check_device(device)?;
    }
    Ok(())
}

fn check_device(device: &sandbox_proto::wire::DeviceInfo) -> Result<(), LimitError> {
    check_count(
        "device.identifiers",
        device.identifiers.len(),
        MAX_DEVICE_KEYS,
    )?;
    check_count(
        "device.connections",
        device.connections.len(),
        MAX_DEVICE_KEYS,
    )?;
    let pairs = device
        .identifiers
        .iter()
        .chain(&device.connections)
        .chain(&device.via_device);
    for pair in pairs {
        check_text("device key", &pair.first, MAX_TEXT_BYTES)?;
        check_text("device key", &pair.second, MAX_TEXT_BYTES)?;
    }
    let texts = [
        ("device.name", &device.name),
        ("device.manufacturer", &device.manufacturer),
        ("device.model", &device.model),
        ("device.model_id", &device.model_id),
        ("device.sw_version", &device.sw_version),
        ("device.hw_version", &device.hw_version),
        ("device.serial_number", &device.serial_number),
        ("device.entry_type", &device.entry_type),
        ("device.suggested_area", &device.suggested_area),
    ];
    for (field, text) in texts {
        if let Some(text) = text {
            check_text(field, text, MAX_TEXT_BYTES)?;
        }
    }
    if let Some(url) = &device.configuration_url {
        check_text("device.configuration_url", url, MAX_URL_BYTES)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn held_size_charges_every_value_not_only_its_text() {
        assert_eq!(held_size(b""), 0);
        assert_eq!(held_size(b"{}"), 2 + JSON_VALUE_OVERHEAD * 2);
        let zeros = format!("[{}]", vec!["0"; 1000].join(","));
        assert!(held_size(zeros.as_bytes()) >= 1000 * JSON_VALUE_OVERHEAD);
        // Separators inside strings are text, not values.
        let text = format!("{{\"a\":\"{}\"}}", ",".repeat(1000));
        assert!(held_size(text.as_bytes()) < text.len() + 4 * JSON_VALUE_OVERHEAD);
    }

    #[test]
    fn quoted_text_is_bounded_and_cannot_break_a_log_line() {
        assert_eq!(bounded_text("plain", 100), "plain");
        assert_eq!(
            bounded_text("exact", 5),
            "exact",
            "a text of exactly max bytes is whole"
        );
        assert_eq!(bounded_text("a\u{202E}b", 100), "a\\u{202e}b");
        assert_eq!(bounded_text("a\nb\u{1b}[2J", 100), "a\\nb\\u{1b}[2J");
        let long = "é".repeat(10_000);
        let cut = bounded_text(&long, MAX_MESSAGE_BYTES);
        assert!(cut.len() <= MAX_MESSAGE_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn depth_is_counted_outside_strings_only() {
        assert!(!nests_deeper_than(
            nested(MAX_JSON_DEPTH).as_bytes(),
            MAX_JSON_DEPTH
        ));
        assert!(nests_deeper_than(
            nested(MAX_JSON_DEPTH + 1).as_bytes(),
            MAX_JSON_DEPTH
        ));
        let in_string = format!("{{\"a\": \"{}\\\"{}\"}}", "[".repeat(100), "{".repeat(100));
        assert!(!nests_deeper_than(in_string.as_bytes(), 1));
        assert!(nests_deeper_than(br#"{"a": {"b": 1}}"#, 1));
        // Siblings do not add up.
        assert!(!nests_deeper_than(b"[[1],[2],[3],{\"a\":1}]", 2));
    }

    #[test]
    fn objects_are_bounded_in_size_and_depth_before_parsing() {
        assert_eq!(bounded_object("x", b"", 10), Ok(Map::new()));
        assert!(matches!(
            bounded_object("x", br#"{"a": 1}"#, 4),
            Err(LimitError::TooLarge { len: 8, max: 4, .. })
        ));
        let deep = format!("{{\"a\": {}}}", nested(MAX_JSON_DEPTH));
        assert!(matches!(
            bounded_object("x", deep.as_bytes(), usize::MAX),
            Err(LimitError::TooDeep { .. })
        ));
        assert!(matches!(
            bounded_object("x", b"[1]", 100),
            Err(LimitError::NotJson { .. })
        ));
        let map = bounded_object("x", br#"{"n": 1, "f": 0.5}"#, 100).unwrap();
        assert!(map["n"].is_i64());
        assert!(map["f"].is_f64());
    }

    #[test]
    fn descriptions_are_bounded_field_by_field() {
        use sandbox_proto::wire;
        let mut description = wire::EntityDescription {
            entity_id: "light.a".into(),
            domain: "light".into(),
            ..Default::default()
        };
        assert_eq!(check_description(&description), Ok(()));
        description.name = Some("n".repeat(MAX_TEXT_BYTES + 1));
        assert!(matches!(
            check_description(&description),
            Err(LimitError::TooLarge { ref field, .. }) if field == "name"
        ));
        description.name = None;
        description.capabilities_json = nested(MAX_JSON_DEPTH + 1).into_bytes().into();
        assert!(matches!(
            check_description(&description),
            Err(LimitError::TooDeep { .. })
        ));
        description.capabilities_json = Default::default();
        let pair = |n: usize| wire::StringPair {
            first: "demo".into(),
            second: n.to_string(),
        };
        description.device = Some(wire::DeviceInfo {
            identifiers: (0..=MAX_DEVICE_KEYS).map(pair).collect(),
            ..Default::default()
        });
        assert!(matches!(
            check_description(&description),
            Err(LimitError::TooMany { .. })
        ));
    }

    #[test]
    fn a_ready_is_bounded() {
        use sandbox_proto::wire;
        let mut ready = wire::Ready {
            protocol_version: "1.1.0".into(),
            features: vec!["entity_outcomes".into()],
            ..Default::default()
        };
        assert_eq!(check_ready(&ready), Ok(()));
        ready.protocol_version = format!("1.1.0-{}", "a".repeat(1 << 20));
        assert!(check_ready(&ready).is_err());
        ready.protocol_version = "1.1.0".into();
        ready.features = vec!["f".into(); MAX_READY_ITEMS + 1];
        assert!(check_ready(&ready).is_err());
    }

    #[test]
    fn flow_results_and_migrated_entries_are_bounded() {
        use sandbox_proto::wire;
        let mut result = wire::FlowResult {
            title: "t".into(),
            data_json: br#"{"host": "x"}"#.to_vec().into(),
            ..Default::default()
        };
        assert_eq!(check_flow_result(&result), Ok(()));
        result.data_json = format!("{{\"a\": {}}}", nested(MAX_JSON_DEPTH))
            .into_bytes()
            .into();
        assert!(matches!(
            check_flow_result(&result),
            Err(LimitError::TooDeep { .. })
        ));
        result.data_json = Default::default();
        result.description = "d".repeat(MAX_DESCRIPTION_BYTES + 1);
        assert!(matches!(
            check_flow_result(&result),
            Err(LimitError::TooLarge { .. })
        ));
        result.description = String::new();
        result.r#type = wire::FlowResultType::ExternalStep as i32;
        result.url = "javascript:alert(1)".into();
        assert!(matches!(
            check_flow_result(&result),
            Err(LimitError::UnsafeUrl { .. })
        ));
        result.url = "https://login.example/authorize".into();
        assert_eq!(check_flow_result(&result), Ok(()));
        result.r#type = 0;
        result.menu_options = (0..=MAX_MENU_OPTIONS)
            .map(|n| wire::MenuOption {
                id: n.to_string(),
                label: String::new(),
            })
            .collect();
        assert!(matches!(
            check_flow_result(&result),
            Err(LimitError::TooMany { .. })
        ));
        let mut entry = wire::ConfigEntry::default();
        assert_eq!(check_entry(&entry), Ok(()));
        entry.options_json = vec![b' '; MAX_ENTRY_DATA_BYTES + 1].into();
        assert!(matches!(
            check_entry(&entry),
            Err(LimitError::TooLarge { .. })
        ));
    }
}
