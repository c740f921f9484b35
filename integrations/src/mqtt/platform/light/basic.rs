//! The `basic` (default) light schema: one command and one state topic per attribute, plain
//! payloads (`ON`, `128`, `255,0,0`, `30.0,100.0`), each state topic updating its own part.

use serde_json::{Map, Value, json};

use homecore::{EntityInfo, ServiceError};

use super::{
    Action, Capabilities, Color, ColorMode, LightState, TurnOn, brightness_from_device,
    brightness_scale, brightness_to_device, color, feature, kelvin_range, python_float,
    received_effect,
};
use crate::mqtt::platform::{
    ConfigError, Fields, Outgoing, Platform, no_topic, render_command_with, render_received,
};
use crate::mqtt::value_template::ValueTemplate;

/// Topics of color modes not handled here, refused by name.
const REFUSED_TOPICS: [&str; 3] = [
    "rgbw_command_topic",
    "rgbww_command_topic",
    "white_command_topic",
];

/// When the on payload goes out relative to the attribute commands (`on_command_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnCommandType {
    /// After them.
    Last,
    /// Before them.
    First,
    /// Never: a brightness command turns the light on.
    Brightness,
}

/// One attribute's topics and templates.
#[derive(Debug, Clone, Default)]
struct Channel {
    command_topic: Option<String>,
    state_topic: Option<String>,
    value_template: Option<ValueTemplate>,
    command_template: Option<ValueTemplate>,
}

impl Channel {
    /// `<name>_command_topic`, `<name>_state_topic`, `<name>_value_template` (falling back to
    /// `value_template`, as in Home Assistant) and `<name>_command_template`.
    fn read(fields: &Fields<'_>, name: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            command_topic: fields.topic(&format!("{name}_command_topic"))?,
            state_topic: fields.topic(&format!("{name}_state_topic"))?,
            value_template: value_template(fields, &format!("{name}_value_template"))?,
            command_template: fields.template(&format!("{name}_command_template"))?,
        })
    }

    /// The payload of a command with `value`.
    fn command(&self, value: Value) -> Result<Option<Outgoing>, ServiceError> {
        self.command_with(value, &[])
    }

    /// The payload of a command with `value` and the template's named variables.
    fn command_with(
        &self,
        value: Value,
        named: &[(&str, Value)],
    ) -> Result<Option<Outgoing>, ServiceError> {
        let Some(topic) = &self.command_topic else {
            return Ok(None);
        };
        Ok(Some(Outgoing {
            topic: topic.clone(),
            payload: render_command_with(self.command_template.as_ref(), value, named)?,
        }))
    }
}

fn value_template(fields: &Fields<'_>, key: &str) -> Result<Option<ValueTemplate>, ConfigError> {
    match fields.template(key)? {
        Some(template) => Ok(Some(template)),
        None => fields.template("value_template"),
    }
}

/// Which parts of the state follow commands rather than state topics.
#[derive(Debug, Clone, Copy)]
struct Optimistic {
    state: bool,
    brightness: bool,
    color_mode: bool,
    color_temp: bool,
    effect: bool,
    hs: bool,
    rgb: bool,
    xy: bool,
}

/// A discovered light of the basic schema.
pub(crate) struct BasicLight {
    command_topic: String,
    state_topic: Option<String>,
    state_template: Option<ValueTemplate>,
    payload_on: String,
    payload_off: String,
    brightness: Channel,
    brightness_scale: u32,
    color_mode: Channel,
    color_temp: Channel,
    /// Whether color temperatures travel in kelvin rather than mireds.
    color_temp_kelvin: bool,
    effect: Channel,
    hs: Channel,
    rgb: Channel,
    xy: Channel,
    on_command_type: OnCommandType,
    optimistic: Optimistic,
    capabilities: Capabilities,
    state: LightState,
}

