//! `light`: on/off, brightness, color temperature, colors and effects, in Home Assistant's
//! `basic` schema (one topic per attribute, [`basic`]) and `json` schema (one JSON object per
//! message, [`json`]); the `template` schema is refused.
//!
//! What both share lives here: color modes and capabilities read from the config, the light's
//! state and the state attributes it shows (Home Assistant's conventions: `color_mode`,
//! `brightness`, `color_temp_kelvin`, `hs_color`/`rgb_color`/`xy_color`, `effect`), and the
//! preparation of a service call as Home Assistant's light component does it before the entity
//! sees it: `brightness_pct` and steps to `brightness`, a color converted to one the light
//! supports, what the light cannot do dropped, a color temperature clamped to its range.

use serde_json::{Map, Value, json};

use homecore::{EntityInfo, ServiceError, catalog};

use super::{ConfigError, Fields, MAX_TEXT_BYTES, Platform, unsupported};

pub(crate) mod basic;
pub(crate) mod color;
pub(crate) mod json;

#[cfg(test)]
#[path = "tests/light.rs"]
mod tests;

/// Largest JSON state message read, in bytes; a longer one is ignored.
pub(crate) const MAX_JSON_STATE_BYTES: usize = 16 * 1024;
/// Highest mireds or kelvin value a config may give.
pub(crate) const MAX_COLOR_TEMP_SETTING: u32 = 1_000_000;
/// Highest `brightness_scale` accepted.
pub(crate) const MAX_BRIGHTNESS_SCALE: u32 = 1_000_000;
/// Longest flash time accepted, in seconds.
pub(crate) const MAX_FLASH_SECONDS: u32 = 3600;

/// Home Assistant's default color temperature range, in kelvin.
const DEFAULT_MIN_KELVIN: u32 = 2000;
const DEFAULT_MAX_KELVIN: u32 = 6535;

/// The light built from a discovery config, in the schema its `schema` key names.
pub(crate) fn from_config(fields: &Fields<'_>) -> Result<Box<dyn Platform>, ConfigError> {
    match fields.text("schema")?.as_deref() {
        None | Some("basic" | "default") => Ok(Box::new(basic::BasicLight::from_config(fields)?)),
        Some("json") => Ok(Box::new(json::JsonLight::from_config(fields)?)),
        Some("template") => Err(ConfigError::invalid(
            "schema",
            "schema template is not supported",
        )),
        Some(other) => Err(ConfigError::invalid(
            "schema",
            format!("{other:?} is not basic, json or template"),
        )),
    }
}

/// A color mode (Home Assistant's `ColorMode`), the ones supported here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ColorMode {
    OnOff,
    Brightness,
    ColorTemp,
    Hs,
    Xy,
    Rgb,
}

/// Color modes Home Assistant knows that these lights do not handle.
const REFUSED_COLOR_MODES: [&str; 3] = ["rgbw", "rgbww", "white"];

impl ColorMode {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "onoff" => Self::OnOff,
            "brightness" => Self::Brightness,
            "color_temp" => Self::ColorTemp,
            "hs" => Self::Hs,
            "xy" => Self::Xy,
            "rgb" => Self::Rgb,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::OnOff => "onoff",
            Self::Brightness => "brightness",
            Self::ColorTemp => "color_temp",
            Self::Hs => "hs",
            Self::Xy => "xy",
            Self::Rgb => "rgb",
        }
    }

    fn is_color(self) -> bool {
        matches!(self, Self::Hs | Self::Xy | Self::Rgb)
    }
}

/// Reads a color mode of a config, refusing the ones not handled here by name.
fn config_color_mode(field: &str, text: &str) -> Result<ColorMode, ConfigError> {
    ColorMode::parse(text).ok_or_else(|| {
        if REFUSED_COLOR_MODES.contains(&text) {
            ConfigError::invalid(field, format!("color mode {text} is not supported"))
        } else {
            ConfigError::invalid(field, format!("{text:?} is not a color mode"))
        }
    })
}

