//! The commands that talk to a running hub: `status`, `entries`, `start`/`stop`/`restart` of a
//! group, `reload` of an entry, and `add`, which runs an integration's config flow in the
//! terminal (or from `--data key=value` for scripts).

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;
use std::time::Duration;

use homecore::schema::{Field, FieldType};
use homecore::{FlowResult, FlowStep, Schema};
use sandbox_host::report::{GroupReport, human_duration};
use serde_json::{Map, Value, json};

use crate::client::{Client, ClientError};
use crate::control::{EntryReport, HubStatus};

/// Exit code: every group runs (or has nothing to run).
pub const EXIT_OK: u8 = 0;
/// Exit code: a group failed (status), or the command was refused.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the hub is not reachable.
pub const EXIT_UNREACHABLE: u8 = 3;

/// What a command prints and its exit code.
pub struct Outcome {
    /// Standard output.
    pub stdout: String,
    /// The exit code.
    pub code: u8,
}

/// An error of a command as the user sees it, with the exit code it ends with.
pub fn failure(error: &ClientError) -> (String, u8) {
    let code = if error.is_unreachable() {
        EXIT_UNREACHABLE
    } else {
        EXIT_FAILED
    };
    (error.to_string(), code)
}

/// `sandbox-host status [--json]`.
pub async fn status(
    client: &Client,
    config_dir: &Path,
    as_json: bool,
) -> Result<Outcome, ClientError> {
    let status: HubStatus = client.get("/api/hub/status").await?;
    let code = if status.groups.iter().any(GroupReport::is_failed) {
        EXIT_FAILED
    } else {
        EXIT_OK
    };
    let stdout = if as_json {
        serde_json::to_string_pretty(&status)
            .map_err(|error| ClientError::Unreadable(error.to_string()))?
    } else {
        render_status(&status, config_dir)
    };
    Ok(Outcome { stdout, code })
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn seconds(seconds: f64) -> String {
    human_duration(Duration::from_secs_f64(seconds.max(0.0)))
}

/// What confines a group's latest child, for the status: the profile, whether the syscall
/// filter is installed, and what confines its files
/// (`confinement: default (seccomp, Landlock ABI 7)`).
fn confinement_line(profile: &str, seccomp: Option<bool>, landlock_abi: Option<u32>) -> String {
    let seccomp = match seccomp {
        Some(true) => "seccomp",
        _ => "no seccomp filter",
    };
    let files = match landlock_abi {
        Some(0) => "files NOT confined: the kernel has no Landlock".to_owned(),
        Some(abi) => format!("Landlock ABI {abi}"),
        None => "files NOT confined".to_owned(),
    };
    format!("confinement: {profile} ({seccomp}, {files})")
}

/// The status as text: one block per group.
pub fn render_status(status: &HubStatus, config_dir: &Path) -> String {
    let mut out = format!(
        "hub {} (pid {}), up {}, config {}{}\n",
        status.version,
        status.pid,
        seconds(status.uptime_seconds),
        status.config_dir.display(),
        status
            .http_address
            .as_deref()
            .map(|address| format!(", HTTP API on {address}"))
            .unwrap_or_default()
    );
    if status.groups.is_empty() {
        out.push_str(
            "no sandbox group yet: add an integration with `sandbox-host add INTEGRATION`\n",
        );
    }
    for group in &status.groups {
        let process = match (group.pid, group.uptime_seconds) {
            (Some(pid), Some(uptime)) => format!("pid {pid}, up {}", seconds(uptime)),
            (Some(pid), None) => format!("pid {pid}"),
            _ => "no process".to_owned(),
        };
        let state = match group.backoff_seconds {
            Some(wait) => format!("{} (next start in {})", group.state, seconds(wait)),
            None => group.state.clone(),
        };
        out.push_str(&format!("\n{}: {state}, {process}\n", group.name));
        out.push_str(&format!(
            "  starts: {} of {} in {} ({} in all, {} after crashes)\n",
            group.starts_in_window,
            group.max_starts,
            seconds(group.window_seconds),
            group.total_starts,
            group.restarts
        ));
        out.push_str(&format!(
            "  entries: {}, entities: {}{}\n",
            group.entries.len(),
            group.entities,
            group
                .rss_bytes
                .map(|rss| format!(", memory: {}", megabytes(rss)))
                .unwrap_or_default()
        ));
        if let Some(confinement) = &group.confinement {
            out.push_str(&format!(
                "  {}\n",
                confinement_line(confinement, group.seccomp, group.landlock_abi)
            ));
        }
        let latency = &group.channel.call_latency;
        if let (Some(p50), Some(p99)) = (latency.p50_us, latency.p99_us) {
            let bound = |micros: u64| match micros {
                u64::MAX => "more than a minute".to_owned(),
                micros if micros < 1000 => format!("≤ {micros} µs"),
                micros => format!("≤ {} ms", micros / 1000),
            };
            out.push_str(&format!(
                "  calls answered: {}, p50 {}, p99 {}\n",
                latency.count,
                bound(p50),
                bound(p99)
            ));
        }
        if let Some(exit) = &group.last_exit {
            let cause = group.last_exit_cause.as_deref().unwrap_or("ended");
            out.push_str(&format!("  last exit: {cause}: {exit}\n"));
        }
        if !group.refusals.is_empty() {
            let refusals: Vec<String> = group
                .refusals
                .iter()
                .map(|(gate, count)| format!("{gate} {count}"))
                .collect();
            out.push_str(&format!("  refused: {}\n", refusals.join(", ")));
        }
        if group.is_failed() {
            out.push_str(&format!(
                "  gave up after {} starts in {}: {}\n  start it again: sandbox-host start {} --config {}\n",
                group.starts_in_window,
                seconds(group.window_seconds),
                group.failure.as_deref().unwrap_or("no reason given"),
                group.name,
                config_dir.display()
            ));
        }
    }
    out
}

/// `sandbox-host metrics`: the hub's metrics as OpenMetrics text (what `/metrics` serves).
pub async fn metrics(client: &Client) -> Result<Outcome, ClientError> {
    Ok(Outcome {
        stdout: client.get_text("/metrics").await?,
        code: EXIT_OK,
    })
}

/// `sandbox-host entries [--json]`.
pub async fn entries(client: &Client, as_json: bool) -> Result<Outcome, ClientError> {
    let entries: Vec<EntryReport> = client.get("/api/hub/entries").await?;
    let stdout = if as_json {
        serde_json::to_string_pretty(&entries)
            .map_err(|error| ClientError::Unreadable(error.to_string()))?
    } else if entries.is_empty() {
        "no config entry: add one with `sandbox-host add INTEGRATION`\n".to_owned()
    } else {
        let mut out = String::new();
        for entry in &entries {
            out.push_str(&format!(
                "{}  {}  {:?}  {}  {}{}\n",
                entry.entry_id,
                entry.domain,
                entry.title,
                entry.state,
                entry.group.as_deref().unwrap_or("main"),
                entry
                    .reason
                    .as_deref()
                    .map(|reason| format!("  ({reason})"))
                    .unwrap_or_default()
            ));
        }
        out
    };
    Ok(Outcome {
        stdout,
        code: EXIT_OK,
    })
}

/// `sandbox-host start|stop|restart GROUP`.
pub async fn control_group(
    client: &Client,
    group: &str,
    action: &str,
) -> Result<Outcome, ClientError> {
    let report: GroupReport = client
        .post(
            &format!("/api/hub/groups/{}/{action}", url_segment(group)),
            &json!({}),
        )
        .await?;
    let code = if report.is_failed() {
        EXIT_FAILED
    } else {
        EXIT_OK
    };
    Ok(Outcome {
        stdout: format!("{}: {}\n", report.name, report.state),
        code,
    })
}

/// `sandbox-host reload ENTRY_ID`.
pub async fn reload(client: &Client, entry_id: &str) -> Result<Outcome, ClientError> {
    let entry: EntryReport = client
        .post(
            &format!("/api/hub/entries/{}/reload", url_segment(entry_id)),
            &json!({}),
        )
        .await?;
    let code = if entry.state == "loaded" {
        EXIT_OK
    } else {
        EXIT_FAILED
    };
    Ok(Outcome {
        stdout: format!(
            "{} ({}): {}{}\n",
            entry.entry_id,
            entry.domain,
            entry.state,
            entry
                .reason
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        ),
        code,
    })
}

/// A path segment with the characters a URL path cannot hold escaped.
fn url_segment(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Where `add` reads a value the `--data` pairs do not give.
pub trait Prompter {
    /// Asks for one line; `None` at the end of input.
    fn ask(&mut self, question: &str) -> Option<String>;
    /// Says something to the person.
    fn say(&mut self, line: &str);
}

/// A person at a terminal.
pub struct Terminal;

impl Prompter for Terminal {
    fn ask(&mut self, question: &str) -> Option<String> {
        let mut stderr = std::io::stderr();
        let _ = write!(stderr, "{question}");
        let _ = stderr.flush();
        let mut line = String::new();
        match std::io::stdin().lock().read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end_matches(['\n', '\r']).to_owned()),
        }
    }

    fn say(&mut self, line: &str) {
        eprintln!("{line}");
    }
}