impl BasicLight {
    pub(crate) fn from_config(fields: &Fields<'_>) -> Result<Self, ConfigError> {
        if let Some(key) = REFUSED_TOPICS.iter().find(|key| fields.raw(key).is_some()) {
            return Err(ConfigError::invalid(
                key,
                "rgbw, rgbww and white color modes are not supported",
            ));
        }
        let state_topic = fields.topic("state_topic")?;
        let brightness = Channel::read(fields, "brightness")?;
        let color_mode = Channel::read(fields, "color_mode")?;
        let color_temp = Channel::read(fields, "color_temp")?;
        let effect = Channel::read(fields, "effect")?;
        let hs = Channel::read(fields, "hs")?;
        let rgb = Channel::read(fields, "rgb")?;
        let xy = Channel::read(fields, "xy")?;
        let on_command_type = match fields.text("on_command_type")?.as_deref() {
            None | Some("last") => OnCommandType::Last,
            Some("first") => OnCommandType::First,
            Some("brightness") => OnCommandType::Brightness,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "on_command_type",
                    format!("{other:?} is not last, first or brightness"),
                ));
            }
        };
        // Home Assistant's derivation: one mode per color command topic; brightness alone
        // when there is none but a brightness topic; on/off otherwise.
        let mut modes: Vec<ColorMode> = [
            (&color_temp, ColorMode::ColorTemp),
            (&hs, ColorMode::Hs),
            (&rgb, ColorMode::Rgb),
            (&xy, ColorMode::Xy),
        ]
        .into_iter()
        .filter(|(channel, _)| channel.command_topic.is_some())
        .map(|(_, mode)| mode)
        .collect();
        if modes.is_empty() {
            modes.push(if brightness.command_topic.is_some() {
                ColorMode::Brightness
            } else {
                ColorMode::OnOff
            });
        }
        let features = if effect.command_topic.is_some() {
            feature("EFFECT")
        } else {
            0
        };
        let capabilities = Capabilities::new(
            "supported_color_modes",
            modes,
            kelvin_range(fields)?,
            fields.text_list("effect_list")?,
            features,
        )?;
        let forced = fields.flag_or("optimistic", false)?;
        let optimistic = Optimistic {
            state: forced || state_topic.is_none(),
            brightness: forced
                || (brightness.command_topic.is_some() && brightness.state_topic.is_none())
                || (brightness.command_topic.is_none() && rgb.state_topic.is_none()),
            color_mode: forced || color_mode.state_topic.is_none(),
            color_temp: forced || color_temp.state_topic.is_none(),
            effect: forced || effect.state_topic.is_none(),
            hs: forced || hs.state_topic.is_none(),
            rgb: forced || rgb.state_topic.is_none(),
            xy: forced || xy.state_topic.is_none(),
        };
        Ok(Self {
            command_topic: fields.required_topic("command_topic")?,
            state_template: value_template(fields, "state_value_template")?,
            state_topic,
            payload_on: fields.payload_or("payload_on", "ON")?,
            payload_off: fields.payload_or("payload_off", "OFF")?,
            brightness,
            brightness_scale: brightness_scale(fields)?,
            color_mode,
            color_temp,
            color_temp_kelvin: fields.flag_or("color_temp_kelvin", false)?,
            effect,
            hs,
            rgb,
            xy,
            on_command_type,
            optimistic,
            state: LightState::new(&capabilities),
            capabilities,
        })
    }

    /// A received color mode, when no color mode topic says it.
    fn assume_mode(&mut self, mode: ColorMode) {
        if self.optimistic.color_mode {
            self.state.color_mode = Some(mode);
        }
    }

    /// Applies a message of `role` (already rendered, non-empty); `None` when it is ignored.
    fn apply(&mut self, role: &str, value: &str) -> Option<()> {
        match role {
            "state" => {
                self.state.is_on = if value == self.payload_on {
                    Some(true)
                } else if value == self.payload_off {
                    Some(false)
                } else if value == "None" {
                    None
                } else {
                    return None;
                };
            }
            "brightness" => {
                let device: f64 = value.trim().parse().ok()?;
                self.state.brightness =
                    Some(brightness_from_device(device, self.brightness_scale)?);
            }
            "color_mode" => {
                let mode = ColorMode::parse(value.trim())?;
                if !self.capabilities.supports(mode) {
                    return None;
                }
                self.state.color_mode = Some(mode);
            }
            "color_temp" => {
                let number: f64 = value.trim().parse().ok()?;
                if !number.is_finite() || number < 1.0 {
                    return None;
                }
                let number = number.round().min(f64::from(u32::MAX)) as u32;
                let kelvin = if self.color_temp_kelvin {
                    number
                } else {
                    color::mired_kelvin(number)
                };
                self.assume_mode(ColorMode::ColorTemp);
                self.state.color_temp_kelvin = Some(self.capabilities.clamp_kelvin(kelvin));
            }
            "effect" => self.state.effect = Some(received_effect(value)?),
            "hs" => {
                let [hue, saturation] = floats::<2>(value)?;
                self.assume_mode(ColorMode::Hs);
                self.state.hs = Some([hue.rem_euclid(360.0), saturation.clamp(0.0, 100.0)]);
            }
            "xy" => {
                let xy = floats::<2>(value)?;
                self.assume_mode(ColorMode::Xy);
                self.state.xy = Some(xy.map(|coordinate| coordinate.clamp(0.0, 1.0)));
            }
            "rgb" => {
                let mut rgb = floats::<3>(value)?.map(|channel| channel.round().clamp(0.0, 255.0));
                if self.brightness.state_topic.is_none() {
                    // The color carries the brightness: take it out, keep the color at full
                    // brightness (Home Assistant's reading).
                    let brightness = rgb.iter().copied().fold(0.0, f64::max);
                    if brightness == 0.0 {
                        return None;
                    }
                    self.state.brightness = Some(brightness as u8);
                    rgb = rgb.map(|channel| (channel / brightness * 255.0).round().min(255.0));
                }
                self.assume_mode(ColorMode::Rgb);
                self.state.rgb = Some(rgb.map(|channel| channel as u8));
            }
            _ => return None,
        }
        Some(())
    }

    /// The messages of a prepared `turn_on`, in Home Assistant's order.
    fn turn_on(&mut self, mut on: TurnOn) -> Result<Vec<Outgoing>, ServiceError> {
        let mut messages = Vec::new();
        let on_payload = Outgoing {
            topic: self.command_topic.clone(),
            payload: self.payload_on.clone(),
        };
        match self.on_command_type {
            OnCommandType::First => messages.push(on_payload.clone()),
            OnCommandType::Brightness if on.brightness.is_none() => {
                on.brightness = Some(self.state.brightness.unwrap_or(255));
            }
            _ => {}
        }
        match on.color {
            Some(Color::Hs([hue, saturation])) => {
                let text = format!("{},{}", python_float(hue), python_float(saturation));
                let named = [("hue", json!(hue)), ("sat", json!(saturation))];
                if let Some(message) = self.hs.command_with(Value::String(text), &named)? {
                    messages.push(message);
                    if self.optimistic.hs {
                        self.assume_mode(ColorMode::Hs);
                        self.state.hs = Some([hue, saturation]);
                    }
                }
            }
            Some(Color::Rgb(rgb)) => {
                let scaled = self.scale_rgb(rgb, None, on.brightness);
                if let Some(message) = self
                    .rgb
                    .command_with(rgb_text(scaled), &rgb_named(scaled))?
                {
                    messages.push(message);
                    if self.optimistic.rgb {
                        self.assume_mode(ColorMode::Rgb);
                        self.state.rgb = Some(rgb);
                    }
                }
            }
            Some(Color::Xy([x, y])) => {
                let text = format!("{},{}", python_float(x), python_float(y));
                let named = [("x", json!(x)), ("y", json!(y))];
                if let Some(message) = self.xy.command_with(Value::String(text), &named)? {
                    messages.push(message);
                    if self.optimistic.xy {
                        self.assume_mode(ColorMode::Xy);
                        self.state.xy = Some([x, y]);
                    }
                }
            }
            Some(Color::Kelvin(_)) | None => {}
        }
        if let Some(brightness) = on.brightness {
            let sent = if self.brightness.command_topic.is_some() {
                let device = brightness_to_device(brightness, self.brightness_scale);
                self.brightness.command(Value::from(device))?
            } else if !matches!(on.color, Some(Color::Rgb(_))) && self.rgb.command_topic.is_some() {
                // An RGB light without a brightness topic dims by scaling its color.
                let rgb = self.state.rgb.unwrap_or([255; 3]);
                let scaled = self.scale_rgb(rgb, Some(brightness), None);
                self.rgb
                    .command_with(rgb_text(scaled), &rgb_named(scaled))?
            } else {
                None
            };
            if let Some(message) = sent {
                messages.push(message);
                if self.optimistic.brightness {
                    self.state.brightness = Some(brightness);
                }
            }
        }
        if let Some(Color::Kelvin(kelvin)) = on.color {
            let value = if self.color_temp_kelvin {
                kelvin
            } else {
                color::mired_kelvin(kelvin)
            };
            if let Some(message) = self.color_temp.command(Value::from(value))? {
                messages.push(message);
                if self.optimistic.color_temp {
                    self.assume_mode(ColorMode::ColorTemp);
                    self.state.color_temp_kelvin = Some(kelvin);
                }
            }
        }
        if let Some(effect) = on.effect
            && let Some(message) = self.effect.command(Value::String(effect.clone()))?
        {
            messages.push(message);
            if self.optimistic.effect {
                self.state.effect = Some(effect);
            }
        }
        if self.on_command_type == OnCommandType::Last {
            messages.push(on_payload);
        }
        if messages.is_empty() {
            // `on_command_type: brightness` without a way to send a brightness: nothing would
            // turn the light on.
            return Err(no_topic("light.turn_on", "brightness_command_topic"));
        }
        if self.optimistic.state {
            self.state.is_on = Some(true);
        }
        Ok(messages)
    }

    /// RGB scaled to a brightness: `brightness` when given, else full when the light has a
    /// brightness topic, else the call's or the current brightness.
    fn scale_rgb(&self, rgb: [u8; 3], brightness: Option<u8>, asked: Option<u8>) -> [u8; 3] {
        let brightness = brightness.unwrap_or(if self.brightness.command_topic.is_some() {
            255
        } else {
            asked.or(self.state.brightness).unwrap_or(255)
        });
        rgb.map(|channel| (u32::from(channel) * u32::from(brightness) / 255) as u8)
    }
}

