//! The domain catalog: every entity domain's states, services, feature flags and query methods, as data.
//!
//! One row per domain of Home Assistant's platform list, parsed once from the embedded
//! `catalog/domains.json`. Everything that differs between entity domains is here, so one
//! generic code path (in [`crate::entity_component`]) registers, validates, feature-checks
//! and dispatches the services of every domain, and a host can build proxies from the
//! rows without knowing any domain by name. Bit values, service names and fields follow
//! Home Assistant's.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::schema::{Field, Schema, SchemaDefinitionError};
use crate::service::SupportsResponse;

#[cfg(test)]
mod tests;

/// The catalog's source, compiled into the crate.
const CATALOG_JSON: &str = include_str!("catalog/domains.json");

/// What kind of value an entity domain's state is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// One of [`StateVocabulary::values`] (plus `unavailable` and `unknown`).
    Enum,
    /// A number.
    Numeric,
    /// An ISO 8601 timestamp (when a button was pressed, an event happened, ...).
    Timestamp,
    /// Free text.
    Text,
    /// An ISO 8601 date.
    Date,
    /// An ISO 8601 date and time.
    Datetime,
    /// A time of day, `HH:MM:SS`.
    Time,
    /// Anything (sensors: a number, a timestamp, text or an enum, by device class).
    Any,
}

/// The states an entity of a domain can be in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateVocabulary {
    /// The kind of value.
    pub kind: StateKind,
    /// For [`StateKind::Enum`]: the states, in Home Assistant's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// For [`StateKind::Enum`]: other states are possible too (zone names for a tracker).
    #[serde(default)]
    pub open: bool,
}

impl StateVocabulary {
    /// Whether `state` belongs to the vocabulary (`unavailable` and `unknown` always do).
    pub fn allows(&self, state: &str) -> bool {
        if state == STATE_UNAVAILABLE || state == STATE_UNKNOWN {
            return true;
        }
        match self.kind {
            StateKind::Enum => self.open || self.values.iter().any(|value| value == state),
            StateKind::Numeric => state.parse::<f64>().is_ok(),
            _ => true,
        }
    }
}

/// The state of an entity that cannot be reached.
pub const STATE_UNAVAILABLE: &str = "unavailable";
/// The state of an entity whose state is not known.
pub const STATE_UNKNOWN: &str = "unknown";

/// One feature flag of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureFlag {
    /// Home Assistant's name (`SET_POSITION`).
    pub name: String,
    /// Its bit value (`4`).
    pub bit: u64,
}

/// One service of a domain, called on entities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// The service name (`turn_on`).
    pub name: String,
    /// The service data's fields (target keys are not part of it).
    pub schema: Schema,
    /// Feature flags of which an entity needs at least one; empty when none is needed.
    pub required_features: Vec<String>,
    /// [`ServiceSpec::required_features`] as a bit mask.
    pub required_features_mask: u64,
    /// Whether the service returns response data.
    pub supports_response: SupportsResponse,
    /// Fields only meaningful with a feature flag (a front end hides them otherwise).
    pub field_features: BTreeMap<String, String>,
}

impl ServiceSpec {
    /// Whether an entity with `supported_features` may receive this service.
    pub fn is_supported_by(&self, supported_features: u64) -> bool {
        self.required_features_mask == 0 || supported_features & self.required_features_mask != 0
    }
}

/// Everything the catalog knows about one entity domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainSpec {
    /// The domain (`light`).
    pub domain: String,
    /// Whether an entity of this domain living in a sandbox can be proxied on main.
    pub proxyable: bool,
    /// The states its entities take.
    pub state: StateVocabulary,
    /// Its feature flags, in bit order.
    pub features: Vec<FeatureFlag>,
    /// Its entity services, in Home Assistant's order.
    pub services: Vec<ServiceSpec>,
    /// Query-shaped entity methods (`get_events`, `release_notes`), called with arguments and
    /// answering a value, outside the service registry.
    pub queries: Vec<String>,
    /// Its device classes (Home Assistant's `*DeviceClass` enums); empty when the domain has
    /// none. An entity's `device_class` is one of these or none.
    #[serde(default)]
    pub device_classes: Vec<String>,
}