/// Whether `add` may ask: standard input is a terminal.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal()
}

/// `key=value` pairs from `--data`.
pub fn parse_data(pairs: &[String]) -> Result<BTreeMap<String, String>, String> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(key, value)| (key.trim().to_owned(), value.to_owned()))
                .filter(|(key, _)| !key.is_empty())
                .ok_or_else(|| format!("--data {pair:?} is not KEY=VALUE"))
        })
        .collect()
}

/// The type of a field, in a word (`string`, `integer`, `select`).
fn type_name(kind: &FieldType) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|value| value.get("type")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "value".to_owned())
}

/// A value typed in for a field: structured types are JSON, everything else is sent as text
/// and coerced by the schema on the hub (numbers, booleans).
fn field_value(kind: &FieldType, text: &str) -> Result<Value, String> {
    match kind {
        FieldType::List { .. } | FieldType::Object { .. } | FieldType::Section { .. } => {
            serde_json::from_str(text).map_err(|error| format!("expected JSON: {error}"))
        }
        _ => Ok(Value::String(text.to_owned())),
    }
}

fn describe_field(field: &Field) -> String {
    let mut parts = vec![type_name(&field.kind)];
    if let FieldType::Select { options, .. } = &field.kind {
        let values: Vec<&str> = options.iter().map(|option| option.value.as_str()).collect();
        parts.push(format!("one of {}", values.join(", ")));
    }
    if let Some(default) = &field.default {
        parts.push(format!("default {default}"));
    } else if field.required {
        parts.push("required".to_owned());
    }
    let mut text = format!("{} [{}]", field.name, parts.join(", "));
    if let Some(description) = &field.description {
        text.push_str(&format!(" {description}"));
    }
    text
}

