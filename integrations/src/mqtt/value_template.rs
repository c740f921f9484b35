//! Value templates (placeholder until merged).

use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone)]
pub struct ValueTemplate(String);

/// A template problem.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TemplateError {
    /// Unsupported.
    #[error("unsupported {0}")]
    Unsupported(String),
}

/// A render problem.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    /// Failed.
    #[error("render failed: {0}")]
    Failed(String),
}

/// What a template sees.
pub struct Variables {
    value: Value,
    value_json: Option<Value>,
}

impl Variables {
    /// From a payload.
    pub fn from_payload(payload: &str) -> Self {
        Self {
            value: Value::String(payload.to_owned()),
            value_json: serde_json::from_str(payload).ok(),
        }
    }
    /// From a value.
    pub fn from_value(value: Value) -> Self {
        Self {
            value,
            value_json: None,
        }
    }
}

impl ValueTemplate {
    /// Parses.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        Ok(Self(text.to_owned()))
    }
    /// Renders.
    pub fn render(&self, vars: &Variables) -> Result<String, RenderError> {
        let inner = self
            .0
            .trim()
            .trim_start_matches("{{")
            .trim_end_matches("}}")
            .trim();
        if inner == "value" {
            return Ok(match &vars.value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        if let Some(path) = inner.strip_prefix("value_json.") {
            let mut current = vars.value_json.as_ref();
            for key in path.split('.') {
                current = current.and_then(|v| v.get(key));
            }
            return Ok(match current {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            });
        }
        Err(RenderError::Failed(self.0.clone()))
    }
}