impl DomainSpec {
    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|service| service.name == name)
    }

    /// The bit of the feature flag named `name`.
    pub fn feature_bit(&self, name: &str) -> Option<u64> {
        self.features
            .iter()
            .find(|flag| flag.name == name)
            .map(|flag| flag.bit)
    }

    /// The names of the flags set in `mask`, in bit order.
    pub fn feature_names(&self, mask: u64) -> Vec<&str> {
        self.features
            .iter()
            .filter(|flag| mask & flag.bit != 0)
            .map(|flag| flag.name.as_str())
            .collect()
    }

    /// Every flag of the domain as one mask.
    pub fn all_features(&self) -> u64 {
        self.features.iter().fold(0, |mask, flag| mask | flag.bit)
    }

    /// Whether `method` is one of the domain's query methods.
    pub fn has_query(&self, method: &str) -> bool {
        self.queries.iter().any(|query| query == method)
    }

    /// The services that return response data.
    pub fn services_with_response(&self) -> impl Iterator<Item = &ServiceSpec> {
        self.services
            .iter()
            .filter(|service| service.supports_response != SupportsResponse::None)
    }
}

/// Why the catalog's source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The source is not the expected JSON shape.
    #[error("the domain catalog is malformed: {0}")]
    Malformed(String),
    /// A service names a feature flag its domain does not have.
    #[error("{domain}.{service} names unknown feature flag {flag}")]
    UnknownFeature {
        /// The domain.
        domain: String,
        /// The service.
        service: String,
        /// The unknown flag.
        flag: String,
    },
    /// A service's field schema is itself broken.
    #[error("{domain}.{service} has an invalid schema: {source}")]
    Schema {
        /// The domain.
        domain: String,
        /// The service.
        service: String,
        /// What is wrong with it.
        source: SchemaDefinitionError,
    },
    /// A domain appears twice.
    #[error("domain {0} appears twice")]
    DuplicateDomain(String),
}

/// Every entity domain, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// The rows, by domain.
    domains: BTreeMap<String, DomainSpec>,
}

impl Catalog {
    /// Reads a catalog from its JSON source (the shape of `catalog/domains.json`).
    pub fn parse(source: &str) -> Result<Self, CatalogError> {
        let raw: RawCatalog =
            serde_json::from_str(source).map_err(|err| CatalogError::Malformed(err.to_string()))?;
        let mut domains = BTreeMap::new();
        for row in raw.domains {
            let spec = row.into_spec()?;
            if domains.contains_key(&spec.domain) {
                return Err(CatalogError::DuplicateDomain(spec.domain));
            }
            domains.insert(spec.domain.clone(), spec);
        }
        Ok(Self { domains })
    }

    /// The row of `domain`.
    pub fn domain(&self, domain: &str) -> Option<&DomainSpec> {
        self.domains.get(domain)
    }

    /// Every row, by domain name.
    pub fn domains(&self) -> impl Iterator<Item = &DomainSpec> {
        self.domains.values()
    }

    /// The domains whose entities can be proxied, sorted.
    pub fn proxyable_domains(&self) -> Vec<&str> {
        self.domains
            .values()
            .filter(|spec| spec.proxyable)
            .map(|spec| spec.domain.as_str())
            .collect()
    }

    /// Whether `domain` is an entity domain whose entities can be proxied.
    pub fn is_proxyable(&self, domain: &str) -> bool {
        self.domain(domain).is_some_and(|spec| spec.proxyable)
    }
}

/// The catalog compiled into this crate, parsed on first use.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        Catalog::parse(CATALOG_JSON).expect("the embedded catalog/domains.json is valid")
    })
}

/// The source file's shape.
#[derive(Deserialize)]
struct RawCatalog {
    /// The rows.
    domains: Vec<RawDomain>,
}