/// Fills a form: from `data` where it has the key, else by asking (when a person is there),
/// else left to the schema's default.
fn fill_form(
    schema: Option<&Schema>,
    errors: &BTreeMap<String, String>,
    data: &BTreeMap<String, String>,
    prompter: Option<&mut (dyn Prompter + '_)>,
) -> Result<Map<String, Value>, String> {
    let mut filled = Map::new();
    let Some(schema) = schema else {
        return Ok(filled);
    };
    let mut prompter = prompter;
    for field in &schema.fields {
        let error = errors.get(&field.name);
        if let (Some(text), None) = (data.get(&field.name), error) {
            filled.insert(
                field.name.clone(),
                field_value(&field.kind, text)
                    .map_err(|error| format!("{}: {error}", field.name))?,
            );
            continue;
        }
        let Some(prompter) = prompter.as_deref_mut() else {
            if let Some(error) = error {
                return Err(format!("{}: {error}", field.name));
            }
            continue;
        };
        if let Some(error) = error {
            prompter.say(&format!("  {}: {error}", field.name));
        }
        loop {
            let Some(answer) = prompter.ask(&format!("{}: ", describe_field(field))) else {
                return Err("input ended".to_owned());
            };
            if answer.is_empty() {
                break;
            }
            match field_value(&field.kind, &answer) {
                Ok(value) => {
                    filled.insert(field.name.clone(), value);
                    break;
                }
                Err(error) => prompter.say(&format!("  {error}")),
            }
        }
    }
    Ok(filled)
}

/// Chooses a menu option: `next_step_id` from `data`, else by asking.
fn choose(
    options: &[homecore::MenuOption],
    data: &BTreeMap<String, String>,
    prompter: Option<&mut (dyn Prompter + '_)>,
) -> Result<String, String> {
    let ids: Vec<&str> = options
        .iter()
        .map(|option| option.step_id.as_str())
        .collect();
    if let Some(choice) = data.get("next_step_id") {
        return if ids.contains(&choice.as_str()) {
            Ok(choice.clone())
        } else {
            Err(format!(
                "next_step_id {choice:?} is not one of {}",
                ids.join(", ")
            ))
        };
    }
    let Some(prompter) = prompter else {
        return Err(format!(
            "the flow asks for a choice: give --data next_step_id=ONE_OF({})",
            ids.join(", ")
        ));
    };
    for (number, option) in options.iter().enumerate() {
        prompter.say(&format!(
            "  {}. {}{}",
            number + 1,
            option.step_id,
            option
                .label
                .as_deref()
                .map(|label| format!(" ({label})"))
                .unwrap_or_default()
        ));
    }
    loop {
        let Some(answer) = prompter.ask("choice: ") else {
            return Err("input ended".to_owned());
        };
        let picked = answer
            .parse::<usize>()
            .ok()
            .and_then(|number| ids.get(number.checked_sub(1)?))
            .or_else(|| ids.iter().find(|id| **id == answer));
        if let Some(id) = picked {
            return Ok((*id).to_owned());
        }
        prompter.say(&format!("  pick a number from 1 to {}", ids.len()));
    }
}

/// `sandbox-host add INTEGRATION [--data KEY=VALUE]...`: the integration's config flow, step by
/// step, until it creates an entry (exit 0) or ends otherwise (exit 1).
pub async fn add(
    client: &Client,
    integration: &str,
    data: &BTreeMap<String, String>,
    mut prompter: Option<&mut dyn Prompter>,
) -> Result<Outcome, ClientError> {
    let mut result: FlowResult = client
        .post("/api/hub/flows", &json!({ "handler": integration }))
        .await?;
    let mut last_form_error: Option<String> = None;
    loop {
        let input = match &result.step {
            FlowStep::Form {
                step_id,
                data_schema,
                errors,
                ..
            } => {
                if let Some(prompter) = prompter.as_deref_mut() {
                    prompter.say(&format!("{integration}: step {step_id}"));
                }
                let mut errors = errors.clone();
                if let Some(error) = last_form_error.take() {
                    errors.entry("base".to_owned()).or_insert(error);
                }
                let base = errors.get("base").cloned();
                if let Some(base) = &base {
                    match prompter.as_deref_mut() {
                        Some(prompter) => prompter.say(&format!("  {base}")),
                        None => return Ok(aborted(client, &result.flow_id, base).await),
                    }
                }
                match fill_form(data_schema.as_ref(), &errors, data, prompter.as_deref_mut()) {
                    Ok(filled) => Value::Object(filled),
                    Err(error) => return Ok(aborted(client, &result.flow_id, &error).await),
                }
            }
            FlowStep::Menu { menu_options, .. } => {
                match choose(menu_options, data, prompter.as_deref_mut()) {
                    Ok(choice) => json!({ "next_step_id": choice }),
                    Err(error) => return Ok(aborted(client, &result.flow_id, &error).await),
                }
            }
            FlowStep::CreateEntry {
                title, entry_id, ..
            } => {
                return Ok(Outcome {
                    stdout: format!(
                        "created {} entry {:?}{}\n",
                        integration,
                        title,
                        entry_id
                            .as_deref()
                            .map(|id| format!(" ({id})"))
                            .unwrap_or_default()
                    ),
                    code: EXIT_OK,
                });
            }
            FlowStep::Abort { reason, .. } => {
                return Ok(Outcome {
                    stdout: format!("the flow ended without an entry: {reason}\n"),
                    code: EXIT_FAILED,
                });
            }
            other => {
                let error = format!("this step cannot be done from a terminal: {other:?}");
                return Ok(aborted(client, &result.flow_id, &error).await);
            }
        };
        match client
            .post(
                &format!("/api/hub/flows/{}", url_segment(&result.flow_id)),
                &input,
            )
            .await
        {
            Ok(next) => result = next,
            // The hub refused the input (validation): ask again where a person is there.
            Err(ClientError::Refused { status, message })
                if status.as_u16() == 400 && prompter.is_some() =>
            {
                last_form_error = Some(message);
            }
            Err(error) => {
                let _ = client
                    .delete::<Value>(&format!("/api/hub/flows/{}", url_segment(&result.flow_id)))
                    .await;
                return Err(error);
            }
        }
    }
}

async fn aborted(client: &Client, flow_id: &str, why: &str) -> Outcome {
    let _ = client
        .delete::<Value>(&format!("/api/hub/flows/{}", url_segment(flow_id)))
        .await;
    Outcome {
        stdout: format!("no entry was created: {why}\n"),
        code: EXIT_FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Script {
        answers: Vec<&'static str>,
        said: Vec<String>,
    }

    impl Prompter for Script {
        fn ask(&mut self, question: &str) -> Option<String> {
            self.said.push(question.to_owned());
            (!self.answers.is_empty()).then(|| self.answers.remove(0).to_owned())
        }
        fn say(&mut self, line: &str) {
            self.said.push(line.to_owned());
        }
    }

    fn schema() -> Schema {
        Schema::new(vec![
            Field::required("host", FieldType::string()),
            Field::optional("port", FieldType::integer_range(1, 65535)).with_default(json!(8080)),
            Field::optional(
                "tags",
                FieldType::List {
                    item: Box::new(FieldType::string()),
                    min_length: None,
                    max_length: None,
                },
            ),
        ])
    }

    fn confined(profile: &str, seccomp: bool, landlock_abi: Option<u32>) -> String {
        confinement_line(profile, Some(seccomp), landlock_abi)
    }

    #[test]
    fn the_confinement_line_says_the_profile_the_filter_and_the_files() {
        assert_eq!(
            confined("default", true, Some(7)),
            "confinement: default (seccomp, Landlock ABI 7)"
        );
        assert_eq!(
            confined("default", true, Some(0)),
            "confinement: default (seccomp, files NOT confined: the kernel has no Landlock)"
        );
        assert_eq!(
            confined("off", false, None),
            "confinement: off (no seccomp filter, files NOT confined)"
        );
    }

    #[test]
    fn data_pairs_fill_the_form_and_structured_fields_are_json() {
        let data =
            parse_data(&["host=10.0.0.2".into(), "tags=[\"a\",\"b\"]".into()]).expect("pairs");
        let filled = fill_form(Some(&schema()), &BTreeMap::new(), &data, None).expect("filled");
        assert_eq!(filled["host"], json!("10.0.0.2"));
        assert_eq!(filled["tags"], json!(["a", "b"]));
        assert!(!filled.contains_key("port"), "left to the schema's default");
    }

    #[test]
    fn a_malformed_pair_is_named() {
        let error = parse_data(&["host".into()]).expect_err("no =");
        assert!(error.contains("\"host\""), "{error}");
    }

    #[test]
    fn a_person_is_asked_for_what_the_data_does_not_give_and_sees_the_field_errors() {
        let mut script = Script {
            answers: vec!["10.0.0.9", "", "not json", "[]"],
            said: vec![],
        };
        let errors = BTreeMap::from([("host".to_owned(), "cannot_connect".to_owned())]);
        let filled = fill_form(
            Some(&schema()),
            &errors,
            &BTreeMap::new(),
            Some(&mut script),
        )
        .expect("filled");
        assert_eq!(filled["host"], json!("10.0.0.9"));
        assert!(
            !filled.contains_key("port"),
            "an empty answer keeps the default"
        );
        assert_eq!(filled["tags"], json!([]));
        assert!(
            script
                .said
                .iter()
                .any(|line| line.contains("cannot_connect")),
            "{:?}",
            script.said
        );
        assert!(
            script
                .said
                .iter()
                .any(|line| line.starts_with("port [integer, default 8080]"))
        );
        assert!(
            script
                .said
                .iter()
                .any(|line| line.contains("expected JSON"))
        );
    }

    #[test]
    fn without_a_person_a_field_error_ends_the_flow_with_it() {
        let errors = BTreeMap::from([("host".to_owned(), "cannot_connect".to_owned())]);
        let error =
            fill_form(Some(&schema()), &errors, &BTreeMap::new(), None).expect_err("no one to ask");
        assert_eq!(error, "host: cannot_connect");
    }

    #[test]
    fn a_menu_choice_comes_from_the_data_or_by_number() {
        let options = vec![
            homecore::MenuOption {
                step_id: "defaults".into(),
                label: None,
            },
            homecore::MenuOption {
                step_id: "custom".into(),
                label: Some("Your own".into()),
            },
        ];
        let data = BTreeMap::from([("next_step_id".to_owned(), "custom".to_owned())]);
        assert_eq!(choose(&options, &data, None).expect("chosen"), "custom");
        let wrong = BTreeMap::from([("next_step_id".to_owned(), "nope".to_owned())]);
        assert!(
            choose(&options, &wrong, None)
                .expect_err("unknown")
                .contains("defaults, custom")
        );
        assert!(choose(&options, &BTreeMap::new(), None).is_err());
        let mut script = Script {
            answers: vec!["9", "1"],
            said: vec![],
        };
        assert_eq!(
            choose(&options, &BTreeMap::new(), Some(&mut script)).expect("chosen"),
            "defaults"
        );
    }

    #[test]
    fn a_path_segment_is_escaped() {
        assert_eq!(url_segment("custom-acme_x.1"), "custom-acme_x.1");
        assert_eq!(url_segment("a/b c"), "a%2Fb%20c");
    }
}
