//! When to try again: exponential backoff with full jitter, and a downstream's
//! `Retry-After` honoured but clamped, so one handler cannot park a delivery for a day.

use std::time::Duration;

use crate::handlers::RetryPolicy;

/// The wait before the attempt after `attempt` (1-based) failed.
///
/// Full jitter (a uniform draw between zero and the exponential ceiling) spreads out the
/// retries of many deliveries that failed together, so a recovering downstream is not
/// hit by all of them at the same instant.
pub fn delay(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(wait) = retry_after {
        return wait.min(policy.max_backoff);
    }
    let ceiling = ceiling(policy, attempt);
    let millis = ceiling.as_millis().min(u64::MAX as u128) as u64;
    Duration::from_millis(rand::random_range(0..=millis))
}

/// The upper bound of the jittered wait after `attempt` failed:
/// `initial_backoff × 2^(attempt-1)`, capped at `max_backoff`.
pub fn ceiling(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    policy.initial_backoff.saturating_mul(1u32 << exp.min(31)).min(policy.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 10, initial_backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(60) }
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let p = policy();
        assert_eq!(ceiling(&p, 1), Duration::from_secs(1));
        assert_eq!(ceiling(&p, 2), Duration::from_secs(2));
        assert_eq!(ceiling(&p, 6), Duration::from_secs(32));
        assert_eq!(ceiling(&p, 7), Duration::from_secs(60));
        assert_eq!(ceiling(&p, u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_under_the_ceiling_and_varies() {
        let p = policy();
        let draws: Vec<Duration> = (0..200).map(|_| delay(&p, 5, None)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_secs(16)));
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 100, "full jitter should spread retries");
    }

    #[test]
    fn retry_after_is_honoured_and_clamped() {
        let p = policy();
        assert_eq!(delay(&p, 1, Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(delay(&p, 1, Some(Duration::from_secs(86_400))), Duration::from_secs(60));
    }
}
