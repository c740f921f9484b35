//! The hub's metrics as OpenMetrics text (what Prometheus scrapes at `/metrics`): every group's
//! state, starts, memory, entities, messages per type and direction, call latency, shed and
//! dropped frames and refusals per gate, read from the same reports as `status`. Encoded with
//! `prometheus-client` from a snapshot taken at each scrape: nothing is counted twice and the
//! service path pays nothing for it.
//!
//! The channel counters belong to the group's current process: they start again from zero with
//! each process, which Prometheus reads as a counter reset.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use sandbox_host::report::GroupReport;

use crate::control::HubStatus;

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The group states a `sandbox_group_state` gauge is written for (1 for the current one).
const STATES: [&str; 5] = ["stopped", "starting", "running", "backing_off", "failed"];

/// `status` as OpenMetrics text.
pub fn encode(status: &HubStatus) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(HubCollector(status.clone())));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

#[derive(Debug)]
struct HubCollector(HubStatus);

type Labels<'a> = [(&'static str, &'a str)];

/// Writes one family: its descriptor, then one sample per group.
fn family<'g>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (Vec<(&'static str, &'g str)>, Sample)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, sample) in samples {
        if labels.is_empty() {
            // A hub-wide value: one sample, written without a label set.
            return sample.encode(metric);
        }
        let labels: &Labels<'_> = &labels;
        sample.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

enum Sample {
    Counter(u64),
    Gauge(i64),
}

impl Sample {
    fn encode(
        self,
        encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        match self {
            Self::Counter(value) => ConstCounter::new(value).encode(encoder),
            Self::Gauge(value) => ConstGauge::new(value).encode(encoder),
        }
    }
}

fn gauge(value: impl TryInto<i64>) -> Sample {
    Sample::Gauge(value.try_into().unwrap_or(i64::MAX))
}

