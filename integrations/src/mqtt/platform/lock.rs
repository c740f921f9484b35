//! `lock`: lock/unlock/open through a command topic, its state from a state topic, a code
//! checked against `code_format`.

use serde_json::{Map, Value, json};

use homecore::{EntityInfo, ServiceError};

use super::{
    ConfigError, Fields, Outgoing, Platform, render_command_with, render_received_value,
    text_field, unsupported,
};
use crate::mqtt::value_template::ValueTemplate;

/// Home Assistant's lock feature bit.
const OPEN: u64 = 1;
/// Longest `code_format` pattern accepted, in bytes.
pub(crate) const MAX_CODE_FORMAT_BYTES: usize = 64;
/// Longest code checked against a `code_format`, in characters (longer never matches).
pub(crate) const MAX_CODE_CHARS: usize = 64;
/// Largest repeat count of a `code_format` pattern (`{n}`, `{n,m}`).
const MAX_REPEAT: usize = MAX_CODE_CHARS;

/// A lock's states, in the vocabulary of the `lock` domain.
const STATES: [(&str, &str); 7] = [
    ("state_locked", "locked"),
    ("state_unlocked", "unlocked"),
    ("state_locking", "locking"),
    ("state_unlocking", "unlocking"),
    ("state_jammed", "jammed"),
    ("state_open", "open"),
    ("state_opening", "opening"),
];

/// One character test of a code pattern.
#[derive(Debug, Clone, PartialEq)]
enum Atom {
    Any,
    Digit,
    Word,
    Space,
    Literal(char),
    /// A bracket class: ranges (a single character is a range of one), negated or not.
    Class(Vec<(char, char)>, bool),
}

impl Atom {
    fn matches(&self, c: char) -> bool {
        match self {
            Self::Any => c != '\n',
            Self::Digit => c.is_ascii_digit(),
            Self::Word => c.is_alphanumeric() || c == '_',
            Self::Space => c.is_whitespace(),
            Self::Literal(literal) => *literal == c,
            Self::Class(ranges, negated) => {
                ranges.iter().any(|(low, high)| (*low..=*high).contains(&c)) != *negated
            }
        }
    }
}

/// A `code_format`: the simple regular expressions devices use for codes (`^\d{4}$`,
/// `^[0-9]{4,6}$`, `\w+`): anchors, `.`, `\d`, `\w`, `\s`, bracket classes, literals and the
/// quantifiers `?`, `*`, `+`, `{n}`, `{n,}`, `{n,m}`. Groups, alternation and
/// back-references are refused. Matching is Python's `re.match` (anchored at the start) and
/// runs in time bounded by pattern length × code length², without backtracking.
#[derive(Debug, Clone)]
pub(crate) struct CodeFormat {
    pattern: String,
    items: Vec<(Atom, usize, usize)>,
    anchored_end: bool,
}

