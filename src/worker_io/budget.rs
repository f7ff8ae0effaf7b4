//! What one less trusted peer may cost recluster over time: a token bucket. It holds up to `burst`
//! tokens and gains `per_second` of them each second; a cost is always taken whole, so the
//! bucket can go into debt, and the peer is not served again until the debt is paid back. Pure:
//! the caller passes the time, so the tests run on a synthetic clock.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Budget {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Budget {
    /// A full bucket at `now`.
    pub fn new(per_second: u64, burst: u64, now: Instant) -> Budget {
        Budget {
            per_second: per_second as f64,
            burst: burst as f64,
            tokens: burst as f64,
            at: now,
        }
    }

    /// Takes `cost` tokens at `now`, into debt if need be; from when the peer may be served
    /// again: `None` if it may be now, else the instant its debt is paid.
    pub fn take(&mut self, cost: u64, now: Instant) -> Option<Instant> {
        self.refill(now);
        self.tokens -= cost as f64;
        self.ready_at(now)
    }

    /// When the peer may be served again (`None`: now).
    pub fn ready_at(&mut self, now: Instant) -> Option<Instant> {
        self.refill(now);
        if self.tokens >= 0.0 {
            return None;
        }
        let wait = -self.tokens / self.per_second;
        Some(now + Duration::from_secs_f64(wait.min(3600.0)))
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_is_served_at_once_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut budget = Budget::new(1000, 100, t0);
        for _ in 0..100 {
            assert_eq!(budget.take(1, t0), None);
        }
        // The 101st goes into debt: one token back after 1 ms.
        assert_eq!(budget.take(1, t0), Some(t0 + MS));
        assert_eq!(budget.ready_at(t0 + MS), None);
        assert_eq!(budget.take(1, t0 + MS), Some(t0 + 2 * MS));
    }

    #[test]
    fn a_large_cost_is_taken_whole_and_paid_back_over_time() {
        let t0 = Instant::now();
        let mut budget = Budget::new(1000, 10, t0);
        // 510 tokens from a bucket of 10: a debt of 500, paid in 500 ms.
        assert_eq!(budget.take(510, t0), Some(t0 + 500 * MS));
        assert!(budget.ready_at(t0 + 499 * MS).is_some());
        assert_eq!(budget.ready_at(t0 + 500 * MS), None);
    }

    #[test]
    fn idle_time_never_saves_more_than_the_burst() {
        let t0 = Instant::now();
        let mut budget = Budget::new(1000, 10, t0);
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..10 {
            assert_eq!(budget.take(1, later), None);
        }
        assert!(budget.take(1, later).is_some());
    }

    #[test]
    fn a_clock_that_goes_back_gives_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut budget = Budget::new(1000, 1, t0);
        assert_eq!(budget.take(1, t0), None);
        let earlier = t0 - Duration::from_secs(5);
        assert!(budget.take(1, earlier).is_some(), "no tokens from the past");
    }
}