/// One row as written in the source.
#[derive(Deserialize)]
struct RawDomain {
    /// The domain.
    domain: String,
    /// Whether it can be proxied.
    proxyable: bool,
    /// Its states.
    state: StateVocabulary,
    /// Flag name to bit, in bit order.
    #[serde(default)]
    features: Map<String, Value>,
    /// Its services.
    #[serde(default)]
    services: Vec<RawService>,
    /// Its query methods.
    #[serde(default)]
    queries: Vec<String>,
    /// Its device classes.
    #[serde(default)]
    device_classes: Vec<String>,
}

/// One service as written in the source.
#[derive(Deserialize)]
struct RawService {
    /// The name.
    name: String,
    /// Required flags (any of).
    #[serde(default)]
    features: Vec<String>,
    /// Response mode, `none` when absent.
    #[serde(default)]
    response: SupportsResponse,
    /// Field name to field definition (the schema's field shape without `name`; select
    /// options may be plain strings).
    #[serde(default)]
    fields: Map<String, Value>,
    /// Field name to the flag it needs.
    #[serde(default)]
    field_features: BTreeMap<String, String>,
}

impl RawDomain {
    fn into_spec(self) -> Result<DomainSpec, CatalogError> {
        let mut features = Vec::new();
        for (name, bit) in self.features {
            let bit = bit.as_u64().ok_or_else(|| {
                CatalogError::Malformed(format!("{}: flag {name} is not a number", self.domain))
            })?;
            features.push(FeatureFlag { name, bit });
        }
        features.sort_by_key(|flag| flag.bit);
        let mut spec = DomainSpec {
            domain: self.domain,
            proxyable: self.proxyable,
            state: self.state,
            features,
            services: Vec::new(),
            queries: self.queries,
            device_classes: self.device_classes,
        };
        for raw in self.services {
            let service = raw.into_spec(&spec)?;
            spec.services.push(service);
        }
        Ok(spec)
    }
}

impl RawService {
    fn into_spec(self, domain: &DomainSpec) -> Result<ServiceSpec, CatalogError> {
        let unknown = |flag: &str| CatalogError::UnknownFeature {
            domain: domain.domain.clone(),
            service: self.name.clone(),
            flag: flag.to_owned(),
        };
        let mut mask = 0;
        for flag in &self.features {
            mask |= domain.feature_bit(flag).ok_or_else(|| unknown(flag))?;
        }
        for flag in self.field_features.values() {
            domain.feature_bit(flag).ok_or_else(|| unknown(flag))?;
        }
        let mut fields = Vec::new();
        for (name, definition) in &self.fields {
            let mut definition = match definition {
                Value::Object(map) => map.clone(),
                other => {
                    return Err(CatalogError::Malformed(format!(
                        "{}.{}: field {name} is {other}, not an object",
                        domain.domain, self.name
                    )));
                }
            };
            definition.insert("name".into(), Value::String(name.clone()));
            expand_options(&mut definition);
            let field: Field =
                serde_json::from_value(Value::Object(definition)).map_err(|err| {
                    CatalogError::Malformed(format!(
                        "{}.{}: field {name}: {err}",
                        domain.domain, self.name
                    ))
                })?;
            fields.push(field);
        }
        let schema = Schema::new(fields);
        schema.check().map_err(|source| CatalogError::Schema {
            domain: domain.domain.clone(),
            service: self.name.clone(),
            source,
        })?;
        Ok(ServiceSpec {
            name: self.name,
            schema,
            required_features: self.features,
            required_features_mask: mask,
            supports_response: self.response,
            field_features: self.field_features,
        })
    }
}

/// Turns select options written as plain strings into `{value, label}` pairs.
fn expand_options(definition: &mut Map<String, Value>) {
    if let Some(Value::Array(options)) = definition.get_mut("options") {
        for option in options.iter_mut() {
            if let Value::String(value) = option {
                *option = serde_json::json!({"value": value, "label": value});
            }
        }
    }
}
