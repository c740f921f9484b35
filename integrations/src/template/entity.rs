//! The template sensor: recomputes its expression whenever one of its sources changes state.

use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use homecore::event::EVENT_STATE_CHANGED;
use homecore::state::MAX_STATE_LENGTH;
use homecore::{Core, Entity, EntityHandle, EntityInfo, ListenerHandle};

use super::expression::{self, Operation, Part};

/// What the sensor computes.
#[derive(Debug, Clone, PartialEq)]
pub enum Expression {
    /// An operation over the sources' numeric states.
    Aggregate {
        /// The operation.
        operation: Operation,
        /// The source entity ids, in order (order matters to `difference`).
        sources: Vec<String>,
        /// Digits after the point.
        round: usize,
    },
    /// A format string.
    Format {
        /// Its parsed pieces.
        parts: Vec<Part>,
    },
}

impl Expression {
    /// Every entity the expression reads.
    pub fn sources(&self) -> Vec<String> {
        match self {
            Self::Aggregate { sources, .. } => sources.clone(),
            Self::Format { parts } => parts
                .iter()
                .filter_map(|part| match part {
                    Part::Entity(id) => Some(id.clone()),
                    Part::Text(_) => None,
                })
                .collect(),
        }
    }
}

/// What the sensor reports.
#[derive(Debug, Clone, Default, PartialEq)]
struct Computed {
    /// Whether the result could be used.
    available: bool,
    /// The state; `None` is `unknown`.
    state: Option<String>,
}

/// A template sensor.
pub(crate) struct TemplateSensor {
    /// Itself, weakly, for the bus listener.
    me: Weak<TemplateSensor>,
    /// What it says about itself.
    info: EntityInfo,
    /// What it computes.
    expression: Expression,
    /// Its sources, without itself (a sensor reading itself would recompute forever).
    sources: Mutex<Vec<String>>,
    /// The last result.
    computed: Mutex<Computed>,
    /// Its link to the core, once added.
    handle: Mutex<Option<EntityHandle>>,
    /// Its `state_changed` listener, while added.
    listener: Mutex<Option<ListenerHandle>>,
}

impl TemplateSensor {
    pub(crate) fn new(
        entry_id: &str,
        name: String,
        expression: Expression,
        unit_of_measurement: Option<String>,
    ) -> Arc<Self> {
        let mut info = EntityInfo::new("sensor");
        info.unique_id = Some(entry_id.to_owned());
        info.name = Some(name);
        info.unit_of_measurement = unit_of_measurement;
        if matches!(expression, Expression::Aggregate { .. }) {
            info.state_class = Some("measurement".to_owned());
        }
        let sources = expression.sources();
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            info,
            expression,
            sources: Mutex::new(sources),
            computed: Mutex::new(Computed::default()),
            handle: Mutex::new(None),
            listener: Mutex::new(None),
        })
    }

    /// Computes the expression over the current states.
    fn compute(&self, core: &Core) -> Computed {
        let state_of = |id: &str| core.states().get(id).map(|state| state.state.clone());
        match &self.expression {
            Expression::Aggregate {
                operation,
                sources,
                round,
            } => {
                let values: Vec<Option<f64>> = sources
                    .iter()
                    .map(|id| state_of(id).as_deref().and_then(expression::numeric))
                    .collect();
                Computed {
                    available: true,
                    state: expression::aggregate(*operation, &values)
                        .map(|value| expression::format_number(value, *round)),
                }
            }
            Expression::Format { parts } => {
                let text = expression::render(parts, state_of);
                if text.chars().count() > MAX_STATE_LENGTH {
                    tracing::warn!(
                        entity = ?self.info.name,
                        "template result is longer than {MAX_STATE_LENGTH} characters"
                    );
                    return Computed::default();
                }
                Computed {
                    available: true,
                    state: Some(text),
                }
            }
        }
    }

    /// Recomputes and writes the state.
    fn update(&self) {
        let Some(handle) = self.handle.lock().clone() else {
            return;
        };
        let Some(core) = handle.core() else {
            return;
        };
        *self.computed.lock() = self.compute(&core);
        if let Err(err) = handle.write_state() {
            tracing::debug!(entity_id = handle.entity_id(), %err, "template state not written");
        }
    }
}

impl Entity for TemplateSensor {
    fn info(&self) -> EntityInfo {
        self.info.clone()
    }

    fn available(&self) -> bool {
        self.computed.lock().available
    }

    fn state(&self) -> Option<String> {
        self.computed.lock().state.clone()
    }

    fn attributes(&self) -> Map<String, Value> {
        let mut attributes = Map::new();
        attributes.insert("entity_id".to_owned(), json!(*self.sources.lock()));
        attributes
    }

    fn added_to_core(&self, handle: EntityHandle) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let own_id = handle.entity_id().to_owned();
            self.sources.lock().retain(|id| *id != own_id);
            let core = handle.core();
            if let Some(core) = &core {
                *self.computed.lock() = self.compute(core);
            }
            *self.handle.lock() = Some(handle);
            let Some(core) = core else {
                return;
            };
            let me = self.me.clone();
            let listened = core.bus().listen(EVENT_STATE_CHANGED, move |event| {
                let me = me.clone();
                async move {
                    let Some(sensor) = me.upgrade() else {
                        return;
                    };
                    let changed = event.data.get("entity_id").and_then(Value::as_str);
                    let ours =
                        changed.is_some_and(|id| sensor.sources.lock().iter().any(|s| s == id));
                    if ours {
                        sensor.update();
                    }
                }
            });
            match listened {
                Ok(listener) => *self.listener.lock() = Some(listener),
                Err(err) => tracing::error!(%err, "template sensor cannot follow its sources"),
            }
        })
    }

    fn will_remove_from_core(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(listener) = self.listener.lock().take() {
                listener.remove();
            }
        })
    }
}