/// A light feature's bit, from the catalog.
fn feature(name: &str) -> u64 {
    catalog()
        .domain("light")
        .and_then(|spec| spec.feature_bit(name))
        .unwrap_or(0)
}

/// What a light can do, fixed by its config.
#[derive(Debug, Clone)]
pub(crate) struct Capabilities {
    /// Never empty; `onoff` and `brightness` only alone.
    modes: Vec<ColorMode>,
    min_kelvin: u32,
    max_kelvin: u32,
    effect_list: Option<Vec<String>>,
    /// `EFFECT`, `FLASH`, `TRANSITION` bits.
    features: u64,
}

impl Capabilities {
    /// Checks the modes as Home Assistant's `valid_supported_color_modes`.
    fn new(
        field: &str,
        modes: Vec<ColorMode>,
        kelvin_range: (u32, u32),
        effect_list: Option<Vec<String>>,
        features: u64,
    ) -> Result<Self, ConfigError> {
        let mut unique = Vec::new();
        for mode in modes {
            if !unique.contains(&mode) {
                unique.push(mode);
            }
        }
        let alone_only = unique
            .iter()
            .any(|mode| matches!(mode, ColorMode::OnOff | ColorMode::Brightness));
        if unique.is_empty() || (alone_only && unique.len() > 1) {
            return Err(ConfigError::invalid(
                field,
                "needs at least one mode; onoff and brightness only alone",
            ));
        }
        unique.sort_by_key(|mode| mode.as_str());
        Ok(Self {
            modes: unique,
            min_kelvin: kelvin_range.0,
            max_kelvin: kelvin_range.1,
            effect_list,
            features,
        })
    }

    pub(crate) fn supports(&self, mode: ColorMode) -> bool {
        self.modes.contains(&mode)
    }

    pub(crate) fn brightness_supported(&self) -> bool {
        self.modes.iter().any(|mode| *mode != ColorMode::OnOff)
    }

    pub(crate) fn color_supported(&self) -> bool {
        self.modes.iter().any(|mode| mode.is_color())
    }

    pub(crate) fn color_temp_supported(&self) -> bool {
        self.supports(ColorMode::ColorTemp)
    }

    fn has_feature(&self, name: &str) -> bool {
        let bit = feature(name);
        bit != 0 && self.features & bit == bit
    }

    /// The color mode a light starts in: its only mode, or unknown.
    pub(crate) fn initial_mode(&self) -> Option<ColorMode> {
        match self.modes.as_slice() {
            [only] => Some(*only),
            _ => None,
        }
    }

    /// A kelvin value within the light's range.
    pub(crate) fn clamp_kelvin(&self, kelvin: u32) -> u32 {
        kelvin.clamp(self.min_kelvin, self.max_kelvin)
    }

    pub(crate) fn describe(&self, info: &mut EntityInfo) {
        info.supported_features = self.features;
        let capabilities = &mut info.capabilities;
        if self.color_temp_supported() {
            capabilities.insert("min_color_temp_kelvin".into(), json!(self.min_kelvin));
            capabilities.insert("max_color_temp_kelvin".into(), json!(self.max_kelvin));
        }
        if self.has_feature("EFFECT") {
            capabilities.insert("effect_list".into(), json!(self.effect_list));
        }
        let modes: Vec<&str> = self.modes.iter().map(|mode| mode.as_str()).collect();
        capabilities.insert("supported_color_modes".into(), json!(modes));
    }
}

/// A whole number setting within `1..=max`, or `None` when absent.
fn positive_setting(fields: &Fields<'_>, key: &str, max: u32) -> Result<Option<u32>, ConfigError> {
    if fields.raw(key).is_none() {
        return Ok(None);
    }
    let number = fields.number_or(key, 0.0)?;
    if number.fract() != 0.0 || number < 1.0 || number > f64::from(max) {
        return Err(ConfigError::invalid(
            key,
            format!("expected a whole number from 1 to {max}"),
        ));
    }
    Ok(Some(number as u32))
}