/// The RGB command template's variables `red`, `green`, `blue`.
fn rgb_named(rgb: [u8; 3]) -> [(&'static str, Value); 3] {
    [
        ("red", json!(rgb[0])),
        ("green", json!(rgb[1])),
        ("blue", json!(rgb[2])),
    ]
}

/// `r,g,b` as Home Assistant's default RGB payload.
fn rgb_text(rgb: [u8; 3]) -> Value {
    Value::String(format!("{},{},{}", rgb[0], rgb[1], rgb[2]))
}

/// Exactly `N` comma-separated finite numbers.
fn floats<const N: usize>(text: &str) -> Option<[f64; N]> {
    let mut out = [0.0; N];
    let mut parts = text.split(',');
    for slot in &mut out {
        *slot = parts
            .next()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|number| number.is_finite())?;
    }
    parts.next().is_none().then_some(out)
}

impl BasicLight {
    /// Each role with its state topic, in the order Home Assistant applies them.
    fn state_topics(&self) -> [(&'static str, Option<&String>); 8] {
        [
            ("state", self.state_topic.as_ref()),
            ("brightness", self.brightness.state_topic.as_ref()),
            ("color_mode", self.color_mode.state_topic.as_ref()),
            ("color_temp", self.color_temp.state_topic.as_ref()),
            ("effect", self.effect.state_topic.as_ref()),
            ("hs", self.hs.state_topic.as_ref()),
            ("rgb", self.rgb.state_topic.as_ref()),
            ("xy", self.xy.state_topic.as_ref()),
        ]
    }

    /// A message for `role`; whether the state changed.
    fn receive(&mut self, role: &'static str, payload: &str) -> bool {
        let template = match role {
            "state" => self.state_template.as_ref(),
            "brightness" => self.brightness.value_template.as_ref(),
            "color_mode" => self.color_mode.value_template.as_ref(),
            "color_temp" => self.color_temp.value_template.as_ref(),
            "effect" => self.effect.value_template.as_ref(),
            "hs" => self.hs.value_template.as_ref(),
            "rgb" => self.rgb.value_template.as_ref(),
            "xy" => self.xy.value_template.as_ref(),
            _ => return false,
        };
        let Some(value) = render_received(template, payload) else {
            return false;
        };
        // Home Assistant ignores empty values; unparsable ones leave the state as it was.
        if value.is_empty() {
            return false;
        }
        let before = self.state.clone();
        if self.apply(role, &value).is_none() {
            self.state = before;
            return false;
        }
        self.state != before
    }
}

impl Platform for BasicLight {
    fn domain(&self) -> &'static str {
        "light"
    }

