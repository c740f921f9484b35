//! The `json` light schema: one command topic taking a JSON object (`{"state":"ON",
//! "brightness":128}`, keys only for what the call asked), one state topic publishing one (as
//! Zigbee2MQTT, ESPHome and Tasmota's JSON mode do).

use serde_json::{Map, Value, json};

use homecore::{EntityInfo, ServiceError};

use super::{
    Action, Capabilities, Color, ColorMode, Flash, LightState, MAX_FLASH_SECONDS,
    MAX_JSON_STATE_BYTES, TurnOff, TurnOn, brightness_from_device, brightness_scale,
    brightness_to_device, color, config_color_mode, feature, kelvin_range, number_of,
    positive_setting, received_effect,
};
use crate::mqtt::platform::{ConfigError, Fields, Outgoing, Platform};

/// A discovered light of the JSON schema.
pub(crate) struct JsonLight {
    command_topic: String,
    state_topic: Option<String>,
    brightness_scale: u32,
    /// Whether the config's `brightness` flag is set: RGB colors are then sent at full
    /// brightness, the brightness apart.
    brightness_flag: bool,
    color_temp_kelvin: bool,
    flash_time_short: u32,
    flash_time_long: u32,
    optimistic: bool,
    capabilities: Capabilities,
    state: LightState,
}

impl JsonLight {
    pub(crate) fn from_config(fields: &Fields<'_>) -> Result<Self, ConfigError> {
        let brightness_flag = fields.flag_or("brightness", false)?;
        let modes = match fields.text_list("supported_color_modes")? {
            Some(names) => names
                .iter()
                .map(|name| config_color_mode("supported_color_modes", name))
                .collect::<Result<Vec<_>, _>>()?,
            None if brightness_flag => vec![ColorMode::Brightness],
            None => vec![ColorMode::OnOff],
        };
        let mut features = 0;
        for (key, default, name) in [
            ("effect", false, "EFFECT"),
            ("flash", true, "FLASH"),
            ("transition", true, "TRANSITION"),
        ] {
            if fields.flag_or(key, default)? {
                features |= feature(name);
            }
        }
        let capabilities = Capabilities::new(
            "supported_color_modes",
            modes,
            kelvin_range(fields)?,
            fields.text_list("effect_list")?,
            features,
        )?;
        let state_topic = fields.topic("state_topic")?;
        Ok(Self {
            command_topic: fields.required_topic("command_topic")?,
            optimistic: fields.flag_or("optimistic", false)? || state_topic.is_none(),
            state_topic,
            brightness_scale: brightness_scale(fields)?,
            brightness_flag,
            color_temp_kelvin: fields.flag_or("color_temp_kelvin", false)?,
            flash_time_short: positive_setting(fields, "flash_time_short", MAX_FLASH_SECONDS)?
                .unwrap_or(2),
            flash_time_long: positive_setting(fields, "flash_time_long", MAX_FLASH_SECONDS)?
                .unwrap_or(10),
            state: LightState::new(&capabilities),
            capabilities,
        })
    }

    /// A received color temperature (kelvin or mireds as configured), within the range.
    fn received_kelvin(&self, value: &Value) -> Option<u32> {
        let number = number_of(value)?;
        if number < 1.0 {
            return None;
        }
        let number = number.round().min(f64::from(u32::MAX)) as u32;
        let kelvin = if self.color_temp_kelvin {
            number
        } else {
            color::mired_kelvin(number)
        };
        Some(self.capabilities.clamp_kelvin(kelvin))
    }

    /// Applies `color_mode` with its value; an unsupported mode or an incomplete value
    /// changes nothing (Home Assistant logs and ignores it).
    fn update_color(&mut self, values: &Map<String, Value>, mode_name: &str) {
        let Some(mode) =
            ColorMode::parse(mode_name).filter(|mode| self.capabilities.supports(*mode))
        else {
            return;
        };
        let channel = |key: &str| {
            values
                .get("color")
                .and_then(|color| color.get(key))
                .and_then(number_of)
        };
        match mode {
            ColorMode::ColorTemp => {
                let Some(kelvin) = values
                    .get("color_temp")
                    .and_then(|value| self.received_kelvin(value))
                else {
                    return;
                };
                self.state.color_temp_kelvin = Some(kelvin);
            }
            ColorMode::Hs => {
                let (Some(hue), Some(saturation)) = (channel("h"), channel("s")) else {
                    return;
                };
                self.state.hs = Some([hue.rem_euclid(360.0), saturation.clamp(0.0, 100.0)]);
            }
            ColorMode::Xy => {
                let (Some(x), Some(y)) = (channel("x"), channel("y")) else {
                    return;
                };
                self.state.xy = Some([x.clamp(0.0, 1.0), y.clamp(0.0, 1.0)]);
            }
            ColorMode::Rgb => {
                let (Some(r), Some(g), Some(b)) = (channel("r"), channel("g"), channel("b")) else {
                    return;
                };
                self.state.rgb =
                    Some([r, g, b].map(|channel| channel.round().clamp(0.0, 255.0) as u8));
            }
            ColorMode::OnOff | ColorMode::Brightness => {}
        }
        self.state.color_mode = Some(mode);
    }