/// The color temperature range of a config (mireds win over kelvin, as in Home Assistant).
fn kelvin_range(fields: &Fields<'_>) -> Result<(u32, u32), ConfigError> {
    let max_mireds = positive_setting(fields, "max_mireds", MAX_COLOR_TEMP_SETTING)?;
    let min_mireds = positive_setting(fields, "min_mireds", MAX_COLOR_TEMP_SETTING)?;
    let min_kelvin = match max_mireds {
        Some(mireds) => color::mired_kelvin(mireds),
        None => positive_setting(fields, "min_kelvin", MAX_COLOR_TEMP_SETTING)?
            .unwrap_or(DEFAULT_MIN_KELVIN),
    };
    let max_kelvin = match min_mireds {
        Some(mireds) => color::mired_kelvin(mireds),
        None => positive_setting(fields, "max_kelvin", MAX_COLOR_TEMP_SETTING)?
            .unwrap_or(DEFAULT_MAX_KELVIN),
    };
    if min_kelvin > max_kelvin {
        return Err(ConfigError::invalid(
            "min_kelvin",
            format!("the range {min_kelvin} K to {max_kelvin} K is empty"),
        ));
    }
    Ok((min_kelvin, max_kelvin))
}

/// `brightness_scale`, 255 by default.
fn brightness_scale(fields: &Fields<'_>) -> Result<u32, ConfigError> {
    Ok(positive_setting(fields, "brightness_scale", MAX_BRIGHTNESS_SCALE)?.unwrap_or(255))
}

/// A device brightness (`1..=scale`) as Home Assistant's 1..=255; `None` for zero, negative
/// or non-finite values (ignored, as Home Assistant ignores a zero brightness).
pub(crate) fn brightness_from_device(value: f64, scale: u32) -> Option<u8> {
    if !value.is_finite() || value <= 0.0 {
        return None;
    }
    Some((value / f64::from(scale) * 255.0).round().clamp(1.0, 255.0) as u8)
}

/// A 1..=255 brightness on the device's scale, never rounded down to 0.
pub(crate) fn brightness_to_device(brightness: u8, scale: u32) -> u32 {
    let scaled = (f64::from(brightness) / 255.0 * f64::from(scale)).round() as u32;
    scaled.clamp(1, scale)
}

/// A number from received JSON (numbers as text accepted, as Home Assistant's `float()`).
pub(crate) fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) if text.len() <= 64 => text.trim().parse().ok(),
        _ => None,
    }
    .filter(|number: &f64| number.is_finite())
}

/// A light's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LightState {
    /// `None` is unknown.
    pub(crate) is_on: Option<bool>,
    pub(crate) brightness: Option<u8>,
    /// `None` is unknown.
    pub(crate) color_mode: Option<ColorMode>,
    pub(crate) color_temp_kelvin: Option<u32>,
    pub(crate) hs: Option<[f64; 2]>,
    pub(crate) rgb: Option<[u8; 3]>,
    pub(crate) xy: Option<[f64; 2]>,
    pub(crate) effect: Option<String>,
}

impl LightState {
    /// A state in the light's initial color mode.
    pub(crate) fn new(capabilities: &Capabilities) -> Self {
        Self {
            color_mode: capabilities.initial_mode(),
            ..Self::default()
        }
    }

    pub(crate) fn state(&self) -> Option<String> {
        super::on_off(self.is_on)
    }

