//! Retention: which snapshots of one machine (and plan) to keep. A pure function; the
//! caller deletes the others with `delete_snapshot` and runs GC afterwards.
//!
//! Grandfather-father-son rules, each keeping a snapshot that any rule selects:
//! - every snapshot taken within `keep_within_days` of `now` (or in the future);
//! - the newest `keep_last` good snapshots (never fewer than 1);
//! - the newest good snapshot of each of the last `keep_weekly` ISO weeks (Monday to
//!   Sunday, UTC) that have good snapshots;
//! - the newest good snapshot of each of the last `keep_monthly` calendar months (UTC)
//!   that have good snapshots.
//!
//! "Good" is the caller's judgement (committed and verified clean). Only good snapshots
//! count for keep_last, weekly and monthly, so damaged snapshots can never push the last
//! good one out. When no snapshot is good, the newest one is kept.

use std::cmp::Reverse;
use std::collections::HashSet;

use crate::snapshot::civil_from_days;

/// What prune needs to know of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Snapshot id.
    pub id: String,
    /// The snapshot's time, Unix seconds (its manifest's `started`).
    pub time: i64,
    /// True when the snapshot is known intact (verify found nothing wrong).
    pub good: bool,
}

/// How many snapshots to keep, by rule (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// Keep everything younger than this many days.
    pub keep_within_days: u32,
    /// Keep the newest N good snapshots (at least 1).
    pub keep_last: u32,
    /// Keep the newest good snapshot of each of the last N weeks with backups.
    pub keep_weekly: u32,
    /// Keep the newest good snapshot of each of the last N months with backups.
    pub keep_monthly: u32,
}

/// Splits snapshots into (keep, remove) ids, each newest first. `now` is Unix seconds.
pub fn select_to_keep(
    snapshots: &[SnapshotInfo],
    policy: &RetentionPolicy,
    now: i64,
) -> (Vec<String>, Vec<String>) {
    let mut order: Vec<&SnapshotInfo> = snapshots.iter().collect();
    order.sort_by_key(|s| Reverse((s.time, s.id.as_str())));

    let mut keep = vec![false; order.len()];
    let within = now.saturating_sub(i64::from(policy.keep_within_days).saturating_mul(86_400));
    let mut last_left = policy.keep_last.max(1);
    let mut weeks = Budget::new(policy.keep_weekly);
    let mut months = Budget::new(policy.keep_monthly);

    for (i, s) in order.iter().enumerate() {
        if policy.keep_within_days > 0 && s.time >= within || s.time > now {
            keep[i] = true;
        }
        if !s.good {
            continue;
        }
        if last_left > 0 {
            last_left -= 1;
            keep[i] = true;
        }
        let days = s.time.div_euclid(86_400);
        // Weeks start on Monday; 1970-01-01 was a Thursday (weekday 3 counting from 0).
        let monday = days - (days + 3).rem_euclid(7);
        if weeks.take(monday) {
            keep[i] = true;
        }
        let (y, m, _) = civil_from_days(days);
        if months.take(y * 12 + i64::from(m)) {
            keep[i] = true;
        }
    }
    if !order.iter().any(|s| s.good) && !order.is_empty() {
        keep[0] = true;
    }

    let (mut kept, mut removed) = (Vec::new(), Vec::new());
    for (s, k) in order.iter().zip(keep) {
        if k { &mut kept } else { &mut removed }.push(s.id.clone());
    }
    (kept, removed)
}

/// Hands out one keep per distinct period, newest periods first, up to a count.
struct Budget {
    left: u32,
    seen: HashSet<i64>,
}

impl Budget {
    fn new(n: u32) -> Self {
        Budget {
            left: n,
            seen: HashSet::new(),
        }
    }

    /// True for the first (newest) snapshot of a period while periods remain.
    fn take(&mut self, period: i64) -> bool {
        if self.left == 0 || self.seen.contains(&period) {
            return false;
        }
        self.seen.insert(period);
        self.left -= 1;
        true
    }
}

#[cfg(test)]
mod tests;