    fn topics(&self) -> Vec<(&'static str, String)> {
        // One subscription per topic: devices such as Tasmota report everything on one topic,
        // and each role listening to it must hear its retained message.
        let mut topics: Vec<(&'static str, String)> = Vec::new();
        for (role, topic) in self.state_topics() {
            if let Some(topic) = topic
                && !topics.iter().any(|(_, known)| known == topic)
            {
                topics.push((role, topic.clone()));
            }
        }
        topics
    }

    fn on_message(&mut self, role: &'static str, payload: &str) -> bool {
        let Some(topic) = self
            .state_topics()
            .into_iter()
            .find_map(|(known, topic)| (known == role).then_some(topic).flatten())
            .cloned()
        else {
            return false;
        };
        let roles: Vec<&'static str> = self
            .state_topics()
            .into_iter()
            .filter(|(_, other)| *other == Some(&topic))
            .map(|(role, _)| role)
            .collect();
        let mut changed = false;
        for role in roles {
            changed |= self.receive(role, payload);
        }
        changed
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
        self.optimistic.state
    }

    fn command(
        &mut self,
        service: &str,
        data: &Map<String, Value>,
    ) -> Result<Vec<Outgoing>, ServiceError> {
        match self.capabilities.action(service, data, &self.state)? {
            Action::On(on) => self.turn_on(on),
            Action::Off(_) => {
                if self.optimistic.state {
                    self.state.is_on = Some(false);
                }
                Ok(vec![Outgoing {
                    topic: self.command_topic.clone(),
                    payload: self.payload_off.clone(),
                }])
            }
        }
    }
}
