//! The systemmonitor config flow: one form (disk path, optional network interface, interval),
//! one entry per core (Home Assistant's systemmonitor is single-instance).

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use homecore::{
    Field, FieldType, FlowError, FlowHandler, FlowStep, FlowStepContext, Schema, Selector,
};

use super::parse;
use super::{
    DEFAULT_DISK_PATH, DEFAULT_SCAN_INTERVAL_SECS, DOMAIN, MAX_SCAN_INTERVAL_SECS,
    MIN_SCAN_INTERVAL_SECS,
};

/// The form of the `user` step.
pub(crate) fn user_schema() -> Schema {
    Schema::new(vec![
        Field::required("disk_path", FieldType::string())
            .with_default(json!(DEFAULT_DISK_PATH))
            .with_selector(Selector::text()),
        Field::optional("network_interface", FieldType::string()).with_selector(Selector::text()),
        Field::required(
            "scan_interval",
            FieldType::integer_range(MIN_SCAN_INTERVAL_SECS, MAX_SCAN_INTERVAL_SECS),
        )
        .with_default(json!(DEFAULT_SCAN_INTERVAL_SECS))
        .with_selector(Selector::number(
            MIN_SCAN_INTERVAL_SECS as f64,
            MAX_SCAN_INTERVAL_SECS as f64,
            1.0,
            false,
        )),
    ])
}

/// Checks the disk path: absolute, and `statvfs` must be able to read it.
pub(crate) fn check_disk_path(path: &str) -> Result<PathBuf, &'static str> {
    let path = Path::new(path.trim());
    if !path.is_absolute() {
        return Err("disk_path_not_absolute");
    }
    parse::disk_usage(path).map_err(|_| "disk_path_unreadable")?;
    Ok(path.to_path_buf())
}

/// The config flow; `proc_root` is where interfaces are looked up.
#[derive(Debug)]
pub(crate) struct SystemMonitorConfigFlow {
    /// Folder standing for `/proc`.
    pub(crate) proc_root: PathBuf,
}

impl SystemMonitorConfigFlow {
    fn check(
        &self,
        input: &Map<String, Value>,
    ) -> Result<Map<String, Value>, (&'static str, &'static str)> {
        let disk_path = input
            .get("disk_path")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_DISK_PATH);
        let disk_path = check_disk_path(disk_path).map_err(|key| ("disk_path", key))?;
        let mut data = input.clone();
        data.insert(
            "disk_path".to_owned(),
            json!(disk_path.display().to_string()),
        );
        let interface = input
            .get("network_interface")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|name| !name.is_empty());
        match interface {
            Some(interface) => {
                let known = parse::read_text(&self.proc_root.join("net/dev"))
                    .map(|text| parse::net_interfaces(&text))
                    .unwrap_or_default();
                if !known.iter().any(|name| name == interface) {
                    return Err(("network_interface", "interface_not_found"));
                }
                data.insert("network_interface".to_owned(), json!(interface));
            }
            None => {
                data.remove("network_interface");
            }
        }
        Ok(data)
    }
}

impl FlowHandler for SystemMonitorConfigFlow {
    fn step<'a>(
        &'a mut self,
        flow: &'a FlowStepContext,
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
            if !flow
                .core()
                .config_entries()
                .entries(Some(DOMAIN))
                .is_empty()
            {
                return Err(FlowError::abort("single_instance_allowed"));
            }
            let Some(input) = input else {
                return Ok(FlowStep::form("user", Some(user_schema())));
            };
            match self.check(&input) {
                Ok(data) => Ok(FlowStep::create_entry("System Monitor", data)),
                Err(error) => Ok(FlowStep::form_with_errors(
                    "user",
                    Some(user_schema()),
                    &[error],
                )),
            }
        })
    }
}
