//! Rate limits for logs about a peer: a hostile or broken sandbox can make main refuse a
//! million requests, send a million bad frames or print a million lines, and main's log must
//! not grow with it.
//!
//! A [`LogBudget`] admits a few log lines per window and counts the rest; the first line admitted
//! in a new window carries the previous window's count, so the log says "N more … in the last
//! 10 s" instead of N lines. Time is tokio's, so tests pause it.

use std::time::Duration;

use tokio::time::Instant;

/// The window of every sandbox log budget: long enough that a flood costs a line or two per
/// window, short enough that an operator watching the log sees a summary soon.
pub const LOG_WINDOW: Duration = Duration::from_secs(10);

/// What a budget decided for one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log it; first log the summary of what the last window suppressed, if anything was.
    Log {
        /// Lines suppressed since the last admitted one, and their bytes.
        suppressed: Option<Suppressed>,
    },
    /// Over budget: drop it (it was counted).
    Suppress,
}

/// What a window suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed {
    /// Lines.
    pub lines: u64,
    /// Their bytes.
    pub bytes: u64,
    /// From the first of them to now.
    pub over: Duration,
}

/// Admits at most `max_lines` lines and `max_bytes` bytes per [`LOG_WINDOW`]; counts the rest.
#[derive(Debug, Clone)]
pub struct LogBudget {
    max_lines: u32,
    max_bytes: usize,
    started: Option<Instant>,
    lines: u32,
    bytes: usize,
    suppressed_lines: u64,
    suppressed_bytes: u64,
    /// When the first line not yet summarised was suppressed.
    suppressed_since: Option<Instant>,
}

impl LogBudget {
    /// A budget of `max_lines` lines and `max_bytes` bytes per window.
    pub fn new(max_lines: u32, max_bytes: usize) -> Self {
        Self {
            max_lines,
            max_bytes,
            started: None,
            lines: 0,
            bytes: 0,
            suppressed_lines: 0,
            suppressed_bytes: 0,
            suppressed_since: None,
        }
    }

    /// Whether a line of `bytes` bytes may be logged now. The summary of what was suppressed
    /// rides on the next line admitted, however many windows later.
    pub fn admit(&mut self, bytes: usize) -> Admit {
        let now = Instant::now();
        let expired = self
            .started
            .is_none_or(|started| now.saturating_duration_since(started) >= LOG_WINDOW);
        if expired {
            self.started = Some(now);
            self.lines = 0;
            self.bytes = 0;
        }
        if self.lines >= self.max_lines || self.bytes.saturating_add(bytes) > self.max_bytes {
            self.suppressed_lines += 1;
            self.suppressed_bytes += bytes as u64;
            self.suppressed_since.get_or_insert(now);
            return Admit::Suppress;
        }
        self.lines += 1;
        self.bytes += bytes;
        Admit::Log {
            suppressed: self.take_suppressed(),
        }
    }

    /// What was suppressed since the last summary (and forgets it): for a last summary when
    /// the source ends.
    pub fn take_suppressed(&mut self) -> Option<Suppressed> {
        let since = self.suppressed_since.take()?;
        let summary = Suppressed {
            lines: self.suppressed_lines,
            bytes: self.suppressed_bytes,
            over: Instant::now().saturating_duration_since(since),
        };
        self.suppressed_lines = 0;
        self.suppressed_bytes = 0;
        Some(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_flood_logs_its_budget_then_one_summary_per_window() {
        let mut budget = LogBudget::new(2, usize::MAX);
        assert_eq!(budget.admit(10), Admit::Log { suppressed: None });
        assert_eq!(budget.admit(10), Admit::Log { suppressed: None });
        for _ in 0..200_000 {
            assert_eq!(budget.admit(10), Admit::Suppress);
        }
        tokio::time::advance(LOG_WINDOW).await;
        assert_eq!(
            budget.admit(10),
            Admit::Log {
                suppressed: Some(Suppressed {
                    lines: 200_000,
                    bytes: 2_000_000,
                    over: LOG_WINDOW,
                })
            }
        );
        assert_eq!(budget.admit(10), Admit::Log { suppressed: None });
        assert_eq!(budget.admit(10), Admit::Suppress);
        assert_eq!(budget.take_suppressed().map(|s| s.lines), Some(1));
        assert_eq!(budget.take_suppressed(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_are_budgeted_too() {
        let mut budget = LogBudget::new(u32::MAX, 100);
        assert!(matches!(budget.admit(60), Admit::Log { .. }));
        assert_eq!(budget.admit(60), Admit::Suppress);
        // A line that still fits carries the summary of the one that did not.
        assert!(matches!(
            budget.admit(40),
            Admit::Log {
                suppressed: Some(Suppressed {
                    lines: 1,
                    bytes: 60,
                    ..
                })
            }
        ));
        tokio::time::advance(LOG_WINDOW / 2).await;
        assert_eq!(budget.admit(1), Admit::Suppress, "same window");
        assert_eq!(budget.admit(1), Admit::Suppress, "same window");
        tokio::time::advance(LOG_WINDOW / 2).await;
        assert!(matches!(
            budget.admit(1),
            Admit::Log {
                suppressed: Some(Suppressed { lines: 2, .. })
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_summary_waits_for_the_next_line_admitted_however_late() {
        let mut budget = LogBudget::new(10, 100);
        assert!(matches!(budget.admit(100), Admit::Log { .. }));
        assert_eq!(budget.admit(50), Admit::Suppress);
        tokio::time::advance(LOG_WINDOW).await;
        // The first line of the new window is itself over budget: the summary is kept.
        assert_eq!(budget.admit(500), Admit::Suppress);
        tokio::time::advance(3 * LOG_WINDOW).await;
        assert_eq!(
            budget.admit(1),
            Admit::Log {
                suppressed: Some(Suppressed {
                    lines: 2,
                    bytes: 550,
                    over: 4 * LOG_WINDOW,
                })
            }
        );
    }
}
