//! Backup plans: when a machine is backed up, what is read and how long versions are kept.
//!
//! A plan is a record the box stores and edits; agents receive the selections and excludes.
//! `PlanSettings` is what a user may edit; `Plan` adds the identity (`id`, `kind`) fixed at
//! creation.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PlanKind {
    #[default]
    Files,
    Image,
}

/// The hours of the day in which a run may start, `HH:MM` to `HH:MM` (`24:00` ends the day).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub start: String,
    pub end: String,
}

/// How long versions are kept. A version is kept if any rule keeps it; the newest
/// `keep_last` good versions are always kept, whatever their age.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep every version younger than this many days (0: none by age).
    pub keep_within_days: u32,
    pub keep_last: u32,
    /// Keep the newest version of each of the last N weeks.
    pub keep_weekly: u32,
    /// Keep the newest version of each of the last N months.
    pub keep_monthly: u32,
}

/// What a user may edit in a plan.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PlanSettings {
    pub name: String,
    /// A paused plan is not scheduled (backups can still be started by hand).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// A run starts this many hours after the previous one started.
    pub interval_hours: u32,
    pub window: Window,
    /// Every this many days a run re-reads everything instead of trusting metadata.
    pub full_every_days: u32,
    pub retention: Retention,
    /// Paths (file plans) or sources such as `system-disk` (image plans).
    pub selections: Vec<String>,
    /// Paths or glob patterns left out of file plans.
    pub excludes: Vec<String>,
}

fn enabled_by_default() -> bool {
    true
}

/// A stored plan.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    pub id: String,
    pub kind: PlanKind,
    #[serde(flatten)]
    pub settings: PlanSettings,
}

/// Why a plan was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PlanError {
    pub field: &'static str,
    pub reason: String,
}

fn refuse(field: &'static str, reason: impl Into<String>) -> PlanError {
    PlanError {
        field,
        reason: reason.into(),
    }
}