    /// The state attributes, as Home Assistant's light writes them: present according to the
    /// light's capabilities, `null` while off, colors in all three notations from the one the
    /// light is in.
    pub(crate) fn attributes(&self, capabilities: &Capabilities) -> Map<String, Value> {
        let mut attributes = Map::new();
        let on = self.is_on == Some(true);
        let mode = if on { self.color_mode } else { None };
        if capabilities.has_feature("EFFECT") {
            let effect = if on { self.effect.clone() } else { None };
            attributes.insert("effect".into(), json!(effect));
        }
        let mode_text = on.then(|| mode.map_or("unknown", ColorMode::as_str));
        attributes.insert("color_mode".into(), json!(mode_text));
        if capabilities.brightness_supported() {
            let brightness = match mode {
                Some(mode) if mode != ColorMode::OnOff => self.brightness,
                _ => None,
            };
            attributes.insert("brightness".into(), json!(brightness));
        }
        if capabilities.color_temp_supported() {
            let kelvin = match mode {
                Some(ColorMode::ColorTemp) => self.color_temp_kelvin,
                _ => None,
            };
            attributes.insert("color_temp_kelvin".into(), json!(kelvin));
        }
        if capabilities.color_supported() || capabilities.color_temp_supported() {
            let (hs, rgb, xy) = match self.colors(mode) {
                Some((hs, rgb, xy)) => (
                    json!(hs.map(color::round3)),
                    json!(rgb),
                    json!(xy.map(color::round6)),
                ),
                None => (Value::Null, Value::Null, Value::Null),
            };
            attributes.insert("hs_color".into(), hs);
            attributes.insert("rgb_color".into(), rgb);
            attributes.insert("xy_color".into(), xy);
        }
        attributes
    }

    /// The color in `mode` in hue/saturation, RGB and xy.
    fn colors(&self, mode: Option<ColorMode>) -> Option<ColorTriple> {
        match mode? {
            ColorMode::Hs => {
                let hs = self.hs?;
                Some((hs, color::hs_to_rgb(hs), color::hs_to_xy(hs)))
            }
            ColorMode::Xy => {
                let xy = self.xy?;
                Some((color::xy_to_hs(xy), color::xy_to_rgb(xy), xy))
            }
            ColorMode::Rgb => {
                let rgb = self.rgb?;
                let channels = rgb.map(f64::from);
                Some((color::rgb_to_hs(channels), rgb, color::rgb_to_xy(channels)))
            }
            ColorMode::ColorTemp => {
                let hs = color::kelvin_to_hs(self.color_temp_kelvin?);
                Some((hs, color::hs_to_rgb(hs), color::hs_to_xy(hs)))
            }
            ColorMode::OnOff | ColorMode::Brightness => None,
        }
    }
}

/// One color as hue/saturation, RGB and xy.
type ColorTriple = ([f64; 2], [u8; 3], [f64; 2]);

/// A color a call asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Color {
    Kelvin(u32),
    Hs([f64; 2]),
    Rgb([u8; 3]),
    Xy([f64; 2]),
}

/// `flash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flash {
    Short,
    Long,
}

/// A prepared `turn_on`: only what the light can do, in a color mode it has.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TurnOn {
    pub(crate) brightness: Option<u8>,
    pub(crate) color: Option<Color>,
    pub(crate) effect: Option<String>,
    /// As given (a number), to send it back unchanged.
    pub(crate) transition: Option<Value>,
    pub(crate) flash: Option<Flash>,
}

/// A prepared `turn_off`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TurnOff {
    pub(crate) transition: Option<Value>,
    pub(crate) flash: Option<Flash>,
}

/// What a service call comes to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    On(TurnOn),
    Off(TurnOff),
}

/// Fields of `light.turn_on` these lights cannot honour, refused rather than ignored.
const REFUSED_FIELDS: [&str; 4] = ["color_name", "rgbw_color", "rgbww_color", "white"];

fn bad_field(field: &str, reason: impl std::fmt::Display) -> ServiceError {
    ServiceError::handler(format!("{field}: {reason}"))
}

/// Reads a fixed-length list of numbers.
fn numbers<const N: usize>(
    data: &Map<String, Value>,
    field: &str,
) -> Result<Option<[f64; N]>, ServiceError> {
    let Some(value) = data.get(field).filter(|value| !value.is_null()) else {
        return Ok(None);
    };
    let items = value
        .as_array()
        .filter(|items| items.len() == N)
        .ok_or_else(|| bad_field(field, format!("expected {N} numbers")))?;
    let mut out = [0.0; N];
    for (slot, item) in out.iter_mut().zip(items) {
        *slot = item
            .as_f64()
            .filter(|number| number.is_finite())
            .ok_or_else(|| bad_field(field, format!("expected {N} numbers")))?;
    }
    Ok(Some(out))
}

