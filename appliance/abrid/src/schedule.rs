//! When a plan is due on a machine. Only decides *when*; the jobs module carries it out.
//!
//! A run is due when the plan's interval has passed since the start of the last successful
//! run (or there never was one), the box's local time of day is inside the plan's window, and
//! the last attempt — successful or not — started at least `min(interval, 1 h)` ago, so a
//! failing machine is retried hourly rather than hammered. A run is a full re-read when the
//! last full run started `full_every_days` ago or more (or never).

use abri_proto::plan::{PlanSettings, parse_time_of_day};

/// What the box remembers of a plan on one machine (Unix seconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunHistory {
    pub last_success_started: Option<u64>,
    pub last_attempt_started: Option<u64>,
    pub last_full_started: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Wait,
    Run { full: bool },
}

/// `now` is Unix seconds; `minute_of_day` is the box's local time of day in minutes.
pub fn decide(plan: &PlanSettings, history: &RunHistory, now: u64, minute_of_day: u32) -> Decision {
    if !plan.enabled {
        return Decision::Wait;
    }
    let interval = u64::from(plan.interval_hours) * 3600;
    let since = |t: Option<u64>| t.map(|t| now.saturating_sub(t));
    if since(history.last_success_started).is_some_and(|s| s < interval) {
        return Decision::Wait;
    }
    if since(history.last_attempt_started).is_some_and(|s| s < interval.min(3600)) {
        return Decision::Wait;
    }
    let start = parse_time_of_day(&plan.window.start).unwrap_or(0);
    let end = parse_time_of_day(&plan.window.end).unwrap_or(1440);
    if !(start <= minute_of_day && minute_of_day < end) {
        return Decision::Wait;
    }
    let full_after = u64::from(plan.full_every_days) * 86400;
    let full = since(history.last_full_started).is_none_or(|s| s >= full_after);
    Decision::Run { full }
}

/// The box's local time of day in minutes, in the factory's time zone (UTC when unknown).
pub fn local_minute_of_day(now: u64, zone: Option<&str>) -> u32 {
    let tz = zone
        .and_then(|z| jiff::tz::TimeZone::get(z).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    match jiff::Timestamp::from_second(now as i64) {
        Ok(ts) => {
            let local = ts.to_zoned(tz);
            u32::from(local.hour().unsigned_abs()) * 60 + u32::from(local.minute().unsigned_abs())
        }
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abri_proto::plan::{Window, default_file_plan};

    const H: u64 = 3600;
    const NOW: u64 = 1_800_000_000;

    fn plan() -> PlanSettings {
        default_file_plan().settings
    }

    #[test]
    fn a_paused_plan_never_runs() {
        let mut p = plan();
        p.enabled = false;
        assert_eq!(decide(&p, &RunHistory::default(), NOW, 600), Decision::Wait);
    }

    #[test]
    fn first_run_is_due_and_full() {
        assert_eq!(
            decide(&plan(), &RunHistory::default(), NOW, 600),
            Decision::Run { full: true }
        );
    }

    #[test]
    fn waits_for_the_interval_after_a_success() {
        let h = RunHistory {
            last_success_started: Some(NOW - 4 * H),
            last_attempt_started: Some(NOW - 4 * H),
            last_full_started: Some(NOW - 4 * H),
        };
        assert_eq!(decide(&plan(), &h, NOW, 600), Decision::Wait);
        let h = RunHistory {
            last_success_started: Some(NOW - 5 * H),
            last_attempt_started: Some(NOW - 5 * H),
            ..h
        };
        assert_eq!(decide(&plan(), &h, NOW, 600), Decision::Run { full: false });
    }

    #[test]
    fn failures_are_retried_hourly_not_at_once() {
        let h = RunHistory {
            last_success_started: Some(NOW - 10 * H),
            last_attempt_started: Some(NOW - 1800),
            last_full_started: Some(NOW - 10 * H),
        };
        assert_eq!(decide(&plan(), &h, NOW, 600), Decision::Wait);
        let h = RunHistory {
            last_attempt_started: Some(NOW - H),
            ..h
        };
        assert_eq!(decide(&plan(), &h, NOW, 600), Decision::Run { full: false });
    }

    #[test]
    fn full_run_after_full_every_days() {
        let h = RunHistory {
            last_success_started: Some(NOW - 6 * H),
            last_attempt_started: Some(NOW - 6 * H),
            last_full_started: Some(NOW - 30 * 24 * H),
        };
        assert_eq!(decide(&plan(), &h, NOW, 600), Decision::Run { full: true });
    }

    #[test]
    fn respects_the_window() {
        let mut p = plan();
        p.window = Window {
            start: "20:00".into(),
            end: "24:00".into(),
        };
        let h = RunHistory::default();
        assert_eq!(decide(&p, &h, NOW, 19 * 60 + 59), Decision::Wait);
        assert_eq!(decide(&p, &h, NOW, 20 * 60), Decision::Run { full: true });
        assert_eq!(
            decide(&p, &h, NOW, 23 * 60 + 59),
            Decision::Run { full: true }
        );
    }

    #[test]
    fn local_time_follows_the_zone() {
        // 2026-01-15 12:00:00 UTC is 13:00 in Paris (winter) and 12:00 in UTC.
        let t = 1_768_478_400;
        assert_eq!(local_minute_of_day(t, None), 12 * 60);
        assert_eq!(local_minute_of_day(t, Some("Europe/Paris")), 13 * 60);
        assert_eq!(local_minute_of_day(t, Some("Not/AZone")), 12 * 60);
    }
}
