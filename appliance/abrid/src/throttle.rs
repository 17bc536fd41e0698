//! Throttling of failed secret attempts (claim code, login).
//!
//! After `free_failures` failures for a key, each further failure locks the key out for a
//! delay that doubles, up to `max_delay`. A success clears the key. Kept in memory: a restart
//! clears it, and a restart cannot be forced from the network.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Throttle {
    free_failures: u32,
    base_delay: Duration,
    max_delay: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Clone, Copy)]
struct Entry {
    failures: u32,
    locked_until: Option<Instant>,
}

impl Throttle {
    pub fn new(free_failures: u32, base_delay: Duration, max_delay: Duration) -> Self {
        Throttle {
            free_failures,
            base_delay,
            max_delay,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` while the key is locked out.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key).and_then(|e| e.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a failure; returns the lockout it starts, if any.
    pub fn fail(&self, key: &str) -> Option<Duration> {
        self.fail_at(key, Instant::now())
    }

    fn fail_at(&self, key: &str, now: Instant) -> Option<Duration> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() > 10_000 {
            entries.retain(|_, e| e.locked_until.is_some_and(|u| u > now));
        }
        let entry = entries.entry(key.to_string()).or_insert(Entry {
            failures: 0,
            locked_until: None,
        });
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures < self.free_failures {
            return None;
        }
        let doublings = (entry.failures - self.free_failures).min(16);
        let delay = self
            .base_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay);
        entry.locked_until = Some(now + delay);
        Some(delay)
    }

    pub fn succeed(&self, key: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_free_failures_with_doubling_delays() {
        let t = Throttle::new(3, Duration::from_secs(10), Duration::from_secs(25));
        let now = Instant::now();
        assert_eq!(t.fail_at("ip", now), None);
        assert_eq!(t.fail_at("ip", now), None);
        assert!(t.check_at("ip", now).is_ok());
        assert_eq!(t.fail_at("ip", now), Some(Duration::from_secs(10)));
        assert!(t.check_at("ip", now).is_err());
        assert!(t.check_at("other", now).is_ok());
        assert!(t.check_at("ip", now + Duration::from_secs(11)).is_ok());
        assert_eq!(t.fail_at("ip", now), Some(Duration::from_secs(20)));
        assert_eq!(
            t.fail_at("ip", now),
            Some(Duration::from_secs(25)),
            "capped"
        );
        t.succeed("ip");
        assert!(t.check_at("ip", now).is_ok());
    }
}