fn number(data: &Map<String, Value>, field: &str) -> Result<Option<f64>, ServiceError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_f64()
            .filter(|number| number.is_finite())
            .map(Some)
            .ok_or_else(|| bad_field(field, "expected a number")),
    }
}

impl Capabilities {
    /// Turns a service call into what to do, as Home Assistant's light component prepares it.
    pub(crate) fn action(
        &self,
        service: &str,
        data: &Map<String, Value>,
        state: &LightState,
    ) -> Result<Action, ServiceError> {
        let off = || -> Result<Action, ServiceError> {
            Ok(Action::Off(TurnOff {
                transition: self.transition(data)?,
                flash: self.flash(data)?,
            }))
        };
        match service {
            "turn_off" => return off(),
            "toggle" if state.is_on == Some(true) => return off(),
            "turn_on" | "toggle" => {}
            other => return Err(unsupported("light", other)),
        }
        if let Some(field) = REFUSED_FIELDS
            .iter()
            .find(|field| data.get(**field).is_some_and(|value| !value.is_null()))
        {
            return Err(bad_field(field, "not supported by this MQTT light"));
        }
        let brightness = self.requested_brightness(data, state)?;
        if brightness == Some(0) {
            // Home Assistant turns a light off when asked for brightness 0.
            return off();
        }
        let color = self.requested_color(data)?;
        let effect = match data.get("effect").and_then(Value::as_str) {
            Some(effect) if self.has_feature("EFFECT") => {
                let known = self
                    .effect_list
                    .as_ref()
                    .is_some_and(|list| list.iter().any(|known| known == effect));
                if !known {
                    return Err(bad_field(
                        "effect",
                        format!("{effect:?} is not in effect_list"),
                    ));
                }
                Some(effect.to_owned())
            }
            _ => None,
        };
        Ok(Action::On(TurnOn {
            brightness: brightness.filter(|_| self.brightness_supported()),
            color,
            effect,
            transition: self.transition(data)?,
            flash: self.flash(data)?,
        }))
    }

    /// `brightness`, `brightness_pct` or a step from the current brightness, as 0..=255.
    fn requested_brightness(
        &self,
        data: &Map<String, Value>,
        state: &LightState,
    ) -> Result<Option<u8>, ServiceError> {
        let current = || {
            if state.is_on == Some(true) {
                f64::from(state.brightness.unwrap_or(0))
            } else {
                0.0
            }
        };
        let brightness = if let Some(value) = number(data, "brightness")? {
            value
        } else if let Some(pct) = number(data, "brightness_pct")? {
            (pct * 255.0 / 100.0).round()
        } else if let Some(step) = number(data, "brightness_step")? {
            current() + step
        } else if let Some(step) = number(data, "brightness_step_pct")? {
            let pct = (current() / 255.0 * 100.0).round();
            ((pct + step) / 100.0 * 255.0).round()
        } else {
            return Ok(None);
        };
        Ok(Some(brightness.round().clamp(0.0, 255.0) as u8))
    }

    /// The one color asked for, converted to a mode the light has; `None` when none was asked
    /// or the light has no color at all.
    fn requested_color(&self, data: &Map<String, Value>) -> Result<Option<Color>, ServiceError> {
        let kelvin = number(data, "color_temp_kelvin")?;
        let hs = numbers::<2>(data, "hs_color")?;
        let rgb = numbers::<3>(data, "rgb_color")?;
        let xy = numbers::<2>(data, "xy_color")?;
        let asked = [kelvin.is_some(), hs.is_some(), rgb.is_some(), xy.is_some()];
        if asked.iter().filter(|asked| **asked).count() > 1 {
            return Err(ServiceError::handler(
                "color_temp_kelvin, hs_color, rgb_color and xy_color exclude each other",
            ));
        }
        let wanted = if let Some(kelvin) = kelvin {
            Color::Kelvin(kelvin.round().clamp(1.0, f64::from(u32::MAX)) as u32)
        } else if let Some([hue, saturation]) = hs {
            Color::Hs([hue.rem_euclid(360.0), saturation.clamp(0.0, 100.0)])
        } else if let Some(rgb) = rgb {
            Color::Rgb(rgb.map(|channel| channel.round().clamp(0.0, 255.0) as u8))
        } else if let Some(xy) = xy {
            Color::Xy(xy.map(|coordinate| coordinate.clamp(0.0, 1.0)))
        } else {
            return Ok(None);
        };
        Ok(self.convert(wanted))
    }

