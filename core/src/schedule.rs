//! Cron schedules of PingSources, read in an IANA time zone.
//!
//! Daylight saving time follows Vixie cron (and croner, which implements it): a local time that
//! a spring-forward skips fires once, at the first real instant after the gap; a local time
//! that a fall-back repeats fires once, at its first occurrence. Schedules with a step or a
//! wildcard in the hour or minute fields (`*/15 * * * *`) fire at every real instant that
//! matches, in both passes of a repeated hour.

use std::str::FromStr as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// 4970-01-01T00:00:00Z: where the check that a schedule ever fires starts.
const PROBE_FROM_SECS: i64 = 94_670_899_200;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: Tz,
}

impl Schedule {
    /// Parses a 5-field (or 6-field, seconds first) cron schedule, optionally prefixed with
    /// `CRON_TZ=<zone> ` (Knative's form), read in `timezone` (default UTC). Errors mention
    /// "time zone" when the zone is the problem.
    pub fn parse(schedule: &str, timezone: Option<&str>) -> Result<Schedule, String> {
        let mut text = schedule.trim();
        let mut zone = timezone.map(str::to_owned);
        if let Some(rest) = text
            .strip_prefix("CRON_TZ=")
            .or_else(|| text.strip_prefix("TZ="))
        {
            let (z, pattern) = rest
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("`{schedule}` has a time zone but no schedule"))?;
            if zone.as_deref().is_some_and(|given| given != z) {
                return Err(format!(
                    "the schedule's CRON_TZ `{z}` and spec.timezone disagree; give the time zone once"
                ));
            }
            zone = Some(z.to_owned());
            text = pattern.trim();
        }
        let fields = text.split_whitespace().count();
        if !text.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "`{text}` has {fields} fields; a schedule has 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
            ));
        }
        // croner skips empty list items, so `,` is a field that selects nothing, and its
        // search for a first slot then walks every hour or day up to the year 5000: seconds of
        // CPU for one line of configuration. Cron (Vixie's too) has no empty items; refuse them.
        if let Some(field) = text
            .split_whitespace()
            .find(|f| f.split(',').any(str::is_empty))
        {
            return Err(format!(
                "`{text}` has an empty item in the field `{field}`; a list is values separated by single commas"
            ));
        }
        let tz = match zone.as_deref() {
            None => Tz::UTC,
            Some(z) => Tz::from_str(z)
                .map_err(|_| format!("`{z}` is not an IANA time zone (such as Europe/Berlin)"))?,
        };
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| format!("`{text}` is not a cron schedule: {e}"))?;
        // A schedule that can never fire (30 February) is refused now rather than never firing.
        // croner gives up only at the year 5000, walking day by day through a schedule that
        // matches no day (`* * L * +`: the last day of the month and, `+`, a weekday of an
        // empty list): 0.6 s of CPU from 1970. A schedule has no year field, so whether it
        // fires depends only on the year's kind (its first weekday, leap or not), and the 30
        // years before 5000 (no century year among them) hold all 14 kinds: probing from 4970
        // gives the same answer in a hundredth of the walk (found by fuzzing, `hang-7`).
        let probe = DateTime::<Utc>::from_timestamp(PROBE_FROM_SECS, 0).unwrap_or_default();
        let schedule = Schedule { cron, tz };
        if schedule.next_after(probe).is_none() {
            return Err(format!("`{text}` never fires"));
        }
        Ok(schedule)
    }

    /// The time zone the schedule is read in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first slot strictly after `t`, or `None` when there is none before the year 5000
    /// (croner's limit).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn slots(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut t = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next_after(t).expect("a next slot");
            out.push(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        out
    }

    #[test]
    fn five_and_six_fields_utc_by_default() {
        let s = Schedule::parse("*/15 * * * *", None).expect("parses");
        assert_eq!(
            slots(&s, "2026-11-28T10:07:00Z", 2),
            ["2026-11-28T10:15:00Z", "2026-11-28T10:30:00Z"]
        );
        let s = Schedule::parse("30 * * * * *", None).expect("parses");
        assert_eq!(
            slots(&s, "2026-11-28T10:00:31Z", 1),
            ["2026-11-28T10:01:30Z"]
        );
    }

    #[test]
    fn time_zone_from_field_or_prefix() {
        let a = Schedule::parse("0 9 * * *", Some("Europe/Berlin")).expect("parses");
        let b = Schedule::parse("CRON_TZ=Europe/Berlin 0 9 * * *", None).expect("parses");
        // 09:00 in Berlin in winter is 08:00 UTC.
        assert_eq!(
            slots(&a, "2026-11-28T00:00:00Z", 1),
            ["2026-11-28T08:00:00Z"]
        );
        assert_eq!(
            slots(&b, "2026-11-28T00:00:00Z", 1),
            ["2026-11-28T08:00:00Z"]
        );
    }

    #[test]
    fn bad_schedules_and_zones_are_refused_with_the_reason() {
        let err = |s: &str, tz: Option<&str>| Schedule::parse(s, tz).expect_err(s);
        assert!(err("* * * *", None).contains("4 fields"));
        assert!(err("61 * * * *", None).contains("not a cron schedule"));
        assert!(err("0 0 30 2 *", None).contains("never fires"));
        // An empty list item selects nothing; before it was refused, finding that the schedule
        // never fires took croner seconds (found by fuzzing, `fuzz/found/config/hang-5`).
        for s in [
            ", * * * *",
            "* , * * *",
            "0 0 1,,2 * *",
            "0 0 * 1, *",
            "0 0 * * ,5",
        ] {
            assert!(err(s, None).contains("empty item"), "{s}");
        }
        assert!(err("CRON_TZ=UTC 0 0 ,1 * *", None).contains("empty item"));
        // A weekday of an empty list (`+` alone) with the month's last day matches no day
        // (found by fuzzing, `fuzz/found/config/hang-7`).
        assert!(err("*/1 * L * +", None).contains("never fires"));
        assert!(err("0 0 31 4 *", None).contains("never fires"));
        assert!(err("0 9 * * *", Some("Mars/Olympus")).contains("time zone"));
        assert!(err("CRON_TZ=UTC 0 9 * * *", Some("Europe/Berlin")).contains("disagree"));
    }

    #[test]
    fn rare_schedules_are_not_taken_for_ones_that_never_fire() {
        // The check probes from 4970; these fire only in some kinds of year, and are kept.
        assert_eq!(
            chrono::DateTime::from_timestamp(PROBE_FROM_SECS, 0).map(|d| d.to_rfc3339()),
            Some("4970-01-01T00:00:00+00:00".to_owned())
        );
        for s in [
            "0 0 29 2 *",    // 29 February: leap years only
            "0 0 29 2 +MON", // a Monday 29 February: one year in 28
            "0 0 L 2 +SUN",  // a Sunday last day of February
            "0 0 13 * +FRI", // Friday the 13th
            "0 12 * 2 5#5",  // a fifth Friday in February: leap years whose February starts on one
        ] {
            let schedule = Schedule::parse(s, Some("Europe/Berlin")).expect(s);
            assert!(
                schedule.next_after(utc("2026-12-07T00:00:00Z")).is_some(),
                "{s}"
            );
        }
    }

    #[test]
    fn spring_forward_gap_fires_once_after_the_gap() {
        // Europe/Berlin skips 02:00–03:00 local on 2026-03-29 (01:00 UTC).
        let s = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).expect("parses");
        assert_eq!(
            slots(&s, "2026-03-28T12:00:00Z", 3),
            [
                "2026-03-29T01:00:00Z", // 03:00 CEST: the first instant after the gap
                "2026-03-30T00:30:00Z", // 02:30 CEST
                "2026-03-31T00:30:00Z",
            ]
        );
    }

    #[test]
    fn fall_back_repeat_fires_once_for_a_fixed_time() {
        // Europe/Berlin repeats 02:00–03:00 local on 2026-10-25 (00:00–01:00 and 01:00–02:00 UTC).
        let s = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).expect("parses");
        assert_eq!(
            slots(&s, "2026-10-24T12:00:00Z", 2),
            [
                "2026-10-25T00:30:00Z", // 02:30 CEST, the first occurrence
                "2026-10-26T01:30:00Z", // 02:30 CET the next day
            ]
        );
    }

    #[test]
    fn fall_back_repeat_fires_interval_schedules_in_both_passes() {
        let s = Schedule::parse("0,30 * * * *", Some("Europe/Berlin")).expect("parses");
        assert_eq!(
            slots(&s, "2026-10-24T23:45:00Z", 5),
            [
                "2026-10-25T00:00:00Z", // 02:00 CEST
                "2026-10-25T00:30:00Z", // 02:30 CEST
                "2026-10-25T01:00:00Z", // 02:00 CET
                "2026-10-25T01:30:00Z", // 02:30 CET
                "2026-10-25T02:00:00Z", // 03:00 CET
            ]
        );
    }
}