/// Minutes since midnight of `HH:MM`; `24:00` is 1440.
pub fn parse_time_of_day(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    match (h, m) {
        (24, 0) => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

impl PlanSettings {
    pub fn validate(&self) -> Result<(), PlanError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 80 {
            return Err(refuse("name", "must be 1 to 80 characters"));
        }
        if !(1..=8760).contains(&self.interval_hours) {
            return Err(refuse("interval_hours", "must be between 1 and 8760 hours"));
        }
        let start = parse_time_of_day(&self.window.start)
            .filter(|m| *m < 1440)
            .ok_or_else(|| {
                refuse(
                    "window.start",
                    "must be a time HH:MM between 00:00 and 23:59",
                )
            })?;
        let end = parse_time_of_day(&self.window.end)
            .filter(|m| *m > 0)
            .ok_or_else(|| refuse("window.end", "must be a time HH:MM between 00:01 and 24:00"))?;
        if end <= start {
            return Err(refuse("window.end", "must be after window.start"));
        }
        if !(1..=3650).contains(&self.full_every_days) {
            return Err(refuse("full_every_days", "must be between 1 and 3650 days"));
        }
        let r = &self.retention;
        if r.keep_last == 0 {
            return Err(refuse(
                "retention.keep_last",
                "must keep at least the last backup",
            ));
        }
        if r.keep_within_days > 36500
            || r.keep_last > 10000
            || r.keep_weekly > 5200
            || r.keep_monthly > 1200
        {
            return Err(refuse("retention", "a value is out of range"));
        }
        if self.selections.is_empty() {
            return Err(refuse("selections", "must name at least one source"));
        }
        check_list("selections", &self.selections)?;
        check_list("excludes", &self.excludes)?;
        Ok(())
    }
}

fn check_list(field: &'static str, items: &[String]) -> Result<(), PlanError> {
    if items.len() > 1000 {
        return Err(refuse(field, "at most 1000 entries"));
    }
    for item in items {
        if item.trim().is_empty() || item.len() > 4096 || item.chars().any(char::is_control) {
            return Err(refuse(
                field,
                format!("entry {item:?} must be a non-empty path without control characters"),
            ));
        }
    }
    Ok(())
}

/// What the default file plan leaves out on Windows machines (`/` there means every fixed
/// volume). Patterns written the Windows way apply to Windows agents only, `/...` ones to
/// Linux agents only, so one plan serves both; `*:` is any drive.
pub const WINDOWS_DEFAULT_EXCLUDES: &[&str] = &[
    r"C:\Windows",
    r"*:\pagefile.sys",
    r"*:\hiberfil.sys",
    r"*:\swapfile.sys",
    r"*:\System Volume Information",
    r"*:\$Recycle.Bin",
    r"*:\Users\*\AppData\Local\Temp",
    r"*:\Users\*\AppData\Local\Microsoft\Windows\INetCache",
    r"*:\Users\*\AppData\Local\Google\Chrome\User Data\*\Cache",
    r"*:\Users\*\AppData\Local\Google\Chrome\User Data\*\Code Cache",
    r"*:\Users\*\AppData\Local\Microsoft\Edge\User Data\*\Cache",
    r"*:\Users\*\AppData\Local\Microsoft\Edge\User Data\*\Code Cache",
    r"*:\Users\*\AppData\Local\Mozilla\Firefox\Profiles\*\cache2",
];

/// The default file plan of every new machine (product.md, "Default plans").
pub fn default_file_plan() -> Plan {
    Plan {
        id: "files".into(),
        kind: PlanKind::Files,
        settings: PlanSettings {
            name: "Files".into(),
            enabled: true,
            interval_hours: 5,
            window: Window {
                start: "00:00".into(),
                end: "24:00".into(),
            },
            full_every_days: 30,
            retention: Retention {
                keep_within_days: 90,
                keep_last: 40,
                keep_weekly: 0,
                keep_monthly: 0,
            },
            selections: vec!["/".into()],
            excludes: [
                "/proc",
                "/sys",
                "/dev",
                "/run",
                "/tmp",
                "/var/tmp",
                "/var/cache",
                "/home/*/.cache",
                "/root/.cache",
                "/lost+found",
            ]
            .into_iter()
            .chain(WINDOWS_DEFAULT_EXCLUDES.iter().copied())
            .map(String::from)
            .collect(),
        },
    }
}

/// The default image plan of every new machine.
pub fn default_image_plan() -> Plan {
    Plan {
        id: "image".into(),
        kind: PlanKind::Image,
        settings: PlanSettings {
            name: "Image".into(),
            enabled: true,
            interval_hours: 7 * 24,
            window: Window {
                start: "00:00".into(),
                end: "24:00".into(),
            },
            full_every_days: 60,
            retention: Retention {
                keep_within_days: 0,
                keep_last: 4,
                keep_weekly: 8,
                keep_monthly: 3,
            },
            selections: vec!["system-disk".into()],
            excludes: Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        default_file_plan().settings.validate().unwrap();
        default_image_plan().settings.validate().unwrap();
    }

    #[test]
    fn times_of_day() {
        assert_eq!(parse_time_of_day("00:00"), Some(0));
        assert_eq!(parse_time_of_day("23:59"), Some(1439));
        assert_eq!(parse_time_of_day("24:00"), Some(1440));
        for bad in ["24:01", "7:00", "07:60", "0700", "", "aa:bb", "07:00:00"] {
            assert_eq!(parse_time_of_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn refuses_each_bad_field_by_name() {
        let base = default_file_plan().settings;
        type Change = Box<dyn Fn(&mut PlanSettings)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|p| p.interval_hours = 0), "interval_hours"),
            (Box::new(|p| p.interval_hours = 9000), "interval_hours"),
            (
                Box::new(|p| {
                    p.window.start = "08:00".into();
                    p.window.end = "01:00".into()
                }),
                "window.end",
            ),
            (
                Box::new(|p| {
                    p.window.start = "08:00".into();
                    p.window.end = "08:00".into()
                }),
                "window.end",
            ),
            (
                Box::new(|p| p.window.start = "25:00".into()),
                "window.start",
            ),
            (
                Box::new(|p| p.window.start = "24:00".into()),
                "window.start",
            ),
            (Box::new(|p| p.full_every_days = 0), "full_every_days"),
            (
                Box::new(|p| p.retention.keep_last = 0),
                "retention.keep_last",
            ),
            (Box::new(|p| p.selections.clear()), "selections"),
            (Box::new(|p| p.excludes.push("  ".into())), "excludes"),
            (Box::new(|p| p.name = String::new()), "name"),
        ];
        for (change, field) in cases {
            let mut p = base.clone();
            change(&mut p);
            assert_eq!(p.validate().unwrap_err().field, field);
        }
        let mut ok = base;
        ok.window = Window {
            start: "20:00".into(),
            end: "24:00".into(),
        };
        ok.validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_refused_and_plans_round_trip() {
        let plan = default_file_plan();
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["interval_hours"], 5);
        let back: Plan = serde_json::from_value(json).unwrap();
        assert_eq!(back, plan);
        let mut edit = serde_json::to_value(&plan.settings).unwrap();
        edit["surprise"] = serde_json::json!(1);
        assert!(serde_json::from_value::<PlanSettings>(edit).is_err());
    }
}
