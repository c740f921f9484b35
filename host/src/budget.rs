//! The restart budget: at most N starts in a sliding window, exponential backoff between
//! failed starts, and forgiveness once a group has been healthy long enough.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How a group may be restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Starts allowed within `window` (the first start counts). The reference allows 3.
    pub max_starts: u32,
    /// The sliding window the starts are counted in. The reference uses 60 s.
    pub window: Duration,
    /// The delay before the first restart after a failure; it doubles with each further
    /// failure in a row.
    pub backoff_initial: Duration,
    /// The longest delay between restarts.
    pub backoff_max: Duration,
    /// A group that stayed up at least this long before failing has its count forgiven: the
    /// crash is treated as the first of a new series (as systemd's and Homebridge's users ask).
    pub forgive_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_starts: 3,
            window: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            forgive_after: Duration::from_secs(300),
        }
    }
}

/// The budget was used up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("restart budget exhausted: {starts} starts within {window:?}")]
pub struct BudgetExhausted {
    /// Starts counted in the window.
    pub starts: u32,
    /// The window.
    pub window: Duration,
}

/// The state of one group's budget.
#[derive(Debug, Clone)]
pub struct RestartBudget {
    /// The rules.
    policy: RestartPolicy,
    /// When each start in the window happened, oldest first; never longer than `max_starts`.
    starts: VecDeque<Instant>,
    /// Failures in a row since the last forgiveness, for the backoff.
    consecutive_failures: u32,
}

impl RestartBudget {
    /// A fresh budget.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            starts: VecDeque::new(),
            consecutive_failures: 0,
        }
    }

    /// The rules in force.
    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Records a start at `now` if the budget allows one.
    pub fn try_start(&mut self, now: Instant) -> Result<(), BudgetExhausted> {
        while let Some(oldest) = self.starts.front() {
            if now.saturating_duration_since(*oldest) >= self.policy.window {
                self.starts.pop_front();
            } else {
                break;
            }
        }
        if self.starts.len() >= self.policy.max_starts as usize {
            return Err(BudgetExhausted {
                starts: self.starts.len() as u32,
                window: self.policy.window,
            });
        }
        self.starts.push_back(now);
        Ok(())
    }

    /// Records that a started child ended after `uptime`: forgiven if it was up long enough,
    /// otherwise one more failure in a row.
    pub fn record_exit(&mut self, uptime: Duration) {
        if uptime >= self.policy.forgive_after {
            self.forgive();
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
    }

    /// How long to wait before the next start: zero before the first failure, then
    /// `backoff_initial` doubling up to `backoff_max`.
    pub fn backoff(&self) -> Duration {
        if self.consecutive_failures == 0 {
            return Duration::ZERO;
        }
        let doublings = (self.consecutive_failures - 1).min(31);
        self.policy
            .backoff_initial
            .saturating_mul(1 << doublings)
            .min(self.policy.backoff_max)
    }

    /// Forgets every counted start and failure (a manual restart, or a long healthy run).
    pub fn forgive(&mut self) {
        self.starts.clear();
        self.consecutive_failures = 0;
    }

    /// Starts counted in the window (as of the last `try_start`).
    pub fn starts_in_window(&self) -> u32 {
        self.starts.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_starts: 3,
            window: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            forgive_after: Duration::from_secs(120),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn three_starts_in_the_window_then_exhausted_then_the_window_slides() {
        let mut budget = RestartBudget::new(policy());
        let t0 = Instant::now();
        assert!(budget.try_start(t0).is_ok());
        assert!(budget.try_start(t0 + Duration::from_secs(10)).is_ok());
        assert!(budget.try_start(t0 + Duration::from_secs(20)).is_ok());
        let error = budget
            .try_start(t0 + Duration::from_secs(30))
            .expect_err("exhausted");
        assert_eq!(
            error,
            BudgetExhausted {
                starts: 3,
                window: Duration::from_secs(60)
            }
        );
        assert_eq!(
            error.to_string(),
            "restart budget exhausted: 3 starts within 60s"
        );
        // At t0+60 the first start leaves the window.
        assert!(budget.try_start(t0 + Duration::from_secs(60)).is_ok());
        assert_eq!(budget.starts_in_window(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_to_its_cap() {
        let mut budget = RestartBudget::new(policy());
        assert_eq!(budget.backoff(), Duration::ZERO);
        let delays: Vec<_> = (0..5)
            .map(|_| {
                budget.record_exit(Duration::from_secs(1));
                budget.backoff()
            })
            .collect();
        let secs = |s| Duration::from_secs(s);
        assert_eq!(delays, vec![secs(1), secs(2), secs(4), secs(5), secs(5)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_healthy_run_is_forgiven() {
        let mut budget = RestartBudget::new(policy());
        let t0 = Instant::now();
        for offset in 0..3 {
            budget
                .try_start(t0 + Duration::from_secs(offset))
                .expect("within budget");
            budget.record_exit(Duration::from_secs(1));
        }
        assert!(budget.try_start(t0 + Duration::from_secs(5)).is_err());
        // A crash after 2 minutes up counts as the first failure of a new series.
        budget.record_exit(Duration::from_secs(120));
        assert_eq!(budget.backoff(), Duration::from_secs(1));
        assert!(budget.try_start(t0 + Duration::from_secs(6)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn manual_forgiveness_gives_a_fresh_budget() {
        let mut budget = RestartBudget::new(policy());
        let t0 = Instant::now();
        for _ in 0..3 {
            budget.try_start(t0).expect("within budget");
            budget.record_exit(Duration::ZERO);
        }
        assert!(budget.try_start(t0).is_err());
        budget.forgive();
        assert_eq!(budget.backoff(), Duration::ZERO);
        assert!(budget.try_start(t0).is_ok());
    }
}
