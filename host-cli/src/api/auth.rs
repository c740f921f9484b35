//! Who may use the HTTP API: a long-lived access token on TCP (REST: `Authorization: Bearer`,
//! WebSocket: the `auth` message), nothing on the unix control socket (trusted by who can
//! connect to it). Failed attempts are counted per client address and slowed down: past
//! [`FREE_FAILURES`] in a [`FAILURE_WINDOW`], every attempt from that address waits
//! [`FAILURE_DELAY`] more per failure (up to [`MAX_FAILURE_DELAY`]) before it is answered, so
//! guessing a 256-bit token is hopeless and a client with a stale token cannot burn a CPU.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use sandbox_proto::log_limit::{Admit, LogBudget};
use tokio::time::Instant;

use crate::tokens::TokenStore;

/// Failed attempts an address may make in a [`FAILURE_WINDOW`] before it is slowed down.
pub const FREE_FAILURES: u32 = 5;

/// How long an address must go without failing before its failures are forgotten.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// The wait added per failure past [`FREE_FAILURES`].
pub const FAILURE_DELAY: Duration = Duration::from_millis(500);

/// The longest wait before an answer to a slowed-down address.
pub const MAX_FAILURE_DELAY: Duration = Duration::from_secs(10);

/// Refusals logged per `LOG_WINDOW` (10 s); the rest are counted and summarised with the next
/// line logged.
pub const REFUSAL_LOG_LINES: u32 = 5;

/// Most addresses whose failures are remembered; past it the oldest is forgotten (an attacker
/// with many addresses gains nothing a token's 256 bits do not already deny).
pub const MAX_TRACKED_ADDRESSES: usize = 4096;

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The unix control socket: trusted.
    ControlSocket,
    /// A TCP client at this address: needs a token.
    Network(IpAddr),
}

/// The outcome of presenting a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let in, as the token of this name (or `None` on the control socket).
    Allowed(Option<String>),
    /// Not a valid token.
    Refused,
}

/// The hub's gatekeeper: the token store and the failure counts.
#[derive(Debug)]
pub struct Gate {
    tokens: TokenStore,
    /// Per address: failures, and when the last one was.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    refused: AtomicU64,
    /// Refusals are logged within a budget: a client hammering with a bad token must not flood
    /// the hub's log.
    log: Mutex<LogBudget>,
}

impl Gate {
    /// A gate over `tokens`.
    pub fn new(tokens: TokenStore) -> Arc<Self> {
        Arc::new(Self {
            tokens,
            failures: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            log: Mutex::new(LogBudget::new(REFUSAL_LOG_LINES, usize::MAX)),
        })
    }

    /// Attempts refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// How long an attempt from `address` waits before it is answered now.
    pub fn delay_for(&self, address: IpAddr) -> Duration {
        let failures = self.failures.lock();
        match failures.get(&address) {
            Some((count, since)) if since.elapsed() < FAILURE_WINDOW && *count > FREE_FAILURES => {
                FAILURE_DELAY
                    .saturating_mul(*count - FREE_FAILURES)
                    .min(MAX_FAILURE_DELAY)
            }
            _ => Duration::ZERO,
        }
    }

    fn note_failure(&self, address: IpAddr) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock();
        if failures.len() >= MAX_TRACKED_ADDRESSES
            && !failures.contains_key(&address)
            && let Some(oldest) = failures
                .iter()
                .min_by_key(|(_, (_, since))| *since)
                .map(|(address, _)| *address)
        {
            failures.remove(&oldest);
        }
        // Counted since the address last went a whole window without failing: an address that
        // keeps failing stays slowed down.
        let entry = failures.entry(address).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            entry.0 = 0;
        }
        *entry = (entry.0.saturating_add(1), Instant::now());
    }

    /// Checks `token` from `peer`, waiting first when the peer's address has failed too often.
    /// The control socket is always allowed.
    pub async fn check(&self, peer: Peer, token: Option<&str>) -> Verdict {
        let Peer::Network(address) = peer else {
            return Verdict::Allowed(None);
        };
        let delay = self.delay_for(address);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let found = token.and_then(|token| match self.tokens.verify(token) {
            Ok(found) => found,
            Err(error) => {
                tracing::error!(%error, "the token store cannot be read; refusing every token");
                None
            }
        });
        match found {
            Some(name) => Verdict::Allowed(Some(name)),
            None => {
                self.note_failure(address);
                if let Admit::Log { suppressed } = self.log.lock().admit(0) {
                    if let Some(suppressed) = suppressed {
                        tracing::warn!(
                            refusals = suppressed.lines,
                            "API: more refused tokens in the last window, not logged one by one"
                        );
                    }
                    tracing::warn!(%address, "API: refused an invalid or missing access token");
                }
                Verdict::Refused
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> (tempfile::TempDir, Arc<Gate>, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TokenStore::new(dir.path());
        let token = store.create("test").expect("created");
        let gate = Gate::new(TokenStore::new(dir.path()));
        (dir, gate, token)
    }

    const CLIENT: Peer = Peer::Network(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));

    #[tokio::test(start_paused = true)]
    async fn a_good_token_is_let_in_and_the_control_socket_needs_none() {
        let (_dir, gate, token) = gate();
        assert_eq!(
            gate.check(CLIENT, Some(&token)).await,
            Verdict::Allowed(Some("test".into()))
        );
        assert_eq!(
            gate.check(Peer::ControlSocket, None).await,
            Verdict::Allowed(None)
        );
        assert_eq!(gate.check(CLIENT, None).await, Verdict::Refused);
        assert_eq!(gate.check(CLIENT, Some("sht_nope")).await, Verdict::Refused);
        assert_eq!(gate.refused(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_that_keeps_failing_waits_longer_and_longer_then_is_forgiven() {
        let (_dir, gate, token) = gate();
        for _ in 0..FREE_FAILURES {
            gate.check(CLIENT, Some("sht_wrong")).await;
        }
        let address = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(
            gate.delay_for(address),
            Duration::ZERO,
            "the free failures cost nothing"
        );
        gate.check(CLIENT, Some("sht_wrong")).await;
        assert_eq!(gate.delay_for(address), FAILURE_DELAY);
        for _ in 0..100 {
            gate.check(CLIENT, Some("sht_wrong")).await;
        }
        assert_eq!(gate.delay_for(address), MAX_FAILURE_DELAY);
        // Even the right token waits while the address is slowed down.
        let started = Instant::now();
        assert!(matches!(
            gate.check(CLIENT, Some(&token)).await,
            Verdict::Allowed(_)
        ));
        assert_eq!(started.elapsed(), MAX_FAILURE_DELAY);
        tokio::time::advance(FAILURE_WINDOW).await;
        assert_eq!(gate.delay_for(address), Duration::ZERO, "the window passed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_failure_table_is_bounded() {
        let (_dir, gate, _) = gate();
        for index in 0..(MAX_TRACKED_ADDRESSES as u32 + 100) {
            let address = IpAddr::V4(std::net::Ipv4Addr::from(index));
            gate.check(Peer::Network(address), None).await;
        }
        assert_eq!(gate.failures.lock().len(), MAX_TRACKED_ADDRESSES);
    }
}
