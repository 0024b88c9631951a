//! Cron schedules in a time zone, and which fires are due.
//!
//! A fire is identified by its flow and its UTC instant (`fire_key`); the store records
//! each fire once, so several hub instances on one PostgreSQL database fire it once, and a
//! restart never fires it again. Local times follow the zone's rules: `0 7 * * *` in
//! `Europe/Berlin` is 06:00 UTC in winter and 05:00 UTC in summer.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;

/// How long after its time a fire still counts as on time (the loop's own latency).
pub const ON_TIME: Duration = Duration::seconds(90);
/// How far back a missed fire is looked for at start.
const LOOKBACK: Duration = Duration::days(8);

/// What to do about fires missed while the hub was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Forget them; wait for the next one.
    #[default]
    Skip,
    /// Run the most recent missed fire once (not every missed one).
    CatchUp,
}

/// Why a schedule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("unknown time zone `{0}` (use an IANA name such as Europe/Berlin)")]
    TimeZone(String),
    #[error(
        "cron expression `{expr}` has {fields} fields; use 5: minute hour day-of-month month day-of-week"
    )]
    Fields { expr: String, fields: usize },
    #[error("cron expression `{expr}`: {problem}")]
    Cron { expr: String, problem: String },
}

/// A parsed cron expression with its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: Tz,
    expr: String,
}

impl Schedule {
    /// Parses a 5-field cron expression (minute hour day-of-month month day-of-week; names
    /// and `@daily`-style shortcuts allowed) and an IANA time zone name.
    pub fn parse(expr: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        let tz: Tz = timezone
            .parse()
            .map_err(|_| ScheduleError::TimeZone(timezone.to_owned()))?;
        let fields = expr.split_whitespace().count();
        if !expr.trim_start().starts_with('@') && fields != 5 {
            return Err(ScheduleError::Fields {
                expr: expr.to_owned(),
                fields,
            });
        }
        let cron = croner::Cron::new(expr)
            .parse()
            .map_err(|e| ScheduleError::Cron {
                expr: expr.to_owned(),
                problem: e.to_string(),
            })?;
        Ok(Schedule {
            cron,
            tz,
            expr: expr.to_owned(),
        })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first fire strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The most recent fire at or before `t` (within the look-back window).
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut cursor = t - LOOKBACK;
        let mut last = None;
        while let Some(next) = self.next_after(cursor) {
            if next > t {
                break;
            }
            last = Some(next);
            cursor = next;
        }
        last
    }

    /// The fires to run when the hub (re)starts at `now`: the most recent past fire if the
    /// policy catches up and it has not run (`already_ran` tells).
    pub fn missed(&self, now: DateTime<Utc>, policy: Missed) -> Option<DateTime<Utc>> {
        let last = self.last_at_or_before(now)?;
        match policy {
            Missed::CatchUp => Some(last),
            Missed::Skip if now - last <= ON_TIME => Some(last),
            Missed::Skip => None,
        }
    }
}

/// The store key of one fire.
pub fn fire_key(flow: &str, at: DateTime<Utc>) -> String {
    format!(
        "{flow}@{}",
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn seven_in_berlin_across_both_changes() {
        let s = Schedule::parse("0 7 * * *", "Europe/Berlin").unwrap();
        // Spring forward on 2026-03-29: 07:00 CET is 06:00 UTC, 07:00 CEST is 05:00 UTC.
        assert_eq!(
            s.next_after(utc("2026-03-28T00:00:00Z")).unwrap(),
            utc("2026-03-28T06:00:00Z")
        );
        assert_eq!(
            s.next_after(utc("2026-03-28T06:00:00Z")).unwrap(),
            utc("2026-03-29T05:00:00Z")
        );
        // Fall back on 2026-10-25.
        assert_eq!(
            s.next_after(utc("2026-10-24T00:00:00Z")).unwrap(),
            utc("2026-10-24T05:00:00Z")
        );
        assert_eq!(
            s.next_after(utc("2026-10-24T05:00:00Z")).unwrap(),
            utc("2026-10-25T06:00:00Z")
        );
    }

    #[test]
    fn other_zones_and_shortcuts() {
        let ny = Schedule::parse("30 8 * * 1-5", "America/New_York").unwrap();
        // Friday 2026-11-27 → next weekday Monday 2026-11-30, 08:30 EST = 13:30 UTC.
        assert_eq!(
            ny.next_after(utc("2026-11-27T14:00:00Z")).unwrap(),
            utc("2026-11-30T13:30:00Z")
        );
        let daily = Schedule::parse("@daily", "UTC").unwrap();
        assert_eq!(
            daily.next_after(utc("2026-11-29T10:00:00Z")).unwrap(),
            utc("2026-11-30T00:00:00Z")
        );
    }

    #[test]
    fn a_time_skipped_by_the_change_still_fires_that_day() {
        // 02:30 does not exist in Berlin on 2026-03-29; the run must not be lost for the day.
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let next = s.next_after(utc("2026-03-28T02:00:00Z")).unwrap();
        assert!(next > utc("2026-03-28T02:00:00Z"));
        assert!(
            next < utc("2026-03-30T00:00:00Z"),
            "fires on the 29th: {next}"
        );
    }

    #[test]
    fn bad_input_is_named() {
        let fields = Schedule::parse("0 7 * *", "UTC").unwrap_err();
        assert!(
            matches!(fields, ScheduleError::Fields { fields: 4, .. }),
            "{fields}"
        );
        assert!(fields.to_string().contains("4 fields"), "{fields}");
        let zone = Schedule::parse("0 7 * * *", "Mars/Base").unwrap_err();
        assert_eq!(zone, ScheduleError::TimeZone("Mars/Base".into()));
        assert!(zone.to_string().contains("Mars/Base"));
        assert!(matches!(
            Schedule::parse("0 25 * * *", "UTC"),
            Err(ScheduleError::Cron { .. })
        ));
    }

    #[test]
    fn missed_fires() {
        let s = Schedule::parse("0 7 * * *", "UTC").unwrap();
        let now = utc("2026-11-29T09:00:00Z");
        assert_eq!(
            s.missed(now, Missed::CatchUp),
            Some(utc("2026-11-29T07:00:00Z"))
        );
        assert_eq!(s.missed(now, Missed::Skip), None);
        assert_eq!(
            s.missed(utc("2026-11-29T07:00:30Z"), Missed::Skip),
            Some(utc("2026-11-29T07:00:00Z"))
        );
        assert_eq!(
            fire_key("digest", utc("2026-11-29T07:00:00Z")),
            "digest@2026-11-29T07:00:00Z"
        );
    }
}
