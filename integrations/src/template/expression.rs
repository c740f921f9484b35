//! The template sensor's expression language, kept small and safe: an aggregate (sum, mean,
//! median, min, max, range, difference) over source entities' numeric states, or a format
//! string `"{sensor.a} °C"` substituting source states. Pure functions, no I/O.

use homecore::entity_id::is_valid_entity_id;

/// Most source entities one expression may read: bounds the work done per state change.
pub const MAX_SOURCES: usize = 64;
/// Longest format string accepted, in bytes.
pub const MAX_FORMAT_LENGTH: usize = 1024;
/// Most digits after the point a result is rounded to.
pub const MAX_ROUND_DIGITS: i64 = 6;

/// An aggregate over numbers (Home Assistant's min_max types, plus `difference`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Sum of the values.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Middle value (mean of the two middle ones for an even count).
    Median,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Largest minus smallest.
    Range,
    /// The first source minus every other one (all sources must be numeric).
    Difference,
}

impl Operation {
    /// Every operation as `(key, label)`, in the flow's order.
    pub const ALL: [(&'static str, &'static str); 7] = [
        ("sum", "Sum"),
        ("mean", "Mean"),
        ("median", "Median"),
        ("min", "Minimum"),
        ("max", "Maximum"),
        ("range", "Range"),
        ("difference", "Difference (first minus the rest)"),
    ];

    /// The operation named `key`.
    pub fn from_key(key: &str) -> Option<Self> {
        Some(match key {
            "sum" => Self::Sum,
            "mean" => Self::Mean,
            "median" => Self::Median,
            "min" => Self::Min,
            "max" => Self::Max,
            "range" => Self::Range,
            "difference" => Self::Difference,
            _ => return None,
        })
    }
}

/// One piece of a format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text.
    Text(String),
    /// The state of this entity.
    Entity(String),
}

/// Why a format string cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A `{` without its `}`.
    #[error("a {{ at byte {0} is never closed (write {{{{ for a literal brace)")]
    Unclosed(usize),
    /// A `}` without a `{` before it.
    #[error("a }} at byte {0} has no opening {{ (write }}}} for a literal brace)")]
    Unopened(usize),
    /// A placeholder that is not an entity id.
    #[error("{{{0}}} is not an entity id like sensor.outside")]
    NotAnEntityId(String),
    /// No placeholder at all: the state would never change.
    #[error("the format names no entity; write one as {{sensor.name}}")]
    NoEntity,
    /// Too long, or too many placeholders.
    #[error(
        "the format is longer than {MAX_FORMAT_LENGTH} bytes or names more than {MAX_SOURCES} entities"
    )]
    TooBig,
}

/// Parses a format string: `{entity_id}` placeholders, `{{` and `}}` for literal braces.
pub fn parse_format(format: &str) -> Result<Vec<Part>, FormatError> {
    if format.len() > MAX_FORMAT_LENGTH {
        return Err(FormatError::TooBig);
    }
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut chars = format.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(_, next)| next) == Some('{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek().map(|&(_, next)| next) == Some('}') => {
                chars.next();
                text.push('}');
            }
            '}' => return Err(FormatError::Unopened(at)),
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some((_, '}')) => break,
                        Some((_, c)) => name.push(c),
                        None => return Err(FormatError::Unclosed(at)),
                    }
                }
                let name = name.trim().to_lowercase();
                if !is_valid_entity_id(&name) {
                    return Err(FormatError::NotAnEntityId(name));
                }
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Entity(name));
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    let entities = parts
        .iter()
        .filter(|p| matches!(p, Part::Entity(_)))
        .count();
    if entities == 0 {
        return Err(FormatError::NoEntity);
    }
    if entities > MAX_SOURCES {
        return Err(FormatError::TooBig);
    }
    Ok(parts)
}

/// Renders parsed `parts`, asking `state_of` for each entity; a missing entity reads
/// `unknown` (what Home Assistant's `states('x')` gives).
pub fn render(parts: &[Part], state_of: impl Fn(&str) -> Option<String>) -> String {
    parts
        .iter()
        .map(|part| match part {
            Part::Text(text) => text.clone(),
            Part::Entity(id) => state_of(id).unwrap_or_else(|| "unknown".to_owned()),
        })
        .collect()
}

/// The operation over `values` (one per source, `None` where the source is not numeric).
/// Non-numeric sources are skipped, as Home Assistant's min_max does, except by `difference`,
/// which needs every operand. `None` when there is nothing to compute.
pub fn aggregate(operation: Operation, values: &[Option<f64>]) -> Option<f64> {
    if operation == Operation::Difference {
        let (first, rest) = values.split_first()?;
        let mut result = (*first)?;
        for value in rest {
            result -= (*value)?;
        }
        return Some(result);
    }
    let mut numbers: Vec<f64> = values.iter().flatten().copied().collect();
    if numbers.is_empty() {
        return None;
    }
    let count = numbers.len() as f64;
    let min = numbers.iter().copied().fold(f64::INFINITY, f64::min);
    let max = numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(match operation {
        Operation::Sum => numbers.iter().sum(),
        Operation::Mean => numbers.iter().sum::<f64>() / count,
        Operation::Median => {
            numbers.sort_by(f64::total_cmp);
            let middle = numbers.len() / 2;
            if numbers.len() % 2 == 1 {
                numbers[middle]
            } else {
                (numbers[middle - 1] + numbers[middle]) / 2.0
            }
        }
        Operation::Min => min,
        Operation::Max => max,
        Operation::Range => max - min,
        Operation::Difference => return None,
    })
}

/// A state as a number, if it is one (`unknown`, `unavailable` and text are not).
pub fn numeric(state: &str) -> Option<f64> {
    state.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

/// `value` rounded to `digits` after the point, as text without trailing noise.
pub fn format_number(value: f64, digits: usize) -> String {
    let text = format!("{value:.digits$}");
    // `-0.00` reads oddly in a state.
    if text
        .trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        return text.trim_start_matches('-').to_owned();
    }
    text
}
