//! The template config flow: one form naming the operation, its sources or format, and the unit.

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use homecore::{
    Field, FieldType, FlowError, FlowHandler, FlowStep, FlowStepContext, Schema, Selector,
};

use super::DOMAIN;
use super::entity::Expression;
use super::expression::{MAX_ROUND_DIGITS, MAX_SOURCES, Operation, parse_format};

/// Every choice of the `operation` field: the aggregates, then `format`.
fn operation_options() -> Vec<(&'static str, &'static str)> {
    let mut options = Operation::ALL.to_vec();
    options.push(("format", "Format string"));
    options
}

/// The form of the `user` step.
pub(crate) fn user_schema() -> Schema {
    let options = operation_options();
    Schema::new(vec![
        Field::required("name", FieldType::string()).with_selector(Selector::text()),
        Field::required("operation", FieldType::select(&options))
            .with_default(json!("sum"))
            .with_selector(Selector::select(&options, false)),
        Field::optional("entity_ids", FieldType::entity_ids(&[]))
            .with_selector(Selector::entity(None, true)),
        Field::optional("format", FieldType::string()).with_selector(Selector::text()),
        Field::optional("unit_of_measurement", FieldType::string()).with_selector(Selector::text()),
        Field::required("round", FieldType::integer_range(0, MAX_ROUND_DIGITS))
            .with_default(json!(2))
            .with_selector(Selector::number(0.0, MAX_ROUND_DIGITS as f64, 1.0, false)),
    ])
}

/// Why an entry's data does not describe a template sensor, with the form field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpressionError {
    /// The operation is not known.
    #[error("unknown operation {0:?}")]
    UnknownOperation(String),
    /// An aggregate without sources.
    #[error("an aggregate needs 1 to {MAX_SOURCES} source entities")]
    Sources,
    /// A bad format string.
    #[error("format: {0}")]
    Format(#[from] super::expression::FormatError),
    /// `round` is out of range.
    #[error("round must be within 0..={MAX_ROUND_DIGITS}")]
    Round,
}

impl ExpressionError {
    /// The form field and error key.
    pub(crate) fn form_error(&self) -> (&'static str, &'static str) {
        match self {
            Self::UnknownOperation(_) => ("operation", "unknown_operation"),
            Self::Sources => ("entity_ids", "entities_required"),
            Self::Format(_) => ("format", "format_invalid"),
            Self::Round => ("round", "out_of_range"),
        }
    }
}

/// Reads the expression out of entry data (or validated flow input).
pub fn expression_of(data: &Map<String, Value>) -> Result<Expression, ExpressionError> {
    let operation = data
        .get("operation")
        .and_then(Value::as_str)
        .unwrap_or("sum");
    if operation == "format" {
        let format = data
            .get("format")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Ok(Expression::Format {
            parts: parse_format(format)?,
        });
    }
    let operation = Operation::from_key(operation)
        .ok_or_else(|| ExpressionError::UnknownOperation(operation.to_owned()))?;
    let sources: Vec<String> = data
        .get("entity_ids")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if sources.is_empty() || sources.len() > MAX_SOURCES {
        return Err(ExpressionError::Sources);
    }
    let round = data.get("round").and_then(Value::as_i64).unwrap_or(2);
    if !(0..=MAX_ROUND_DIGITS).contains(&round) {
        return Err(ExpressionError::Round);
    }
    Ok(Expression::Aggregate {
        operation,
        sources,
        round: usize::try_from(round).map_err(|_| ExpressionError::Round)?,
    })
}

/// The config flow: one `user` form.
#[derive(Debug, Default)]
pub(crate) struct TemplateConfigFlow;

impl FlowHandler for TemplateConfigFlow {
    fn step<'a>(
        &'a mut self,
        _flow: &'a FlowStepContext,
        step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            if step_id != "user" {
                return Err(FlowError::UnknownStep {
                    handler: DOMAIN.to_owned(),
                    step_id: step_id.to_owned(),
                });
            }
            let Some(input) = input else {
                return Ok(FlowStep::form("user", Some(user_schema())));
            };
            let name = input
                .get("name")
                .and_then(Value::as_str)
                .map(str::trim)
                .unwrap_or_default()
                .to_owned();
            if name.is_empty() {
                return Ok(FlowStep::form_with_errors(
                    "user",
                    Some(user_schema()),
                    &[("name", "name_empty")],
                ));
            }
            match expression_of(&input) {
                Ok(_) => Ok(FlowStep::create_entry(name, input)),
                Err(err) => Ok(FlowStep::form_with_errors(
                    "user",
                    Some(user_schema()),
                    &[err.form_error()],
                )),
            }
        })
    }
}