fn per_group(
    groups: &[GroupReport],
    value: impl Fn(&GroupReport) -> Option<Sample>,
) -> Vec<(Vec<(&'static str, &str)>, Sample)> {
    groups
        .iter()
        .filter_map(|group| Some((vec![("group", group.name.as_str())], value(group)?)))
        .collect()
}

impl Collector for HubCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let status = &self.0;
        let groups = status.groups.as_slice();
        family(
            &mut encoder,
            "sandbox_hub_uptime_seconds",
            "Seconds since the hub started.",
            MetricType::Gauge,
            [(vec![], gauge(status.uptime_seconds as i64))],
        )?;
        family(
            &mut encoder,
            "sandbox_control_refusals",
            "Control socket connections refused for their peer's user.",
            MetricType::Counter,
            [(vec![], Sample::Counter(status.control_refusals))],
        )?;
        family(
            &mut encoder,
            "sandbox_api_websocket_connections",
            "WebSocket API connections open now.",
            MetricType::Gauge,
            [(vec![], gauge(status.websocket.open))],
        )?;
        family(
            &mut encoder,
            "sandbox_api_websocket_accepted",
            "WebSocket API connections accepted (authenticated or not).",
            MetricType::Counter,
            [(vec![], Sample::Counter(status.websocket.accepted))],
        )?;
        family(
            &mut encoder,
            "sandbox_api_websocket_disconnections",
            "WebSocket API connections ended, per reason (`slow_consumer`: main cut a client that did not read).",
            MetricType::Counter,
            status
                .websocket
                .disconnections
                .iter()
                .map(|(reason, count)| {
                    (vec![("reason", reason.as_str())], Sample::Counter(*count))
                }),
        )?;
        let states = groups.iter().flat_map(|group| {
            STATES.iter().map(move |state| {
                (
                    vec![("group", group.name.as_str()), ("state", *state)],
                    gauge(i64::from(group.state == *state)),
                )
            })
        });
        family(
            &mut encoder,
            "sandbox_group_state",
            "1 for the group's current state, 0 for the others.",
            MetricType::Gauge,
            states,
        )?;
        family(
            &mut encoder,
            "sandbox_group_starts",
            "Processes started for the group since the hub started.",
            MetricType::Counter,
            per_group(groups, |group| Some(Sample::Counter(group.total_starts))),
        )?;
        family(
            &mut encoder,
            "sandbox_group_crash_restarts",
            "Crash respawns since the group was last started by hand.",
            MetricType::Gauge,
            per_group(groups, |group| Some(gauge(group.restarts))),
        )?;
        family(
            &mut encoder,
            "sandbox_group_starts_in_window",
            "Starts the restart budget counts in its window.",
            MetricType::Gauge,
            per_group(groups, |group| Some(gauge(group.starts_in_window))),
        )?;
        family(
            &mut encoder,
            "sandbox_group_entities",
            "Proxies main holds for the group's entities.",
            MetricType::Gauge,
            per_group(groups, |group| Some(gauge(group.entities))),
        )?;
        family(
            &mut encoder,
            "sandbox_group_resident_memory_bytes",
            "Resident memory of the group's running process.",
            MetricType::Gauge,
            per_group(groups, |group| group.rss_bytes.map(gauge)),
        )?;
        family(
            &mut encoder,
            "sandbox_group_uptime_seconds",
            "Seconds since the group's running process said ready.",
            MetricType::Gauge,
            per_group(groups, |group| {
                group.uptime_seconds.map(|uptime| gauge(uptime as i64))
            }),
        )?;
        let messages = groups.iter().flat_map(|group| {
            group.channel.messages.iter().flat_map(move |traffic| {
                [("sent", traffic.sent), ("received", traffic.received)]
                    .into_iter()
                    .filter(|(_, count)| *count > 0)
                    .map(move |(direction, count)| {
                        (
                            vec![
                                ("group", group.name.as_str()),
                                ("type", traffic.type_name.as_str()),
                                ("direction", direction),
                            ],
                            Sample::Counter(count),
                        )
                    })
            })
        });
        family(
            &mut encoder,
            "sandbox_messages",
            "Messages between main and the group's process, by type; `sent` by main.",
            MetricType::Counter,
            messages,
        )?;
        for (name, help, value) in [
            (
                "sandbox_frames_dropped",
                "Frames from the sandbox that did not decode, dropped.",
                (|group: &GroupReport| group.channel.frames_dropped) as fn(&GroupReport) -> u64,
            ),
            (
                "sandbox_calls_shed",
                "Calls from the sandbox answered `overloaded`.",
                |group| group.channel.calls_shed,
            ),
            (
                "sandbox_pushes_shed",
                "Pushes from the sandbox dropped for overload.",
                |group| group.channel.pushes_shed,
            ),
            (
                "sandbox_reader_rests",
                "Times main's reader rested to keep the group to its share.",
                |group| group.channel.reader_rests,
            ),
        ] {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Counter,
                per_group(groups, |group| Some(Sample::Counter(value(group)))),
            )?;
        }
        let refusals = groups.iter().flat_map(|group| {
            group.refusals.iter().map(move |(gate, count)| {
                (
                    vec![("group", group.name.as_str()), ("gate", gate.as_str())],
                    Sample::Counter(*count),
                )
            })
        });
        family(
            &mut encoder,
            "sandbox_gate_refusals",
            "What main refused the group, per trust gate.",
            MetricType::Counter,
            refusals,
        )?;
        let mut latency = encoder.encode_descriptor(
            "sandbox_call_latency_seconds",
            "How long the group's process took to answer main's calls.",
            None,
            MetricType::Histogram,
        )?;
        for group in groups {
            let histogram = &group.channel.call_latency;
            let buckets: Vec<(f64, u64)> = histogram
                .buckets
                .iter()
                .enumerate()
                .map(|(index, count)| {
                    let bound = histogram
                        .bucket_bounds_us
                        .get(index)
                        .map_or(f64::MAX, |micros| *micros as f64 / 1e6);
                    (bound, *count)
                })
                .collect();
            let labels: &Labels<'_> = &[("group", group.name.as_str())];
            latency
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    histogram.sum_us as f64 / 1e6,
                    histogram.count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sandbox_host::report::{CallLatency, ChannelCounters, MessageTraffic};

    use super::*;

    fn group(name: &str, state: &str) -> GroupReport {
        GroupReport {
            name: name.to_owned(),
            state: state.to_owned(),
            pid: Some(42),
            uptime_seconds: Some(12.5),
            backoff_seconds: None,
            starts_in_window: 2,
            max_starts: 3,
            window_seconds: 60.0,
            total_starts: 5,
            restarts: 1,
            last_exit: None,
            last_exit_cause: None,
            failure: None,
            protocol_version: None,
            entries: vec!["e1".into()],
            entities: 37,
            rss_bytes: Some(7_000_000),
            landlock_abi: Some(7),
            confinement: Some("default".into()),
            seccomp: Some(true),
            channel: ChannelCounters {
                pushes_shed: 4,
                messages: vec![MessageTraffic {
                    type_name: "call_service".into(),
                    sent: 10,
                    received: 0,
                }],
                call_latency: CallLatency {
                    count: 10,
                    sum_us: 500,
                    bucket_bounds_us: vec![16, 32],
                    buckets: vec![2, 7, 1],
                    p50_us: Some(32),
                    p99_us: Some(u64::MAX),
                },
                ..ChannelCounters::default()
            },
            refusals: BTreeMap::from([("foreign_entry".to_owned(), 3)]),
        }
    }

    #[test]
    fn every_family_is_written_per_group_with_its_labels() {
        let status = HubStatus {
            version: "0.1.0".into(),
            pid: 1,
            uptime_seconds: 99.0,
            config_dir: "/srv/hub".into(),
            control_refusals: 2,
            http_address: None,
            websocket: crate::control::WebSocketReport {
                open: 1,
                accepted: 3,
                disconnections: BTreeMap::from([("slow_consumer".to_owned(), 2)]),
            },
            groups: vec![group("built-in", "running"), group("custom-acme", "failed")],
        };
        let text = encode(&status).expect("encodes");
        for line in [
            "sandbox_control_refusals_total 2",
            "sandbox_api_websocket_connections 1",
            "sandbox_api_websocket_disconnections_total{reason=\"slow_consumer\"} 2",
            "sandbox_group_state{group=\"built-in\",state=\"running\"} 1",
            "sandbox_group_state{group=\"built-in\",state=\"failed\"} 0",
            "sandbox_group_state{group=\"custom-acme\",state=\"failed\"} 1",
            "sandbox_group_starts_total{group=\"built-in\"} 5",
            "sandbox_group_entities{group=\"custom-acme\"} 37",
            "sandbox_group_resident_memory_bytes{group=\"built-in\"} 7000000",
            "sandbox_messages_total{group=\"built-in\",type=\"call_service\",direction=\"sent\"} 10",
            "sandbox_pushes_shed_total{group=\"built-in\"} 4",
            "sandbox_gate_refusals_total{group=\"custom-acme\",gate=\"foreign_entry\"} 3",
            "sandbox_call_latency_seconds_count{group=\"built-in\"} 10",
            "sandbox_call_latency_seconds_bucket{le=\"0.000016\",group=\"built-in\"} 2",
            "sandbox_call_latency_seconds_bucket{le=\"0.000032\",group=\"built-in\"} 9",
            "sandbox_call_latency_seconds_bucket{le=\"+Inf\",group=\"built-in\"} 10",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|written| written.trim_end() == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(
            !text.contains("direction=\"received\"} 0"),
            "a direction without traffic is not written"
        );
    }
}