impl CodeFormat {
    pub(crate) fn parse(pattern: &str) -> Result<Self, String> {
        if pattern.len() > MAX_CODE_FORMAT_BYTES {
            return Err(format!("longer than {MAX_CODE_FORMAT_BYTES} bytes"));
        }
        let mut chars = pattern.chars().peekable();
        if chars.peek() == Some(&'^') {
            chars.next();
        }
        let mut items: Vec<(Atom, usize, usize)> = Vec::new();
        let mut anchored_end = false;
        while let Some(c) = chars.next() {
            if anchored_end {
                return Err("`$` must end the pattern".to_owned());
            }
            let atom = match c {
                '$' => {
                    anchored_end = true;
                    continue;
                }
                '.' => Atom::Any,
                '\\' => match chars.next() {
                    Some('d') => Atom::Digit,
                    Some('w') => Atom::Word,
                    Some('s') => Atom::Space,
                    Some(escaped) if escaped.is_ascii_punctuation() => Atom::Literal(escaped),
                    _ => return Err("unsupported escape".to_owned()),
                },
                '[' => {
                    let negated = chars.next_if_eq(&'^').is_some();
                    let mut ranges = Vec::new();
                    loop {
                        let low = match chars.next() {
                            None => return Err("unclosed `[`".to_owned()),
                            Some(']') if !ranges.is_empty() => break,
                            Some('\\') => match chars.next() {
                                Some('d') => {
                                    ranges.push(('0', '9'));
                                    continue;
                                }
                                Some(escaped) if escaped.is_ascii_punctuation() => escaped,
                                _ => return Err("unsupported escape".to_owned()),
                            },
                            Some(low) => low,
                        };
                        let high = if chars.peek() == Some(&'-') {
                            chars.next();
                            match chars.next() {
                                Some(']') => {
                                    ranges.push((low, low));
                                    ranges.push(('-', '-'));
                                    break;
                                }
                                Some(high) if high >= low => high,
                                _ => return Err("bad range in `[]`".to_owned()),
                            }
                        } else {
                            low
                        };
                        ranges.push((low, high));
                    }
                    Atom::Class(ranges, negated)
                }
                '(' | ')' | '|' | '*' | '+' | '?' | '{' | '}' | '^' | ']' => {
                    return Err(format!("`{c}` is not supported here"));
                }
                literal => Atom::Literal(literal),
            };
            let (min, max) = match chars.peek() {
                Some('?') => (0, 1),
                Some('*') => (0, MAX_REPEAT),
                Some('+') => (1, MAX_REPEAT),
                Some('{') => {
                    chars.next();
                    let mut body = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if c.is_ascii_digit() || c == ',' => body.push(c),
                            _ => return Err("bad `{}` quantifier".to_owned()),
                        }
                    }
                    let number = |text: &str| {
                        text.parse::<usize>()
                            .map_err(|_| "bad `{}` quantifier".to_owned())
                    };
                    let (min, max) = match body.split_once(',') {
                        None => {
                            let count = number(&body)?;
                            (count, count)
                        }
                        Some((min, "")) => (number(min)?, MAX_REPEAT),
                        Some((min, max)) => (number(min)?, number(max)?),
                    };
                    if min > max || max > MAX_REPEAT {
                        return Err("bad `{}` quantifier".to_owned());
                    }
                    items.push((atom, min, max));
                    continue;
                }
                _ => (1, 1),
            };
            if (min, max) != (1, 1) {
                chars.next();
            }
            if matches!(chars.peek(), Some('?' | '*' | '+' | '{')) {
                return Err("repeated quantifiers are not supported".to_owned());
            }
            items.push((atom, min, max));
        }
        Ok(Self {
            pattern: pattern.to_owned(),
            items,
            anchored_end,
        })
    }

    /// Whether `code` matches from its start (to its end with `$`).
    pub(crate) fn matches(&self, code: &str) -> bool {
        let code: Vec<char> = code.chars().collect();
        if code.len() > MAX_CODE_CHARS {
            return false;
        }
        // The positions reachable after each item.
        let mut reachable = vec![false; code.len() + 1];
        reachable[0] = true;
        for (atom, min, max) in &self.items {
            let mut next = vec![false; code.len() + 1];
            for start in (0..=code.len()).filter(|start| reachable[*start]) {
                let mut position = start;
                let mut count = 0;
                loop {
                    if count >= *min {
                        next[position] = true;
                    }
                    if count == *max || position == code.len() || !atom.matches(code[position]) {
                        break;
                    }
                    position += 1;
                    count += 1;
                }
            }
            reachable = next;
        }
        if self.anchored_end {
            reachable[code.len()]
        } else {
            reachable.contains(&true)
        }
    }
}