    /// Applies a state object.
    fn apply(&mut self, values: &Map<String, Value>) {
        match values.get("state") {
            Some(Value::String(state)) if state == "ON" => self.state.is_on = Some(true),
            Some(Value::String(state)) if state == "OFF" => self.state.is_on = Some(false),
            Some(Value::Null) => self.state.is_on = None,
            _ => {}
        }
        let colored =
            self.capabilities.color_supported() || self.capabilities.color_temp_supported();
        if colored {
            match values.get("color_mode").and_then(Value::as_str) {
                Some(mode) => self.update_color(values, mode),
                // Without a color mode, a color temperature alone still updates its value.
                None if self.capabilities.color_temp_supported() => {
                    if let Some(kelvin) = values
                        .get("color_temp")
                        .and_then(|value| self.received_kelvin(value))
                    {
                        self.state.color_temp_kelvin = Some(kelvin);
                    }
                }
                None => {}
            }
        }
        if self.capabilities.brightness_supported()
            && let Some(brightness) = values
                .get("brightness")
                .and_then(number_of)
                .and_then(|value| brightness_from_device(value, self.brightness_scale))
        {
            self.state.brightness = Some(brightness);
        }
        if self.capabilities.has_feature("EFFECT") {
            match values.get("effect") {
                Some(Value::String(effect)) => {
                    if let Some(effect) = received_effect(effect) {
                        self.state.effect = Some(effect);
                    }
                }
                Some(Value::Null) => self.state.effect = None,
                _ => {}
            }
        }
    }

    fn flash_and_transition(
        &self,
        message: &mut Map<String, Value>,
        transition: Option<Value>,
        flash: Option<Flash>,
    ) {
        if let Some(transition) = transition {
            message.insert("transition".into(), transition);
        }
        if let Some(flash) = flash {
            let seconds = match flash {
                Flash::Short => self.flash_time_short,
                Flash::Long => self.flash_time_long,
            };
            message.insert("flash".into(), json!(seconds));
        }
    }

    fn turn_on(&mut self, on: TurnOn) -> Map<String, Value> {
        let mut message = Map::new();
        message.insert("state".into(), json!("ON"));
        match on.color {
            Some(Color::Hs([hue, saturation])) => {
                message.insert("color".into(), json!({"h": hue, "s": saturation}));
                if self.optimistic {
                    self.state.color_mode = Some(ColorMode::Hs);
                    self.state.hs = Some([hue, saturation]);
                }
            }
            Some(Color::Rgb(rgb)) => {
                // Without the brightness flag, the color carries the brightness.
                let brightness = if self.brightness_flag {
                    255
                } else {
                    on.brightness.or(self.state.brightness).unwrap_or(255)
                };
                let [r, g, b] = rgb.map(|channel| {
                    (f64::from(channel) / 255.0 * f64::from(brightness)).round() as u8
                });
                message.insert("color".into(), json!({"r": r, "g": g, "b": b}));
                if self.optimistic {
                    self.state.color_mode = Some(ColorMode::Rgb);
                    self.state.rgb = Some(rgb);
                }
            }
            Some(Color::Xy([x, y])) => {
                message.insert("color".into(), json!({"x": x, "y": y}));
                if self.optimistic {
                    self.state.color_mode = Some(ColorMode::Xy);
                    self.state.xy = Some([x, y]);
                }
            }
            Some(Color::Kelvin(_)) | None => {}
        }
        self.flash_and_transition(&mut message, on.transition, on.flash);
        if let Some(brightness) = on.brightness {
            let device = brightness_to_device(brightness, self.brightness_scale);
            message.insert("brightness".into(), json!(device));
            if self.optimistic {
                self.state.brightness = Some(brightness);
            }
        }
        if let Some(Color::Kelvin(kelvin)) = on.color {
            let value = if self.color_temp_kelvin {
                kelvin
            } else {
                color::mired_kelvin(kelvin)
            };
            message.insert("color_temp".into(), json!(value));
            if self.optimistic {
                self.state.color_mode = Some(ColorMode::ColorTemp);
                self.state.color_temp_kelvin = Some(kelvin);
                self.state.hs = None;
            }
        }
        if let Some(effect) = on.effect {
            message.insert("effect".into(), json!(effect));
            if self.optimistic {
                self.state.effect = Some(effect);
            }
        }
        if self.optimistic {
            self.state.is_on = Some(true);
        }
        message
    }

    fn turn_off(&mut self, off: TurnOff) -> Map<String, Value> {
        let mut message = Map::new();
        message.insert("state".into(), json!("OFF"));
        self.flash_and_transition(&mut message, off.transition, off.flash);
        if self.optimistic {
            self.state.is_on = Some(false);
        }
        message
    }
}

impl Platform for JsonLight {
    fn domain(&self) -> &'static str {
        "light"
    }

    fn topics(&self) -> Vec<(&'static str, String)> {
        self.state_topic
            .iter()
            .map(|topic| ("state", topic.clone()))
            .collect()
    }

    fn on_message(&mut self, _role: &'static str, payload: &str) -> bool {
        if payload.len() > MAX_JSON_STATE_BYTES {
            tracing::debug!(
                bytes = payload.len(),
                "an MQTT JSON light state is too large; ignored"
            );
            return false;
        }
        let Ok(Value::Object(values)) = serde_json::from_str::<Value>(payload) else {
            return false;
        };
        let before = self.state.clone();
        self.apply(&values);
        self.state != before
    }

    fn state(&self) -> Option<String> {
        self.state.state()
    }

    fn attributes(&self) -> Map<String, Value> {
        self.state.attributes(&self.capabilities)
    }

    fn describe(&self, info: &mut EntityInfo) {
        self.capabilities.describe(info);
    }

    fn optimistic(&self) -> bool {
        self.optimistic
    }

    fn command(
        &mut self,
        service: &str,
        data: &Map<String, Value>,
    ) -> Result<Vec<Outgoing>, ServiceError> {
        let message = match self.capabilities.action(service, data, &self.state)? {
            Action::On(on) => self.turn_on(on),
            Action::Off(off) => self.turn_off(off),
        };
        Ok(vec![Outgoing {
            topic: self.command_topic.clone(),
            payload: Value::Object(message).to_string(),
        }])
    }
}
