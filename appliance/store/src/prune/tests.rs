use super::*;

const DAY: i64 = 86_400;
/// 2026-01-01 12:00 UTC, a Thursday.
const JAN1: i64 = 1_767_268_800;
/// 2026-03-31 12:00 UTC, a Tuesday.
const MAR31: i64 = 1_774_958_400;

/// The id of a snapshot is its day of 2026 ("d000" = Jan 1), plus "-bad" when damaged.
fn snap(day: i64, good: bool) -> SnapshotInfo {
    SnapshotInfo {
        id: format!("d{day:03}{}", if good { "" } else { "-bad" }),
        time: JAN1 + day * DAY,
        good,
    }
}

fn daily(days: std::ops::Range<i64>) -> Vec<SnapshotInfo> {
    days.map(|d| snap(d, true)).collect()
}

fn policy(within: u32, last: u32, weekly: u32, monthly: u32) -> RetentionPolicy {
    RetentionPolicy {
        keep_within_days: within,
        keep_last: last,
        keep_weekly: weekly,
        keep_monthly: monthly,
    }
}

struct Case {
    name: &'static str,
    snapshots: Vec<SnapshotInfo>,
    policy: RetentionPolicy,
    now: i64,
    keep: &'static [&'static str],
}

#[test]
fn retention_table() {
    // Jan 1 is day 0; Mar 31 is day 89; Mar 29 (Sunday) day 87; Mar 30 (Monday) day 88.
    let cases = vec![
        Case {
            name: "nothing to prune",
            snapshots: vec![],
            policy: policy(0, 3, 0, 0),
            now: MAR31,
            keep: &[],
        },
        Case {
            name: "keep_last keeps the newest N",
            snapshots: daily(0..90),
            policy: policy(0, 3, 0, 0),
            now: MAR31,
            keep: &["d089", "d088", "d087"],
        },
        Case {
            name: "an all-zero policy still keeps the newest",
            snapshots: daily(0..90),
            policy: policy(0, 0, 0, 0),
            now: MAR31,
            keep: &["d089"],
        },
        Case {
            name: "keep_within keeps everything in the window, edge included",
            snapshots: daily(0..90),
            policy: policy(3, 1, 0, 0),
            now: MAR31,
            keep: &["d089", "d088", "d087", "d086"],
        },
        Case {
            name: "weekly: newest per ISO week, Sunday and Monday in different weeks",
            snapshots: daily(80..90),
            policy: policy(0, 1, 3, 0),
            now: MAR31,
            // Weeks: Mon 23 Mar (d81)..Sun 29 (d87); Mon 30 (d88)..; Mon 16 (d74)..Sun 22 (d80).
            keep: &["d089", "d087", "d080"],
        },
        Case {
            name: "weekly counts only weeks that have backups",
            snapshots: vec![snap(0, true), snap(35, true), snap(70, true)],
            policy: policy(0, 1, 3, 0),
            now: MAR31,
            keep: &["d070", "d035", "d000"],
        },
        Case {
            name: "monthly: newest of each month",
            snapshots: daily(0..90),
            policy: policy(0, 1, 0, 3),
            now: MAR31,
            // Jan 31 = d030, Feb 28 = d058, Mar 31 = d089.
            keep: &["d089", "d058", "d030"],
        },
        Case {
            name: "rules combine; overlaps count once",
            snapshots: daily(0..90),
            policy: policy(1, 2, 2, 2),
            now: MAR31,
            keep: &["d089", "d088", "d087", "d058"],
        },
        Case {
            name: "damaged snapshots never push out the last good one",
            snapshots: vec![snap(50, true), snap(60, false), snap(70, false)],
            policy: policy(0, 1, 0, 0),
            now: MAR31,
            keep: &["d050"],
        },
        Case {
            name: "damaged snapshots inside keep_within stay",
            snapshots: vec![snap(80, true), snap(89, false)],
            policy: policy(2, 1, 0, 0),
            now: MAR31,
            keep: &["d089-bad", "d080"],
        },
        Case {
            name: "no good snapshot at all: the newest stays",
            snapshots: vec![snap(10, false), snap(20, false)],
            policy: policy(0, 5, 5, 5),
            now: MAR31,
            keep: &["d020-bad"],
        },
        Case {
            name: "a snapshot from the future (clock skew) is kept and counts",
            snapshots: vec![snap(10, true), snap(20, true), snap(200, true)],
            policy: policy(0, 1, 0, 0),
            now: MAR31,
            keep: &["d200"],
        },
        Case {
            name: "input order does not matter",
            snapshots: vec![snap(3, true), snap(1, true), snap(2, true)],
            policy: policy(0, 2, 0, 0),
            now: MAR31,
            keep: &["d003", "d002"],
        },
    ];
    for c in cases {
        let (keep, remove) = select_to_keep(&c.snapshots, &c.policy, c.now);
        assert_eq!(keep, c.keep, "{}", c.name);
        assert_eq!(keep.len() + remove.len(), c.snapshots.len(), "{}", c.name);
        for id in &remove {
            assert!(!keep.contains(id), "{}", c.name);
        }
    }
}