/// A discovered lock.
pub(crate) struct Lock {
    command_topic: String,
    state_topic: Option<String>,
    value_template: Option<ValueTemplate>,
    command_template: Option<ValueTemplate>,
    payload_lock: String,
    payload_unlock: String,
    payload_open: Option<String>,
    payload_reset: String,
    /// Each state payload with the state it means.
    states: Vec<(String, &'static str)>,
    code_format: Option<CodeFormat>,
    optimistic: bool,
    state: Option<&'static str>,
}

impl Lock {
    pub(crate) fn from_config(fields: &Fields<'_>) -> Result<Self, ConfigError> {
        let state_topic = fields.topic("state_topic")?;
        let states = STATES
            .iter()
            .map(|(key, state)| {
                fields
                    .payload_or(key, &state.to_uppercase())
                    .map(|payload| (payload, *state))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let code_format = fields
            .payload("code_format")?
            .map(|pattern| CodeFormat::parse(&pattern))
            .transpose()
            .map_err(|reason| ConfigError::invalid("code_format", reason))?;
        Ok(Self {
            command_topic: fields.required_topic("command_topic")?,
            optimistic: fields.flag_or("optimistic", false)? || state_topic.is_none(),
            state_topic,
            value_template: fields.template("value_template")?,
            command_template: fields.template("command_template")?,
            payload_lock: fields.payload_or("payload_lock", "LOCK")?,
            payload_unlock: fields.payload_or("payload_unlock", "UNLOCK")?,
            payload_open: fields.payload("payload_open")?,
            payload_reset: fields.payload_or("payload_reset", "None")?,
            states,
            code_format,
            state: None,
        })
    }

    /// Checks a service call's code against `code_format` (a missing code is the empty one).
    fn check_code(&self, data: &Map<String, Value>) -> Result<(), ServiceError> {
        let Some(format) = &self.code_format else {
            return Ok(());
        };
        let code = text_field(data, "code").unwrap_or_default();
        if format.matches(code) {
            Ok(())
        } else {
            Err(ServiceError::validation(
                &["code"],
                format!("The code doesn't match pattern {}", format.pattern),
            ))
        }
    }
}

impl Platform for Lock {
    fn domain(&self) -> &'static str {
        "lock"
    }

    fn topics(&self) -> Vec<(&'static str, String)> {
        super::state_topic(self.state_topic.as_ref())
    }

    fn on_message(&mut self, _role: &'static str, payload: &str) -> bool {
        let Some(value) = render_received_value(self.value_template.as_ref(), payload) else {
            return false;
        };
        let new = if value == self.payload_reset {
            None
        } else if let Some((_, state)) = self.states.iter().find(|(payload, _)| *payload == value) {
            Some(*state)
        } else {
            tracing::debug!("an MQTT lock state payload is none of its states; ignored");
            return false;
        };
        let changed = new != self.state;
        self.state = new;
        changed
    }

    fn state(&self) -> Option<String> {
        self.state.map(str::to_owned)
    }

    fn attributes(&self) -> Map<String, Value> {
        let mut attributes = Map::new();
        if let Some(format) = &self.code_format {
            attributes.insert("code_format".to_owned(), json!(format.pattern));
        }
        attributes
    }

    fn describe(&self, info: &mut EntityInfo) {
        if self.payload_open.is_some() {
            info.supported_features = OPEN;
        }
    }

    fn optimistic(&self) -> bool {
        self.optimistic
    }

    fn command(
        &mut self,
        service: &str,
        data: &Map<String, Value>,
    ) -> Result<Vec<Outgoing>, ServiceError> {
        let (payload, state) = match service {
            "lock" => (&self.payload_lock, "locked"),
            "unlock" => (&self.payload_unlock, "unlocked"),
            "open" => match &self.payload_open {
                Some(payload) => (payload, "open"),
                None => return Err(unsupported("lock", service)),
            },
            other => return Err(unsupported("lock", other)),
        };
        self.check_code(data)?;
        let code = text_field(data, "code").map_or(Value::Null, |code| json!(code));
        let payload = render_command_with(
            self.command_template.as_ref(),
            Value::String(payload.clone()),
            &[("code", code)],
        )?;
        if self.optimistic {
            self.state = Some(state);
        }
        Ok(vec![Outgoing {
            topic: self.command_topic.clone(),
            payload,
        }])
    }
}

#[cfg(test)]
#[path = "tests/lock.rs"]
mod tests;
