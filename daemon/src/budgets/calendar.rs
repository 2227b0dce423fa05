//! UTC calendar arithmetic for budget periods: day numbers since the Unix epoch, months,
//! and the instants at which a day or a month ends.
//!
//! The conversions use the proleptic Gregorian calendar with days counted from
//! 1970-01-01, which is what Unix time implies (it has no leap seconds).

/// Milliseconds in one UTC day.
pub const DAY_MS: u64 = 86_400_000;

/// A calendar month, as the number of months since January of year 0, so that months
/// compare and step by integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month(u32);

impl Month {
    /// Returns the month that contains `day`.
    pub fn of_day(day: u32) -> Month {
        let (year, month, _) = civil_from_days(day);
        Month(year * 12 + (month - 1))
    }

    /// Returns the day number of the first day of this month.
    pub fn first_day(self) -> u32 {
        days_from_civil(self.0 / 12, self.0 % 12 + 1, 1)
    }

    /// Returns the month after this one.
    pub fn next(self) -> Month {
        Month(self.0 + 1)
    }
}

/// Returns the UTC day number of an instant in milliseconds since the Unix epoch.
pub fn day_of(unix_ms: u64) -> u32 {
    u32::try_from(unix_ms / DAY_MS).unwrap_or(u32::MAX)
}

/// Returns the instant at which `day` begins, in milliseconds since the Unix epoch.
pub fn start_of_day(day: u32) -> u64 {
    u64::from(day) * DAY_MS
}

/// Formats an instant as an RFC 3339 UTC timestamp with whole seconds, such as
/// `2026-12-04T00:00:00Z`.
pub fn format_unix_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (year, month, day) = civil_from_days(day_of(unix_ms));
    let secs_of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60
    )
}

/// Converts a day number since 1970-01-01 to `(year, month, day)`; see
/// [`cco_proto::calendar`].
fn civil_from_days(days: u32) -> (u32, u32, u32) {
    let (year, month, day) = cco_proto::calendar::civil_from_days(i64::from(days));
    (u32::try_from(year).unwrap_or(0), month, day)
}

/// Converts `(year, month, day)` to a day number since 1970-01-01; the inverse of
/// [`civil_from_days`] for dates from 1970 on. Earlier dates give 0.
fn days_from_civil(year: u32, month: u32, day: u32) -> u32 {
    let days = cco_proto::calendar::days_from_civil(i64::from(year), month, day);
    u32::try_from(days).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates_convert() {
        let cases = [
            (0, (1970, 1, 1)),
            (59, (1970, 3, 1)),
            (11_016, (2000, 2, 29)),
            (19_782, (2024, 2, 29)),
            (20_425, (2025, 12, 3)),
            (20_453, (2025, 12, 31)),
            (20_454, (2026, 1, 1)),
        ];
        for (days, date) in cases {
            assert_eq!(civil_from_days(days), date, "day {days}");
            assert_eq!(days_from_civil(date.0, date.1, date.2), days, "{date:?}");
        }
    }

    #[test]
    fn days_round_trip() {
        for days in (0..200_000).step_by(7) {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days, "day {days}");
        }
    }

    #[test]
    fn month_bounds() {
        // 2024-02-29 is in February of a leap year, which runs from day 19,754 to 19,782.
        let february = Month::of_day(19_782);
        assert_eq!(february.first_day(), 19_754);
        assert_eq!(february.next().first_day(), 19_783);
        // December 2025 ends at 2026-01-01, day 20,454.
        let december = Month::of_day(20_425);
        assert_eq!(december.next().first_day(), 20_454);
        assert_eq!(Month::of_day(20_454), december.next());
    }

    #[test]
    fn timestamps_format() {
        assert_eq!(format_unix_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_ms(start_of_day(20_454)), "2026-01-01T00:00:00Z");
        assert_eq!(format_unix_ms(1_764_806_400_999), "2025-12-04T00:00:00Z");
        assert_eq!(day_of(DAY_MS * 3 - 1), 2);
    }
}