    /// A color in a mode the light has (Home Assistant's conversions), `None` if it has none.
    fn convert(&self, wanted: Color) -> Option<Color> {
        let has = |mode| self.supports(mode);
        let converted = match wanted {
            Color::Kelvin(kelvin) if has(ColorMode::ColorTemp) => Color::Kelvin(kelvin),
            Color::Kelvin(kelvin) => {
                if has(ColorMode::Hs) {
                    Color::Hs(color::kelvin_to_hs(kelvin))
                } else if has(ColorMode::Rgb) {
                    Color::Rgb(color::kelvin_to_rgb(kelvin).map(|c| c.round() as u8))
                } else if has(ColorMode::Xy) {
                    Color::Xy(color::rgb_to_xy(color::kelvin_to_rgb(kelvin)))
                } else {
                    return None;
                }
            }
            Color::Hs(hs) => {
                if has(ColorMode::Hs) {
                    Color::Hs(hs)
                } else if has(ColorMode::Rgb) {
                    Color::Rgb(color::hs_to_rgb(hs))
                } else if has(ColorMode::Xy) {
                    Color::Xy(color::hs_to_xy(hs))
                } else {
                    self.to_kelvin(color::hs_to_xy(hs))?
                }
            }
            Color::Rgb(rgb) => {
                let channels = rgb.map(f64::from);
                if has(ColorMode::Rgb) {
                    Color::Rgb(rgb)
                } else if has(ColorMode::Hs) {
                    Color::Hs(color::rgb_to_hs(channels))
                } else if has(ColorMode::Xy) {
                    Color::Xy(color::rgb_to_xy(channels))
                } else {
                    self.to_kelvin(color::rgb_to_xy(channels))?
                }
            }
            Color::Xy(xy) => {
                if has(ColorMode::Xy) {
                    Color::Xy(xy)
                } else if has(ColorMode::Hs) {
                    Color::Hs(color::xy_to_hs(xy))
                } else if has(ColorMode::Rgb) {
                    Color::Rgb(color::xy_to_rgb(xy))
                } else {
                    self.to_kelvin(xy)?
                }
            }
        };
        Some(match converted {
            Color::Kelvin(kelvin) => Color::Kelvin(self.clamp_kelvin(kelvin)),
            other => other,
        })
    }

    /// A color for a light with color temperature only: its correlated temperature.
    fn to_kelvin(&self, xy: [f64; 2]) -> Option<Color> {
        self.color_temp_supported()
            .then(|| Color::Kelvin(color::xy_to_kelvin(xy)))
    }

    fn transition(&self, data: &Map<String, Value>) -> Result<Option<Value>, ServiceError> {
        let seconds = number(data, "transition")?;
        Ok(seconds
            .filter(|_| self.has_feature("TRANSITION"))
            .and_then(|_| data.get("transition").cloned()))
    }

    fn flash(&self, data: &Map<String, Value>) -> Result<Option<Flash>, ServiceError> {
        let flash = match data.get("flash") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(text)) if text == "short" => Flash::Short,
            Some(Value::String(text)) if text == "long" => Flash::Long,
            Some(_) => return Err(bad_field("flash", "expected short or long")),
        };
        Ok(self.has_feature("FLASH").then_some(flash))
    }
}

/// An effect name received from the device, bounded like any descriptive text.
pub(crate) fn received_effect(text: &str) -> Option<String> {
    (text.len() <= MAX_TEXT_BYTES).then(|| text.to_owned())
}

/// A float as Python prints it (`30.0`, `0.25`), for payloads Home Assistant formats so.
pub(crate) fn python_float(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e16 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}
