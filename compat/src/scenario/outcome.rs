//! One scenario played in both modes (or sandboxed only) and what differed: the comparison the
//! sweep reports and the end-to-end tests assert on.

use super::{Mode, RunError, Sandboxing, Scenario, StepRecord, run};

/// One scenario's runs.
#[derive(Debug)]
pub struct Outcome {
    /// The scenario played.
    pub scenario: Scenario,
    /// The in-process run; `None` for a sandboxed-only scenario.
    pub baseline: Option<Vec<StepRecord>>,
    /// The sandboxed run.
    pub sandboxed: Vec<StepRecord>,
}

impl Outcome {
    /// Records compared between the modes: (in-process, sandboxed) pairs, in order.
    pub fn compared(&self) -> Vec<(Option<&StepRecord>, Option<&StepRecord>)> {
        let Some(baseline) = &self.baseline else {
            return Vec::new();
        };
        let base: Vec<&StepRecord> = baseline.iter().filter(|record| record.compared).collect();
        let sand: Vec<&StepRecord> = self
            .sandboxed
            .iter()
            .filter(|record| record.compared)
            .collect();
        (0..base.len().max(sand.len()))
            .map(|index| (base.get(index).copied(), sand.get(index).copied()))
            .collect()
    }

    /// Sandboxed records with no baseline, each judged by its own expectation.
    pub fn sandboxed_only(&self) -> Vec<&StepRecord> {
        self.sandboxed
            .iter()
            .filter(|record| self.baseline.is_none() || !record.compared)
            .collect()
    }

    /// What differs between the modes, one line per compared step.
    pub fn differences(&self) -> Vec<String> {
        let mut differences = Vec::new();
        for (index, pair) in self.compared().into_iter().enumerate() {
            match pair {
                (Some(base), Some(sand)) if base.label != sand.label => {
                    differences.push(format!(
                        "step {index}: `{}` in-process but `{}` sandboxed",
                        base.label, sand.label
                    ));
                }
                (Some(base), Some(sand)) if base.outcome != sand.outcome => {
                    differences.push(format!(
                        "{}: `{}` in-process, `{}` sandboxed",
                        base.label, base.outcome, sand.outcome
                    ))
                }
                (Some(base), Some(sand)) if base.states != sand.states => {
                    let differing: Vec<&String> = base
                        .states
                        .iter()
                        .filter(|(id, value)| sand.states.get(*id) != Some(value))
                        .map(|(id, _)| id)
                        .chain(
                            sand.states
                                .keys()
                                .filter(|id| !base.states.contains_key(*id)),
                        )
                        .take(5)
                        .collect();
                    differences.push(format!("{}: states differ ({differing:?})", base.label));
                }
                (Some(_), Some(_)) => {}
                (Some(base), None) => {
                    differences.push(format!("{}: missing sandboxed", base.label))
                }
                (None, Some(sand)) => {
                    differences.push(format!("{}: missing in-process", sand.label))
                }
                (None, None) => {}
            }
        }
        differences
    }

    /// Sandboxed-only records that did not meet their expectation.
    pub fn unmet(&self) -> Vec<String> {
        self.sandboxed_only()
            .into_iter()
            .filter(|record| !record.passed())
            .map(|record| format!("{}: `{}`", record.label, record.outcome))
            .collect()
    }

    /// Whether nothing differs and every sandboxed-only expectation is met.
    pub fn ok(&self) -> bool {
        self.differences().is_empty() && self.unmet().is_empty()
    }
}

/// Plays one scenario: both modes (in-process first), or sandboxed only.
pub async fn play(scenario: Scenario, sandboxing: &Sandboxing) -> Result<Outcome, RunError> {
    let baseline = if scenario.is_sandboxed_only() {
        None
    } else {
        Some(run(&scenario, Mode::InProcess, sandboxing).await?)
    };
    let sandboxed = run(&scenario, Mode::Sandboxed, sandboxing).await?;
    Ok(Outcome {
        scenario,
        baseline,
        sandboxed,
    })
}
